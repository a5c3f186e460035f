#include "flat_json.hpp"

#include <cctype>
#include <cstdio>

#include "tfla_cache/error.hpp"

namespace tfla::cache::detail {
namespace {

void append_quoted(std::string& out, std::string_view s) {
  out.push_back('"');
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
}

class Parser {
 public:
  explicit Parser(std::string_view t) : t_(t) {}

  std::map<std::string, std::string> object() {
    std::map<std::string, std::string> out;
    expect('{');
    if (peek() == '}') return ++i_, finish(out);
    for (;;) {
      std::string k = string();
      expect(':');
      out[k] = value();
      char c = next();
      if (c == '}') return finish(out);
      if (c != ',') fail("expected ',' or '}'");
    }
  }

 private:
  std::map<std::string, std::string>& finish(std::map<std::string, std::string>& out) {
    if (peek() != '\0') fail("text after the object");
    return out;
  }
  [[noreturn]] void fail(const char* what) const {
    throw CacheError(ErrorCode::InvalidArgument,
                     "bad JSON at offset " + std::to_string(i_) + ": " + what);
  }
  void skip_space() {
    while (i_ < t_.size() && std::isspace(static_cast<unsigned char>(t_[i_]))) ++i_;
  }
  char peek() {
    skip_space();
    return i_ < t_.size() ? t_[i_] : '\0';
  }
  char next() {
    char c = peek();
    if (c == '\0') fail("unexpected end");
    ++i_;
    return c;
  }
  void expect(char c) {
    if (next() != c) fail((std::string("expected '") + c + "'").c_str());
  }

  std::string string() {
    expect('"');
    std::string s;
    while (i_ < t_.size() && t_[i_] != '"') {
      char c = t_[i_++];
      if (c != '\\') {
        s.push_back(c);
        continue;
      }
      if (i_ >= t_.size()) fail("unterminated escape");
      char e = t_[i_++];
      switch (e) {
        case 'n': s.push_back('\n'); break;
        case 't': s.push_back('\t'); break;
        case 'r': s.push_back('\r'); break;
        case 'b': s.push_back('\b'); break;
        case 'f': s.push_back('\f'); break;
        case 'u': {
          if (i_ + 4 > t_.size()) fail("short \\u escape");
          unsigned v = 0;
          for (char h : t_.substr(i_, 4)) {
            if (!std::isxdigit(static_cast<unsigned char>(h))) fail("bad \\u escape");
            v = v * 16 +
                (std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (h | 0x20) - 'a' + 10);
          }
          if (v >= 0x80) fail("non-ASCII \\u escape not supported");
          s.push_back(static_cast<char>(v));
          i_ += 4;
          break;
        }
        default: s.push_back(e);  // \" \\ \/
      }
    }
    if (i_ >= t_.size()) fail("unterminated string");
    ++i_;
    return s;
  }

  std::string value() {
    char c = peek();
    if (c == '"') return string();
    if (c == '{' || c == '[') fail("nested values are not supported");
    size_t start = i_;
    while (i_ < t_.size() && (std::isalnum(static_cast<unsigned char>(t_[i_])) || t_[i_] == '-' ||
                              t_[i_] == '+' || t_[i_] == '.')) {
      ++i_;
    }
    if (start == i_) fail("expected a value");
    return std::string(t_.substr(start, i_ - start));
  }

  std::string_view t_;
  size_t i_ = 0;
};

}  // namespace

void FlatJsonWriter::key(std::string_view k) {
  if (text_.size() > 1) text_.push_back(',');
  append_quoted(text_, k);
  text_.push_back(':');
}

FlatJsonWriter& FlatJsonWriter::add(std::string_view k, std::string_view value) {
  key(k);
  append_quoted(text_, value);
  return *this;
}

FlatJsonWriter& FlatJsonWriter::add(std::string_view k, int64_t value) {
  key(k);
  text_ += std::to_string(value);
  return *this;
}

std::map<std::string, std::string> parse_flat_json(std::string_view text) {
  return Parser(text).object();
}

}  // namespace tfla::cache::detail
