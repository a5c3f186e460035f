// The one parser of dtype names ("bf16", "fp16", "fp32"), for the CLI, spec files, the C ABI's
// neighbours and the cache's row checks.
#pragma once

#include <optional>
#include <string_view>

#include "tfla/tfla.hpp"

namespace tfla::util {

// The dtype named `name` (exactly "bf16", "fp16" or "fp32"); nullopt for anything else.
std::optional<DType> parse_dtype(std::string_view name) noexcept;
// True for a name parse_dtype accepts.
inline bool is_dtype_name(std::string_view name) noexcept { return parse_dtype(name).has_value(); }
// "bf16, fp16, fp32": the accepted names, for error messages.
const char* dtype_names() noexcept;

}  // namespace tfla::util
