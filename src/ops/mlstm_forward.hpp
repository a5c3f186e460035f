// The TFLA forward. Chunkwise form: gate preprocessing, the inter-chunk state recurrence and the
// tiled intra-chunk output, three kernels on one stream. Parallel form: the output kernel alone
// over one chunk spanning the sequence, gates scanned inside it. Which family and config a call
// runs is resolved once per shape (ops/selection.hpp) through the family registry.
#pragma once
#include <memory>
#include <vector>

#include "ops/family.hpp"
#include "ops/fwd_config.hpp"
#include "ops/selection.hpp"
#include "ops/workspace.hpp"
#include "runtime/driver.hpp"
#include "runtime/kernel.hpp"
#include "tfla/mlstm_params.cuh"
#include "tfla/tfla.hpp"

namespace tfla::ops {

// The regions of a split state walk (SegmentPlan::nseg > 1; MlstmFwdParams::seg_*), placed last
// in a workspace from offset `begin`; all zero without a split.
struct SegWorkspace {
  size_t begin = 0, C = 0, n = 0, m = 0, mloc = 0, bytes = 0;
};
SegWorkspace take_segments(WorkspaceLayout& layout, const MlstmProblem& p, int64_t nc, int nseg);

// Workspace layout in bytes for (p, chunk); total is the size query's answer.
struct FwdWorkspace {
  size_t gate_b = 0, gate_u = 0, gate_pm = 0, chunk_g = 0, chunk_umax = 0, chunk_m = 0,
         states_C = 0, states_n = 0, C_last = 0, total = 0;
  SegWorkspace seg;
};
// with_last: also a (BH, Dqk, Dv) fp32 region for C_S (the saved-states layout); nseg > 1: the
// regions of a split state walk after everything else (never part of a saved buffer).
FwdWorkspace fwd_workspace(const MlstmProblem& p, int chunk, bool with_last = false, int nseg = 1);
// The parallel form uses none, but unless the caller pinned the form (form_pinned) a parallel
// config answers its chunk's layout: the size then also covers the chunkwise form that a call
// with states falls back to (select_fwd).
// The fused forward's: the gate kernel's regions at its chunk of 64, nothing else.
FwdWorkspace fused_fwd_workspace(const MlstmProblem& p);
inline FwdWorkspace fwd_workspace(const MlstmProblem& p, const FwdConfig& cfg, bool form_pinned = false) {
  if (cfg.parallel() && form_pinned) return {};
  if (cfg.fused) return fused_fwd_workspace(p);
  const int64_t nc = (p.S + cfg.chunk - 1) / cfg.chunk;
  return fwd_workspace(p, cfg.chunk, false, state_segments(cfg.st_seg, nc, p.B * p.NH).nseg);
}
// Size of the saved-states buffer (the workspace layout plus C_S) for a chunk length.
inline size_t saved_size(const MlstmProblem& p, int chunk) { return fwd_workspace(p, chunk, true).total; }

// Launches the chunk-state kernel over f (every field but the split's set) and, for a split walk
// (seg.nseg > 1), the fix kernel after it; seg_base is the address of the workspace's seg.begin.
// Shared by the forward and the backward's recompute.
struct StateLaunch {
  bool sm90 = false;
  int siz_b_k = 0, siz_b_v = 0;
  SegmentPlan seg;
};
void launch_states(const MlstmProblem& p, const StateLaunch& sl, const SegWorkspace& ws, CUdeviceptr seg_base,
                   MlstmFwdParams& f, const rt::LoadedKernel& states, const rt::LoadedKernel* fix, CUstream stream);

// Empty when t suits the parallel form; else what in it needs the chunkwise form (initial or
// last states, a saved buffer).
std::string parallel_conflict(const ForwardTensors& t);

// A resolved forward: its family, typed config and the key of its kernels.
struct FwdSelection {
  const Family* family = nullptr;
  FwdConfig cfg;
  MemoKey kernel_key{};
  // The family's acceptance rule for this config on the device the selection was made on
  // (current_limits()): "" when it runs, else why not. Decided once, with the selection.
  std::string rejected;
  // For a fused config: the same config with fused = 0, which a call with a saved-states buffer
  // runs (the fused walk keeps no chunk states).
  std::shared_ptr<const FwdSelection> unfused;
};
// The selection a call runs (memoized per shape, device and pinned config): `caller`
// (LaunchOptions::config) or, when empty, the tuned config, over the family's default. When the
// library chose the parallel form (tuned or default, not pinned by the caller) but the call
// needs the chunkwise form (needs_chunkwise: it carries states), the chunkwise default instead.
// Throws InvalidArgument for unknown keys or values out of range (the config is not checked).
const FwdSelection& select_fwd(const MlstmProblem& p, const Config& caller, bool needs_chunkwise);
// The selection of an explicit typed config (the tuner's candidates).
FwdSelection selection_of(const MlstmProblem& p, const FwdConfig& cfg);

// Validates everything and launches the selection (the public entry point and the tuner).
// A parallel config with states throws InvalidArgument.
void run_forward(const MlstmProblem& p, const ForwardTensors& t, const LaunchOptions& o, const FwdSelection& sel);
inline void forward_with_config(const MlstmProblem& p, const ForwardTensors& t, const LaunchOptions& o,
                                const FwdConfig& cfg) {
  run_forward(p, t, o, selection_of(p, cfg));
}

}  // namespace tfla::ops
