// Forward, the fused walk's sequence split (mlstm_fwd_fused_sm90.cuh, docs/SEQUENCE_SPLIT.md):
// the segment summaries on the sm_90a engine. For each segment before the last, in p.seg_pieces
// pieces of seg_chunks / seg_pieces chunks, one walk from a zero state (the first piece of
// segment 0 from the caller's initial state) that stores no chunk states, only its end state
//   C_end = sum over the piece's tokens of exp(decay to the end + u_t - m) k_t v_t^T
// (and n, m) in seg_C / seg_n / seg_m at piece index head * nseg * pieces + piece, which the
// fold (mlstm_fwd_state_fix.cuh, STARTS) composes into the segments' start states.
// One CTA per (128 columns of Dv, head, piece), grid y = head * (nseg - 1) * pieces + piece,
// 384 threads, the ring and TMA loads of sm90_state_walk.cuh (A = K, B = V) in its transposed
// form: each consumer warpgroup holds C^T for its 64 columns of Dv and all of Dqk, scales its
// panel of V by the token weights and issues C^T += (w V)^T K. The Dv-tile-0 CTA also sums n
// (the column sums of w K) from K as loaded, in fp32 products. The chunks go in groups of kGroup
// (256 rows, as a walk at chunk 256), one stabilizer and one decay per group, so a wgmma group
// stays in flight across the chunks of a group. With G the group's total log-decay and
// R_k = G - (the decays of the group's chunks before k), the state leaving the group is
//   exp(G + m - m') C + sum_k sum_{t in chunk k} exp(R_k + u_t - m') k_t v_t^T,
//   m' = max(G + m, max_k (R_k + umax_k))   (mLSTMexp; 0 for mLSTMsig).
// Rows past S are zero-filled by TMA and carry w = 0 (u = -inf past S). Never packed: packed
// calls do not split.
#pragma once
#include "tfla/seq_span.cuh"
#include "tfla/sm90_state_walk.cuh"

namespace tfla {

template <class T, int DQK, int DV, int CHUNK, int BV, int STAGES, bool EXP>
__device__ void mlstm_fwd_summary_sm90(const MlstmFwdStatesSm90Params& P, char* smem_raw) {
  using Walk = StateWalkSm90<T, DQK, DV, BV, STAGES>;
  constexpr int kSub = Walk::kSub, kNSub = CHUNK / kSub, kRows = Walk::kRows, kRg = Walk::kRg;
  static_assert(CHUNK % kSub == 0, "64-row sub-blocks tile the chunk");
  static_assert(!TFLA_PACKED, "packed calls do not split");
  const MlstmFwdParams& p = P.p;
  const int nseg = p.nseg, pieces = p.seg_pieces > 1 ? p.seg_pieces : 1;
  const int nwalk = (nseg - 1) * pieces, span = p.seg_chunks / pieces;
  if (nwalk <= 0) return;  // an unsplit walk has nothing before its last segment
  const int vt = blockIdx.x, bh = blockIdx.y / nwalk, piece = blockIdx.y % nwalk;
  Walk walk(smem_raw, &P.k, &P.v);
  const int v0 = vt * BV;
  const int NC = p.NC;  // chunks per head in the gate rows
  const int c_begin = piece * span, c_end = min(NC, c_begin + span);
  const int total = (c_end - c_begin) * kNSub;
  const long long S_pad = static_cast<long long>(NC) * CHUNK;
  const long long row_begin = static_cast<long long>(c_begin) * CHUNK;
  const int row0 = static_cast<int>(row_begin);

  if (!walk.consumer(&P.k, &P.v, total, v0, bh % p.NH, bh / p.NH, [row0](int it) { return row0 + it * kSub; }))
    return;
  const bool own_n = vt == 0 && p.seg_n != nullptr;  // the Dv-tile-0 CTA carries n
  const bool lead = vt == 0 && Walk::cw() == 0 && Walk::lt() == 0;

  float acc[Walk::kAccT];
#pragma unroll
  for (int i = 0; i < Walk::kAccT; ++i) acc[i] = 0.f;
  if (piece == 0 && p.C0) walk.load_acc_t(acc, p.C0 + static_cast<long long>(bh) * DQK * DV, v0);
  float npart[8];
#pragma unroll
  for (int e = 0; e < 8; ++e)
    npart[e] = piece == 0 && own_n && p.n0 && Walk::r0() == 0 ? p.n0[static_cast<long long>(bh) * DQK + Walk::my_col() + e] : 0.f;
  // a later piece starts from zero with no stabilizer history (kSegmentM0 acts as -inf)
  float m_prev = piece > 0 ? (EXP ? kSegmentM0 : 0.f) : EXP && p.m0 ? p.m0[bh] : 0.f;

  // u_t of this thread's rows in the next sub-block (the rows whose K it sums in the n CTA; the V
  // rows it scales are among them), loaded one sub-block ahead
  float u_next[kRows];
  const long long ubase = bh * S_pad + row_begin + Walk::r0();
  auto load_u = [&](int it) {
    // past the last sub-block: the last one's again (unused)
    const long long urow = ubase + static_cast<long long>(max(0, min(it, total - 1))) * kSub;
#pragma unroll
    for (int i = 0; i < kRows; ++i) u_next[i] = p.gate_u[urow + kRg * i];
  };
  load_u(0);
  constexpr int kGroup = CHUNK >= 256 ? 1 : 256 / CHUNK;
  const float* gg = p.chunk_g + static_cast<long long>(bh) * NC;
  const float* gu = p.chunk_umax + static_cast<long long>(bh) * NC;
#pragma unroll 1
  for (int c0 = c_begin; c0 < c_end; c0 += kGroup) {
    const int n = min(kGroup, c_end - c0);
    float G = 0.f;
#pragma unroll 1
    for (int k = 0; k < n; ++k) G += gg[c0 + k];
    float m_new = 0.f;
    if (EXP) {
      m_new = G + m_prev;
      float pre = 0.f;
#pragma unroll 1
      for (int k = 0; k < n; ++k) {
        m_new = fmaxf(m_new, G - pre + gu[c0 + k]);
        pre += gg[c0 + k];
      }
    }
    const float decay = __expf(G + m_prev - m_new);
#pragma unroll
    for (int i = 0; i < Walk::kAccT; ++i) acc[i] *= decay;
#pragma unroll
    for (int e = 0; e < 8; ++e) npart[e] *= decay;
    m_prev = m_new;
    float pre = 0.f;
#pragma unroll 1
    for (int k = 0; k < n; ++k) {
      const float R = G - pre;
      pre += gg[c0 + k];
#pragma unroll 1
      for (int sub = 0; sub < kNSub; ++sub) {
        if (own_n) walk.template prepare_t<true>(R - m_new, u_next, npart);
        else walk.template prepare_t<false>(R - m_new, u_next, npart);
        load_u((c0 + k - c_begin) * kNSub + sub + 1);
        walk.issue_t(acc);
      }
    }
    walk.drain_t(acc);
  }
  const long long sb = static_cast<long long>(bh) * nseg * pieces + piece;
  walk.store_acc_t(acc, p.seg_C + sb * DQK * DV, v0);
  if (own_n) walk.colsum_store(npart, p.seg_n + sb * DQK);
  if (lead) p.seg_m[sb] = m_prev;
}

}  // namespace tfla
