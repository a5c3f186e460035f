// The sequence split in the float64 reference: segment summaries folded from the initial state
// give the recurrent form's last state for every way of cutting the sequence (one token per
// segment, empty segments, extreme gates, both variants), and folding a segment's prefix into
// the state before it gives the state at any token inside it.
#include "tfla_catch.hpp"
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "reference/reference.hpp"

namespace ref = tfla::reference;

namespace {

double states_error(const ref::States& a, const ref::States& b) {
  return std::max({ref::relative_error(a.C, b.C), ref::relative_error(a.n, b.n), ref::relative_error(a.m, b.m)});
}

// The fold over segments with the given cut points (0 = c_0 <= c_1 <= ... <= c_k = S).
ref::States fold(const ref::Shape& sh, const ref::Options& o, const ref::Inputs& in, const ref::States* init,
                 const std::vector<int64_t>& cuts) {
  ref::States st = init ? *init : ref::States{};
  for (size_t j = 0; j + 1 < cuts.size(); ++j) {
    const ref::SegmentSummary seg = ref::segment_summary(sh, o, in, cuts[j], cuts[j + 1]);
    st = ref::combine_segment(sh, o, &st, seg);
  }
  return st;
}

// The first t tokens of every head of in.
ref::Inputs prefix(const ref::Shape& sh, const ref::Inputs& in, int64_t t) {
  ref::Inputs p;
  auto take = [&](std::vector<double>& dst, const std::vector<double>& src, int64_t d) {
    for (int64_t bh = 0; bh < sh.B * sh.NH; ++bh)
      dst.insert(dst.end(), src.begin() + bh * sh.S * d, src.begin() + (bh * sh.S + t) * d);
  };
  take(p.q, in.q, sh.Dqk);
  take(p.k, in.k, sh.Dqk);
  take(p.v, in.v, sh.Dv);
  take(p.i, in.i, 1);
  take(p.f, in.f, 1);
  return p;
}

}  // namespace

TEST_CASE("segment summaries compose to the recurrent form's last state", "[reference][segments]") {
  uint64_t seed = 300;
  for (ref::Variant v : {ref::Variant::Exp, ref::Variant::Sig})
    for (bool extreme : {false, true})
      for (bool init : {false, true}) {
        const ref::Shape sh{2, 2, 37, 8, 12};
        ref::Options o;
        o.variant = v;
        const ref::Inputs in = ref::random_inputs(sh, seed, extreme);
        const ref::States st0 = ref::random_states(sh, v, seed + 1);
        const ref::States* initial = init ? &st0 : nullptr;
        const ref::States want = ref::forward_recurrent(sh, o, in, initial).last;
        // many ways to cut: whole, halves, uneven, a token per segment, with empty segments
        std::vector<std::vector<int64_t>> cuttings = {{0, 37}, {0, 18, 37}, {0, 1, 5, 30, 36, 37}, {0, 0, 10, 10, 37, 37}};
        std::vector<int64_t> each(38);
        for (int64_t t = 0; t <= 37; ++t) each[size_t(t)] = t;
        cuttings.push_back(each);
        for (const auto& cuts : cuttings) {
          INFO((v == ref::Variant::Exp ? "exp" : "sig") << (extreme ? " extreme" : "") << (init ? " init" : "")
                                                         << " segments " << cuts.size() - 1);
          CHECK(states_error(fold(sh, o, in, initial, cuts), want) < 1e-12);
        }
        ++seed;
      }
}

TEST_CASE("a segment's prefix folded into the state before it gives the state at each token", "[reference][segments]") {
  const ref::Shape sh{1, 2, 40, 8, 8};
  for (ref::Variant v : {ref::Variant::Exp, ref::Variant::Sig}) {
    ref::Options o;
    o.variant = v;
    const ref::Inputs in = ref::random_inputs(sh, 77, /*extreme=*/true);
    // the recurrent form over the first t tokens alone
    auto first = [&](int64_t t) { return ref::forward_recurrent({1, 2, t, 8, 8}, o, prefix(sh, in, t), nullptr).last; };
    const ref::States before = first(16);
    for (int64_t t = 16; t <= 40; t += 6) {
      const ref::States got = ref::combine_segment(sh, o, &before, ref::segment_summary(sh, o, in, 16, t));
      INFO("t = " << t);
      CHECK(states_error(got, first(t)) < 1e-12);
    }
  }
}

TEST_CASE("segment_summary names a range outside the sequence", "[reference][segments]") {
  const ref::Shape sh{1, 1, 10, 4, 4};
  const ref::Inputs in = ref::random_inputs(sh, 1);
  CHECK_THROWS_AS(ref::segment_summary(sh, {}, in, 5, 11), std::invalid_argument);
  CHECK_THROWS_AS(ref::segment_summary(sh, {}, in, 6, 5), std::invalid_argument);
  CHECK_THROWS_AS(ref::segment_summary(sh, {}, in, -1, 3), std::invalid_argument);
  const ref::SegmentSummary empty = ref::segment_summary(sh, {}, in, 4, 4);
  CHECK(empty.g[0] == 0.0);
}
