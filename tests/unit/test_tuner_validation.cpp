// The tuner worker's judgement of a candidate's df (tuner/validation.hpp): the same measure as
// the float64 reference's df_conditioned_error, from float outputs as the worker downloads them.
#include "tfla_catch.hpp"
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "reference/reference.hpp"
#include "tuner/validation.hpp"

namespace ref = tfla::reference;
using namespace tfla::tuner;

namespace {
std::vector<float> narrow(const std::vector<double>& x) { return std::vector<float>(x.begin(), x.end()); }
std::vector<double> widen(const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); }
// Inputs whose values are floats, so the reference and the worker read the same numbers.
ref::Inputs float_inputs(const ref::Shape& sh, uint64_t seed, bool extreme) {
  ref::Inputs in = ref::random_inputs(sh, seed, extreme);
  for (std::vector<double>* x : {&in.q, &in.k, &in.v, &in.i, &in.f}) *x = widen(narrow(*x));
  return in;
}
}  // namespace

TEST_CASE("abs_row_dots: |x_r . dx_r| per row", "[tuner][validation]") {
  const std::vector<float> x{1, 2, 3, -1, 0, 2}, dx{1, 1, 1, 4, 5, 1};
  const std::vector<double> d = abs_row_dots(x, dx, 2, 3);
  REQUIRE(d.size() == 2);
  CHECK(d[0] == 6.0);
  CHECK(d[1] == 2.0);  // |-4 + 0 + 2|
  CHECK_THROWS_AS(abs_row_dots(x, dx, 3, 3), std::invalid_argument);
  CHECK_THROWS_AS(abs_row_dots(x, dx, 2, 0), std::invalid_argument);
}

TEST_CASE("df_scaled_error is the reference's df_conditioned_error", "[tuner][validation]") {
  for (bool extreme : {false, true}) {
    const ref::Shape sh{1, 3, 41, 8, 4};
    const ref::Inputs in = float_inputs(sh, extreme ? 12 : 11, extreme);
    const std::vector<double> dh = widen(narrow(ref::random_inputs(ref::Shape{1, 3, 41, 4, 4}, 13).v));
    const ref::BackwardResult want = ref::backward(sh, {}, in, nullptr, dh, nullptr);
    ref::BackwardResult want_f = want;  // the reference's dq, dk as the worker holds them: floats
    want_f.dq = widen(narrow(want.dq));
    want_f.dk = widen(narrow(want.dk));
    want_f.df = widen(narrow(want.df));
    std::vector<float> df = narrow(want.df);
    for (size_t t = 0; t < df.size(); t += 3) df[t] += 1e-3f * static_cast<float>(t % 7) - 2e-3f;
    const int64_t rows = sh.B * sh.NH * sh.S;
    const std::vector<double> scale =
        df_error_scale(abs_row_dots(narrow(in.q), narrow(want.dq), rows, sh.Dqk),
                       abs_row_dots(narrow(in.k), narrow(want.dk), rows, sh.Dqk), narrow(in.f), sh.B * sh.NH, sh.S);
    const double got = df_scaled_error(df, narrow(want.df), scale);
    const double expect = ref::df_conditioned_error(sh, in, widen(df), want_f);
    INFO("extreme gates " << extreme << ": " << got << " against " << expect);
    CHECK(got > 0.0);
    CHECK(std::fabs(got - expect) <= 1e-9 * expect);
    CHECK(df_scaled_error(narrow(want.df), narrow(want.df), scale) == 0.0);
  }
}

TEST_CASE("df_error_scale sums each head's rows from its end", "[tuner][validation]") {
  // two heads of two rows, f = 0 (sigmoid(-f) = 1/2)
  const std::vector<double> qdq{1, 2, 3, 4}, kdk{0, 1, 0, 0};
  const std::vector<double> s = df_error_scale(qdq, kdk, std::vector<float>(4, 0.f), 2, 2);
  CHECK(s == std::vector<double>{2.0, 1.5, 3.5, 2.0});
  CHECK_THROWS_AS(df_error_scale(qdq, kdk, std::vector<float>(3, 0.f), 2, 2), std::invalid_argument);
}

TEST_CASE("df_scaled_error: non-finite values, a zero scale, sizes", "[tuner][validation]") {
  const std::vector<float> ref_df{1.f, 2.f};
  CHECK(df_scaled_error({1.f, std::nanf("")}, ref_df, {1.0, 1.0}) == std::numeric_limits<double>::infinity());
  CHECK(df_scaled_error({1.f, INFINITY}, ref_df, {1.0, 1.0}) == std::numeric_limits<double>::infinity());
  CHECK(df_scaled_error({1.f, 5.f}, ref_df, {0.0, 0.0}) == 3.0);  // no scale: the plain distance
  CHECK(df_scaled_error({1.f, 5.f}, ref_df, {0.0, 1.5}) == 2.0);
  CHECK_THROWS_AS(df_scaled_error({1.f}, ref_df, {1.0, 1.0}), std::invalid_argument);
}
