// Launch configuration of the chunkwise forward (three kernels) and its validity rules.
// The named-parameter form (tfla::Config) is what the tuner and the cache store.
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

  Config to_config() const;
  // Reads the keys present in c over this config; throws InvalidArgument on unknown keys.
  void apply(const Config& c);
};

// The analytic default for a problem (used until tuned, and as the tuner's baseline); chunk > 0
// fixes the chunk length and derives the rest from it.
FwdConfig default_fwd_config(const MlstmProblem& p, int chunk = 0);
// The default for p with the pinned keys applied over it.
FwdConfig resolve_fwd_config(const MlstmProblem& p, const Config& pinned);
// Empty when cfg is valid for p; else a sentence naming the violated rule.
std::string check_fwd_config(const FwdConfig& cfg, const MlstmProblem& p);
// Shared memory of the two tiled kernels, bytes.
int fwd_states_smem(const FwdConfig& cfg, const MlstmProblem& p);
int fwd_output_smem(const FwdConfig& cfg, const MlstmProblem& p);

}  // namespace tfla::ops
