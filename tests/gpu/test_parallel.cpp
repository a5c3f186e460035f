// The parallel (quadratic) forward and backward (config key parallel = 1) on the GPU against the
// float64 reference (recurrent forward, reference backward), on fresh random inputs rounded to
// the kernel's dtype, with poisoned outputs; against the chunkwise form; mixed with it (a
// parallel forward's norm feeding a chunkwise backward and the other way round); its argument
// restrictions and the library's fallback to the chunkwise form when a call has states.
#include "tfla_catch.hpp"
#include <cstdio>
#include <optional>
#include <string>

#include "gpu_test_util.hpp"
#include "reference/reference.hpp"

using namespace tfla;
namespace ref = tfla::reference;

namespace {

struct Case {
  Variant variant;
  bool normalize;
  DType dtype;
  int64_t B, NH, S, Dqk, Dv;
  bool extreme;
  bool gates_in_dtype = false;  // gate pre-activations in the input dtype instead of fp32
  bool mixed = false;           // also: chunkwise forms mixed with the parallel ones
};

std::string describe(const Case& c) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%s%s %s B=%lld NH=%lld S=%lld Dqk=%lld Dv=%lld%s%s",
                to_string(c.variant), c.variant == Variant::Sig && !c.normalize ? "(no norm)" : "",
                to_string(c.dtype), (long long)c.B, (long long)c.NH, (long long)c.S, (long long)c.Dqk,
                (long long)c.Dv, c.extreme ? " extreme" : "", c.gates_in_dtype ? " gates-in-dtype" : "");
  return buf;
}

const Config kParallel{{"parallel", 1}};
const Config kChunkwise{{"parallel", 0}, {"chunk", 64}};

// The parallel form of one engine (0 mma.sync, 1 sm90) for an op, or none where that engine does not
// serve the op on p.
std::optional<Config> parallel_on(int engine, bool backward, const MlstmProblem& p) {
  const Config c{{"parallel", 1}, {"engine", engine}};
  try {
    if (backward) (void)mlstm_backward_config(p, c);
    else (void)mlstm_forward_config(p, c);
  } catch (const Error&) {
    return std::nullopt;
  }
  return c;
}

// One case's inputs on the host (rounded to the kernel's dtypes) and on the device.
struct Data {
  MlstmProblem p;
  ref::Shape shape;
  ref::Options opt;
  ref::Inputs in;
  std::vector<double> dh;
  cli::DeviceBuffer q, k, v, ig, fg, dhd;
};

Data make_data(const Case& c, uint64_t seed) {
  Data d;
  d.shape = {c.B, c.NH, c.S, c.Dqk, c.Dv};
  d.in = ref::random_inputs(d.shape, seed, c.extreme);
  d.dh = ref::random_inputs({c.B, c.NH, c.S, c.Dv, c.Dv}, seed + 13).v;
  d.opt.variant = c.variant == Variant::Exp ? ref::Variant::Exp : ref::Variant::Sig;
  d.opt.normalize = c.normalize;
  d.p.B = c.B; d.p.NH = c.NH; d.p.S = c.S; d.p.Dqk = c.Dqk; d.p.Dv = c.Dv;
  d.p.dtype = c.dtype;
  d.p.gate_dtype = c.gates_in_dtype ? c.dtype : DType::FP32;
  d.p.variant = c.variant;
  d.p.normalize = c.normalize;
  d.q = test::upload(d.in.q, c.dtype);  // rounds in place: the reference sees the same values
  d.k = test::upload(d.in.k, c.dtype);
  d.v = test::upload(d.in.v, c.dtype);
  d.ig = test::upload(d.in.i, d.p.gate_dtype);
  d.fg = test::upload(d.in.f, d.p.gate_dtype);
  d.dhd = test::upload(d.dh, c.dtype);
  return d;
}

