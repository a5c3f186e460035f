// Workspace layouts: regions carved in order out of one device buffer, each 256-byte aligned
// (the alignment cuMemAlloc gives and the kernels' 16-byte vector accesses need).
#pragma once
#include <cstddef>

namespace tfla::ops {

class WorkspaceLayout {
 public:
  // Reserves bytes; returns the region's offset from the workspace start.
  size_t take(size_t bytes) {
    const size_t at = offset_;
    offset_ += (bytes + 255) / 256 * 256;
    return at;
  }
  size_t total() const { return offset_; }

 private:
  size_t offset_ = 0;
};

}  // namespace tfla::ops
