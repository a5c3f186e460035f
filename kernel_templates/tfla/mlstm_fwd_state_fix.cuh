// Forward, the sequence split's last step: the state kernel (mlstm_fwd_states*.cuh with
// p.nseg > 1) walked each segment of chunks from a zero state; this kernel makes every stored
// state exact. The recurrence is linear with scalar decays, so a segment's effect composes:
// with S_j, mS_j the exact state entering segment j (S_1 = segment 0's end state, which started
// from C0) and G the sum of the chunk log-decays g from the segment's first chunk to chunk c,
//   m_c = max(G + mS_j, mloc_c)                               (mLSTMexp; 0 for mLSTMsig)
//   C_c = exp(mloc_c - m_c) Cloc_c + exp(G + mS_j - m_c) S_j   (n_c likewise)
// and the exact state after segment j folds its end state (E_j, mE_j, its total decay G_j) in:
//   mS_j+1 = max(G_j + mS_j, mE_j),  S_j+1 = exp(G_j + mS_j - mS_j+1) S_j + exp(mE_j - mS_j+1) E_j.
// Both factors are at most 1. Each thread owns 8 consecutive elements of a head's C (or n) and
// walks the segments in order; the chunks' loads and stores are independent of each other. The
// first thread of each head also writes the exact chunk_m, and the last states (C_last, n_last,
// m_last, chunk_m[NC]) come from the fold over every segment. Grid: (ceil((Dqk Dv + Dqk) / 8 /
// 256), B * NH), 256 threads.
// STARTS (the fused forward's split, mlstm_fwd_fused_sm90.cuh): no chunk states are stored; the
// fold runs over the summary's pieces (p.seg_pieces per segment, each of seg_chunks / seg_pieces
// chunks) up to the last segment's first, and leaves the exact state entering each segment
// j >= 1 where the end state of its first piece was (seg_C, seg_n at piece j * seg_pieces, read
// before they are overwritten) and its stabilizer in chunk_m at the segment's first chunk; the
// last segment's fused walk writes the last states.
#pragma once
#include "tfla/common.cuh"
#include "tfla/mlstm_params.cuh"

namespace tfla {

// 8 consecutive state elements (16- or 32-byte aligned) to and from fp32, as vector accesses.
template <class TS> __device__ __forceinline__ void state_ld8(float (&x)[8], const TS* src) {
  if constexpr (Elem<TS>::is16) {
    const uint4 r = *reinterpret_cast<const uint4*>(src);
    const u32 w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = Elem<TS>::unpack2(w[i]);
      x[2 * i] = f.x;
      x[2 * i + 1] = f.y;
    }
  } else {
    const float4 a = reinterpret_cast<const float4*>(src)[0], b = reinterpret_cast<const float4*>(src)[1];
    x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w;
    x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
  }
}
template <class TS> __device__ __forceinline__ void state_st8(TS* dst, const float (&x)[8]) {
  if constexpr (Elem<TS>::is16) {
    *reinterpret_cast<uint4*>(dst) = make_uint4(Elem<TS>::pack2(x[0], x[1]), Elem<TS>::pack2(x[2], x[3]),
                                                Elem<TS>::pack2(x[4], x[5]), Elem<TS>::pack2(x[6], x[7]));
  } else {
    reinterpret_cast<float4*>(dst)[0] = make_float4(x[0], x[1], x[2], x[3]);
    reinterpret_cast<float4*>(dst)[1] = make_float4(x[4], x[5], x[6], x[7]);
  }
}

