// Config text: the one parser and printer of "key=value,key=value" (kernel configurations on
// the command line, in the C ABI, in the cache and in the tuner's worker protocol).
//
// Grammar: items separated by ','; blanks (space, tab) around an item, its name and its value
// are ignored; empty or blank text is the empty config. A name is [a-z0-9_]+ and appears once;
// a value is a decimal integer with an optional sign, read as 64 bits (no wrap-around) and
// checked against a range. An empty item (",,", a leading or trailing ',') is an error.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace tfla::util {

using ConfigValues = std::map<std::string, int64_t>;

// Thrown for malformed config text; the message names the item and the rule it breaks.
class ConfigTextError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// The range of a kernel configuration value: tile sizes, warps, stages and flags are
// non-negative and fit the int fields the kernels are planned with.
inline constexpr int64_t kConfigValueMin = 0;
inline constexpr int64_t kConfigValueMax = 2147483647;  // INT32_MAX

// Parses `text` (see the grammar above); every value must lie in [min_value, max_value].
// Throws ConfigTextError.
ConfigValues parse_config_text(std::string_view text, int64_t min_value = kConfigValueMin,
                               int64_t max_value = kConfigValueMax);
// "name=value,..." in name order; parse_config_text(config_to_text(c)) == c. Never throws
// (beyond bad_alloc).
std::string config_to_text(const ConfigValues& c);
// "" when every name follows the grammar and every value lies in [min_value, max_value], else
// a sentence naming the first offending item (for configs built in code, e.g. tfla::Config).
std::string check_config_values(const ConfigValues& c, int64_t min_value = kConfigValueMin,
                                int64_t max_value = kConfigValueMax);
// True for a config parameter name: [a-z0-9_]+.
bool is_config_name(std::string_view s) noexcept;

// A whole-string decimal integer (optional sign, blanks around it ignored) that fits 64 bits;
// nullopt for anything else (junk, overflow, empty). Never throws.
std::optional<int64_t> parse_int64(std::string_view s) noexcept;
// `s` without leading and trailing blanks (space, tab).
std::string_view trim_blanks(std::string_view s) noexcept;

}  // namespace tfla::util
