// Backward, the gate gradients. Two launches over (chunk, head):
//  1. x_t = q_t.dq_t - k_t.dk_t (from the dQ / dK kernels' fp32 partial dots) and di_t = k_t.dk_t (times sigmoid(-i_t) for mLSTMsig); the
//     reverse inclusive cumsum of x inside the chunk -> row_x, the chunk's total -> chunk_x.
//  2. df_t = sigmoid(-f_t) * (row_x_t + sum of later chunks' totals + <dC_last, C_S>).
// The <dC_last, C_S> term is the gradient of the returned last state through every forget gate
// (zero without dC_last).
// The parallel form (CHUNK = 0) needs launch 1 only: one CTA per head, one chunk spanning the
// sequence, so the reverse cumsum is df's whole sum and launch 1 writes df itself.
#pragma once
#include "tfla/common.cuh"
#include "tfla/mlstm_gate_scan.cuh"
#include "tfla/mlstm_params.cuh"
#include "tfla/seq_span.cuh"

namespace tfla {

template <class T, class G, int DQK, int CHUNK, int NT, bool EXP>
__device__ void mlstm_bwd_gates_local(const MlstmBwdParams& p) {
  constexpr bool PAR = CHUNK == 0;
  __shared__ float s_warp[NT / 32];
  const BlockScan<NT> scan{s_warp};
  const int c = blockIdx.x, bh = blockIdx.y;
  const int b = bh / p.NH, h = bh % p.NH;
  const int tid = threadIdx.x;
  const int len = PAR ? p.S : CHUNK;         // rows of this CTA, from position start
  const int start = PAR ? 0 : c * CHUNK;
  const i64 S_pad = PAR ? (i64)p.S : (i64)p.NC * CHUNK;
  const SeqSpan sq = seq_span<CHUNK>(p, b, h);  // the parallel form takes the plain layout only
  if (!PAR && c >= sq.NC) return;
  // reverse inclusive scan of x over the rows, segments of NT from the end (thread 0 takes the
  // last row of a segment); each thread first sums its row's fp32 partial dots
  float carry = 0.f;
  for (int seg_end = len; seg_end > 0; seg_end -= NT) {
    const int r = seg_end - 1 - tid;
    const int t = start + r;
    float x = 0.f;
    if (r >= 0 && t < sq.S) {
      float qq = 0.f, kk = 0.f;
      const float* xp = p.xpart + (bh * S_pad + t) * 2 * p.xparts;
      for (int j = 0; j < p.xparts; ++j) {
        qq += xp[j];
        kk += xp[p.xparts + j];
      }
      float di = kk;
      if (!EXP) di *= sigmoidf_(-Elem<G>::to_float(static_cast<const G*>(p.i)[b * p.i_sb + h * p.i_sh + (sq.tok0 + t) * p.i_ss]));
      static_cast<G*>(p.di)[b * p.di_sb + h * p.di_sh + (sq.tok0 + t) * p.di_ss] = Elem<G>::from_float(di);
      x = qq - kk;
    }
    float total;
    x = carry + scan.sum(x, &total);  // rows past the segment's start added zeros
    carry += total;
    if (r < 0) continue;
    if (!PAR) {
      p.row_x[bh * S_pad + (i64)c * CHUNK + r] = x;
    } else if (t < p.S) {
      const float f = Elem<G>::to_float(static_cast<const G*>(p.f)[b * p.f_sb + h * p.f_sh + (i64)t * p.f_ss]);
      static_cast<G*>(p.df)[b * p.df_sb + h * p.df_sh + (i64)t * p.df_ss] = Elem<G>::from_float(sigmoidf_(-f) * x);
    }
  }
  if (!PAR && tid == 0) p.chunk_x[(i64)bh * p.NC + c] = carry;
}

template <class G, int CHUNK, int NT>
__device__ void mlstm_bwd_gates_df(const MlstmBwdParams& p) {
  __shared__ float s_suffix;
  const int c = blockIdx.x, bh = blockIdx.y;
  const int b = bh / p.NH, h = bh % p.NH;
  const int tid = threadIdx.x;
  const i64 S_pad = (i64)p.NC * CHUNK;
  const SeqSpan sq = seq_span<CHUNK>(p, b, h);
  if (c >= sq.NC) return;
  if (tid < 32) {
    float s = 0.f;
    for (int cc = c + 1 + tid; cc < sq.NC; cc += 32) s += p.chunk_x[(i64)bh * p.NC + cc];
    if (p.dC_last)
      for (int j = tid; j < p.dclast_parts; j += 32) s += p.dclast_dot[(i64)bh * p.dclast_parts + j];
    s = warp_sum(s);
    if (tid == 0) s_suffix = s;
  }
  __syncthreads();
  const float suffix = s_suffix;
  for (int r = tid; r < CHUNK; r += NT) {
    const int t = c * CHUNK + r;
    if (t >= sq.S) break;
    const float f = Elem<G>::to_float(static_cast<const G*>(p.f)[b * p.f_sb + h * p.f_sh + (sq.tok0 + t) * p.f_ss]);
    const float df = sigmoidf_(-f) * (p.row_x[bh * S_pad + t] + suffix);
    static_cast<G*>(p.df)[b * p.df_sb + h * p.df_sh + (sq.tok0 + t) * p.df_ss] = Elem<G>::from_float(df);
  }
}

}  // namespace tfla
