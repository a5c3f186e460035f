// Forward, step and argument checks of the float64 reference (src/reference).
// The recurrent form is checked against an unstabilized evaluation of DESIGN.md's definition,
// the chunkwise form against the recurrent one over many shapes and gates, and the step
// against both. Backward checks are in test_reference_backward.cpp.
#include <algorithm>
#include "tfla_catch.hpp"
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

#include "reference/reference.hpp"

namespace ref = tfla::reference;

namespace {

struct Case {
  ref::Shape shape;
  ref::Options options;
  int64_t chunk = 1;
  bool with_initial = false;
  bool extreme = false;
  uint64_t seed = 0;
};

std::string describe(const Case& c) {
  std::ostringstream os;
  os << "B=" << c.shape.B << " NH=" << c.shape.NH << " S=" << c.shape.S << " Dqk=" << c.shape.Dqk
     << " Dv=" << c.shape.Dv << " chunk=" << c.chunk
     << (c.options.variant == ref::Variant::Exp ? " exp" : " sig")
     << (c.options.normalize ? " norm" : " nonorm") << " eps=" << c.options.eps
     << " scale=" << c.options.scale << (c.with_initial ? " init" : "")
     << (c.extreme ? " extreme" : "") << " seed=" << c.seed;
  return os.str();
}

// Largest relative error over every output of two forward results.
double forward_error(const ref::ForwardResult& out, const ref::ForwardResult& want) {
  return std::max({ref::relative_error(out.h, want.h), ref::relative_error(out.norm, want.norm),
                   ref::relative_error(out.m, want.m), ref::relative_error(out.last.C, want.last.C),
                   ref::relative_error(out.last.n, want.last.n),
                   ref::relative_error(out.last.m, want.last.m)});
}

// A deterministic spread of cases: every shape edge DESIGN.md section 8 names.
std::vector<Case> forward_cases() {
  const int64_t S_values[] = {1, 2, 5, 16, 17, 33, 64, 100};
  const int64_t chunk_values[] = {1, 2, 3, 7, 16, 64};
  const int64_t D_values[][2] = {{1, 1}, {3, 5}, {8, 8}, {16, 4}, {4, 12}};
  std::vector<Case> cases;
  uint64_t seed = 1000;
  for (int variant = 0; variant < 2; ++variant) {
    for (int normalize = 0; normalize < 2; ++normalize) {
      if (variant == 0 && normalize == 0) continue;  // Exp always normalizes
      for (int trial = 0; trial < 48; ++trial, ++seed) {
        Case c;
        c.options.variant = variant == 0 ? ref::Variant::Exp : ref::Variant::Sig;
        c.options.normalize = normalize == 1;
        c.options.eps = trial % 5 == 0 ? 1e-3 : 1e-6;
        c.options.scale = trial % 7 == 3 ? 0.7 : 0.0;
        const auto& D = D_values[trial % 5];
        c.shape = {1 + trial % 2, 1 + (trial / 2) % 3, S_values[trial % 8], D[0], D[1]};
        c.chunk = chunk_values[(trial * 5 + variant) % 6];
        c.with_initial = (trial / 3) % 2 == 1;
        c.extreme = (trial / 4) % 2 == 1;
        c.seed = seed;
        cases.push_back(c);
      }
    }
  }
  return cases;
}

// DESIGN.md's definition evaluated without stabilization: Ctilde_t = exp(m_t) C_t,
// ntilde_t likewise, and h_t = Ctilde_t^T (s q_t) / (max(|ntilde_t . s q_t|, 1) + eps exp(m_t))
// (Exp; the Sig forms have m = 0). Valid while exp(i) and exp(m_0) stay finite.
ref::ForwardResult naive_forward(const ref::Shape& sh, const ref::Options& o, const ref::Inputs& in,
                                 const ref::States* init) {
  const bool is_exp = o.variant == ref::Variant::Exp;
  const double s = o.scale != 0.0 ? o.scale : 1.0 / std::sqrt(double(sh.Dqk));
  const auto logsig = [](double x) { return -std::log1p(std::exp(-x)); };
  ref::ForwardResult out;
  out.h.assign(size_t(sh.B * sh.NH * sh.S * sh.Dv), 0.0);
  out.norm.assign(size_t(sh.B * sh.NH * sh.S), 0.0);
  out.m = out.norm;
  out.last.C.assign(size_t(sh.B * sh.NH * sh.Dqk * sh.Dv), 0.0);
  out.last.n.assign(size_t(sh.B * sh.NH * sh.Dqk), 0.0);
  out.last.m.assign(size_t(sh.B * sh.NH), 0.0);
  for (int64_t bh = 0; bh < sh.B * sh.NH; ++bh) {
    double m = (init && !init->m.empty() && is_exp) ? init->m[size_t(bh)] : 0.0;
    std::vector<double> C(size_t(sh.Dqk * sh.Dv), 0.0), n(size_t(sh.Dqk), 0.0);
    for (int64_t a = 0; a < sh.Dqk; ++a) {
      if (init && !init->n.empty()) n[size_t(a)] = std::exp(m) * init->n[size_t(bh * sh.Dqk + a)];
      for (int64_t e = 0; e < sh.Dv; ++e) {
        if (init && !init->C.empty())
          C[size_t(a * sh.Dv + e)] = std::exp(m) * init->C[size_t((bh * sh.Dqk + a) * sh.Dv + e)];
      }
    }
    for (int64_t t = 0; t < sh.S; ++t) {
      const int64_t row = bh * sh.S + t;
      const double lf = logsig(in.f[size_t(row)]);
      const double li = is_exp ? in.i[size_t(row)] : logsig(in.i[size_t(row)]);
      m = is_exp ? std::max(lf + m, li) : 0.0;
      double qn = 0.0;
      for (int64_t a = 0; a < sh.Dqk; ++a) {
        const double k = in.k[size_t(row * sh.Dqk + a)];
        n[size_t(a)] = std::exp(lf) * n[size_t(a)] + std::exp(li) * k;
        for (int64_t e = 0; e < sh.Dv; ++e) {
          double& c = C[size_t(a * sh.Dv + e)];
          c = std::exp(lf) * c + std::exp(li) * k * in.v[size_t(row * sh.Dv + e)];
        }
        qn += n[size_t(a)] * s * in.q[size_t(row * sh.Dqk + a)];
      }
      // den_t = exp(-m_t) * den_tilde: the floor exp(-m_t) is 1 in unstabilized units.
      const double den_tilde = (is_exp || o.normalize) ? std::max(std::fabs(qn), 1.0) : 1.0;
      for (int64_t e = 0; e < sh.Dv; ++e) {
        double acc = 0.0;
        for (int64_t a = 0; a < sh.Dqk; ++a)
          acc += C[size_t(a * sh.Dv + e)] * s * in.q[size_t(row * sh.Dqk + a)];
        out.h[size_t(row * sh.Dv + e)] = acc / (den_tilde + o.eps * std::exp(m));
      }
      out.norm[size_t(row)] = std::exp(-m) * den_tilde;
      out.m[size_t(row)] = m;
    }
    for (int64_t a = 0; a < sh.Dqk; ++a) {
      out.last.n[size_t(bh * sh.Dqk + a)] = std::exp(-m) * n[size_t(a)];
      for (int64_t e = 0; e < sh.Dv; ++e)
        out.last.C[size_t((bh * sh.Dqk + a) * sh.Dv + e)] = std::exp(-m) * C[size_t(a * sh.Dv + e)];
    }
    out.last.m[size_t(bh)] = m;
  }
  return out;
}

// Tokens [t0, t1) of every (B, NH) sequence.
ref::Inputs slice_time(const ref::Shape& sh, const ref::Inputs& in, int64_t t0, int64_t t1) {
  ref::Inputs out;
  for (int64_t bh = 0; bh < sh.B * sh.NH; ++bh) {
    const auto take = [&](const std::vector<double>& src, std::vector<double>& dst, int64_t d) {
      dst.insert(dst.end(), src.begin() + (bh * sh.S + t0) * d, src.begin() + (bh * sh.S + t1) * d);
    };
    take(in.q, out.q, sh.Dqk);
    take(in.k, out.k, sh.Dqk);
    take(in.v, out.v, sh.Dv);
    take(in.i, out.i, 1);
    take(in.f, out.f, 1);
  }
  return out;
}

}  // namespace

