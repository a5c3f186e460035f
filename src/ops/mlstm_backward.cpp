#include "ops/mlstm_backward.hpp"

#include <algorithm>
#include <iterator>
#include <string>

#include "ops/mlstm_forward.hpp"
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

size_t bwd_workspace_size(const MlstmProblem& p, const BwdConfig& cfg, bool with_saved, bool form_pinned) {
  const DeviceLimits& dev = current_limits();
  if (!cfg.parallel() || form_pinned) return bwd_plan(p, cfg, dev, with_saved).workspace_bytes;
  // a call with states runs the chunkwise default instead; with a saved buffer only that one runs
  BwdConfig chunkwise;
  chunkwise.apply(resolve(Op::Backward, p, dev, {{kFormKey, 0}}).config);
  const size_t fallback = bwd_plan(p, chunkwise, dev, with_saved).workspace_bytes;
  return with_saved ? fallback : std::max(fallback, bwd_plan(p, cfg, dev, false).workspace_bytes);
}

std::string parallel_conflict(const BackwardTensors& t) {
  if (t.C0 || t.n0 || t.m0) return "initial states (C0/n0/m0)";
  if (t.dC_last) return "dC_last";
  if (t.dC0) return "dC0 (the initial state's gradient)";
  if (t.saved) return "a saved-states buffer";
  return {};
}

BwdSelection selection_of(const MlstmProblem& p, const BwdConfig& c, bool packed) {
  BwdSelection s;
  s.family = find_family(Op::Backward, c.form, c.engine);
  s.cfg = c;
  s.packed = packed;
  s.rejected = s.family ? s.family->reject(c.to_config(), p, current_limits())
                        : "no backward family of this form and engine in this build";
  if (s.rejected.empty())
    s.kernel_key = kernel_list_key(static_cast<int64_t>(Op::Backward), launch_kernels(*s.family, p, c.to_config(), packed));
  if (s.rejected.empty())
    for (bool saved : {false, true}) s.plans[saved] = s.family->plan(p, c.to_config(), current_limits(), saved);
  return s;
}

const BwdSelection& select_bwd(const MlstmProblem& p, const Config& caller, bool needs_chunkwise, bool packed) {
  static SelectionMemo<BwdSelection> memo;
  const int ordinal = selection_ordinal();
  SelectionKey key{selection_words(Op::Backward, p, ordinal, int64_t{needs_chunkwise} + 2 * int64_t{packed}), caller};
  return memo.get(std::move(key), [&] {
    const DeviceLimits& dev = current_limits();
    const Config& pinned = caller.empty() ? tuned_config(p, "bwd") : caller;
    const Resolved r = resolve_call(Op::Backward, p, dev, pinned, caller, needs_chunkwise, packed);
    BwdConfig c;
    c.apply(r.config);
    return selection_of(p, c, packed);
  });
}

const BwdSelection& select_bwd_for_saved(const MlstmProblem& p, const Config& caller, const Config& fwd_caller,
                                         const void* saved, size_t saved_bytes, bool packed) {
  const BwdSelection& sel = select_bwd(p, caller, true, packed);
  if (caller.count("chunk") || sel.cfg.parallel()) return sel;
  // The chunk the forward recorded for this buffer, else the forward's own choice for p.
  int chunk = saved_chunk(saved, saved_bytes);
  if (!chunk) chunk = select_fwd(p, fwd_caller, true, packed).cfg.chunk;
  if (chunk == sel.cfg.chunk || saved_size(p, chunk) != saved_bytes) return sel;  // a mismatch is reported by name
  Config with_chunk = caller;
  with_chunk["chunk"] = chunk;
  return select_bwd(p, with_chunk, true, packed);
}

