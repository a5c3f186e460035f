// The chunkwise mLSTM forward, written as DESIGN.md section 3 ("Chunkwise form") states it:
// the inter-chunk state recurrence (C_k, n_k, m_k) and, inside a chunk, the causal
// intra-chunk sum with the per-row stabilizer mu_i. Unrolling the recurrence shows
// mu_i == m_t, so this agrees with forward_recurrent to rounding (~1e-13 relative).
// No tiling: the reference computes the whole chunk at once; the tiling is the kernels' job.
#include <limits>
#include <stdexcept>
#include <string>

#include "reference/detail.hpp"

namespace tfla::reference {
namespace detail {

ChunkGates chunk_gates(const Options& o, const double* f, const double* i, int64_t L,
                       double m_prev) {
  const bool exp_variant = o.variant == Variant::Exp;
  ChunkGates cg;
  cg.b.resize(size_t(L));
  cg.a.resize(size_t(L));
  cg.li.resize(size_t(L));
  cg.mu.assign(size_t(L), 0.0);
  double cum = 0.0;
  for (int64_t t = 0; t < L; ++t) {
    cum += log_sigmoid(f[t]);
    cg.b[size_t(t)] = cum;
    cg.li[size_t(t)] = log_input_gate(o.variant, i[t]);
  }
  cg.g = cg.b[size_t(L - 1)];
  double max_a = -std::numeric_limits<double>::infinity();
  for (int64_t t = 0; t < L; ++t) {
    cg.a[size_t(t)] = cg.g - cg.b[size_t(t)] + cg.li[size_t(t)];
    max_a = std::max(max_a, cg.a[size_t(t)]);
  }
  if (!exp_variant) return cg;       // mu = 0, m_next = 0
  for (int64_t r = 0; r < L; ++r) {  // mu_r = max(b_r + m_c, max_{j<=r} Dlog_rj)
    double mu = cg.b[size_t(r)] + m_prev;
    for (int64_t j = 0; j <= r; ++j) {
      mu = std::max(mu, cg.b[size_t(r)] - cg.b[size_t(j)] + cg.li[size_t(j)]);
    }
    cg.mu[size_t(r)] = mu;
  }
  cg.m_next = std::max(cg.g + m_prev, max_a);
  return cg;
}

void chunkwise_forward_head(const Shape& shape, const Options& o, double s, const HeadInputs& x,
                            int64_t chunk_size, HeadState& st, double* h, double* den, double* mu,
                            ChunkwiseTrace* trace) {
  const int64_t Dqk = shape.Dqk, Dv = shape.Dv;
  if (trace != nullptr) {
    trace->C.assign(1, st.C);
    trace->m.assign(1, st.m);
  }
  std::vector<double> qs(static_cast<size_t>(Dqk));
  for (int64_t t0 = 0; t0 < shape.S; t0 += chunk_size) {
    const int64_t L = std::min(chunk_size, shape.S - t0);
    const ChunkGates cg = chunk_gates(o, x.f + t0, x.i + t0, L, st.m);
    // Intra-chunk: row r against the state entering the chunk and the keys j <= r.
    for (int64_t r = 0; r < L; ++r) {
      const double* q = x.q + (t0 + r) * Dqk;
      for (int64_t a = 0; a < Dqk; ++a) qs[size_t(a)] = s * q[a];
      const double mu_r = cg.mu[size_t(r)];
      const double beta = std::exp(cg.b[size_t(r)] + st.m - mu_r);
      double* hr = h + (t0 + r) * Dv;
      double N = 0.0;
      for (int64_t e = 0; e < Dv; ++e) hr[e] = 0.0;
      for (int64_t a = 0; a < Dqk; ++a) {
        N += beta * st.n[size_t(a)] * qs[size_t(a)];
        const double* row = st.C.data() + a * Dv;
        for (int64_t e = 0; e < Dv; ++e) hr[e] += beta * row[e] * qs[size_t(a)];
      }
      for (int64_t j = 0; j <= r; ++j) {
        const double D = std::exp(cg.b[size_t(r)] - cg.b[size_t(j)] + cg.li[size_t(j)] - mu_r);
        const double* k = x.k + (t0 + j) * Dqk;
        const double* v = x.v + (t0 + j) * Dv;
        double qk = 0.0;
        for (int64_t a = 0; a < Dqk; ++a) qk += qs[size_t(a)] * k[a];
        N += D * qk;
        for (int64_t e = 0; e < Dv; ++e) hr[e] += D * qk * v[e];
      }
      const double d = denominator(o, N, mu_r);
      for (int64_t e = 0; e < Dv; ++e) hr[e] /= d + o.eps;
      den[t0 + r] = d;
      mu[t0 + r] = mu_r;
    }
    // Inter-chunk: C_{c+1} = exp(g + m_c - m_{c+1}) C_c + (K * exp(a - m_{c+1}))^T V.
    const double decay = std::exp(cg.g + st.m - cg.m_next);
    for (double& c : st.C) c *= decay;
    for (double& n : st.n) n *= decay;
    for (int64_t j = 0; j < L; ++j) {
      const double w = std::exp(cg.a[size_t(j)] - cg.m_next);
      const double* k = x.k + (t0 + j) * Dqk;
      const double* v = x.v + (t0 + j) * Dv;
      for (int64_t a = 0; a < Dqk; ++a) {
        st.n[size_t(a)] += w * k[a];
        double* row = st.C.data() + a * Dv;
        for (int64_t e = 0; e < Dv; ++e) row[e] += w * k[a] * v[e];
      }
    }
    st.m = cg.m_next;
    if (trace != nullptr) {
      trace->C.push_back(st.C);
      trace->m.push_back(st.m);
    }
  }
}

}  // namespace detail

ForwardResult forward_chunkwise(const Shape& shape, const Options& options, const Inputs& in,
                                const States* initial, int64_t chunk_size) {
  constexpr const char* fn = "forward_chunkwise";
  detail::check_shape_and_options(shape, options, fn);
  detail::check_inputs_and_states(shape, in, initial, fn);
  if (chunk_size < 1) {
    throw std::invalid_argument("tfla::reference::forward_chunkwise: chunk_size = " +
                                std::to_string(chunk_size) + ", must be >= 1");
  }
  const double s = detail::resolve_scale(shape, options);
  const int64_t heads = shape.B * shape.NH;
  ForwardResult out;
  out.h.assign(size_t(heads * shape.S * shape.Dv), 0.0);
  out.norm.assign(size_t(heads * shape.S), 0.0);
  out.m.assign(size_t(heads * shape.S), 0.0);
  out.last = detail::zero_states(shape);
  for (int64_t bh = 0; bh < heads; ++bh) {
    detail::HeadState st = detail::initial_head_state(shape, options, initial, bh);
    detail::chunkwise_forward_head(shape, options, s, detail::head_inputs(shape, in, bh),
                                   chunk_size, st, out.h.data() + bh * shape.S * shape.Dv,
                                   out.norm.data() + bh * shape.S, out.m.data() + bh * shape.S,
                                   nullptr);
    detail::store_head_state(shape, st, bh, out.last);
  }
  return out;
}

}  // namespace tfla::reference