struct Fwd {
  cli::DeviceBuffer h, norm, m;
};
Fwd run_forward(Data& d, const Config& cfg) {
  const MlstmProblem& p = d.p;
  Fwd r{test::poisoned(p.B * p.NH * p.S * p.Dv * dtype_bytes(p.dtype)), test::poisoned(p.B * p.NH * p.S * 4),
        test::poisoned(p.B * p.NH * p.S * 4)};
  ForwardTensors t;
  t.q = d.q.get(); t.k = d.k.get(); t.v = d.v.get(); t.i = d.ig.get(); t.f = d.fg.get();
  t.h = r.h.get(); t.norm = r.norm.as<float>(); t.m = r.m.as<float>();
  LaunchOptions o;
  o.config = cfg;
  mlstm_forward(p, t, o);
  return r;
}

struct Bwd {
  std::vector<double> dq, dk, dv, di, df;
};
Bwd run_backward(Data& d, const cli::DeviceBuffer& norm, const Config& cfg) {
  const MlstmProblem& p = d.p;
  const size_t eb = dtype_bytes(p.dtype), gb = dtype_bytes(p.gate_dtype);
  auto dq = test::poisoned(p.B * p.NH * p.S * p.Dqk * eb), dk = test::poisoned(p.B * p.NH * p.S * p.Dqk * eb);
  auto dv = test::poisoned(p.B * p.NH * p.S * p.Dv * eb);
  auto di = test::poisoned(p.B * p.NH * p.S * gb), df = test::poisoned(p.B * p.NH * p.S * gb);
  BackwardTensors t;
  t.q = d.q.get(); t.k = d.k.get(); t.v = d.v.get(); t.i = d.ig.get(); t.f = d.fg.get();
  t.dh = d.dhd.get(); t.norm = norm.as<float>();
  t.dq = dq.get(); t.dk = dk.get(); t.dv = dv.get(); t.di = di.get(); t.df = df.get();
  LaunchOptions o;
  o.config = cfg;
  mlstm_backward(p, t, o);
  cli::synchronize();
  return {test::download(dq, p.dtype), test::download(dk, p.dtype), test::download(dv, p.dtype),
          test::download(di, p.gate_dtype), test::download(df, p.gate_dtype)};
}

// Backward errors against the reference; df judged as test_backward.cpp does (its conditioned
// error, and the plain relative error for realistic gates).
// fp32 under extreme gates over long sequences: rows whose |N_i| is far below the sum of its
// terms are ill-conditioned, and an fp32 cumulative sum of the log forget gates, which both
// forms use, misses the float64 reference by up to ~5e-4 there (emulated on the CPU with exact
// products, the chunkwise and the parallel form's gate arithmetic gave the same errors, 1.5e-5
// to 5.0e-4, on five seeds of the S = 1000 extreme case below). Held to 1e-3, and both forms
// are checked against the reference.
double fp32_tol(const Case& c) { return c.extreme ? 1e-3 : 1e-4; }

void check_backward(const Case& c, const Data& d, const Bwd& g, const ref::BackwardResult& r, const char* what) {
  INFO(what);
  for (const auto* x : {&g.dq, &g.dk, &g.dv, &g.di, &g.df}) CHECK(test::count_nonfinite(*x) == 0);
  const bool f32 = c.dtype == DType::FP32;
  const double tol = f32 ? fp32_tol(c) : 2e-2;
  const double e_q = ref::relative_error(g.dq, r.dq), e_k = ref::relative_error(g.dk, r.dk),
               e_v = ref::relative_error(g.dv, r.dv), e_i = ref::relative_error(g.di, r.di);
  ref::BackwardResult got;
  got.dq = g.dq;
  got.dk = g.dk;
  const double e_f = ref::df_conditioned_error(d.shape, d.in, g.df, r);
  const double e_f_plain = ref::relative_error(g.df, r.df);
  std::printf("  %-28s dq %.2e dk %.2e dv %.2e di %.2e df %.2e (plain %.2e)\n", what, e_q, e_k, e_v, e_i,
              e_f, e_f_plain);
  if (!c.extreme) CHECK(e_f_plain < 2.5 * tol);
  CHECK(e_q < tol);
  CHECK(e_k < tol);
  CHECK(e_v < tol);
  CHECK(e_i < tol);
  CHECK(e_f < tol);
}

