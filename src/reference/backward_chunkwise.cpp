// The mLSTM backward with DESIGN.md's chunkwise formulas (section 3, "Backward"), literally:
// per chunk c (state C_c, m_c entering it), with dH~_i = dh_i / (den_i + eps),
// D_ij = exp(Dlog_ij - mu_i) (j <= i), abar_j = exp(a_j - m_{c+1}), beta_i = exp(b_i + m_c - mu_i):
//   dC_c  = exp(g + m_c - m_{c+1}) dC_{c+1} + (s Q_c * beta)^T dH~_c,   dC_Nc = dC_last
//   Sbar  = s (Q K^T) * D;   dSbar = (dH~ V^T) * D
//   dV = diag(abar) K dC_{c+1} + Sbar^T dH~
//   dK = diag(abar) V dC_{c+1}^T + s dSbar^T Q
//   dQ = s diag(beta) dH~ C_c^T + s dSbar K
//   di_t = k_t . dk_t (times sigmoid(-i_t) for Sig)
//   df_t = sigmoid(-f_t) * (sum_{u>=t} (q_u . dq_u - k_u . dk_u) + <dC_last, C_S>)
//
// DISCREPANCY WITH DESIGN.md (found by the finite-difference test; fixed here):
// DESIGN.md's df_t = sigmoid(-f_t) * sum_{u>=t} (q_u . dq_u - k_u . dk_u) is exact only when
// dC_last = 0. Split L into contributions (reader) x (writer): readers are the outputs h_u and
// the final state C_S, writers are the tokens j and C_0. f~_t scales exactly the
// contributions with a writer before t (j < t or C_0) and a reader at or after t (u >= t or
// C_S). sum_{u>=t} q_u . dq_u holds every contribution read by h_u, u >= t, but none read by
// C_S; subtracting sum_{u>=t} k_u . dk_u removes those written at j >= t, *including* the
// ones read by C_S. Net: exact = DESIGN's sum + every C_S contribution = + <dC_last, C_S>,
// the same constant at every t (C_S the returned stabilized last state). With dC_last != 0
// the literal formula is off by O(1) relative (tested: errors 0.4 .. 77 on df).
// The rest of DESIGN.md's backward checks out exactly, including the initial state: C_0's
// share of df is already in q_u . dq_u (the s diag(beta) dH~ C_c^T part of dQ).
//
// Numerical note: this df is a reverse cumulative sum of differences. With nearly closed
// forget gates (f << 0) the exact df is tiny next to the summands and the sum cancels, so
// its relative error is unbounded even in float64 (e.g. exact 6e-18 from O(1) terms).
// backward() computes df directly and does not cancel; compare a cumsum-based df with
// df_conditioned_error(), not relative_error(), when gates are extreme.
#include <stdexcept>
#include <string>

#include "reference/detail.hpp"

