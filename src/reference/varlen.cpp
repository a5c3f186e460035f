// Packed sequences of variable lengths in float64 (reference.hpp: check_cu_seqlens,
// forward_varlen, backward_varlen): each sequence cut out of the packed (1, NH, T, D) layout,
// run by forward_recurrent / backward from its own initial state, and put back.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "reference/detail.hpp"

namespace tfla::reference {
namespace {

[[noreturn]] void fail(const char* fn, const std::string& what) {
  throw std::invalid_argument(std::string(fn) + ": " + what);
}

// Tokens [t0, t1) of every head of a (1, NH, T, d) tensor, as (1, NH, t1 - t0, d).
std::vector<double> cut(const std::vector<double>& x, int64_t NH, int64_t T, int64_t d, int64_t t0, int64_t t1) {
  std::vector<double> out(size_t(NH * (t1 - t0) * d));
  for (int64_t h = 0; h < NH; ++h)
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t e = 0; e < d; ++e) out[size_t((h * (t1 - t0) + t - t0) * d + e)] = x[size_t((h * T + t) * d + e)];
  return out;
}

// The inverse of cut: part (1, NH, t1 - t0, d) into tokens [t0, t1) of x (1, NH, T, d).
void put(std::vector<double>& x, const std::vector<double>& part, int64_t NH, int64_t T, int64_t d, int64_t t0,
         int64_t t1) {
  for (int64_t h = 0; h < NH; ++h)
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t e = 0; e < d; ++e) x[size_t((h * T + t) * d + e)] = part[size_t((h * (t1 - t0) + t - t0) * d + e)];
}

// Sequence j's block of a (N, NH, rest...) vector (empty stays empty).
std::vector<double> block(const std::vector<double>& x, int64_t j, int64_t per) {
  if (x.empty()) return {};
  return std::vector<double>(x.begin() + j * per, x.begin() + (j + 1) * per);
}
void put_block(std::vector<double>& x, const std::vector<double>& part, int64_t j, int64_t per) {
  std::copy(part.begin(), part.end(), x.begin() + j * per);
}

// Sequence j's initial state out of the (N, NH, ...) ones (nullable; empty vectors stay empty;
// no m for Sig).
States sequence_initial(const Shape& shape, const Options& options, const States* initial, int64_t j) {
  States init;
  if (!initial) return init;
  init.C = block(initial->C, j, shape.NH * shape.Dqk * shape.Dv);
  init.n = block(initial->n, j, shape.NH * shape.Dqk);
  if (options.variant == Variant::Exp) init.m = block(initial->m, j, shape.NH);
  return init;
}

Inputs cut_inputs(const Shape& shape, const Inputs& in, int64_t t0, int64_t t1) {
  const int64_t NH = shape.NH, T = shape.S;
  return {cut(in.q, NH, T, shape.Dqk, t0, t1), cut(in.k, NH, T, shape.Dqk, t0, t1), cut(in.v, NH, T, shape.Dv, t0, t1),
          cut(in.i, NH, T, 1, t0, t1), cut(in.f, NH, T, 1, t0, t1)};
}

// Checks shared by forward_varlen and backward_varlen; returns N.
int64_t check_varlen(const Shape& shape, const Options& options, const Inputs& in, const std::vector<int64_t>& cu,
                     const States* initial, const char* fn) {
  detail::check_shape_and_options(shape, options, fn, /*ignore_s=*/true);
  check_cu_seqlens(shape, cu, fn);
  detail::check_inputs_and_states(shape, in, nullptr, fn);
  const int64_t N = static_cast<int64_t>(cu.size()) - 1;
  if (initial) {
    const int64_t heads = N * shape.NH;
    if (!initial->C.empty()) detail::check_size(initial->C, heads * shape.Dqk * shape.Dv, "initial C (N, NH, Dqk, Dv)", fn);
    if (!initial->n.empty()) detail::check_size(initial->n, heads * shape.Dqk, "initial n (N, NH, Dqk)", fn);
    if (!initial->m.empty()) detail::check_size(initial->m, heads, "initial m (N, NH)", fn);
  }
  return N;
}

}  // namespace

void check_cu_seqlens(const Shape& shape, const std::vector<int64_t>& cu, const char* fn) {
  if (shape.B != 1)
    fail(fn, "packed sequences take B = 1 (the sequences lie along the token axis), got B = " + std::to_string(shape.B));
  if (cu.size() < 2) fail(fn, "cu_seqlens needs N + 1 >= 2 offsets, got " + std::to_string(cu.size()));
  if (cu.front() != 0) fail(fn, "cu_seqlens[0] = " + std::to_string(cu.front()) + ", must be 0");
  for (size_t j = 1; j < cu.size(); ++j)
    if (cu[j] < cu[j - 1])
      fail(fn, "cu_seqlens[" + std::to_string(j) + "] = " + std::to_string(cu[j]) + " is below cu_seqlens[" +
                   std::to_string(j - 1) + "] = " + std::to_string(cu[j - 1]) + ": offsets must not decrease");
  if (cu.back() != shape.S)
    fail(fn, "cu_seqlens[N] = " + std::to_string(cu.back()) + " is not the packed token count T = " +
                 std::to_string(shape.S));
}