// fwd_par / bwd_par: the parallel configs run (kParallel: the library's choice of engine).
void run_case(const Case& c, uint64_t seed, const Config& fwd_par = kParallel, const Config& bwd_par = kParallel) {
  INFO(describe(c));
  INFO("forward " << to_string(fwd_par) << ", backward " << to_string(bwd_par));
  std::printf("%s (forward %s, backward %s)\n", describe(c).c_str(), to_string(fwd_par).c_str(),
              to_string(bwd_par).c_str());
  Data d = make_data(c, seed);
  const MlstmProblem& p = d.p;
  REQUIRE(mlstm_forward_config(p, fwd_par).at("parallel") == 1);
  REQUIRE(mlstm_backward_config(p, bwd_par).at("parallel") == 1);

  // forward: h, norm and m against the recurrent reference
  Fwd par = run_forward(d, fwd_par);
  cli::synchronize();
  const ref::ForwardResult rf = ref::forward_recurrent(d.shape, d.opt, d.in, nullptr);
  const auto hd = test::download(par.h, p.dtype), normd = test::download(par.norm, DType::FP32),
             md = test::download(par.m, DType::FP32);
  CHECK(test::count_nonfinite(hd) == 0);
  CHECK(test::count_nonfinite(normd) == 0);
  CHECK(test::count_nonfinite(md) == 0);
  const double tol_f = c.dtype == DType::FP32 ? fp32_tol(c) : 1e-2;
  const double e_h = ref::relative_error(hd, rf.h), e_norm = ref::relative_error(normd, rf.norm),
               e_m = ref::relative_error(md, rf.m);
  std::printf("  forward parallel             h %.2e norm %.2e m %.2e\n", e_h, e_norm, e_m);
  CHECK(e_h < tol_f);
  CHECK(e_norm < tol_f);
  CHECK(e_m < 1e-4);

  // backward against the reference backward (which holds den and m at the forward's values)
  const ref::BackwardResult rb = ref::backward(d.shape, d.opt, d.in, nullptr, d.dh, nullptr);
  check_backward(c, d, run_backward(d, par.norm, bwd_par), rb, "backward parallel");
  if (!c.mixed) return;

  // the chunkwise form on the same inputs: the same h and norm; each backward on the other's norm
  Fwd chk = run_forward(d, kChunkwise);
  cli::synchronize();
  const auto hc = test::download(chk.h, p.dtype), normc = test::download(chk.norm, DType::FP32);
  const double e_hc = ref::relative_error(hd, hc), e_nc = ref::relative_error(normd, normc);
  const double e_hc_ref = ref::relative_error(hc, rf.h);
  std::printf("  parallel vs chunkwise        h %.2e norm %.2e (chunkwise h vs reference %.2e)\n", e_hc, e_nc,
              e_hc_ref);
  CHECK(e_hc < tol_f);
  CHECK(e_nc < tol_f);
  CHECK(e_hc_ref < tol_f);
  check_backward(c, d, run_backward(d, par.norm, kChunkwise), rb, "parallel fwd + chunkwise bwd");
  check_backward(c, d, run_backward(d, chk.norm, bwd_par), rb, "chunkwise fwd + parallel bwd");
}

}  // namespace

TEST_CASE("parallel forward and backward match the float64 reference", "[gpu][parallel][grid]") {
  const Variant E = Variant::Exp, G = Variant::Sig;
  const DType bf = DType::BF16, hf = DType::FP16, f32 = DType::FP32;
  std::vector<Case> cases = {
      // variant norm dtype B NH S Dqk Dv extreme [gates in dtype] [mixed]
      {E, true, bf, 1, 1, 1, 64, 64, false},
      {G, true, bf, 1, 2, 15, 48, 80, false, false, true},
      {G, false, bf, 2, 1, 64, 64, 64, false},
      {E, true, hf, 2, 2, 100, 96, 160, false, false, true},
      {G, true, f32, 1, 2, 100, 128, 256, false},
      {E, true, f32, 1, 1, 256, 48, 80, false, false, true},
      {G, false, hf, 1, 1, 256, 112, 48, false},
      {E, true, bf, 1, 2, 1000, 256, 512, false, false, true},
      {G, true, bf, 1, 1, 1000, 128, 128, false},
      {E, true, bf, 2, 2, 1000, 64, 64, true},
      {E, true, f32, 1, 1, 1000, 64, 64, true, false, true},
      {G, true, hf, 1, 1, 1000, 96, 160, true},
      {E, true, bf, 4, 16, 64, 64, 64, false},
      {E, true, bf, 1, 2, 100, 64, 128, false, true, true},
      {G, true, hf, 1, 1, 15, 16, 16, false, true},
      // one query tile per sequence: whole-Dv tiles in the forward
      {E, true, bf, 2, 2, 64, 256, 512, false, false, true},
      {G, false, hf, 1, 2, 40, 128, 384, false},
  };
  uint64_t seed = static_cast<uint64_t>(Catch::rngSeed()) * 1000 + 71;
  for (const Case& c : cases) run_case(c, seed++);
}