void check_backward_tensors(const MlstmProblem& p, const BackwardTensors& t) {
  check_problem(p);
  check_cu_seqlens(p, t.cu_seqlens, t.cu_seqlens_int64);
  check_tensor("q", t.q, t.q_strides, p, p.Dqk);
  check_tensor("k", t.k, t.k_strides, p, p.Dqk);
  check_tensor("v", t.v, t.v_strides, p, p.Dv);
  check_tensor("dh", t.dh, t.dh_strides, p, p.Dv);
  check_tensor("dq", t.dq, t.dq_strides, p, p.Dqk);
  check_tensor("dk", t.dk, t.dk_strides, p, p.Dqk);
  check_tensor("dv", t.dv, t.dv_strides, p, p.Dv);
  const Strides is = resolve_gate(t.i_strides, p), fs = resolve_gate(t.f_strides, p);
  const Strides dis = resolve_gate(t.di_strides, p), dfs = resolve_gate(t.df_strides, p);
  check_gate("i", t.i, is, p);
  check_gate("f", t.f, fs, p);
  check_gate("di", t.di, dis, p);
  check_gate("df", t.df, dfs, p);
  if (!t.norm)
    throw Error(ErrorCode::InvalidArgument,
                "norm is null: pass the forward's normalizer output (ForwardTensors::norm)");
  check_optional_f32("norm", t.norm);
  check_optional_state("C0", t.C0);
  check_optional_f32("n0", t.n0);
  check_optional_f32("m0", t.m0);
  check_optional_state("dC_last", t.dC_last);
  check_optional_state("dC0", t.dC0);
  if ((t.n0 || t.m0) && !t.C0)
    throw Error(ErrorCode::InvalidArgument, "n0/m0 given without C0: pass all initial states or none");
  // the gradients are written while the inputs are read, each by its own kernels
  const size_t eb = dtype_bytes(p.dtype), gb = dtype_bytes(p.gate_dtype);
  struct Named {
    const char* name;
    Span span;
  };
  auto feature = [&](const char* name, const void* ptr, const Strides& s0, int64_t d) {
    return Named{name, span_of(name, ptr, resolve(s0, p, d), p, d, eb)};
  };
  const Named outs[] = {feature("dq", t.dq, t.dq_strides, p.Dqk), feature("dk", t.dk, t.dk_strides, p.Dqk),
                        feature("dv", t.dv, t.dv_strides, p.Dv), {"di", span_of("di", t.di, dis, p, 1, gb)},
                        {"df", span_of("df", t.df, dfs, p, 1, gb)}};
  check_output_layout("dq", resolve(t.dq_strides, p, p.Dqk), p, p.Dqk);
  check_output_layout("dk", resolve(t.dk_strides, p, p.Dqk), p, p.Dqk);
  check_output_layout("dv", resolve(t.dv_strides, p, p.Dv), p, p.Dv);
  check_output_layout("di", dis, p, 1);
  check_output_layout("df", dfs, p, 1);
  const Named ins[] = {feature("q", t.q, t.q_strides, p.Dqk), feature("k", t.k, t.k_strides, p.Dqk),
                       feature("v", t.v, t.v_strides, p.Dv), feature("dh", t.dh, t.dh_strides, p.Dv),
                       {"i", span_of("i", t.i, is, p, 1, gb)}, {"f", span_of("f", t.f, fs, p, 1, gb)}};
  for (size_t a = 0; a < std::size(outs); ++a) {
    for (const Named& in : ins) check_apart(outs[a].name, outs[a].span, in.name, in.span);
    for (size_t b = a + 1; b < std::size(outs); ++b) check_apart(outs[a].name, outs[a].span, outs[b].name, outs[b].span);
  }
}

void run_backward(const MlstmProblem& p, const BackwardTensors& t, const LaunchOptions& o, const BwdSelection& sel) {
  check_backward_tensors(p, t);
  launch_backward(p, t, o, sel);
}

