// GPU recurrent step (single token and fused multi-step) vs the float64 reference step, on fresh
// random inputs rounded to the kernel's dtype, with poisoned h; and the prefill-to-generate
// handoff: mlstm_forward over S1 tokens, then S2 tokens by single steps and by one fused call,
// against mlstm_forward over S1 + S2 and the float64 reference.
#include "tfla_catch.hpp"
#include <cstdio>
#include <string>

#include "gpu_test_util.hpp"
#include "ops/mlstm_step.hpp"
#include "reference/reference.hpp"
#include "runtime/kernel.hpp"

using namespace tfla;
namespace ref = tfla::reference;

namespace {

struct Case {
  Variant variant;
  bool normalize;
  DType dtype;
  DType gate_dtype;
  int64_t B, NH, T, Dqk, Dv;
  bool init;     // random initial states (else zero)
  bool extreme;  // extreme gates
  Config config;  // pinned step config; empty = the library's choice
  bool sig_m = true;  // mLSTMsig: pass an m buffer (poisoned: it must come back 0)
};

std::string describe(const Case& c) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%s%s %s gates %s B=%lld NH=%lld T=%lld Dqk=%lld Dv=%lld%s%s%s",
                to_string(c.variant), c.variant == Variant::Sig && !c.normalize ? "(no norm)" : "",
                to_string(c.dtype), to_string(c.gate_dtype), (long long)c.B, (long long)c.NH,
                (long long)c.T, (long long)c.Dqk, (long long)c.Dv, c.init ? " init" : "",
                c.extreme ? " extreme" : "", c.variant == Variant::Sig && !c.sig_m ? " m=null" : "");
  return std::string(buf) + (c.config.empty() ? "" : " config " + to_string(c.config));
}

ref::Options options_of(Variant v, bool normalize) {
  ref::Options o;
  o.variant = v == Variant::Exp ? ref::Variant::Exp : ref::Variant::Sig;
  o.normalize = normalize;
  return o;
}

MlstmProblem problem_of(const Case& c) {
  MlstmProblem p;
  p.B = c.B; p.NH = c.NH; p.S = c.T; p.Dqk = c.Dqk; p.Dv = c.Dv;
  p.dtype = c.dtype;
  p.gate_dtype = c.gate_dtype;
  p.variant = c.variant;
  p.normalize = c.normalize;
  return p;
}

// Tokens [t0, t0 + len) of a (B, NH, S, D) tensor (D = 1 for gates), contiguous.
std::vector<double> tokens(const std::vector<double>& x, int64_t BH, int64_t S, int64_t D, int64_t t0,
                           int64_t len) {
  std::vector<double> y(static_cast<size_t>(BH * len * D));
  for (int64_t bh = 0; bh < BH; ++bh)
    for (int64_t t = 0; t < len; ++t)
      for (int64_t d = 0; d < D; ++d) y[(bh * len + t) * D + d] = x[(bh * S + t0 + t) * D + d];
  return y;
}

// The float64 reference of T steps: ref::step token by token from `init`.
struct RefSteps {
  std::vector<double> h;  // (B, NH, T, Dv)
  ref::States last;
};
RefSteps reference_steps(const ref::Shape& shape, const ref::Options& opt, const ref::Inputs& in,
                         const ref::States& init) {
  const int64_t BH = shape.B * shape.NH, T = shape.S;
  RefSteps out;
  out.h.assign(static_cast<size_t>(BH * T * shape.Dv), 0.0);
  ref::States st = init;
  for (int64_t t = 0; t < T; ++t) {
    const ref::StepResult r =
        ref::step(shape, opt, tokens(in.q, BH, T, shape.Dqk, t, 1), tokens(in.k, BH, T, shape.Dqk, t, 1),
                  tokens(in.v, BH, T, shape.Dv, t, 1), tokens(in.i, BH, T, 1, t, 1), tokens(in.f, BH, T, 1, t, 1), st);
    for (int64_t bh = 0; bh < BH; ++bh)
      for (int64_t e = 0; e < shape.Dv; ++e) out.h[(bh * T + t) * shape.Dv + e] = r.h[bh * shape.Dv + e];
    st = r.state;
  }
  out.last = st;
  return out;
}