TEST_CASE("forward_recurrent matches the unstabilized definition", "[reference][forward]") {
  for (const Case& c : forward_cases()) {
    if (c.shape.S > 33) continue;  // keep exp(i) and the unstabilized sums comfortably finite
    INFO(describe(c));
    const ref::Inputs in = ref::random_inputs(c.shape, c.seed, c.extreme);
    const ref::States init = ref::random_states(c.shape, c.options.variant, c.seed + 1);
    const ref::States* init_ptr = c.with_initial ? &init : nullptr;
    const double err = forward_error(ref::forward_recurrent(c.shape, c.options, in, init_ptr),
                                     naive_forward(c.shape, c.options, in, init_ptr));
    CHECK(err < 1e-11);
  }
}

TEST_CASE("forward_chunkwise matches forward_recurrent", "[reference][forward]") {
  for (const Case& c : forward_cases()) {
    INFO(describe(c));
    const ref::Inputs in = ref::random_inputs(c.shape, c.seed, c.extreme);
    const ref::States init = ref::random_states(c.shape, c.options.variant, c.seed + 1);
    const ref::States* init_ptr = c.with_initial ? &init : nullptr;
    const ref::ForwardResult rec = ref::forward_recurrent(c.shape, c.options, in, init_ptr);
    const ref::ForwardResult chk =
        ref::forward_chunkwise(c.shape, c.options, in, init_ptr, c.chunk);
    CHECK(forward_error(chk, rec) < 1e-10);
    // The Sig variant has no stabilizer; the Exp one keeps m_t >= i_t.
    for (size_t t = 0; t < rec.m.size(); ++t) {
      if (c.options.variant == ref::Variant::Sig) REQUIRE(rec.m[t] == 0.0);
      if (c.options.variant == ref::Variant::Exp) REQUIRE(rec.m[t] >= in.i[t]);
    }
  }
}

