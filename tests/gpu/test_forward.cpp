// GPU forward vs the float64 reference (recurrent form), on fresh random inputs rounded to the
// kernel's dtype, with poisoned outputs that must be fully written.
#include "tfla_catch.hpp"
#include <cstdio>
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
  int64_t B, NH, S, chunk, Dqk, Dv;
  bool init, extreme, bshd;
};

std::string describe(const Case& c) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%s%s %s B=%lld NH=%lld S=%lld L=%lld Dqk=%lld Dv=%lld%s%s%s",
                to_string(c.variant), c.variant == Variant::Sig && !c.normalize ? "(no norm)" : "",
                to_string(c.dtype), (long long)c.B, (long long)c.NH, (long long)c.S, (long long)c.chunk,
                (long long)c.Dqk, (long long)c.Dv, c.init ? " init" : "", c.extreme ? " extreme" : "",
                c.bshd ? " bshd" : "");
  return buf;
}

// (B, NH, S, D) contiguous -> (B, S, NH, D) contiguous
std::vector<double> to_bshd(const std::vector<double>& x, int64_t B, int64_t NH, int64_t S, int64_t D) {
  std::vector<double> y(x.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < NH; ++h)
      for (int64_t s = 0; s < S; ++s)
        for (int64_t d = 0; d < D; ++d) y[((b * S + s) * NH + h) * D + d] = x[((b * NH + h) * S + s) * D + d];
  return y;
}

void run_case(const Case& c, uint64_t seed) {
  INFO(describe(c));
  const ref::Shape shape{c.B, c.NH, c.S, c.Dqk, c.Dv};
  ref::Inputs in = ref::random_inputs(shape, seed, c.extreme);
  ref::Options opt;
  opt.variant = c.variant == Variant::Exp ? ref::Variant::Exp : ref::Variant::Sig;
  opt.normalize = c.normalize;
  ref::States init;
  if (c.init) init = ref::random_states(shape, opt.variant, seed + 7);

  MlstmProblem p;
  p.B = c.B; p.NH = c.NH; p.S = c.S; p.Dqk = c.Dqk; p.Dv = c.Dv;
  p.dtype = c.dtype;
  p.gate_dtype = DType::FP32;
  p.variant = c.variant;
  p.normalize = c.normalize;

  // Round inputs to the dtype (in place, so the reference sees them too).
  test::encode(in.q, c.dtype);
  test::encode(in.k, c.dtype);
  test::encode(in.v, c.dtype);
  test::encode(in.i, DType::FP32);
  test::encode(in.f, DType::FP32);
  if (c.init) {
    test::encode(init.C, DType::FP32);
    test::encode(init.n, DType::FP32);
    test::encode(init.m, DType::FP32);
  }
  std::vector<double> qd = c.bshd ? to_bshd(in.q, c.B, c.NH, c.S, c.Dqk) : in.q;
  std::vector<double> kd = c.bshd ? to_bshd(in.k, c.B, c.NH, c.S, c.Dqk) : in.k;
  std::vector<double> vd = c.bshd ? to_bshd(in.v, c.B, c.NH, c.S, c.Dv) : in.v;
  auto q = test::upload(qd, c.dtype);
  auto k = test::upload(kd, c.dtype);
  auto v = test::upload(vd, c.dtype);
  auto ig = test::upload(in.i, DType::FP32);
  auto fg = test::upload(in.f, DType::FP32);
  const size_t eb = dtype_bytes(c.dtype);
  auto h = test::poisoned(c.B * c.NH * c.S * c.Dv * eb);
  auto norm = test::poisoned(c.B * c.NH * c.S * 4);
  auto mo = test::poisoned(c.B * c.NH * c.S * 4);
  auto Cl = test::poisoned(c.B * c.NH * c.Dqk * c.Dv * 4);
  auto nl = test::poisoned(c.B * c.NH * c.Dqk * 4);
  auto ml = test::poisoned(c.B * c.NH * 4);
  cli::DeviceBuffer C0, n0, m0;
  if (c.init) {
    C0 = test::upload(init.C, DType::FP32);
    n0 = test::upload(init.n, DType::FP32);
    m0 = test::upload(init.m, DType::FP32);
  }
  ForwardTensors t;
  t.q = q.get(); t.k = k.get(); t.v = v.get(); t.i = ig.get(); t.f = fg.get(); t.h = h.get();
  if (c.bshd) {
    t.q_strides = {c.S * c.NH * c.Dqk, c.Dqk, c.NH * c.Dqk};
    t.k_strides = t.q_strides;
    t.v_strides = {c.S * c.NH * c.Dv, c.Dv, c.NH * c.Dv};
    t.h_strides = t.v_strides;
  }
  t.norm = norm.as<float>(); t.m = mo.as<float>();
  t.C_last = Cl.as<float>(); t.n_last = nl.as<float>(); t.m_last = ml.as<float>();
  if (c.init) { t.C0 = C0.as<float>(); t.n0 = n0.as<float>(); t.m0 = m0.as<float>(); }
  LaunchOptions o;
  o.config = {{"chunk", c.chunk}};
  mlstm_forward(p, t, o);
  cli::synchronize();

  const ref::ForwardResult r = ref::forward_recurrent(shape, opt, in, c.init ? &init : nullptr);
  std::vector<double> hd = test::download(h, c.dtype);
  if (c.bshd) {  // back to (B, NH, S, Dv)
    std::vector<double> y(hd.size());
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t hh = 0; hh < c.NH; ++hh)
        for (int64_t s = 0; s < c.S; ++s)
          for (int64_t d = 0; d < c.Dv; ++d)
            y[((b * c.NH + hh) * c.S + s) * c.Dv + d] = hd[((b * c.S + s) * c.NH + hh) * c.Dv + d];
    hd = y;
  }
  const auto normd = test::download(norm, DType::FP32);
  const auto md = test::download(mo, DType::FP32);
  const auto Cd = test::download(Cl, DType::FP32);
  const auto nd = test::download(nl, DType::FP32);
  const auto mld = test::download(ml, DType::FP32);
  CHECK(test::count_nonfinite(hd) == 0);
  CHECK(test::count_nonfinite(normd) == 0);
  CHECK(test::count_nonfinite(md) == 0);
  CHECK(test::count_nonfinite(Cd) == 0);
  CHECK(test::count_nonfinite(nd) == 0);
  CHECK(test::count_nonfinite(mld) == 0);
  const double tol = c.dtype == DType::FP32 ? 1e-4 : 1e-2;
  const double e_h = ref::relative_error(hd, r.h);
  const double e_norm = ref::relative_error(normd, r.norm);
  const double e_m = ref::relative_error(md, r.m);
  const double e_C = ref::relative_error(Cd, r.last.C);
  const double e_n = ref::relative_error(nd, r.last.n);
  const double e_ml = ref::relative_error(mld, r.last.m);
  std::printf("%-70s h %.2e norm %.2e m %.2e C %.2e n %.2e mlast %.2e\n", describe(c).c_str(), e_h,
              e_norm, e_m, e_C, e_n, e_ml);
  CHECK(e_h < tol);
  CHECK(e_norm < tol);
  CHECK(e_m < 1e-4);
  CHECK(e_C < tol);
  if (c.variant == Variant::Exp || c.normalize) CHECK(e_n < tol);
  CHECK(e_ml < 1e-4);
}

}  // namespace

