// What a saved-states buffer holds: the forward that fills one records here the chunk length of
// its layout, keyed by the buffer's address and size, and the backward that reads it takes the
// chunk from the record instead of deriving it. Bounded (the most recent buffers); thread-safe.
#pragma once
#include <cstddef>

namespace tfla::ops {

// The forward wrote a saved layout of chunk length `chunk` into [ptr, ptr + bytes).
void record_saved(const void* ptr, size_t bytes, int chunk);
// The chunk recorded for exactly this buffer, or 0 when none is.
int saved_chunk(const void* ptr, size_t bytes);

}  // namespace tfla::ops
