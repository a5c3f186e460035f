// The recurrent step (generation): T >= 1 tokens of B x NH heads per call, the fp32 state
// (C, n, m) updated in place or written apart from its sources by the kernels of
// kernel_templates/tfla/mlstm_step.cuh: one launch, or two where n and m are updated in place
// and the device cannot hold every head's cluster at once.
#pragma once
#include <vector>

#include "ops/plan.hpp"
#include "ops/selection.hpp"
#include "ops/step_config.hpp"
#include "runtime/kernel.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

// A resolved step: its typed config, the key of its kernels (step_kernels) and its plan for each
// way of writing n and m, indexed by nm_mode (memoized per shape, device and pinned config: a
// decode loop's call does no default search).
struct StepSelection {
  StepConfig cfg;
  MemoKey kernel_key{};
  Plan plans[4];  // step_plan(p, cfg, nm_mode) for STEP_NM_APART, _CLUSTER, _DEPENDENT, _RECORDS
  bool records = false;  // several tokens over many waves of CTAs: STEP_NM_RECORDS for every call
};
const StepSelection& select_step(const MlstmProblem& p, const Config& caller);
StepSelection selection_of(const MlstmProblem& p, const StepConfig& cfg);

// Throws InvalidArgument unless p is a valid step problem (p.S = T >= 1 tokens, shapes, dtypes).
void check_step_problem(const MlstmProblem& p);

// Checks the step's tensors (pointers, alignment, strides, overlaps; no selection and no driver):
// the public entry point runs it before selecting, which may create the device's context.
void check_step_tensors(const MlstmProblem& p, const StepTensors& t);
// Validates everything and launches with an explicit config (used by the public entry point
// and by the tuner). Asynchronous on o.stream; uses no workspace.
void run_step(const MlstmProblem& p, const StepTensors& t, const LaunchOptions& o, const StepSelection& sel);
// run_step in two halves, for a caller that queues work of its own between the checks and the
// launch (the backend's step path, which copies or zeroes states first): check_step_call throws
// InvalidArgument for anything run_step would refuse and touches no driver; launch_step launches
// a call that check_step_call accepted.
void check_step_call(const MlstmProblem& p, const StepTensors& t, const StepSelection& sel);
void launch_step(const MlstmProblem& p, const StepTensors& t, const LaunchOptions& o, const StepSelection& sel);
inline void step_with_config(const MlstmProblem& p, const StepTensors& t, const LaunchOptions& o,
                             const StepConfig& cfg) {
  run_step(p, t, o, selection_of(p, cfg));
}

}  // namespace tfla::ops
