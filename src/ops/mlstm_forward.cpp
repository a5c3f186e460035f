#include "ops/mlstm_forward.hpp"

#include <algorithm>
#include <cstdint>
#include <string>

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
#include "runtime/tensor_map.hpp"
#include "tfla/mlstm_params.cuh"
#include "tfla/mlstm_sm90_params.cuh"

namespace tfla::ops {

int selection_ordinal() {
  if (!rt::driver_available()) return -1;
  try {
    return rt::ensure_context();
  } catch (const Error&) {
    return -1;
  }
}

SegWorkspace take_segments(WorkspaceLayout& layout, const MlstmProblem& p, int64_t nc, int nseg) {
  SegWorkspace s;
  s.begin = layout.total();
  if (nseg <= 1) return s;
  const size_t bh = static_cast<size_t>(p.B * p.NH), ns = static_cast<size_t>(nseg);
  s.C = layout.take(bh * ns * p.Dqk * p.Dv * 4);
  s.n = layout.take(bh * ns * p.Dqk * 4);
  s.m = layout.take(bh * ns * 4);
  s.mloc = layout.take(bh * static_cast<size_t>(nc + 1) * 4);
  s.bytes = layout.total() - s.begin;
  return s;
}

FwdWorkspace fwd_workspace(const MlstmProblem& p, int chunk, bool with_last, int nseg) {
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
  w.seg = take_segments(layout, p, static_cast<int64_t>(nc), nseg);
  w.total = layout.total();
  return w;
}

FwdWorkspace fused_fwd_workspace(const MlstmProblem& p) {
  const size_t bh = static_cast<size_t>(p.B * p.NH);
  const size_t nc = static_cast<size_t>((p.S + kFusedChunk - 1) / kFusedChunk);
  const size_t s_pad = nc * kFusedChunk;
  FwdWorkspace w;
  WorkspaceLayout layout;
  w.gate_b = layout.take(bh * s_pad * 4);
  w.gate_u = layout.take(bh * s_pad * 4);
  w.gate_pm = layout.take(bh * s_pad * 4);
  w.chunk_g = layout.take(bh * nc * 4);
  w.chunk_umax = layout.take(bh * nc * 4);
  w.seg.begin = layout.total();
  w.total = layout.total();
  return w;
}

std::string parallel_conflict(const ForwardTensors& t) {
  if (t.C0 || t.n0 || t.m0) return "initial states (C0/n0/m0)";
  if (t.C_last || t.n_last || t.m_last) return "last states (C_last/n_last/m_last)";
  if (t.saved) return "a saved-states buffer";
  return {};
}

FwdSelection selection_of(const MlstmProblem& p, const FwdConfig& c) {
  FwdSelection s;
  s.family = find_family(Op::Forward, c.form, c.engine);
  s.cfg = c;
  s.rejected = s.family ? s.family->reject(c.to_config(), p, current_limits())
                        : "no forward family of this form and engine in this build";
  s.kernel_key = {static_cast<int64_t>(Op::Forward), static_cast<int64_t>(c.form), static_cast<int64_t>(c.engine),
                  static_cast<int64_t>(p.dtype), static_cast<int64_t>(p.gate_dtype), static_cast<int64_t>(p.variant),
                  p.normalize, p.Dqk, p.Dv, c.chunk, c.siz_b_q, c.siz_b_kv, c.siz_b_v, c.siz_b_kc, c.warps_m,
                  c.warps_n, c.st_siz_b_k, c.st_siz_b_v, c.st_sub, c.st_warps_m, c.st_warps_n, c.st_sm90,
                  c.st_seg > 1, c.fused};
  if (c.fused) {
    FwdConfig u = c;
    u.fused = 0;
    s.unfused = std::make_shared<const FwdSelection>(selection_of(p, u));
  }
  return s;
}

const FwdSelection& select_fwd(const MlstmProblem& p, const Config& caller, bool needs_chunkwise) {
  static SelectionMemo<FwdSelection> memo;
  const int ordinal = selection_ordinal();
  SelectionKey key{selection_words(Op::Forward, p, ordinal, needs_chunkwise), caller};
  return memo.get(std::move(key), [&] {
    const DeviceLimits& dev = current_limits();
    const Config& pinned = caller.empty() ? tuned_config(p, "fwd") : caller;
    Resolved r = resolve(Op::Forward, p, dev, pinned);
    if (needs_chunkwise && r.family->form() == Form::Parallel && !caller.count(kFormKey)) {
      log_debug("forward S={}: the parallel form keeps no states; using the chunkwise default", p.S);
      r = resolve(Op::Forward, p, dev, {{kFormKey, 0}});
    }
    FwdConfig c;
    c.apply(r.config);
    return selection_of(p, c);
  });
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
                      const FwdConfig& cfg, const rt::LoadedKernel& output) {
  const MlstmFwdParams prm = io_params(p, t);
  output.launch({static_cast<unsigned>(p.Dv / cfg.siz_b_v), static_cast<unsigned>((p.S + cfg.siz_b_q - 1) / cfg.siz_b_q),
                 static_cast<unsigned>(p.B * p.NH)},
                static_cast<CUstream>(o.stream), &prm, sizeof(prm));
}

// The selection's kernels in the current context.
KernelMemo<4>::Kernels fwd_loaded(const MlstmProblem& p, const FwdSelection& sel) {
  static KernelMemo<4> memo;
  return memo.get(sel.kernel_key, [&] {
    std::vector<rt::KernelSpec> specs = sel.family->kernels(p, sel.cfg.to_config(), current_limits());
    while (specs.size() < 4) specs.push_back(specs.back());  // the parallel form has one, no split three
    return specs;
  });
}

// The sm90 output kernel's launch: tensor maps over q, k, v and the chunk states, then one
// persistent CTA per SM (or per tile, when there are fewer).
void launch_output_sm90(const MlstmProblem& p, const FwdConfig& cfg, const MlstmFwdParams& prm,
                        const rt::LoadedKernel& k, CUstream stream) {
  using Shape = FwdOutputSm90Shape;
  MlstmFwdSm90Params P{};
  P.p = prm;
  P.q = rt::tensor_map(bshd_map(prm.q, p.dtype, p.Dqk, p, prm.q_sb, prm.q_sh, prm.q_ss, Shape::kBQ));
  P.k = rt::tensor_map(bshd_map(prm.k, p.dtype, p.Dqk, p, prm.k_sb, prm.k_sh, prm.k_ss, Shape::kBKV));
  P.v = rt::tensor_map(bshd_map(prm.v, p.dtype, p.Dv, p, prm.v_sb, prm.v_sh, prm.v_ss, Shape::kBKV));
  P.c = rt::tensor_map(states_map(prm.states_C, p, prm.NC));
  P.q_tiles = static_cast<int>((p.S + Shape::kBQ - 1) / Shape::kBQ);
  P.v_tiles = static_cast<int>(p.Dv / cfg.siz_b_v);
  const int64_t tiles = int64_t{P.q_tiles} * P.v_tiles * p.B * p.NH;
  if (tiles > INT32_MAX) throw Error(ErrorCode::InvalidArgument, "problem too large for the sm90 forward");
  P.tiles = static_cast<int>(tiles);
  const int64_t ctas = std::min<int64_t>(tiles, current_limits().sm_count);
  k.launch({static_cast<unsigned>(ctas), 1, 1}, stream, &P, sizeof(P));
}

// The fused forward's launch: tensor maps of 64-row boxes over q, k, v; one CTA per 128 columns of
// Dv and head, the slices of a head adjacent (they read the same Q and K at about the same time).
void launch_fused_sm90(const MlstmProblem& p, const MlstmFwdParams& prm, const rt::LoadedKernel& k, CUstream stream) {
  constexpr unsigned rows = FwdFusedSm90Shape::kChunk;
  MlstmFwdFusedSm90Params P{};
  P.p = prm;
  P.q = rt::tensor_map(bshd_map(prm.q, p.dtype, p.Dqk, p, prm.q_sb, prm.q_sh, prm.q_ss, rows));
  P.k = rt::tensor_map(bshd_map(prm.k, p.dtype, p.Dqk, p, prm.k_sb, prm.k_sh, prm.k_ss, rows));
  P.v = rt::tensor_map(bshd_map(prm.v, p.dtype, p.Dv, p, prm.v_sb, prm.v_sh, prm.v_ss, rows));
  // the three gate rows of a chunk in one box: fused_fwd_workspace puts gate_b, gate_u and gate_pm
  // one after another, each (BH, S_pad) fp32
  rt::TensorMapSpec g;
  g.base = prm.gate_b;
  g.dtype = DType::FP32;
  g.rank = 3;
  g.dims[0] = static_cast<uint64_t>(prm.NC) * rows;
  g.dims[1] = static_cast<uint64_t>(p.B * p.NH);
  g.dims[2] = 3;
  g.strides[1] = g.dims[0] * 4;
  const auto addr = [](const float* x) { return reinterpret_cast<uintptr_t>(x); };
  g.strides[2] = addr(prm.gate_u) - addr(prm.gate_b);
  if (addr(prm.gate_pm) - addr(prm.gate_u) != g.strides[2])
    throw Error(ErrorCode::Internal, "fused forward: the gate rows are not evenly spaced in the workspace");
  g.box[0] = rows;
  g.box[1] = 1;
  g.box[2] = 3;
  P.gates = rt::tensor_map(g);
  k.launch({static_cast<unsigned>(p.Dv / FwdFusedSm90Shape::kBV), static_cast<unsigned>(p.B * p.NH), 1}, stream, &P,
           sizeof(P));
}

// Zeroes the bytes of a saved buffer that no kernel writes: each region's padding up to the
// 256-byte alignment of the next. Then the buffer's contents follow from the inputs alone, as an
// output's must (torch.library.opcheck compares outputs byte for byte). One memset covers
// [0, states_C): the gate and chunk regions, about 12 bytes per token and head (each later written
// by the gate and state kernels), with all their padding; a second covers states_n's padding,
// which only a Dqk that is not a multiple of 64 can leave. states_C and C_S have none (Dqk Dv is a
// multiple of 256).
void zero_saved_padding(const MlstmProblem& p, int64_t nc, const FwdWorkspace& ws, CUdeviceptr base,
                        CUstream stream) {
  TFLA_CU(cuMemsetD8Async(base, 0, ws.states_C, stream));
  const size_t n_end = ws.states_n + static_cast<size_t>(p.B * p.NH * nc * p.Dqk) * 4;
  if (n_end < ws.C_last) TFLA_CU(cuMemsetD8Async(base + n_end, 0, ws.C_last - n_end, stream));
}

}  // namespace

