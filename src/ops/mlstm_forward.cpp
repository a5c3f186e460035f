#include "ops/mlstm_forward.hpp"

#include <string>

#include "ops/kernel_memo.hpp"
#include "ops/params_fill.hpp"
#include "ops/problem_check.hpp"
#include "ops/render_args.hpp"
#include "ops/tuned_config.hpp"
#include "ops/workspace.hpp"
#include "runtime/device.hpp"
#include "runtime/driver.hpp"
#include "runtime/log.hpp"
#include "tfla/mlstm_params.cuh"

namespace tfla::ops {
namespace {

std::string b(bool x) { return arg(x); }
std::string s(int64_t x) { return arg(x); }

}  // namespace

std::vector<rt::KernelSpec> FwdKernels::launched() const {
  if (parallel) return {output};
  return {gates, states, output};
}

FwdKernels render_fwd(const MlstmProblem& p, const FwdConfig& c) {
  const std::string T = device_type(p.dtype);
  const bool exp = p.variant == Variant::Exp;
  if (c.parallel) {  // the output kernel with CHUNK = 0, reading the raw gates of dtype G
    FwdKernels k;
    k.parallel = true;
    k.output = rt::render(
        "mlstm_fwd_output", "tfla/mlstm_fwd_output.cuh", "tfla::mlstm_fwd_output",
        "tfla::MlstmFwdParams",
        {T, T, s(p.Dqk), s(p.Dv), "0", s(c.siz_b_q), s(c.siz_b_kv), s(c.siz_b_v), s(c.siz_b_kc),
         s(c.warps_m), s(c.warps_n), b(exp), b(p.normalize), device_type(p.gate_dtype)},
        32 * c.warps_m * c.warps_n, fwd_output_smem(c, p));
    return k;
  }
  // The state kernel always carries n: the output needs it unless mLSTMsig runs without the
  // normalizer, but the returned last state (n_S) is part of the op's contract either way.
  const bool need_n = true;
  FwdKernels k;
  k.gates = rt::render("mlstm_fwd_gates", "tfla/mlstm_fwd_gates.cuh", "tfla::mlstm_fwd_gates",
                       "tfla::MlstmFwdParams",
                       {s(c.chunk), "256", b(exp), device_type(p.gate_dtype)}, 256, 0, false);
  k.states = rt::with_min_blocks(
      rt::render("mlstm_fwd_states", "tfla/mlstm_fwd_states.cuh", "tfla::mlstm_fwd_states",
                 "tfla::MlstmFwdParams",
                 {T, T, s(p.Dqk), s(p.Dv), s(c.chunk), s(c.st_siz_b_k), s(c.st_siz_b_v), s(c.st_sub),
                  s(c.st_warps_m), s(c.st_warps_n), b(exp), b(need_n)},
                 32 * c.st_warps_m * c.st_warps_n, fwd_states_smem(c, p)),
      fwd_states_min_blocks(c, p));
  k.output = rt::render(
      "mlstm_fwd_output", "tfla/mlstm_fwd_output.cuh", "tfla::mlstm_fwd_output",
      "tfla::MlstmFwdParams",
      {T, T, s(p.Dqk), s(p.Dv), s(c.chunk), s(c.siz_b_q), s(c.siz_b_kv), s(c.siz_b_v),
       s(c.siz_b_kc), s(c.warps_m), s(c.warps_n), b(exp), b(p.normalize)},
      32 * c.warps_m * c.warps_n, fwd_output_smem(c, p));
  return k;
}

FwdWorkspace fwd_workspace(const MlstmProblem& p, int chunk, bool with_last) {
  const size_t bh = static_cast<size_t>(p.B * p.NH);
  const size_t nc = static_cast<size_t>((p.S + chunk - 1) / chunk);
  const size_t s_pad = nc * chunk;
  FwdWorkspace w;
  WorkspaceLayout layout;
  auto take = [&](size_t bytes) { return layout.take(bytes); };
  w.gate_b = take(bh * s_pad * 4);
  w.gate_u = take(bh * s_pad * 4);
  w.gate_pm = take(bh * s_pad * 4);
  w.chunk_g = take(bh * nc * 4);
  w.chunk_umax = take(bh * nc * 4);
  w.chunk_m = take(bh * (nc + 1) * 4);
  w.states_C = take(bh * nc * p.Dqk * p.Dv * dtype_bytes(p.dtype));
  w.states_n = take(bh * nc * p.Dqk * 4);
  if (with_last) w.C_last = take(bh * p.Dqk * p.Dv * 4);
  w.total = layout.total();
  return w;
}

std::string parallel_conflict(const ForwardTensors& t) {
  if (t.C0 || t.n0 || t.m0) return "initial states (C0/n0/m0)";
  if (t.C_last || t.n_last || t.m_last) return "last states (C_last/n_last/m_last)";
  if (t.saved) return "a saved-states buffer";
  return {};
}

FwdConfig select_fwd_config(const MlstmProblem& p, const ForwardTensors& t, const Config& caller) {
  const Config& pinned = caller.empty() ? tuned_config(p, "fwd") : caller;
  FwdConfig cfg = resolve_fwd_config(p, pinned);
  if (cfg.parallel == 1 && !caller.count("parallel")) {
    if (const std::string what = parallel_conflict(t); !what.empty()) {
      log_debug("forward S={}: the parallel form takes no {}; using the chunkwise default", p.S, what);
      cfg = chunkwise_fwd_config(p);
    }
  }
  return cfg;
}

namespace {

// The launch parameters every form shares: tensors, strides, sizes.
MlstmFwdParams io_params(const MlstmProblem& p, const ForwardTensors& t) {
  MlstmFwdParams prm{};
  fill_inputs(prm, t, p);
  prm.h = t.h;
  put_strides(prm.h_sb, prm.h_sh, prm.h_ss, resolve(t.h_strides, p, p.Dv));
  prm.norm_out = t.norm; prm.m_out = t.m;
  prm.B = static_cast<int>(p.B);
  prm.NH = static_cast<int>(p.NH);
  prm.S = static_cast<int>(p.S);
  prm.NC = 1;
  prm.scale = resolved_scale(p);
  prm.eps = p.eps;
  return prm;
}

// The parallel form: one launch of the output kernel, no workspace.
void forward_parallel(const MlstmProblem& p, const ForwardTensors& t, const LaunchOptions& o,
                      const FwdConfig& cfg) {
  static KernelMemo<1> memo;
  const MemoKey key{3,          static_cast<int64_t>(p.dtype), static_cast<int64_t>(p.gate_dtype),
                    static_cast<int64_t>(p.variant), p.normalize, p.Dqk, p.Dv, cfg.siz_b_q,
                    cfg.siz_b_kv, cfg.siz_b_v, cfg.siz_b_kc, cfg.warps_m, cfg.warps_n};
  const auto kernels = memo.get(key, [&] { return render_fwd(p, cfg).launched(); });
  const MlstmFwdParams prm = io_params(p, t);
  kernels[0]->launch({static_cast<unsigned>(p.Dv / cfg.siz_b_v),
                      static_cast<unsigned>((p.S + cfg.siz_b_q - 1) / cfg.siz_b_q),
                      static_cast<unsigned>(p.B * p.NH)},
                     static_cast<CUstream>(o.stream), &prm, sizeof(prm));
}

}  // namespace

void forward_with_config(const MlstmProblem& p, const ForwardTensors& t, const LaunchOptions& o,
                         const FwdConfig& cfg) {
  check_problem(p);
  if (std::string why = check_fwd_config(cfg, p); !why.empty())
    throw Error(ErrorCode::InvalidArgument, "invalid forward config: " + why, to_string(cfg.to_config()));
  check_tensor("q", t.q, t.q_strides, p, p.Dqk);
  check_tensor("k", t.k, t.k_strides, p, p.Dqk);
  check_tensor("v", t.v, t.v_strides, p, p.Dv);
  check_tensor("h", t.h, t.h_strides, p, p.Dv);
  const Strides is = resolve_gate(t.i_strides, p), fs = resolve_gate(t.f_strides, p);
  check_gate("i", t.i, is, p);
  check_gate("f", t.f, fs, p);
  check_optional_f32("norm", t.norm);
  check_optional_f32("m", t.m);
  check_optional_f32("C0", t.C0);
  check_optional_f32("n0", t.n0);
  check_optional_f32("m0", t.m0);
  check_optional_f32("C_last", t.C_last);
  check_optional_f32("n_last", t.n_last);
  check_optional_f32("m_last", t.m_last);
  if ((t.n0 || t.m0) && !t.C0)
    throw Error(ErrorCode::InvalidArgument, "n0/m0 given without C0: pass all initial states or none");
  if (cfg.parallel) {
    if (const std::string what = parallel_conflict(t); !what.empty())
      throw Error(ErrorCode::InvalidArgument,
                  "parallel=1 (the parallel form keeps no chunk states) cannot take " + what +
                      ": pin parallel=0 (chunkwise) or leave the form to the library");
    rt::ensure_context();
    forward_parallel(p, t, o, cfg);
    return;
  }

  // Buffer sizes and alignment are arguments too: checked before any driver or compile work.
  const bool saved = t.saved != nullptr;
  const FwdWorkspace ws = fwd_workspace(p, cfg.chunk, saved);
  if (saved) {
    if (t.saved_bytes != ws.total)
      throw Error(ErrorCode::InvalidArgument,
                  "saved buffer has " + std::to_string(t.saved_bytes) + " bytes; this problem and chunk (" +
                      std::to_string(cfg.chunk) + ") need mlstm_saved_size() = " + std::to_string(ws.total));
    if (reinterpret_cast<uintptr_t>(t.saved) % 256)
      throw Error(ErrorCode::InvalidArgument, "saved buffer must be 256-byte aligned");
  } else if (o.workspace) {
    if (o.workspace_bytes < ws.total)
      throw Error(ErrorCode::InvalidArgument, "workspace of " + std::to_string(o.workspace_bytes) +
                                                  " bytes is too small: this forward needs " +
                                                  std::to_string(ws.total));
    if (reinterpret_cast<uintptr_t>(o.workspace) % 256)
      throw Error(ErrorCode::InvalidArgument, "workspace must be 256-byte aligned");
  }
  rt::ensure_context();
  static KernelMemo<3> memo;
  const MemoKey key{1,          static_cast<int64_t>(p.dtype), static_cast<int64_t>(p.gate_dtype),
                    static_cast<int64_t>(p.variant), p.normalize, p.Dqk, p.Dv, cfg.chunk,
                    cfg.siz_b_q, cfg.siz_b_kv, cfg.siz_b_v, cfg.siz_b_kc, cfg.warps_m, cfg.warps_n,
                    cfg.st_siz_b_k, cfg.st_siz_b_v, cfg.st_sub, cfg.st_warps_m, cfg.st_warps_n};
  const auto kernels = memo.get(key, [&] { return render_fwd(p, cfg).launched(); });
  const rt::LoadedKernel& k_gates = *kernels[0];
  const rt::LoadedKernel& k_states = *kernels[1];
  const rt::LoadedKernel& k_output = *kernels[2];

  CUstream stream = static_cast<CUstream>(o.stream);
  CUdeviceptr base = 0;
  bool owned = false;
  if (saved) {
    base = reinterpret_cast<CUdeviceptr>(t.saved);
  } else if (o.workspace) {
    base = reinterpret_cast<CUdeviceptr>(o.workspace);
  } else {
    TFLA_CU(cuMemAllocAsync(&base, ws.total, stream));
    owned = true;
  }
  auto at = [&](size_t off) { return reinterpret_cast<void*>(base + off); };

  MlstmFwdParams prm = io_params(p, t);
  prm.C0 = t.C0; prm.n0 = t.n0; prm.m0 = t.m0;
  prm.C_last = saved ? static_cast<float*>(at(ws.C_last)) : t.C_last;
  prm.n_last = t.n_last; prm.m_last = t.m_last;
  prm.gate_b = static_cast<float*>(at(ws.gate_b));
  prm.gate_u = static_cast<float*>(at(ws.gate_u));
  prm.gate_pm = static_cast<float*>(at(ws.gate_pm));
  prm.chunk_g = static_cast<float*>(at(ws.chunk_g));
  prm.chunk_umax = static_cast<float*>(at(ws.chunk_umax));
  prm.chunk_m = static_cast<float*>(at(ws.chunk_m));
  prm.states_C = at(ws.states_C);
  prm.states_n = static_cast<float*>(at(ws.states_n));
  prm.NC = static_cast<int>((p.S + cfg.chunk - 1) / cfg.chunk);
  const unsigned bh = static_cast<unsigned>(p.B * p.NH);
  try {
    k_gates.launch({static_cast<unsigned>(prm.NC), bh, 1}, stream, &prm, sizeof(prm));
    k_states.launch({static_cast<unsigned>(p.Dv / cfg.st_siz_b_v),
                     static_cast<unsigned>(p.Dqk / cfg.st_siz_b_k), bh},
                    stream, &prm, sizeof(prm));
    k_output.launch({static_cast<unsigned>(p.Dv / cfg.siz_b_v),
                     static_cast<unsigned>((p.S + cfg.siz_b_q - 1) / cfg.siz_b_q), bh},
                    stream, &prm, sizeof(prm));
    if (saved && t.C_last)
      TFLA_CU(cuMemcpyDtoDAsync(reinterpret_cast<CUdeviceptr>(t.C_last), base + ws.C_last,
                                static_cast<size_t>(p.B * p.NH * p.Dqk * p.Dv * 4), stream));
  } catch (...) {
    if (owned) rt::driver().cuMemFreeAsync(base, stream);
    throw;
  }
  if (owned) TFLA_CU(cuMemFreeAsync(base, stream));
}

}  // namespace tfla::ops