void run_case(const Case& c, uint64_t seed) {
  INFO(describe(c));
  const ref::Shape shape{c.B, c.NH, c.T, c.Dqk, c.Dv};
  ref::Inputs in = ref::random_inputs(shape, seed, c.extreme);
  const ref::Options opt = options_of(c.variant, c.normalize);
  ref::States init;
  if (c.init) init = ref::random_states(shape, opt.variant, seed + 7);
  else init = {std::vector<double>(c.B * c.NH * c.Dqk * c.Dv, 0.0), std::vector<double>(c.B * c.NH * c.Dqk, 0.0),
               std::vector<double>(c.B * c.NH, 0.0)};
  if (init.m.empty()) init.m.assign(c.B * c.NH, 0.0);
  const MlstmProblem p = problem_of(c);

  auto q = test::upload(in.q, c.dtype);
  auto k = test::upload(in.k, c.dtype);
  auto v = test::upload(in.v, c.dtype);
  auto ig = test::upload(in.i, c.gate_dtype);
  auto fg = test::upload(in.f, c.gate_dtype);
  auto h = test::poisoned(c.B * c.NH * c.T * c.Dv * dtype_bytes(c.dtype));
  auto C = test::upload(init.C, DType::FP32);
  auto n = test::upload(init.n, DType::FP32);
  const bool sig = c.variant == Variant::Sig;
  // mLSTMsig ignores m on input and keeps it 0: hand it NaNs to prove both.
  cli::DeviceBuffer m = sig ? test::poisoned(c.B * c.NH * 4) : test::upload(init.m, DType::FP32);
  StepTensors t;
  t.q = q.get(); t.k = k.get(); t.v = v.get(); t.i = ig.get(); t.f = fg.get(); t.h = h.get();
  t.C = C.as<float>(); t.n = n.as<float>();
  t.m = (sig && !c.sig_m) ? nullptr : m.as<float>();
  LaunchOptions o;
  o.config = c.config;
  mlstm_step(p, t, o);

  // The same step from source states into poisoned new ones (C_src, n_src, m_src): it must give
  // the in-place result bit for bit and leave the sources as they were. mLSTMsig reads no m:
  // its m_src holds NaNs.
  auto C_src = test::upload(init.C, DType::FP32);
  auto n_src = test::upload(init.n, DType::FP32);
  cli::DeviceBuffer m_src = sig ? test::poisoned(c.B * c.NH * 4) : test::upload(init.m, DType::FP32);
  const std::vector<uint8_t> C_src0 = test::raw_bytes(C_src), n_src0 = test::raw_bytes(n_src),
                             m_src0 = test::raw_bytes(m_src);
  auto h_new = test::poisoned(h.bytes());
  auto C_new = test::poisoned(C.bytes()), n_new = test::poisoned(n.bytes()), m_new = test::poisoned(m.bytes());
  StepTensors tn = t;
  tn.h = h_new.get();
  tn.C = C_new.as<float>();
  tn.n = n_new.as<float>();
  tn.m = t.m ? m_new.as<float>() : nullptr;
  tn.C_src = C_src.as<float>();
  tn.n_src = n_src.as<float>();
  tn.m_src = m_src.as<float>();
  mlstm_step(p, tn, o);
  cli::synchronize();
  {
    INFO("out of place (C_src, n_src, m_src) against in place");
    CHECK(test::raw_bytes(h_new) == test::raw_bytes(h));
    CHECK(test::raw_bytes(C_new) == test::raw_bytes(C));
    CHECK(test::raw_bytes(n_new) == test::raw_bytes(n));
    if (t.m) CHECK(test::raw_bytes(m_new) == test::raw_bytes(m));
    else CHECK(test::count_poison_words(m_new) == m_new.bytes() / 4);  // m = null: nothing written
    CHECK(test::raw_bytes(C_src) == C_src0);
    CHECK(test::raw_bytes(n_src) == n_src0);
    CHECK(test::raw_bytes(m_src) == m_src0);
  }

  // In place again with cluster = 0: two launches (n and m by the dependent kernel) where the
  // call above may have run as one cluster launch; the results must be the same bits.
  {
    INFO("in place with cluster = 0 against the library's choice");
    auto h2 = test::poisoned(h.bytes());
    auto C2 = test::upload(init.C, DType::FP32);
    auto n2 = test::upload(init.n, DType::FP32);
    cli::DeviceBuffer m2 = sig ? test::poisoned(c.B * c.NH * 4) : test::upload(init.m, DType::FP32);
    StepTensors t2 = t;
    t2.h = h2.get();
    t2.C = C2.as<float>();
    t2.n = n2.as<float>();
    t2.m = t.m ? m2.as<float>() : nullptr;
    LaunchOptions o2 = o;
    o2.config["cluster"] = 0;
    mlstm_step(p, t2, o2);
    cli::synchronize();
    CHECK(test::raw_bytes(h2) == test::raw_bytes(h));
    CHECK(test::raw_bytes(C2) == test::raw_bytes(C));
    CHECK(test::raw_bytes(n2) == test::raw_bytes(n));
    if (t.m) CHECK(test::raw_bytes(m2) == test::raw_bytes(m));
  }

  const RefSteps r = reference_steps(shape, opt, in, init);
  const auto hd = test::download(h, c.dtype);
  const auto Cd = test::download(C, DType::FP32);
  const auto nd = test::download(n, DType::FP32);
  const auto md = test::download(m, DType::FP32);
  CHECK(test::count_nonfinite(hd) == 0);
  CHECK(test::count_nonfinite(Cd) == 0);
  CHECK(test::count_nonfinite(nd) == 0);
  const double tol_h = c.dtype == DType::FP32 ? 1e-4 : 1e-2;
  const double e_h = ref::relative_error(hd, r.h);
  const double e_C = ref::relative_error(Cd, r.last.C);
  const double e_n = ref::relative_error(nd, r.last.n);
  std::printf("%-100s h %.2e C %.2e n %.2e", describe(c).c_str(), e_h, e_C, e_n);
  CHECK(e_h < tol_h);
  CHECK(e_C < 1e-4);  // fp32 state from inputs the reference sees exactly
  CHECK(e_n < 1e-4);
  if (!sig || c.sig_m) {
    CHECK(test::count_nonfinite(md) == 0);
    const double e_m = ref::relative_error(md, r.last.m);
    std::printf(" m %.2e", e_m);
    if (sig) CHECK(ref::relative_error(md, std::vector<double>(md.size(), 0.0)) == 0.0);
    else CHECK(e_m < 1e-5);
  }
  std::printf("\n");
}

