#include "tfla_util/dtype_name.hpp"

namespace tfla::util {

std::optional<DType> parse_dtype(std::string_view name) noexcept {
  if (name == "bf16") return DType::BF16;
  if (name == "fp16") return DType::FP16;
  if (name == "fp32") return DType::FP32;
  return std::nullopt;
}

const char* dtype_names() noexcept { return "bf16, fp16, fp32"; }

}  // namespace tfla::util
