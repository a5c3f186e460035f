// Packed sequences of variable lengths (cu_seqlens) on the GPU: forward and backward against the
// float64 reference run sequence by sequence (reference::forward_varlen / backward_varlen), with
// poisoned outputs, empty sequences, sequences of one token and shorter than a chunk, initial
// and last states, dC_last, int32 and int64 offsets, a saved-states buffer, the backward repeated
// bit for bit; the packed call equal bit for bit to the same sequences run one by one with the
// packed call's config; and new packings that reuse the compiled kernels (no NVRTC compile after
// the first).
#include "tfla_catch.hpp"
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gpu_test_util.hpp"
#include "reference/reference.hpp"
#include "ops/tuned_config.hpp"
#include "runtime/kernel.hpp"
#include "store/cubin_store.hpp"
#include "tfla_util/env_flag.hpp"

using namespace tfla;
namespace ref = tfla::reference;

namespace {

struct VCase {
  Variant variant = Variant::Exp;
  bool normalize = true;
  DType dtype = DType::BF16;
  int64_t NH = 2, Dqk = 64, Dv = 64;
  std::vector<int64_t> lens;
  bool init = false, last = false, dclast = false, int64 = false, extreme = false, saved = false;
  int64_t chunk = 0;       // pinned chunk; 0: the library's
  int engine = -1;         // pinned engine (0 mma.sync, 1 sm90: its output and gradient tile kernels); -1 the library's
  int fused = -1;          // the forward's fused sm90 walk pinned (1) or refused (0); -1 the library's
  int fused_bv = 0;        // with fused = 1: its columns per CTA pinned (128 or 256); 0 the library's
  int tl_dkv = -1;         // the backward's dK and dV in one sm90 kernel (1) or two (0); -1 the library's
  int st_sm90 = -1;        // the state walks (the forward's with fused = 0, the backward's recompute) on the sm90 engine (1) or mma.sync (0); -1 the library's
  int64_t max_extra = 0;   // max_seqlen = the longest length + this (a looser bound is allowed)
};

std::string describe(const VCase& c) {
  std::string s = std::string(to_string(c.variant)) + (c.variant == Variant::Sig && !c.normalize ? "(no norm)" : "") +
                  " " + to_string(c.dtype) + " NH=" + std::to_string(c.NH) + " " + std::to_string(c.Dqk) + "x" +
                  std::to_string(c.Dv) + " lens=[";
  for (size_t j = 0; j < c.lens.size(); ++j) s += (j ? "," : "") + std::to_string(c.lens[j]);
  s += "]";
  if (c.chunk) s += " chunk=" + std::to_string(c.chunk);
  if (c.engine >= 0) s += c.engine ? " sm90" : " mma";
  if (c.fused >= 0) s += " fused=" + std::to_string(c.fused);
  if (c.fused_bv) s += " fused_bv=" + std::to_string(c.fused_bv);
  if (c.tl_dkv >= 0) s += " tl_dkv=" + std::to_string(c.tl_dkv);
  if (c.st_sm90 >= 0) s += " st_sm90=" + std::to_string(c.st_sm90);
  if (c.init) s += " init";
  if (c.last) s += " last";
  if (c.dclast) s += " dC_last";
  if (c.int64) s += " int64";
  if (c.extreme) s += " extreme";
  if (c.saved) s += " saved";
  if (c.max_extra) s += " max+" + std::to_string(c.max_extra);
  return s;
}

std::vector<int64_t> offsets(const std::vector<int64_t>& lens) {
  std::vector<int64_t> cu{0};
  for (int64_t l : lens) cu.push_back(cu.back() + l);
  return cu;
}

cli::DeviceBuffer upload_offsets(const std::vector<int64_t>& cu, bool int64) {
  if (int64) {
    cli::DeviceBuffer b(cu.size() * 8);
    b.upload(cu.data(), cu.size() * 8);
    return b;
  }
  std::vector<int32_t> c32(cu.begin(), cu.end());
  cli::DeviceBuffer b(c32.size() * 4);
  b.upload(c32.data(), c32.size() * 4);
  return b;
}

// Tokens [t0, t1) of every head of a (1, NH, T, d) vector.
std::vector<double> cut(const std::vector<double>& x, int64_t NH, int64_t T, int64_t d, int64_t t0, int64_t t1) {
  std::vector<double> out;
  for (int64_t h = 0; h < NH; ++h)
    out.insert(out.end(), x.begin() + (h * T + t0) * d, x.begin() + (h * T + t1) * d);
  return out;
}

MlstmProblem problem_of(const VCase& c, int64_t T) {
  MlstmProblem p;
  p.B = 1; p.NH = c.NH; p.S = T; p.Dqk = c.Dqk; p.Dv = c.Dv;
  p.dtype = c.dtype;
  p.gate_dtype = DType::FP32;
  p.variant = c.variant;
  p.normalize = c.normalize;
  p.num_seqs = static_cast<int64_t>(c.lens.size());
  p.max_seqlen = std::min(T, *std::max_element(c.lens.begin(), c.lens.end()) + c.max_extra);
  return p;
}

void run_case(const VCase& c, uint64_t seed) {
  INFO(describe(c));
  const std::vector<int64_t> cu = offsets(c.lens);
  const int64_t N = static_cast<int64_t>(c.lens.size()), T = cu.back(), NH = c.NH;
  const ref::Shape shape{1, NH, T, c.Dqk, c.Dv};
  const ref::Shape states_shape{N, NH, 1, c.Dqk, c.Dv};
  ref::Inputs in = ref::random_inputs(shape, seed, c.extreme);
  ref::Options opt;
  opt.variant = c.variant == Variant::Exp ? ref::Variant::Exp : ref::Variant::Sig;
  opt.normalize = c.normalize;
  ref::States st;
  if (c.init) st = ref::random_states(states_shape, opt.variant, seed + 7);
  std::vector<double> dh = ref::random_inputs({1, NH, T, c.Dv, c.Dv}, seed + 13).v;
  std::vector<double> dcl;
  if (c.dclast) dcl = ref::random_states(states_shape, opt.variant, seed + 21).C;
  for (auto* x : {&in.q, &in.k, &in.v, &dh}) test::encode(*x, c.dtype);
  for (auto* x : {&in.i, &in.f, &st.C, &st.n, &st.m, &dcl}) test::encode(*x, DType::FP32);

  const MlstmProblem p = problem_of(c, T);
  LaunchOptions o;
  if (c.chunk) o.config = {{"chunk", c.chunk}};
  if (c.engine >= 0) o.config["engine"] = c.engine;
  if (c.st_sm90 >= 0) o.config["st_sm90"] = c.st_sm90;
  const size_t eb = dtype_bytes(c.dtype);
  auto q = test::upload(in.q, c.dtype), k = test::upload(in.k, c.dtype), v = test::upload(in.v, c.dtype);
  auto dhd = test::upload(dh, c.dtype);
  auto ig = test::upload(in.i, DType::FP32), fg = test::upload(in.f, DType::FP32);
  const cli::DeviceBuffer cud = upload_offsets(cu, c.int64);
  cli::DeviceBuffer C0, n0, m0, dCl, saved_buf;
  if (c.init) {
    C0 = test::upload(st.C, DType::FP32);
    n0 = test::upload(st.n, DType::FP32);
    m0 = test::upload(st.m, DType::FP32);
  }
  if (c.dclast) dCl = test::upload(dcl, DType::FP32);
  auto h = test::poisoned(NH * T * c.Dv * eb), norm = test::poisoned(NH * T * 4), mo = test::poisoned(NH * T * 4);
  auto Cl = test::poisoned(N * NH * c.Dqk * c.Dv * 4), nl = test::poisoned(N * NH * c.Dqk * 4),
       ml = test::poisoned(N * NH * 4);
  ForwardTensors t;
  t.q = q.get(); t.k = k.get(); t.v = v.get(); t.i = ig.get(); t.f = fg.get(); t.h = h.get();
  t.norm = norm.as<float>(); t.m = mo.as<float>();
  t.cu_seqlens = cud.get();
  t.cu_seqlens_int64 = c.int64;
  if (c.init) { t.C0 = C0.as<float>(); t.n0 = n0.as<float>(); t.m0 = m0.as<float>(); }
  if (c.last) { t.C_last = Cl.as<float>(); t.n_last = nl.as<float>(); t.m_last = ml.as<float>(); }
  if (c.saved) {
    const size_t bytes = mlstm_saved_size(p, o.config);
    saved_buf = test::poisoned(bytes);
    t.saved = saved_buf.get();
    t.saved_bytes = bytes;
  }
  LaunchOptions fo = o;  // the forward's own keys on top
  if (c.fused >= 0) {
    fo.config["fused"] = c.fused;
    if (c.fused_bv) fo.config["fused_bv"] = c.fused_bv;
    CHECK(mlstm_forward_config(p, fo.config).at("fused") == c.fused);
    if (c.fused_bv) CHECK(mlstm_forward_config(p, fo.config).at("fused_bv") == c.fused_bv);
  }
  mlstm_forward(p, t, fo);
  cli::synchronize();
  // every token belongs to a sequence: h, norm and m fully written
  CHECK(test::count_poison_words(h) == 0);
  CHECK(test::count_poison_words(norm) == 0);

  const ref::ForwardResult r = ref::forward_varlen(shape, opt, in, cu, c.init ? &st : nullptr);
  const auto hd = test::download(h, c.dtype), normd = test::download(norm, DType::FP32),
             md = test::download(mo, DType::FP32);
  for (const auto* x : {&hd, &normd, &md}) CHECK(test::count_nonfinite(*x) == 0);
  // Extreme gates put most of |h|^2 into rows whose normalizer cancels to a small part of its
  // terms, where the kernels' fp32 gate sums move h (the sm90 fused test's long case, test_ops):
  // h and the gradients are held to 3e-2 there, and h must equal the plain path's, each
  // sequence run alone with the packed call's config, bit for bit.
  const double tol = c.dtype == DType::FP32 ? 1e-4 : c.extreme ? 3e-2 : 1e-2;
  if (c.extreme) {
    const Config cfg = mlstm_forward_config(p, fo.config);
    MlstmProblem one = p;
    one.B = 1;
    one.num_seqs = one.max_seqlen = 0;
    auto h1 = test::poisoned(NH * T * c.Dv * eb);
    LaunchOptions oo;
    oo.config = cfg;
    for (int64_t j = 0; j < N; ++j) {
      const int64_t t0 = cu[j];
      if (c.lens[j] == 0) continue;
      one.S = c.lens[j];
      ForwardTensors u;
      u.q = static_cast<const char*>(q.get()) + t0 * c.Dqk * eb;
      u.k = static_cast<const char*>(k.get()) + t0 * c.Dqk * eb;
      u.v = static_cast<const char*>(v.get()) + t0 * c.Dv * eb;
      u.i = ig.as<float>() + t0; u.f = fg.as<float>() + t0;
      u.h = static_cast<char*>(h1.get()) + t0 * c.Dv * eb;
      u.q_strides = u.k_strides = {NH * T * c.Dqk, T * c.Dqk, c.Dqk};
      u.v_strides = u.h_strides = {NH * T * c.Dv, T * c.Dv, c.Dv};
      u.i_strides = u.f_strides = {NH * T, T, 1};
      if (c.init) {
        const int64_t sj = j * NH;
        u.C0 = C0.as<float>() + sj * c.Dqk * c.Dv; u.n0 = n0.as<float>() + sj * c.Dqk; u.m0 = m0.as<float>() + sj;
      }
      mlstm_forward(one, u, oo);
    }
    cli::synchronize();
    CHECK(test::raw_bytes(h1) == test::raw_bytes(h));
  }
  const double e_h = ref::relative_error(hd, r.h), e_norm = ref::relative_error(normd, r.norm);
  CHECK(e_h < tol);
  CHECK(e_norm < tol);
  CHECK(ref::relative_error(md, r.m) < 1e-4);
  double e_C = 0;
  if (c.last) {
    const auto Cd = test::download(Cl, DType::FP32), nd = test::download(nl, DType::FP32),
               mld = test::download(ml, DType::FP32);
    for (const auto* x : {&Cd, &nd, &mld}) CHECK(test::count_nonfinite(*x) == 0);
    e_C = ref::relative_error(Cd, r.last.C);
    CHECK(e_C < tol);
    if (c.variant == Variant::Exp || c.normalize) CHECK(ref::relative_error(nd, r.last.n) < tol);
    CHECK(ref::relative_error(mld, r.last.m) < 1e-4);
  }
  std::printf("%-110s h %.2e norm %.2e C %.2e", describe(c).c_str(), e_h, e_norm, e_C);

  auto dq = test::poisoned(NH * T * c.Dqk * eb), dk = test::poisoned(NH * T * c.Dqk * eb),
       dv = test::poisoned(NH * T * c.Dv * eb);
  auto di = test::poisoned(NH * T * 4), df = test::poisoned(NH * T * 4);
  auto dC0 = test::poisoned(N * NH * c.Dqk * c.Dv * 4);
  BackwardTensors bt;
  bt.q = q.get(); bt.k = k.get(); bt.v = v.get(); bt.i = ig.get(); bt.f = fg.get(); bt.dh = dhd.get();
  bt.norm = norm.as<float>();
  bt.cu_seqlens = cud.get();
  bt.cu_seqlens_int64 = c.int64;
  if (c.init) { bt.C0 = C0.as<float>(); bt.n0 = n0.as<float>(); bt.m0 = m0.as<float>(); }
  bt.dC0 = dC0.as<float>();
  if (c.dclast) bt.dC_last = dCl.as<float>();
  bt.dq = dq.get(); bt.dk = dk.get(); bt.dv = dv.get(); bt.di = di.get(); bt.df = df.get();
  if (c.saved) { bt.saved = saved_buf.get(); bt.saved_bytes = saved_buf.bytes(); }
  LaunchOptions bo = o;  // the backward's own keys on top
  if (c.tl_dkv >= 0) {
    bo.config["tl_dkv"] = c.tl_dkv;
    CHECK(mlstm_backward_config(p, bo.config).at("tl_dkv") == c.tl_dkv);
  }
  mlstm_backward(p, bt, bo);
  cli::synchronize();
  for (const auto* b : {&dq, &dk, &dv, &di, &df, &dC0}) CHECK(test::count_poison_words(*b) == 0);
  {  // a second backward into fresh poisoned buffers, with a poisoned caller workspace (nothing
     // may read workspace that this call did not write), repeats the first bit for bit
    auto dq2 = test::poisoned(dq.bytes()), dk2 = test::poisoned(dk.bytes()), dv2 = test::poisoned(dv.bytes());
    auto di2 = test::poisoned(di.bytes()), df2 = test::poisoned(df.bytes()), dC02 = test::poisoned(dC0.bytes());
    BackwardTensors b2 = bt;
    b2.dq = dq2.get(); b2.dk = dk2.get(); b2.dv = dv2.get(); b2.di = di2.get(); b2.df = df2.get();
    b2.dC0 = dC02.as<float>();
    LaunchOptions bo2 = bo;
    size_t ws_bytes = mlstm_backward_workspace_size(p, bo.config, c.saved);
    if (c.saved) {  // the backward runs at the chunk the forward recorded in the buffer
      Config at_fwd_chunk = bo.config;
      at_fwd_chunk["chunk"] = mlstm_forward_config(p, fo.config).at("chunk");
      ws_bytes = std::max(ws_bytes, mlstm_backward_workspace_size(p, at_fwd_chunk, true));
    }
    auto ws = test::poisoned(std::max<size_t>(ws_bytes, 4));
    bo2.workspace = ws.get();
    bo2.workspace_bytes = ws_bytes;
    mlstm_backward(p, b2, bo2);
    cli::synchronize();
    CHECK(test::raw_bytes(dq2) == test::raw_bytes(dq));
    CHECK(test::raw_bytes(dk2) == test::raw_bytes(dk));
    CHECK(test::raw_bytes(dv2) == test::raw_bytes(dv));
    CHECK(test::raw_bytes(di2) == test::raw_bytes(di));
    CHECK(test::raw_bytes(df2) == test::raw_bytes(df));
    CHECK(test::raw_bytes(dC02) == test::raw_bytes(dC0));
  }

  const ref::BackwardResult g =
      ref::backward_varlen(shape, opt, in, cu, c.init ? &st : nullptr, dh, c.dclast ? &dcl : nullptr);
  const auto dqd = test::download(dq, c.dtype), dkd = test::download(dk, c.dtype), dvd = test::download(dv, c.dtype);
  const auto did = test::download(di, DType::FP32), dfd = test::download(df, DType::FP32),
             dC0d = test::download(dC0, DType::FP32);
  for (const auto* x : {&dqd, &dkd, &dvd, &did, &dfd, &dC0d}) CHECK(test::count_nonfinite(*x) == 0);
  const double gtol = c.dtype == DType::FP32 ? 1e-4 : c.extreme ? 3e-2 : 2e-2;
  const double e_q = ref::relative_error(dqd, g.dq), e_k = ref::relative_error(dkd, g.dk),
               e_v = ref::relative_error(dvd, g.dv), e_i = ref::relative_error(did, g.di),
               e_f_plain = ref::relative_error(dfd, g.df), e_C0 = ref::relative_error(dC0d, g.d_initial.C);
  // df judged per sequence against the size of its summed terms (df_conditioned_error)
  double e_f = 0;
  for (int64_t j = 0; j < N; ++j) {
    const int64_t t0 = cu[j], t1 = cu[j + 1];
    if (t1 == t0) continue;
    const ref::Shape one{1, NH, t1 - t0, c.Dqk, c.Dv};
    const ref::Inputs ij{cut(in.q, NH, T, c.Dqk, t0, t1), cut(in.k, NH, T, c.Dqk, t0, t1),
                         cut(in.v, NH, T, c.Dv, t0, t1), cut(in.i, NH, T, 1, t0, t1), cut(in.f, NH, T, 1, t0, t1)};
    ref::BackwardResult gj;
    gj.dq = cut(g.dq, NH, T, c.Dqk, t0, t1);
    gj.dk = cut(g.dk, NH, T, c.Dqk, t0, t1);
    gj.df = cut(g.df, NH, T, 1, t0, t1);
    e_f = std::max(e_f, ref::df_conditioned_error(one, ij, cut(dfd, NH, T, 1, t0, t1), gj));
  }
  std::printf(" | dq %.2e dk %.2e dv %.2e di %.2e df %.2e (plain %.2e) dC0 %.2e\n", e_q, e_k, e_v, e_i, e_f,
              e_f_plain, e_C0);
  CHECK(e_q < gtol);
  CHECK(e_k < gtol);
  CHECK(e_v < gtol);
  CHECK(e_i < gtol);
  CHECK(e_f < gtol);
  if (!c.extreme) CHECK(e_f_plain < 2.5 * gtol);
  CHECK(e_C0 < gtol);
}

constexpr Variant E = Variant::Exp, G = Variant::Sig;
constexpr DType bf = DType::BF16, hf = DType::FP16, f32 = DType::FP32;

}  // namespace

