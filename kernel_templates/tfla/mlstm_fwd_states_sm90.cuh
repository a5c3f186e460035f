// Forward, kernel 2 of 3 on the sm_90a engine: the inter-chunk state recurrence (the math is
// mlstm_fwd_states.cuh's):
//   C_c+1 = exp(g + m_c - m_c+1) C_c + (K_c * w)^T V_c,   w_t = exp(g + u_t - m_c+1)
//   n_c+1 = exp(g + m_c - m_c+1) n_c + sum_t w_t k_t
// storing C_c (the state entering chunk c) in the input dtype and n_c in fp32. One CTA per (BV
// columns of C, head) walks the sequence in order (the walk: sm90_state_walk.cuh, A = K,
// B = V); n is the column sums of the scaled K, kept by the Dv-tile-0 CTA. Rows past S are
// zero-filled by TMA and carry w = 0 (u = -inf past S). With p.nseg > 1 the walk is split into
// segments (grid y = head * nseg + segment) as in mlstm_fwd_states.cuh. (The fused forward's
// split summarizes its segments with mlstm_fwd_summary_sm90.cuh.)
// A packed call (TFLA_PACKED, seq_span.cuh): one walk per sequence and head over its own chunks
// (never split), its rows loaded from the (D, T, NH, 1) tensor at the sequence's offset; rows
// past its end (the next sequence's) carry u = -inf from the gate kernel, so w = 0.
#pragma once
#include "tfla/seq_span.cuh"
#include "tfla/sm90_state_walk.cuh"