ForwardResult forward_varlen(const Shape& shape, const Options& options, const Inputs& in,
                             const std::vector<int64_t>& cu_seqlens, const States* initial) {
  constexpr const char* fn = "forward_varlen";
  const int64_t N = check_varlen(shape, options, in, cu_seqlens, initial, fn);
  const int64_t NH = shape.NH, T = shape.S, dkv = shape.Dqk * shape.Dv;
  ForwardResult out;
  out.h.assign(size_t(NH * T * shape.Dv), 0.0);
  out.norm.assign(size_t(NH * T), 0.0);
  out.m.assign(size_t(NH * T), 0.0);
  out.last = detail::zero_states(Shape{N, NH, 1, shape.Dqk, shape.Dv});
  for (int64_t j = 0; j < N; ++j) {
    const int64_t t0 = cu_seqlens[size_t(j)], t1 = cu_seqlens[size_t(j + 1)];
    const States init = sequence_initial(shape, options, initial, j);
    if (t1 == t0) {  // empty: the initial state passes through
      if (!init.C.empty()) put_block(out.last.C, init.C, j, NH * dkv);
      if (!init.n.empty()) put_block(out.last.n, init.n, j, NH * shape.Dqk);
      if (!init.m.empty()) put_block(out.last.m, init.m, j, NH);
      continue;
    }
    const Shape one{1, NH, t1 - t0, shape.Dqk, shape.Dv};
    const ForwardResult r = forward_recurrent(one, options, cut_inputs(shape, in, t0, t1), initial ? &init : nullptr);
    put(out.h, r.h, NH, T, shape.Dv, t0, t1);
    put(out.norm, r.norm, NH, T, 1, t0, t1);
    put(out.m, r.m, NH, T, 1, t0, t1);
    put_block(out.last.C, r.last.C, j, NH * dkv);
    put_block(out.last.n, r.last.n, j, NH * shape.Dqk);
    put_block(out.last.m, r.last.m, j, NH);
  }
  return out;
}

BackwardResult backward_varlen(const Shape& shape, const Options& options, const Inputs& in,
                               const std::vector<int64_t>& cu_seqlens, const States* initial,
                               const std::vector<double>& dh, const std::vector<double>* dC_last) {
  constexpr const char* fn = "backward_varlen";
  const int64_t N = check_varlen(shape, options, in, cu_seqlens, initial, fn);
  const int64_t NH = shape.NH, T = shape.S, dkv = shape.Dqk * shape.Dv;
  detail::check_size(dh, NH * T * shape.Dv, "dh (1, NH, T, Dv)", fn);
  if (dC_last) detail::check_size(*dC_last, N * NH * dkv, "dC_last (N, NH, Dqk, Dv)", fn);
  BackwardResult out;
  out.dq.assign(size_t(NH * T * shape.Dqk), 0.0);
  out.dk.assign(size_t(NH * T * shape.Dqk), 0.0);
  out.dv.assign(size_t(NH * T * shape.Dv), 0.0);
  out.di.assign(size_t(NH * T), 0.0);
  out.df.assign(size_t(NH * T), 0.0);
  out.d_initial = detail::zero_states(Shape{N, NH, 1, shape.Dqk, shape.Dv});
  for (int64_t j = 0; j < N; ++j) {
    const int64_t t0 = cu_seqlens[size_t(j)], t1 = cu_seqlens[size_t(j + 1)];
    const std::vector<double> dCl = dC_last ? block(*dC_last, j, NH * dkv) : std::vector<double>{};
    if (t1 == t0) {  // empty: C_last = C0, so dC0 = dC_last
      if (!dCl.empty()) put_block(out.d_initial.C, dCl, j, NH * dkv);
      continue;
    }
    const States init = sequence_initial(shape, options, initial, j);
    const Shape one{1, NH, t1 - t0, shape.Dqk, shape.Dv};
    const BackwardResult r = backward(one, options, cut_inputs(shape, in, t0, t1), initial ? &init : nullptr,
                                      cut(dh, NH, T, shape.Dv, t0, t1), dC_last ? &dCl : nullptr);
    put(out.dq, r.dq, NH, T, shape.Dqk, t0, t1);
    put(out.dk, r.dk, NH, T, shape.Dqk, t0, t1);
    put(out.dv, r.dv, NH, T, shape.Dv, t0, t1);
    put(out.di, r.di, NH, T, 1, t0, t1);
    put(out.df, r.df, NH, T, 1, t0, t1);
    put_block(out.d_initial.C, r.d_initial.C, j, NH * dkv);
  }
  return out;
}

}  // namespace tfla::reference
