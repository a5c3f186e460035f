// tfla::reference: the float64 CPU reference of every mLSTM op (DESIGN.md section 3).
//
// This is the arbiter the GPU kernels and tuner candidates are validated against, so it is
// written for clarity and exactness, not speed: plain loops over one (batch, head) at a time,
// every formula as DESIGN.md states it, all arithmetic in double. Its unit tests
// (tests/unit/test_reference*.cpp) prove the recurrent, chunkwise and step forms agree with
// each other and that both backward passes agree with finite differences.
//
// Layout: every tensor is a contiguous row-major std::vector<double>; the shape of each one is
// given in a comment beside it. B = batch, NH = heads, S = sequence length, Dqk = q/k head
// dimension, Dv = v head dimension.
//
// Conventions shared by every op:
// - Log gates: f~ = logsigmoid(f); i~ = i (Variant::Exp) or logsigmoid(i) (Variant::Sig).
// - States are *stabilized*: the unstabilized memory is Ctilde = exp(m) C (same for n).
//   For Variant::Sig the stabilizer is identically 0; an initial m passed for Sig is ignored.
// - Absent initial states (nullptr, or an empty vector) are zero; absent m_0 is 0.
// - normalize=false exists only for Variant::Sig (without the normalizer mLSTMexp's output
//   would depend on its stabilizer); Exp with normalize=false throws.
// - Every function throws std::invalid_argument, naming the function and the offending
//   tensor, on inconsistent sizes, a non-positive dimension, chunk_size < 1, or eps < 0.
#pragma once

#include <cstdint>
#include <vector>