namespace tfla {

template <class T, int DQK, int DV, int CHUNK, int BV, int STAGES, bool EXP>
__device__ void mlstm_fwd_states_sm90(const MlstmFwdStatesSm90Params& P, char* smem_raw) {
  using Walk = StateWalkSm90<T, DQK, DV, BV, STAGES>;
  constexpr int kSub = Walk::kSub, kNSub = CHUNK / kSub, kRows = Walk::kRows, kRg = Walk::kRg;
  static_assert(CHUNK % kSub == 0, "64-row sub-blocks tile the chunk");
  const MlstmFwdParams& p = P.p;
  const int nseg = p.nseg > 1 ? p.nseg : 1;
  const int vt = blockIdx.x, bh = blockIdx.y / nseg, seg = blockIdx.y % nseg;
  Walk walk(smem_raw, &P.k, &P.v);
  const int v0 = vt * BV;
  const int NC = p.NC;  // chunks per head in the workspace and the gate rows
  const SeqSpan sq = seq_span<CHUNK>(p, bh / p.NH, bh % p.NH);
  const int c_begin = nseg > 1 ? seg * p.seg_chunks : 0;
  const int c_end = nseg > 1 ? min(NC, c_begin + p.seg_chunks) : TFLA_PACKED ? sq.NC : NC;
  const int total = (c_end - c_begin) * kNSub;
  const long long S_pad = static_cast<long long>(NC) * CHUNK;
  const long long row_begin = static_cast<long long>(c_begin) * CHUNK;
  const int row0 = static_cast<int>(sq.tok0 + row_begin);

  if (!walk.consumer(&P.k, &P.v, total, v0, bh % p.NH, TFLA_PACKED ? 0 : bh / p.NH,
                     [row0](int it) { return row0 + it * kSub; }))
    return;
  // the Dv-tile-0 CTA carries n
  const bool own_n = vt == 0 && p.states_n != nullptr;
  const bool lead = vt == 0 && Walk::cw() == 0 && Walk::lt() == 0;

  float acc[Walk::kMB][Walk::kAcc];
  Walk::zero(acc);
  if (seg == 0 && p.C0) walk.load_acc(acc, p.C0 + static_cast<long long>(bh) * DQK * DV, v0);
  float npart[8];
#pragma unroll
  for (int e = 0; e < 8; ++e)
    npart[e] = seg == 0 && own_n && p.n0 && Walk::r0() == 0 ? p.n0[static_cast<long long>(bh) * DQK + Walk::my_col() + e] : 0.f;
  // a later segment starts from zero with no stabilizer history (kSegmentM0 acts as -inf)
  float m_prev = seg > 0 ? (EXP ? kSegmentM0 : 0.f) : EXP && p.m0 ? p.m0[bh] : 0.f;
  float* m_dst = seg > 0 ? p.seg_mloc : p.chunk_m;

  // u_t of this thread's rows in the next sub-block, loaded one sub-block ahead
  float u_next[kRows];
  auto load_u = [&](int it) {
    const long long urow = bh * S_pad + row_begin + static_cast<long long>(it) * kSub + Walk::r0();
#pragma unroll
    for (int i = 0; i < kRows; ++i) u_next[i] = it < total ? p.gate_u[urow + kRg * i] : 0.f;
  };
  load_u(0);
  // chunk c's log-decay and largest u, loaded a chunk ahead (off the chunk boundary's path)
  const float* cg = p.chunk_g + static_cast<long long>(bh) * NC;
  const float* cu = p.chunk_umax + static_cast<long long>(bh) * NC;
  float g_next = c_begin < c_end ? cg[c_begin] : 0.f;
  float umax_next = EXP && c_begin < c_end ? cu[c_begin] : 0.f;
  // Entering chunk c the state is published, then decayed. open_chunk(c) fixes the chunk's
  // stabilizer and decay, publishes the entering n and m, decays n and scales the chunk's first
  // sub-block: for c > c_begin while chunk c - 1's last group is still in flight. The drain, the
  // state's store and its decay then come between that and the sub-block's wgmma (with no group
  // in flight across the loop's back edge, where the compiler's copies of X would serialize the
  // wgmma).
  float g_c = 0.f, m_new = 0.f, decay = 1.f;
  float w[kRows];
  auto open_chunk = [&](int c) {
    g_c = g_next;
    const float umax_c = umax_next;
    if (c + 1 < c_end) {
      g_next = cg[c + 1];
      if (EXP) umax_next = cu[c + 1];
    }
    m_new = EXP ? fmaxf(g_c + m_prev, g_c + umax_c) : 0.f;
    decay = __expf(g_c + m_prev - m_new);
    if (own_n) walk.colsum_store(npart, p.states_n + (static_cast<long long>(bh) * NC + c) * DQK);
    if (lead) m_dst[static_cast<long long>(bh) * (NC + 1) + c] = m_prev;
#pragma unroll
    for (int e = 0; e < 8; ++e) npart[e] *= decay;
    m_prev = m_new;
#pragma unroll
    for (int i = 0; i < kRows; ++i) w[i] = __expf(g_c + u_next[i] - m_new);
    load_u((c - c_begin) * kNSub + 1);
    if (own_n) walk.template prepare<true>(w, npart);
    else walk.template prepare<false>(w, npart);
  };
  // The walk's first chunk, hidden from the compiler: folding c_first == c_begin into the first
  // open_chunk's indices makes ptxas spill the accumulators at Dqk 256 (test_nvrtc_sm90 checks).
  int c_first = c_begin;
  asm volatile("" : "+r"(c_first));
  if (c_first < c_end) open_chunk(c_first);
#pragma unroll 1
  for (int c = c_first; c < c_end; ++c) {
    walk.store_acc(acc, static_cast<T*>(p.states_C) + (static_cast<long long>(bh) * NC + c) * DQK * DV, nullptr, v0);
#pragma unroll
    for (int mb = 0; mb < Walk::kMB; ++mb)
#pragma unroll
      for (int i = 0; i < Walk::kAcc; ++i) acc[mb][i] *= decay;
    walk.issue(acc);
#pragma unroll 1
    for (int sub = 1; sub < kNSub; ++sub) {
#pragma unroll
      for (int i = 0; i < kRows; ++i) w[i] = __expf(g_c + u_next[i] - m_new);
      load_u((c - c_begin) * kNSub + sub + 1);
      if (own_n) walk.template step<true>(acc, w, npart);
      else walk.template step<false>(acc, w, npart);
    }
    if (c + 1 < c_end) open_chunk(c + 1);
    walk.drain(acc);
  }
  if (nseg > 1) {  // this segment's end state, for the fix kernel
    const long long sb = static_cast<long long>(bh) * nseg + seg;
    walk.store_acc(acc, nullptr, p.seg_C + sb * DQK * DV, v0);
    if (own_n) walk.colsum_store(npart, p.seg_n + sb * DQK);
    if (lead) p.seg_m[sb] = m_prev;
    return;
  }
  if (p.C_last) walk.store_acc(acc, nullptr, p.C_last + static_cast<long long>(bh) * DQK * DV, v0);
  if (own_n && p.n_last) walk.colsum_store(npart, p.n_last + static_cast<long long>(bh) * DQK);
  if (lead) {
    p.chunk_m[static_cast<long long>(bh) * (NC + 1) + (TFLA_PACKED ? sq.NC : NC)] = m_prev;
    if (p.m_last) p.m_last[bh] = m_prev;
  }
}

}  // namespace tfla
