// The recurrent step for generation (DESIGN.md section 3, recurrent form), T >= 1 tokens of
// B x NH heads, the state read from (C_src, n_src, m_src) where given, else from (C, n, m), and
// written to (C, n, m):
//   m_t = max(f~_t + m_{t-1}, i~_t)  (0 for mLSTMsig),  f'_t = exp(f~_t + m_{t-1} - m_t),
//   i'_t = exp(i~_t - m_t),  C_t = f'_t C_{t-1} + i'_t k_t v_t^T,  n_t = f'_t n_{t-1} + i'_t k_t,
//   h_t = C_t^T (s q_t) / (den_t + eps).
//
// mlstm_step_fused, (Dv / BV, B * NH) CTAs, does the whole step. A CTA owns a Dqk x BV slice of
// one head's C and loads all of it into registers with 16-byte loads before it touches any of
// it, then keeps it there for all T tokens (the fused multi-step reads and writes C once per
// call); the last token stores each updated row as soon as it is computed, so the stores overlap
// the loads still in flight. The q, k, v of PF tokens are in flight at once (cp.async into a ring
// of PF shared buffers, refilled as tokens are consumed). Every CTA of a head also runs the
// head's small recurrence (m, n and the normalizer of each token) on the q and k it has staged
// anyway: the CTAs of a head compute the same values with the same instructions, so they agree
// bit for bit.
//
// Who writes n and m (p.nm_mode). Every CTA of a head reads them, so where they are updated in
// place the write must wait until the head's last CTA has read them:
//   STEP_NM_APART: the sources are apart from n and m; the head's slice-0 CTA writes them.
//   STEP_NM_CLUSTER: in place, launched in clusters of Dv / BV CTAs (one head each, sm_90): every
//     thread arrives on the cluster barrier once it has read n and m, and slice 0 writes them
//     after waiting on it. The host uses it where one wave holds every cluster.
//   STEP_NM_DEPENDENT: in place otherwise. The fused kernel writes neither; mlstm_step_nm, one CTA
//     per head launched as its programmatic dependent, computes n and m from the old values while
//     the fused kernel runs and writes them after griddepcontrol.wait (the fused grid has
//     completed, so no CTA still reads them).
//   STEP_NM_RECORDS: several tokens over many waves of CTAs, in place or not. There the head's
//     recurrence inside every CTA adds latency to each token that the state loads no longer hide,
//     so mlstm_step_nm runs first: it writes n and m and, for each token and Dv slice, a 16-byte
//     record (f', i', 1 / (den + eps), 0) at the start of the slice's part of h's row; the fused
//     kernel, its programmatic dependent, issues its loads, waits for it, and reads the records
//     before it overwrites them with h.
// h must not overlap the inputs or the states: CTAs write h while others still read them.
#pragma once
#include "tfla/common.cuh"
#include "tfla/mlstm_step_params.cuh"

