// Boolean environment variables (TFLA_CACHE_DISABLE, TFLA_TUNED, TFLA_RECORD_SHAPES, ...) and
// integer ones (TFLA_DEVICE), read one way everywhere.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string_view>

namespace tfla::util {

// true for 1/true/yes/on, false for 0/false/no/off (case-insensitive, blanks ignored);
// nullopt for anything else. Never throws.
std::optional<bool> parse_flag(std::string_view text) noexcept;

// The value of the boolean environment variable `name`: `unset` when it is unset or empty,
// else parse_flag's. Throws std::invalid_argument naming the variable, its value and the
// accepted words for anything else.
bool env_flag(const char* name, bool unset);

// The value of the integer environment variable `name` in [min_value, max_value]: `unset` when
// it is unset or empty. Throws std::invalid_argument naming the variable and its value.
int64_t env_int(const char* name, int64_t unset, int64_t min_value, int64_t max_value);

}  // namespace tfla::util
