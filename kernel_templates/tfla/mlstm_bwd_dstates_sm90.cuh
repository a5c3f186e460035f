// Backward, the reverse chunk-state recurrence on the sm_90a engine (the math is
// mlstm_bwd_dstates.cuh's):
//   dC_S  = dC_last (or 0)
//   store dC_{c+1} (the gradient of the state leaving chunk c) for the tile kernels, then
//   dC_c  = exp(g_c + m_c - m_{c+1}) dC_{c+1} + (Q_c * w)^T dh_c,
//   w_i   = s * beta_i / (den_i + eps),  beta_i = exp(b_i + m_c - mu_i)
// and finally dC0 = dC_0. With dC_last it also sums <dC_last, C_S> per CTA (the df term of the
// returned last state). One CTA per (BV columns of dC, head) walks the sequence from its end
// (the walk: sm90_state_walk.cuh, A = Q, B = dH, (Q * w)^T as register fragments: A_REGS). Rows
// past S are zero-filled by TMA and get w = 0. With p.nseg > 1 the walk is split into segments
// of the sequence (grid y = head * nseg + segment) as in mlstm_bwd_dstates.cuh. A packed call
// (TFLA_PACKED, seq_span.cuh): one walk per sequence and head over its own chunks, its rows loaded
// from the (D, T, NH, 1) tensor at the sequence's offset; rows past its end (the next sequence's)
// get w = 0.
#pragma once
#include "tfla/seq_span.cuh"
#include "tfla/sm90_state_walk.cuh"

namespace tfla {

template <class T, int DQK, int DV, int CHUNK, int BV, int STAGES, bool EXP>
__device__ void mlstm_bwd_dstates_sm90(const MlstmBwdDstatesSm90Params& P, char* smem_raw) {
  using Walk = StateWalkSm90<T, DQK, DV, BV, STAGES, true, true>;
  constexpr int kSub = Walk::kSub, kNSub = CHUNK / kSub, kRows = Walk::scaled_rows(false);
  static_assert(CHUNK % kSub == 0, "64-row sub-blocks tile the chunk");
  const MlstmBwdParams& p = P.p;
  Walk walk(smem_raw, &P.q, &P.dh);
  const int nseg = p.nseg > 1 ? p.nseg : 1;
  const int vt = blockIdx.x, bh_split = blockIdx.y / nseg, seg = blockIdx.y % nseg;
  const int v0 = vt * BV;
  const int NC = p.NC;  // chunks per head in the workspace and the gate rows
  // a packed sequence walks its own chunks (never split) from its first token
  const SeqSpan sq = seq_span<CHUNK>(p, bh_split / p.NH, bh_split % p.NH);
  const int c_begin = seg * p.seg_chunks;
  const int c_end = nseg > 1 ? min(NC, c_begin + p.seg_chunks) : sq.NC;
  const int total = (c_end - c_begin) * kNSub, top = c_end * kNSub - 1;  // sub-block top - it at step it
  const long long S_pad = static_cast<long long>(NC) * CHUNK;
  const int tok0 = static_cast<int>(sq.tok0);

  if (!walk.consumer(&P.q, &P.dh, total, v0, bh_split % p.NH, TFLA_PACKED ? 0 : bh_split / p.NH,
                     [top, tok0](int it) { return tok0 + (top - it) * kSub; }))
    return;
  const int bh = sm90::ctaid_y() / nseg;

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

  // Per row of the next sub-block (the rows this thread scales, Walk::scaled_row): whether it is in the sequence, the gate
  // value the weight needs (b_t for mLSTMsig, the prefix max pm_t for mLSTMexp) and den_t, loaded
  // one sub-block ahead and used only when the weights are made (an arithmetic use here would
  // wait on the loads at every sub-block).
  float gate_next[kRows], den_next[kRows];
  bool in_next[kRows];
  const float* gate_rows = (EXP ? p.gate_pm : p.gate_b) + bh * S_pad;
  const float* den_rows = p.norm + sq.row;
  auto load_rows = [&](int it) {
    const int row0 = (top - it) * kSub;
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int t = row0 + Walk::scaled_row(false, i);
      const bool in = it < total && t < sq.S;
      in_next[i] = in;
      gate_next[i] = in ? gate_rows[t] : 0.f;
      den_next[i] = in ? den_rows[t] : 0.f;
    }
  };
  // w = s exp(rq + m_c) / (den + eps), rq = -max(m_c, pm) (mLSTMexp) or b (mLSTMsig)
  float w[kRows];
  auto weights = [&](float m_c) {
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const float inv = in_next[i] ? p.scale / (den_next[i] + p.eps) : 0.f;
      const float rq = EXP ? -fmaxf(m_c, gate_next[i]) : gate_next[i];
      w[i] = inv == 0.f ? 0.f : __expf(rq + m_c) * inv;
    }
  };
  // Chunk c's log-decay and stabilizers m_c, m_c+1, loaded a chunk ahead (off the chunk boundary's
  // path). open_chunk(c) fixes the chunk's decay: for c < c_end - 1 while chunk c + 1's last group
  // is still in flight. The drain, the store of dC_c+1 and its decay come between that and the
  // chunk's first sub-block (in walk order; no group in flight across the loop's back edge, where
  // the compiler's copies of X would serialize the wgmma).
  const float* cg = p.chunk_g + static_cast<long long>(bh) * NC;
  const float* cm = p.chunk_m + static_cast<long long>(bh) * (NC + 1);
  float g_next = c_end > c_begin ? cg[c_end - 1] : 0.f;
  float m_next = EXP && c_end > c_begin ? cm[c_end - 1] : 0.f;  // m_c of the chunk opened next
  float m_above = EXP ? cm[c_end] : 0.f;                        // its m_c+1
  float decay = 1.f;
  float dummy[Walk::kParts];
  auto open_chunk = [&](int c) {
    const float g_c = g_next, m_c = m_next;
    if (c > c_begin) {
      g_next = cg[c - 1];
      if (EXP) m_next = cm[c - 1];
    }
    decay = __expf(g_c + m_c - m_above);
    m_above = m_c;
  };
  load_rows(0);
  if (c_end > c_begin) open_chunk(c_end - 1);
#pragma unroll 1
  for (int c = c_end - 1; c >= c_begin; --c) {
    // Leaving chunk c (walking backwards): dC_{c+1} is published, then decayed.
    walk.store_acc(acc, static_cast<T*>(p.dstates_C) + (static_cast<long long>(bh) * NC + c) * DQK * DV, nullptr, v0);
#pragma unroll
    for (int mb = 0; mb < Walk::kMB; ++mb)
#pragma unroll
      for (int i = 0; i < Walk::kAcc; ++i) acc[mb][i] *= decay;
    const float m_c = m_above;
#pragma unroll 1
    for (int s = 0; s < kNSub; ++s) {
      weights(m_c);
      load_rows((c_end - 1 - c) * kNSub + s + 1);
      walk.template step<false>(acc, w, dummy);
    }
    if (c > c_begin) open_chunk(c - 1);
    walk.drain(acc);
  }
  if (nseg > 1) {  // this segment's dC at its first chunk, for the fix kernel
    walk.store_acc(acc, nullptr, p.seg_dC + static_cast<long long>(blockIdx.y) * DQK * DV, v0);
    return;
  }
  if (p.dC0) walk.store_acc(acc, nullptr, p.dC0 + static_cast<long long>(bh) * DQK * DV, v0);
}

}  // namespace tfla
