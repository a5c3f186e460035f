// Keys, configs and statuses: text forms, validation, bucketing.
#include "tfla_cache/types.hpp"

#include <cerrno>
#include <cstdlib>
#include <tuple>

#include "flat_json.hpp"
#include "tfla_cache/error.hpp"
#include "tfla_cache/hash.hpp"

namespace tfla::cache {
namespace {

[[noreturn]] void invalid(const std::string& what) {
  throw CacheError(ErrorCode::InvalidArgument, what);
}

bool is_name(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

// Whole-string signed 64-bit integer; nullopt on anything else.
std::optional<int64_t> parse_int(std::string_view s) {
  std::string text(s);
  if (text.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || end != text.c_str() + text.size()) return std::nullopt;
  return static_cast<int64_t>(v);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

}  // namespace

const char* to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::InvalidArgument: return "invalid_argument";
    case ErrorCode::Io: return "io";
    case ErrorCode::ReadOnly: return "read_only";
    case ErrorCode::Corrupt: return "corrupt";
    case ErrorCode::Foreign: return "foreign";
    case ErrorCode::SchemaTooNew: return "schema_too_new";
    case ErrorCode::Busy: return "busy";
    case ErrorCode::Sqlite: return "sqlite";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------- EnvKey

std::string EnvKey::to_json() const {
  return detail::FlatJsonWriter()
      .add("gpu_name", gpu_name)
      .add("cc_major", cc_major)
      .add("cc_minor", cc_minor)
      .add("sm_count", sm_count)
      .add("l2_bytes", l2_bytes)
      .add("smem_optin_bytes", smem_optin_bytes)
      .add("driver_version", driver_version)
      .add("nvrtc_major", nvrtc_major)
      .add("nvrtc_minor", nvrtc_minor)
      .add("tfla_version", tfla_version)
      .add("templates_hash", templates_hash)
      .str();
}

std::string EnvKey::id() const { return content_hash(to_json()).substr(0, 32); }

EnvKey EnvKey::from_json(std::string_view text) {
  const auto fields = detail::parse_flat_json(text);
  EnvKey k;
  auto text_field = [&](const char* name, std::string& out) {
    if (auto it = fields.find(name); it != fields.end()) out = it->second;
  };
  auto int_field = [&](const char* name, auto& out) {
    auto it = fields.find(name);
    if (it == fields.end()) return;
    auto v = parse_int(it->second);
    if (!v) invalid(std::string("EnvKey field ") + name + " is not an integer: " + it->second);
    out = static_cast<std::remove_reference_t<decltype(out)>>(*v);
  };
  text_field("gpu_name", k.gpu_name);
  int_field("cc_major", k.cc_major);
  int_field("cc_minor", k.cc_minor);
  int_field("sm_count", k.sm_count);
  int_field("l2_bytes", k.l2_bytes);
  int_field("smem_optin_bytes", k.smem_optin_bytes);
  int_field("driver_version", k.driver_version);
  int_field("nvrtc_major", k.nvrtc_major);
  int_field("nvrtc_minor", k.nvrtc_minor);
  text_field("tfla_version", k.tfla_version);
  text_field("templates_hash", k.templates_hash);
  return k;
}

bool EnvKey::operator==(const EnvKey& o) const {
  auto tie = [](const EnvKey& k) {
    return std::tie(k.gpu_name, k.cc_major, k.cc_minor, k.sm_count, k.l2_bytes, k.smem_optin_bytes,
                    k.driver_version, k.nvrtc_major, k.nvrtc_minor, k.tfla_version,
                    k.templates_hash);
  };
  return tie(*this) == tie(o);
}

// ------------------------------------------------------------------------------ ProblemKey

int64_t ceil_pow2(int64_t x) noexcept {
  int64_t p = 1;
  while (p < x && p < (int64_t{1} << 62)) p <<= 1;
  return p;
}

std::string ProblemKey::class_key() const {
  return op + "/" + variant + "/" + (normalize ? "norm" : "nonorm") + "/" + dtype + "/" +
         std::to_string(dqk) + "x" + std::to_string(dv) + "/" + layout;
}

std::string ProblemKey::to_string() const {
  return class_key() + "/BH=" + std::to_string(batch_heads) + ",S=" + std::to_string(seq_len);
}

void ProblemKey::validate() const {
  const std::pair<const char*, const std::string*> names[] = {
      {"op", &op}, {"variant", &variant}, {"dtype", &dtype}, {"layout", &layout}};
  for (const auto& [field, value] : names) {
    if (!is_name(*value)) {
      invalid(std::string("ProblemKey.") + field + " must be non-empty [a-z0-9_], got '" + *value +
              "'");
    }
  }
  if (dqk <= 0 || dv <= 0) invalid("ProblemKey head dims must be positive: " + to_string());
  if (batch_heads <= 0 || seq_len <= 0)
    invalid("ProblemKey shape must be positive: " + to_string());
}

bool ProblemKey::operator==(const ProblemKey& o) const {
  auto tie = [](const ProblemKey& k) {
    return std::tie(k.op, k.variant, k.normalize, k.dtype, k.dqk, k.dv, k.layout, k.batch_heads,
                    k.seq_len);
  };
  return tie(*this) == tie(o);
}

// ---------------------------------------------------------------------------------- Config

int64_t Config::get(const std::string& name) const {
  auto it = values.find(name);
  if (it == values.end()) invalid("config has no parameter '" + name + "': " + to_string());
  return it->second;
}

int64_t Config::get_or(const std::string& name, int64_t fallback) const noexcept {
  auto it = values.find(name);
  return it == values.end() ? fallback : it->second;
}

std::string Config::to_string() const {
  std::string out;
  for (const auto& [name, value] : values) {
    if (!out.empty()) out.push_back(',');
    out += name + "=" + std::to_string(value);
  }
  return out;
}

Config Config::parse(std::string_view text) {
  Config c;
  if (trim(text).empty()) return c;
  while (true) {
    size_t comma = text.find(',');
    std::string_view item = trim(text.substr(0, comma));
    size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      invalid("config item without '=': '" + std::string(item) + "'");
    std::string name(trim(item.substr(0, eq)));
    auto value = parse_int(trim(item.substr(eq + 1)));
    if (!is_name(name)) invalid("bad config parameter name '" + name + "'");
    if (!value)
      invalid("config parameter '" + name + "' is not an integer: '" + std::string(item) + "'");
    if (!c.values.emplace(name, *value).second)
      invalid("config parameter '" + name + "' given twice");
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return c;
}

// ------------------------------------------------------------------------- CandidateStatus

namespace {
constexpr std::pair<CandidateStatus, const char*> kStatusNames[] = {
    {CandidateStatus::Ok, "ok"},
    {CandidateStatus::CompileFailed, "compile_failed"},
    {CandidateStatus::OverLimits, "over_limits"},
    {CandidateStatus::LaunchFailed, "launch_failed"},
    {CandidateStatus::WrongResult, "wrong_result"},
    {CandidateStatus::Faulted, "faulted"},
    {CandidateStatus::Pending, "pending"},
};
}  // namespace

const char* to_string(CandidateStatus s) noexcept {
  for (const auto& [status, name] : kStatusNames) {
    if (status == s) return name;
  }
  return "unknown";
}

std::optional<CandidateStatus> candidate_status_from_string(std::string_view name) noexcept {
  for (const auto& [status, text] : kStatusNames) {
    if (name == text) return status;
  }
  return std::nullopt;
}

}  // namespace tfla::cache
