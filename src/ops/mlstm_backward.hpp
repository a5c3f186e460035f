// The chunkwise TFLA backward: recompute gates and chunk states (the forward's kernels), the
// reverse dC recurrence, dQ / dK / dV tile kernels, then the gate gradients.
#pragma once
#include "ops/bwd_config.hpp"
#include "runtime/kernel.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

struct BwdKernels {
  rt::KernelSpec gates, states, dstates, dq, dk, dv, gates_local, gates_df;
};
BwdKernels render_bwd(const MlstmProblem& p, const BwdConfig& cfg);

struct BwdWorkspace {
  size_t gate_b = 0, gate_u = 0, gate_pm = 0, chunk_g = 0, chunk_umax = 0, chunk_m = 0,
         states_C = 0, dstates_C = 0, C_last = 0, dclast_dot = 0, xpart = 0, row_x = 0, chunk_x = 0, total = 0;
  int dclast_parts = 0;
  int xparts = 0;
};
// saved: gate data and chunk states come from the forward's saved buffer (not allocated here).
BwdWorkspace bwd_workspace(const MlstmProblem& p, const BwdConfig& cfg, bool saved = false);

void backward_with_config(const MlstmProblem& p, const BackwardTensors& t, const LaunchOptions& o,
                          const BwdConfig& cfg);

}  // namespace tfla::ops