// Prefill S1 tokens with mlstm_forward, then S2 tokens by S2 single steps and, separately, by
// one fused call (T = S2); both must equal mlstm_forward over S1 + S2 and the reference.
void run_prefill(Variant variant, bool normalize, DType dt, int64_t B, int64_t NH, int64_t S1, int64_t S2,
                 int64_t Dqk, int64_t Dv, uint64_t seed) {
  const int64_t S = S1 + S2, BH = B * NH;
  char what[200];
  std::snprintf(what, sizeof(what), "prefill %s%s %s B=%lld NH=%lld S1=%lld S2=%lld Dqk=%lld Dv=%lld",
                to_string(variant), variant == Variant::Sig && !normalize ? "(no norm)" : "", to_string(dt),
                (long long)B, (long long)NH, (long long)S1, (long long)S2, (long long)Dqk, (long long)Dv);
  INFO(what);
  const ref::Shape shape{B, NH, S, Dqk, Dv};
  ref::Inputs in = ref::random_inputs(shape, seed);
  const ref::Options opt = options_of(variant, normalize);
  for (auto* x : {&in.q, &in.k, &in.v}) test::encode(*x, dt);
  for (auto* x : {&in.i, &in.f}) test::encode(*x, DType::FP32);
  const ref::ForwardResult want = ref::forward_recurrent(shape, opt, in, nullptr);
  const size_t eb = dtype_bytes(dt);

  MlstmProblem p;
  p.B = B; p.NH = NH; p.Dqk = Dqk; p.Dv = Dv;
  p.dtype = dt;
  p.gate_dtype = DType::FP32;
  p.variant = variant;
  p.normalize = normalize;

  // The whole sequence through the chunkwise forward.
  auto qa = test::upload(in.q, dt), ka = test::upload(in.k, dt), va = test::upload(in.v, dt);
  auto ia = test::upload(in.i, DType::FP32), fa = test::upload(in.f, DType::FP32);
  auto ha = test::poisoned(BH * S * Dv * eb);
  auto Ca = test::poisoned(BH * Dqk * Dv * 4), na = test::poisoned(BH * Dqk * 4), ma = test::poisoned(BH * 4);
  {
    MlstmProblem pa = p;
    pa.S = S;
    ForwardTensors t;
    t.q = qa.get(); t.k = ka.get(); t.v = va.get(); t.i = ia.get(); t.f = fa.get(); t.h = ha.get();
    t.C_last = Ca.as<float>(); t.n_last = na.as<float>(); t.m_last = ma.as<float>();
    mlstm_forward(pa, t);
  }
  // The prefill: the first S1 tokens, states into (C, n, m); two copies for the two step paths.
  std::vector<double> q1 = tokens(in.q, BH, S, Dqk, 0, S1), k1 = tokens(in.k, BH, S, Dqk, 0, S1),
                      v1 = tokens(in.v, BH, S, Dv, 0, S1), i1 = tokens(in.i, BH, S, 1, 0, S1),
                      f1 = tokens(in.f, BH, S, 1, 0, S1);
  auto q1d = test::upload(q1, dt), k1d = test::upload(k1, dt), v1d = test::upload(v1, dt);
  auto i1d = test::upload(i1, DType::FP32), f1d = test::upload(f1, DType::FP32);
  auto h1 = test::poisoned(BH * S1 * Dv * eb);
  cli::DeviceBuffer Cs[2], ns[2], ms[2];
  for (int x = 0; x < 2; ++x) {
    Cs[x] = test::poisoned(BH * Dqk * Dv * 4);
    ns[x] = test::poisoned(BH * Dqk * 4);
    ms[x] = test::poisoned(BH * 4);
    MlstmProblem p1 = p;
    p1.S = S1;
    ForwardTensors t;
    t.q = q1d.get(); t.k = k1d.get(); t.v = v1d.get(); t.i = i1d.get(); t.f = f1d.get(); t.h = h1.get();
    t.C_last = Cs[x].as<float>(); t.n_last = ns[x].as<float>(); t.m_last = ms[x].as<float>();
    mlstm_forward(p1, t);
  }
  // The S2 generated tokens, (B, NH, S2, D) contiguous.
  std::vector<double> q2 = tokens(in.q, BH, S, Dqk, S1, S2), k2 = tokens(in.k, BH, S, Dqk, S1, S2),
                      v2 = tokens(in.v, BH, S, Dv, S1, S2), i2 = tokens(in.i, BH, S, 1, S1, S2),
                      f2 = tokens(in.f, BH, S, 1, S1, S2);
  auto q2d = test::upload(q2, dt), k2d = test::upload(k2, dt), v2d = test::upload(v2, dt);
  auto i2d = test::upload(i2, DType::FP32), f2d = test::upload(f2, DType::FP32);
  auto h_single = test::poisoned(BH * S2 * Dv * eb), h_fused = test::poisoned(BH * S2 * Dv * eb);
  // Single steps: token t of the (B, NH, S2, D) tensors through strides, problem.S = 1.
  for (int64_t tok = 0; tok < S2; ++tok) {
    MlstmProblem p1 = p;
    p1.S = 1;
    StepTensors t;
    t.q = static_cast<const char*>(q2d.get()) + tok * Dqk * eb;
    t.k = static_cast<const char*>(k2d.get()) + tok * Dqk * eb;
    t.v = static_cast<const char*>(v2d.get()) + tok * Dv * eb;
    t.h = static_cast<char*>(h_single.get()) + tok * Dv * eb;
    t.i = i2d.as<float>() + tok;
    t.f = f2d.as<float>() + tok;
    t.q_strides = t.k_strides = {NH * S2 * Dqk, S2 * Dqk, Dqk};
    t.v_strides = t.h_strides = {NH * S2 * Dv, S2 * Dv, Dv};
    t.i_strides = t.f_strides = {NH * S2, S2, 1};
    t.C = Cs[0].as<float>(); t.n = ns[0].as<float>(); t.m = ms[0].as<float>();
    mlstm_step(p1, t);
  }
  // One fused call over the S2 tokens.
  {
    MlstmProblem p2 = p;
    p2.S = S2;
    StepTensors t;
    t.q = q2d.get(); t.k = k2d.get(); t.v = v2d.get(); t.i = i2d.get(); t.f = f2d.get(); t.h = h_fused.get();
    t.C = Cs[1].as<float>(); t.n = ns[1].as<float>(); t.m = ms[1].as<float>();
    mlstm_step(p2, t);
  }
  cli::synchronize();

  const std::vector<double> h_all = test::download(ha, dt);
  const std::vector<double> h_all_tail = tokens(h_all, BH, S, Dv, S1, S2);
  const std::vector<double> h_ref_tail = tokens(want.h, BH, S, Dv, S1, S2);
  const auto C_all = test::download(Ca, DType::FP32), n_all = test::download(na, DType::FP32),
             m_all = test::download(ma, DType::FP32);
  const double tol = dt == DType::FP32 ? 1e-4 : 1e-2;
  const double tol_C = dt == DType::FP32 ? 1e-4 : 1e-2;  // the chunkwise forward's C uses dt matmuls
  const char* names[2] = {"single steps", "fused"};
  cli::DeviceBuffer* hs[2] = {&h_single, &h_fused};
  for (int x = 0; x < 2; ++x) {
    INFO(names[x]);
    const auto hd = test::download(*hs[x], dt);
    const auto Cd = test::download(Cs[x], DType::FP32), nd = test::download(ns[x], DType::FP32),
               md = test::download(ms[x], DType::FP32);
    CHECK(test::count_nonfinite(hd) == 0);
    CHECK(test::count_nonfinite(Cd) == 0);
    CHECK(test::count_nonfinite(nd) == 0);
    CHECK(test::count_nonfinite(md) == 0);
    const double eh_fwd = ref::relative_error(hd, h_all_tail), eh_ref = ref::relative_error(hd, h_ref_tail);
    const double eC_fwd = ref::relative_error(Cd, C_all), eC_ref = ref::relative_error(Cd, want.last.C);
    const double en_fwd = ref::relative_error(nd, n_all), en_ref = ref::relative_error(nd, want.last.n);
    const double em_fwd = ref::relative_error(md, m_all), em_ref = ref::relative_error(md, want.last.m);
    std::printf("%-80s %-12s h vs fwd %.2e ref %.2e | C %.2e %.2e | n %.2e %.2e | m %.2e %.2e\n", what, names[x],
                eh_fwd, eh_ref, eC_fwd, eC_ref, en_fwd, en_ref, em_fwd, em_ref);
    CHECK(eh_fwd < 2 * tol);
    CHECK(eh_ref < tol);
    CHECK(eC_fwd < 2 * tol_C);
    CHECK(eC_ref < tol_C);
    if (variant == Variant::Exp || normalize) {
      CHECK(en_fwd < 2 * tol_C);
      CHECK(en_ref < tol_C);
    }
    CHECK(em_fwd < 1e-4);
    CHECK(em_ref < 1e-4);
  }
}

}  // namespace

