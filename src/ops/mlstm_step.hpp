// The recurrent step (generation): T >= 1 tokens of B x NH heads in one launch of
// kernel_templates/tfla/mlstm_step.cuh, the fp32 state (C, n, m) updated in place.
#pragma once
#include "ops/step_config.hpp"
#include "runtime/kernel.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

// The rendered step kernel of a configuration (one kernel; launched as (Dv / siz_b_v, B * NH)
// CTAs in clusters of Dv / siz_b_v).
rt::KernelSpec render_step(const MlstmProblem& p, const StepConfig& cfg);

// Throws InvalidArgument unless p is a valid step problem (p.S = T >= 1 tokens, shapes, dtypes).
void check_step_problem(const MlstmProblem& p);

// Validates everything and launches with an explicit config (used by the public entry point
// and by the tuner). Asynchronous on o.stream; uses no workspace.
void step_with_config(const MlstmProblem& p, const StepTensors& t, const LaunchOptions& o,
                      const StepConfig& cfg);

}  // namespace tfla::ops
