#include "ops/mlstm_forward.hpp"

#include <cstdint>
#include <string>

#include "ops/kernel_memo.hpp"
#include "ops/packed.hpp"
#include "ops/params_fill.hpp"
#include "ops/problem_check.hpp"
#include "ops/saved_states.hpp"
#include "ops/tuned_config.hpp"
#include "runtime/device.hpp"
#include "runtime/driver.hpp"
#include "runtime/log.hpp"
#include "tfla/mlstm_params.cuh"

namespace tfla::ops {

int selection_ordinal() {
  if (!rt::driver_available()) return -1;
  try {
    return rt::ensure_context();
  } catch (const Error&) {
    return -1;
  }
}

// A parallel config the library chose also covers the chunkwise default that a call with states
// runs instead (resolve_call's fallback); with a saved buffer only that one runs.
size_t fwd_workspace_size(const MlstmProblem& p, const FwdConfig& cfg, bool with_saved, bool form_pinned) {
  const DeviceLimits& dev = current_limits();
  if (!cfg.parallel() || form_pinned) return fwd_plan(p, cfg, dev, with_saved).workspace_bytes;
  FwdConfig chunkwise;
  chunkwise.apply(resolve(Op::Forward, p, dev, {{kFormKey, 0}}).config);
  const size_t fallback = fwd_plan(p, chunkwise, dev, with_saved).workspace_bytes;
  return with_saved ? fallback : std::max(fallback, fwd_plan(p, cfg, dev, false).workspace_bytes);
}

std::string parallel_conflict(const ForwardTensors& t) {
  if (t.C0 || t.n0 || t.m0) return "initial states (C0/n0/m0)";
  if (t.C_last || t.n_last || t.m_last) return "last states (C_last/n_last/m_last)";
  if (t.saved) return "a saved-states buffer";
  return {};
}

FwdSelection selection_of(const MlstmProblem& p, const FwdConfig& c, bool packed) {
  FwdSelection s;
  s.family = find_family(Op::Forward, c.form, c.engine);
  s.cfg = c;
  s.packed = packed;
  s.rejected = s.family ? s.family->reject(c.to_config(), p, current_limits())
                        : "no forward family of this form and engine in this build";
  if (s.rejected.empty())
    s.kernel_key = kernel_list_key(static_cast<int64_t>(Op::Forward), launch_kernels(*s.family, p, c.to_config(), packed));
  if (s.rejected.empty())
    for (bool saved : {false, true}) s.plans[saved] = s.family->plan(p, c.to_config(), current_limits(), saved);
  return s;
}

const FwdSelection& select_fwd(const MlstmProblem& p, const Config& caller, bool needs_chunkwise, bool packed) {
  static SelectionMemo<FwdSelection> memo;
  const int ordinal = selection_ordinal();
  SelectionKey key{selection_words(Op::Forward, p, ordinal, int64_t{needs_chunkwise} + 2 * int64_t{packed}), caller};
  return memo.get(std::move(key), [&] {
    const DeviceLimits& dev = current_limits();
    const Config& pinned = caller.empty() ? tuned_config(p, "fwd") : caller;
    const Resolved r = resolve_call(Op::Forward, p, dev, pinned, caller, needs_chunkwise, packed);
    FwdConfig c;
    c.apply(r.config);
    return selection_of(p, c, packed);
  });
}

namespace {

// The launch parameters every form shares: tensors, strides (of the caller's layout p), sizes
// (of the launch problem lp; a packed call's sequences share the batch's base: batch strides 0).
MlstmFwdParams io_params(const MlstmProblem& p, const MlstmProblem& lp, const ForwardTensors& t, int chunk) {
  MlstmFwdParams prm{};
  fill_inputs(prm, t, p);
  prm.h = t.h;
  put_strides(prm.h_sb, prm.h_sh, prm.h_ss, resolve(t.h_strides, p, p.Dv));
  prm.norm_out = t.norm; prm.m_out = t.m;
  prm.packed = packed_params(p, t.cu_seqlens, t.cu_seqlens_int64, chunk);
  if (is_packed(p)) prm.q_sb = prm.k_sb = prm.v_sb = prm.i_sb = prm.f_sb = prm.h_sb = 0;
  prm.B = static_cast<int>(lp.B);
  prm.NH = static_cast<int>(lp.NH);
  prm.S = static_cast<int>(lp.S);
  prm.NC = 1;
  prm.scale = resolved_scale(p);
  prm.eps = p.eps;
  return prm;
}

// The selection's kernels in the current context.
KernelMemo<6>::Kernels fwd_loaded(const MlstmProblem& p, const FwdSelection& sel) {
  static KernelMemo<6> memo;
  return memo.get(sel.kernel_key, [&] {
    std::vector<rt::KernelSpec> specs = launch_kernels(*sel.family, p, sel.cfg.to_config(), sel.packed);
    // the parallel form has one kernel, the three kernels three or four, the fused form three to six
    while (specs.size() < 6) specs.push_back(specs.back());
    return specs;
  });
}

// Zeroes the bytes of a saved buffer that no kernel writes: each region's padding up to the
// 256-byte alignment of the next. Then the buffer's contents follow from the inputs alone, as an
// output's must (torch.library.opcheck compares outputs byte for byte). One memset covers
// [0, states_C): the gate and chunk regions, about 12 bytes per token and head (each later written
// by the gate and state kernels), with all their padding; a second covers states_n's padding,
// which only a Dqk that is not a multiple of 64 can leave. states_C and C_S have none (Dqk Dv is a
// multiple of 256).
void zero_saved_padding(const MlstmProblem& p, const Plan& plan, CUdeviceptr base, CUstream stream) {
  const size_t states_C = plan[Region::StatesC].offset, states_n = plan[Region::StatesN].offset;
  const size_t C_last = plan[Region::CLast].offset;
  TFLA_CU(cuMemsetD8Async(base, 0, states_C, stream));
  const size_t n_end = states_n + static_cast<size_t>(p.B * p.NH * plan.nc * p.Dqk) * 4;
  if (n_end < C_last) TFLA_CU(cuMemsetD8Async(base + n_end, 0, C_last - n_end, stream));
}

}  // namespace

void check_forward_io(const MlstmProblem& p, const ForwardTensors& t) {
  check_problem(p);
  check_cu_seqlens(p, t.cu_seqlens, t.cu_seqlens_int64);
  check_tensor("q", t.q, t.q_strides, p, p.Dqk);
  check_tensor("k", t.k, t.k_strides, p, p.Dqk);
  check_tensor("v", t.v, t.v_strides, p, p.Dv);
  check_tensor("h", t.h, t.h_strides, p, p.Dv);
  const Strides is = resolve_gate(t.i_strides, p), fs = resolve_gate(t.f_strides, p);
  check_gate("i", t.i, is, p);
  check_gate("f", t.f, fs, p);
  // h is written while q, k, v and the gates are read
  const size_t eb = dtype_bytes(p.dtype), gb = dtype_bytes(p.gate_dtype);
  const Strides hs = resolve(t.h_strides, p, p.Dv);
  const Span h = span_of("h", t.h, hs, p, p.Dv, eb);
  check_output_layout("h", hs, p, p.Dv);
  check_apart("h", h, "q", span_of("q", t.q, resolve(t.q_strides, p, p.Dqk), p, p.Dqk, eb));
  check_apart("h", h, "k", span_of("k", t.k, resolve(t.k_strides, p, p.Dqk), p, p.Dqk, eb));
  check_apart("h", h, "v", span_of("v", t.v, resolve(t.v_strides, p, p.Dv), p, p.Dv, eb));
  check_apart("h", h, "i", span_of("i", t.i, is, p, 1, gb));
  check_apart("h", h, "f", span_of("f", t.f, fs, p, 1, gb));
}

void check_forward_tensors(const MlstmProblem& p, const ForwardTensors& t) {
  check_forward_io(p, t);
  check_optional_f32("norm", t.norm);
  check_optional_f32("m", t.m);
  check_optional_state("C0", t.C0);
  check_optional_f32("n0", t.n0);
  check_optional_f32("m0", t.m0);
  check_optional_state("C_last", t.C_last);
  check_optional_f32("n_last", t.n_last);
  check_optional_f32("m_last", t.m_last);
  if ((t.n0 || t.m0) && !t.C0)
    throw Error(ErrorCode::InvalidArgument, "n0/m0 given without C0: pass all initial states or none");
}

void run_forward(const MlstmProblem& p, const ForwardTensors& t, const LaunchOptions& o, const FwdSelection& sel) {
  check_forward_tensors(p, t);
  launch_forward(p, t, o, sel);
}

void launch_forward(const MlstmProblem& p, const ForwardTensors& t, const LaunchOptions& o, const FwdSelection& sel) {
  const MlstmProblem lp = launch_problem(p);  // the kernels' batch and length bound
  check_selection_packed(sel.packed, p, "forward");
  const FwdConfig& cfg = sel.cfg;
  if (cfg.parallel()) {
    if (const std::string what = parallel_conflict(t); !what.empty())
      throw Error(ErrorCode::InvalidArgument,
                  "parallel=1 (the parallel form keeps no chunk states) cannot take " + what +
                      ": pin parallel=0 (chunkwise) or leave the form to the library");
  }
  if (const std::string& why = sel.rejected; !why.empty())
    throw Error(ErrorCode::InvalidArgument, "invalid forward config: " + why, to_string(cfg.to_config()));
  const bool saved = t.saved != nullptr;
  const Plan& plan = sel.plans[saved];
  if (saved) {
    // the buffer holds the chunkwise layout with C_S; a split walk's regions are the workspace
    if (t.saved_bytes != plan.saved_bytes)
      throw Error(ErrorCode::InvalidArgument,
                  "saved buffer has " + std::to_string(t.saved_bytes) + " bytes; this problem and chunk (" +
                      std::to_string(cfg.chunk) + ") need mlstm_saved_size() = " + std::to_string(plan.saved_bytes));
    if (reinterpret_cast<uintptr_t>(t.saved) % 256)
      throw Error(ErrorCode::InvalidArgument, "saved buffer must be 256-byte aligned");
    if (o.workspace && plan.workspace_bytes) {  // the split walk's scratch, in the caller's workspace
      if (o.workspace_bytes < plan.workspace_bytes)
        throw Error(ErrorCode::InvalidArgument,
                    "workspace of " + std::to_string(o.workspace_bytes) +
                        " bytes is too small: this forward with a saved buffer needs " +
                        std::to_string(plan.workspace_bytes) + " (mlstm_forward_workspace_size with with_saved)");
      if (reinterpret_cast<uintptr_t>(o.workspace) % 256)
        throw Error(ErrorCode::InvalidArgument, "workspace must be 256-byte aligned");
    }
  } else if (o.workspace && plan.workspace_bytes) {
    if (o.workspace_bytes < plan.workspace_bytes)
      throw Error(ErrorCode::InvalidArgument, "workspace of " + std::to_string(o.workspace_bytes) +
                                                  " bytes is too small: this forward needs " +
                                                  std::to_string(plan.workspace_bytes));
    if (reinterpret_cast<uintptr_t>(o.workspace) % 256)
      throw Error(ErrorCode::InvalidArgument, "workspace must be 256-byte aligned");
  }

  rt::ensure_context();
  const auto kernels = fwd_loaded(lp, sel);
  CUstream stream = static_cast<CUstream>(o.stream);
  PlanBases bases;
  bool owned = false;
  if (saved) {
    bases.saved = reinterpret_cast<CUdeviceptr>(t.saved);
    record_saved(t.saved, t.saved_bytes, cfg.chunk);
  }
  if (o.workspace) {
    bases.workspace = reinterpret_cast<CUdeviceptr>(o.workspace);
  } else if (plan.workspace_bytes) {  // the parallel form uses none
    TFLA_CU(cuMemAllocAsync(&bases.workspace, plan.workspace_bytes, stream));
    owned = true;
  }

  MlstmFwdParams prm = io_params(p, lp, t, cfg.chunk);
  prm.C0 = t.C0; prm.n0 = t.n0; prm.m0 = t.m0;
  prm.C_last = saved ? bases.at<float>(plan, Region::CLast) : t.C_last;
  prm.n_last = t.n_last; prm.m_last = t.m_last;
  bind_regions(plan, bases, prm);
  try {
    if (saved) zero_saved_padding(lp, plan, bases.saved, stream);
    execute(plan, kernels.data(), lp, bases, {&prm, nullptr, nullptr}, stream);
    if (saved && t.C_last)
      TFLA_CU(cuMemcpyDtoDAsync(reinterpret_cast<CUdeviceptr>(t.C_last), bases.saved + plan[Region::CLast].offset,
                                static_cast<size_t>(lp.B * lp.NH * lp.Dqk * lp.Dv * 4), stream));
  } catch (...) {
    if (owned) rt::driver().cuMemFreeAsync(bases.workspace, stream);
    throw;
  }
  if (owned) TFLA_CU(cuMemFreeAsync(bases.workspace, stream));
}

}  // namespace tfla::ops
