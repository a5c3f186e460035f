// The sequence split in the float64 reference: segment summaries folded from the initial state
// give the recurrent form's last state for every way of cutting the sequence (one token per
// segment, empty segments, extreme gates, both variants), and folding a segment's prefix into
// the state before it gives the state at any token inside it.
#include "tfla_catch.hpp"
#include <algorithm>
#include <cmath>
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

// Tokens [t0, t1) of every head of x, a (B, NH, S, d) tensor.
std::vector<double> slice(const ref::Shape& sh, const std::vector<double>& x, int64_t d, int64_t t0, int64_t t1) {
  std::vector<double> out;
  for (int64_t bh = 0; bh < sh.B * sh.NH; ++bh)
    out.insert(out.end(), x.begin() + (bh * sh.S + t0) * d, x.begin() + (bh * sh.S + t1) * d);
  return out;
}
ref::Inputs slice(const ref::Shape& sh, const ref::Inputs& in, int64_t t0, int64_t t1) {
  return {slice(sh, in.q, sh.Dqk, t0, t1), slice(sh, in.k, sh.Dqk, t0, t1), slice(sh, in.v, sh.Dv, t0, t1),
          slice(sh, in.i, 1, t0, t1), slice(sh, in.f, 1, t0, t1)};
}
ref::Inputs prefix(const ref::Shape& sh, const ref::Inputs& in, int64_t t) { return slice(sh, in, 0, t); }

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

TEST_CASE("simulated ranks: summaries exchanged forward, state gradients backward, give the whole sequence's results",
          "[reference][segments]") {
  // R ranks hold contiguous shards; each summarizes its shard alone, the summaries fold into the
  // state entering every rank, each rank runs its shard from that state, and the backward runs
  // the ranks in reverse handing each the next rank's initial-state gradient as its dC_last.
  // What a context-parallel split exchanges, against the one-pass float64 results.
  uint64_t seed = 900;
  for (ref::Variant v : {ref::Variant::Exp, ref::Variant::Sig})
    for (int ranks : {2, 3, 7}) {
      const ref::Shape sh{1, 2, 45, 8, 8};
      ref::Options o;
      o.variant = v;
      const ref::Inputs in = ref::random_inputs(sh, seed, /*extreme=*/ranks == 7);
      const ref::States st0 = ref::random_states(sh, v, seed + 1);
      const std::vector<double> dh = ref::random_inputs({1, 2, 45, 8, 8}, seed + 2).v;
      const std::vector<double> dCl = ref::random_states(sh, v, seed + 3).C;
      ++seed;
      const ref::ForwardResult whole = ref::forward_recurrent(sh, o, in, &st0);
      const ref::BackwardResult gwhole = ref::backward(sh, o, in, &st0, dh, &dCl);
      std::vector<int64_t> cuts;  // uneven shards
      for (int r = 0; r <= ranks; ++r) cuts.push_back(45 * r / ranks + (r > 0 && r < ranks ? r % 2 : 0));
      // forward: every rank's summary, then the fold gives each rank's initial state
      std::vector<ref::States> entering{st0};
      for (int r = 0; r + 1 < ranks; ++r)
        entering.push_back(ref::combine_segment(sh, o, &entering.back(), ref::segment_summary(sh, o, in, cuts[r], cuts[r + 1])));
      std::vector<ref::ForwardResult> fwd;
      for (int r = 0; r < ranks; ++r) {
        const ref::Shape shard{1, 2, cuts[r + 1] - cuts[r], 8, 8};
        fwd.push_back(ref::forward_recurrent(shard, o, slice(sh, in, cuts[r], cuts[r + 1]), &entering[r]));
      }
      // backward: the last rank gets dC_last, each earlier one the next rank's dC0
      std::vector<ref::BackwardResult> bwd(static_cast<size_t>(ranks));
      std::vector<double> dnext = dCl;
      for (int r = ranks - 1; r >= 0; --r) {
        const ref::Shape shard{1, 2, cuts[r + 1] - cuts[r], 8, 8};
        bwd[size_t(r)] = ref::backward(shard, o, slice(sh, in, cuts[r], cuts[r + 1]), &entering[r],
                                       slice(sh, dh, 8, cuts[r], cuts[r + 1]), &dnext);
        dnext = bwd[size_t(r)].d_initial.C;
      }
      // reassemble (B = 1: head by head, shard by shard)
      auto join = [&](auto get, int64_t d) {
        std::vector<double> out;
        for (int64_t h2 = 0; h2 < 2; ++h2)
          for (int r = 0; r < ranks; ++r) {
            const std::vector<double>& x = get(r);
            const int64_t n = cuts[r + 1] - cuts[r];
            out.insert(out.end(), x.begin() + h2 * n * d, x.begin() + (h2 + 1) * n * d);
          }
        return out;
      };
      INFO((v == ref::Variant::Exp ? "exp" : "sig") << " ranks " << ranks);
      CHECK(ref::relative_error(join([&](int r) -> const std::vector<double>& { return fwd[size_t(r)].h; }, 8), whole.h) < 1e-12);
      CHECK(states_error(fwd.back().last, whole.last) < 1e-12);
      CHECK(ref::relative_error(join([&](int r) -> const std::vector<double>& { return bwd[size_t(r)].dq; }, 8), gwhole.dq) < 1e-11);
      CHECK(ref::relative_error(join([&](int r) -> const std::vector<double>& { return bwd[size_t(r)].dk; }, 8), gwhole.dk) < 1e-11);
      CHECK(ref::relative_error(join([&](int r) -> const std::vector<double>& { return bwd[size_t(r)].dv; }, 8), gwhole.dv) < 1e-11);
      CHECK(ref::relative_error(join([&](int r) -> const std::vector<double>& { return bwd[size_t(r)].di; }, 1), gwhole.di) < 1e-11);
      CHECK(ref::relative_error(join([&](int r) -> const std::vector<double>& { return bwd[size_t(r)].df; }, 1), gwhole.df) < 1e-11);
      CHECK(ref::relative_error(dnext, gwhole.d_initial.C) < 1e-11);
    }
}

