// The TFLA backward. Chunkwise form: recompute gates and chunk states (the forward's kernels),
// the reverse dC recurrence, dQ / dK / dV tile kernels, then the gate gradients. Parallel form
// (BwdConfig::parallel): one launch of the dQ / dK / dV tiles over one chunk spanning the
// sequence (gates scanned inside), then one of the gate gradients.
#pragma once
#include <string>
#include <vector>

#include "ops/bwd_config.hpp"
#include "runtime/kernel.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

struct BwdKernels {
  rt::KernelSpec gates, states, dstates, dq, dk, dv, gates_local, gates_df;
  rt::KernelSpec tiles;  // parallel: dQ, dK and dV in one launch (then gates_local alone)
  bool parallel = false;
  std::vector<rt::KernelSpec> launched() const;  // in launch order
};
BwdKernels render_bwd(const MlstmProblem& p, const BwdConfig& cfg);

struct BwdWorkspace {
  size_t gate_b = 0, gate_u = 0, gate_pm = 0, chunk_g = 0, chunk_umax = 0, chunk_m = 0,
         states_C = 0, dstates_C = 0, C_last = 0, dclast_dot = 0, xpart = 0, row_x = 0, chunk_x = 0, total = 0;
  int dclast_parts = 0;
  int xparts = 0;
};
// saved: gate data and chunk states come from the forward's saved buffer (not allocated here).
// The parallel form needs xpart alone; unless the caller pinned the form (form_pinned) a
// parallel config's total also covers the chunkwise form a call with states falls back to.
BwdWorkspace bwd_workspace(const MlstmProblem& p, const BwdConfig& cfg, bool saved = false,
                           bool form_pinned = false);

// Empty when t suits the parallel form; else what in it needs the chunkwise form (initial
// states, dC_last, dC0, a saved buffer).
std::string parallel_conflict(const BackwardTensors& t);
// As select_fwd_config: the caller's or tuned config over the default, and the chunkwise
// default when the library's parallel choice meets a call that needs the chunkwise form.
BwdConfig select_bwd_config(const MlstmProblem& p, const BackwardTensors& t, const Config& caller);

void backward_with_config(const MlstmProblem& p, const BackwardTensors& t, const LaunchOptions& o,
                          const BwdConfig& cfg);

}  // namespace tfla::ops
