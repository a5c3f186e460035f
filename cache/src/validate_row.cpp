#include "validate_row.hpp"

#include <cmath>

#include "tfla_cache/error.hpp"
#include "tfla_cache/hash.hpp"
#include "tfla_util/config_text.hpp"

namespace tfla::cache::detail {
namespace {

std::string text_problem(const char* field, const std::string& value) {
  return is_utf8(value) ? "" : std::string(field) + " is not UTF-8 text";
}

bool is_hex(std::string_view s, size_t n) {
  if (s.size() != n) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

bool is_arch(std::string_view s) {
  for (std::string_view prefix : {"sm_", "compute_"}) {
    if (s.substr(0, prefix.size()) != prefix) continue;
    s.remove_prefix(prefix.size());
    size_t digits = 0;
    while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
    if (digits == 0 || digits > 4) return false;
    s.remove_prefix(digits);
    return s.empty() || (s.size() == 1 && s[0] >= 'a' && s[0] <= 'z');
  }
  return false;
}

std::string time_problem(const char* field, double v, bool positive) {
  if (!std::isfinite(v) || v < 0 || (positive && v == 0))
    return std::string(field) + " = " + std::to_string(v) + " must be finite and " +
           (positive ? "> 0" : ">= 0");
  return "";
}

std::string config_problem(const Config& c) {
  return util::check_config_values(c.values);
}

}  // namespace

bool is_utf8(std::string_view s) noexcept {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == 0) return false;
    if (c < 0x80) {
      ++i;
      continue;
    }
    int n = 0;
    uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) n = 1, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) n = 2, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) n = 3, cp = c & 0x07;
    else return false;
    if (i + n >= s.size()) return false;  // truncated sequence
    for (int k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    static constexpr uint32_t kMinOf[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMinOf[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

std::string row_name(const char* kind, const std::string& env_id, const ProblemKey& p) {
  const std::string text = p.to_string();
  return std::string(kind) + " " + env_id.substr(0, 12) + " " +
         (is_utf8(text) ? text : std::string("(non-UTF-8 key)"));
}

std::string check_env_row(const std::string& env_id, const EnvKey& env) {
  for (const auto& [field, value] : {std::pair<const char*, const std::string*>{"gpu_name", &env.gpu_name},
                                     {"tfla_version", &env.tfla_version},
                                     {"templates_hash", &env.templates_hash}})
    if (std::string why = text_problem(field, *value); !why.empty()) return why;
  if (env.id() != env_id) return "id does not match its key";
  return "";
}

std::string check_entry_row(const TunedEntry& e) {
  try {
    e.problem.validate();
  } catch (const CacheError& err) {
    return err.what();
  }
  if (std::string why = config_problem(e.winner); !why.empty()) return "winner: " + why;
  if (e.winner.empty()) return "winner is an empty config";
  for (const std::string& why :
       {time_problem("winner_median_us", e.winner_median_us, true),
        time_problem("winner_spread_us", e.winner_spread_us, false),
        time_problem("default_median_us", e.default_median_us, false),
        time_problem("tuning_seconds", e.tuning_seconds, false),
        text_problem("tool_version", e.tool_version)})
    if (!why.empty()) return why;
  if (e.timestamp_unix < 0) return "timestamp_unix is negative";
  return "";
}

std::string check_candidate_row(const CandidateResult& r, const std::string& status_text) {
  if (!candidate_status_from_string(status_text))
    return "unknown status '" + (is_utf8(status_text) ? status_text : "(not UTF-8)") + "'";
  if (std::string why = config_problem(r.config); !why.empty()) return "config: " + why;
  for (const std::string& why : {time_problem("time_median_us", r.time_median_us, false),
                                 time_problem("time_spread_us", r.time_spread_us, false),
                                 text_problem("message", r.message)})
    if (!why.empty()) return why;
  if (r.max_rel_error < 0) return "max_rel_error is negative";
  return "";
}

std::string check_cubin_row(const std::string& hash, const std::string& arch,
                            const std::string& kernel_name, const std::string& env_id,
                            int64_t size_bytes, const std::string& checksum,
                            const std::string& bytes) {
  if (!is_hex(hash, 64)) return "hash is not 64 lowercase hex digits";
  if (!is_arch(arch)) return "arch is not sm_<digits>[a-z] or compute_<digits>[a-z]";
  if (kernel_name.empty() || !is_utf8(kernel_name)) return "kernel_name is empty or not UTF-8";
  if (!env_id.empty() && !is_hex(env_id, 32)) return "env_id is not 32 hex digits";
  if (bytes.empty()) return "no bytes";
  if (size_bytes != static_cast<int64_t>(bytes.size()))
    return std::to_string(bytes.size()) + " bytes, " + std::to_string(size_bytes) + " recorded";
  if (content_hash(bytes) != checksum) return "checksum mismatch";
  return "";
}

}  // namespace tfla::cache::detail