TEST_CASE("step and fused multi-step match the float64 reference step", "[gpu][step][grid]") {
  const Variant E = Variant::Exp, G = Variant::Sig;
  const DType bf = DType::BF16, hf = DType::FP16, f32 = DType::FP32;
  const std::vector<Case> cases = {
      // variant norm dtype gates B NH T Dqk Dv init extreme config
      {E, true, bf, f32, 1, 1, 1, 64, 64, false, false, {}},
      {E, true, bf, f32, 1, 8, 1, 256, 512, true, false, {}},
      {G, true, bf, f32, 1, 8, 1, 256, 512, true, false, {}},
      {G, false, bf, f32, 2, 4, 1, 256, 512, true, false, {}},
      {E, true, bf, f32, 4, 8, 4, 256, 512, true, false, {}},
      {G, true, bf, f32, 4, 8, 4, 256, 512, true, false, {}},
      {E, true, hf, hf, 2, 3, 3, 96, 160, true, false, {}},
      {G, true, hf, f32, 3, 2, 5, 96, 160, true, false, {}, false},
      {E, true, f32, f32, 2, 2, 2, 80, 48, true, false, {}},
      {G, false, f32, f32, 1, 3, 7, 48, 208, true, false, {}},
      {E, true, bf, bf, 1, 2, 16, 128, 128, true, true, {}},
      {G, true, bf, bf, 2, 2, 9, 64, 256, false, true, {}},
      {E, true, f32, f32, 1, 1, 3, 16, 16, true, true, {}},
      {E, true, bf, f32, 1, 2, 2, 512, 512, true, false, {}},
      {G, true, f32, f32, 1, 1, 2, 512, 512, true, false, {}},
      {E, true, bf, f32, 64, 8, 1, 64, 64, true, false, {}},    // B*NH = 512
      {G, true, bf, f32, 16, 8, 2, 128, 256, true, false, {}},  // B*NH = 128
      // several tokens over many CTAs: the n, m kernel's records first (STEP_NM_RECORDS)
      {E, true, bf, f32, 40, 8, 3, 256, 512, true, false, {}},  // 2560 CTAs
      {G, false, hf, f32, 24, 16, 2, 128, 256, true, true, {}}, // 1536 CTAs
      // pinned configs: 1 to 32 CTAs per head (no cluster above 8), few and many threads
      {E, true, bf, f32, 2, 2, 3, 64, 512, true, false, {{"siz_b_v", 512}, {"threads", 512}}},
      {G, true, bf, f32, 2, 2, 3, 128, 512, true, false, {{"siz_b_v", 256}, {"threads", 256}}},
      {E, true, bf, f32, 2, 2, 3, 256, 512, true, false, {{"siz_b_v", 128}, {"threads", 256}}},
      {E, true, bf, f32, 2, 2, 3, 256, 512, true, false, {{"siz_b_v", 64}, {"threads", 128}}},
      {G, true, bf, f32, 2, 2, 3, 256, 512, true, false, {{"siz_b_v", 64}, {"threads", 512}}},
      {E, true, hf, f32, 1, 2, 2, 96, 160, true, false, {{"siz_b_v", 32}, {"threads", 64}}},
      {E, true, hf, f32, 1, 2, 2, 96, 160, true, false, {{"siz_b_v", 160}, {"threads", 160}}},
      {E, true, f32, f32, 1, 2, 2, 112, 336, true, false, {{"siz_b_v", 48}, {"threads", 96}}},
      {G, true, bf, f32, 2, 4, 2, 256, 512, true, false, {{"siz_b_v", 16}, {"threads", 64}}},
      {E, true, bf, f32, 3, 8, 1, 256, 512, true, false, {{"siz_b_v", 32}, {"threads", 256}}},
  };
  uint64_t seed = static_cast<uint64_t>(Catch::rngSeed()) * 1000 + 31;
  for (const Case& c : cases) run_case(c, seed++);
}

