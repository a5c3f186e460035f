// Content hashes for cache keys: SHA-256, as lower-case hex. Used for cubin keys (rendered
// source + options + arch), environment ids and the per-cubin checksum.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

namespace tfla::cache {

// SHA-256 of `bytes` as 64 lower-case hex digits. Never throws (beyond bad_alloc).
std::string content_hash(std::string_view bytes);

// SHA-256 of several parts, each prefixed by its length, so ("ab","c") and ("a","bc") differ.
// Use for cubin keys: content_hash_parts({source, options, arch, nvrtc_version}).
std::string content_hash_parts(std::initializer_list<std::string_view> parts);

}  // namespace tfla::cache
