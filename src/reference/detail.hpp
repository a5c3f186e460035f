// Internals shared by the reference's .cpp files: argument checks, gate functions, per-head
// views of the (B, NH, ...) tensors, and the per-head forward passes the backward passes
// re-run. Not part of the API; nothing outside src/reference includes this.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "reference/reference.hpp"

namespace tfla::reference::detail {

// logsigmoid(x) = -log(1 + exp(-x)), stable for any finite x.
inline double log_sigmoid(double x) {
  return x < 0.0 ? x - std::log1p(std::exp(x)) : -std::log1p(std::exp(-x));
}

// sigmoid(x) = 1 / (1 + exp(-x)), stable for any finite x.
inline double sigmoid(double x) {
  if (x >= 0.0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

// i~ = i (Exp) or logsigmoid(i) (Sig).
inline double log_input_gate(Variant variant, double i_pre) {
  return variant == Variant::Exp ? i_pre : log_sigmoid(i_pre);
}

// d i~ / d i: 1 (Exp) or sigmoid(-i) (Sig).
inline double log_input_gate_grad(Variant variant, double i_pre) {
  return variant == Variant::Exp ? 1.0 : sigmoid(-i_pre);
}

// den_t from qn = n_t . (s q_t) and the stabilizer m_t (DESIGN.md section 3).
inline double denominator(const Options& o, double qn, double m) {
  if (o.variant == Variant::Exp) return std::max(std::fabs(qn), std::exp(-m));
  return o.normalize ? std::max(std::fabs(qn), 1.0) : 1.0;
}

// The scale s: options.scale, or 1/sqrt(Dqk) when it is 0.
double resolve_scale(const Shape& shape, const Options& options);

// Throw std::invalid_argument("<fn>: <what> ...") unless v.size() == expected.
void check_size(const std::vector<double>& v, int64_t expected, const char* what, const char* fn);

// Checks every dimension >= 1 (S too unless ignore_s), eps >= 0 and finite, and that
// normalize=false is only asked of Sig. Throws std::invalid_argument naming fn.
void check_shape_and_options(const Shape& shape, const Options& options, const char* fn,
                             bool ignore_s = false);

// Checks the inputs' sizes against shape, and that each vector of initial (nullable) is empty
// or of its full shape. Throws std::invalid_argument naming fn.
void check_inputs_and_states(const Shape& shape, const Inputs& in, const States* initial,
                             const char* fn);

// One head's slices of the inputs: pointers to (S, Dqk), (S, Dqk), (S, Dv), (S), (S).
struct HeadInputs {
  const double* q;  // (S, Dqk)
  const double* k;  // (S, Dqk)
  const double* v;  // (S, Dv)
  const double* i;  // (S)
  const double* f;  // (S)
};

// The slices of head bh = b * NH + h.
HeadInputs head_inputs(const Shape& shape, const Inputs& in, int64_t bh);

// One head's stabilized state.
struct HeadState {
  std::vector<double> C;  // (Dqk, Dv)
  std::vector<double> n;  // (Dqk)
  double m = 0.0;
};

// Head bh's slice of initial (nullable; empty vectors = zero). m is 0 for Sig.
HeadState initial_head_state(const Shape& shape, const Options& options, const States* initial,
                             int64_t bh);

// States with C, n, m allocated to their full (B, NH, ...) shapes and zero-filled.
States zero_states(const Shape& shape);

// Copies head bh's state into out (allocated by zero_states).
void store_head_state(const Shape& shape, const HeadState& st, int64_t bh, States& out);

// One recurrent update of one head, in place: the recurrent definition for one token.
// q, k: (Dqk); v: (Dv); h: (Dv) written; den and m: den_t and m_t written.
void recurrent_step_head(const Options& o, double s, int64_t Dqk, int64_t Dv, const double* q,
                         const double* k, const double* v, double i_pre, double f_pre,
                         HeadState& st, double* h, double* den, double* m);

// The gates of one chunk of length L entering with stabilizer m_prev (DESIGN.md section 3).
struct ChunkGates {
  std::vector<double> b;   // (L) inclusive cumsum of f~ within the chunk
  std::vector<double> a;   // (L) g - b_t + i~_t
  std::vector<double> li;  // (L) i~_t
  std::vector<double> mu;  // (L) row stabilizers mu_i (0 for Sig)
  double g = 0.0;          // b_{L-1}
  double m_next = 0.0;     // m after the chunk (0 for Sig)
};

// f, i: (L) gate pre-activations of the chunk; m_prev: the state's stabilizer entering it.
ChunkGates chunk_gates(const Options& o, const double* f, const double* i, int64_t L,
                       double m_prev);

// What backward_chunkwise needs from the forward of one head.
struct ChunkwiseTrace {
  std::vector<std::vector<double>> C;  // Nc + 1 chunk states C_c, each (Dqk, Dv)
  std::vector<double> m;               // (Nc + 1) their stabilizers m_c
};

// The chunkwise forward of one head. st: the initial state in, the last state out.
// h: (S, Dv), den: (S), mu: (S) written. trace: nullable; filled when given.
void chunkwise_forward_head(const Shape& shape, const Options& o, double s, const HeadInputs& x,
                            int64_t chunk_size, HeadState& st, double* h, double* den, double* mu,
                            ChunkwiseTrace* trace);

}  // namespace tfla::reference::detail
