// The TFLA backward. Chunkwise form: recompute gates and chunk states (the forward's kernels),
// the reverse dC recurrence, dQ / dK / dV tile kernels, then the gate gradients. Parallel form:
// one launch of the dQ / dK / dV tiles over one chunk spanning the sequence (gates scanned
// inside), then one of the gate gradients. The family and config of a call are resolved once
// per shape through the family registry (ops/selection.hpp).
#pragma once
#include <string>
#include <vector>

#include "ops/bwd_config.hpp"
#include "ops/family.hpp"
#include "ops/mlstm_forward.hpp"
#include "ops/selection.hpp"
#include "runtime/kernel.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

struct BwdWorkspace {
  size_t gate_b = 0, gate_u = 0, gate_pm = 0, chunk_g = 0, chunk_umax = 0, chunk_m = 0,
         states_C = 0, dstates_C = 0, C_last = 0, dclast_dot = 0, xpart = 0, row_x = 0, chunk_x = 0, total = 0;
  int dclast_parts = 0;
  int xparts = 0;
  SegWorkspace seg;  // the recompute's split walk (not with a saved buffer)
  size_t seg_dC = 0; // the split dC walk's segment values, (BH, ds nseg, Dqk, Dv) fp32
};
// saved: gate data and chunk states come from the forward's saved buffer (not allocated here).
// The parallel form needs xpart alone; unless the caller pinned the form (form_pinned) a
// parallel config's total also covers the chunkwise form a call with states falls back to.
BwdWorkspace bwd_workspace(const MlstmProblem& p, const BwdConfig& cfg, bool saved = false,
                           bool form_pinned = false);

// Empty when t suits the parallel form; else what in it needs the chunkwise form (initial
// states, dC_last, dC0, a saved buffer).
std::string parallel_conflict(const BackwardTensors& t);
// A resolved backward: its family, typed config and the key of its kernels.
struct BwdSelection {
  const Family* family = nullptr;
  BwdConfig cfg;
  MemoKey kernel_key{};
  // The family's acceptance rule for this config on the device the selection was made on
  // (current_limits()): "" when it runs, else why not. Decided once, with the selection.
  std::string rejected;
};
// As select_fwd: the caller's or tuned config over the family's default (memoized per shape),
// and the chunkwise default when the library's parallel choice meets a call that needs the
// chunkwise form (needs_chunkwise: it carries states, dC_last, dC0 or a saved buffer).
const BwdSelection& select_bwd(const MlstmProblem& p, const Config& caller, bool needs_chunkwise);
// The selection for a call that reads a saved-states buffer: the chunk is the one the forward
// recorded for the buffer (ops/saved_states.hpp), else the forward's own choice for p, unless
// the caller pinned one.
const BwdSelection& select_bwd_for_saved(const MlstmProblem& p, const Config& caller, const void* saved,
                                         size_t saved_bytes);
BwdSelection selection_of(const MlstmProblem& p, const BwdConfig& cfg);

void run_backward(const MlstmProblem& p, const BackwardTensors& t, const LaunchOptions& o, const BwdSelection& sel);
inline void backward_with_config(const MlstmProblem& p, const BackwardTensors& t, const LaunchOptions& o,
                                 const BwdConfig& cfg) {
  run_backward(p, t, o, selection_of(p, cfg));
}

}  // namespace tfla::ops
