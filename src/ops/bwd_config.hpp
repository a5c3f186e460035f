// Launch configuration of the backward's kernels and their validity rules, shared by the two
// backward families (ops/families/bwd_chunkwise.cpp: state recompute, dC recurrence, three tile
// kernels, gate gradients; bwd_parallel.cpp: dQ, dK and dV tiles in one launch, then the gate
// gradients, the keys chunk, st_*, ds_* unused). The keys are the table in bwd_config.cpp.
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
  // 1: the recompute's state kernel / the dC kernel on the sm90 engine (bwd.chunkwise.sm90 only;
  // all Dqk rows per CTA, st_siz_b_v / ds_siz_b_v columns); 0: mma.sync with the tiles above
  int st_sm90 = 0, ds_sm90 = 0;
  // the recompute's state walk / the dC walk as segments of the sequence run in parallel, made
  // exact by the fix kernels (FwdConfig::st_seg; mlstm_bwd_dstate_fix.cuh); 1: one walk per head
  int st_seg = 1, ds_seg = 1;
  // 1: the dQ / dK / dV tile kernels on the sm90 engine (bwd.chunkwise.sm90 only; siz_b_r 128,
  // siz_b_t 64, siz_b_nqk / siz_b_nv the column tiles, siz_b_kc and the warp grid unused)
  int tl_sm90 = 0;
  // 1: dK and dV in one sm90 kernel (mlstm_bwd_dkv_sm90.cuh; needs tl_sm90 = 1 and Dqk, Dv of 64,
  // 128 or 256): one pass over the query side's tiles for both, siz_b_nv unused, siz_b_nqk dQ's
  int tl_dkv = 0;
  // the parallel form keeps no states: no initial states, dC_last, dC0 or saved buffer
  Form form = Form::Chunkwise;
  Engine engine = Engine::MmaSync;

  bool parallel() const noexcept { return form == Form::Parallel; }
  Config to_config() const;     // every key, plus the form selector ("parallel" = 0 or 1)
  void apply(const Config& c);  // throws InvalidArgument on unknown keys and values out of range
  static const std::vector<KeyDef>& key_defs();
  FwdConfig recompute_config() const;  // the forward state kernel's part
};

// Whether the parallel form is the backward's default for p (short sequences, see bwd_config.cpp).
bool parallel_bwd_by_default(const MlstmProblem& p);
// The chunkwise form's analytic default for p on dev; chunk > 0 fixes the chunk length (0: the
// forward's default chunk, so saved states match).
BwdConfig chunkwise_bwd_config(const MlstmProblem& p, const DeviceLimits& dev, int chunk = 0);
BwdConfig parallel_bwd_config(const MlstmProblem& p, const DeviceLimits& dev);
// The acceptance rule of both backward families: empty when cfg runs p on dev, else the first
// violated rule (tiles and threads, shared memory against dev, the register estimate).
std::string check_bwd_config(const BwdConfig& cfg, const MlstmProblem& p, const DeviceLimits& dev);
// ---- the sm_90a engine's parallel form (bwd.parallel.sm90) ------------------------------------
// The gate kernel, the sm90 gradient tiles (dQ, dK and dV, or dQ and the dK/dV kernel) and the
// gate gradients over one chunk spanning the sequence (parallel_sm90_chunk), with no state or dC
// walk: the chunk has no state and no dC, so the tiles run only their causal parts.
// "" when it serves p on dev (the engine's backward, S up to 1024), else why.
std::string sm90_parallel_bwd_serves(const MlstmProblem& p, const DeviceLimits& dev);
// Whether it is the backward's default for p on dev (measured: see bwd_config.cpp).
bool parallel_sm90_bwd_by_default(const MlstmProblem& p, const DeviceLimits& dev);
// Its default: the sm90 chunkwise default's gradient tiles at its chunk.
BwdConfig parallel_sm90_bwd_config(const MlstmProblem& p, const DeviceLimits& dev);
// Its acceptance rule.
std::string check_bwd_parallel_sm90_config(const BwdConfig& cfg, const MlstmProblem& p, const DeviceLimits& dev);

