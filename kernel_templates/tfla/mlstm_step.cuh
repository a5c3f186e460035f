// The recurrent step for generation (DESIGN.md section 3, recurrent form), T >= 1 tokens of
// B x NH heads in one launch, the state updated in place:
//   m_t = max(f~_t + m_{t-1}, i~_t)  (0 for mLSTMsig),  f'_t = exp(f~_t + m_{t-1} - m_t),
//   i'_t = exp(i~_t - m_t),  C_t = f'_t C_{t-1} + i'_t k_t v_t^T,  n_t = f'_t n_{t-1} + i'_t k_t,
//   h_t = C_t^T (s q_t) / (den_t + eps).
//
// Memory-bound: every call reads and writes the fp32 C (Dqk x Dv per head), so the design is
// about bytes in flight. A head's Dv columns are split over VS = DV / BV CTAs, which form one
// thread-block cluster (grid (VS, B*NH), cluster (VS, 1, 1), VS <= 8). A CTA owns a Dqk x BV
// slice of C and loads all of it into registers with 16-byte loads before it touches any of it,
// then keeps it there for all T tokens (the fused multi-step reads and writes C once per call);
// the last token stores each updated row as soon as it is computed, so the stores overlap the
// loads still in flight. The q, k, v of PF tokens are in flight at once (cp.async into a ring
// of PF shared buffers, refilled as tokens are consumed; PF >= T means all of them from the
// start), the gates of 32 tokens at a time. Every CTA carries its own copy of n and m (they are
// tiny, and every CTA needs the full q.n for the normalizer), computed identically in every CTA
// of the cluster.
//
// In-place n and m are the hazard: the cluster's rank 0 writes them while another CTA of the
// head may still be reading them. Every CTA arrives (release) on the cluster barrier once it has
// consumed n_0 and m_0; rank 0 waits (acquire) before it stores n_T and m_T. C and h slices
// are disjoint per CTA. Race-free for any grid size because a head never spans clusters.
#pragma once
#include "tfla/common.cuh"
#include "tfla/mlstm_step_params.cuh"

