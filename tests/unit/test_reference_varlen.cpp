// Packed sequences of variable lengths in the float64 reference (forward_varlen, backward_varlen,
// check_cu_seqlens), each checked against a computation that shares none of its slicing: a
// token-by-token run of the one-token step that restarts at every boundary, and the batched
// forward and backward on the sequences padded to one length with tokens that change nothing.
// Lengths include empty sequences, one-token ones and odd lengths; both variants, with and
// without initial states.
#include "tfla_catch.hpp"
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "reference/reference.hpp"

namespace ref = tfla::reference;

namespace {

constexpr int64_t NH = 2, DQK = 8, DV = 12;

std::vector<int64_t> offsets(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> cu{0};
  for (int64_t L : lengths) cu.push_back(cu.back() + L);
  return cu;
}

// Head h's d values at token t of a (1, NH, T, d) tensor.
std::vector<double> at(const std::vector<double>& x, int64_t T, int64_t d, int64_t h, int64_t t) {
  return std::vector<double>(x.begin() + (h * T + t) * d, x.begin() + (h * T + t + 1) * d);
}
// Sequence j's (NH, rest) block of an (N, NH, rest) vector.
std::vector<double> block(const std::vector<double>& x, int64_t j, int64_t per) {
  return x.empty() ? std::vector<double>{} : std::vector<double>(x.begin() + j * per, x.begin() + (j + 1) * per);
}

ref::Options options_of(int v) {
  ref::Options o;
  o.variant = v == 2 ? ref::Variant::Exp : ref::Variant::Sig;
  o.normalize = v != 1;
  return o;
}

// The packed forward by the one-token step: every sequence from its initial state, token by token.
ref::ForwardResult by_steps(const ref::Options& o, const ref::Inputs& in, const std::vector<int64_t>& cu,
                            const ref::States* init) {
  const int64_t N = static_cast<int64_t>(cu.size()) - 1, T = cu.back();
  const ref::Shape one{1, NH, 1, DQK, DV};
  ref::ForwardResult out;
  out.h.assign(size_t(NH * T * DV), 0.0);
  for (int64_t j = 0; j < N; ++j) {
    ref::States st;
    if (init) {
      st.C = block(init->C, j, NH * DQK * DV);
      st.n = block(init->n, j, NH * DQK);
      if (o.variant == ref::Variant::Exp) st.m = block(init->m, j, NH);
    }
    for (int64_t t = cu[size_t(j)]; t < cu[size_t(j + 1)]; ++t) {
      std::vector<double> q, k, v, i, f;
      for (int64_t h = 0; h < NH; ++h) {
        for (double x : at(in.q, T, DQK, h, t)) q.push_back(x);
        for (double x : at(in.k, T, DQK, h, t)) k.push_back(x);
        for (double x : at(in.v, T, DV, h, t)) v.push_back(x);
        i.push_back(in.i[size_t(h * T + t)]);
        f.push_back(in.f[size_t(h * T + t)]);
      }
      const ref::StepResult r = ref::step(one, o, q, k, v, i, f, st);
      for (int64_t h = 0; h < NH; ++h)
        std::copy(r.h.begin() + h * DV, r.h.begin() + (h + 1) * DV, out.h.begin() + (h * T + t) * DV);
      st = r.state;
    }
    if (st.C.empty()) st.C.assign(size_t(NH * DQK * DV), 0.0);
    if (st.n.empty()) st.n.assign(size_t(NH * DQK), 0.0);
    if (st.m.empty()) st.m.assign(size_t(NH), 0.0);
    out.last.C.insert(out.last.C.end(), st.C.begin(), st.C.end());
    out.last.n.insert(out.last.n.end(), st.n.begin(), st.n.end());
    out.last.m.insert(out.last.m.end(), st.m.begin(), st.m.end());
  }
  return out;
}

// The sequences as a batch (N, NH, Lmax, d), each padded after its end with tokens that change
// nothing (input gate -1000: exp(i~ - m) is 0; forget gate +1000: f~ = 0, no decay), so the
// state at the end of the padding is the state at the end of the sequence.
struct Padded {
  ref::Shape shape;
  ref::Inputs in;
};
Padded pad(const ref::Inputs& in, const std::vector<int64_t>& cu) {
  const int64_t N = static_cast<int64_t>(cu.size()) - 1, T = cu.back();
  int64_t L = 1;
  for (int64_t j = 0; j < N; ++j) L = std::max(L, cu[size_t(j + 1)] - cu[size_t(j)]);
  Padded p{{N, NH, L, DQK, DV}, {}};
  p.in.q.assign(size_t(N * NH * L * DQK), 0.0);
  p.in.k.assign(size_t(N * NH * L * DQK), 0.0);
  p.in.v.assign(size_t(N * NH * L * DV), 0.0);
  p.in.i.assign(size_t(N * NH * L), -1000.0);
  p.in.f.assign(size_t(N * NH * L), 1000.0);
  for (int64_t j = 0; j < N; ++j)
    for (int64_t h = 0; h < NH; ++h)
      for (int64_t t = cu[size_t(j)]; t < cu[size_t(j + 1)]; ++t) {
        const int64_t r = (j * NH + h) * L + (t - cu[size_t(j)]);
        std::copy_n(in.q.begin() + (h * T + t) * DQK, DQK, p.in.q.begin() + r * DQK);
        std::copy_n(in.k.begin() + (h * T + t) * DQK, DQK, p.in.k.begin() + r * DQK);
        std::copy_n(in.v.begin() + (h * T + t) * DV, DV, p.in.v.begin() + r * DV);
        p.in.i[size_t(r)] = in.i[size_t(h * T + t)];
        p.in.f[size_t(r)] = in.f[size_t(h * T + t)];
      }
  return p;
}
// The packed rows of a padded (N, NH, L, d) result, as (1, NH, T, d).
std::vector<double> unpad(const std::vector<double>& x, const std::vector<int64_t>& cu, int64_t L, int64_t d) {
  const int64_t N = static_cast<int64_t>(cu.size()) - 1, T = cu.back();
  std::vector<double> out(size_t(NH * T * d));
  for (int64_t j = 0; j < N; ++j)
    for (int64_t h = 0; h < NH; ++h)
      for (int64_t t = cu[size_t(j)]; t < cu[size_t(j + 1)]; ++t)
        std::copy_n(x.begin() + ((j * NH + h) * L + t - cu[size_t(j)]) * d, d, out.begin() + (h * T + t) * d);
  return out;
}

const std::vector<std::vector<int64_t>> kLengths = {
    {5, 0, 1, 17, 3, 0}, {1}, {33}, {0, 7, 0}, {2, 2, 2, 2, 2, 9}};

}  // namespace