// Each engine's parallel form pinned, on the shapes the sm90 engine serves (16-bit inputs, Dqk a
// multiple of 64 up to 256 forward, 128 or 256 backward; S up to 1024), and the mma.sync one on
// the same inputs: S at, below and past the 128-row tiles and the power-of-two chunks, whole and
// partial Dv tiles, both variants, extreme gates. Where an engine does not serve an op, that op
// runs the other's.
TEST_CASE("each engine's parallel form matches the float64 reference", "[gpu][parallel][engines]") {
  const Variant E = Variant::Exp, G = Variant::Sig;
  const DType bf = DType::BF16, hf = DType::FP16;
  const std::vector<Case> cases = {
      // variant norm dtype B NH S Dqk Dv extreme [gates in dtype] [mixed]
      {E, true, bf, 2, 2, 1, 128, 128, false},
      {G, true, bf, 3, 2, 64, 128, 256, false, false, true},
      {E, true, hf, 2, 1, 100, 256, 512, false},
      {G, false, bf, 1, 3, 128, 256, 192, false},
      {E, true, bf, 2, 2, 129, 128, 64, true},
      {G, true, hf, 1, 2, 256, 128, 256, false, false, true},
      {E, true, bf, 1, 1, 300, 256, 512, true},
      {G, true, bf, 2, 1, 511, 64, 128, false},
      {E, true, bf, 1, 2, 512, 128, 384, false, true},
      {G, false, hf, 1, 1, 777, 256, 256, true},
      {E, true, bf, 1, 1, 1024, 128, 256, false, false, true},
      {G, true, bf, 1, 2, 1000, 192, 128, false},
  };
  uint64_t seed = static_cast<uint64_t>(Catch::rngSeed()) * 1000 + 5171;
  int sm90_fwd = 0, sm90_bwd = 0;
  for (const Case& c : cases) {
    const MlstmProblem p = make_data(c, seed).p;
    for (int engine : {1, 0}) {
      const std::optional<Config> f = parallel_on(engine, false, p), b = parallel_on(engine, true, p);
      if (!f && !b) continue;
      sm90_fwd += engine == 1 && f;
      sm90_bwd += engine == 1 && b;
      const Config other{{"parallel", 1}, {"engine", 1 - engine}};
      run_case(c, seed, f ? *f : other, b ? *b : other);
    }
    ++seed;
  }
  // the sm90 engine served every forward here and the backwards at Dqk 128 or 256
  CHECK(sm90_fwd == static_cast<int>(cases.size()));
  CHECK(sm90_bwd == static_cast<int>(cases.size()) - 2);
}

TEST_CASE("parallel forms on small shapes of every dtype and variant (run under compute-sanitizer)",
          "[gpu][parallel][sanitize]") {
  uint64_t seed = 9090;
  // 150 rows: three row tiles, so the prefix scans and their carries run
  for (DType dt : {DType::BF16, DType::FP16, DType::FP32})
    for (int var = 0; var < 3; ++var) {
      const Variant v = var == 0 ? Variant::Exp : Variant::Sig;
      run_case({v, var != 2, dt, 1, 2, 150, 48, 80, var == 1, dt != DType::FP32 && var == 0}, seed++);
    }
  // a whole-Dv output tile (one query tile per sequence)
  run_case({Variant::Exp, true, DType::BF16, 1, 1, 40, 64, 320, false}, seed++);
  // mixed with the chunkwise form (its gate-gradient kernel shares code with the parallel one)
  run_case({Variant::Exp, true, DType::BF16, 1, 1, 70, 64, 64, false, false, true}, seed++);
}