// The library's own step over random shapes and settings (any head sizes the API accepts, 1 to 16
// tokens, every dtype, gate dtype and variant); the draw follows Catch's --rng-seed.
TEST_CASE("steps over random shapes and settings match the float64 reference", "[gpu][step][random]") {
  const uint64_t base = static_cast<uint64_t>(Catch::rngSeed());
  INFO("rng seed " << base);
  test::Draw d(base);
  const DType dts[] = {DType::BF16, DType::FP16, DType::FP32};
  for (int n = 0; n < 12; ++n) {  // (each new head size compiles its kernels)
    Case c{};
    c.variant = d.below(2) ? Variant::Exp : Variant::Sig;
    c.normalize = c.variant == Variant::Exp || !d.one_in(3);
    c.dtype = dts[d.below(3)];
    c.gate_dtype = d.one_in(2) ? DType::FP32 : c.dtype;
    c.B = d.in(1, 8);
    c.NH = d.in(1, 8);
    c.T = d.one_in(2) ? 1 : d.in(2, 16);
    c.Dqk = d.head_dim();
    c.Dv = d.head_dim();
    c.init = !d.one_in(4);
    c.extreme = d.one_in(6);
    c.sig_m = !d.one_in(3);
    run_case(c, base * 7919 + static_cast<uint64_t>(n));
  }
}

