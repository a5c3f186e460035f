#include "tfla_util/env_flag.hpp"

#include <cctype>
#include <cstdlib>
#include <string>

#include "tfla_util/config_text.hpp"

namespace tfla::util {

std::optional<bool> parse_flag(std::string_view text) noexcept {
  std::string s(trim_blanks(text));
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s == "1" || s == "true" || s == "yes" || s == "on") return true;
  if (s == "0" || s == "false" || s == "no" || s == "off") return false;
  return std::nullopt;
}

bool env_flag(const char* name, bool unset) {
  const char* v = std::getenv(name);
  if (!v || !*v) return unset;
  if (std::optional<bool> b = parse_flag(v)) return *b;
  throw std::invalid_argument(std::string(name) + "='" + v +
                              "' is not a boolean: use 1/true/yes/on or 0/false/no/off");
}

int64_t env_int(const char* name, int64_t unset, int64_t min_value, int64_t max_value) {
  const char* v = std::getenv(name);
  if (!v || !*v) return unset;
  const std::optional<int64_t> n = parse_int64(v);
  if (!n || *n < min_value || *n > max_value)
    throw std::invalid_argument(std::string(name) + "='" + v + "' is not an integer in [" +
                                std::to_string(min_value) + ", " + std::to_string(max_value) + "]");
  return *n;
}

}  // namespace tfla::util
