// Launch configuration of the forward and its validity rules: the chunkwise form (three
// kernels) or, with parallel = 1, the parallel (quadratic) form (the output kernel alone, one
// chunk spanning the sequence, gates scanned inside it; the keys chunk, siz_b_kc's inter part and
// st_* are then unused). The named-parameter form (tfla::Config) is what the tuner and the cache
// store.
#pragma once
#include <string>

#include "tfla/tfla.hpp"

namespace tfla::ops {

struct FwdConfig {
  int chunk = 128;  // chunk length L
  // output kernel
  int siz_b_q = 64;   // query rows per CTA
  int siz_b_kv = 64;  // key rows per intra-chunk tile
  int siz_b_v = 128;  // Dv columns per CTA
  int siz_b_kc = 64;  // Dqk rows of the chunk state per staged block
  int warps_m = 4, warps_n = 2;
  // state kernel
  int st_siz_b_k = 128;  // Dqk rows of C per CTA
  int st_siz_b_v = 128;  // Dv columns of C per CTA
  int st_sub = 64;       // chunk rows per streamed sub-block
  int st_warps_m = 4, st_warps_n = 2;
  // 1: the parallel form (no chunk states; no initial or last states, no saved buffer)
  int parallel = 0;

  Config to_config() const;
  // Reads the keys present in c over this config; throws InvalidArgument on unknown keys.
  void apply(const Config& c);
};

// The longest sequence the parallel form accepts (see kParallelMaxS in fwd_config.cpp).
int parallel_max_seq();
// Whether the analytic default of p is the parallel form (short sequences, see fwd_config.cpp).
bool parallel_by_default(const MlstmProblem& p);

// The analytic default for a problem (used until tuned, and as the tuner's baseline); chunk > 0
// fixes the chunk length, so the chunkwise form, and derives the rest from it; chunk = 0 may
// give the parallel form (parallel_by_default).
FwdConfig default_fwd_config(const MlstmProblem& p, int chunk = 0);
// The chunkwise form's default for p (what a parallel choice falls back to).
FwdConfig chunkwise_fwd_config(const MlstmProblem& p);
// The parallel form's default for p: output tiles sized for the sequence; the chunkwise keys
// keep chunkwise_fwd_config's values.
FwdConfig parallel_fwd_config(const MlstmProblem& p);
// The default for p with the pinned keys applied over it (parallel = 1 pinned: over the
// parallel default; chunk pinned: over that chunk's default).
FwdConfig resolve_fwd_config(const MlstmProblem& p, const Config& pinned);
// Empty when cfg is valid for p; else a sentence naming the violated rule.
std::string check_fwd_config(const FwdConfig& cfg, const MlstmProblem& p);
// Shared memory of the two tiled kernels, bytes.
int fwd_states_smem(const FwdConfig& cfg, const MlstmProblem& p);
// CTAs per SM the state kernel's launch bounds ask for: 2 where two fit the shared memory and,
// with registers capped at 128, the register file (<= 256 threads), else 0 (no request).
int fwd_states_min_blocks(const FwdConfig& cfg, const MlstmProblem& p);
int fwd_output_smem(const FwdConfig& cfg, const MlstmProblem& p);

}  // namespace tfla::ops