void launch_states(const MlstmProblem& p, const StateLaunch& sl, const SegWorkspace& ws, CUdeviceptr seg_base,
                   MlstmFwdParams& f, const rt::LoadedKernel& states, const rt::LoadedKernel* fix, CUstream stream) {
  const unsigned bh = static_cast<unsigned>(p.B * p.NH);
  const bool split = sl.seg.nseg > 1;
  f.nseg = sl.seg.nseg;
  f.seg_chunks = sl.seg.seg_chunks;
  if (split) {
    auto at = [&](size_t off) { return reinterpret_cast<float*>(seg_base + (off - ws.begin)); };
    f.seg_C = at(ws.C);
    f.seg_n = at(ws.n);
    f.seg_m = at(ws.m);
    f.seg_mloc = at(ws.mloc);
  }
  const unsigned rows = bh * static_cast<unsigned>(sl.seg.nseg);  // heads x segments
  if (sl.sm90) {
    const MlstmFwdStatesSm90Params sp = fwd_states_sm90_params(p, f);
    states.launch({static_cast<unsigned>(p.Dv / sl.siz_b_v), rows, 1}, stream, &sp, sizeof(sp));
  } else {
    states.launch({static_cast<unsigned>(p.Dv / sl.siz_b_v), static_cast<unsigned>(p.Dqk / sl.siz_b_k), rows}, stream,
                  &f, sizeof(f));
  }
  if (split) {
    const int64_t groups = (p.Dqk * p.Dv + p.Dqk) / 8;  // 8 elements of C or n per thread
    fix->launch({static_cast<unsigned>((groups + 255) / 256), bh, 1}, stream, &f, sizeof(f));
  }
}

