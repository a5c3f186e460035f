// The recurrent step (generation): T >= 1 tokens of B x NH heads per call, the fp32 state
// (C, n, m) updated in place by the two kernels of kernel_templates/tfla/mlstm_step.cuh.
#pragma once
#include <vector>

#include "ops/plan.hpp"
#include "ops/selection.hpp"
#include "ops/step_config.hpp"
#include "runtime/kernel.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

// The rendered kernels of a configuration: the state kernel (n, m and per-token records; one
// CTA per head) and the update kernel (C and h; (Dv / siz_b_v, B * NH) CTAs), launched in this
// order, the second as a programmatic dependent of the first.
// A resolved step: its typed config and the key of its kernels (memoized per shape, device
// and pinned config: a decode loop's call does no default search).
struct StepSelection {
  StepConfig cfg;
  MemoKey kernel_key{};
  Plan plan;  // the step family's (step_plan)
};
const StepSelection& select_step(const MlstmProblem& p, const Config& caller);
StepSelection selection_of(const MlstmProblem& p, const StepConfig& cfg);

// Throws InvalidArgument unless p is a valid step problem (p.S = T >= 1 tokens, shapes, dtypes).
void check_step_problem(const MlstmProblem& p);

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