TEST_CASE("packed sequences equal a token-by-token run that restarts at every boundary", "[reference][varlen]") {
  uint64_t seed = 100;
  for (int v = 0; v < 3; ++v)
    for (const auto& lengths : kLengths)
      for (bool with_init : {false, true})
        for (bool extreme : {false, true}) {
          const std::vector<int64_t> cu = offsets(lengths);
          const int64_t N = static_cast<int64_t>(lengths.size()), T = cu.back();
          const ref::Options o = options_of(v);
          const ref::Shape sh{1, NH, T, DQK, DV};
          const ref::Inputs in = ref::random_inputs(sh, ++seed, extreme);
          const ref::States init = ref::random_states({N, NH, 1, DQK, DV}, o.variant, ++seed);
          INFO("variant " << v << " N " << N << " T " << T << " init " << with_init << " extreme " << extreme);
          const ref::ForwardResult got = ref::forward_varlen(sh, o, in, cu, with_init ? &init : nullptr);
          const ref::ForwardResult want = by_steps(o, in, cu, with_init ? &init : nullptr);
          CHECK(ref::relative_error(got.h, want.h) < 1e-12);
          CHECK(ref::relative_error(got.last.C, want.last.C) < 1e-12);
          CHECK(ref::relative_error(got.last.n, want.last.n) < 1e-12);
          CHECK(ref::relative_error(got.last.m, want.last.m) < 1e-12);
          REQUIRE(got.last.C.size() == size_t(N * NH * DQK * DV));
          for (int64_t j = 0; j < N; ++j)
            if (lengths[size_t(j)] == 0 && with_init) {  // an empty sequence: its initial state
              CHECK(block(got.last.C, j, NH * DQK * DV) == block(init.C, j, NH * DQK * DV));
              CHECK(block(got.last.n, j, NH * DQK) == block(init.n, j, NH * DQK));
            }
        }
}