TEST_CASE("prefill with mlstm_forward then generate with steps equals the forward over S1 + S2",
          "[gpu][step][prefill]") {
  uint64_t seed = static_cast<uint64_t>(Catch::rngSeed()) * 1000 + 77;
  run_prefill(Variant::Exp, true, DType::BF16, 2, 4, 200, 5, 256, 512, seed++);
  run_prefill(Variant::Sig, true, DType::BF16, 2, 4, 200, 5, 256, 512, seed++);
  run_prefill(Variant::Sig, false, DType::BF16, 1, 2, 64, 3, 128, 128, seed++);
  run_prefill(Variant::Exp, true, DType::FP32, 1, 3, 100, 6, 96, 160, seed++);
  run_prefill(Variant::Sig, true, DType::FP16, 1, 2, 1, 4, 64, 64, seed++);
}

TEST_CASE("step on small shapes of every dtype and variant (run under compute-sanitizer)",
          "[gpu][step][sanitize]") {
  uint64_t seed = 5151;
  for (DType dt : {DType::BF16, DType::FP16, DType::FP32})
    for (int var = 0; var < 3; ++var) {
      const Variant v = var == 0 ? Variant::Exp : Variant::Sig;
      // one CTA per head, and 4 per head; one token and a fused 3
      run_case({v, var != 2, dt, DType::FP32, 1, 2, 1, 32, 64, true, false, {{"siz_b_v", 64}, {"threads", 64}}},
               seed++);
      run_case({v, var != 2, dt, dt, 2, 1, 3, 32, 64, true, false, {{"siz_b_v", 16}, {"threads", 32}}}, seed++);
    }
  // several tokens over many CTAs (STEP_NM_RECORDS): 300 heads x 4 slices
  run_case({Variant::Exp, true, DType::BF16, DType::FP32, 1, 300, 2, 32, 64, true, false,
            {{"siz_b_v", 16}, {"threads", 32}}},
           seed++);
  run_case({Variant::Sig, true, DType::FP32, DType::FP32, 1, 300, 3, 32, 64, true, false,
            {{"siz_b_v", 16}, {"threads", 32}}},
           seed++);
  run_prefill(Variant::Exp, true, DType::BF16, 1, 2, 20, 2, 32, 64, seed++);
}

