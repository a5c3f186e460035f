// The exact mLSTM backward by reverse-mode over the recurrence, in stabilized form.
//
// Definition (reference.hpp, backward): with Z_t = exp(m_t) (den_t + eps) and m_S held
// constant, h_t = Ctilde_t^T (s q_t) / Z_t, Ctilde_t = exp(f~_t) Ctilde_{t-1} + exp(i~_t) k_t
// v_t^T, L = sum_t dh_t . h_t + dC_last . exp(-m_S) Ctilde_S.
//
// Reverse mode on Ctilde gives dCtilde_t = exp(f~_{t+1}) dCtilde_{t+1} + s q_t dh_t^T / Z_t.
// Its stabilized form G_t = exp(m_t) dCtilde_t obeys
//   G_S = dC_last + s q_S dH~_S^T,   G_{t-1} = f'_t G_t + s q_{t-1} dH~_{t-1}^T,
// with dH~_t = dh_t / (den_t + eps), f'_t = exp(f~_t + m_{t-1} - m_t) <= 1,
// i'_t = exp(i~_t - m_t) <= 1, so nothing overflows however large the gates. Then
//   dq_t = s C_t dH~_t          dk_t = i'_t G_t v_t        dv_t = i'_t G_t^T k_t
//   d i~_t = k_t . dk_t         d f~_t = f'_t <G_t, C_{t-1}>   dC_0 = f'_1 G_1
// and di = d i~ (Exp) or sigmoid(-i) d i~ (Sig); df = sigmoid(-f) d f~.
// d f~_t is computed directly from C_{t-1}, not by DESIGN.md's cumulative-sum identity, so
// this file and backward_chunkwise.cpp check each other.
//
// Memory: C_t is needed for every t. The forward stores C every K = ceil(sqrt(S)) tokens;
// the backward recomputes the K states of one segment at a time from its checkpoint.
#include <cmath>

#include "reference/detail.hpp"

