// Backward, the sequence split's last step for the dC recurrence: the dC kernel
// (mlstm_bwd_dstates*.cuh with p.nseg > 1) walked each segment of chunks [c0, c1) backwards from
// a zero gradient (the last segment from dC_last, so its values are exact) and stored, for each
// chunk c, its local dC_{c+1}. The reverse recurrence is linear with known decays
// a_k = exp(g_k + m_k - m_{k+1}) <= 1, so with D the exact dC at c1 (entering the segment from
// its end)
//   dC_{c+1} = local dC_{c+1} + exp(G + m_{c+1} - m_{c1}) D,   G = sum of g_k, c < k < c1
// and the exact dC at c0 is the segment's end value E_j plus exp(G_j + m_{c0} - m_{c1}) D (G_j
// summed over the whole segment). Segments are folded from the last to the first; dC0 is the
// fold over all of them. Each thread owns 8 consecutive elements of a head's dC. Grid:
// (ceil(Dqk Dv / 8 / 256), B * NH), 256 threads.
#pragma once
#include "tfla/mlstm_fwd_state_fix.cuh"

namespace tfla {

template <class TS, int DQK, int DV, bool EXP>
__device__ void mlstm_bwd_dstate_fix(const MlstmBwdParams& p) {
  constexpr long long kCE = static_cast<long long>(DQK) * DV;
  static_assert(DQK % 8 == 0 && DV % 8 == 0, "8-element groups");
  const int bh = blockIdx.y, nseg = p.nseg, L = p.seg_chunks, NC = p.NC;
  const long long e = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) * 8;
  if (e >= kCE) return;
  const long long mrow = static_cast<long long>(bh) * (NC + 1);
  auto m_at = [&](int c) { return EXP ? p.chunk_m[mrow + c] : 0.f; };

  float d[8];
  state_ld8<float>(d, p.seg_dC + (static_cast<long long>(bh) * nseg + nseg - 1) * kCE + e);
  for (int j = nseg - 2; j >= 0; --j) {
    const int c0 = j * L, c1 = min(NC, c0 + L);
    const float m_c1 = m_at(c1);
    float G = 0.f;
#pragma unroll 4
    for (int c = c1 - 1; c >= c0; --c) {
      const float f = __expf(G + m_at(c + 1) - m_c1);
      TS* dst = static_cast<TS*>(p.dstates_C) + (static_cast<long long>(bh) * NC + c) * kCE + e;
      float x[8];
      state_ld8<TS>(x, dst);
#pragma unroll
      for (int i = 0; i < 8; ++i) x[i] += f * d[i];
      state_st8<TS>(dst, x);
      G += p.chunk_g[static_cast<long long>(bh) * NC + c];
    }
    const float a = __expf(G + m_at(c0) - m_c1);
    float end[8];
    state_ld8<float>(end, p.seg_dC + (static_cast<long long>(bh) * nseg + j) * kCE + e);
#pragma unroll
    for (int i = 0; i < 8; ++i) d[i] = end[i] + a * d[i];
  }
  if (p.dC0) {  // the caller's buffer is only 4-byte aligned
    float* dst = p.dC0 + static_cast<long long>(bh) * kCE + e;
#pragma unroll
    for (int i = 0; i < 8; ++i) dst[i] = d[i];
  }
}

}  // namespace tfla