TEST_CASE("packed forward and backward equal the padded batch's on the real tokens", "[reference][varlen]") {
  uint64_t seed = 500;
  for (int v = 0; v < 3; ++v)
    for (const auto& lengths : kLengths)
      for (bool with_init : {false, true}) {
        const std::vector<int64_t> cu = offsets(lengths);
        const int64_t N = static_cast<int64_t>(lengths.size()), T = cu.back();
        const ref::Options o = options_of(v);
        const ref::Shape sh{1, NH, T, DQK, DV};
        const ref::Inputs in = ref::random_inputs(sh, ++seed);
        const ref::States init = ref::random_states({N, NH, 1, DQK, DV}, o.variant, ++seed);
        const ref::Inputs grads = ref::random_inputs({N, NH, T, DQK, DV}, ++seed);  // dh and dC_last from here
        std::vector<double> dh(grads.v.begin(), grads.v.begin() + NH * T * DV);
        std::vector<double> dC_last(grads.q.begin(), grads.q.begin() + N * NH * DQK * DV);
        INFO("variant " << v << " N " << N << " T " << T << " init " << with_init);
        const Padded p = pad(in, cu);
        const int64_t L = p.shape.S;
        // dh of the padded rows is zero: they add nothing to the loss
        std::vector<double> dh_pad(size_t(N * NH * L * DV), 0.0);
        for (int64_t j = 0; j < N; ++j)
          for (int64_t h = 0; h < NH; ++h)
            for (int64_t t = cu[size_t(j)]; t < cu[size_t(j + 1)]; ++t)
              std::copy_n(dh.begin() + (h * T + t) * DV, DV, dh_pad.begin() + ((j * NH + h) * L + t - cu[size_t(j)]) * DV);

        const ref::ForwardResult got = ref::forward_varlen(sh, o, in, cu, with_init ? &init : nullptr);
        const ref::ForwardResult want = ref::forward_recurrent(p.shape, o, p.in, with_init ? &init : nullptr);
        CHECK(ref::relative_error(got.h, unpad(want.h, cu, L, DV)) < 1e-12);
        CHECK(ref::relative_error(got.norm, unpad(want.norm, cu, L, 1)) < 1e-12);
        CHECK(ref::relative_error(got.last.C, want.last.C) < 1e-12);
        CHECK(ref::relative_error(got.last.n, want.last.n) < 1e-12);
        CHECK(ref::relative_error(got.last.m, want.last.m) < 1e-12);

        const ref::BackwardResult gb = ref::backward_varlen(sh, o, in, cu, with_init ? &init : nullptr, dh, &dC_last);
        const ref::BackwardResult wb = ref::backward(p.shape, o, p.in, with_init ? &init : nullptr, dh_pad, &dC_last);
        CHECK(ref::relative_error(gb.dq, unpad(wb.dq, cu, L, DQK)) < 1e-10);
        CHECK(ref::relative_error(gb.dk, unpad(wb.dk, cu, L, DQK)) < 1e-10);
        CHECK(ref::relative_error(gb.dv, unpad(wb.dv, cu, L, DV)) < 1e-10);
        CHECK(ref::relative_error(gb.di, unpad(wb.di, cu, L, 1)) < 1e-10);
        CHECK(ref::relative_error(gb.df, unpad(wb.df, cu, L, 1)) < 1e-10);
        CHECK(ref::relative_error(gb.d_initial.C, wb.d_initial.C) < 1e-10);
      }
}

