// Argument checks, per-head views and the one-token recurrent update shared by the reference.
#include "reference/detail.hpp"

#include <stdexcept>
#include <string>

namespace tfla::reference::detail {

namespace {

[[noreturn]] void fail(const char* fn, const std::string& message) {
  throw std::invalid_argument(std::string("tfla::reference::") + fn + ": " + message);
}

}  // namespace

double resolve_scale(const Shape& shape, const Options& options) {
  return options.scale != 0.0 ? options.scale : 1.0 / std::sqrt(double(shape.Dqk));
}

void check_size(const std::vector<double>& v, int64_t expected, const char* what, const char* fn) {
  if (int64_t(v.size()) != expected) {
    fail(fn, std::string(what) + " has " + std::to_string(v.size()) + " elements, expected " +
                 std::to_string(expected));
  }
}

void check_shape_and_options(const Shape& shape, const Options& options, const char* fn,
                             bool ignore_s) {
  const auto positive = [&](int64_t value, const char* name) {
    if (value < 1) fail(fn, std::string(name) + " = " + std::to_string(value) + ", must be >= 1");
  };
  positive(shape.B, "B");
  positive(shape.NH, "NH");
  if (!ignore_s) positive(shape.S, "S");
  positive(shape.Dqk, "Dqk");
  positive(shape.Dv, "Dv");
  if (!(options.eps >= 0.0) || !std::isfinite(options.eps)) {
    fail(fn, "eps = " + std::to_string(options.eps) + ", must be finite and >= 0");
  }
  if (!std::isfinite(options.scale)) fail(fn, "scale must be finite (0 means 1/sqrt(Dqk))");
  if (options.variant == Variant::Exp && !options.normalize) {
    fail(fn,
         "normalize=false is defined only for Variant::Sig (mLSTMexp's output depends on "
         "its stabilizer without the normalizer)");
  }
}

void check_inputs_and_states(const Shape& shape, const Inputs& in, const States* initial,
                             const char* fn) {
  const int64_t heads = shape.B * shape.NH;
  check_size(in.q, heads * shape.S * shape.Dqk, "q (B, NH, S, Dqk)", fn);
  check_size(in.k, heads * shape.S * shape.Dqk, "k (B, NH, S, Dqk)", fn);
  check_size(in.v, heads * shape.S * shape.Dv, "v (B, NH, S, Dv)", fn);
  check_size(in.i, heads * shape.S, "i (B, NH, S)", fn);
  check_size(in.f, heads * shape.S, "f (B, NH, S)", fn);
  if (initial == nullptr) return;
  if (!initial->C.empty())
    check_size(initial->C, heads * shape.Dqk * shape.Dv, "C0 (B, NH, Dqk, Dv)", fn);
  if (!initial->n.empty()) check_size(initial->n, heads * shape.Dqk, "n0 (B, NH, Dqk)", fn);
  if (!initial->m.empty()) check_size(initial->m, heads, "m0 (B, NH)", fn);
}

HeadInputs head_inputs(const Shape& shape, const Inputs& in, int64_t bh) {
  return HeadInputs{in.q.data() + bh * shape.S * shape.Dqk, in.k.data() + bh * shape.S * shape.Dqk,
                    in.v.data() + bh * shape.S * shape.Dv, in.i.data() + bh * shape.S,
                    in.f.data() + bh * shape.S};
}

HeadState initial_head_state(const Shape& shape, const Options& options, const States* initial,
                             int64_t bh) {
  const int64_t dkv = shape.Dqk * shape.Dv;
  HeadState st;
  st.C.assign(size_t(dkv), 0.0);
  st.n.assign(size_t(shape.Dqk), 0.0);
  if (initial == nullptr) return st;
  if (!initial->C.empty()) {
    std::copy_n(initial->C.begin() + bh * dkv, dkv, st.C.begin());
  }
  if (!initial->n.empty()) {
    std::copy_n(initial->n.begin() + bh * shape.Dqk, shape.Dqk, st.n.begin());
  }
  if (!initial->m.empty() && options.variant == Variant::Exp) st.m = initial->m[size_t(bh)];
  return st;
}

States zero_states(const Shape& shape) {
  const int64_t heads = shape.B * shape.NH;
  States out;
  out.C.assign(size_t(heads * shape.Dqk * shape.Dv), 0.0);
  out.n.assign(size_t(heads * shape.Dqk), 0.0);
  out.m.assign(size_t(heads), 0.0);
  return out;
}

void store_head_state(const Shape& shape, const HeadState& st, int64_t bh, States& out) {
  std::copy(st.C.begin(), st.C.end(), out.C.begin() + bh * shape.Dqk * shape.Dv);
  std::copy(st.n.begin(), st.n.end(), out.n.begin() + bh * shape.Dqk);
  out.m[size_t(bh)] = st.m;
}

void recurrent_step_head(const Options& o, double s, int64_t Dqk, int64_t Dv, const double* q,
                         const double* k, const double* v, double i_pre, double f_pre,
                         HeadState& st, double* h, double* den, double* m) {
  const double lf = log_sigmoid(f_pre);
  const double li = log_input_gate(o.variant, i_pre);
  const double m_new = o.variant == Variant::Exp ? std::max(lf + st.m, li) : 0.0;
  const double fp = std::exp(lf + st.m - m_new);  // f'_t <= 1
  const double ip = std::exp(li - m_new);         // i'_t <= 1
  for (int64_t a = 0; a < Dqk; ++a) {
    double* row = st.C.data() + a * Dv;
    for (int64_t e = 0; e < Dv; ++e) row[e] = fp * row[e] + ip * k[a] * v[e];
    st.n[size_t(a)] = fp * st.n[size_t(a)] + ip * k[a];
  }
  st.m = m_new;
  double qn = 0.0;
  for (int64_t a = 0; a < Dqk; ++a) qn += st.n[size_t(a)] * s * q[a];
  *den = denominator(o, qn, m_new);
  *m = m_new;
  const double inv = 1.0 / (*den + o.eps);
  for (int64_t e = 0; e < Dv; ++e) {
    double acc = 0.0;
    for (int64_t a = 0; a < Dqk; ++a) acc += st.C[size_t(a * Dv + e)] * s * q[a];
    h[e] = acc * inv;
  }
}

}  // namespace tfla::reference::detail
