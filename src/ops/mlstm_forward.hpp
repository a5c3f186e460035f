// The TFLA forward. Chunkwise form: gate preprocessing, the inter-chunk state recurrence and the
// tiled intra-chunk output, three kernels on one stream. Parallel form (FwdConfig::parallel):
// the output kernel alone over one chunk spanning the sequence, gates scanned inside it.
#pragma once
#include <vector>

#include "ops/fwd_config.hpp"
#include "runtime/kernel.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

// The rendered kernels of a forward configuration (parallel: output only, gates and states
// empty).
struct FwdKernels {
  rt::KernelSpec gates, states, output;
  bool parallel = false;
  std::vector<rt::KernelSpec> launched() const;  // in launch order
};
FwdKernels render_fwd(const MlstmProblem& p, const FwdConfig& cfg);

// Workspace layout in bytes for (p, cfg); total() is the size query's answer.
struct FwdWorkspace {
  size_t gate_b = 0, gate_u = 0, gate_pm = 0, chunk_g = 0, chunk_umax = 0, chunk_m = 0,
         states_C = 0, states_n = 0, C_last = 0, total = 0;
};
// with_last: also a (BH, Dqk, Dv) fp32 region for C_S (the saved-states layout).
FwdWorkspace fwd_workspace(const MlstmProblem& p, int chunk, bool with_last = false);
// The parallel form uses none, but unless the caller pinned the form (form_pinned) a parallel
// config answers its chunk's layout: the size then also covers the chunkwise form that a call
// with states falls back to (select_fwd_config).
inline FwdWorkspace fwd_workspace(const MlstmProblem& p, const FwdConfig& cfg, bool form_pinned = false) {
  if (cfg.parallel && form_pinned) return {};
  return fwd_workspace(p, cfg.chunk, false);
}
// Size of the saved-states buffer (the workspace layout plus C_S) for a chunk length.
inline size_t saved_size(const MlstmProblem& p, int chunk) { return fwd_workspace(p, chunk, true).total; }

// Empty when t suits the parallel form; else what in it needs the chunkwise form (initial or
// last states, a saved buffer).
std::string parallel_conflict(const ForwardTensors& t);

// The config a call runs: `caller` (LaunchOptions::config) or, when empty, the tuned one, over
// the default. When parallel = 1 is the library's choice (tuned or default, not in `caller`) but
// t needs the chunkwise form, the chunkwise default instead (logged at debug).
FwdConfig select_fwd_config(const MlstmProblem& p, const ForwardTensors& t, const Config& caller);

// Validates everything and launches with an explicit config (used by the public entry point
// and by the tuner). A parallel config with states throws InvalidArgument.
void forward_with_config(const MlstmProblem& p, const ForwardTensors& t, const LaunchOptions& o,
                         const FwdConfig& cfg);

}  // namespace tfla::ops