namespace tfla {

template <class G>
__device__ __forceinline__ float step_gate(const void* p, i64 idx) {
  return Elem<G>::to_float(static_cast<const G*>(p)[idx]);
}

// One token's gate factors from its log gates (lf = log sigmoid(f~); li = i~ for mLSTMexp, log
// sigmoid(i~) for mLSTMsig: step_log_gates) and the previous stabilizer: m_new, f' and i'. One
// definition for both kernels, so that they compute the same bits.
template <bool EXP>
__device__ __forceinline__ void step_log_gates(float gate_f, float gate_i, float& lf, float& li) {
  lf = logsigmoid(gate_f);
  li = EXP ? gate_i : logsigmoid(gate_i);
}
template <bool EXP> struct StepGates {
  float m, fg, ig;
  __device__ __forceinline__ StepGates(float lf, float li, float m_prev) {
    m = EXP ? fmaxf(lf + m_prev, li) : 0.f;
    fg = expf(lf + m_prev - m);
    ig = expf(li - m);
  }
};

// 1 / (den + eps) of one token from n . (s q) and the token's stabilizer m: den = max(|n.q|,
// exp(-m)) for mLSTMexp, max(|n.q|, 1) for mLSTMsig with the normalizer, else 1.
template <bool EXP, bool NORMALIZE>
__device__ __forceinline__ float step_inv_den(float qn, float m, float eps) {
  float den = 1.f;
  if (EXP) den = fmaxf(fabsf(qn), expf(-m));
  else if (NORMALIZE) den = fmaxf(fabsf(qn), 1.f);
  return 1.f / (den + eps);
}

// Head bh's n values a thread keeps: elements tid + STRIDE * j (j < N) of Dqk, read from n_src
// where given, else n (0 past Dqk); and their store into n.
template <int DQK, int STRIDE, int N>
__device__ __forceinline__ void step_load_n(const MlstmStepParams& p, int bh, int tid, float (&nr)[N]) {
  const float* n_in = p.n_src ? p.n_src : p.n;
#pragma unroll
  for (int j = 0; j < N; ++j) {
    const int a = tid + STRIDE * j;
    nr[j] = a < DQK ? n_in[(i64)bh * DQK + a] : 0.f;
  }
}
template <int DQK, int STRIDE, int N>
__device__ __forceinline__ void step_store_n(const MlstmStepParams& p, int bh, int tid, const float (&nr)[N]) {
#pragma unroll
  for (int j = 0; j < N; ++j) {
    const int a = tid + STRIDE * j;
    if (a < DQK) p.n[(i64)bh * DQK + a] = nr[j];
  }
}

// 16 bytes of T (16 / sizeof(T) elements) from fp32 values.
template <class T> struct Pack16;
template <> struct Pack16<float> {
  __device__ static void store(float* dst, const float* x) {
    __stwb(reinterpret_cast<float4*>(dst), make_float4(x[0], x[1], x[2], x[3]));
  }
};
template <class T> struct Pack16 {
  __device__ static void store(T* dst, const float* x) {
    uint4 u;
    u.x = Elem<T>::pack2(x[0], x[1]);
    u.y = Elem<T>::pack2(x[2], x[3]);
    u.z = Elem<T>::pack2(x[4], x[5]);
    u.w = Elem<T>::pack2(x[6], x[7]);
    __stwb(reinterpret_cast<uint4*>(dst), u);  // one 16-byte store (an assignment became four)
  }
};

// One PTX instruction without operands, a memory clobber, on sm_90 and later; nothing before
// (no launch that needs these runs there).
#if __CUDA_ARCH__ >= 900
#define TFLA_STEP_SM90_OP(text) asm volatile(text ";\n" ::: "memory")
#else
#define TFLA_STEP_SM90_OP(text)
#endif
// Programmatic dependent launch: let the dependent grid be scheduled; wait until the grid this
// one depends on has completed with its memory visible.
__device__ __forceinline__ void griddep_launch_dependents() {
  TFLA_STEP_SM90_OP("griddepcontrol.launch_dependents");
}
__device__ __forceinline__ void griddep_wait() { TFLA_STEP_SM90_OP("griddepcontrol.wait"); }
// Thread-block cluster barrier: arrive with release semantics (this thread's earlier reads and
// writes are ordered before it), wait with acquire semantics.
__device__ __forceinline__ void cluster_arrive() { TFLA_STEP_SM90_OP("barrier.cluster.arrive.release"); }
__device__ __forceinline__ void cluster_wait() { TFLA_STEP_SM90_OP("barrier.cluster.wait.acquire"); }

// The whole step, grid (Dv / BV, B * NH), NT threads. T: q, k, v, h dtype; G: gate dtype; BV: Dv
// columns per CTA; PF: tokens whose inputs are in flight at once; EXP: mLSTMexp (else mLSTMsig);
// NORMALIZE: mLSTMsig divides by max(|n.q|, 1).
template <class T, class G, int DQK, int DV, int BV, int NT, int PF, bool EXP, bool NORMALIZE>
__device__ void mlstm_step_fused(const MlstmStepParams& p) {
  constexpr int TPR = step_threads_per_row(BV);  // threads per C row, 4 columns each
  constexpr int RPP = step_rows_per_pass(BV, NT);
  constexpr int NPASS = DQK / RPP;               // C rows per thread
  constexpr int NW = NT / 32;
  constexpr int NN = (DQK + NT - 1) / NT;        // n values per thread
  // The lanes of one column group are reduced with shuffles when a warp holds whole rows
  // (BV / 4 divides 32); else every row's partial goes to shared memory as it is.
  constexpr bool WARP_RED = 32 % TPR == 0;
  constexpr int NPART = WARP_RED ? NW : RPP;     // partial h rows in shared memory
  constexpr int EV = 16 / Elem<T>::bytes;        // elements per 16 bytes
  constexpr int QCH = DQK / EV, VCH = BV / EV;   // 16-byte chunks of q (= of k) and of v
  static_assert(BV % 16 == 0 && DV % BV == 0, "BV: a multiple of 16 dividing Dv");
  static_assert(NT % 32 == 0 && NT % TPR == 0 && RPP >= 1 && DQK % RPP == 0,
                "NT must split into whole C rows per pass, and the passes must cover Dqk");
  static_assert(step_state_regs(DQK, BV, NT) <= 128, "at most 128 state values per thread");
  static_assert(PF >= 1 && PF <= 8, "PF: 1 to 8 token buffers");
  constexpr int GCH = STEP_GATE_TOKENS;  // tokens whose gate factors are staged at once

  __shared__ __align__(16) T s_q[PF][DQK];
  __shared__ __align__(16) T s_k[PF][DQK];
  __shared__ __align__(16) T s_v[PF][BV];
  __shared__ __align__(16) float s_h[NPART][BV];
  __shared__ float s_qn[NW];  // per-warp partials of n . (s q)
  __shared__ float4 s_rec[GCH];  // (f', i', m or, with records, 1 / (den + eps)) of tokens [t0, t0 + GCH)
  static_assert(sizeof(s_q) + sizeof(s_k) + sizeof(s_v) + sizeof(s_h) + sizeof(s_qn) + sizeof(s_rec) ==
                    step_smem_bytes(Elem<T>::bytes, DQK, BV, NT, PF),
                "the arrays above must match step_smem_bytes, which the host plans the token buffers with");

  // STEP_NM_DEPENDENT: mlstm_step_nm may be scheduled now (it writes n and m only after its wait).
  if (p.nm_mode == STEP_NM_DEPENDENT) griddep_launch_dependents();
  const bool records = p.nm_mode == STEP_NM_RECORDS;  // the gate factors and 1 / (den + eps) from h
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int slice = blockIdx.x;
  const int bh = blockIdx.y;
  const int b = bh / p.NH, hh = bh % p.NH;
  const int v0 = slice * BV;
  const int cg = tid % TPR, r0 = tid / TPR;

  // 1. The state slice, all loads in flight before any use; then n and m.
  const i64 c_off = (i64)bh * DQK * DV + v0 + cg * 4;  // row r0, this thread's 4 columns
  float* gC = p.C + c_off;
  const float* gC_in = (p.C_src ? p.C_src : p.C) + c_off;
  float4 c[NPASS];
#pragma unroll
  for (int j = 0; j < NPASS; ++j) c[j] = *reinterpret_cast<const float4*>(gC_in + (i64)(r0 + RPP * j) * DV);
  float nr[NN] = {};
  if (!records) step_load_n<DQK, NT>(p, bh, tid, nr);
  // the running stabilizer, kept by the first warp (which stages the gate factors)
  float m_run = EXP && !records && warp == 0 ? (p.m_src ? p.m_src : p.m)[bh] : 0.f;
  const i64 gi = b * p.i_sb + hh * p.i_sh, gf = b * p.f_sb + hh * p.f_sh;

  // 2. Token inputs: q, k and this slice of v through cp.async into the PF-token ring (one
  // commit group per token, empty when past T, so "all but the newest PF - 1 groups" is token t).
  const T* gq = static_cast<const T*>(p.q) + b * p.q_sb + hh * p.q_sh;
  const T* gk = static_cast<const T*>(p.k) + b * p.k_sb + hh * p.k_sh;
  const T* gv = static_cast<const T*>(p.v) + b * p.v_sb + hh * p.v_sh + v0;
  T* gh = static_cast<T*>(p.h) + b * p.h_sb + hh * p.h_sh + v0;
  auto issue = [&](int t, int buf) {
    if (t < p.T)
      for (int x = tid; x < 2 * QCH + VCH; x += NT) {
        if (x < QCH) cp_async16(&s_q[buf][x * EV], gq + (i64)t * p.q_ss + x * EV, 16);
        else if (x < 2 * QCH) cp_async16(&s_k[buf][(x - QCH) * EV], gk + (i64)t * p.k_ss + (x - QCH) * EV, 16);
        else cp_async16(&s_v[buf][(x - 2 * QCH) * EV], gv + (i64)t * p.v_ss + (x - 2 * QCH) * EV, 16);
      }
    cp_async_commit();
  };
#pragma unroll
  for (int u = 0; u < PF; ++u) issue(u, u);
  if (records) griddep_wait();  // mlstm_step_nm's records are complete and visible

  for (int t = 0; t < p.T; ++t) {
    const int buf = t % PF;
    const bool last = t + 1 == p.T;
    // The records of the next GCH tokens (the previous ones were last read right after the
    // barrier that began the previous token). With records: this slice's, from h, before any of
    // those h rows is written. Else staged by the first warp: each lane takes one token's log
    // gates, then every lane runs the stabilizer's recurrence over them and lane u keeps token
    // u's record.
    if (records) {
      if (t % GCH == 0 && tid < GCH && t + tid < p.T)
        s_rec[tid] = *reinterpret_cast<const float4*>(gh + (i64)(t + tid) * p.h_ss);
    } else if (t % GCH == 0 && warp == 0) {
      const int cnt = min(GCH, p.T - t);
      float lf = 0.f, li = 0.f;
      if (lane < cnt)
        step_log_gates<EXP>(step_gate<G>(p.f, gf + (i64)(t + lane) * p.f_ss),
                            step_gate<G>(p.i, gi + (i64)(t + lane) * p.i_ss), lf, li);
      for (int u = 0; u < cnt; ++u) {
        const StepGates<EXP> g(__shfl_sync(0xffffffffu, lf, u), __shfl_sync(0xffffffffu, li, u), m_run);
        m_run = g.m;
        if (lane == u) s_rec[u] = make_float4(g.fg, g.ig, g.m, 0.f);
      }
    }
    cp_async_wait<PF - 1>();
    // token t's q, k, v and gate factors are in shared memory; the last token's reads are done
    __syncthreads();
    const float4 rec = s_rec[t % GCH];
    const float fg = rec.x, ig = rec.y;  // rec.z: m_t, or with records 1 / (den_t + eps)
    if (!records) {
      float qn = 0.f;
#pragma unroll
      for (int j = 0; j < NN; ++j) {
        const int a = tid + NT * j;
        if (a < DQK) {
          nr[j] = fmaf(fg, nr[j], ig * Elem<T>::to_float(s_k[buf][a]));
          qn = fmaf(nr[j], p.scale * Elem<T>::to_float(s_q[buf][a]), qn);
        }
      }
      if (EXP || NORMALIZE) {  // mLSTMsig without the normalizer divides by 1
        qn = warp_sum(qn);
        if (lane == 0) s_qn[warp] = qn;
      }
    }

    // C slice update and this thread's part of C^T (s q) over its rows.
    float vv[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) vv[e] = Elem<T>::to_float(s_v[buf][cg * 4 + e]);
    float hp[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int j = 0; j < NPASS; ++j) {
      const int a = r0 + RPP * j;
      const float kf = ig * Elem<T>::to_float(s_k[buf][a]);
      const float qf = p.scale * Elem<T>::to_float(s_q[buf][a]);
      c[j].x = fmaf(fg, c[j].x, kf * vv[0]);
      c[j].y = fmaf(fg, c[j].y, kf * vv[1]);
      c[j].z = fmaf(fg, c[j].z, kf * vv[2]);
      c[j].w = fmaf(fg, c[j].w, kf * vv[3]);
      hp[0] = fmaf(qf, c[j].x, hp[0]);
      hp[1] = fmaf(qf, c[j].y, hp[1]);
      hp[2] = fmaf(qf, c[j].z, hp[2]);
      hp[3] = fmaf(qf, c[j].w, hp[3]);
      // The last token's row is final: store it now, while later rows are still arriving (one
      // 16-byte store: written as a float4 assignment, the compiler split it into four).
      if (last) __stwb(reinterpret_cast<float4*>(gC + (i64)(r0 + RPP * j) * DV), c[j]);
    }
    // This thread is done reading n and m (token 0 used them): the cluster's slice 0 may write them.
    if (t == 0 && p.nm_mode == STEP_NM_CLUSTER) cluster_arrive();

    // Reduce the h partials over the threads of one column group: lanes first, then warps.
    if (WARP_RED) {
#pragma unroll
      for (int o = TPR; o < 32; o <<= 1)
#pragma unroll
        for (int e = 0; e < 4; ++e) hp[e] += __shfl_xor_sync(0xffffffffu, hp[e], o);
      if (lane < TPR) *reinterpret_cast<float4*>(&s_h[warp][cg * 4]) = make_float4(hp[0], hp[1], hp[2], hp[3]);
    } else {
      *reinterpret_cast<float4*>(&s_h[r0][cg * 4]) = make_float4(hp[0], hp[1], hp[2], hp[3]);
    }
    __syncthreads();  // token t's partials of h and of n . (s q)

    for (int x = tid; x < VCH; x += NT) {
      float inv = rec.z;
      if (!records) {
        float qn_all = 0.f;
        if (EXP || NORMALIZE)
#pragma unroll
          for (int w = 0; w < NW; ++w) qn_all += s_qn[w];
        inv = step_inv_den<EXP, NORMALIZE>(qn_all, rec.z, p.eps);
      }
      float hv[EV];
#pragma unroll
      for (int e = 0; e < EV; ++e) {
        float s = 0.f;
#pragma unroll
        for (int w = 0; w < NPART; ++w) s += s_h[w][x * EV + e];
        hv[e] = s * inv;
      }
      Pack16<T>::store(gh + (i64)t * p.h_ss + x * EV, hv);
    }
    issue(t + PF, buf);  // this buffer's reads are behind the barrier above: refill it
  }

  // 3. n and m (mLSTMsig: m = 0, where m is given).
  if (p.nm_mode == STEP_NM_CLUSTER) cluster_wait();  // every thread of the head's CTAs has read them
  if ((p.nm_mode == STEP_NM_APART || p.nm_mode == STEP_NM_CLUSTER) && slice == 0) {
    step_store_n<DQK, NT>(p, bh, tid, nr);
    if (p.m && tid == 0) p.m[bh] = m_run;
  }
}

// n and m, under STEP_NM_DEPENDENT and STEP_NM_RECORDS, grid (B * NH), NA threads: the fused
// kernel's recurrence (step_log_gates, StepGates, the same n update). STEP_NM_DEPENDENT: launched
// as the fused kernel's programmatic dependent, it computes from the old values while the fused
// kernel runs and writes once that has completed. STEP_NM_RECORDS: launched first, it also
// reduces n . (s q) per token and leaves each token's record at the start of each Dv slice's part
// of h's row (BV columns a slice). T: q, k, h dtype; G: gate dtype.
template <class T, class G, int DQK, int DV, int BV, int NA, bool EXP, bool NORMALIZE>
__device__ void mlstm_step_nm(const MlstmStepParams& p) {
  constexpr int NNA = (DQK + NA - 1) / NA;  // n values per thread
  constexpr int NW = NA / 32;
  constexpr int VS = DV / BV;               // Dv slices (fused CTAs) per head
  static_assert(NA % 32 == 0 && BV % 16 == 0 && DV % BV == 0,
                "NA: whole warps; BV: a multiple of 16 dividing Dv");
  __shared__ float s_qn[2][NW];  // per-warp n . q partials, double-buffered over tokens
  const bool records = p.nm_mode == STEP_NM_RECORDS;
  if (records) griddep_launch_dependents();  // the fused kernel may start its loads now
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int bh = blockIdx.x, b = bh / p.NH, hh = bh % p.NH;
  float nr[NNA];
  step_load_n<DQK, NA>(p, bh, tid, nr);
  float m_prev = EXP ? (p.m_src ? p.m_src : p.m)[bh] : 0.f;
  const T* gq = static_cast<const T*>(p.q) + b * p.q_sb + hh * p.q_sh;
  const T* gk = static_cast<const T*>(p.k) + b * p.k_sb + hh * p.k_sh;
  T* gh = static_cast<T*>(p.h) + b * p.h_sb + hh * p.h_sh;
  const i64 gi = b * p.i_sb + hh * p.i_sh, gf = b * p.f_sb + hh * p.f_sh;
  for (int t = 0; t < p.T; ++t) {
    float lf, li;
    step_log_gates<EXP>(step_gate<G>(p.f, gf + (i64)t * p.f_ss), step_gate<G>(p.i, gi + (i64)t * p.i_ss), lf,
                        li);
    const StepGates<EXP> g(lf, li, m_prev);
    float qn = 0.f;
#pragma unroll
    for (int j = 0; j < NNA; ++j) {
      const int a = tid + NA * j;
      if (a < DQK) {
        nr[j] = fmaf(g.fg, nr[j], g.ig * Elem<T>::to_float(gk[(i64)t * p.k_ss + a]));
        if (records) qn = fmaf(nr[j], p.scale * Elem<T>::to_float(gq[(i64)t * p.q_ss + a]), qn);
      }
    }
    if (records) {
      float qn_all = 0.f;
      if (EXP || NORMALIZE) {  // mLSTMsig without the normalizer divides by 1
        qn = warp_sum(qn);
        if (lane == 0) s_qn[t & 1][warp] = qn;
        __syncthreads();  // token t's partials; token t - 1's buffer was read before this barrier
#pragma unroll
        for (int w = 0; w < NW; ++w) qn_all += s_qn[t & 1][w];
      }
      const float inv = step_inv_den<EXP, NORMALIZE>(qn_all, g.m, p.eps);
      for (int j = tid; j < VS; j += NA)
        *reinterpret_cast<float4*>(gh + (i64)t * p.h_ss + j * BV) = make_float4(g.fg, g.ig, inv, 0.f);
    }
    m_prev = g.m;
  }
  if (!records) griddep_wait();  // the fused kernel has completed: no CTA reads the old n and m any more
  step_store_n<DQK, NA>(p, bh, tid, nr);
  if (p.m && tid == 0) p.m[bh] = m_prev;  // mLSTMsig: 0 (m may be null there)
}

}  // namespace tfla
