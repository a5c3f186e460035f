// Keys, configs and statuses: text forms, validation, bucketing.
#include "tfla_cache/types.hpp"

#include <cstdint>
#include <limits>
#include <tuple>

#include "flat_json.hpp"
#include "tfla_cache/error.hpp"
#include "tfla_cache/hash.hpp"
#include "tfla_util/config_text.hpp"
#include "tfla_util/dtype_name.hpp"

namespace tfla::cache {
namespace {

[[noreturn]] void invalid(const std::string& what) {
  throw CacheError(ErrorCode::InvalidArgument, what);
}

bool is_name(std::string_view s) { return util::is_config_name(s); }

std::optional<int64_t> parse_int(std::string_view s) { return util::parse_int64(s); }

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
    using T = std::remove_reference_t<decltype(out)>;
    if (!v || *v < std::numeric_limits<T>::min() || *v > std::numeric_limits<T>::max())
      invalid(std::string("EnvKey field ") + name + " is not an integer of its range: " + it->second);
    out = static_cast<T>(*v);
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

namespace {
bool one_of(const std::string& s, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (s == n) return true;
  return false;
}
}  // namespace

void ProblemKey::validate() const {
  const std::pair<const char*, const std::string*> names[] = {
      {"op", &op}, {"variant", &variant}, {"dtype", &dtype}, {"layout", &layout}};
  for (const auto& [field, value] : names) {
    if (!is_name(*value)) {
      invalid(std::string("ProblemKey.") + field + " must be non-empty [a-z0-9_], got '" + *value +
              "'");
    }
  }
  if (!one_of(op, {"fwd", "bwd", "fwbw", "step", "parallel"}))
    invalid("ProblemKey.op '" + op + "' is not one of fwd, bwd, fwbw, step, parallel");
  if (!one_of(variant, {"exp", "sig"}))
    invalid("ProblemKey.variant '" + variant + "' is not one of exp, sig");
  if (!util::is_dtype_name(dtype))
    invalid("ProblemKey.dtype '" + dtype + "' is not one of " + util::dtype_names());
  if (!one_of(layout, {"bhsd", "bshd"}))
    invalid("ProblemKey.layout '" + layout + "' is not one of bhsd, bshd");
  if (dqk <= 0 || dv <= 0 || dqk > kMaxHeadDim || dv > kMaxHeadDim)
    invalid("ProblemKey head dims must be in [1, " + std::to_string(kMaxHeadDim) +
            "]: " + to_string());
  if (batch_heads <= 0 || seq_len <= 0 || batch_heads > kMaxBatchHeads || seq_len > kMaxSeqLen)
    invalid("ProblemKey shape must be positive, with batch_heads <= 2^31 and seq_len <= 2^40: " +
            to_string());
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

std::string Config::to_string() const { return util::config_to_text(values); }

Config Config::parse(std::string_view text) {
  try {
    return Config{util::parse_config_text(text, INT64_MIN, INT64_MAX)};
  } catch (const util::ConfigTextError& e) {
    invalid(e.what());
  }
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
