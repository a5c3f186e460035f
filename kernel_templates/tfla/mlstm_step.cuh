// The recurrent step for generation (DESIGN.md section 3, recurrent form), T >= 1 tokens of
// B x NH heads, the state read from (C_src, n_src, m_src) where given, else from (C, n, m), and
// written to (C, n, m):
//   m_t = max(f~_t + m_{t-1}, i~_t)  (0 for mLSTMsig),  f'_t = exp(f~_t + m_{t-1} - m_t),
//   i'_t = exp(i~_t - m_t),  C_t = f'_t C_{t-1} + i'_t k_t v_t^T,  n_t = f'_t n_{t-1} + i'_t k_t,
//   h_t = C_t^T (s q_t) / (den_t + eps).
//
// Two launches per call, the second a programmatic dependent of the first:
// 1. mlstm_step_state, one CTA per head: the small recurrence (m, n and the normalizer of every
//    token), n and m written. For each token t and each Dv slice j of the head it
//    stores a 16-byte record (f'_t, i'_t, 1 / (den_t + eps), 0) at the start of that slice's
//    part of h's row t, which the second kernel reads before it overwrites it with h.
// 2. mlstm_step, (Dv / BV, B * NH) CTAs: the memory-bound part. A CTA owns a Dqk x BV slice of
//    C and loads all of it into registers with 16-byte loads before it touches any of it, then
//    keeps it there for all T tokens (the fused multi-step reads and writes C once per call);
//    the last token stores each updated row as soon as it is computed, so the stores overlap
//    the loads still in flight. The q, k, v of PF tokens are in flight at once (cp.async into a
//    ring of PF shared buffers, refilled as tokens are consumed). It is launched as a
//    programmatic dependent (sm_90): its C and q, k, v loads start while the first kernel runs,
//    and it waits (griddepcontrol.wait) for that kernel's records only after issuing them.
//
// Why two kernels: n and m are read by every CTA of a head and updated in place, so one kernel
// would need a cross-CTA order (a thread-block cluster per head); cluster scheduling left whole
// waves half empty (at 32 heads in clusters of 8 on 132 SMs only 30 clusters fit at once). Here
// only the first kernel touches n and m, and no two CTAs of either kernel write the same bytes.
// h must not overlap the inputs (it never may): the records are written into it first.
#pragma once
#include "tfla/common.cuh"
#include "tfla/mlstm_step_params.cuh"

namespace tfla {

template <class G>
__device__ __forceinline__ float step_gate(const void* p, i64 idx) {
  return Elem<G>::to_float(static_cast<const G*>(p)[idx]);
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
    *reinterpret_cast<uint4*>(dst) = u;
  }
};

// Programmatic dependent launch (sm_90; no-ops before): let the dependent grid be scheduled, and
// wait until the grid this one depends on has completed with its memory visible.
__device__ __forceinline__ void griddep_launch_dependents() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void griddep_wait() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Kernel 1, grid (B * NH), NA threads: n, m and the records of every token. T: q, k, h dtype;
// G: gate dtype; BV: the update kernel's slice width; EXP: mLSTMexp (else mLSTMsig); NORMALIZE: mLSTMsig divides by max(|n.q|, 1).
template <class T, class G, int DQK, int DV, int BV, int NA, bool EXP, bool NORMALIZE>
__device__ void mlstm_step_state(const MlstmStepParams& p) {
  constexpr int NNA = (DQK + NA - 1) / NA;  // n rows per thread
  constexpr int NW = NA / 32;
  constexpr int VS = DV / BV;               // Dv slices (update CTAs) per head
  static_assert(NA % 32 == 0 && BV % 16 == 0 && DV % BV == 0, "NA: whole warps; BV: a multiple of 16 dividing Dv");
  __shared__ float s_qn[2][NW];  // per-warp q.n partials, double-buffered over tokens

  // The update kernel may be scheduled now: it needs nothing from here before its wait.
  griddep_launch_dependents();
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int bh = blockIdx.x, b = bh / p.NH, hh = bh % p.NH;
  const float* n_in = p.n_src ? p.n_src : p.n;
  float nr[NNA];
#pragma unroll
  for (int j = 0; j < NNA; ++j) {
    const int a = tid + NA * j;
    nr[j] = a < DQK ? n_in[(i64)bh * DQK + a] : 0.f;
  }
  float m_prev = EXP ? (p.m_src ? p.m_src : p.m)[bh] : 0.f;
  const T* gq = static_cast<const T*>(p.q) + b * p.q_sb + hh * p.q_sh;
  const T* gk = static_cast<const T*>(p.k) + b * p.k_sb + hh * p.k_sh;
  T* gh = static_cast<T*>(p.h) + b * p.h_sb + hh * p.h_sh;
  const i64 gi = b * p.i_sb + hh * p.i_sh, gf = b * p.f_sb + hh * p.f_sh;

  for (int t = 0; t < p.T; ++t) {
    const float lf = logsigmoid(step_gate<G>(p.f, gf + (i64)t * p.f_ss));
    const float gate_i = step_gate<G>(p.i, gi + (i64)t * p.i_ss);
    const float li = EXP ? gate_i : logsigmoid(gate_i);
    const float m_new = EXP ? fmaxf(lf + m_prev, li) : 0.f;
    const float fg = expf(lf + m_prev - m_new);
    const float ig = expf(li - m_new);
    float qn = 0.f;
#pragma unroll
    for (int j = 0; j < NNA; ++j) {
      const int a = tid + NA * j;
      if (a < DQK) {
        nr[j] = fmaf(fg, nr[j], ig * Elem<T>::to_float(gk[(i64)t * p.k_ss + a]));
        qn = fmaf(nr[j], p.scale * Elem<T>::to_float(gq[(i64)t * p.q_ss + a]), qn);
      }
    }
    qn = warp_sum(qn);
    if (lane == 0) s_qn[t & 1][warp] = qn;
    __syncthreads();  // token t's partials; token t - 1's buffer was read before this barrier
    float qn_all = 0.f;
#pragma unroll
    for (int w = 0; w < NW; ++w) qn_all += s_qn[t & 1][w];
    float den = 1.f;
    if (EXP) den = fmaxf(fabsf(qn_all), expf(-m_new));
    else if (NORMALIZE) den = fmaxf(fabsf(qn_all), 1.f);
    for (int j = tid; j < VS; j += NA)
      *reinterpret_cast<float4*>(gh + (i64)t * p.h_ss + j * BV) = make_float4(fg, ig, 1.f / (den + p.eps), 0.f);
    m_prev = m_new;
  }
#pragma unroll
  for (int j = 0; j < NNA; ++j) {
    const int a = tid + NA * j;
    if (a < DQK) p.n[(i64)bh * DQK + a] = nr[j];
  }
  if (p.m && tid == 0) p.m[bh] = m_prev;  // mLSTMsig: 0 (m may be null there)
}

