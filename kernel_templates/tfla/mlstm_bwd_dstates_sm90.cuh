// Backward, the reverse chunk-state recurrence on the sm_90a engine (the math is
// mlstm_bwd_dstates.cuh's):
//   dC_S  = dC_last (or 0)
//   store dC_{c+1} (the gradient of the state leaving chunk c) for the tile kernels, then
//   dC_c  = exp(g_c + m_c - m_{c+1}) dC_{c+1} + (Q_c * w)^T dh_c,
//   w_i   = s * beta_i / (den_i + eps),  beta_i = exp(b_i + m_c - mu_i)
// and finally dC0 = dC_0. With dC_last it also sums <dC_last, C_S> per CTA (the df term of the
// returned last state). One CTA per (BV columns of dC, head) walks the sequence from its end
// (the walk: sm90_state_walk.cuh, A = Q, B = dH). Rows past S are zero-filled by TMA and get
// w = 0. With p.nseg > 1 the walk is split into segments of the sequence (grid y = head * nseg
// + segment) as in mlstm_bwd_dstates.cuh.
#pragma once
#include "tfla/sm90_state_walk.cuh"

namespace tfla {

template <class T, int DQK, int DV, int CHUNK, int BV, int STAGES, bool EXP>
__device__ void mlstm_bwd_dstates_sm90(const MlstmBwdDstatesSm90Params& P, char* smem_raw) {
  using Walk = StateWalkSm90<T, DQK, DV, BV, STAGES>;
  constexpr int kSub = Walk::kSub, kNSub = CHUNK / kSub, kRows = Walk::kRows, kRg = Walk::kRg;
  static_assert(CHUNK % kSub == 0, "64-row sub-blocks tile the chunk");
  const MlstmBwdParams& p = P.p;
  Walk walk(smem_raw, &P.q, &P.dh);
  const int nseg = p.nseg > 1 ? p.nseg : 1;
  const int vt = blockIdx.x, bh = blockIdx.y / nseg, seg = blockIdx.y % nseg;
  const int v0 = vt * BV;
  const int NC = p.NC;
  const int c_begin = seg * p.seg_chunks;
  const int c_end = nseg > 1 ? min(NC, c_begin + p.seg_chunks) : NC;
  const int total = (c_end - c_begin) * kNSub, top = c_end * kNSub - 1;  // sub-block top - it at step it
  const long long S_pad = static_cast<long long>(NC) * CHUNK;

  if (!walk.consumer(&P.q, &P.dh, total, v0, bh % p.NH, bh / p.NH, [top](int it) { return (top - it) * kSub; }))
    return;

  float acc[Walk::kMB][Walk::kAcc];
  Walk::zero(acc);
  if (p.dC_last && seg == nseg - 1) {
    const long long base = static_cast<long long>(bh) * DQK * DV;
    walk.load_acc(acc, p.dC_last + base, v0);
    float dot = 0.f;
#pragma unroll
    for (int mb = 0; mb < Walk::kMB; ++mb)
#pragma unroll
      for (int i = 0; i < Walk::kAcc; ++i)
        dot += acc[mb][i] * p.C_last[base + static_cast<long long>(walk.acc_row(mb, i)) * DV + v0 + walk.acc_col(i)];
    dot = walk.cta_sum(dot);
    if (Walk::cw() == 0 && Walk::lt() == 0) p.dclast_dot[static_cast<long long>(bh) * p.dclast_parts + vt] = dot;
  }

  // Per row of the next sub-block (this thread's rows): whether it is in the sequence, the gate
  // value the weight needs (b_t for mLSTMsig, the prefix max pm_t for mLSTMexp) and 1 / (den + eps),
  // loaded one sub-block ahead.
  float gate_next[kRows], inv_next[kRows];
  auto load_rows = [&](int it) {
    const int row0 = (top - it) * kSub + Walk::r0();
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int t = row0 + kRg * i;
      const bool in = it < total && t < p.S;
      gate_next[i] = in ? (EXP ? p.gate_pm : p.gate_b)[bh * S_pad + t] : 0.f;
      inv_next[i] = in ? p.scale / (p.norm[static_cast<long long>(bh) * p.S + t] + p.eps) : 0.f;
    }
  };
  load_rows(0);
  float dummy[8];
#pragma unroll 1
  for (int c = c_end - 1; c >= c_begin; --c) {
    // Leaving chunk c (walking backwards): dC_{c+1} is published, then decayed.
    walk.store_acc(acc, static_cast<T*>(p.dstates_C) + (static_cast<long long>(bh) * NC + c) * DQK * DV, nullptr, v0);
    const float g_c = p.chunk_g[static_cast<long long>(bh) * NC + c];
    const float m_c = EXP ? p.chunk_m[static_cast<long long>(bh) * (NC + 1) + c] : 0.f;
    const float m_next = EXP ? p.chunk_m[static_cast<long long>(bh) * (NC + 1) + c + 1] : 0.f;
    const float decay = __expf(g_c + m_c - m_next);
#pragma unroll
    for (int mb = 0; mb < Walk::kMB; ++mb)
#pragma unroll
      for (int i = 0; i < Walk::kAcc; ++i) acc[mb][i] *= decay;
#pragma unroll 1
    for (int sub = kNSub - 1; sub >= 0; --sub) {
      // w = s exp(rq + m_c) / (den + eps), rq = -max(m_c, pm) (mLSTMexp) or b (mLSTMsig)
      float w[kRows];
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const float rq = EXP ? -fmaxf(m_c, gate_next[i]) : gate_next[i];
        w[i] = inv_next[i] == 0.f ? 0.f : __expf(rq + m_c) * inv_next[i];
      }
      load_rows((c_end - 1 - c) * kNSub + (kNSub - sub));
      walk.template step<false>(acc, w, dummy);
    }
    walk.drain(acc);
  }
  if (nseg > 1) {  // this segment's dC at its first chunk, for the fix kernel
    walk.store_acc(acc, nullptr, p.seg_dC + static_cast<long long>(blockIdx.y) * DQK * DV, v0);
    return;
  }
  if (p.dC0) walk.store_acc(acc, nullptr, p.dC0 + static_cast<long long>(bh) * DQK * DV, v0);
}

}  // namespace tfla
