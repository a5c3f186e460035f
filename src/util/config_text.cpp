#include "tfla_util/config_text.hpp"

#include <limits>

namespace tfla::util {
namespace {

bool is_blank(char c) { return c == ' ' || c == '\t'; }

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string range_error(std::string_view name, int64_t v, int64_t lo, int64_t hi) {
  return "config value " + std::string(name) + "=" + std::to_string(v) + " is out of range [" +
         std::to_string(lo) + ", " + std::to_string(hi) + "]";
}

}  // namespace

std::string_view trim_blanks(std::string_view s) noexcept {
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  return s;
}

bool is_config_name(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

std::optional<int64_t> parse_int64(std::string_view s) noexcept {
  s = trim_blanks(s);
  bool negative = false;
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  if (s.empty()) return std::nullopt;
  // Accumulate as a negative number: its range includes INT64_MIN.
  int64_t v = 0;
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const int digit = c - '0';
    if (v < (kMin + digit) / 10) return std::nullopt;
    v = v * 10 - digit;
  }
  if (negative) return v;
  if (v == kMin) return std::nullopt;
  return -v;
}

ConfigValues parse_config_text(std::string_view text, int64_t min_value, int64_t max_value) {
  ConfigValues out;
  if (trim_blanks(text).empty()) return out;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    const std::string_view item =
        trim_blanks(text.substr(start, comma == std::string_view::npos ? text.npos : comma - start));
    if (item.empty())
      throw ConfigTextError("config text " + quoted(text) + " has an empty item (expected key=value,key=value)");
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      throw ConfigTextError("config item " + quoted(item) + " has no '=' (expected key=value)");
    const std::string_view name = trim_blanks(item.substr(0, eq));
    const std::string_view value_text = trim_blanks(item.substr(eq + 1));
    if (!is_config_name(name))
      throw ConfigTextError("config item " + quoted(item) + ": the name must be [a-z0-9_]+");
    const std::optional<int64_t> value = parse_int64(value_text);
    if (!value)
      throw ConfigTextError("config item " + quoted(item) +
                            ": the value is not a 64-bit decimal integer");
    if (*value < min_value || *value > max_value)
      throw ConfigTextError(range_error(name, *value, min_value, max_value));
    if (!out.emplace(std::string(name), *value).second)
      throw ConfigTextError("config parameter " + quoted(name) + " is given twice");
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string config_to_text(const ConfigValues& c) {
  std::string out;
  for (const auto& [name, value] : c) {
    if (!out.empty()) out.push_back(',');
    out += name + "=" + std::to_string(value);
  }
  return out;
}

std::string check_config_values(const ConfigValues& c, int64_t min_value, int64_t max_value) {
  for (const auto& [name, value] : c) {
    if (!is_config_name(name)) return "config parameter name " + quoted(name) + " must be [a-z0-9_]+";
    if (value < min_value || value > max_value) return range_error(name, value, min_value, max_value);
  }
  return "";
}

}  // namespace tfla::util
