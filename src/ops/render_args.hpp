// Spelling of template arguments when ops render kernels (rt::render): the device type of a
// dtype, booleans and integers as C++ literals. One place for all ops, so the same argument
// always renders to the same text (kernel keys and cubin hashes depend on it).
#pragma once
#include <cstdint>
#include <string>

#include "tfla/tfla.hpp"

namespace tfla::ops {

inline const char* device_type(DType d) {
  switch (d) {
    case DType::BF16: return "tfla::bf16";
    case DType::FP16: return "tfla::fp16";
    case DType::FP32: return "float";
  }
  return "?";
}
inline std::string arg(bool x) { return x ? "true" : "false"; }
inline std::string arg(int64_t x) { return std::to_string(x); }
inline std::string arg(int x) { return std::to_string(x); }

}  // namespace tfla::ops
