// Launch configuration of the recurrent step (kernel_templates/tfla/mlstm_step.cuh) and its
// validity rules. The named-parameter form (tfla::Config) is what the tuner and the cache store:
// {"siz_b_v", BV}, {"threads", NT}, {"cluster", 0 or 1}.
#pragma once
#include <string>

#include <vector>

#include "ops/family.hpp"
#include "runtime/kernel.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

struct StepConfig {
  int siz_b_v = 64;   // Dv columns of C per CTA; Dv / siz_b_v CTAs per head
  int threads = 256;  // threads per CTA; each keeps Dqk * siz_b_v / threads fp32 state values
  // 1: a call that updates n and m in place runs as one cluster launch (a cluster of the
  // Dv / siz_b_v CTAs of each head) where the device holds all of its clusters at once; 0: such
  // a call runs as two launches (the fused step, then n and m as its programmatic dependent).
  // Calls with sources apart from n and m are one launch either way.
  int cluster = 1;

  Config to_config() const;
  // Reads the keys present in c over this config; throws InvalidArgument on unknown keys and
  // values out of range.
  void apply(const Config& c);
  static const std::vector<KeyDef>& key_defs();
  int slices(int64_t dv) const { return static_cast<int>(dv / siz_b_v); }
};

// The analytic default for a problem (used until tuned, and as the tuner's baseline); the
// comment above its definition says why it is what it is.
StepConfig default_step_config(const MlstmProblem& p);
// The default for p with the pinned keys applied over it (a pinned siz_b_v alone gets the
// default's thread rule for that width).
StepConfig resolve_step_config(const MlstmProblem& p, const Config& pinned);
// Empty when cfg is valid for p; else a sentence naming the violated rule.
std::string check_step_config(const StepConfig& cfg, const MlstmProblem& p);
// The same rule as a static string, null when valid (no allocation: used on the hot path).
const char* step_config_error(const StepConfig& cfg, const MlstmProblem& p);
// Tokens whose inputs the kernel keeps in flight at once (its PF): the next power of two >= T,
// at most 8, halved while the shared memory would exceed 48 KiB. Derived from p.S = T, not tuned.
int step_prefetch_tokens(const StepConfig& cfg, const MlstmProblem& p);
// Static shared memory of the kernel, bytes (pf token buffers; 1 = the least it needs).
int step_smem(const StepConfig& cfg, const MlstmProblem& p, int pf = 1);
// The step's two kernels: the fused step (mlstm_step_fused) and the per-head n, m kernel
// (mlstm_step_nm), which follows it where n and m are updated in place without a cluster, and
// precedes it with per-token records where several tokens run on many CTAs.
std::vector<rt::KernelSpec> step_kernels(const MlstmProblem& p, const StepConfig& cfg);

}  // namespace tfla::ops