TEST_CASE("forward matches the float64 reference over the shape grid", "[gpu][forward][grid]") {
  const Variant E = Variant::Exp, G = Variant::Sig;
  const DType bf = DType::BF16, hf = DType::FP16, f32 = DType::FP32;
  const std::vector<Case> cases = {
      // variant norm dtype B NH S chunk Dqk Dv init extreme bshd
      {E, true, bf, 1, 1, 1, 64, 64, 64, false, false, false},
      {G, true, bf, 1, 1, 7, 64, 64, 64, false, false, false},
      {G, false, bf, 1, 1, 64, 64, 64, 64, false, false, false},
      {E, true, bf, 2, 3, 100, 64, 128, 256, true, false, false},
      {G, true, hf, 2, 2, 100, 128, 96, 160, false, false, true},
      {E, true, f32, 1, 2, 1000, 128, 64, 64, true, false, false},
      {G, true, f32, 1, 2, 1000, 256, 96, 160, false, false, false},
      {G, false, f32, 1, 1, 300, 64, 128, 256, true, false, false},
      {E, true, bf, 1, 2, 1000, 256, 256, 512, false, false, false},
      {G, true, bf, 1, 1, 1000, 512, 256, 512, true, false, false},
      {E, true, bf, 1, 1, 4096, 1024, 128, 256, false, false, false},
      {G, true, bf, 1, 1, 4096, 128, 64, 64, false, false, true},
      {E, true, bf, 2, 2, 4096, 64, 64, 64, true, true, false},
      {G, true, hf, 1, 1, 1000, 128, 128, 256, false, true, false},
      {E, true, hf, 1, 1, 777, 256, 96, 160, true, false, false},
      {E, true, f32, 1, 1, 65, 64, 16, 16, false, true, false},
      {G, false, hf, 1, 1, 1000, 1024, 64, 64, false, false, false},
      {E, true, bf, 4, 16, 200, 128, 64, 64, false, false, false},   // B*NH large
      {E, true, bf, 64, 8, 64, 64, 64, 64, false, false, false},     // B*NH = 512
      {E, true, f32, 1, 1, 1, 64, 512, 512, true, false, false},
      {G, true, bf, 1, 1, 129, 128, 512, 512, false, false, false},
  };
  uint64_t seed = static_cast<uint64_t>(Catch::rngSeed()) * 1000 + 17;
  for (const Case& c : cases) run_case(c, seed++);
}

TEST_CASE("forward gives the same result with a caller workspace and on a stream", "[gpu][forward]") {
  Case c{Variant::Exp, true, DType::BF16, 2, 2, 300, 128, 64, 128, false, false, false};
  run_case(c, 99);
}

TEST_CASE("forward on small shapes of every dtype and variant (run under compute-sanitizer)",
          "[gpu][forward][sanitize]") {
  uint64_t seed = 4242;
  for (DType dt : {DType::BF16, DType::FP16, DType::FP32})
    for (int var = 0; var < 3; ++var) {
      const Variant v = var == 0 ? Variant::Exp : Variant::Sig;
      run_case({v, var != 2, dt, 1, 2, 100, 64, 64, 64, var == 1, false, false}, seed++);
      run_case({v, var != 2, dt, 1, 1, 70, 64, 96, 160, var == 0, false, var == 2}, seed++);
      run_case({v, var != 2, dt, 1, 1, 300, 256, 64, 128, var == 1, false, false}, seed++);
    }
}