TEST_CASE("forward outputs stay finite under extreme gates over long sequences",
          "[reference][forward]") {
  const ref::Shape sh{1, 4, 300, 4, 3};
  for (ref::Variant variant : {ref::Variant::Exp, ref::Variant::Sig}) {
    ref::Inputs in = ref::random_inputs(sh, 77, /*extreme=*/true);
    for (double& x : in.i) x *= 2.5;  // |i| up to ~100: exp(i) alone would overflow float32
    ref::Options o;
    o.variant = variant;
    const ref::ForwardResult rec = ref::forward_recurrent(sh, o, in, nullptr);
    const ref::ForwardResult chk = ref::forward_chunkwise(sh, o, in, nullptr, 37);
    CHECK(forward_error(chk, rec) < 1e-10);  // also +inf if anything is NaN or Inf
  }
}

TEST_CASE("S steps of step() reproduce forward_recurrent", "[reference][step]") {
  for (const Case& c : forward_cases()) {
    if (c.shape.S > 33) continue;
    INFO(describe(c));
    const ref::Shape& sh = c.shape;
    const ref::Inputs in = ref::random_inputs(sh, c.seed, c.extreme);
    const ref::States init = ref::random_states(sh, c.options.variant, c.seed + 1);
    const ref::ForwardResult rec =
        ref::forward_recurrent(sh, c.options, in, c.with_initial ? &init : nullptr);
    ref::States state = c.with_initial ? init : ref::States{};
    std::vector<double> h(rec.h.size());
    for (int64_t t = 0; t < sh.S; ++t) {
      const ref::Inputs tok = slice_time(sh, in, t, t + 1);
      const ref::StepResult r = ref::step(sh, c.options, tok.q, tok.k, tok.v, tok.i, tok.f, state);
      for (int64_t bh = 0; bh < sh.B * sh.NH; ++bh) {
        std::copy_n(r.h.begin() + bh * sh.Dv, sh.Dv, h.begin() + (bh * sh.S + t) * sh.Dv);
      }
      state = r.state;
    }
    CHECK(ref::relative_error(h, rec.h) < 1e-12);
    CHECK(ref::relative_error(state.C, rec.last.C) < 1e-12);
    CHECK(ref::relative_error(state.n, rec.last.n) < 1e-12);
    CHECK(ref::relative_error(state.m, rec.last.m) < 1e-12);
  }
}

