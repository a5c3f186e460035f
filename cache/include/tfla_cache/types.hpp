// Plain data kept in the tuned-config cache: what machine a result belongs to (EnvKey), what
// problem it solves (ProblemKey), which kernel configuration (Config), how every candidate
// fared (CandidateResult) and the winner (TunedEntry). No CUDA, no SQLite: the tuner and the
// runtime fill these from their own types.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tfla::cache {

// Everything that, when it changes, may change which kernel is fastest or whether a stored
// cubin is valid. Two results are comparable only under equal EnvKeys: a mismatch is a miss.
struct EnvKey {
  std::string gpu_name;          // e.g. "NVIDIA H100 80GB HBM3"
  int cc_major = 0;              // compute capability, e.g. 9
  int cc_minor = 0;              // e.g. 0
  int sm_count = 0;              // multiprocessors
  int64_t l2_bytes = 0;          // L2 cache size in bytes
  int64_t smem_optin_bytes = 0;  // max dynamic shared memory per block (opt-in), bytes
  int driver_version = 0;        // cuDriverGetVersion, e.g. 12040
  int nvrtc_major = 0;           // nvrtcVersion
  int nvrtc_minor = 0;
  std::string tfla_version;    // e.g. "0.1.0"
  std::string templates_hash;  // content hash of all kernel template sources + compile options

  // Stable id of this environment: 32 hex digits of the SHA-256 of to_json(). Equal keys give
  // equal ids on every machine and in every version of this library. Never throws.
  std::string id() const;
  // One-line JSON object with every field, in a fixed order. Never throws (beyond bad_alloc).
  std::string to_json() const;
  // Inverse of to_json(); unknown fields are ignored, missing fields keep their defaults.
  // Throws CacheError(InvalidArgument) on text that is not a flat JSON object.
  static EnvKey from_json(std::string_view text);

  bool operator==(const EnvKey& o) const;
  bool operator!=(const EnvKey& o) const { return !(*this == o); }
};

// Smallest power of two >= x, for x >= 1; 1 for x <= 1. Never throws.
int64_t ceil_pow2(int64_t x) noexcept;

// One problem a kernel is tuned for. Results are reused across shapes only within one
// "class" (everything but batch_heads and seq_len), first within the same shape bucket.
struct ProblemKey {
  std::string op;       // "fwd", "bwd", "fwbw", "step", "parallel"
  std::string variant;  // "exp", "sig"
  bool normalize = true;
  std::string dtype;        // "bf16", "fp16", "fp32"
  int dqk = 0;              // head dim of q and k
  int dv = 0;               // head dim of v
  std::string layout;       // "bhsd", "bshd"
  int64_t batch_heads = 0;  // B * NH
  int64_t seq_len = 0;      // S

  int64_t bucket_batch_heads() const noexcept { return ceil_pow2(batch_heads); }
  int64_t bucket_seq_len() const noexcept { return ceil_pow2(seq_len); }
  // Everything but the shape, e.g. "fwd/exp/norm/bf16/256x512/bhsd". Never throws.
  std::string class_key() const;
  // class_key() plus the shape, e.g. "fwd/exp/norm/bf16/256x512/bhsd/BH=8,S=8192".
  std::string to_string() const;
  // Throws CacheError(InvalidArgument) naming the field if op, variant, dtype or layout is not
  // one of the names above, a head dim lies outside [1, kMaxHeadDim], or the shape outside
  // [1, kMaxBatchHeads] x [1, kMaxSeqLen] (bounds that keep every derived size in 64 bits).
  void validate() const;
  static constexpr int kMaxHeadDim = 65536;
  static constexpr int64_t kMaxBatchHeads = int64_t{1} << 31;
  static constexpr int64_t kMaxSeqLen = int64_t{1} << 40;

  bool operator==(const ProblemKey& o) const;
  bool operator!=(const ProblemKey& o) const { return !(*this == o); }
};

// Named integer parameters of one kernel configuration (chunk, siz_b_q, ..., warps, stages).
// Kept sorted by name, so to_string() is canonical and serves as a key.
struct Config {
  std::map<std::string, int64_t> values;

  // Value of `name`; throws CacheError(InvalidArgument) if absent.
  int64_t get(const std::string& name) const;
  // Value of `name`, or `fallback` if absent. Never throws.
  int64_t get_or(const std::string& name, int64_t fallback) const noexcept;
  void set(const std::string& name, int64_t value) { values[name] = value; }
  bool empty() const noexcept { return values.empty(); }

  // "chunk=128,siz_b_q=64,warps=4" (sorted by name); "" for an empty config.
  std::string to_string() const;
  // Inverse of to_string(), by tfla_util's parse_config_text (blanks around items, names and
  // values ignored; order free; values the full 64-bit range: callers that launch kernels
  // check util::kConfigValueMin/Max). Throws CacheError(InvalidArgument) on a malformed or
  // empty item, a bad name, a duplicate or a value that is not a 64-bit integer.
  static Config parse(std::string_view text);

  bool operator==(const Config& o) const { return values == o.values; }
  bool operator!=(const Config& o) const { return values != o.values; }
};

// What happened to one candidate configuration during tuning (data, not an exception).
enum class CandidateStatus {
  Ok,
  CompileFailed,
  OverLimits,
  LaunchFailed,
  WrongResult,
  Faulted,
  Pending
};

// "ok", "compile_failed", "over_limits", "launch_failed", "wrong_result", "faulted", "pending".
const char* to_string(CandidateStatus s) noexcept;
// Inverse of to_string(CandidateStatus); nullopt for an unknown name. Never throws.
std::optional<CandidateStatus> candidate_status_from_string(std::string_view name) noexcept;

struct CandidateResult {
  Config config;
  CandidateStatus status = CandidateStatus::Pending;
  double time_median_us = 0;  // median kernel time, microseconds (0 unless Ok)
  double time_spread_us = 0;  // spread of the timed repeats (e.g. IQR), microseconds
  double max_rel_error = 0;   // validation error against the reference
  std::string message;        // compile log excerpt, fault text, ... ("" when Ok)
};

struct TunedEntry {
  EnvKey env;
  ProblemKey problem;  // with the exact shape that was tuned
  Config winner;
  double winner_median_us = 0;
  double winner_spread_us = 0;
  double default_median_us = 0;             // the heuristic default's time on the same shape
  std::vector<CandidateResult> candidates;  // every candidate tried (may be left empty)
  double tuning_seconds = 0;                // wall time of the tuning run for this problem
  std::string tool_version;                 // version of the tool that tuned, e.g. "tfla 0.1.0"
  int64_t timestamp_unix = 0;               // seconds since the epoch; 0 = "now" when stored
};

}  // namespace tfla::cache