TEST_CASE("packed sequences match the float64 reference run sequence by sequence", "[gpu][varlen]") {
  // lengths: empty sequences, one token, shorter than a chunk, a chunk exactly, a chunk plus one,
  // several chunks with a tail
  const std::vector<int64_t> mixed{37, 0, 1, 64, 65, 200, 0, 130, 3};
  std::vector<VCase> cases;
  for (Variant var : {E, G})
    for (DType dt : {bf, f32}) {
      VCase c;
      c.variant = var;
      c.dtype = dt;
      c.lens = mixed;
      cases.push_back(c);
      c.init = c.last = c.dclast = true;
      cases.push_back(c);
      c.chunk = 128;
      c.int64 = true;
      cases.push_back(c);
      c.engine = 0;  // both engines pinned where the library's choice is the other's
      cases.push_back(c);
      if (dt != f32) {  // the sm90 backward takes Dqk 128 or 256; dK and dV apart and in one kernel
        c.engine = 1;
        c.chunk = 256;
        c.Dqk = c.Dv = 128;
        c.tl_dkv = 0;
        cases.push_back(c);
        c.tl_dkv = 1;
        cases.push_back(c);
        c.fused = 0;  // the three-kernel forward, both state walks on the engine
        c.st_sm90 = 1;
        cases.push_back(c);
      }
    }
  {
    VCase c;  // Dqk != Dv, fp16, mLSTMsig without normalization, a looser max_seqlen
    c.variant = G;
    c.normalize = false;
    c.dtype = hf;
    c.Dqk = 128;
    c.Dv = 256;
    c.NH = 3;
    c.lens = {300, 17, 0, 129};
    c.init = c.last = c.dclast = true;
    c.max_extra = 100;
    cases.push_back(c);
    c.engine = 0;
    cases.push_back(c);
    c.variant = E;  // the paper's head dims on both engines
    c.normalize = true;
    c.dtype = bf;
    c.Dqk = 256;
    c.Dv = 512;
    c.NH = 2;
    c.lens = {513, 0, 130, 64, 1};
    c.max_extra = 0;
    c.engine = -1;
    cases.push_back(c);
    c.engine = 0;
    cases.push_back(c);
    c.engine = 1;  // the fused sm90 forward, alone and filling a saved buffer
    c.fused = 1;
    cases.push_back(c);
    c.saved = true;
    cases.push_back(c);
    c.chunk = 128;
    c.variant = G;
    cases.push_back(c);
    c.saved = false;  // the sm90 state walk in the forward and in the backward's recompute
    c.fused = 0;
    c.st_sm90 = 1;
    cases.push_back(c);
    c.st_sm90 = -1;  // the fused walk in 256-column CTAs (Dqk 128), alone and filling a saved buffer
    c.Dqk = 128;
    c.Dv = 256;
    c.chunk = 0;
    c.fused = 1;
    c.fused_bv = 256;
    cases.push_back(c);
    c.saved = true;
    c.variant = E;
    cases.push_back(c);
  }
  {
    VCase c;  // extreme gates, a saved-states buffer
    c.extreme = true;
    c.lens = {250, 64, 1, 90};
    c.init = c.last = c.dclast = c.saved = true;
    cases.push_back(c);
    c.variant = G;
    c.extreme = false;
    c.chunk = 64;
    cases.push_back(c);
  }
  {
    VCase c;  // one sequence, and only empty sequences but one
    c.lens = {333};
    c.init = c.last = true;
    cases.push_back(c);
    c.lens = {0, 0, 5, 0};
    cases.push_back(c);
  }
  uint64_t seed = 1000;
  for (const VCase& c : cases) run_case(c, seed++);
}

