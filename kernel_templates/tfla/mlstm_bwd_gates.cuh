// Backward, the gate gradients. Two launches over (chunk, head):
//  1. x_t = q_t.dq_t - k_t.dk_t (from the dQ / dK kernels' fp32 partial dots) and di_t = k_t.dk_t (times sigmoid(-i_t) for mLSTMsig); the
//     reverse inclusive cumsum of x inside the chunk -> row_x, the chunk's total -> chunk_x.
//  2. df_t = sigmoid(-f_t) * (row_x_t + sum of later chunks' totals + <dC_last, C_S>).
// The <dC_last, C_S> term is the gradient of the returned last state through every forget gate
// (zero without dC_last).
#pragma once
#include "tfla/common.cuh"
#include "tfla/mlstm_params.cuh"

namespace tfla {

template <class T, class G, int DQK, int CHUNK, int NT, bool EXP>
__device__ void mlstm_bwd_gates_local(const MlstmBwdParams& p) {
  constexpr int NW = NT / 32;
  __shared__ float xs[CHUNK];
  __shared__ float s_warp[NW];
  __shared__ float s_carry;
  const int c = blockIdx.x, bh = blockIdx.y;
  const int b = bh / p.NH, h = bh % p.NH;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const i64 S_pad = (i64)p.NC * CHUNK;
  // one thread per row: sum the dQ / dK kernels' fp32 partial dots
  for (int r = tid; r < CHUNK; r += NT) {
    const int t = c * CHUNK + r;
    float qq = 0.f, kk = 0.f;
    if (t < p.S) {
      const float* xp = p.xpart + (bh * S_pad + t) * 2 * p.xparts;
      for (int j = 0; j < p.xparts; ++j) {
        qq += xp[j];
        kk += xp[p.xparts + j];
      }
      float di = kk;
      if (!EXP) di *= sigmoidf_(-Elem<G>::to_float(static_cast<const G*>(p.i)[b * p.i_sb + h * p.i_sh + (i64)t * p.i_ss]));
      static_cast<G*>(p.di)[b * p.di_sb + h * p.di_sh + (i64)t * p.di_ss] = Elem<G>::from_float(di);
    }
    xs[r] = qq - kk;
  }
  __syncthreads();
  // reverse inclusive scan of xs, segments of NT from the chunk's end
  float carry = 0.f;
  for (int seg_end = CHUNK; seg_end > 0; seg_end -= NT) {
    const int r = seg_end - 1 - tid;  // thread 0 takes the last row of the segment
    float x = r >= 0 ? xs[r] : 0.f;
    for (int o = 1; o < 32; o <<= 1) {
      const float y = __shfl_up_sync(0xffffffffu, x, o);
      if (lane >= o) x += y;
    }
    if (lane == 31) s_warp[warp] = x;
    __syncthreads();
    float off = carry;
    for (int w = 0; w < warp; ++w) off += s_warp[w];
    x += off;
    if (r >= 0) p.row_x[bh * S_pad + (i64)c * CHUNK + r] = x;
    if (tid == NT - 1) s_carry = x;  // rows past the segment added zeros: it holds the total
    __syncthreads();
    carry = s_carry;
    __syncthreads();
  }
  if (tid == 0) p.chunk_x[(i64)bh * p.NC + c] = carry;
}

template <class G, int CHUNK, int NT>
__device__ void mlstm_bwd_gates_df(const MlstmBwdParams& p) {
  __shared__ float s_suffix;
  const int c = blockIdx.x, bh = blockIdx.y;
  const int b = bh / p.NH, h = bh % p.NH;
  const int tid = threadIdx.x;
  const i64 S_pad = (i64)p.NC * CHUNK;
  if (tid < 32) {
    float s = 0.f;
    for (int cc = c + 1 + tid; cc < p.NC; cc += 32) s += p.chunk_x[(i64)bh * p.NC + cc];
    if (p.dC_last)
      for (int j = tid; j < p.dclast_parts; j += 32) s += p.dclast_dot[(i64)bh * p.dclast_parts + j];
    s = warp_sum(s);
    if (tid == 0) s_suffix = s;
  }
  __syncthreads();
  const float suffix = s_suffix;
  for (int r = tid; r < CHUNK; r += NT) {
    const int t = c * CHUNK + r;
    if (t >= p.S) break;
    const float f = Elem<G>::to_float(static_cast<const G*>(p.f)[b * p.f_sb + h * p.f_sh + (i64)t * p.f_ss]);
    const float df = sigmoidf_(-f) * (p.row_x[bh * S_pad + t] + suffix);
    static_cast<G*>(p.df)[b * p.df_sb + h * p.df_sh + (i64)t * p.df_ss] = Elem<G>::from_float(df);
  }
}

}  // namespace tfla