TEST_CASE("the sm90 engine's parallel form on small shapes (run under compute-sanitizer)",
          "[gpu][parallel_sm90_small]") {
  uint64_t seed = 7070;
  const Config sm90{{"parallel", 1}, {"engine", 1}};
  // 150 rows: two 128-row tiles, the second partial; a 64-column and a 128-column Dv
  run_case({Variant::Exp, true, DType::BF16, 1, 2, 150, 128, 128, true}, seed++, sm90, sm90);
  run_case({Variant::Sig, true, DType::FP16, 2, 1, 150, 256, 64, false, false, true}, seed++, sm90, sm90);
  // dK and dV in one kernel (Dqk 128, Dv 256), and apart
  Case c{Variant::Sig, false, DType::BF16, 1, 1, 70, 128, 256, false};
  run_case(c, seed++, sm90, sm90);
  Config apart = sm90;
  apart["tl_dkv"] = 0;
  run_case(c, seed++, sm90, apart);
}

// TMA loads and wgmma in a persistent grid: every rerun must give the same bits (no atomics,
// no order that depends on timing). The forward's h, norm and m and all five gradients, both
// ways of running dK and dV, ten reruns each.
TEST_CASE("the sm90 engine's parallel form: reruns are bitwise equal", "[gpu][parallel][parallel_sm90_determinism]") {
  for (int dkv : {1, 0}) {
    const Case c{Variant::Exp, true, DType::BF16, 2, 4, 300, 128, 256, false};
    Data d = make_data(c, 8080 + dkv);
    const MlstmProblem& p = d.p;
    const Config fcfg{{"parallel", 1}, {"engine", 1}};
    Config bcfg = fcfg;
    bcfg["tl_dkv"] = dkv;
    REQUIRE(mlstm_backward_config(p, bcfg).at("tl_dkv") == dkv);
    std::vector<std::vector<double>> first;
    for (int run = 0; run < 10; ++run) {
      Fwd r = run_forward(d, fcfg);
      cli::synchronize();
      const Bwd g = run_backward(d, r.norm, bcfg);
      std::vector<std::vector<double>> got = {test::download(r.h, p.dtype), test::download(r.norm, DType::FP32),
                                              test::download(r.m, DType::FP32), g.dq, g.dk, g.dv, g.di, g.df};
      if (run == 0) {
        for (const auto& x : got) REQUIRE(test::count_nonfinite(x) == 0);
        first = std::move(got);
        continue;
      }
      INFO("tl_dkv " << dkv << ", rerun " << run);
      for (size_t j = 0; j < got.size(); ++j) {
        INFO("output " << j << " (h, norm, m, dq, dk, dv, di, df)");
        CHECK(got[j] == first[j]);
      }
    }
  }
}