TEST_CASE("random packings of lengths 1..3000 match the reference (run under compute-sanitizer: [varlen_small])",
          "[gpu][varlen][varlen_random]") {
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  for (int rep = 0; rep < 4; ++rep) {
    VCase c;
    c.variant = rep % 2 ? G : E;
    c.dtype = rep < 2 ? bf : hf;
    c.Dqk = 128;
    c.Dv = 128;
    c.NH = 2;
    const int n = 3 + static_cast<int>(next() % 5);
    for (int j = 0; j < n; ++j) c.lens.push_back(1 + static_cast<int64_t>(next() % 3000));
    c.init = c.last = c.dclast = true;
    run_case(c, 2000 + rep);
  }
}

// Packed calls of the library's own choosing over random head sizes (any the API accepts),
// packings (1 to 8 sequences of 0 to 2000 tokens) and settings; the draw follows Catch's
// --rng-seed.
TEST_CASE("packed calls over random shapes and settings match the reference", "[gpu][varlen][varlen_random]") {
  const uint64_t base = static_cast<uint64_t>(Catch::rngSeed());
  INFO("rng seed " << base);
  test::Draw d(base);
  const DType dts[] = {bf, hf, f32};
  for (int rep = 0; rep < 8; ++rep) {  // (each new head size compiles its kernels)
    VCase c;
    c.variant = d.below(2) ? E : G;
    c.normalize = c.variant == E || !d.one_in(3);
    c.dtype = dts[d.below(3)];
    c.NH = d.in(1, 3);
    c.Dqk = d.head_dim();
    c.Dv = d.head_dim();
    // the reference's cost bounds the tokens
    const int64_t cap = std::max<int64_t>(1, std::min<int64_t>(2000, 300'000'000 / (c.NH * c.Dqk * c.Dv)));
    const int64_t n = d.in(1, 8);
    for (int64_t j = 0; j < n; ++j) c.lens.push_back(d.one_in(8) ? 0 : d.in(1, cap));
    if (*std::max_element(c.lens.begin(), c.lens.end()) == 0) c.lens[0] = 1;
    c.init = d.one_in(2);
    c.last = d.one_in(2);
    c.dclast = d.one_in(3);
    c.int64 = d.one_in(2);
    c.saved = d.one_in(3);
    if (d.one_in(3)) c.max_extra = d.in(1, 100);
    run_case(c, base * 7919 + static_cast<uint64_t>(rep));
  }
}

