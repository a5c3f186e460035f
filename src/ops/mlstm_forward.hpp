// The TFLA forward. Chunkwise form: gate preprocessing, the inter-chunk state recurrence and the
// tiled intra-chunk output, three kernels on one stream. Parallel form: the output kernel alone
// over one chunk spanning the sequence, gates scanned inside it. Which family, config and launch
// plan a call runs is resolved once per shape (ops/selection.hpp) through the family registry;
// a call checks its arguments, binds its buffers and executes the plan (ops/plan.hpp).
#pragma once
#include <array>
#include <vector>

#include "ops/family.hpp"
#include "ops/packed.hpp"
#include "ops/fwd_config.hpp"
#include "ops/plan.hpp"
#include "ops/selection.hpp"
#include "runtime/driver.hpp"
#include "runtime/kernel.hpp"
#include "tfla/mlstm_params.cuh"
#include "tfla/tfla.hpp"

namespace tfla::ops {

// The workspace a call with cfg needs (what mlstm_forward_workspace_size answers), from the
// plans the call runs: with_saved, the plan that fills a saved buffer (the split walk's regions
// alone; none for a fused config that does not split). A parallel config needs none where the caller pinned
// the form (form_pinned); otherwise the size covers the chunkwise plan of the same config, which
// a call with states falls back to (select_fwd).
size_t fwd_workspace_size(const MlstmProblem& p, const FwdConfig& cfg, bool with_saved, bool form_pinned);

// Empty when t suits the parallel form; else what in it needs the chunkwise form (initial or
// last states, a saved buffer).
std::string parallel_conflict(const ForwardTensors& t);

// A resolved forward: its family, typed config and the key of its kernels.
struct FwdSelection {
  const Family* family = nullptr;
  FwdConfig cfg;
  bool packed = false;  // for packed sequences: its kernels read their offsets (launch_kernels)
  MemoKey kernel_key{};
  // The family's acceptance rule for this config on the device the selection was made on
  // (current_limits()): "" when it runs, else why not. Decided once, with the selection.
  std::string rejected;
  // The family's plans for the config on that device, without and with a saved-states buffer
  // (plans[1] unused by the parallel form); empty where the config is rejected.
  std::array<Plan, 2> plans{};
};
// The selection a call runs (memoized per shape, device and pinned config): `caller`
// (LaunchOptions::config) or, when empty, the tuned config, over the family's default. When the
// library chose the parallel form (tuned or default, not pinned by the caller) but the call
// needs the chunkwise form (needs_chunkwise: it carries states), the chunkwise default instead.
// Throws InvalidArgument for unknown keys or values out of range (the config is not checked).
// packed: p is a packed call's launch problem (ops/packed.hpp), whose config is resolved for its
// bucket of sequence counts (packed_config_problem) so that new packings reuse it.
const FwdSelection& select_fwd(const MlstmProblem& p, const Config& caller, bool needs_chunkwise,
                               bool packed = false);
// The selection of an explicit typed config (the tuner's candidates).
// packed: p is a packed call's launch problem.
FwdSelection selection_of(const MlstmProblem& p, const FwdConfig& cfg, bool packed = false);

// Checks the problem and the tensors (pointers, alignment, strides, h apart from the inputs):
// what needs no selection, so the public entry point runs it before selecting (which may create
// the device's context and open the tuned-config cache).
void check_forward_tensors(const MlstmProblem& p, const ForwardTensors& t);
// The part of check_forward_tensors that every path of a forward call shares: the problem,
// cu_seqlens, q, k, v, h and the gates, h apart from the inputs; not the states, whose alignment
// rules differ on Backend's step path (it copies a C0 off 8-byte alignment into C_last), nor the
// per-token outputs, which the chunkwise path checks. Backend::forward runs it before choosing
// the path of a call without states (the one choice that selects kernels).
void check_forward_io(const MlstmProblem& p, const ForwardTensors& t);
// Checks what depends on the selection (the form against the states, the config, the saved
// buffer and the workspace) and launches it; the tensors were checked (check_forward_tensors).
// A parallel config with states throws InvalidArgument.
void launch_forward(const MlstmProblem& p, const ForwardTensors& t, const LaunchOptions& o, const FwdSelection& sel);
// check_forward_tensors, then launch_forward (the tuner and the tests).
void run_forward(const MlstmProblem& p, const ForwardTensors& t, const LaunchOptions& o, const FwdSelection& sel);
inline void forward_with_config(const MlstmProblem& p, const ForwardTensors& t, const LaunchOptions& o,
                                const FwdConfig& cfg) {
  run_forward(p, t, o, selection_of(launch_problem(p), cfg, is_packed(p)));
}

}  // namespace tfla::ops
