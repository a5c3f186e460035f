// The chunkwise TFLA forward: gate preprocessing, the inter-chunk state recurrence and the
// tiled intra-chunk output, three kernels on one stream.
#pragma once
#include <vector>

#include "ops/fwd_config.hpp"
#include "runtime/kernel.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

// The three rendered kernels of a forward configuration.
struct FwdKernels {
  rt::KernelSpec gates, states, output;
};
FwdKernels render_fwd(const MlstmProblem& p, const FwdConfig& cfg);

// Workspace layout in bytes for (p, cfg); total() is the size query's answer.
struct FwdWorkspace {
  size_t gate_b = 0, gate_u = 0, gate_pm = 0, chunk_g = 0, chunk_umax = 0, chunk_m = 0,
         states_C = 0, states_n = 0, C_last = 0, total = 0;
};
// with_last: also a (BH, Dqk, Dv) fp32 region for C_S (the saved-states layout).
FwdWorkspace fwd_workspace(const MlstmProblem& p, int chunk, bool with_last = false);
inline FwdWorkspace fwd_workspace(const MlstmProblem& p, const FwdConfig& cfg) {
  return fwd_workspace(p, cfg.chunk, false);
}
// Size of the saved-states buffer (the workspace layout plus C_S) for a chunk length.
inline size_t saved_size(const MlstmProblem& p, int chunk) { return fwd_workspace(p, chunk, true).total; }

// Validates everything and launches with an explicit config (used by the public entry point
// and by the tuner).
void forward_with_config(const MlstmProblem& p, const ForwardTensors& t, const LaunchOptions& o,
                         const FwdConfig& cfg);

}  // namespace tfla::ops