TEST_CASE("packed sequences on a small shape (run under compute-sanitizer)", "[gpu][varlen_small]") {
  for (Variant var : {E, G}) {
    VCase c;
    c.variant = var;
    c.lens = {70, 0, 1, 20};
    c.init = c.last = c.dclast = true;
    run_case(c, 3000);
    c.int64 = true;
    c.saved = true;
    c.chunk = 64;
    run_case(c, 3001);
    c.engine = 0;
    run_case(c, 3002);
    // the sm90 output and gradient tile kernels (dK and dV apart), then the fused sm90 forward
    // (filling the saved buffer at chunk 128) and dK and dV in one kernel
    c.engine = 1;
    c.chunk = 128;
    c.Dqk = 128;
    c.Dv = 256;
    c.lens = {150, 0, 1, 40};
    c.fused = 0;
    c.tl_dkv = 0;
    c.st_sm90 = 1;
    run_case(c, 3003);
    c.fused = 1;
    c.tl_dkv = 1;
    c.st_sm90 = -1;
    run_case(c, 3004);
    c.saved = false;
    c.lens = {64, 0, 1, 129, 40};
    run_case(c, 3005);
    // many short sequences: more key tiles than CTAs, so the persistent kernels carry their rings
    // and barriers from one tile to the next and skip gaps between real tiles
    c.lens.clear();
    for (int j = 0; j < 48; ++j) c.lens.push_back(1 + (37 * j) % 90);
    c.lens[5] = 0;
    run_case(c, 3006);
  }
}

