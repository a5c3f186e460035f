// The step op: argument checks, config dispatch (pinned, else tuned, else the analytic default)
// and the launch through the per-process kernel memo, plus the public tfla::mlstm_step and
// tfla::mlstm_step_config.
#include "ops/mlstm_step.hpp"

#include <string>
#include <utility>

#include "ops/kernel_memo.hpp"
#include "ops/params_fill.hpp"
#include "ops/problem_check.hpp"
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
    invalid(std::string(name) + " is null: the step writes the new state there (and reads the old one from it "
            "unless " + name + "_src is given), so " + name + " " + shape + " fp32 is required");
  const auto addr = reinterpret_cast<uintptr_t>(ptr);
  if (addr % align)
    invalid(std::string(name) + " is not " + std::to_string(align) + "-byte aligned (address " +
            std::to_string(addr) + ")");
}

// The bytes [lo, hi) a tensor may touch: span_of (ops/problem_check.hpp), which refuses strides
// past the address space by the tensor's name.
using Extent = Span;

// The bytes of the states (C, n, m) of this problem at these addresses; m may be null.
struct StateExtents {
  Extent C, n, m;
};
StateExtents state_extents(const MlstmProblem& p, const float* C, const float* n, const float* m) {
  MlstmProblem state = p;
  state.S = 1;  // states have no token axis
  return {span_of("C", C, Strides{p.NH * p.Dqk * p.Dv, p.Dqk * p.Dv, 0}, state, p.Dqk * p.Dv, 4),
          span_of("n", n, Strides{p.NH * p.Dqk, p.Dqk, 0}, state, p.Dqk, 4),
          m ? span_of("m", m, Strides{p.NH, 1, 0}, state, 1, 4) : Extent{}};
}

bool overlap(const Extent& a, const Extent& b) { return a.lo < b.hi && b.lo < a.hi; }

// CTAs write h while other CTAs of the step still read the inputs and the state: an h that
// shares bytes with any of them would corrupt them, so it is refused by name. h and st: the
// bytes of h and of the destination states.
void check_h_apart(const MlstmProblem& p, const StepTensors& t, const Extent& h, const StateExtents& st) {
  const size_t eb = dtype_bytes(p.dtype), gb = dtype_bytes(p.gate_dtype);
  const std::pair<const char*, Extent> others[] = {
      {"q", span_of("q", t.q, resolve(t.q_strides, p, p.Dqk), p, p.Dqk, eb)},
      {"k", span_of("k", t.k, resolve(t.k_strides, p, p.Dqk), p, p.Dqk, eb)},
      {"v", span_of("v", t.v, resolve(t.v_strides, p, p.Dv), p, p.Dv, eb)},
      {"i", span_of("i", t.i, resolve_gate(t.i_strides, p), p, 1, gb)},
      {"f", span_of("f", t.f, resolve_gate(t.f_strides, p), p, 1, gb)},
      {"C", st.C},
      {"n", st.n},
      {"m", st.m},
  };
  for (const auto& [name, e] : others)
    if (overlap(e, h))
      invalid(std::string("h overlaps ") + name +
              ": the step writes h while it still reads its inputs and state; pass a separate output buffer");
}

