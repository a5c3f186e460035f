#include "ops/mlstm_backward.hpp"

#include <algorithm>
#include <string>

#include "ops/mlstm_forward.hpp"
#include "ops/kernel_memo.hpp"
#include "ops/params_fill.hpp"
#include "ops/problem_check.hpp"
#include "ops/saved_states.hpp"
#include "ops/sm90_maps.hpp"
#include "ops/tuned_config.hpp"
#include "ops/workspace.hpp"
#include "runtime/device.hpp"
#include "runtime/driver.hpp"
#include "runtime/log.hpp"
#include "tfla/mlstm_params.cuh"

namespace tfla::ops {

BwdWorkspace bwd_workspace(const MlstmProblem& p, const BwdConfig& c, bool saved, bool form_pinned) {
  const size_t bh = static_cast<size_t>(p.B * p.NH);
  if (c.parallel()) {  // xpart (BH, S, 2, xparts) alone
    BwdWorkspace w;
    WorkspaceLayout layout;
    w.xparts = static_cast<int>(p.Dqk / c.siz_b_nqk);
    w.xpart = layout.take(bh * static_cast<size_t>(p.S) * 2 * w.xparts * 4);
    w.total = layout.total();
    if (!form_pinned) {
      BwdConfig chunkwise = c;
      chunkwise.form = Form::Chunkwise;
      w.total = std::max(w.total, bwd_workspace(p, chunkwise, saved).total);
    }
    return w;
  }
  const size_t nc = static_cast<size_t>((p.S + c.chunk - 1) / c.chunk);
  const size_t s_pad = nc * c.chunk;
  const size_t eb = dtype_bytes(p.dtype);
  BwdWorkspace w;
  w.dclast_parts = static_cast<int>((p.Dqk / c.ds_siz_b_k) * (p.Dv / c.ds_siz_b_v));
  WorkspaceLayout layout;
  auto take = [&](size_t bytes) { return layout.take(bytes); };
  if (!saved) {
    w.gate_b = take(bh * s_pad * 4);
    w.gate_u = take(bh * s_pad * 4);
    w.gate_pm = take(bh * s_pad * 4);
    w.chunk_g = take(bh * nc * 4);
    w.chunk_umax = take(bh * nc * 4);
    w.chunk_m = take(bh * (nc + 1) * 4);
    w.states_C = take(bh * nc * p.Dqk * p.Dv * eb);
    w.C_last = take(bh * p.Dqk * p.Dv * 4);
  }
  const int nseg = saved ? 1 : state_segments(c.st_seg, static_cast<int64_t>(nc), p.B * p.NH).nseg;
  w.dstates_C = take(bh * nc * p.Dqk * p.Dv * eb);
  w.dclast_dot = take(bh * w.dclast_parts * 4);
  w.xparts = static_cast<int>(p.Dqk / c.siz_b_nqk);
  w.xpart = take(bh * s_pad * 2 * w.xparts * 4);
  w.row_x = take(bh * s_pad * 4);
  w.chunk_x = take(bh * nc * 4);
  w.seg = take_segments(layout, p, static_cast<int64_t>(nc), nseg);
  const int ds_nseg = state_segments(c.ds_seg, static_cast<int64_t>(nc), p.B * p.NH).nseg;
  if (ds_nseg > 1) w.seg_dC = take(bh * static_cast<size_t>(ds_nseg) * p.Dqk * p.Dv * 4);
  w.total = layout.total();
  return w;
}

std::string parallel_conflict(const BackwardTensors& t) {
  if (t.C0 || t.n0 || t.m0) return "initial states (C0/n0/m0)";
  if (t.dC_last) return "dC_last";
  if (t.dC0) return "dC0 (the initial state's gradient)";
  if (t.saved) return "a saved-states buffer";
  return {};
}

BwdSelection selection_of(const MlstmProblem& p, const BwdConfig& c) {
  BwdSelection s;
  s.family = find_family(Op::Backward, c.form, c.engine);
  s.cfg = c;
  s.rejected = s.family ? s.family->reject(c.to_config(), p, current_limits())
                        : "no backward family of this form and engine in this build";
  s.kernel_key = {static_cast<int64_t>(Op::Backward), static_cast<int64_t>(c.form), static_cast<int64_t>(c.engine),
                  static_cast<int64_t>(p.dtype), static_cast<int64_t>(p.gate_dtype), static_cast<int64_t>(p.variant),
                  p.normalize, p.Dqk, p.Dv, c.chunk, c.st_siz_b_k, c.st_siz_b_v, c.st_sub, c.st_warps_m,
                  c.st_warps_n, c.ds_siz_b_k, c.ds_siz_b_v, c.ds_sub, c.ds_warps_m, c.ds_warps_n, c.siz_b_r,
                  c.siz_b_t, c.siz_b_nqk, c.siz_b_nv, c.siz_b_kc, c.warps_m, c.warps_n, c.st_sm90, c.ds_sm90,
                  c.tl_sm90, (c.st_seg > 1) + 2 * (c.ds_seg > 1)};
  return s;
}

const BwdSelection& select_bwd(const MlstmProblem& p, const Config& caller, bool needs_chunkwise) {
  static SelectionMemo<BwdSelection> memo;
  const int ordinal = selection_ordinal();
  SelectionKey key{selection_words(Op::Backward, p, ordinal, needs_chunkwise), caller};
  return memo.get(std::move(key), [&] {
    const DeviceLimits& dev = current_limits();
    const Config& pinned = caller.empty() ? tuned_config(p, "bwd") : caller;
    Resolved r = resolve(Op::Backward, p, dev, pinned);
    if (needs_chunkwise && r.family->form() == Form::Parallel && !caller.count(kFormKey)) {
      log_debug("backward S={}: the parallel form keeps no states; using the chunkwise default", p.S);
      r = resolve(Op::Backward, p, dev, {{kFormKey, 0}});
    }
    BwdConfig c;
    c.apply(r.config);
    return selection_of(p, c);
  });
}

const BwdSelection& select_bwd_for_saved(const MlstmProblem& p, const Config& caller, const void* saved,
                                         size_t saved_bytes) {
  const BwdSelection& sel = select_bwd(p, caller, true);
  if (caller.count("chunk") || sel.cfg.parallel()) return sel;
  // The chunk the forward recorded for this buffer, else the forward's own choice for p.
  int chunk = saved_chunk(saved, saved_bytes);
  if (!chunk) chunk = select_fwd(p, {}, true).cfg.chunk;
  if (chunk == sel.cfg.chunk || saved_size(p, chunk) != saved_bytes) return sel;  // a mismatch is reported by name
  Config with_chunk = caller;
  with_chunk["chunk"] = chunk;
  return select_bwd(p, with_chunk, true);
}

void run_backward(const MlstmProblem& p, const BackwardTensors& t, const LaunchOptions& o, const BwdSelection& sel) {
  check_problem(p);
  const BwdConfig& cfg = sel.cfg;
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
  if (cfg.parallel()) {
    if (const std::string what = parallel_conflict(t); !what.empty())
      throw Error(ErrorCode::InvalidArgument,
                  "parallel=1 (the parallel form keeps no chunk states) cannot take " + what +
                      ": pin parallel=0 (chunkwise) or leave the form to the library");
  }
  if (const std::string& why = sel.rejected; !why.empty())
    throw Error(ErrorCode::InvalidArgument, "invalid backward config: " + why, to_string(cfg.to_config()));
  const bool saved = t.saved != nullptr;
  const BwdWorkspace ws = bwd_workspace(p, cfg, saved, true);
  const FwdWorkspace sv = cfg.parallel() ? FwdWorkspace{} : fwd_workspace(p, cfg.chunk, true);  // the saved layout
  if (saved) {
    if (t.saved_bytes != sv.total)
      throw Error(ErrorCode::InvalidArgument,
                  "saved buffer has " + std::to_string(t.saved_bytes) + " bytes; the backward's chunk (" +
                      std::to_string(cfg.chunk) + ") needs " + std::to_string(sv.total) +
                      ": run forward and backward with the same chunk size");
    if (reinterpret_cast<uintptr_t>(t.saved) % 256)
      throw Error(ErrorCode::InvalidArgument, "saved buffer must be 256-byte aligned");
  }
  CUstream stream = static_cast<CUstream>(o.stream);
  CUdeviceptr base = 0;
  bool owned = false;
  // Buffer sizes and alignment are arguments too: checked before any driver or compile work.
  if (o.workspace) {
    if (o.workspace_bytes < ws.total)
      throw Error(ErrorCode::InvalidArgument, "workspace of " + std::to_string(o.workspace_bytes) +
                                                  " bytes is too small: this backward needs " +
                                                  std::to_string(ws.total));
    if (reinterpret_cast<uintptr_t>(o.workspace) % 256)
      throw Error(ErrorCode::InvalidArgument, "workspace must be 256-byte aligned");
    base = reinterpret_cast<CUdeviceptr>(o.workspace);
  }
  auto at = [&](size_t off) { return reinterpret_cast<void*>(base + off); };
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
  g.B = static_cast<int>(p.B); g.NH = static_cast<int>(p.NH); g.S = static_cast<int>(p.S); g.NC = 1;
  g.scale = resolved_scale(p);
  g.eps = p.eps;
  const unsigned bh = static_cast<unsigned>(p.B * p.NH);
  auto u = [](int64_t x) { return static_cast<unsigned>(x); };

  rt::ensure_context();
  static KernelMemo<10> memo;
  const auto kernels = memo.get(sel.kernel_key, [&] {
    std::vector<rt::KernelSpec> specs = sel.family->kernels(p, sel.cfg.to_config(), current_limits());
    while (specs.size() < 10) specs.push_back(specs.back());  // the parallel form has two, no split eight
    return specs;
  });
  if (cfg.parallel()) {  // two launches: the three tile modes, then the gate gradients
    if (!o.workspace) {
      TFLA_CU(cuMemAllocAsync(&base, ws.total, stream));
      owned = true;
    }
    g.xpart = static_cast<float*>(at(ws.xpart));
    g.xparts = ws.xparts;
    try {
      kernels[0]->launch({u(2 * (p.Dqk / cfg.siz_b_nqk) + p.Dv / cfg.siz_b_nv),
                          u((p.S + cfg.siz_b_r - 1) / cfg.siz_b_r), bh},
                         stream, &g, sizeof(g));
      kernels[1]->launch({1, bh, 1}, stream, &g, sizeof(g));
    } catch (...) {
      if (owned) rt::driver().cuMemFreeAsync(base, stream);
      throw;
    }
    if (owned) TFLA_CU(cuMemFreeAsync(base, stream));
    return;
  }

  const rt::LoadedKernel& k_gates = *kernels[0];
  const rt::LoadedKernel& k_states = *kernels[1];
  const rt::LoadedKernel& k_dstates = *kernels[2];
  const rt::LoadedKernel& k_dq = *kernels[3];
  const rt::LoadedKernel& k_dk = *kernels[4];
  const rt::LoadedKernel& k_dv = *kernels[5];
  const rt::LoadedKernel& k_gl = *kernels[6];
  const rt::LoadedKernel& k_gdf = *kernels[7];
  // the split walks' fix kernels, in this order after the eight (bwd_kernels)
  size_t next = 8;
  const rt::LoadedKernel* k_st_fix = cfg.st_seg > 1 ? kernels[next++] : nullptr;
  const rt::LoadedKernel* k_ds_fix = cfg.ds_seg > 1 ? kernels[next++] : nullptr;

  if (!o.workspace) {
    TFLA_CU(cuMemAllocAsync(&base, ws.total, stream));
    owned = true;
  }
  const CUdeviceptr saved_base = reinterpret_cast<CUdeviceptr>(t.saved);
  // gate data and chunk states: from the saved buffer, or recomputed into the workspace
  auto st = [&](size_t ws_off, size_t saved_off) {
    return saved ? reinterpret_cast<void*>(saved_base + saved_off) : at(ws_off);
  };
  const int NC = static_cast<int>((p.S + cfg.chunk - 1) / cfg.chunk);

  // recompute: the forward's gate and state kernels
  MlstmFwdParams f{};
  fill_inputs(f, t, p);
  f.C0 = t.C0; f.n0 = t.n0; f.m0 = t.m0;
  f.C_last = (t.dC_last || saved) ? static_cast<float*>(st(ws.C_last, sv.C_last)) : nullptr;
  f.gate_b = static_cast<float*>(st(ws.gate_b, sv.gate_b));
  f.gate_u = static_cast<float*>(st(ws.gate_u, sv.gate_u));
  f.gate_pm = static_cast<float*>(st(ws.gate_pm, sv.gate_pm));
  f.chunk_g = static_cast<float*>(st(ws.chunk_g, sv.chunk_g));
  f.chunk_umax = static_cast<float*>(st(ws.chunk_umax, sv.chunk_umax));
  f.chunk_m = static_cast<float*>(st(ws.chunk_m, sv.chunk_m));
  f.states_C = st(ws.states_C, sv.states_C);
  f.B = static_cast<int>(p.B); f.NH = static_cast<int>(p.NH); f.S = static_cast<int>(p.S); f.NC = NC;
  f.scale = resolved_scale(p);
  f.eps = p.eps;

  g.dC_last = t.dC_last;
  g.C_last = f.C_last;
  g.dC0 = t.dC0;
  g.gate_b = f.gate_b; g.gate_u = f.gate_u; g.gate_pm = f.gate_pm;
  g.chunk_g = f.chunk_g; g.chunk_m = f.chunk_m;
  g.states_C = f.states_C;
  g.dstates_C = at(ws.dstates_C);
  g.dclast_dot = static_cast<float*>(at(ws.dclast_dot));
  g.dclast_parts = ws.dclast_parts;
  g.xpart = static_cast<float*>(at(ws.xpart));
  g.xparts = ws.xparts;
  g.row_x = static_cast<float*>(at(ws.row_x));
  g.chunk_x = static_cast<float*>(at(ws.chunk_x));
  g.NC = NC;

  const unsigned nc = static_cast<unsigned>(NC);
  try {
    if (!saved) {
      k_gates.launch({nc, bh, 1}, stream, &f, sizeof(f));
      const SegmentPlan split = state_segments(cfg.st_seg, NC, p.B * p.NH);
      launch_states(p, {cfg.st_sm90 != 0, cfg.st_siz_b_k, cfg.st_siz_b_v, split}, ws.seg, base + ws.seg.begin, f,
                    k_states, k_st_fix, stream);
    }
    // the dC walk, split into segments of the sequence where the config asks (then the fix kernel)
    const SegmentPlan ds_split = state_segments(cfg.ds_seg, NC, p.B * p.NH);
    g.nseg = ds_split.nseg;
    g.seg_chunks = ds_split.seg_chunks;
    if (ds_split.nseg > 1) g.seg_dC = static_cast<float*>(at(ws.seg_dC));
    const unsigned ds_rows = bh * static_cast<unsigned>(ds_split.nseg);  // heads x segments
    if (cfg.ds_sm90) {
      const MlstmBwdDstatesSm90Params sp = bwd_dstates_sm90_params(p, g);
      k_dstates.launch({u(p.Dv / cfg.ds_siz_b_v), ds_rows, 1}, stream, &sp, sizeof(sp));
    } else {
      k_dstates.launch({u(p.Dv / cfg.ds_siz_b_v), u(p.Dqk / cfg.ds_siz_b_k), ds_rows}, stream, &g, sizeof(g));
    }
    if (ds_split.nseg > 1)
      k_ds_fix->launch({u((p.Dqk * p.Dv / 8 + 255) / 256), bh, 1}, stream, &g, sizeof(g));
    if (cfg.tl_sm90) {  // persistent: one CTA per SM, or per tile where there are fewer
      const rt::LoadedKernel* tile_kernels[3] = {&k_dq, &k_dk, &k_dv};
      for (int mode = 0; mode < 3; ++mode) {
        const MlstmBwdTileSm90Params tp = bwd_tile_sm90_params(p, g, mode, mode == 2 ? cfg.siz_b_nv : cfg.siz_b_nqk);
        const int64_t ctas = std::min<int64_t>(tp.tiles, current_limits().sm_count);
        tile_kernels[mode]->launch({u(ctas), 1, 1}, stream, &tp, sizeof(tp));
      }
    } else {
      const unsigned rows = u((p.S + cfg.siz_b_r - 1) / cfg.siz_b_r);
      k_dq.launch({u(p.Dqk / cfg.siz_b_nqk), rows, bh}, stream, &g, sizeof(g));
      k_dk.launch({u(p.Dqk / cfg.siz_b_nqk), rows, bh}, stream, &g, sizeof(g));
      k_dv.launch({u(p.Dv / cfg.siz_b_nv), rows, bh}, stream, &g, sizeof(g));
    }
    k_gl.launch({nc, bh, 1}, stream, &g, sizeof(g));
    k_gdf.launch({nc, bh, 1}, stream, &g, sizeof(g));
  } catch (...) {
    if (owned) rt::driver().cuMemFreeAsync(base, stream);
    throw;
  }
  if (owned) TFLA_CU(cuMemFreeAsync(base, stream));
}

}  // namespace tfla::ops
