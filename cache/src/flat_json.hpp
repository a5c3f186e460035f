// A flat JSON object (string keys; string, integer or boolean values), enough for EnvKey and
// the export stamp. Not a general JSON library: nesting and arrays are rejected.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace tfla::cache::detail {

class FlatJsonWriter {
 public:
  FlatJsonWriter& add(std::string_view key, std::string_view value);  // quoted, escaped
  FlatJsonWriter& add(std::string_view key, int64_t value);
  std::string str() const { return text_ + "}"; }

 private:
  void key(std::string_view k);
  std::string text_ = "{";
};

// Parses `{"k": "v", "n": 12, "b": true}` into key -> value text (strings unescaped, numbers
// and booleans as written). Throws CacheError(InvalidArgument) naming the offset of an error.
std::map<std::string, std::string> parse_flat_json(std::string_view text);

}  // namespace tfla::cache::detail