namespace tfla {

__device__ __forceinline__ void cluster_arrive_release() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait_acquire() {
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

template <class G>
__device__ __forceinline__ float step_gate(const void* p, i64 idx) {
  return Elem<G>::to_float(static_cast<const G*>(p)[idx]);
}

// 16 bytes of T (16 / sizeof(T) elements) from fp32 values.
template <class T> struct Pack16;
template <> struct Pack16<float> {
  __device__ static void store(float* dst, const float* x) {
    *reinterpret_cast<float4*>(dst) = make_float4(x[0], x[1], x[2], x[3]);
  }
};
template <class T> struct Pack16 {
  __device__ static void store(T* dst, const float* x) {
    uint4 u;
    u.x = Elem<T>::pack2(x[0], x[1]);
    u.y = Elem<T>::pack2(x[2], x[3]);
    u.z = Elem<T>::pack2(x[4], x[5]);
    u.w = Elem<T>::pack2(x[6], x[7]);
    *reinterpret_cast<uint4*>(dst) = u;
  }
};

// T: q, k, v, h dtype; G: gate dtype; BV: Dv columns per CTA; NT: threads per CTA; PF: tokens
// whose inputs are in flight at once; EXP: mLSTMexp (else mLSTMsig); NORMALIZE: mLSTMsig divides
// by max(|n.q|, 1).
template <class T, class G, int DQK, int DV, int BV, int NT, int PF, bool EXP, bool NORMALIZE>
__device__ void mlstm_step(const MlstmStepParams& p) {
  constexpr int TPR = step_threads_per_row(BV);  // threads per C row, 4 columns each
  constexpr int RPP = step_rows_per_pass(BV, NT);
  constexpr int NPASS = DQK / RPP;               // C rows per thread
  constexpr int NW = NT / 32;
  constexpr int NNA = (DQK + NT - 1) / NT;       // n rows per thread
  constexpr int VS = DV / BV;                    // CTAs per head = cluster size
  // The lanes of one column group are reduced with shuffles when a warp holds whole rows
  // (BV / 4 divides 32); else every row's partial goes to shared memory as it is.
  constexpr bool WARP_RED = 32 % TPR == 0;
  constexpr int NPART = WARP_RED ? NW : RPP;     // partial h rows in shared memory
  constexpr int EV = 16 / Elem<T>::bytes;        // elements per 16 bytes
  constexpr int QCH = DQK / EV, VCH = BV / EV;   // 16-byte chunks of q (= of k) and of v
  static_assert(BV % 16 == 0 && DV % BV == 0 && VS >= 1 && VS <= 8, "BV: a multiple of 16, VS <= 8");
  static_assert(NT % 32 == 0 && NT % TPR == 0 && RPP >= 1 && DQK % RPP == 0,
                "NT must split into whole C rows per pass, and the passes must cover Dqk");
  static_assert(step_state_regs(DQK, BV, NT) <= 128, "at most 128 state values per thread");
  static_assert(PF >= 1 && PF <= 8, "PF: 1 to 8 token buffers");
  constexpr int GCH = STEP_GATE_TOKENS;  // gates staged per chunk of tokens

  __shared__ __align__(16) T s_q[PF][DQK];
  __shared__ __align__(16) T s_k[PF][DQK];
  __shared__ __align__(16) T s_v[PF][BV];
  __shared__ __align__(16) float s_h[NPART][BV];
  __shared__ float s_qn[NW];
  __shared__ float s_gate[GCH][2];  // (i, f) of tokens [t0, t0 + GCH)

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int slice = blockIdx.x;  // this CTA's Dv slice = its rank in the head's cluster
  const int bh = blockIdx.y;
  const int b = bh / p.NH, hh = bh % p.NH;
  const int v0 = slice * BV;
  const int cg = tid % TPR, r0 = tid / TPR;

  // 1. The state slice, all loads in flight before any use.
  float* gC = p.C + (i64)bh * DQK * DV + v0 + cg * 4;  // row r0, this thread's 4 columns
  float4 c[NPASS];
#pragma unroll
  for (int j = 0; j < NPASS; ++j) c[j] = *reinterpret_cast<const float4*>(gC + (i64)(r0 + RPP * j) * DV);
  float nr[NNA];
#pragma unroll
  for (int j = 0; j < NNA; ++j) {
    const int a = tid + NT * j;
    nr[j] = a < DQK ? p.n[(i64)bh * DQK + a] : 0.f;
  }
  float m_prev = EXP ? p.m[bh] : 0.f;

  // 2. Token inputs: q, k and this slice of v through cp.async into the PF-token ring (one
  // commit group per token, empty when past T, so "all but the newest PF - 1 groups" is token t).
  const T* gq = static_cast<const T*>(p.q) + b * p.q_sb + hh * p.q_sh;
  const T* gk = static_cast<const T*>(p.k) + b * p.k_sb + hh * p.k_sh;
  const T* gv = static_cast<const T*>(p.v) + b * p.v_sb + hh * p.v_sh + v0;
  T* gh = static_cast<T*>(p.h) + b * p.h_sb + hh * p.h_sh + v0;
  const i64 gi = b * p.i_sb + hh * p.i_sh, gf = b * p.f_sb + hh * p.f_sh;
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

  for (int t = 0; t < p.T; ++t) {
    const int buf = t % PF;
    const bool last = t + 1 == p.T;
    if (t % GCH == 0 && tid < GCH && t + tid < p.T) {  // the gates of the next GCH tokens
      s_gate[tid][0] = step_gate<G>(p.i, gi + (i64)(t + tid) * p.i_ss);
      s_gate[tid][1] = step_gate<G>(p.f, gf + (i64)(t + tid) * p.f_ss);
    }
    cp_async_wait<PF - 1>();
    __syncthreads();  // token t's q, k, v and gates are in shared memory; last token's reads done
    const float gate_i = s_gate[t % GCH][0], gate_f = s_gate[t % GCH][1];

    // Gates (every thread, identically in every CTA of the head).
    const float lf = logsigmoid(gate_f);
    const float li = EXP ? gate_i : logsigmoid(gate_i);
    const float m_new = EXP ? fmaxf(lf + m_prev, li) : 0.f;
    const float fg = expf(lf + m_prev - m_new);
    const float ig = expf(li - m_new);

    // n update and this thread's part of n . (s q).
    float qn = 0.f;
#pragma unroll
    for (int j = 0; j < NNA; ++j) {
      const int a = tid + NT * j;
      if (a < DQK) {
        nr[j] = fmaf(fg, nr[j], ig * Elem<T>::to_float(s_k[buf][a]));
        qn = fmaf(nr[j], p.scale * Elem<T>::to_float(s_q[buf][a]), qn);
      }
    }
    // n_0 and m_0 are consumed: rank 0 may overwrite them once every CTA has arrived here.
    // Before the C stores below, so the release does not wait for them.
    if (VS > 1 && t == 0) cluster_arrive_release();

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
      // The last token's row is final: store it now, while later rows are still arriving.
      if (last) *reinterpret_cast<float4*>(gC + (i64)(r0 + RPP * j) * DV) = c[j];
    }

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
    qn = warp_sum(qn);
    if (lane == 0) s_qn[warp] = qn;
    __syncthreads();

    float qn_all = 0.f;
#pragma unroll
    for (int w = 0; w < NW; ++w) qn_all += s_qn[w];
    float den = 1.f;
    if (EXP) den = fmaxf(fabsf(qn_all), expf(-m_new));
    else if (NORMALIZE) den = fmaxf(fabsf(qn_all), 1.f);
    const float inv = 1.f / (den + p.eps);
    for (int x = tid; x < VCH; x += NT) {
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
    m_prev = m_new;
    issue(t + PF, buf);  // this buffer's reads are behind the barrier above: refill it
  }

  // 3. The C slice is back in place (stored during the last token); n and m by rank 0 once
  // every CTA of the head has read them.
  if (VS > 1) cluster_wait_acquire();
  if (slice == 0) {
#pragma unroll
    for (int j = 0; j < NNA; ++j) {
      const int a = tid + NT * j;
      if (a < DQK) p.n[(i64)bh * DQK + a] = nr[j];
    }
    if (p.m && tid == 0) p.m[bh] = m_prev;  // mLSTMsig: stays 0
  }
}

}  // namespace tfla