TEST_CASE("one packed sequence is the plain forward and backward", "[reference][varlen]") {
  const ref::Options o = options_of(2);
  const ref::Shape sh{1, NH, 40, DQK, DV};
  const ref::Inputs in = ref::random_inputs(sh, 7, true);
  const ref::States init = ref::random_states(sh, o.variant, 8);
  const std::vector<double> dh = ref::random_inputs(sh, 9).v;
  const ref::ForwardResult a = ref::forward_varlen(sh, o, in, {0, 40}, &init);
  const ref::ForwardResult b = ref::forward_recurrent(sh, o, in, &init);
  CHECK(a.h == b.h);
  CHECK(a.last.C == b.last.C);
  CHECK(a.last.m == b.last.m);
  const ref::BackwardResult ga = ref::backward_varlen(sh, o, in, {0, 40}, &init, dh, nullptr);
  const ref::BackwardResult gb = ref::backward(sh, o, in, &init, dh, nullptr);
  CHECK(ga.dq == gb.dq);
  CHECK(ga.df == gb.df);
  CHECK(ga.d_initial.C == gb.d_initial.C);
}

TEST_CASE("an empty packed sequence passes its state and its state gradient through", "[reference][varlen]") {
  const ref::Options o = options_of(2);
  const std::vector<int64_t> cu = {0, 0, 4, 4};  // empty, 4 tokens, empty
  const ref::Shape sh{1, NH, 4, DQK, DV};
  const ref::Inputs in = ref::random_inputs(sh, 11);
  const ref::States init = ref::random_states({3, NH, 1, DQK, DV}, o.variant, 12);
  const std::vector<double> dh = ref::random_inputs(sh, 13).v;
  std::vector<double> dC(size_t(3 * NH * DQK * DV));
  for (size_t e = 0; e < dC.size(); ++e) dC[e] = 0.001 * double(e % 97) - 0.04;
  const ref::ForwardResult f = ref::forward_varlen(sh, o, in, cu, &init);
  const int64_t per = NH * DQK * DV;
  CHECK(block(f.last.C, 0, per) == block(init.C, 0, per));
  CHECK(block(f.last.C, 2, per) == block(init.C, 2, per));
  CHECK(block(f.last.m, 2, NH) == block(init.m, 2, NH));
  const ref::BackwardResult g = ref::backward_varlen(sh, o, in, cu, &init, dh, &dC);
  CHECK(block(g.d_initial.C, 0, per) == block(dC, 0, per));
  CHECK(block(g.d_initial.C, 2, per) == block(dC, 2, per));
  // all sequences empty: no tokens at all
  const ref::Shape none{1, NH, 0, DQK, DV};
  const ref::ForwardResult z = ref::forward_varlen(none, o, ref::Inputs{}, {0, 0, 0, 0}, &init);
  CHECK(z.h.empty());
  CHECK(z.last.C == init.C);
}

TEST_CASE("cu_seqlens that break a rule are refused by name", "[reference][varlen]") {
  const ref::Options o = options_of(2);
  const ref::Shape sh{1, NH, 10, DQK, DV};
  const ref::Inputs in = ref::random_inputs(sh, 21);
  auto refused = [&](const ref::Shape& s, const std::vector<int64_t>& cu, const std::string& says) {
    try {
      ref::forward_varlen(s, o, in, cu, nullptr);
      FAIL("forward_varlen accepted cu_seqlens");
    } catch (const std::invalid_argument& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(says) != std::string::npos);
    }
  };
  refused(sh, {0, 4, 3, 10}, "cu_seqlens[2] = 3 is below cu_seqlens[1] = 4");
  refused(sh, {1, 4, 10}, "cu_seqlens[0] = 1, must be 0");
  refused(sh, {0, 4, 9}, "cu_seqlens[N] = 9 is not the packed token count T = 10");
  refused(sh, {0}, "N + 1 >= 2 offsets");
  refused({2, NH, 5, DQK, DV}, {0, 5}, "B = 1");
  ref::States bad = ref::random_states({2, NH, 1, DQK, DV}, o.variant, 22);  // 2 states for 3 sequences
  CHECK_THROWS_WITH(ref::forward_varlen(sh, o, in, {0, 3, 6, 10}, &bad),
                    Catch::Contains("initial C (N, NH, Dqk, Dv)"));
}