// The cases above compare the in-place call with cluster = 0 against the library's choice, which
// must be the one cluster launch at a decode loop's size on an sm_90: the device holds the fused
// kernel's clusters of 8 (Dv 512 in 64-column slices) for B = 1 at NH = 8 at once.
TEST_CASE("in-place steps of a few heads run as one cluster launch on sm_90", "[gpu][step]") {
  MlstmProblem p;
  p.B = 1; p.NH = 8; p.S = 1; p.Dqk = 256; p.Dv = 512;
  const ops::StepSelection& sel = ops::select_step(p, {});
  REQUIRE(sel.cfg.cluster == 1);
  const rt::LoadedKernel& fused = rt::get_kernel(ops::step_kernels(p, sel.cfg)[0]);
  if (!fused.sm90()) {
    WARN("no clusters before sm_90: not checked");
    return;
  }
  const unsigned slices = static_cast<unsigned>(sel.cfg.slices(p.Dv));
  const int fit = fused.max_active_clusters(slices);
  std::printf("clusters of %u fused step CTAs the device holds at once: %d\n", slices, fit);
  CHECK(fit >= 8);
  CHECK(sel.plans[STEP_NM_CLUSTER].count == 1);
  CHECK(sel.plans[STEP_NM_CLUSTER].launches[0].block == ops::Block::StepCluster);
}

TEST_CASE("step config query: default, tuned or pinned, and bad pins are named", "[gpu][step]") {
  MlstmProblem p;
  p.B = 1; p.NH = 8; p.S = 1; p.Dqk = 256; p.Dv = 512;
  const Config c = mlstm_step_config(p);
  REQUIRE(c.count("siz_b_v"));
  REQUIRE(c.count("threads"));
  CHECK(p.Dv % c.at("siz_b_v") == 0);
  const Config pinned = mlstm_step_config(p, {{"siz_b_v", 128}});
  CHECK(pinned.at("siz_b_v") == 128);
  try {
    mlstm_step_config(p, {{"siz_b_v", 48}});  // does not divide Dv = 512
    FAIL("a slice width not dividing Dv was accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK_THAT(e.what(), Catch::Contains("siz_b_v"));
  }
}
