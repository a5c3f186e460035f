// Launch configuration of the chunkwise backward (state recompute, dC recurrence, three tile
// kernels, gate gradients) and its validity rules.
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

  Config to_config() const;
  void apply(const Config& c);  // throws InvalidArgument on unknown keys
  FwdConfig recompute_config() const;  // the forward state kernel's part
};

BwdConfig default_bwd_config(const MlstmProblem& p, int chunk = 0);
BwdConfig resolve_bwd_config(const MlstmProblem& p, const Config& pinned);
std::string check_bwd_config(const BwdConfig& cfg, const MlstmProblem& p);
int bwd_dstates_smem(const BwdConfig& c, const MlstmProblem& p);
// mode: 0 dQ, 1 dK, 2 dV
int bwd_tile_smem(const BwdConfig& c, const MlstmProblem& p, int mode);

}  // namespace tfla::ops
