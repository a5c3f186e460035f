// The recurrent mLSTM forward (DESIGN.md section 3, "Recurrent definition") and the one-token
// step used for generation. Both run detail::recurrent_step_head, so S calls of step()
// reproduce forward_recurrent bit for bit.
#include "reference/detail.hpp"

namespace tfla::reference {

ForwardResult forward_recurrent(const Shape& shape, const Options& options, const Inputs& in,
                                const States* initial) {
  constexpr const char* fn = "forward_recurrent";
  detail::check_shape_and_options(shape, options, fn);
  detail::check_inputs_and_states(shape, in, initial, fn);
  const double s = detail::resolve_scale(shape, options);
  const int64_t heads = shape.B * shape.NH;
  ForwardResult out;
  out.h.assign(size_t(heads * shape.S * shape.Dv), 0.0);
  out.norm.assign(size_t(heads * shape.S), 0.0);
  out.m.assign(size_t(heads * shape.S), 0.0);
  out.last = detail::zero_states(shape);
  for (int64_t bh = 0; bh < heads; ++bh) {
    const detail::HeadInputs x = detail::head_inputs(shape, in, bh);
    detail::HeadState st = detail::initial_head_state(shape, options, initial, bh);
    for (int64_t t = 0; t < shape.S; ++t) {
      const int64_t row = bh * shape.S + t;
      detail::recurrent_step_head(options, s, shape.Dqk, shape.Dv, x.q + t * shape.Dqk,
                                  x.k + t * shape.Dqk, x.v + t * shape.Dv, x.i[t], x.f[t], st,
                                  out.h.data() + row * shape.Dv, &out.norm[size_t(row)],
                                  &out.m[size_t(row)]);
    }
    detail::store_head_state(shape, st, bh, out.last);
  }
  return out;
}

StepResult step(const Shape& shape, const Options& options, const std::vector<double>& q,
                const std::vector<double>& k, const std::vector<double>& v,
                const std::vector<double>& i, const std::vector<double>& f, const States& state) {
  constexpr const char* fn = "step";
  detail::check_shape_and_options(shape, options, fn, /*ignore_s=*/true);
  // One token is a sequence of length 1: reuse the (B, NH, S, ...) checks with S = 1.
  const Shape one{shape.B, shape.NH, 1, shape.Dqk, shape.Dv};
  detail::check_size(q, one.B * one.NH * one.Dqk, "q (B, NH, Dqk)", fn);
  detail::check_size(k, one.B * one.NH * one.Dqk, "k (B, NH, Dqk)", fn);
  detail::check_size(v, one.B * one.NH * one.Dv, "v (B, NH, Dv)", fn);
  detail::check_size(i, one.B * one.NH, "i (B, NH)", fn);
  detail::check_size(f, one.B * one.NH, "f (B, NH)", fn);
  const Inputs in{q, k, v, i, f};  // copies; the reference favours clarity over speed
  detail::check_inputs_and_states(one, in, &state, fn);  // inputs pass; checks the state
  const ForwardResult r = forward_recurrent(one, options, in, &state);
  return StepResult{r.h, r.last};
}

}  // namespace tfla::reference
