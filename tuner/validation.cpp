#include "tuner/validation.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace tfla::tuner {
namespace {
void require(bool ok, const char* fn, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string(fn) + ": " + what);
}
}  // namespace

std::vector<double> abs_row_dots(const std::vector<float>& x, const std::vector<float>& dx, int64_t rows,
                                 int64_t d) {
  require(rows >= 0 && d > 0, "abs_row_dots", "rows must be >= 0 and d > 0");
  const size_t n = static_cast<size_t>(rows) * static_cast<size_t>(d);
  require(x.size() == n && dx.size() == n, "abs_row_dots",
          "x and dx must hold rows x d = " + std::to_string(n) + " values (got " + std::to_string(x.size()) +
              " and " + std::to_string(dx.size()) + ")");
  std::vector<double> out(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = x.data() + r * d;
    const float* b = dx.data() + r * d;
    double s = 0.0;
    for (int64_t c = 0; c < d; ++c) s += static_cast<double>(a[c]) * b[c];
    out[static_cast<size_t>(r)] = std::fabs(s);
  }
  return out;
}

std::vector<double> df_error_scale(const std::vector<double>& qdq, const std::vector<double>& kdk,
                                   const std::vector<float>& f, int64_t heads, int64_t S) {
  require(heads >= 0 && S >= 0, "df_error_scale", "heads and S must be >= 0");
  const size_t n = static_cast<size_t>(heads) * static_cast<size_t>(S);
  require(qdq.size() == n && kdk.size() == n && f.size() == n, "df_error_scale",
          "qdq, kdk and f must hold heads x S = " + std::to_string(n) + " values");
  std::vector<double> scale(n);
  for (int64_t h = 0; h < heads; ++h) {
    double suffix = 0.0;
    for (int64_t t = S - 1; t >= 0; --t) {
      const size_t row = static_cast<size_t>(h * S + t);
      suffix += qdq[row] + kdk[row];
      scale[row] = suffix / (1.0 + std::exp(static_cast<double>(f[row])));  // sigmoid(-f) suffix
    }
  }
  return scale;
}

double df_scaled_error(const std::vector<float>& df, const std::vector<float>& df_ref,
                       const std::vector<double>& scale) {
  require(df.size() == df_ref.size() && df.size() == scale.size(), "df_scaled_error",
          "df, df_ref and scale must have one size (got " + std::to_string(df.size()) + ", " +
              std::to_string(df_ref.size()) + " and " + std::to_string(scale.size()) + ")");
  double diff2 = 0.0, scale2 = 0.0;
  for (size_t x = 0; x < df.size(); ++x) {
    const double d = static_cast<double>(df[x]) - df_ref[x];
    if (!std::isfinite(d)) return std::numeric_limits<double>::infinity();
    diff2 += d * d;
    scale2 += scale[x] * scale[x];
  }
  return scale2 > 0.0 ? std::sqrt(diff2 / scale2) : std::sqrt(diff2);
}

}  // namespace tfla::tuner