// Offsets that break cu_seqlens' rules (decreasing, past T, a first offset above 0) are not
// read on the host; the kernels clamp them, so every engine's forward and backward stay inside
// the tensors and the workspace (compute-sanitizer memcheck checks that on [varlen_small]).
TEST_CASE("offsets that break cu_seqlens' rules stay inside the tensors", "[gpu][varlen][varlen_small]") {
  const int64_t T = 400, NH = 2, D = 128, Dv = 256;
  const std::vector<int64_t> bad{7, 300, 100, 5000, 390, -20, 400};
  const int64_t N = static_cast<int64_t>(bad.size()) - 1;
  MlstmProblem p;
  p.B = 1; p.NH = NH; p.S = T; p.Dqk = D; p.Dv = Dv;
  p.num_seqs = N;
  p.max_seqlen = 300;
  ref::Inputs in = ref::random_inputs({1, NH, T, D, Dv}, 5100);
  for (auto* x : {&in.q, &in.k, &in.v}) test::encode(*x, bf);
  auto q = test::upload(in.q, bf), k = test::upload(in.k, bf), v = test::upload(in.v, bf);
  auto ig = test::upload(in.i, f32), fg = test::upload(in.f, f32), dh = test::upload(in.v, bf);
  const cli::DeviceBuffer cud = upload_offsets(bad, true);
  for (const Config& cfg : std::vector<Config>{{{"engine", 0}},
                                                {{"engine", 1}, {"fused", 0}, {"st_sm90", 0}},
                                                {{"engine", 1}, {"fused", 0}, {"st_sm90", 1}},
                                                {{"engine", 1}, {"fused", 1}}}) {
    INFO(to_string(cfg));
    auto h = test::poisoned(NH * T * Dv * 2), norm = test::poisoned(NH * T * 4);
    auto Cl = test::poisoned(N * NH * D * Dv * 4);
    ForwardTensors t;
    t.q = q.get(); t.k = k.get(); t.v = v.get(); t.i = ig.get(); t.f = fg.get(); t.h = h.get();
    t.norm = norm.as<float>();
    t.C_last = Cl.as<float>();
    t.cu_seqlens = cud.get();
    t.cu_seqlens_int64 = true;
    LaunchOptions o;
    o.config = cfg;
    mlstm_forward(p, t, o);
    Config bcfg = cfg;
    bcfg.erase("fused");
    if (cfg.at("engine") == 1) bcfg["tl_dkv"] = cfg.at("fused");  // dK and dV apart, then in one kernel
    auto dq = test::poisoned(NH * T * D * 2), dk = test::poisoned(NH * T * D * 2), dv = test::poisoned(NH * T * Dv * 2);
    auto di = test::poisoned(NH * T * 4), df = test::poisoned(NH * T * 4);
    BackwardTensors bt;
    bt.q = q.get(); bt.k = k.get(); bt.v = v.get(); bt.i = ig.get(); bt.f = fg.get(); bt.dh = dh.get();
    bt.norm = norm.as<float>();
    bt.dq = dq.get(); bt.dk = dk.get(); bt.dv = dv.get(); bt.di = di.get(); bt.df = df.get();
    bt.cu_seqlens = cud.get();
    bt.cu_seqlens_int64 = true;
    LaunchOptions bo;
    bo.config = bcfg;
    mlstm_backward(p, bt, bo);
    cli::synchronize();
  }
}

