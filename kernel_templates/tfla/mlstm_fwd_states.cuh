// Forward, kernel 2 of 3: the inter-chunk state recurrence. One CTA per (Dv tile, Dqk tile,
// head) walks the chunks in order, keeping its BK x BV block of C (fp32) in registers:
//   m_c+1 = max(g + m_c, g + max_t u_t)                          (0 for mLSTMsig)
//   C_c+1 = exp(g + m_c - m_c+1) C_c + (K_c * w)^T V_c,   w_t = exp(g + u_t - m_c+1)
//   n_c+1 = exp(g + m_c - m_c+1) n_c + sum_t w_t k_t
// and stores C_c (the state entering chunk c) for the output kernel, in the state dtype.
// The chunk is streamed in sub-blocks of SUB rows, double-buffered with cp.async.
// With p.nseg > 1 the walk is split into segments (grid z = head * nseg + segment): each walks
// its own chunks from a zero state and leaves its end state for mlstm_fwd_state_fix.cuh. SPLIT
// compiles that in: without it the walk is the whole sequence's and carries none of its code.
#pragma once
#include "tfla/seq_span.cuh"
#include "tfla/tile.cuh"

namespace tfla {

template <class T, class TS, int DQK, int DV, int CHUNK, int BK, int BV, int SUB, int WM, int WN,
          bool EXP, bool NEED_N, bool SPLIT>
__device__ void mlstm_fwd_states(const MlstmFwdParams& p, char* smem) {
  constexpr int NT = WM * WN * 32;
  constexpr int NW = WM * WN;
  constexpr int NPART = (BK + 31) / 32;  // n columns per lane
  typedef STile<T, SUB, BK> TileK;
  typedef STile<T, SUB, BV> TileV;
  typedef Gemm<T, BK, BV, SUB, WM, WN, /*A_KMAJOR=*/true, /*B_NMAJOR=*/false> G;
  static_assert(CHUNK % SUB == 0, "SUB must divide the chunk");
  static_assert(NT >= SUB && NT >= BK, "a thread per sub-block row and per Dqk row");
  T* sK = reinterpret_cast<T*>(smem);                             // [2][SUB][BK]
  T* sV = sK + 2 * TileK::ELEMS;                                  // [2][SUB][BV]
  float* sW = reinterpret_cast<float*>(sV + 2 * TileV::ELEMS);    // [2][SUB] row weights
  float* sN = sW + 2 * SUB;                                       // [NW][BK] n partials
  static_assert((2 * TileK::ELEMS + 2 * TileV::ELEMS) * Elem<T>::bytes + (2 * SUB + NW * BK) * 4 ==
                    fwd_states_smem_bytes(Elem<T>::bytes, SUB, BK, BV, NW),
                "the layout above must match fwd_states_smem_bytes, which the host sizes the launch with");

  const int nseg = SPLIT && p.nseg > 1 ? p.nseg : 1;
  const int vt = blockIdx.x, kt = blockIdx.y;
  const int bh = SPLIT ? static_cast<int>(blockIdx.z) / nseg : blockIdx.z;
  const int seg = SPLIT ? static_cast<int>(blockIdx.z) % nseg : 0;
  const int b = bh / p.NH, h = bh % p.NH;
  const SeqSpan sq = seq_span<CHUNK>(p, b, h);  // a packed sequence walks its own chunks (no split)
  const int c_begin = SPLIT ? seg * p.seg_chunks : 0;
  const int c_end = SPLIT && nseg > 1 ? min(p.NC, c_begin + p.seg_chunks) : sq.NC;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp / WN, warp_n = warp % WN;
  const int k0 = kt * BK, v0 = vt * BV;
  const bool lead = (vt == 0 && kt == 0);
  const bool own_n = NEED_N && vt == 0;
  const i64 S_pad = (i64)p.NC * CHUNK;

  const T* gK = static_cast<const T*>(p.k) + b * p.k_sb + h * p.k_sh + sq.tok0 * p.k_ss + k0;
  const T* gV = static_cast<const T*>(p.v) + b * p.v_sb + h * p.v_sh + sq.tok0 * p.v_ss + v0;

  typename G::Acc acc;
  G::zero(acc);
  // A later segment starts from zero with no stabilizer history (kSegmentM0 acts as -inf).
  float m_prev = seg > 0 && EXP ? kSegmentM0 : 0.f;
  // n = sum over warps of these partials; lane owns columns lane + 32 j of the Dqk block.
  float npart[NPART];
#pragma unroll
  for (int j = 0; j < NPART; ++j) npart[j] = 0.f;
  if (seg == 0 && p.C0) load_acc<G>(acc, p.C0 + (i64)bh * DQK * DV + (i64)k0 * DV + v0, DV, warp_m, warp_n, lane);
  if (seg == 0 && EXP && p.m0) m_prev = p.m0[bh];
  if (seg == 0 && own_n && p.n0 && warp == 0) {
#pragma unroll
    for (int j = 0; j < NPART; ++j)
      if (lane + 32 * j < BK) npart[j] = p.n0[(i64)bh * DQK + k0 + lane + 32 * j];
  }
  // Full n (sum of the warps' partials) -> dst[0..BK). Contains barriers: call from all threads.
  auto reduce_n = [&](float* dst) {
#pragma unroll
    for (int j = 0; j < NPART; ++j)
      if (lane + 32 * j < BK) sN[warp * BK + lane + 32 * j] = npart[j];
    __syncthreads();
    if (tid < BK) {
      float n = 0.f;
#pragma unroll
      for (int w = 0; w < NW; ++w) n += sN[w * BK + tid];
      dst[tid] = n;
    }
  };

  constexpr int NSUB = CHUNK / SUB;
  const int it_begin = c_begin * NSUB, it_end = c_end * NSUB;
  auto issue = [&](int it) {
    const int c = it / NSUB, sub = it % NSUB;
    const int row0 = c * CHUNK + sub * SUB;
    const int valid = sq.S - row0;
    const int st = it & 1;
    load_tile_async<T, SUB, BK, NT>(sK + st * TileK::ELEMS, TileK::LD, gK + (i64)row0 * p.k_ss,
                                    p.k_ss, valid, tid);
    load_tile_async<T, SUB, BV, NT>(sV + st * TileV::ELEMS, TileV::LD, gV + (i64)row0 * p.v_ss,
                                    p.v_ss, valid, tid);
    cp_async_commit();
  };
  if (it_begin < it_end) issue(it_begin);  // an empty packed sequence walks nothing
  float m_new = 0.f, g = 0.f;
  for (int it = it_begin; it < it_end; ++it) {
    const int c = it / NSUB, sub = it % NSUB;
    const int st = it & 1;
    if (sub == 0) {
      // Entering chunk c: publish the state, then fold the decay into the accumulators.
      TS* outC = static_cast<TS*>(p.states_C) + ((i64)bh * p.NC + c) * DQK * DV;
      store_acc<TS, G>(acc, outC + (i64)k0 * DV + v0, DV, BK, warp_m, warp_n, lane);
      if (own_n) reduce_n(p.states_n + ((i64)bh * p.NC + c) * DQK + k0);
      if (lead && tid == 0) (seg > 0 ? p.seg_mloc : p.chunk_m)[(i64)bh * (p.NC + 1) + c] = m_prev;
      g = p.chunk_g[(i64)bh * p.NC + c];
      m_new = EXP ? fmaxf(g + m_prev, g + p.chunk_umax[(i64)bh * p.NC + c]) : 0.f;
      const float decay = __expf(g + m_prev - m_new);
      scale_acc<G>(acc, decay);
#pragma unroll
      for (int j = 0; j < NPART; ++j) npart[j] *= decay;
      m_prev = m_new;
    }
    // row weights w_t = exp(g + u_t - m_new) of this sub-block
    if (tid < SUB) {
      const i64 o = bh * S_pad + (i64)c * CHUNK + sub * SUB + tid;
      sW[st * SUB + tid] = __expf(g + p.gate_u[o] - m_new);
    }
    if (it + 1 < it_end) {
      issue(it + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* k_s = sK + st * TileK::ELEMS;
    const float* w_s = sW + st * SUB;
    if (own_n) {
      for (int r = warp; r < SUB; r += NW) {
        const float w = w_s[r];
#pragma unroll
        for (int j = 0; j < NPART; ++j)
          if (lane + 32 * j < BK) npart[j] += w * Elem<T>::to_float(k_s[r * TileK::LD + lane + 32 * j]);
      }
    }
    // C += (K * w)^T V, the weights applied to the A fragments in registers
    G::run_scaled_k(acc, k_s, TileK::LD, sV + st * TileV::ELEMS, TileV::LD, warp_m, warp_n, lane, w_s);
    __syncthreads();
  }
  if (SPLIT && nseg > 1) {  // this segment's end state, for the fix kernel
    const i64 sb = blockIdx.z;
    store_acc<float, G>(acc, p.seg_C + sb * DQK * DV + (i64)k0 * DV + v0, DV, BK, warp_m, warp_n, lane);
    if (own_n) reduce_n(p.seg_n + sb * DQK + k0);
    if (lead && tid == 0) p.seg_m[sb] = m_prev;
    return;
  }
  // last states out (fp32)
  if (p.C_last)
    store_acc<float, G>(acc, p.C_last + (i64)bh * DQK * DV + (i64)k0 * DV + v0, DV, BK, warp_m, warp_n, lane);
  if (own_n && p.n_last) reduce_n(p.n_last + (i64)bh * DQK + k0);
  if (lead && tid == 0) {
    p.chunk_m[(i64)bh * (p.NC + 1) + sq.NC] = m_prev;
    if (p.m_last) p.m_last[bh] = m_prev;
  }
}

}  // namespace tfla