TEST_CASE("chunkwise prefill then steps equals one forward over the whole sequence",
          "[reference][step]") {
  const ref::Shape full{2, 2, 29, 6, 5};
  for (ref::Variant variant : {ref::Variant::Exp, ref::Variant::Sig}) {
    for (bool extreme : {false, true}) {
      INFO((variant == ref::Variant::Exp ? "exp" : "sig") << (extreme ? " extreme" : ""));
      ref::Options o;
      o.variant = variant;
      const int64_t S1 = 19, S2 = full.S - S1;
      const ref::Inputs in = ref::random_inputs(full, 500 + int(extreme), extreme);
      const ref::States init = ref::random_states(full, variant, 501);
      const ref::ForwardResult whole = ref::forward_recurrent(full, o, in, &init);
      const ref::Shape first{full.B, full.NH, S1, full.Dqk, full.Dv};
      ref::States state =
          ref::forward_chunkwise(first, o, slice_time(full, in, 0, S1), &init, 8).last;
      std::vector<double> h, want;
      for (int64_t t = S1; t < full.S; ++t) {
        const ref::Inputs tok = slice_time(full, in, t, t + 1);
        const ref::StepResult r = ref::step(full, o, tok.q, tok.k, tok.v, tok.i, tok.f, state);
        h.insert(h.end(), r.h.begin(), r.h.end());
        for (int64_t bh = 0; bh < full.B * full.NH; ++bh) {
          const auto row = whole.h.begin() + (bh * full.S + t) * full.Dv;
          want.insert(want.end(), row, row + full.Dv);
        }
        state = r.state;
      }
      CHECK(S2 > 0);
      CHECK(ref::relative_error(h, want) < 1e-11);
      CHECK(ref::relative_error(state.C, whole.last.C) < 1e-11);
      CHECK(ref::relative_error(state.n, whole.last.n) < 1e-11);
      CHECK(ref::relative_error(state.m, whole.last.m) < 1e-11);
    }
  }
}

TEST_CASE("empty initial states mean zero states", "[reference][forward]") {
  const ref::Shape sh{1, 2, 9, 4, 3};
  const ref::Inputs in = ref::random_inputs(sh, 9);
  ref::States zeros;
  zeros.C.assign(size_t(2 * 4 * 3), 0.0);
  zeros.n.assign(size_t(2 * 4), 0.0);
  zeros.m.assign(2, 0.0);
  const ref::States empty;
  const ref::ForwardResult a = ref::forward_recurrent(sh, {}, in, nullptr);
  CHECK(forward_error(ref::forward_recurrent(sh, {}, in, &zeros), a) == 0.0);
  CHECK(forward_error(ref::forward_chunkwise(sh, {}, in, &empty, 4), a) < 1e-12);
  // And an initial state does change the output.
  const ref::States init = ref::random_states(sh, ref::Variant::Exp, 10);
  CHECK(ref::relative_error(ref::forward_recurrent(sh, {}, in, &init).h, a.h) > 1e-3);
}