namespace tfla::reference {

enum class Variant { Exp, Sig };  // mLSTMexp (exp input gate, stabilizer m) / mLSTMsig

struct Shape {
  int64_t B, NH, S, Dqk, Dv;
};

struct Options {
  Variant variant = Variant::Exp;
  bool normalize = true;  // Sig only: false means den_t = 1
  double eps = 1e-6;      // added to den_t before dividing
  double scale = 0.0;     // s; 0 -> 1/sqrt(Dqk)
};

struct States {           // empty vectors = absent (zero initial state)
  std::vector<double> C;  // (B, NH, Dqk, Dv)  stabilized matrix memory
  std::vector<double> n;  // (B, NH, Dqk)      stabilized normalizer state
  std::vector<double> m;  // (B, NH)           stabilizer (0 for Sig)
};

struct Inputs {              // all contiguous row-major, float64
  std::vector<double> q, k;  // (B, NH, S, Dqk)
  std::vector<double> v;     // (B, NH, S, Dv)
  std::vector<double> i, f;  // (B, NH, S) gate pre-activations
};

struct ForwardResult {
  std::vector<double> h;     // (B, NH, S, Dv)
  std::vector<double> norm;  // (B, NH, S)  den_t = max(|n_t.(s q_t)|, exp(-m_t)) (Exp);
                             //             max(|.|, 1) (Sig, normalize); 1 (Sig, !normalize)
  std::vector<double> m;     // (B, NH, S)  stabilizer m_t (0 for Sig)
  States last;               // (C_S, n_S, m_S), always filled
};

// The recurrent definition (DESIGN.md section 3), token by token. The ground truth.
// initial: nullable; each of its vectors may be empty (= zero). Cost O(B NH S Dqk Dv).
ForwardResult forward_recurrent(const Shape& shape, const Options& options, const Inputs& in,
                                const States* initial);

// The chunkwise form with per-row stabilizer mu_i (DESIGN.md section 3). Chunks of length
// chunk_size cover the sequence; the last one is shorter when S % chunk_size != 0. Agrees
// with forward_recurrent to rounding (mu_i == m_t exactly). Throws if chunk_size < 1.
ForwardResult forward_chunkwise(const Shape& shape, const Options& options, const Inputs& in,
                                const States* initial, int64_t chunk_size);

struct BackwardResult {
  std::vector<double> dq, dk, dv, di, df;  // shapes as the inputs
  States d_initial;  // C: dC0 (B, NH, Dqk, Dv); n, m: zero-filled (B, NH, Dqk), (B, NH)
};

// Gradient of L = sum_t dh_t . h_t + sum dC_last . C_S, where the full normalizer
// Z_t = exp(m_t) (den_t + eps) and the stabilizers m_t (so also m_S) are held constant at
// their forward values (the seed's stop-gradient convention). Equivalently
// h_t = Ctilde_t^T (s q_t) / Z_t with Ctilde_t = exp(f~_t) Ctilde_{t-1} + exp(i~_t) k_t v_t^T,
// Ctilde_0 = exp(m_0) C_0. Exact for every input and C_0 (n_0, m_0 get zero gradients).
// Reverse-mode over the recurrence in stabilized form, so large gates never overflow;
// memory O(sqrt(S) Dqk Dv) per head (checkpointed C states).
// dh: (B, NH, S, Dv); dC_last: nullable (B, NH, Dqk, Dv), gradient w.r.t. the returned C_S.
BackwardResult backward(const Shape& shape, const Options& options, const Inputs& in,
                        const States* initial, const std::vector<double>& dh,
                        const std::vector<double>* dC_last);

// The same gradient computed with DESIGN.md's chunkwise backward formulas (reverse chunk-state
// recurrence for dC, Sbar, dSbar, dV, dK, dQ, di, df), with the one correction documented at
// the top of backward_chunkwise.cpp (df needs + <dC_last, C_S>). Agrees with backward() to
// rounding, except that its df (a cumulative sum of differences) cancels when forget gates
// are nearly closed: compare its df with df_conditioned_error. Throws if chunk_size < 1.
BackwardResult backward_chunkwise(const Shape& shape, const Options& options, const Inputs& in,
                                  const States* initial, const std::vector<double>& dh,
                                  const std::vector<double>* dC_last, int64_t chunk_size);

struct StepResult {
  std::vector<double> h;  // (B, NH, Dv)
  States state;           // (C, n, m) after the token, always filled
};

// One recurrent step for one token (generation). shape.S is ignored.
// q, k: (B, NH, Dqk); v: (B, NH, Dv); i, f: (B, NH); state: each vector empty (= zero) or
// of its full shape. Running S steps reproduces forward_recurrent exactly.
StepResult step(const Shape& shape, const Options& options, const std::vector<double>& q,
                const std::vector<double>& k, const std::vector<double>& v,
                const std::vector<double>& i, const std::vector<double>& f, const States& state);

// The sequence split (docs/SEQUENCE_SPLIT.md): the state recurrence is linear with scalar decays,
// so a segment of the sequence can be walked without knowing the state it starts from and its
// effect composed afterwards. What the GPU's split state walks compute per segment and fold.
struct SegmentSummary {
  // The state after the segment's tokens walked from a zero state with no stabilizer history
  // (m = -inf before its first token, so m_end is the max-plus sum of its own gates alone):
  // C (B, NH, Dqk, Dv), n (B, NH, Dqk), m (B, NH; -inf for an empty segment, 0 for Sig).
  States end;
  std::vector<double> g;  // (B, NH) the segment's total log-decay, sum of f~ over its tokens
};
// The summary of tokens [t0, t1) of in (0 <= t0 <= t1 <= S). Throws std::invalid_argument on
// a range outside the sequence.
SegmentSummary segment_summary(const Shape& shape, const Options& options, const Inputs& in, int64_t t0,
                               int64_t t1);
// The exact state after `before` (nullable or empty vectors: the zero state, m = 0) followed by
// the segment summarized by seg:
//   m = max(g + m_before, m_end),  C = exp(g + m_before - m) C_before + exp(m_end - m) C_end
// (n likewise; m = 0 and plain decays for Sig). Folding the summaries of consecutive segments
// from the initial state gives forward_recurrent's last state; folding a segment's prefix into
// the state before it gives the state at any token inside it (the "correct" step).
States combine_segment(const Shape& shape, const Options& options, const States* before, const SegmentSummary& seg);
// The reverse of combine_segment, for the backward (context parallelism's exchange of state
// gradients): the gradient w.r.t. the state before a segment from the gradient w.r.t. the state
// after it,
//   dC_before = exp(g + m_before - m_after) dC_after + local    (exp(g) for Sig),
// the stabilizers held constant (backward's convention). local (B, NH, Dqk, Dv): the segment's
// own dC0, its backward from `before` with dC_last absent; m_before, m_after (B, NH): the
// stabilizers of the states before and after the segment (combine_segment's m; ignored for Sig,
// either may then be empty); g: the segment's SegmentSummary::g. dC_after: nullable (zero).
std::vector<double> combine_segment_backward(const Shape& shape, const Options& options,
                                             const std::vector<double>& m_before,
                                             const std::vector<double>& m_after, const std::vector<double>& g,
                                             const std::vector<double>& local,
                                             const std::vector<double>* dC_after);

// Packed sequences of variable lengths (cu_seqlens, FLA's convention): N sequences stored back
// to back along the token axis of one (1, NH, T, D) layout, sequence j at tokens
// [cu_seqlens[j], cu_seqlens[j + 1]). Each runs from its own initial state and no token sees
// another sequence. cu_seqlens: N + 1 offsets, cu_seqlens[0] = 0, non-decreasing, and
// cu_seqlens[N] = T = shape.S; shape.B must be 1. An empty sequence is allowed and does nothing:
// its last state is its initial state (zero when none is given).
// Throws std::invalid_argument naming the offset that breaks a rule.
void check_cu_seqlens(const Shape& shape, const std::vector<int64_t>& cu_seqlens, const char* fn);

// h, norm, m: (1, NH, T, ...) as forward_recurrent's; last: the N sequences' last states,
// C (N, NH, Dqk, Dv), n (N, NH, Dqk), m (N, NH). initial: nullable, shapes (N, NH, ...), each
// vector may be empty (= zero).
ForwardResult forward_varlen(const Shape& shape, const Options& options, const Inputs& in,
                             const std::vector<int64_t>& cu_seqlens, const States* initial);

// backward() per sequence: dq, dk, dv, di, df (1, NH, T, ...); d_initial.C is (N, NH, Dqk, Dv)
// (n and m zero-filled, (N, NH, Dqk) and (N, NH)); dC_last: nullable (N, NH, Dqk, Dv). An empty
// sequence passes its dC_last through to its dC0.
BackwardResult backward_varlen(const Shape& shape, const Options& options, const Inputs& in,
                               const std::vector<int64_t>& cu_seqlens, const States* initial,
                               const std::vector<double>& dh, const std::vector<double>* dC_last);

// Deterministic random inputs (splitmix64 + Box-Muller, identical on every platform).
// q, k, v ~ N(0,1). Realistic gates: i ~ N(0,1), f ~ 3 + N(0,1). extreme=true:
// i ~ 8 N(0,1) + oi, f ~ 8 N(0,1) + of, with per-head offsets oi in {-10, 0, 10} and
// of in {-4, 0, 4} chosen from (seed, head).
Inputs random_inputs(const Shape& shape, uint64_t seed, bool extreme = false);

// Deterministic random initial states: C, n ~ N(0,1); m ~ 2 N(0,1) (Exp) or 0 (Sig).
States random_states(const Shape& shape, Variant variant, uint64_t seed);

// |out - ref|_F / |ref|_F. +inf if any element of out or ref is NaN or Inf (so NaN never
// passes a tolerance); |out|_F if |ref|_F == 0. Throws if the sizes differ.
double relative_error(const std::vector<double>& out, const std::vector<double>& ref);

// Error of a df (B, NH, S) against want.df in the units DESIGN.md's df formula can resolve:
// |df - want.df|_F / |scale|_F with scale_t = sigmoid(-f_t) sum_{u>=t} (|q_u . dq_u| + |k_u .
// dk_u|) (dq, dk from want). That formula is a reverse cumulative sum of differences; with nearly
// closed forget gates the exact df is tiny next to the summands and the sum cancels, so a
// correct implementation (even backward_chunkwise in float64) can have a large *relative*
// error on df. Use this measure for df under extreme gates. +inf on any NaN/Inf in df or
// want.df; throws if sizes differ from shape.
double df_conditioned_error(const Shape& shape, const Inputs& in, const std::vector<double>& df,
                            const BackwardResult& want);

}  // namespace tfla::reference
