// TMA tensor maps for the sm_90a kernels: cuTensorMapEncodeTiled (through the lazily loaded
// driver table) behind a memo keyed by everything the encoding depends on, so a hot call costs
// one hash lookup and no driver call. The result is the 128-byte TmaDesc that kernels take in
// their `const __grid_constant__` parameter blocks.
#pragma once
#include <cstdint>

#include "tfla/sm90_layout.cuh"
#include "tfla/tfla.hpp"

namespace tfla::rt {

// A tiled view of a global tensor. Dimensions are listed innermost first; dim 0 is contiguous.
// Loads zero-fill exactly the elements outside the view. Stores write whole 16-byte chunks (seen
// on an H200): with dims[0] * element bytes not a multiple of 16, a store may also write the rest
// of each row's last 16-byte chunk (with the box's contents there), so maps used for stores need
// that multiple unless those bytes are padding.
struct TensorMapSpec {
  const void* base = nullptr;  // global address, 16-byte aligned
  DType dtype = DType::BF16;   // element type
  int rank = 2;                // 1..5
  uint64_t dims[5] = {};       // extent of each dimension, elements
  uint64_t strides[5] = {};    // stride of dims 1..rank-1 in bytes (multiples of 16); [0] unused
  uint32_t box[5] = {};        // box extent per dimension, elements (1..256)
  int swizzle = 0;             // 0, 32, 64 or 128: box[0] * element bytes must not exceed it
};

// The encoded tensor map of spec (loads zero-fill outside the tensor; L2 promotion 256 B).
// Memoized: a repeated spec returns the stored copy. Thread-safe. Throws Error(InvalidArgument)
// for a spec the driver rejects (naming it), Error(NoDriver) without a driver.
TmaDesc tensor_map(const TensorMapSpec& spec);
// Entries in the memo (it is cleared when it reaches 4096, so pointers that keep changing cannot
// grow it without bound).
size_t tensor_map_memo_size();

}  // namespace tfla::rt