template <class TS, int DQK, int DV, bool EXP, bool STARTS>
__device__ void mlstm_fwd_state_fix(const MlstmFwdParams& p) {
  constexpr long long kCE = static_cast<long long>(DQK) * DV;
  static_assert(DQK % 8 == 0 && DV % 8 == 0, "8-element groups");
  // STARTS: the pieces the summary walked (each segment in P pieces, segment j's start at piece
  // j P); else the segments
  const int P = STARTS && p.seg_pieces > 1 ? p.seg_pieces : 1;
  const int bh = blockIdx.y, nseg = p.nseg * P, L = p.seg_chunks / P, NC = p.NC;
  const int last_start = STARTS ? (p.nseg - 1) * P : nseg - 1;  // the last segment's first piece
  const long long e = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) * 8;
  const bool is_c = e < kCE;
  const bool is_n = !is_c && e < kCE + DQK && (STARTS || p.states_n != nullptr);
  const bool lead = blockIdx.x == 0 && threadIdx.x == 0;
  const long long en = e - kCE;
  // x <- the 8 values of this thread's group in an fp32 end state (C or n)
  auto load8 = [&](float (&x)[8], const float* c, const float* n) {
    if (is_c) state_ld8<float>(x, c + e);
    else state_ld8<float>(x, n + en);
  };
  const long long mrow = static_cast<long long>(bh) * (NC + 1);

  float s[8];
  float ms = 0.f;
  if (is_c || is_n) load8(s, p.seg_C + static_cast<long long>(bh) * nseg * kCE, p.seg_n + static_cast<long long>(bh) * nseg * DQK);
  if (EXP) ms = p.seg_m[static_cast<long long>(bh) * nseg];
  for (int j = 1; j < nseg; ++j) {
    const int c0 = j * L, c1 = min(NC, c0 + L);
    const long long sb = static_cast<long long>(bh) * nseg + j;
    if constexpr (STARTS) {
      // piece j's end state (none for the last segment's first piece), read before a segment's
      // start state takes its place
      float x[8];
      if (j != last_start && (is_c || is_n)) load8(x, p.seg_C + sb * kCE, p.seg_n + sb * DQK);
      if (j % P == 0) {  // a segment's first piece: its start state is kept
        if (is_c) state_st8<float>(p.seg_C + sb * kCE + e, s);
        else if (is_n) state_st8<float>(p.seg_n + sb * DQK + en, s);
        if (lead) p.chunk_m[mrow + c0] = EXP ? ms : 0.f;
      }
      if (j == last_start) break;
      // the piece's total log-decay, summed by the warp's lanes in parallel (64 chunks a piece at
      // B = 1, S = 65536 with the paper's heads); the butterfly leaves the same bits in every lane
      float G = 0.f;
      for (int c = c0 + static_cast<int>(threadIdx.x % 32); c < c1; c += 32)
        G += p.chunk_g[static_cast<long long>(bh) * NC + c];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) G += __shfl_xor_sync(0xffffffffu, G, o);
      const float mE = EXP ? p.seg_m[sb] : 0.f;
      const float mnew = EXP ? fmaxf(G + ms, mE) : 0.f;
      const float a = __expf(G + ms - mnew), b = __expf(mE - mnew);
#pragma unroll
      for (int i = 0; i < 8; ++i) s[i] = a * s[i] + b * x[i];
      ms = mnew;
      continue;
    }
    float G = 0.f;
#pragma unroll 4
    for (int c = c0; c < c1; ++c) {
      float a = 1.f, b;
      if (EXP) {
        const float mloc = p.seg_mloc[mrow + c];
        const float mt = fmaxf(G + ms, mloc);
        a = __expf(mloc - mt);
        b = __expf(G + ms - mt);
        if (lead) p.chunk_m[mrow + c] = mt;
      } else {
        b = __expf(G);
        if (lead) p.chunk_m[mrow + c] = 0.f;
      }
      if (is_c) {
        TS* dst = static_cast<TS*>(p.states_C) + (static_cast<long long>(bh) * NC + c) * kCE + e;
        float x[8];
        state_ld8<TS>(x, dst);
#pragma unroll
        for (int i = 0; i < 8; ++i) x[i] = a * x[i] + b * s[i];
        state_st8<TS>(dst, x);
      } else if (is_n) {
        float* dst = p.states_n + (static_cast<long long>(bh) * NC + c) * DQK + en;
        float x[8];
        state_ld8<float>(x, dst);
#pragma unroll
        for (int i = 0; i < 8; ++i) x[i] = a * x[i] + b * s[i];
        state_st8<float>(dst, x);
      }
      G += p.chunk_g[static_cast<long long>(bh) * NC + c];
    }
    const float mE = EXP ? p.seg_m[sb] : 0.f;
    const float mnew = EXP ? fmaxf(G + ms, mE) : 0.f;
    const float a = __expf(G + ms - mnew), b = __expf(mE - mnew);
    if (is_c || is_n) {
      float x[8];
      load8(x, p.seg_C + sb * kCE, p.seg_n + sb * DQK);
#pragma unroll
      for (int i = 0; i < 8; ++i) s[i] = a * s[i] + b * x[i];
    }
    ms = mnew;
  }
  if constexpr (STARTS) return;
  // the caller's last-state buffers are only 4-byte aligned
  float* last = is_c ? (p.C_last ? p.C_last + static_cast<long long>(bh) * kCE + e : nullptr)
                     : (is_n && p.n_last ? p.n_last + static_cast<long long>(bh) * DQK + en : nullptr);
  if (last) {
#pragma unroll
    for (int i = 0; i < 8; ++i) last[i] = s[i];
  }
  if (lead) {
    p.chunk_m[mrow + NC] = ms;
    if (p.m_last) p.m_last[bh] = ms;
  }
}

}  // namespace tfla
