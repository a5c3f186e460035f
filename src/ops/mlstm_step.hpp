// The recurrent step (generation): T >= 1 tokens of B x NH heads per call, the fp32 state
// (C, n, m) updated in place by the two kernels of kernel_templates/tfla/mlstm_step.cuh.
#pragma once
#include <vector>

#include "ops/step_config.hpp"
#include "runtime/kernel.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

// The rendered kernels of a configuration: the state kernel (n, m and per-token records; one
// CTA per head) and the update kernel (C and h; (Dv / siz_b_v, B * NH) CTAs), launched in this
// order, the second as a programmatic dependent of the first.
struct StepKernels {
  rt::KernelSpec state, update;
  std::vector<rt::KernelSpec> launched() const { return {state, update}; }
};
StepKernels render_step(const MlstmProblem& p, const StepConfig& cfg);

// Throws InvalidArgument unless p is a valid step problem (p.S = T >= 1 tokens, shapes, dtypes).
void check_step_problem(const MlstmProblem& p);

// Validates everything and launches with an explicit config (used by the public entry point
// and by the tuner). Asynchronous on o.stream; uses no workspace.
void step_with_config(const MlstmProblem& p, const StepTensors& t, const LaunchOptions& o,
                      const StepConfig& cfg);

}  // namespace tfla::ops