TEST_CASE("parallel=1 pinned refuses states; the library's parallel choice falls back", "[gpu][parallel][fallback]") {
  Case c{Variant::Exp, true, DType::BF16, 1, 2, 64, 64, 64, false};
  Data d = make_data(c, 4321);
  const MlstmProblem& p = d.p;
  // the library's choice for this short sequence is the parallel form (else nothing to fall back from)
  REQUIRE(mlstm_forward_config(p, {}).at("parallel") == 1);
  REQUIRE(mlstm_backward_config(p, {}).at("parallel") == 1);
  const ref::States init = ref::random_states(d.shape, ref::Variant::Exp, 99);
  std::vector<double> C = init.C, n = init.n, m = init.m;
  auto C0 = test::upload(C, DType::FP32), n0 = test::upload(n, DType::FP32), m0 = test::upload(m, DType::FP32);
  ref::States init32{C, n, m};  // as uploaded (fp32-rounded)
  auto h = test::poisoned(p.B * p.NH * p.S * p.Dv * 2), norm = test::poisoned(p.B * p.NH * p.S * 4);
  auto Cl = test::poisoned(p.B * p.NH * p.Dqk * p.Dv * 4), nl = test::poisoned(p.B * p.NH * p.Dqk * 4),
       ml = test::poisoned(p.B * p.NH * 4);
  ForwardTensors t;
  t.q = d.q.get(); t.k = d.k.get(); t.v = d.v.get(); t.i = d.ig.get(); t.f = d.fg.get(); t.h = h.get();
  t.norm = norm.as<float>();
  t.C0 = C0.as<float>(); t.n0 = n0.as<float>(); t.m0 = m0.as<float>();
  t.C_last = Cl.as<float>(); t.n_last = nl.as<float>(); t.m_last = ml.as<float>();

  // pinned: a clear InvalidArgument naming what the parallel form cannot take
  LaunchOptions pinned;
  pinned.config = kParallel;
  try {
    mlstm_forward(p, t, pinned);
    FAIL("parallel=1 accepted initial states");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK(std::string(e.what()).find("initial states") != std::string::npos);
  }
  ForwardTensors t_last = t;
  t_last.C0 = t_last.n0 = t_last.m0 = nullptr;
  try {
    mlstm_forward(p, t_last, pinned);
    FAIL("parallel=1 accepted last states");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK(std::string(e.what()).find("last states") != std::string::npos);
  }

  // the library's choice: falls back to the chunkwise form and gets everything right
  mlstm_forward(p, t, LaunchOptions{});
  cli::synchronize();
  const ref::ForwardResult r = ref::forward_recurrent(d.shape, d.opt, d.in, &init32);
  const double e_h = ref::relative_error(test::download(h, DType::BF16), r.h);
  const double e_C = ref::relative_error(test::download(Cl, DType::FP32), r.last.C);
  const double e_n = ref::relative_error(test::download(nl, DType::FP32), r.last.n);
  const double e_m = ref::relative_error(test::download(ml, DType::FP32), r.last.m);
  std::printf("fallback forward with states: h %.2e C %.2e n %.2e m %.2e\n", e_h, e_C, e_n, e_m);
  CHECK(e_h < 1e-2);
  CHECK(e_C < 1e-2);
  CHECK(e_n < 1e-2);
  CHECK(e_m < 1e-4);

  // backward with C0 and dC0: pinned refuses, the library's choice falls back
  const size_t eb = 2;
  auto dq = test::poisoned(p.B * p.NH * p.S * p.Dqk * eb), dk = test::poisoned(p.B * p.NH * p.S * p.Dqk * eb);
  auto dv = test::poisoned(p.B * p.NH * p.S * p.Dv * eb), di = test::poisoned(p.B * p.NH * p.S * 4),
       df = test::poisoned(p.B * p.NH * p.S * 4), dC0 = test::poisoned(p.B * p.NH * p.Dqk * p.Dv * 4);
  BackwardTensors bt;
  bt.q = d.q.get(); bt.k = d.k.get(); bt.v = d.v.get(); bt.i = d.ig.get(); bt.f = d.fg.get();
  bt.dh = d.dhd.get(); bt.norm = norm.as<float>();
  bt.C0 = C0.as<float>(); bt.n0 = n0.as<float>(); bt.m0 = m0.as<float>();
  bt.dq = dq.get(); bt.dk = dk.get(); bt.dv = dv.get(); bt.di = di.get(); bt.df = df.get();
  bt.dC0 = dC0.as<float>();
  try {
    mlstm_backward(p, bt, pinned);
    FAIL("parallel=1 accepted initial states in the backward");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK(std::string(e.what()).find("initial states") != std::string::npos);
  }
  mlstm_backward(p, bt, LaunchOptions{});
  cli::synchronize();
  const ref::BackwardResult rb = ref::backward(d.shape, d.opt, d.in, &init32, d.dh, nullptr);
  Bwd g{test::download(dq, DType::BF16), test::download(dk, DType::BF16), test::download(dv, DType::BF16),
        test::download(di, DType::FP32), test::download(df, DType::FP32)};
  check_backward(c, d, g, rb, "fallback backward with C0");
  const double e_dC0 = ref::relative_error(test::download(dC0, DType::FP32), rb.d_initial.C);
  std::printf("  dC0 %.2e\n", e_dC0);
  CHECK(e_dC0 < 2e-2);
}
