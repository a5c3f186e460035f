// Forward, kernel 1 of 3: gate preprocessing. One CTA per (chunk, head) computes, for every
// position t of the chunk, b_t = sum_{u<=t} logsigmoid(f_u) (inclusive, restarted at the chunk
// start), u_t = i~_t - b_t and the running maximum pm_t of u inside the chunk, plus per chunk
// g = b_last and max u. Everything later kernels need about the gates, in fp32, so that the
// stabilizers are known before any matrix work (no online rescaling is needed):
//   mu_t = b_t + max(m_c, pm_t)        (mLSTMexp)
//   D_tj = exp(b_t - b_j + i~_j - mu_t) = exp(u_j - max(m_c, pm_t))
// Positions past S get f~ = 0 and i~ = -inf, so they contribute nothing. A packed sequence
// (seq_span.cuh) runs its own length; its CTAs past its last chunk do nothing.
#pragma once
#include "tfla/common.cuh"
#include "tfla/mlstm_params.cuh"
#include "tfla/seq_span.cuh"

namespace tfla {

template <class G>
__device__ __forceinline__ float load_gate(const void* p, i64 idx) {
  return Elem<G>::to_float(static_cast<const G*>(p)[idx]);
}

// CHUNK: chunk length; NT threads; EXP: mLSTMexp (else mLSTMsig); G: gate dtype.
template <int CHUNK, int NT, bool EXP, class G>
__device__ void mlstm_fwd_gates(const MlstmFwdParams& p) {
  constexpr int NW = NT / 32;
  __shared__ float s_warp[NW];
  __shared__ float s_carry[2];
  const int c = blockIdx.x, bh = blockIdx.y;
  const int b = bh / p.NH, h = bh % p.NH;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const i64 S_pad = (i64)p.NC * CHUNK;
  const SeqSpan sq = seq_span<CHUNK>(p, b, h);
  if (c >= sq.NC) return;  // a packed sequence shorter than the bound
  float carry_b = 0.f, carry_pm = neg_inf();
  for (int seg = 0; seg < CHUNK; seg += NT) {
    const int t = c * CHUNK + seg + tid;
    float ft = 0.f, it = neg_inf();
    if (seg + tid < CHUNK && t < sq.S) {
      ft = logsigmoid(load_gate<G>(p.f, b * p.f_sb + h * p.f_sh + (sq.tok0 + t) * p.f_ss));
      const float iraw = load_gate<G>(p.i, b * p.i_sb + h * p.i_sh + (sq.tok0 + t) * p.i_ss);
      it = EXP ? iraw : logsigmoid(iraw);
    }
    // inclusive block scan (sum) of ft
    float x = ft;
    for (int o = 1; o < 32; o <<= 1) {
      const float y = __shfl_up_sync(0xffffffffu, x, o);
      if (lane >= o) x += y;
    }
    if (lane == 31) s_warp[warp] = x;
    __syncthreads();
    float off = carry_b;
    for (int w = 0; w < warp; ++w) off += s_warp[w];
    const float bt = x + off;
    const float ut = it - bt;
    __syncthreads();
    // inclusive block scan (max) of ut
    float mx = ut;
    for (int o = 1; o < 32; o <<= 1) {
      const float y = __shfl_up_sync(0xffffffffu, mx, o);
      if (lane >= o) mx = fmaxf(mx, y);
    }
    if (lane == 31) s_warp[warp] = mx;
    __syncthreads();
    float pmoff = carry_pm;
    for (int w = 0; w < warp; ++w) pmoff = fmaxf(pmoff, s_warp[w]);
    const float pm = fmaxf(mx, pmoff);
    if (seg + tid < CHUNK) {
      const i64 o = bh * S_pad + (i64)c * CHUNK + seg + tid;
      p.gate_b[o] = bt;
      p.gate_u[o] = ut;
      p.gate_pm[o] = pm;
    }
    const int last = (CHUNK - seg < NT ? CHUNK - seg : NT) - 1;
    if (tid == last) {
      s_carry[0] = bt;
      s_carry[1] = pm;
    }
    __syncthreads();
    carry_b = s_carry[0];
    carry_pm = s_carry[1];
    __syncthreads();
  }
  if (tid == 0) {
    p.chunk_g[(i64)bh * p.NC + c] = carry_b;
    p.chunk_umax[(i64)bh * p.NC + c] = carry_pm;
  }
}

}  // namespace tfla