TEST_CASE("a packed call equals its sequences run one by one, bit for bit", "[gpu][varlen]") {
  // the library's config, then the fused sm90 forward pinned; a second packed call repeats the
  // first bit for bit
  for (int fused : {-1, 1})
  for (Variant var : {E, G}) {
    VCase c;
    c.variant = var;
    c.fused = fused;
    c.NH = 2;
    c.Dqk = 64;
    c.Dv = 128;
    c.lens = {190, 1, 64, 77, 0, 256};
    const std::vector<int64_t> cu = offsets(c.lens);
    const int64_t N = static_cast<int64_t>(c.lens.size()), T = cu.back(), NH = c.NH;
    INFO(describe(c));
    ref::Inputs in = ref::random_inputs({1, NH, T, c.Dqk, c.Dv}, 4000);
    ref::States st = ref::random_states({N, NH, 1, c.Dqk, c.Dv}, var == E ? ref::Variant::Exp : ref::Variant::Sig, 4001);
    const MlstmProblem p = problem_of(c, T);
    Config pinned;
    if (fused == 1) pinned = {{"engine", 1}, {"fused", 1}};
    const Config cfg = mlstm_forward_config(p, pinned);
    CHECK(cfg.at("parallel") == 0);
    if (fused == 1) CHECK(cfg.at("fused") == 1);
    auto q = test::upload(in.q, bf), k = test::upload(in.k, bf), v = test::upload(in.v, bf);
    auto ig = test::upload(in.i, f32), fg = test::upload(in.f, f32);
    auto C0 = test::upload(st.C, f32), n0 = test::upload(st.n, f32), m0 = test::upload(st.m, f32);
    const cli::DeviceBuffer cud = upload_offsets(cu, false);
    auto h = test::poisoned(NH * T * c.Dv * 2);
    auto Cl = test::poisoned(N * NH * c.Dqk * c.Dv * 4);
    ForwardTensors t;
    t.q = q.get(); t.k = k.get(); t.v = v.get(); t.i = ig.get(); t.f = fg.get(); t.h = h.get();
    t.C0 = C0.as<float>(); t.n0 = n0.as<float>(); t.m0 = m0.as<float>();
    t.C_last = Cl.as<float>();
    t.cu_seqlens = cud.get();
    LaunchOptions po;
    po.config = pinned;
    mlstm_forward(p, t, po);
    cli::synchronize();
    const auto packed_h = test::raw_bytes(h), packed_C = test::raw_bytes(Cl);
    mlstm_forward(p, t, po);
    cli::synchronize();
    CHECK(test::raw_bytes(h) == packed_h);
    CHECK(test::raw_bytes(Cl) == packed_C);

    // each sequence alone: the same tokens through strides into the packed buffers
    MlstmProblem one = p;
    one.num_seqs = one.max_seqlen = 0;
    auto h1 = test::poisoned(NH * T * c.Dv * 2);
    auto Cl1 = test::poisoned(N * NH * c.Dqk * c.Dv * 4);
    LaunchOptions o;
    o.config = cfg;
    for (int64_t j = 0; j < N; ++j) {
      const int64_t t0 = cu[j], len = c.lens[j];
      if (len == 0) continue;  // (the C++ API takes S >= 1; the packed call's empty sequence is checked below)
      one.S = len;
      ForwardTensors u;
      u.q = q.as<uint16_t>() + t0 * c.Dqk; u.k = k.as<uint16_t>() + t0 * c.Dqk; u.v = v.as<uint16_t>() + t0 * c.Dv;
      u.i = ig.as<float>() + t0; u.f = fg.as<float>() + t0;
      u.h = h1.as<uint16_t>() + t0 * c.Dv;
      u.q_strides = u.k_strides = {NH * T * c.Dqk, T * c.Dqk, c.Dqk};
      u.v_strides = u.h_strides = {NH * T * c.Dv, T * c.Dv, c.Dv};
      u.i_strides = u.f_strides = {NH * T, T, 1};
      const int64_t s = j * NH;
      u.C0 = C0.as<float>() + s * c.Dqk * c.Dv; u.n0 = n0.as<float>() + s * c.Dqk; u.m0 = m0.as<float>() + s;
      u.C_last = Cl1.as<float>() + s * c.Dqk * c.Dv;
      mlstm_forward(one, u, o);
    }
    cli::synchronize();
    const auto alone_h = test::raw_bytes(h1), alone_C = test::raw_bytes(Cl1);
    CHECK(packed_h == alone_h);
    // the empty sequence's last state is its initial state; the others' equal the one-by-one runs
    for (int64_t j = 0; j < N; ++j) {
      const size_t per = static_cast<size_t>(NH * c.Dqk * c.Dv * 4), at = static_cast<size_t>(j) * per;
      const std::vector<uint8_t> got(packed_C.begin() + at, packed_C.begin() + at + per);
      if (c.lens[j] == 0) {
        std::vector<uint8_t> init(per);
        std::memcpy(init.data(), test::raw_bytes(C0).data() + at, per);
        CHECK(got == init);
      } else {
        CHECK(got == std::vector<uint8_t>(alone_C.begin() + at, alone_C.begin() + at + per));
      }
    }
  }
}