// Kernel 2, grid (Dv / BV, B * NH), NT threads: C and h. T: q, k, v, h dtype; BV: Dv columns
// per CTA; PF: tokens whose inputs are in flight at once.
template <class T, int DQK, int DV, int BV, int NT, int PF>
__device__ void mlstm_step(const MlstmStepParams& p) {
  constexpr int TPR = step_threads_per_row(BV);  // threads per C row, 4 columns each
  constexpr int RPP = step_rows_per_pass(BV, NT);
  constexpr int NPASS = DQK / RPP;               // C rows per thread
  constexpr int NW = NT / 32;
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
  constexpr int GCH = STEP_RECORD_TOKENS;  // records staged per chunk of tokens

  __shared__ __align__(16) T s_q[PF][DQK];
  __shared__ __align__(16) T s_k[PF][DQK];
  __shared__ __align__(16) T s_v[PF][BV];
  __shared__ __align__(16) float s_h[NPART][BV];
  __shared__ __align__(16) float4 s_rec[GCH];  // (f', i', 1 / (den + eps)) of tokens [t0, t0 + GCH)
  static_assert(sizeof(s_q) + sizeof(s_k) + sizeof(s_v) + sizeof(s_h) + sizeof(s_rec) ==
                    step_smem_bytes(Elem<T>::bytes, DQK, BV, NT, PF),
                "the arrays above must match step_smem_bytes, which the host plans the token buffers with");

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int slice = blockIdx.x;
  const int bh = blockIdx.y;
  const int b = bh / p.NH, hh = bh % p.NH;
  const int v0 = slice * BV;
  const int cg = tid % TPR, r0 = tid / TPR;

  // 1. The state slice, all loads in flight before any use.
  const i64 c_off = (i64)bh * DQK * DV + v0 + cg * 4;  // row r0, this thread's 4 columns
  float* gC = p.C + c_off;
  const float* gC_in = (p.C_src ? p.C_src : p.C) + c_off;
  float4 c[NPASS];
#pragma unroll
  for (int j = 0; j < NPASS; ++j) c[j] = *reinterpret_cast<const float4*>(gC_in + (i64)(r0 + RPP * j) * DV);

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

  // 3. The state kernel's records: complete and visible after this.
  griddep_wait();

  for (int t = 0; t < p.T; ++t) {
    const int buf = t % PF;
    const bool last = t + 1 == p.T;
    // This slice's records of the next GCH tokens, read before any of those h rows is written.
    if (t % GCH == 0 && tid < GCH && t + tid < p.T)
      s_rec[tid] = *reinterpret_cast<const float4*>(gh + (i64)(t + tid) * p.h_ss);
    cp_async_wait<PF - 1>();
    __syncthreads();  // token t's q, k, v and record are in shared memory; last token's reads done
    const float4 rec = s_rec[t % GCH];
    const float fg = rec.x, ig = rec.y, inv = rec.z;

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
    __syncthreads();

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
    issue(t + PF, buf);  // this buffer's reads are behind the barrier above: refill it
  }
}

}  // namespace tfla