namespace tfla::reference {
namespace {

// Pointers to one chunk's slices of one head's gradients.
struct ChunkGrads {
  double* dq;  // (L, Dqk)
  double* dk;  // (L, Dqk)
  double* dv;  // (L, Dv)
};

// One chunk of the backward. x: the chunk's inputs (pointers at its first token); dHt: (L, Dv);
// C_c: (Dqk, Dv) state entering the chunk, m_c its stabilizer; dC: (Dqk, Dv) dC_{c+1} in,
// dC_c out. Writes dq, dk, dv of the chunk.
void backward_chunk(const Shape& shape, const Options& o, double s, const detail::HeadInputs& x,
                    int64_t L, const std::vector<double>& dHt, const std::vector<double>& C_c,
                    double m_c, std::vector<double>& dC, const ChunkGrads& out) {
  const int64_t Dqk = shape.Dqk, Dv = shape.Dv;
  const detail::ChunkGates cg = detail::chunk_gates(o, x.f, x.i, L, m_c);
  const auto q = [&](int64_t r, int64_t a) { return x.q[r * Dqk + a]; };
  const auto k = [&](int64_t r, int64_t a) { return x.k[r * Dqk + a]; };
  const auto v = [&](int64_t r, int64_t e) { return x.v[r * Dv + e]; };
  const auto dH = [&](int64_t r, int64_t e) { return dHt[size_t(r * Dv + e)]; };
  std::vector<double> beta(static_cast<size_t>(L)), abar(static_cast<size_t>(L));
  std::vector<double> Sbar(size_t(L * L), 0.0), dSbar(size_t(L * L), 0.0);
  for (int64_t r = 0; r < L; ++r) {
    beta[size_t(r)] = std::exp(cg.b[size_t(r)] + m_c - cg.mu[size_t(r)]);
    abar[size_t(r)] = std::exp(cg.a[size_t(r)] - cg.m_next);
    for (int64_t j = 0; j <= r; ++j) {
      const double D =
          std::exp(cg.b[size_t(r)] - cg.b[size_t(j)] + cg.li[size_t(j)] - cg.mu[size_t(r)]);
      double qk = 0.0, dhv = 0.0;
      for (int64_t a = 0; a < Dqk; ++a) qk += q(r, a) * k(j, a);
      for (int64_t e = 0; e < Dv; ++e) dhv += dH(r, e) * v(j, e);
      Sbar[size_t(r * L + j)] = s * qk * D;
      dSbar[size_t(r * L + j)] = dhv * D;
    }
  }
  for (int64_t j = 0; j < L; ++j) {
    for (int64_t e = 0; e < Dv; ++e) {  // dV = diag(abar) K dC_{c+1} + Sbar^T dH~
      double inter = 0.0, intra = 0.0;
      for (int64_t a = 0; a < Dqk; ++a) inter += k(j, a) * dC[size_t(a * Dv + e)];
      for (int64_t r = j; r < L; ++r) intra += Sbar[size_t(r * L + j)] * dH(r, e);
      out.dv[j * Dv + e] = abar[size_t(j)] * inter + intra;
    }
    for (int64_t a = 0; a < Dqk; ++a) {  // dK = diag(abar) V dC_{c+1}^T + s dSbar^T Q
      double inter = 0.0, intra = 0.0;
      for (int64_t e = 0; e < Dv; ++e) inter += v(j, e) * dC[size_t(a * Dv + e)];
      for (int64_t r = j; r < L; ++r) intra += dSbar[size_t(r * L + j)] * q(r, a);
      out.dk[j * Dqk + a] = abar[size_t(j)] * inter + s * intra;
    }
  }
  for (int64_t r = 0; r < L; ++r) {
    for (int64_t a = 0; a < Dqk; ++a) {  // dQ = s diag(beta) dH~ C_c^T + s dSbar K
      double inter = 0.0, intra = 0.0;
      for (int64_t e = 0; e < Dv; ++e) inter += dH(r, e) * C_c[size_t(a * Dv + e)];
      for (int64_t j = 0; j <= r; ++j) intra += dSbar[size_t(r * L + j)] * k(j, a);
      out.dq[r * Dqk + a] = s * beta[size_t(r)] * inter + s * intra;
    }
  }
  // dC_c = exp(g + m_c - m_{c+1}) dC_{c+1} + (s Q * beta)^T dH~
  const double decay = std::exp(cg.g + m_c - cg.m_next);
  for (int64_t a = 0; a < Dqk; ++a) {
    for (int64_t e = 0; e < Dv; ++e) {
      double acc = 0.0;
      for (int64_t r = 0; r < L; ++r) acc += s * q(r, a) * beta[size_t(r)] * dH(r, e);
      dC[size_t(a * Dv + e)] = decay * dC[size_t(a * Dv + e)] + acc;
    }
  }
}

double dot(const double* a, const double* b, int64_t n) {
  double acc = 0.0;
  for (int64_t t = 0; t < n; ++t) acc += a[t] * b[t];
  return acc;
}

}  // namespace

BackwardResult backward_chunkwise(const Shape& shape, const Options& options, const Inputs& in,
                                  const States* initial, const std::vector<double>& dh,
                                  const std::vector<double>* dC_last, int64_t chunk_size) {
  constexpr const char* fn = "backward_chunkwise";
  detail::check_shape_and_options(shape, options, fn);
  detail::check_inputs_and_states(shape, in, initial, fn);
  const int64_t heads = shape.B * shape.NH, S = shape.S, Dqk = shape.Dqk, Dv = shape.Dv;
  detail::check_size(dh, heads * S * Dv, "dh (B, NH, S, Dv)", fn);
  if (dC_last != nullptr)
    detail::check_size(*dC_last, heads * Dqk * Dv, "dC_last (B, NH, Dqk, Dv)", fn);
  if (chunk_size < 1) {
    throw std::invalid_argument("tfla::reference::backward_chunkwise: chunk_size = " +
                                std::to_string(chunk_size) + ", must be >= 1");
  }
  const double s = detail::resolve_scale(shape, options);

  BackwardResult out;
  out.dq.assign(in.q.size(), 0.0);
  out.dk.assign(in.k.size(), 0.0);
  out.dv.assign(in.v.size(), 0.0);
  out.di.assign(in.i.size(), 0.0);
  out.df.assign(in.f.size(), 0.0);
  out.d_initial = detail::zero_states(shape);
  std::vector<double> h(static_cast<size_t>(S * Dv)), den(static_cast<size_t>(S));
  std::vector<double> mu(static_cast<size_t>(S));
  for (int64_t bh = 0; bh < heads; ++bh) {
    const detail::HeadInputs x = detail::head_inputs(shape, in, bh);
    detail::HeadState st = detail::initial_head_state(shape, options, initial, bh);
    detail::ChunkwiseTrace trace;
    detail::chunkwise_forward_head(shape, options, s, x, chunk_size, st, h.data(), den.data(),
                                   mu.data(), &trace);
    std::vector<double> dC(size_t(Dqk * Dv), 0.0);
    if (dC_last != nullptr) std::copy_n(dC_last->begin() + bh * Dqk * Dv, Dqk * Dv, dC.begin());
    const double last_term = dot(dC.data(), st.C.data(), Dqk * Dv);  // <dC_last, C_S>
    double* dq = out.dq.data() + bh * S * Dqk;
    double* dk = out.dk.data() + bh * S * Dqk;
    double* dv = out.dv.data() + bh * S * Dv;
    const int64_t num_chunks = int64_t(trace.C.size()) - 1;
    std::vector<double> dHt;
    for (int64_t c = num_chunks - 1; c >= 0; --c) {
      const int64_t t0 = c * chunk_size, L = std::min(chunk_size, S - t0);
      dHt.assign(size_t(L * Dv), 0.0);
      for (int64_t r = 0; r < L; ++r) {
        for (int64_t e = 0; e < Dv; ++e) {
          dHt[size_t(r * Dv + e)] =
              dh[size_t((bh * S + t0 + r) * Dv + e)] / (den[size_t(t0 + r)] + options.eps);
        }
      }
      const detail::HeadInputs xc{x.q + t0 * Dqk, x.k + t0 * Dqk, x.v + t0 * Dv, x.i + t0,
                                  x.f + t0};
      backward_chunk(shape, options, s, xc, L, dHt, trace.C[size_t(c)], trace.m[size_t(c)], dC,
                     ChunkGrads{dq + t0 * Dqk, dk + t0 * Dqk, dv + t0 * Dv});
    }
    std::copy(dC.begin(), dC.end(), out.d_initial.C.begin() + bh * Dqk * Dv);
    // di_t = k_t . dk_t; df_t = sigmoid(-f_t) (sum_{u>=t} (q_u . dq_u - k_u . dk_u) + <dC_last,
    // C_S>).
    double suffix = last_term;
    for (int64_t t = S - 1; t >= 0; --t) {
      const double kdk = dot(x.k + t * Dqk, dk + t * Dqk, Dqk);
      suffix += dot(x.q + t * Dqk, dq + t * Dqk, Dqk) - kdk;
      out.di[size_t(bh * S + t)] = kdk * detail::log_input_gate_grad(options.variant, x.i[t]);
      out.df[size_t(bh * S + t)] = suffix * detail::sigmoid(-x.f[t]);
    }
  }
  return out;
}

}  // namespace tfla::reference