TEST_CASE("state gradients fold in reverse from each rank's own backward, with no chain between ranks",
          "[reference][segments]") {
  // The backward a context-parallel split runs: every rank at once runs its shard's backward from
  // its entering state with no dC_last (its local dC0) and hands on that and its shard's scalar
  // decays; combine_segment_backward folds the later ranks' into each rank's dC_last, which a
  // second backward of the shard takes. The folded gradients equal the serial chain's (the
  // whole sequence's backward, handed rank to rank).
  uint64_t seed = 1300;
  for (ref::Variant v : {ref::Variant::Exp, ref::Variant::Sig})
    for (bool extreme : {false, true})
      for (int ranks : {2, 5, 11}) {
        const ref::Shape sh{2, 2, 44, 8, 12};
        ref::Options o;
        o.variant = v;
        const ref::Inputs in = ref::random_inputs(sh, seed, extreme);
        const ref::States st0 = ref::random_states(sh, v, seed + 1);
        const std::vector<double> dh = ref::random_inputs({2, 2, 44, 12, 12}, seed + 2).v;
        const std::vector<double> dCl = ref::random_states(sh, v, seed + 3).C;
        ++seed;
        const ref::BackwardResult whole = ref::backward(sh, o, in, &st0, dh, &dCl);
        std::vector<int64_t> cuts;
        for (int r = 0; r <= ranks; ++r) cuts.push_back(44 * r / ranks);
        std::vector<ref::States> entering{st0};
        std::vector<ref::SegmentSummary> summary;
        for (int r = 0; r < ranks; ++r) {
          summary.push_back(ref::segment_summary(sh, o, in, cuts[r], cuts[r + 1]));
          entering.push_back(ref::combine_segment(sh, o, &entering.back(), summary.back()));
        }
        // each rank alone: its shard's dC0 without a dC_last
        auto shard_of = [&](int r) { return ref::Shape{2, 2, cuts[r + 1] - cuts[r], 8, 12}; };
        std::vector<std::vector<double>> local;
        for (int r = 0; r < ranks; ++r)
          local.push_back(ref::backward(shard_of(r), o, slice(sh, in, cuts[r], cuts[r + 1]), &entering[r],
                                        slice(sh, dh, 12, cuts[r], cuts[r + 1]), nullptr)
                              .d_initial.C);
        // the exchange: dC_last of rank r folded from ranks r + 1 .. R - 1 and the global dC_last
        std::vector<std::vector<double>> d_last(static_cast<size_t>(ranks));
        d_last[size_t(ranks - 1)] = dCl;
        for (int r = ranks - 1; r > 0; --r)
          d_last[size_t(r - 1)] = ref::combine_segment_backward(sh, o, entering[r].m, entering[r + 1].m,
                                                                summary[size_t(r)].g, local[size_t(r)],
                                                                &d_last[size_t(r)]);
        const std::vector<double> dC0 = ref::combine_segment_backward(sh, o, entering[0].m, entering[1].m,
                                                                      summary[0].g, local[0], &d_last[0]);
        INFO((v == ref::Variant::Exp ? "exp" : "sig") << (extreme ? " extreme" : "") << " ranks " << ranks);
        CHECK(ref::relative_error(dC0, whole.d_initial.C) < 1e-11);
        // each rank's second backward, with its folded dC_last, gives its part of every gradient
        std::vector<double> dq, df;
        for (int r = 0; r < ranks; ++r) {
          const ref::BackwardResult g = ref::backward(shard_of(r), o, slice(sh, in, cuts[r], cuts[r + 1]),
                                                      &entering[r], slice(sh, dh, 12, cuts[r], cuts[r + 1]),
                                                      &d_last[size_t(r)]);
          CHECK(ref::relative_error(g.dq, slice(sh, whole.dq, 8, cuts[r], cuts[r + 1])) < 1e-11);
          CHECK(ref::relative_error(g.dv, slice(sh, whole.dv, 12, cuts[r], cuts[r + 1])) < 1e-11);
          CHECK(ref::relative_error(g.di, slice(sh, whole.di, 1, cuts[r], cuts[r + 1])) < 1e-11);
          CHECK(ref::relative_error(g.df, slice(sh, whole.df, 1, cuts[r], cuts[r + 1])) < 1e-10);
          if (r > 0) CHECK(ref::relative_error(g.d_initial.C, d_last[size_t(r - 1)]) < 1e-11);
        }
      }
}

TEST_CASE("combine_segment_backward names a wrong size, and without dC_after is the local gradient",
          "[reference][segments]") {
  const ref::Shape sh{1, 2, 1, 4, 4};
  ref::Options o;
  const std::vector<double> m(2, 0.0), g(2, -1.0), local(32, 0.5), d(32, 1.0);
  CHECK(ref::combine_segment_backward(sh, o, m, m, g, local, nullptr) == local);
  const std::vector<double> got = ref::combine_segment_backward(sh, o, m, m, g, local, &d);
  CHECK(got[0] == Approx(0.5 + std::exp(-1.0)));
  CHECK_THROWS_AS(ref::combine_segment_backward(sh, o, m, m, g, std::vector<double>(31), &d), std::invalid_argument);
  CHECK_THROWS_AS(ref::combine_segment_backward(sh, o, std::vector<double>(1), m, g, local, &d), std::invalid_argument);
  o.variant = ref::Variant::Sig;  // the stabilizers are not read
  CHECK(ref::combine_segment_backward(sh, o, {}, {}, g, local, &d)[0] == Approx(0.5 + std::exp(-1.0)));
}
