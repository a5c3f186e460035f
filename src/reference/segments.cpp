// The sequence split in float64 (reference.hpp: SegmentSummary, segment_summary, combine_segment):
// a segment walked from a zero state with no stabilizer history, and the max-plus / linear
// composition that folds it into the state before it.
#include <limits>
#include <stdexcept>
#include <string>

#include "reference/detail.hpp"

namespace tfla::reference {

SegmentSummary segment_summary(const Shape& shape, const Options& options, const Inputs& in, int64_t t0,
                               int64_t t1) {
  constexpr const char* fn = "segment_summary";
  detail::check_shape_and_options(shape, options, fn);
  detail::check_inputs_and_states(shape, in, nullptr, fn);
  if (t0 < 0 || t1 < t0 || t1 > shape.S)
    throw std::invalid_argument(std::string(fn) + ": segment [" + std::to_string(t0) + ", " + std::to_string(t1) +
                                ") is not inside the sequence of " + std::to_string(shape.S) + " tokens");
  const double s = detail::resolve_scale(shape, options);
  const bool exp = options.variant == Variant::Exp;
  const int64_t heads = shape.B * shape.NH;
  SegmentSummary out;
  out.end = detail::zero_states(shape);
  out.g.assign(size_t(heads), 0.0);
  std::vector<double> h(size_t(shape.Dv));
  for (int64_t bh = 0; bh < heads; ++bh) {
    const detail::HeadInputs x = detail::head_inputs(shape, in, bh);
    detail::HeadState st = detail::initial_head_state(shape, options, nullptr, bh);
    st.m = exp ? -std::numeric_limits<double>::infinity() : 0.0;
    double den = 0.0, m = 0.0;
    for (int64_t t = t0; t < t1; ++t) {
      detail::recurrent_step_head(options, s, shape.Dqk, shape.Dv, x.q + t * shape.Dqk, x.k + t * shape.Dqk,
                                  x.v + t * shape.Dv, x.i[t], x.f[t], st, h.data(), &den, &m);
      out.g[size_t(bh)] += detail::log_sigmoid(x.f[t]);
    }
    detail::store_head_state(shape, st, bh, out.end);
  }
  return out;
}

States combine_segment(const Shape& shape, const Options& options, const States* before, const SegmentSummary& seg) {
  constexpr const char* fn = "combine_segment";
  detail::check_shape_and_options(shape, options, fn, /*ignore_s=*/true);
  const int64_t heads = shape.B * shape.NH, dkv = shape.Dqk * shape.Dv;
  detail::check_size(seg.end.C, heads * dkv, "seg.end.C (B, NH, Dqk, Dv)", fn);
  detail::check_size(seg.end.n, heads * shape.Dqk, "seg.end.n (B, NH, Dqk)", fn);
  detail::check_size(seg.end.m, heads, "seg.end.m (B, NH)", fn);
  detail::check_size(seg.g, heads, "seg.g (B, NH)", fn);
  const Shape one{shape.B, shape.NH, 1, shape.Dqk, shape.Dv};
  const Inputs none{std::vector<double>(size_t(heads * shape.Dqk)), std::vector<double>(size_t(heads * shape.Dqk)),
                    std::vector<double>(size_t(heads * shape.Dv)), std::vector<double>(size_t(heads)),
                    std::vector<double>(size_t(heads))};
  detail::check_inputs_and_states(one, none, before, fn);  // before: each vector empty or full
  const bool exp = options.variant == Variant::Exp;
  States out = detail::zero_states(shape);
  for (int64_t bh = 0; bh < heads; ++bh) {
    const detail::HeadState b = detail::initial_head_state(shape, options, before, bh);  // zero, m = 0 if absent
    const double g = seg.g[size_t(bh)], m_end = exp ? seg.end.m[size_t(bh)] : 0.0;
    const double m = exp ? std::max(g + b.m, m_end) : 0.0;
    const double a = std::exp(g + b.m - m);  // <= 1
    // an empty segment (m_end = -inf) adds nothing
    const double e = m_end == -std::numeric_limits<double>::infinity() ? 0.0 : std::exp(m_end - m);
    for (int64_t x = 0; x < dkv; ++x)
      out.C[size_t(bh * dkv + x)] = a * b.C[size_t(x)] + e * seg.end.C[size_t(bh * dkv + x)];
    for (int64_t x = 0; x < shape.Dqk; ++x)
      out.n[size_t(bh * shape.Dqk + x)] = a * b.n[size_t(x)] + e * seg.end.n[size_t(bh * shape.Dqk + x)];
    out.m[size_t(bh)] = m;
  }
  return out;
}

std::vector<double> combine_segment_backward(const Shape& shape, const Options& options,
                                             const std::vector<double>& m_before,
                                             const std::vector<double>& m_after, const std::vector<double>& g,
                                             const std::vector<double>& local,
                                             const std::vector<double>* dC_after) {
  constexpr const char* fn = "combine_segment_backward";
  detail::check_shape_and_options(shape, options, fn, /*ignore_s=*/true);
  const int64_t heads = shape.B * shape.NH, dkv = shape.Dqk * shape.Dv;
  const bool exp = options.variant == Variant::Exp;
  if (exp) {
    detail::check_size(m_before, heads, "m_before (B, NH)", fn);
    detail::check_size(m_after, heads, "m_after (B, NH)", fn);
  }
  detail::check_size(g, heads, "g (B, NH)", fn);
  detail::check_size(local, heads * dkv, "local (B, NH, Dqk, Dv)", fn);
  if (dC_after) detail::check_size(*dC_after, heads * dkv, "dC_after (B, NH, Dqk, Dv)", fn);
  std::vector<double> out = local;
  if (!dC_after) return out;
  for (int64_t bh = 0; bh < heads; ++bh) {
    const double a = std::exp(g[size_t(bh)] + (exp ? m_before[size_t(bh)] - m_after[size_t(bh)] : 0.0));
    for (int64_t x = 0; x < dkv; ++x) out[size_t(bh * dkv + x)] += a * (*dC_after)[size_t(bh * dkv + x)];
  }
  return out;
}

}  // namespace tfla::reference
