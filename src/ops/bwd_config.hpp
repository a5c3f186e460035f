// Launch configuration of the backward and its validity rules: the chunkwise form (state
// recompute, dC recurrence, three tile kernels, gate gradients) or, with parallel = 1, the
// parallel (quadratic) form (dQ, dK and dV tiles in one launch, then the gate gradients; the
// keys chunk, st_*, ds_* are then unused).
#pragma once
#include <string>

#include "ops/fwd_config.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

struct BwdConfig {
  int chunk = 128;
  // recompute of the chunk states: the forward's state kernel
  int st_siz_b_k = 128, st_siz_b_v = 128, st_sub = 64, st_warps_m = 4, st_warps_n = 2;
  // reverse dC recurrence
  int ds_siz_b_k = 128, ds_siz_b_v = 128, ds_sub = 64, ds_warps_m = 4, ds_warps_n = 2;
  // dQ / dK / dV tile kernels
  int siz_b_r = 64;    // rows of the gradient per CTA
  int siz_b_t = 64;    // rows of the other side per intra-chunk tile
  int siz_b_nqk = 128; // gradient columns per CTA for dQ and dK (a Dqk tile)
  int siz_b_nv = 128;  // gradient columns per CTA for dV (a Dv tile)
  int siz_b_kc = 64;   // contraction rows per staged state block
  int warps_m = 2, warps_n = 4;
  // 1: the parallel form (no states: no initial states, dC_last, dC0 or saved buffer)
  int parallel = 0;

  Config to_config() const;
  void apply(const Config& c);  // throws InvalidArgument on unknown keys
  FwdConfig recompute_config() const;  // the forward state kernel's part
};

// Whether the analytic default of p is the parallel form (short sequences, see bwd_config.cpp).
bool parallel_bwd_by_default(const MlstmProblem& p);
// As the forward's: chunk > 0 fixes the chunk (chunkwise form); chunk = 0 may give the parallel
// form.
BwdConfig default_bwd_config(const MlstmProblem& p, int chunk = 0);
BwdConfig chunkwise_bwd_config(const MlstmProblem& p);
BwdConfig parallel_bwd_config(const MlstmProblem& p);
// pinned over the default (parallel = 1 pinned: over the parallel default; chunk pinned: over
// that chunk's default).
BwdConfig resolve_bwd_config(const MlstmProblem& p, const Config& pinned);
std::string check_bwd_config(const BwdConfig& cfg, const MlstmProblem& p);
int bwd_dstates_smem(const BwdConfig& c, const MlstmProblem& p);
// mode: 0 dQ, 1 dK, 2 dV (the parallel form adds its gate scan)
int bwd_tile_smem(const BwdConfig& c, const MlstmProblem& p, int mode);
// CTAs per SM a gradient tile kernel's launch bounds ask for: 2 where two fit the shared memory
// and, with registers capped at 128, the register file (<= 256 threads), else 0 (no request).
int bwd_tile_min_blocks(const BwdConfig& c, const MlstmProblem& p, int mode);
// The same rule for the parallel form's tile kernel.
int bwd_parallel_min_blocks(const BwdConfig& c, const MlstmProblem& p);
// The parallel form's one tile launch: the largest of the three modes.
int bwd_parallel_smem(const BwdConfig& c, const MlstmProblem& p);

}  // namespace tfla::ops