// The destinations C, n, m are written by different kernels and CTAs: no two may share a byte.
// A source is read while the destinations are written, by other CTAs and the other kernel: it
// must be its destination itself (in place) or share no byte with any destination or with h,
// which the step writes while it still reads C_src.
void check_sources(const MlstmProblem& p, const StepTensors& t, const Extent& h, const StateExtents& dst) {
  const bool exp = p.variant == Variant::Exp;
  const std::pair<const char*, Extent> dsts[] = {{"C", dst.C}, {"n", dst.n}, {"m", dst.m}};
  for (int a = 0; a < 3; ++a)
    for (int b = a + 1; b < 3; ++b)
      if (overlap(dsts[a].second, dsts[b].second))
        invalid(std::string(dsts[a].first) + " overlaps " + dsts[b].first +
                ": the step writes each state to its own buffer");
  if (t.C_src) check_state("C_src", t.C_src, 16, "(B, NH, Dqk, Dv)");  // read as 16-byte vectors
  if (t.n_src) check_state("n_src", t.n_src, 4, "(B, NH, Dqk)");
  const float* m_src = exp ? t.m_src : nullptr;  // mLSTMsig reads no m
  if (m_src) check_state("m_src", m_src, 4, "(B, NH)");
  const StateExtents src = state_extents(p, t.C_src ? t.C_src : t.C, t.n_src ? t.n_src : t.n, m_src);
  const struct {
    const char* name;
    const void* ptr;
    const void* own;
    Extent e;
  } srcs[] = {{"C_src", t.C_src, t.C, src.C}, {"n_src", t.n_src, t.n, src.n}, {"m_src", m_src, t.m, src.m}};
  for (const auto& s : srcs) {
    if (!s.ptr || s.ptr == s.own) continue;
    for (const auto& [name, e] : dsts)
      if (overlap(s.e, e))
        invalid(std::string(s.name) + " overlaps " + name + " without being the same buffer: a source is read "
                "while the new states are written, so it must be its destination itself (in place) or apart "
                "from every destination");
    if (overlap(s.e, h))
      invalid(std::string(s.name) + " overlaps h: the step writes h while it still reads the states; pass a "
              "separate output buffer");
  }
}

}  // namespace

void check_step_tensors(const MlstmProblem& p, const StepTensors& t) {
  check_tensor("q", t.q, t.q_strides, p, p.Dqk);
  check_tensor("k", t.k, t.k_strides, p, p.Dqk);
  check_tensor("v", t.v, t.v_strides, p, p.Dv);
  check_tensor("h", t.h, t.h_strides, p, p.Dv);
  check_gate("i", t.i, resolve_gate(t.i_strides, p), p);
  check_gate("f", t.f, resolve_gate(t.f_strides, p), p);
  const Extent h = span_of("h", t.h, resolve(t.h_strides, p, p.Dv), p, p.Dv, dtype_bytes(p.dtype));
  check_output_layout("h", resolve(t.h_strides, p, p.Dv), p, p.Dv);  // (span_of bounded its sum)
  check_state("C", t.C, 16, "(B, NH, Dqk, Dv)");  // read and written as 16-byte vectors
  check_state("n", t.n, 4, "(B, NH, Dqk)");
  if (p.variant == Variant::Exp) check_state("m", t.m, 4, "(B, NH)");
  else check_optional_f32("m", t.m);
  const StateExtents dst = state_extents(p, t.C, t.n, t.m);
  check_h_apart(p, t, h, dst);
  check_sources(p, t, h, dst);
}

void check_step_problem(const MlstmProblem& p) {
  if (p.S == 0)
    invalid("S = 0: a step call needs at least one token (problem.S is the number of tokens T of this call)");
  check_problem(p);
  if (p.num_seqs > 0)
    invalid("the step takes no packed sequences (num_seqs = " + std::to_string(p.num_seqs) +
            "): one step of N sequences is a batch of B = N with T tokens each");
}

StepSelection selection_of(const MlstmProblem& p, const StepConfig& c) {
  const bool exp = p.variant == Variant::Exp;
  StepSelection s;
  s.cfg = c;
  s.kernel_key = {static_cast<int64_t>(Op::Step), static_cast<int64_t>(p.dtype), static_cast<int64_t>(p.gate_dtype),
                  exp, exp || p.normalize, p.Dqk, p.Dv, c.siz_b_v, c.threads, step_prefetch_tokens(c, p)};
  for (int mode : {STEP_NM_APART, STEP_NM_CLUSTER, STEP_NM_DEPENDENT, STEP_NM_RECORDS})
    s.plans[mode] = step_plan(p, c, mode);
  // Several tokens over more than 8 waves' worth of CTAs (two a SM): the per-token recurrence in
  // every CTA costs more there than the records' launch (measured on an H200: 4 tokens at B = 64
  // and 256, NH 8, 8 CTAs a head, 6% and 9% slower in the fused form; equal at B = 16).
  s.records = p.S > 1 && int64_t{c.slices(p.Dv)} * p.B * p.NH > int64_t{8} * 2 * current_limits().sm_count;
  return s;
}

