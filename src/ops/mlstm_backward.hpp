// The TFLA backward. Chunkwise form: recompute gates and chunk states (the forward's kernels),
// the reverse dC recurrence, dQ / dK / dV tile kernels, then the gate gradients. Parallel form:
// one launch of the dQ / dK / dV tiles over one chunk spanning the sequence (gates scanned
// inside), then one of the gate gradients. The family, config and launch plan of a call are
// resolved once per shape through the family registry (ops/selection.hpp); a call checks its
// arguments, binds its buffers and executes the plan (ops/plan.hpp).
#pragma once
#include <array>
#include <string>
#include <vector>

#include "ops/bwd_config.hpp"
#include "ops/family.hpp"
#include "ops/packed.hpp"
#include "ops/mlstm_forward.hpp"
#include "ops/plan.hpp"
#include "ops/selection.hpp"
#include "runtime/kernel.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

// The workspace a call with cfg needs (what mlstm_backward_workspace_size answers): its plan's
// (with_saved: the plan that reads a saved buffer). Unless the caller pinned the form
// (form_pinned), a parallel config's size also covers the chunkwise plan of the same config,
// which a call with states falls back to.
size_t bwd_workspace_size(const MlstmProblem& p, const BwdConfig& cfg, bool with_saved, bool form_pinned);

// Empty when t suits the parallel form; else what in it needs the chunkwise form (initial
// states, dC_last, dC0, a saved buffer).
std::string parallel_conflict(const BackwardTensors& t);
// A resolved backward: its family, typed config and the key of its kernels.
struct BwdSelection {
  const Family* family = nullptr;
  BwdConfig cfg;
  bool packed = false;  // for packed sequences: its kernels read their offsets (launch_kernels)
  MemoKey kernel_key{};
  // The family's acceptance rule for this config on the device the selection was made on
  // (current_limits()): "" when it runs, else why not. Decided once, with the selection.
  std::string rejected;
  // The family's plans for the config on that device, without and with a saved-states buffer
  // (plans[1] unused by the parallel form); empty where the config is rejected.
  std::array<Plan, 2> plans{};
};
// As select_fwd: the caller's or tuned config over the family's default (memoized per shape),
// and the chunkwise default when the library's parallel choice meets a call that needs the
// chunkwise form (needs_chunkwise: it carries states, dC_last, dC0 or a saved buffer).
// packed: as select_fwd's.
const BwdSelection& select_bwd(const MlstmProblem& p, const Config& caller, bool needs_chunkwise,
                               bool packed = false);
// The selection for a call that reads a saved-states buffer: the chunk is the one the forward
// recorded for the buffer (ops/saved_states.hpp), else the forward's own choice for p, unless
// the caller pinned one. fwd_caller: what the forward's own choice is resolved with (the packed
// pins of a packed call, else nothing).
const BwdSelection& select_bwd_for_saved(const MlstmProblem& p, const Config& caller, const Config& fwd_caller,
                                         const void* saved, size_t saved_bytes, bool packed = false);
// packed: p is a packed call's launch problem.
BwdSelection selection_of(const MlstmProblem& p, const BwdConfig& cfg, bool packed = false);

// Checks the problem and the tensors (pointers, alignment, strides, the gradients apart from the
// inputs and from each other): what needs no selection, run by the public entry point before it
// selects (which may create the device's context and open the tuned-config cache).
void check_backward_tensors(const MlstmProblem& p, const BackwardTensors& t);
// Checks what depends on the selection and launches it; the tensors were checked.
void launch_backward(const MlstmProblem& p, const BackwardTensors& t, const LaunchOptions& o, const BwdSelection& sel);
// check_backward_tensors, then launch_backward (the tuner and the tests).
void run_backward(const MlstmProblem& p, const BackwardTensors& t, const LaunchOptions& o, const BwdSelection& sel);
inline void backward_with_config(const MlstmProblem& p, const BackwardTensors& t, const LaunchOptions& o,
                                 const BwdConfig& cfg) {
  run_backward(p, t, o, selection_of(launch_problem(p), cfg, is_packed(p)));
}

}  // namespace tfla::ops