namespace tfla::reference {
namespace {

// Gradients w.r.t. the log gates i~_t and f~_t of one token.
struct GateGrads {
  double dli, dlf;
};

// One token t of the reverse recurrence. q, k: (Dqk); v, dHt: (Dv); fp = f'_t, ip = i'_t.
// G (Dqk, Dv): in, the stabilized gradient carried from t+1 (f'_{t+1} G_{t+1}, or dC_last);
// out, f'_t G_t with G_t = G + s q dH~^T. C_prev, C (Dqk, Dv): the states C_{t-1}, C_t.
// Writes dq, dk (Dqk), dv (Dv); returns (d i~_t, d f~_t).

GateGrads backward_token(int64_t Dqk, int64_t Dv, double s, const double* q, const double* k,
                         const double* v, const double* dHt, double fp, double ip,
                         const std::vector<double>& C_prev, const std::vector<double>& C,
                         std::vector<double>& G, double* dq, double* dk, double* dv) {
  for (int64_t a = 0; a < Dqk; ++a) {  // G_t = (carried) + s q_t dH~_t^T
    for (int64_t e = 0; e < Dv; ++e) G[size_t(a * Dv + e)] += s * q[a] * dHt[e];
  }
  double dli = 0.0, dlf = 0.0;
  for (int64_t e = 0; e < Dv; ++e) dv[e] = 0.0;
  for (int64_t a = 0; a < Dqk; ++a) {
    double acc_q = 0.0, acc_k = 0.0;
    for (int64_t e = 0; e < Dv; ++e) {
      const size_t ae = size_t(a * Dv + e);
      acc_q += C[ae] * dHt[e];
      acc_k += G[ae] * v[e];
      dv[e] += ip * G[ae] * k[a];
      dlf += G[ae] * C_prev[ae];
    }
    dq[a] = s * acc_q;
    dk[a] = ip * acc_k;
    dli += k[a] * dk[a];
  }
  for (double& g : G) g *= fp;
  return GateGrads{dli, fp * dlf};
}

}  // namespace

BackwardResult backward(const Shape& shape, const Options& options, const Inputs& in,
                        const States* initial, const std::vector<double>& dh,
                        const std::vector<double>* dC_last) {
  constexpr const char* fn = "backward";
  detail::check_shape_and_options(shape, options, fn);
  detail::check_inputs_and_states(shape, in, initial, fn);
  const int64_t heads = shape.B * shape.NH, S = shape.S, Dqk = shape.Dqk, Dv = shape.Dv;
  detail::check_size(dh, heads * S * Dv, "dh (B, NH, S, Dv)", fn);
  if (dC_last != nullptr)
    detail::check_size(*dC_last, heads * Dqk * Dv, "dC_last (B, NH, Dqk, Dv)", fn);
  const double s = detail::resolve_scale(shape, options);
  const int64_t K = std::max<int64_t>(1, int64_t(std::ceil(std::sqrt(double(S)))));

  BackwardResult out;
  out.dq.assign(in.q.size(), 0.0);
  out.dk.assign(in.k.size(), 0.0);
  out.dv.assign(in.v.size(), 0.0);
  out.di.assign(in.i.size(), 0.0);
  out.df.assign(in.f.size(), 0.0);
  out.d_initial = detail::zero_states(shape);
  std::vector<double> h(static_cast<size_t>(Dv)), den(static_cast<size_t>(S));
  std::vector<double> m(static_cast<size_t>(S + 1)), dHt(static_cast<size_t>(Dv));
  for (int64_t bh = 0; bh < heads; ++bh) {
    const detail::HeadInputs x = detail::head_inputs(shape, in, bh);
    // Forward: m_t (m[t + 1] after token t), den_t, and checkpoints C_{cK}.
    detail::HeadState st = detail::initial_head_state(shape, options, initial, bh);
    std::vector<std::vector<double>> checkpoints;
    m[0] = st.m;
    for (int64_t t = 0; t < S; ++t) {
      if (t % K == 0) checkpoints.push_back(st.C);
      detail::recurrent_step_head(options, s, Dqk, Dv, x.q + t * Dqk, x.k + t * Dqk, x.v + t * Dv,
                                  x.i[t], x.f[t], st, h.data(), &den[size_t(t)], &m[size_t(t + 1)]);
    }
    // Backward, one segment [t0, t1) at a time, latest first.
    std::vector<double> G(size_t(Dqk * Dv), 0.0);
    if (dC_last != nullptr) std::copy_n(dC_last->begin() + bh * Dqk * Dv, Dqk * Dv, G.begin());
    for (int64_t c = int64_t(checkpoints.size()) - 1; c >= 0; --c) {
      const int64_t t0 = c * K, t1 = std::min(S, t0 + K);
      std::vector<std::vector<double>> Cs(static_cast<size_t>(t1 - t0 + 1));  // C_{t0} .. C_{t1}
      Cs[0] = checkpoints[size_t(c)];
      for (int64_t t = t0; t < t1; ++t) {
        const double fp = std::exp(detail::log_sigmoid(x.f[t]) + m[size_t(t)] - m[size_t(t + 1)]);
        const double ip =
            std::exp(detail::log_input_gate(options.variant, x.i[t]) - m[size_t(t + 1)]);
        std::vector<double>& next = Cs[size_t(t - t0 + 1)];
        next = Cs[size_t(t - t0)];
        for (int64_t a = 0; a < Dqk; ++a) {
          for (int64_t e = 0; e < Dv; ++e) {
            double& cae = next[size_t(a * Dv + e)];
            cae = fp * cae + ip * x.k[t * Dqk + a] * x.v[t * Dv + e];
          }
        }
      }
      for (int64_t t = t1 - 1; t >= t0; --t) {
        const int64_t row = bh * S + t;
        for (int64_t e = 0; e < Dv; ++e)
          dHt[size_t(e)] = dh[size_t(row * Dv + e)] / (den[size_t(t)] + options.eps);
        const double fp = std::exp(detail::log_sigmoid(x.f[t]) + m[size_t(t)] - m[size_t(t + 1)]);
        const double ip =
            std::exp(detail::log_input_gate(options.variant, x.i[t]) - m[size_t(t + 1)]);
        const GateGrads gg = backward_token(Dqk, Dv, s, x.q + t * Dqk, x.k + t * Dqk, x.v + t * Dv,
                                            dHt.data(), fp, ip, Cs[size_t(t - t0)],
                                            Cs[size_t(t - t0 + 1)], G, out.dq.data() + row * Dqk,
                                            out.dk.data() + row * Dqk, out.dv.data() + row * Dv);
        out.di[size_t(row)] = gg.dli * detail::log_input_gate_grad(options.variant, x.i[t]);
        out.df[size_t(row)] = gg.dlf * detail::sigmoid(-x.f[t]);
      }
    }
    std::copy(G.begin(), G.end(), out.d_initial.C.begin() + bh * Dqk * Dv);
  }
  return out;
}

}  // namespace tfla::reference