// After the first packing, none compiles a kernel, looks up a cubin or queries the tuned-config
// cache: the key is the model's dims and the length bucket, never the token count.
TEST_CASE("new packings of the same model compile nothing and keep their config", "[gpu][varlen]") {
  VCase c;
  c.Dqk = 64;
  c.Dv = 64;
  c.NH = 2;
  uint64_t state = 12345;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return state >> 33;
  };
  uint64_t compiles_after_first = 0, cubins_after_first = 0, tuned_after_first = 0;
  Config first_cfg;
  for (int rep = 0; rep < 50; ++rep) {
    c.lens.clear();
    const int n = 2 + static_cast<int>(next() % 9);
    for (int j = 0; j < n; ++j) c.lens.push_back(static_cast<int64_t>(next() % 180));
    c.lens[0] = 180;  // the bound every packing shares, as a training loop's fixed maximum length
    const std::vector<int64_t> cu = offsets(c.lens);
    const int64_t T = cu.back();
    const MlstmProblem p = problem_of(c, T);
    REQUIRE(p.max_seqlen == 180);
    const Config cfg = mlstm_forward_config(p);
    if (rep == 0) first_cfg = cfg;
    CHECK(cfg == first_cfg);
    ref::Inputs in = ref::random_inputs({1, c.NH, T, c.Dqk, c.Dv}, 5000 + rep);
    auto q = test::upload(in.q, bf), k = test::upload(in.k, bf), v = test::upload(in.v, bf);
    auto ig = test::upload(in.i, f32), fg = test::upload(in.f, f32);
    const cli::DeviceBuffer cud = upload_offsets(cu, false);
    auto h = test::poisoned(c.NH * T * c.Dv * 2), norm = test::poisoned(c.NH * T * 4);
    ForwardTensors t;
    t.q = q.get(); t.k = k.get(); t.v = v.get(); t.i = ig.get(); t.f = fg.get(); t.h = h.get();
    t.norm = norm.as<float>();
    t.cu_seqlens = cud.get();
    mlstm_forward(p, t, {});
    auto dh = test::upload(in.v, bf);
    auto dq = test::poisoned(c.NH * T * c.Dqk * 2), dk = test::poisoned(c.NH * T * c.Dqk * 2),
         dv = test::poisoned(c.NH * T * c.Dv * 2), di = test::poisoned(c.NH * T * 4), df = test::poisoned(c.NH * T * 4);
    BackwardTensors bt;
    bt.q = q.get(); bt.k = k.get(); bt.v = v.get(); bt.i = ig.get(); bt.f = fg.get(); bt.dh = dh.get();
    bt.norm = norm.as<float>();
    bt.dq = dq.get(); bt.dk = dk.get(); bt.dv = dv.get(); bt.di = di.get(); bt.df = df.get();
    bt.cu_seqlens = cud.get();
    mlstm_backward(p, bt, {});
    cli::synchronize();
    CHECK(test::count_poison_words(h) == 0);
    CHECK(test::count_poison_words(dq) == 0);
    if (rep == 0) {
      compiles_after_first = rt::nvrtc_compile_count();
      cubins_after_first = store::cubin_lookup_count();
      tuned_after_first = ops::tuned_lookup_count();
    }
  }
  CHECK(rt::nvrtc_compile_count() == compiles_after_first);
  CHECK(store::cubin_lookup_count() == cubins_after_first);
  CHECK(ops::tuned_lookup_count() == tuned_after_first);
  // the counter counts: a plain call of a shape this process has not seen queries the cache
  if (store::CubinStore::process().cache() && util::env_flag("TFLA_TUNED", true)) {
    MlstmProblem plain = problem_of(c, 4321);
    plain.num_seqs = plain.max_seqlen = 0;
    mlstm_forward_config(plain);
    CHECK(ops::tuned_lookup_count() == tuned_after_first + 1);
  }
}
