// The step op: argument checks, config dispatch (pinned, else tuned, else the analytic default)
// and the launch through the per-process kernel memo, plus the public tfla::mlstm_step and
// tfla::mlstm_step_config.
#include "ops/mlstm_step.hpp"

#include <string>
#include <utility>

#include "ops/kernel_memo.hpp"
#include "ops/params_fill.hpp"
#include "ops/problem_check.hpp"
#include "ops/render_args.hpp"
#include "ops/tuned_config.hpp"
#include "runtime/device.hpp"
#include "runtime/driver.hpp"
#include "tfla/mlstm_step_params.cuh"

namespace tfla::ops {
namespace {

[[noreturn]] void invalid(const std::string& msg, std::string details = {}) {
  throw Error(ErrorCode::InvalidArgument, msg, std::move(details));
}

void check_state(const char* name, const float* ptr, size_t align, const char* shape) {
  if (!ptr)
    invalid(std::string(name) + " is null: the step reads and writes the state in place, so " + name + " " +
            shape + " fp32 is required");
  const auto addr = reinterpret_cast<uintptr_t>(ptr);
  if (addr % align)
    invalid(std::string(name) + " is not " + std::to_string(align) + "-byte aligned (address " +
            std::to_string(addr) + ")");
}

// The bytes [lo, hi) a (B, NH, T, d) tensor with these strides may touch.
struct Extent {
  uintptr_t lo, hi;
};
Extent extent(const void* ptr, const Strides& s, const MlstmProblem& p, int64_t d, size_t elem_bytes) {
  const int64_t last = (p.B - 1) * s.b + (p.NH - 1) * s.h + (p.S - 1) * s.s + d;  // elements
  const auto lo = reinterpret_cast<uintptr_t>(ptr);
  return {lo, lo + static_cast<uintptr_t>(last) * elem_bytes};
}

// h holds the state kernel's records before the update kernel reads the inputs and state: an h
// that shares bytes with any of them would corrupt them, so it is refused by name.
void check_h_apart(const MlstmProblem& p, const StepTensors& t) {
  const size_t eb = dtype_bytes(p.dtype), gb = dtype_bytes(p.gate_dtype);
  const Extent h = extent(t.h, resolve(t.h_strides, p, p.Dv), p, p.Dv, eb);
  MlstmProblem state = p;
  state.S = 1;  // states have no token axis
  const std::pair<const char*, Extent> others[] = {
      {"q", extent(t.q, resolve(t.q_strides, p, p.Dqk), p, p.Dqk, eb)},
      {"k", extent(t.k, resolve(t.k_strides, p, p.Dqk), p, p.Dqk, eb)},
      {"v", extent(t.v, resolve(t.v_strides, p, p.Dv), p, p.Dv, eb)},
      {"i", extent(t.i, resolve_gate(t.i_strides, p), p, 1, gb)},
      {"f", extent(t.f, resolve_gate(t.f_strides, p), p, 1, gb)},
      {"C", extent(t.C, Strides{p.NH * p.Dqk * p.Dv, p.Dqk * p.Dv, 0}, state, p.Dqk * p.Dv, 4)},
      {"n", extent(t.n, Strides{p.NH * p.Dqk, p.Dqk, 0}, state, p.Dqk, 4)},
      {"m", t.m ? extent(t.m, Strides{p.NH, 1, 0}, state, 1, 4) : Extent{0, 0}},
  };
  for (const auto& [name, e] : others)
    if (e.lo < h.hi && h.lo < e.hi)
      invalid(std::string("h overlaps ") + name +
              ": the step writes per-token scratch into h before it reads its inputs and state; pass a "
              "separate output buffer");
}

void check_step_tensors(const MlstmProblem& p, const StepTensors& t) {
  check_tensor("q", t.q, t.q_strides, p, p.Dqk);
  check_tensor("k", t.k, t.k_strides, p, p.Dqk);
  check_tensor("v", t.v, t.v_strides, p, p.Dv);
  check_tensor("h", t.h, t.h_strides, p, p.Dv);
  check_gate("i", t.i, resolve_gate(t.i_strides, p), p);
  check_gate("f", t.f, resolve_gate(t.f_strides, p), p);
  check_state("C", t.C, 16, "(B, NH, Dqk, Dv)");  // read and written as 16-byte vectors
  check_state("n", t.n, 4, "(B, NH, Dqk)");
  if (p.variant == Variant::Exp) check_state("m", t.m, 4, "(B, NH)");
  else check_optional_f32("m", t.m);
  check_h_apart(p, t);
}

}  // namespace

void check_step_problem(const MlstmProblem& p) {
  if (p.S == 0)
    invalid("S = 0: a step call needs at least one token (problem.S is the number of tokens T of this call)");
  check_problem(p);
}

StepKernels render_step(const MlstmProblem& p, const StepConfig& c) {
  const bool exp = p.variant == Variant::Exp;
  auto s = [](int64_t x) { return std::to_string(x); };
  StepKernels k;
  // mLSTMexp always normalizes: one state kernel whatever p.normalize says.
  k.state = rt::render("mlstm_step_state", "tfla/mlstm_step.cuh", "tfla::mlstm_step_state", "tfla::MlstmStepParams",
                       {device_type(p.dtype), device_type(p.gate_dtype), s(p.Dqk), s(p.Dv), s(c.siz_b_v),
                        s(STEP_STATE_THREADS), exp ? "true" : "false", exp || p.normalize ? "true" : "false"},
                       STEP_STATE_THREADS, 0, /*uses_smem_arg=*/false);
  // The update kernel does not depend on the variant: it applies the state kernel's records.
  k.update = rt::render("mlstm_step", "tfla/mlstm_step.cuh", "tfla::mlstm_step", "tfla::MlstmStepParams",
                        {device_type(p.dtype), s(p.Dqk), s(p.Dv), s(c.siz_b_v), s(c.threads),
                         s(step_prefetch_tokens(c, p))},
                        c.threads, 0, /*uses_smem_arg=*/false);
  return k;
}

void step_with_config(const MlstmProblem& p, const StepTensors& t, const LaunchOptions& o,
                      const StepConfig& cfg) {
  check_step_problem(p);
  if (const char* why = step_config_error(cfg, p))
    invalid(std::string("invalid step config: ") + why, to_string(cfg.to_config()));
  check_step_tensors(p, t);

  rt::ensure_context();
  static KernelMemo<2> memo;
  const bool exp = p.variant == Variant::Exp;
  const MemoKey key{3,  // the step op
                    static_cast<int64_t>(p.dtype), static_cast<int64_t>(p.gate_dtype), exp,
                    exp || p.normalize, p.Dqk, p.Dv, cfg.siz_b_v, cfg.threads,
                    step_prefetch_tokens(cfg, p)};
  const auto kernels = memo.get(key, [&] { return render_step(p, cfg).launched(); });

  MlstmStepParams prm{};
  fill_inputs(prm, t, p);
  prm.h = t.h;
  put_strides(prm.h_sb, prm.h_sh, prm.h_ss, resolve(t.h_strides, p, p.Dv));
  prm.C = t.C;
  prm.n = t.n;
  prm.m = t.m;
  prm.NH = static_cast<int>(p.NH);
  prm.T = static_cast<int>(p.S);
  prm.scale = resolved_scale(p);
  prm.eps = p.eps;
  const auto stream = static_cast<CUstream>(o.stream);
  const unsigned heads = static_cast<unsigned>(p.B * p.NH);
  kernels[0]->launch({heads, 1, 1}, stream, &prm, sizeof(prm));
  const rt::Grid3 grid{static_cast<unsigned>(cfg.slices(p.Dv)), heads, 1};
  kernels[1]->launch_dependent(grid, stream, &prm, sizeof(prm));
}

}  // namespace tfla::ops

namespace tfla {

Config mlstm_step_config(const MlstmProblem& problem, const Config& pinned) {
  ops::check_step_problem(problem);
  ops::check_config(pinned, "step config");
  const ops::StepConfig cfg =
      ops::resolve_step_config(problem, pinned.empty() ? ops::tuned_config(problem, "step") : pinned);
  if (std::string why = ops::check_step_config(cfg, problem); !why.empty())
    throw Error(ErrorCode::InvalidArgument, "invalid step config: " + why, to_string(cfg.to_config()));
  return cfg.to_config();
}

void mlstm_step(const MlstmProblem& problem, const StepTensors& tensors, const LaunchOptions& options) {
  ops::check_step_problem(problem);
  ops::check_config(options.config, "step config");
  const Config& pinned = options.config.empty() ? ops::tuned_config(problem, "step") : options.config;
  ops::step_with_config(problem, tensors, options, ops::resolve_step_config(problem, pinned));
}

}  // namespace tfla
