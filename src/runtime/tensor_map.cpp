#include "runtime/tensor_map.hpp"

#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "runtime/driver.hpp"

namespace tfla::rt {

static_assert(sizeof(TmaDesc) == sizeof(CUtensorMap), "TmaDesc must hold a CUtensorMap");
// TMA reads a descriptor in kernel parameter space at a 64-byte aligned address (the host
// CUtensorMap asks for 128, but it is only copied from here, with memcpy).
static_assert(alignof(TmaDesc) == 64, "TmaDesc parameters are 64-byte aligned");

namespace {

// The spec's bytes that the encoding depends on, as one comparable key.
struct Key {
  uint64_t words[18];
  bool operator==(const Key& o) const { return std::memcmp(words, o.words, sizeof(words)) == 0; }
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    uint64_t h = 1469598103934665603ull;
    for (uint64_t w : k.words) h = (h ^ w) * 1099511628211ull + (h >> 29);
    return static_cast<size_t>(h);
  }
};
Key key_of(const TensorMapSpec& s) {
  Key k{};
  k.words[0] = reinterpret_cast<uintptr_t>(s.base);
  k.words[1] = static_cast<uint64_t>(s.dtype) | (static_cast<uint64_t>(s.rank) << 8) |
               (static_cast<uint64_t>(s.swizzle) << 16);
  for (int i = 0; i < 5; ++i) {
    k.words[2 + i] = s.dims[i];
    k.words[7 + i] = s.strides[i];
  }
  for (int i = 0; i < 5; ++i) k.words[12 + i] = s.box[i];
  return k;
}

std::string describe(const TensorMapSpec& s) {
  std::string d = std::string(to_string(s.dtype)) + " rank " + std::to_string(s.rank) + " dims {";
  for (int i = 0; i < s.rank; ++i) d += (i ? ", " : "") + std::to_string(s.dims[i]);
  d += "} strides {";
  for (int i = 1; i < s.rank; ++i) d += (i > 1 ? ", " : "") + std::to_string(s.strides[i]);
  d += "} box {";
  for (int i = 0; i < s.rank; ++i) d += (i ? ", " : "") + std::to_string(s.box[i]);
  return d + "} swizzle " + std::to_string(s.swizzle);
}

TmaDesc encode(const TensorMapSpec& s) {
  if (s.rank < 1 || s.rank > 5)
    throw Error(ErrorCode::InvalidArgument, "tensor map rank must be 1..5: " + describe(s));
  const CUtensorMapDataType type = s.dtype == DType::BF16   ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                   : s.dtype == DType::FP16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                                            : CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
  const CUtensorMapSwizzle swz = s.swizzle == 128  ? CU_TENSOR_MAP_SWIZZLE_128B
                                 : s.swizzle == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                                 : s.swizzle == 32 ? CU_TENSOR_MAP_SWIZZLE_32B
                                                   : CU_TENSOR_MAP_SWIZZLE_NONE;
  cuuint64_t dims[5], strides[4];
  cuuint32_t box[5], elem_strides[5];
  for (int i = 0; i < s.rank; ++i) {
    dims[i] = s.dims[i];
    box[i] = s.box[i];
    elem_strides[i] = 1;
    if (i > 0) strides[i - 1] = s.strides[i];
  }
  CUtensorMap map;
  const CUresult r = driver().cuTensorMapEncodeTiled(
      &map, type, static_cast<cuuint32_t>(s.rank), const_cast<void*>(s.base), dims, strides, box,
      elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, swz, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    const char* name = nullptr;
    driver().cuGetErrorName(r, &name);
    throw Error(ErrorCode::InvalidArgument,
                "cuTensorMapEncodeTiled rejected " + describe(s) + ": " + (name ? name : "?"));
  }
  TmaDesc out;
  std::memcpy(&out, &map, sizeof(out));
  return out;
}

std::shared_mutex memo_mu;
std::unordered_map<Key, TmaDesc, KeyHash>& memo() {
  static std::unordered_map<Key, TmaDesc, KeyHash> m;
  return m;
}
constexpr size_t kMemoLimit = 4096;

}  // namespace

TmaDesc tensor_map(const TensorMapSpec& spec) {
  const Key key = key_of(spec);
  {
    std::shared_lock<std::shared_mutex> lock(memo_mu);
    auto it = memo().find(key);
    if (it != memo().end()) return it->second;
  }
  const TmaDesc desc = encode(spec);
  std::unique_lock<std::shared_mutex> lock(memo_mu);
  if (memo().size() >= kMemoLimit) memo().clear();
  memo().emplace(key, desc);
  return desc;
}

size_t tensor_map_memo_size() {
  std::shared_lock<std::shared_mutex> lock(memo_mu);
  return memo().size();
}

}  // namespace tfla::rt
