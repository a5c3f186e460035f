// Test data and comparison: deterministic random inputs and states, relative error, and the
// conditioned error measure for df.
// The generator is splitmix64 + Box-Muller rather than <random>'s distributions, whose
// output differs between standard libraries: a seed means the same data everywhere.
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "reference/detail.hpp"

namespace tfla::reference {
namespace {

constexpr double kPi = 3.14159265358979323846;

// splitmix64 stream; normal() draws N(0,1) by Box-Muller.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}

  uint64_t next_u64() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  // Uniform in (0, 1]: never 0, so log() below is finite.
  double uniform() { return (double(next_u64() >> 11) + 1.0) * 0x1.0p-53; }

  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double radius = std::sqrt(-2.0 * std::log(uniform()));
    const double angle = 2.0 * kPi * uniform();
    spare_ = radius * std::sin(angle);
    has_spare_ = true;
    return radius * std::cos(angle);
  }

 private:
  uint64_t state_;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

// A distinct stream per (seed, tensor) so that e.g. q and k are independent.
Rng stream(uint64_t seed, uint64_t tensor) {
  Rng mix(seed ^ (0xD1B54A32D192ED03ull * (tensor + 1)));
  return Rng(mix.next_u64());
}

std::vector<double> normal_vector(Rng rng, int64_t count, double scale, double offset) {
  std::vector<double> out(static_cast<size_t>(count));
  for (double& x : out) x = offset + scale * rng.normal();
  return out;
}

}  // namespace

Inputs random_inputs(const Shape& shape, uint64_t seed, bool extreme) {
  detail::check_shape_and_options(shape, Options{}, "random_inputs");
  const int64_t heads = shape.B * shape.NH;
  Inputs in;
  in.q = normal_vector(stream(seed, 0), heads * shape.S * shape.Dqk, 1.0, 0.0);
  in.k = normal_vector(stream(seed, 1), heads * shape.S * shape.Dqk, 1.0, 0.0);
  in.v = normal_vector(stream(seed, 2), heads * shape.S * shape.Dv, 1.0, 0.0);
  if (!extreme) {
    in.i = normal_vector(stream(seed, 3), heads * shape.S, 1.0, 0.0);
    in.f = normal_vector(stream(seed, 4), heads * shape.S, 1.0, 3.0);
    return in;
  }
  in.i = normal_vector(stream(seed, 3), heads * shape.S, 8.0, 0.0);
  in.f = normal_vector(stream(seed, 4), heads * shape.S, 8.0, 0.0);
  Rng pick = stream(seed, 5);
  constexpr double i_offsets[3] = {-10.0, 0.0, 10.0};
  constexpr double f_offsets[3] = {-4.0, 0.0, 4.0};
  for (int64_t bh = 0; bh < heads; ++bh) {
    const double oi = i_offsets[pick.next_u64() % 3];
    const double of = f_offsets[pick.next_u64() % 3];
    for (int64_t t = 0; t < shape.S; ++t) {
      in.i[size_t(bh * shape.S + t)] += oi;
      in.f[size_t(bh * shape.S + t)] += of;
    }
  }
  return in;
}

States random_states(const Shape& shape, Variant variant, uint64_t seed) {
  detail::check_shape_and_options(shape, Options{}, "random_states", /*ignore_s=*/true);
  const int64_t heads = shape.B * shape.NH;
  States st;
  st.C = normal_vector(stream(seed, 10), heads * shape.Dqk * shape.Dv, 1.0, 0.0);
  st.n = normal_vector(stream(seed, 11), heads * shape.Dqk, 1.0, 0.0);
  st.m = variant == Variant::Exp ? normal_vector(stream(seed, 12), heads, 2.0, 0.0)
                                 : std::vector<double>(size_t(heads), 0.0);
  return st;
}

double relative_error(const std::vector<double>& out, const std::vector<double>& ref) {
  if (out.size() != ref.size()) {
    throw std::invalid_argument("tfla::reference::relative_error: out has " +
                                std::to_string(out.size()) + " elements, ref has " +
                                std::to_string(ref.size()));
  }
  double diff2 = 0.0, ref2 = 0.0, out2 = 0.0;
  for (size_t t = 0; t < out.size(); ++t) {
    if (!std::isfinite(out[t]) || !std::isfinite(ref[t])) {
      return std::numeric_limits<double>::infinity();
    }
    diff2 += (out[t] - ref[t]) * (out[t] - ref[t]);
    ref2 += ref[t] * ref[t];
    out2 += out[t] * out[t];
  }
  if (ref2 == 0.0) return std::sqrt(out2);
  return std::sqrt(diff2) / std::sqrt(ref2);
}

double df_conditioned_error(const Shape& shape, const Inputs& in, const std::vector<double>& df,
                            const BackwardResult& want) {
  constexpr const char* fn = "df_conditioned_error";
  detail::check_shape_and_options(shape, Options{}, fn);
  detail::check_inputs_and_states(shape, in, nullptr, fn);
  detail::check_size(df, shape.B * shape.NH * shape.S, "df (B, NH, S)", fn);
  detail::check_size(want.df, shape.B * shape.NH * shape.S, "want.df (B, NH, S)", fn);
  detail::check_size(want.dq, shape.B * shape.NH * shape.S * shape.Dqk, "want.dq (B, NH, S, Dqk)",
                     fn);
  detail::check_size(want.dk, shape.B * shape.NH * shape.S * shape.Dqk, "want.dk (B, NH, S, Dqk)",
                     fn);
  double diff2 = 0.0, scale2 = 0.0;
  for (int64_t bh = 0; bh < shape.B * shape.NH; ++bh) {
    double suffix = 0.0;
    for (int64_t t = shape.S - 1; t >= 0; --t) {
      const int64_t row = bh * shape.S + t;
      double qdq = 0.0, kdk = 0.0;
      for (int64_t a = 0; a < shape.Dqk; ++a) {
        qdq += in.q[size_t(row * shape.Dqk + a)] * want.dq[size_t(row * shape.Dqk + a)];
        kdk += in.k[size_t(row * shape.Dqk + a)] * want.dk[size_t(row * shape.Dqk + a)];
      }
      suffix += std::fabs(qdq) + std::fabs(kdk);
      const double scale = suffix * detail::sigmoid(-in.f[size_t(row)]);
      const double diff = df[size_t(row)] - want.df[size_t(row)];
      if (!std::isfinite(diff)) return std::numeric_limits<double>::infinity();
      scale2 += scale * scale;
      diff2 += diff * diff;
    }
  }
  return scale2 > 0.0 ? std::sqrt(diff2 / scale2) : std::sqrt(diff2);
}

}  // namespace tfla::reference