void launch_backward(const MlstmProblem& p, const BackwardTensors& t, const LaunchOptions& o, const BwdSelection& sel) {
  const MlstmProblem lp = launch_problem(p);  // the kernels' batch and length bound
  const bool packed = is_packed(p);
  check_selection_packed(sel.packed, p, "backward");
  const BwdConfig& cfg = sel.cfg;
  const Strides dis = resolve_gate(t.di_strides, p), dfs = resolve_gate(t.df_strides, p);
  if (cfg.parallel()) {
    if (const std::string what = parallel_conflict(t); !what.empty())
      throw Error(ErrorCode::InvalidArgument,
                  "parallel=1 (the parallel form keeps no chunk states) cannot take " + what +
                      ": pin parallel=0 (chunkwise) or leave the form to the library");
  }
  if (const std::string& why = sel.rejected; !why.empty())
    throw Error(ErrorCode::InvalidArgument, "invalid backward config: " + why, to_string(cfg.to_config()));
  const bool saved = t.saved != nullptr;
  const Plan& plan = sel.plans[saved];
  if (saved) {
    if (t.saved_bytes != plan.saved_bytes)
      throw Error(ErrorCode::InvalidArgument,
                  "saved buffer has " + std::to_string(t.saved_bytes) + " bytes; the backward's chunk (" +
                      std::to_string(cfg.chunk) + ") needs " + std::to_string(plan.saved_bytes) +
                      ": run forward and backward with the same chunk size");
    if (reinterpret_cast<uintptr_t>(t.saved) % 256)
      throw Error(ErrorCode::InvalidArgument, "saved buffer must be 256-byte aligned");
  }
  CUstream stream = static_cast<CUstream>(o.stream);
  PlanBases bases;
  bases.saved = reinterpret_cast<CUdeviceptr>(t.saved);
  bool owned = false;
  // Buffer sizes and alignment are arguments too: checked before any driver or compile work.
  if (o.workspace) {
    if (o.workspace_bytes < plan.workspace_bytes)
      throw Error(ErrorCode::InvalidArgument, "workspace of " + std::to_string(o.workspace_bytes) +
                                                  " bytes is too small: this backward needs " +
                                                  std::to_string(plan.workspace_bytes));
    if (reinterpret_cast<uintptr_t>(o.workspace) % 256)
      throw Error(ErrorCode::InvalidArgument, "workspace must be 256-byte aligned");
    bases.workspace = reinterpret_cast<CUdeviceptr>(o.workspace);
  }
  // the tensors, strides and sizes of every form
  MlstmBwdParams g{};
  fill_inputs(g, t, p);
  g.dh = t.dh;
  put_strides(g.dh_sb, g.dh_sh, g.dh_ss, resolve(t.dh_strides, p, p.Dv));
  g.norm = t.norm;
  g.dq = t.dq; g.dk = t.dk; g.dv = t.dv;
  put_strides(g.dq_sb, g.dq_sh, g.dq_ss, resolve(t.dq_strides, p, p.Dqk));
  put_strides(g.dk_sb, g.dk_sh, g.dk_ss, resolve(t.dk_strides, p, p.Dqk));
  put_strides(g.dv_sb, g.dv_sh, g.dv_ss, resolve(t.dv_strides, p, p.Dv));
  g.di = t.di; g.df = t.df;
  put_strides(g.di_sb, g.di_sh, g.di_ss, dis);
  put_strides(g.df_sb, g.df_sh, g.df_ss, dfs);
  g.packed = packed_params(p, t.cu_seqlens, t.cu_seqlens_int64, cfg.chunk);
  if (packed) g.q_sb = g.k_sb = g.v_sb = g.i_sb = g.f_sb = g.dh_sb = g.dq_sb = g.dk_sb = g.dv_sb = g.di_sb = g.df_sb = 0;
  g.B = static_cast<int>(lp.B); g.NH = static_cast<int>(lp.NH); g.S = static_cast<int>(lp.S); g.NC = 1;
  g.scale = resolved_scale(p);
  g.eps = p.eps;

  rt::ensure_context();
  static KernelMemo<10> memo;
  const auto kernels = memo.get(sel.kernel_key, [&] {
    std::vector<rt::KernelSpec> specs = launch_kernels(*sel.family, lp, sel.cfg.to_config(), sel.packed);
    while (specs.size() < 10) specs.push_back(specs.back());  // the parallel form has two, no split eight
    return specs;
  });
  if (!o.workspace) {
    TFLA_CU(cuMemAllocAsync(&bases.workspace, plan.workspace_bytes, stream));
    owned = true;
  }
  // the recompute's block (the forward's gate and state kernels; unused with a saved buffer)
  MlstmFwdParams f{};
  if (!cfg.parallel() || cfg.engine == Engine::Sm90) {  // the sm90 parallel form runs the gate kernel too
    fill_inputs(f, t, p);
    f.packed = g.packed;
    if (packed) f.q_sb = f.k_sb = f.v_sb = f.i_sb = f.f_sb = 0;
    f.C0 = t.C0; f.n0 = t.n0; f.m0 = t.m0;
    f.C_last = (t.dC_last || saved) ? bases.at<float>(plan, Region::CLast) : nullptr;
    bind_regions(plan, bases, f);  // states_n stays null: a backward plan has no n
    f.B = static_cast<int>(lp.B); f.NH = static_cast<int>(lp.NH); f.S = static_cast<int>(lp.S);
    f.scale = resolved_scale(p);
    f.eps = p.eps;

    g.dC_last = t.dC_last;
    g.C_last = f.C_last;
    g.dC0 = t.dC0;
    g.gate_b = f.gate_b; g.gate_u = f.gate_u; g.gate_pm = f.gate_pm;
    g.chunk_g = f.chunk_g; g.chunk_m = f.chunk_m;
    g.states_C = f.states_C;
    g.dstates_C = bases.at(plan, Region::DstatesC);
    g.dclast_dot = bases.at<float>(plan, Region::DclastDot);
    g.dclast_parts = plan.dclast_parts;
    g.row_x = bases.at<float>(plan, Region::RowX);
    g.chunk_x = bases.at<float>(plan, Region::ChunkX);
    g.NC = plan.nc;
    // the dC walk's split
    g.nseg = plan.dwalk.nseg;
    g.seg_chunks = plan.dwalk.seg_chunks;
    g.seg_dC = bases.at<float>(plan, Region::SegDC);
  }
  g.xpart = bases.at<float>(plan, Region::Xpart);
  g.xparts = plan.xparts;
  try {
    execute(plan, kernels.data(), lp, bases, {&f, &g, nullptr}, stream);
  } catch (...) {
    if (owned) rt::driver().cuMemFreeAsync(bases.workspace, stream);
    throw;
  }
  if (owned) TFLA_CU(cuMemFreeAsync(bases.workspace, stream));
}

}  // namespace tfla::ops