// The backward's kernels for a config, in launch order (chunkwise: gates, states, dC, dQ, dK,
// dV, local gate gradients, df; parallel: the tile kernel, the gate gradients).
std::vector<rt::KernelSpec> bwd_kernels(const MlstmProblem& p, const BwdConfig& cfg, const DeviceLimits& dev);
int bwd_dstates_smem(const BwdConfig& c, const MlstmProblem& p);
// The fix kernel of a split dC walk (kernel_templates/tfla/mlstm_bwd_dstate_fix.cuh).
rt::KernelSpec bwd_dstate_fix_kernel(const MlstmProblem& p);

// The sm90 engine (bwd.chunkwise.sm90): the chunk-state kernels (recompute and dC) on TMA and
// wgmma, the gradient tile kernels of the mma.sync family. It serves sm_90a devices with 16-bit
// inputs, Dqk 128 or 256 and Dv a multiple of 64 ("" then, else why not).
std::string sm90_bwd_serves(const MlstmProblem& p, const DeviceLimits& dev);
// Whether it is the backward's default for p (where its gradient tiles run and, as measured,
// win: Dv >= 256, or dK and dV in one kernel); the chunkwise form's default is then sm90_bwd_config.
bool sm90_bwd_preferred(const MlstmProblem& p, const DeviceLimits& dev);
// Its default (chunk > 0 fixes the chunk length; 0: the sm90 forward's default chunk).
BwdConfig sm90_bwd_config(const MlstmProblem& p, const DeviceLimits& dev, int chunk = 0);
// Its acceptance rule: the sm90 kernels' rules where st_sm90 / ds_sm90 / tl_sm90 are set, the
// mma.sync family's for everything else.
std::string check_bwd_sm90_config(const BwdConfig& cfg, const MlstmProblem& p, const DeviceLimits& dev);
// The sm90 gradient tile kernels (mlstm_bwd_tile_sm90.cuh), mode 0 dQ, 1 dK, 2 dV: the ring depth
// that fits dev's shared memory with column tiles of bn (0: not even two slots fit), the rule for
// their tiles ("" or why not) and the kernel.
int bwd_tile_sm90_stages(const MlstmProblem& p, int mode, int bn, const DeviceLimits& dev);
std::string check_bwd_tiles_sm90(const BwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev);
rt::KernelSpec bwd_tile_sm90_kernel(const MlstmProblem& p, const BwdConfig& c, int mode, const DeviceLimits& dev);
// The dK/dV kernel (tl_dkv): its ring depth on dev (0: not even two slots fit), its rule ("" or
// why not) and the kernel.
int bwd_dkv_sm90_stages(const MlstmProblem& p, const DeviceLimits& dev);
// Whether the sm90 default c runs dK and dV in one kernel on dev (where its ring holds three slots).
bool sm90_dkv_by_default(const BwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev);
std::string check_bwd_dkv_sm90(const BwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev);
rt::KernelSpec bwd_dkv_sm90_kernel(const MlstmProblem& p, const BwdConfig& c, const DeviceLimits& dev);
// mode: 0 dQ, 1 dK, 2 dV (the parallel form adds its gate scan)
int bwd_tile_smem(const BwdConfig& c, const MlstmProblem& p, int mode);
// CTAs per SM a gradient tile kernel's launch bounds ask for: 2 where two fit the shared memory
// and, with registers capped at 128, the register file (<= 256 threads), else 0 (no request).
int bwd_tile_min_blocks(const BwdConfig& c, const MlstmProblem& p, int mode, const DeviceLimits& dev);
// CTAs per SM the mma.sync dC kernel's launch bounds ask for: 2 where two fit the SM's shared
// memory and the registers capped at 128 hold its accumulators (<= 64 per thread), else 0.
int bwd_dstates_min_blocks(const BwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev);
// The same rule for the parallel form's tile kernel.
int bwd_parallel_min_blocks(const BwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev);
// The parallel form's one tile launch: the largest of the three modes.
int bwd_parallel_smem(const BwdConfig& c, const MlstmProblem& p);

}  // namespace tfla::ops