void run_forward(const MlstmProblem& p, const ForwardTensors& t, const LaunchOptions& o, const FwdSelection& sel) {
  if (sel.unfused && t.saved) {
    run_forward(p, t, o, *sel.unfused);
    return;
  }
  check_problem(p);
  const FwdConfig& cfg = sel.cfg;
  check_tensor("q", t.q, t.q_strides, p, p.Dqk);
  check_tensor("k", t.k, t.k_strides, p, p.Dqk);
  check_tensor("v", t.v, t.v_strides, p, p.Dv);
  check_tensor("h", t.h, t.h_strides, p, p.Dv);
  const Strides is = resolve_gate(t.i_strides, p), fs = resolve_gate(t.f_strides, p);
  check_gate("i", t.i, is, p);
  check_gate("f", t.f, fs, p);
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
  if (cfg.parallel()) {
    if (const std::string what = parallel_conflict(t); !what.empty())
      throw Error(ErrorCode::InvalidArgument,
                  "parallel=1 (the parallel form keeps no chunk states) cannot take " + what +
                      ": pin parallel=0 (chunkwise) or leave the form to the library");
  }
  if (const std::string& why = sel.rejected; !why.empty())
    throw Error(ErrorCode::InvalidArgument, "invalid forward config: " + why, to_string(cfg.to_config()));
  const bool saved = t.saved != nullptr;
  const bool fused = cfg.fused != 0;  // (with a saved buffer the unfused selection runs, above)
  const int chunk = fused ? kFusedChunk : cfg.chunk;
  const int64_t nc = (p.S + chunk - 1) / chunk;
  const SegmentPlan split = cfg.parallel() || fused ? SegmentPlan{} : state_segments(cfg.st_seg, nc, p.B * p.NH);
  const FwdWorkspace ws = cfg.parallel() ? FwdWorkspace{}
                          : fused        ? fused_fwd_workspace(p)
                                         : fwd_workspace(p, cfg.chunk, saved, split.nseg);
  // a saved buffer holds the layout up to the split's regions, which then live elsewhere
  const size_t core_bytes = ws.seg.begin;
  if (saved) {
    if (t.saved_bytes != core_bytes)
      throw Error(ErrorCode::InvalidArgument,
                  "saved buffer has " + std::to_string(t.saved_bytes) + " bytes; this problem and chunk (" +
                      std::to_string(cfg.chunk) + ") need mlstm_saved_size() = " + std::to_string(core_bytes));
    if (reinterpret_cast<uintptr_t>(t.saved) % 256)
      throw Error(ErrorCode::InvalidArgument, "saved buffer must be 256-byte aligned");
    if (o.workspace && ws.seg.bytes) {  // the split walk's scratch, in the caller's workspace
      if (o.workspace_bytes < ws.seg.bytes)
        throw Error(ErrorCode::InvalidArgument,
                    "workspace of " + std::to_string(o.workspace_bytes) +
                        " bytes is too small: this forward with a saved buffer needs " +
                        std::to_string(ws.seg.bytes) + " (mlstm_forward_workspace_size with with_saved)");
      if (reinterpret_cast<uintptr_t>(o.workspace) % 256)
        throw Error(ErrorCode::InvalidArgument, "workspace must be 256-byte aligned");
    }
  } else if (o.workspace && !cfg.parallel()) {
    if (o.workspace_bytes < ws.total)
      throw Error(ErrorCode::InvalidArgument, "workspace of " + std::to_string(o.workspace_bytes) +
                                                  " bytes is too small: this forward needs " +
                                                  std::to_string(ws.total));
    if (reinterpret_cast<uintptr_t>(o.workspace) % 256)
      throw Error(ErrorCode::InvalidArgument, "workspace must be 256-byte aligned");
  }

  rt::ensure_context();
  const auto kernels = fwd_loaded(p, sel);
  CUstream stream = static_cast<CUstream>(o.stream);
  if (cfg.parallel()) {
    forward_parallel(p, t, o, cfg, *kernels[0]);
    return;
  }
  const rt::LoadedKernel& k_gates = *kernels[0];
  const rt::LoadedKernel& k_states = *kernels[1];
  const rt::LoadedKernel& k_output = *kernels[2];
  CUdeviceptr base = 0, seg_base = 0, seg_owned = 0;
  bool owned = false;
  if (saved) {
    base = reinterpret_cast<CUdeviceptr>(t.saved);
    record_saved(t.saved, t.saved_bytes, cfg.chunk);
    // the split's regions: in the caller's workspace (checked above), else allocated here
    if (ws.seg.bytes) {
      if (o.workspace) {
        seg_base = reinterpret_cast<CUdeviceptr>(o.workspace);
      } else {
        TFLA_CU(cuMemAllocAsync(&seg_owned, ws.seg.bytes, stream));
        seg_base = seg_owned;
      }
    }
  } else if (o.workspace) {
    base = reinterpret_cast<CUdeviceptr>(o.workspace);
  } else {
    TFLA_CU(cuMemAllocAsync(&base, ws.total, stream));
    owned = true;
  }
  if (!saved) seg_base = base + ws.seg.begin;
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
  if (!fused) {
    prm.chunk_m = static_cast<float*>(at(ws.chunk_m));
    prm.states_C = at(ws.states_C);
    prm.states_n = static_cast<float*>(at(ws.states_n));
  }
  prm.NC = static_cast<int>(nc);
  const unsigned bh = static_cast<unsigned>(p.B * p.NH);
  try {
    if (saved) zero_saved_padding(p, nc, ws, base, stream);
    k_gates.launch({static_cast<unsigned>(prm.NC), bh, 1}, stream, &prm, sizeof(prm));
    if (fused) {
      launch_fused_sm90(p, prm, *kernels[1], stream);
    } else {
      launch_states(p, {cfg.st_sm90 != 0, cfg.st_siz_b_k, cfg.st_siz_b_v, split}, ws.seg, seg_base, prm, k_states,
                    kernels[3], stream);
      if (cfg.engine == Engine::Sm90)
        launch_output_sm90(p, cfg, prm, k_output, stream);
      else
        k_output.launch({static_cast<unsigned>(p.Dv / cfg.siz_b_v),
                         static_cast<unsigned>((p.S + cfg.siz_b_q - 1) / cfg.siz_b_q), bh},
                        stream, &prm, sizeof(prm));
    }
    if (saved && t.C_last)
      TFLA_CU(cuMemcpyDtoDAsync(reinterpret_cast<CUdeviceptr>(t.C_last), base + ws.C_last,
                                static_cast<size_t>(p.B * p.NH * p.Dqk * p.Dv * 4), stream));
  } catch (...) {
    if (owned) rt::driver().cuMemFreeAsync(base, stream);
    if (seg_owned) rt::driver().cuMemFreeAsync(seg_owned, stream);
    throw;
  }
  if (owned) TFLA_CU(cuMemFreeAsync(base, stream));
  if (seg_owned) TFLA_CU(cuMemFreeAsync(seg_owned, stream));
}

}  // namespace tfla::ops