const StepSelection& select_step(const MlstmProblem& p, const Config& caller) {
  static SelectionMemo<StepSelection> memo;
  SelectionKey key{selection_words(Op::Step, p, selection_ordinal(), 0), caller};
  return memo.get(std::move(key), [&] {
    const Config& pinned = caller.empty() ? tuned_config(p, "step") : caller;
    const Resolved r = resolve(Op::Step, p, current_limits(), pinned);
    StepConfig c;
    c.apply(r.config);
    return selection_of(p, c);
  });
}

void check_step_call(const MlstmProblem& p, const StepTensors& t, const StepSelection& sel) {
  check_step_problem(p);
  if (const char* why = step_config_error(sel.cfg, p))
    invalid(std::string("invalid step config: ") + why, to_string(sel.cfg.to_config()));
  check_step_tensors(p, t);
}

void run_step(const MlstmProblem& p, const StepTensors& t, const LaunchOptions& o, const StepSelection& sel) {
  check_step_call(p, t, sel);
  launch_step(p, t, o, sel);
}

// How a call writes n and m (mlstm_step.cuh): with records where the selection says so; apart
// from their sources in the fused kernel; in place in one cluster launch where the config allows
// it and the device holds every head's cluster at once (a second wave of clusters would cost more
// than the dependent launch); else in place by the dependent n, m kernel.
namespace {
int nm_mode_of(const MlstmProblem& p, const MlstmStepParams& prm, const StepSelection& sel, const rt::LoadedKernel& fused) {
  if (sel.records) return STEP_NM_RECORDS;
  const StepConfig& cfg = sel.cfg;
  const bool in_place = !prm.n_src || (p.variant == Variant::Exp && !prm.m_src);
  if (!in_place) return STEP_NM_APART;
  if (cfg.cluster && fused.max_active_clusters(static_cast<unsigned>(cfg.slices(p.Dv))) >= p.B * p.NH)
    return STEP_NM_CLUSTER;
  return STEP_NM_DEPENDENT;
}
}  // namespace

void launch_step(const MlstmProblem& p, const StepTensors& t, const LaunchOptions& o, const StepSelection& sel) {
  const StepConfig& cfg = sel.cfg;
  rt::ensure_context();
  static KernelMemo<2> memo;
  const auto kernels = memo.get(sel.kernel_key, [&] { return step_kernels(p, cfg); });

  MlstmStepParams prm{};
  fill_inputs(prm, t, p);
  prm.h = t.h;
  put_strides(prm.h_sb, prm.h_sh, prm.h_ss, resolve(t.h_strides, p, p.Dv));
  prm.C = t.C;
  prm.n = t.n;
  prm.m = t.m;
  prm.C_src = t.C_src == t.C ? nullptr : t.C_src;
  prm.n_src = t.n_src == t.n ? nullptr : t.n_src;
  prm.m_src = p.variant == Variant::Exp && t.m_src != t.m ? t.m_src : nullptr;
  prm.NH = static_cast<int>(p.NH);
  prm.T = static_cast<int>(p.S);
  prm.scale = resolved_scale(p);
  prm.eps = p.eps;
  prm.nm_mode = nm_mode_of(p, prm, sel, *kernels[0]);
  execute(sel.plans[prm.nm_mode], kernels.data(), p, {}, {nullptr, nullptr, &prm}, static_cast<CUstream>(o.stream));
}

}  // namespace tfla::ops

namespace tfla {

Config mlstm_step_config(const MlstmProblem& problem, const Config& pinned) {
  ops::check_step_problem(problem);
  ops::check_config(pinned, "step config");
  const ops::StepConfig& cfg = ops::select_step(problem, pinned).cfg;
  if (const char* why = ops::step_config_error(cfg, problem))
    throw Error(ErrorCode::InvalidArgument, std::string("invalid step config: ") + why, to_string(cfg.to_config()));
  return cfg.to_config();
}

void mlstm_step(const MlstmProblem& problem, const StepTensors& tensors, const LaunchOptions& options) {
  ops::check_step_problem(problem);
  ops::check_config(options.config, "step config");
  ops::check_step_tensors(problem, tensors);  // before the selection, which may create the context
  const ops::StepSelection& sel = ops::select_step(problem, options.config);
  if (const char* why = ops::step_config_error(sel.cfg, problem))
    throw Error(ErrorCode::InvalidArgument, std::string("invalid step config: ") + why, to_string(sel.cfg.to_config()));
  ops::launch_step(problem, tensors, options, sel);
}

}  // namespace tfla