TEST_CASE("inconsistent arguments throw std::invalid_argument", "[reference][errors]") {
  const ref::Shape sh{1, 2, 5, 4, 3};
  const ref::Inputs in = ref::random_inputs(sh, 3);
  const ref::Options o;
  const std::vector<double> dh(size_t(2 * 5 * 3), 1.0);
  ref::Inputs short_q = in;
  short_q.q.pop_back();
  CHECK_THROWS_AS(ref::forward_recurrent(sh, o, short_q, nullptr), std::invalid_argument);
  CHECK_THROWS_AS(ref::forward_chunkwise(sh, o, short_q, nullptr, 2), std::invalid_argument);
  CHECK_THROWS_AS(ref::backward(sh, o, short_q, nullptr, dh, nullptr), std::invalid_argument);
  ref::Inputs long_f = in;
  long_f.f.push_back(0.0);
  CHECK_THROWS_AS(ref::forward_recurrent(sh, o, long_f, nullptr), std::invalid_argument);
  const ref::Shape s0{1, 2, 0, 4, 3};
  CHECK_THROWS_AS(ref::forward_recurrent(s0, o, ref::Inputs{}, nullptr), std::invalid_argument);
  CHECK_THROWS_AS(ref::forward_chunkwise(s0, o, ref::Inputs{}, nullptr, 4), std::invalid_argument);
  CHECK_THROWS_AS(ref::random_inputs(s0, 1), std::invalid_argument);
  CHECK_THROWS_AS(ref::forward_chunkwise(sh, o, in, nullptr, 0), std::invalid_argument);
  CHECK_THROWS_AS(ref::backward_chunkwise(sh, o, in, nullptr, dh, nullptr, -1),
                  std::invalid_argument);
  ref::States bad_state;
  bad_state.C.assign(7, 0.0);
  CHECK_THROWS_AS(ref::forward_recurrent(sh, o, in, &bad_state), std::invalid_argument);
  const std::vector<double> bad_dh(dh.size() + 1, 1.0);
  CHECK_THROWS_AS(ref::backward(sh, o, in, nullptr, bad_dh, nullptr), std::invalid_argument);
  const std::vector<double> bad_dC(5, 1.0);
  CHECK_THROWS_AS(ref::backward_chunkwise(sh, o, in, nullptr, dh, &bad_dC, 2),
                  std::invalid_argument);
  ref::Options exp_no_norm;
  exp_no_norm.normalize = false;
  CHECK_THROWS_AS(ref::forward_recurrent(sh, exp_no_norm, in, nullptr), std::invalid_argument);
  ref::Options negative_eps;
  negative_eps.eps = -1.0;
  CHECK_THROWS_AS(ref::forward_recurrent(sh, negative_eps, in, nullptr), std::invalid_argument);
  const std::vector<double> q1(8, 0.0), v1(6, 0.0), g1(2, 0.0);
  CHECK_NOTHROW(ref::step(sh, o, q1, q1, v1, g1, g1, ref::States{}));
  CHECK_NOTHROW(ref::step(s0, o, q1, q1, v1, g1, g1, ref::States{}));  // step ignores S
  CHECK_THROWS_AS(ref::step(sh, o, q1, q1, q1, g1, g1, ref::States{}), std::invalid_argument);
  CHECK_THROWS_AS(ref::step(sh, o, q1, q1, v1, g1, g1, bad_state), std::invalid_argument);
  try {
    ref::forward_recurrent(sh, o, short_q, nullptr);
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("q (B, NH, S, Dqk)") != std::string::npos);
  }
}

TEST_CASE("relative_error", "[reference][errors]") {
  const double inf = std::numeric_limits<double>::infinity();
  CHECK(ref::relative_error({3.0, 4.0}, {3.0, 4.0}) == 0.0);
  CHECK(ref::relative_error({3.0, 4.5}, {3.0, 4.0}) == Approx(0.1));
  CHECK(ref::relative_error({3.0, 4.0}, {0.0, 0.0}) == Approx(5.0));
  CHECK(ref::relative_error({std::nan(""), 0.0}, {1.0, 0.0}) == inf);
  CHECK(ref::relative_error({inf, 0.0}, {1.0, 0.0}) == inf);
  CHECK(ref::relative_error({1.0, 0.0}, {std::nan(""), 0.0}) == inf);
  CHECK_THROWS_AS(ref::relative_error({1.0}, {1.0, 2.0}), std::invalid_argument);
}

TEST_CASE("random inputs are deterministic and shaped as documented", "[reference][random]") {
  const ref::Shape sh{2, 3, 400, 2, 2};
  const ref::Inputs a = ref::random_inputs(sh, 42), b = ref::random_inputs(sh, 42);
  CHECK(a.q == b.q);
  CHECK(a.f == b.f);
  CHECK(ref::random_inputs(sh, 43).q != a.q);
  CHECK(a.q != a.k);
  double mean_f = 0.0, var_i = 0.0;
  for (size_t t = 0; t < a.f.size(); ++t) {
    mean_f += a.f[t] / double(a.f.size());
    var_i += a.i[t] * a.i[t] / double(a.i.size());
  }
  CHECK(mean_f == Approx(3.0).margin(0.1));
  CHECK(var_i == Approx(1.0).margin(0.1));
  const ref::Inputs x = ref::random_inputs(sh, 42, /*extreme=*/true);
  const double max_abs_i = std::fabs(*std::max_element(
      x.i.begin(), x.i.end(), [](double l, double r) { return std::fabs(l) < std::fabs(r); }));
  CHECK(max_abs_i > 20.0);
  CHECK(ref::random_states(sh, ref::Variant::Sig, 1).m == std::vector<double>(6, 0.0));
}
