// Backward, the reverse chunk-state recurrence. One CTA per (Dv tile, Dqk tile, head) walks the
// chunks from last to first, keeping its BK x BV block of dC (fp32) in registers:
//   dC_S  = dC_last (or 0)
//   store dC_{c+1} (the gradient of the state leaving chunk c) for the tile kernels, then
//   dC_c  = exp(g_c + m_c - m_{c+1}) dC_{c+1} + (Q_c * w)^T dh_c,
//   w_i   = s * beta_i / (den_i + eps),  beta_i = exp(b_i + m_c - mu_i)
// and finally dC0 = dC_0. With dC_last it also sums <dC_last, C_S> per CTA (the df term of the
// returned last state). Sub-blocks stream in reverse, double-buffered with cp.async.
// With p.nseg > 1 the walk is split into segments of the sequence (grid z = head * nseg +
// segment, see mlstm_bwd_dstate_fix.cuh); only the last starts from dC_last. SPLIT compiles
// that in: without it the walk is the whole sequence's and carries none of the split's code.
#pragma once
#include "tfla/seq_span.cuh"
#include "tfla/tile.cuh"

namespace tfla {

template <class T, class TS, int DQK, int DV, int CHUNK, int BK, int BV, int SUB, int WM, int WN,
          bool EXP, bool SPLIT>
__device__ void mlstm_bwd_dstates(const MlstmBwdParams& p, char* smem) {
  constexpr int NT = WM * WN * 32;
  typedef STile<T, SUB, BK> TileQ;
  typedef STile<T, SUB, BV> TileH;
  typedef Gemm<T, BK, BV, SUB, WM, WN, /*A_KMAJOR=*/true, /*B_NMAJOR=*/false> G;
  static_assert(CHUNK % SUB == 0, "SUB must divide the chunk");
  static_assert(NT >= SUB, "a thread per sub-block row");
  T* sQ = reinterpret_cast<T*>(smem);                           // [2][SUB][BK]
  T* sH = sQ + 2 * TileQ::ELEMS;                                // [2][SUB][BV]
  float* sW = reinterpret_cast<float*>(sH + 2 * TileH::ELEMS);  // [2][SUB]
  float* sRed = sW + 2 * SUB;                                   // [NT / 32]
  static_assert((2 * TileQ::ELEMS + 2 * TileH::ELEMS) * Elem<T>::bytes + (2 * SUB + NT / 32) * 4 ==
                    bwd_dstates_smem_bytes(Elem<T>::bytes, SUB, BK, BV, NT / 32),
                "the layout above must match bwd_dstates_smem_bytes, which the host sizes the launch with");

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
  const i64 S_pad = (i64)p.NC * CHUNK;

  const T* gQ = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh + sq.tok0 * p.q_ss + k0;
  const T* gH = static_cast<const T*>(p.dh) + b * p.dh_sb + h * p.dh_sh + sq.tok0 * p.dh_ss + v0;

  typename G::Acc acc;
  G::zero(acc);
  if (p.dC_last && seg == nseg - 1) {
    const float* dcl = p.dC_last + (i64)bh * DQK * DV;
    const float* cl = p.C_last + (i64)bh * DQK * DV;
    float dot = 0.f;
#pragma unroll
    for (int fm = 0; fm < G::FM; ++fm)
#pragma unroll
      for (int fn = 0; fn < G::FN; ++fn)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = warp_m * G::WTM + acc_row(fm, e, lane);
          const int cc = warp_n * G::WTN + acc_col(fn, e, lane);
          const i64 o = (i64)(k0 + r) * DV + v0 + cc;
          acc[fm][fn][e] = dcl[o];
          dot += dcl[o] * cl[o];
        }
    dot = warp_sum(dot);
    if (lane == 0) sRed[warp] = dot;
    __syncthreads();
    if (tid == 0) {
      float s = 0.f;
      for (int w = 0; w < NT / 32; ++w) s += sRed[w];
      p.dclast_dot[(i64)bh * p.dclast_parts + blockIdx.y * gridDim.x + blockIdx.x] = s;
    }
  }

  constexpr int NSUB = CHUNK / SUB;
  const int total = (c_end - c_begin) * NSUB, top = c_end * NSUB - 1;
  // iteration it processes sub-block (top - it): chunks from last to first
  auto issue = [&](int it) {
    const int idx = top - it;
    const int row0 = (idx / NSUB) * CHUNK + (idx % NSUB) * SUB;
    const int valid = sq.S - row0;
    const int st = it & 1;
    load_tile_async<T, SUB, BK, NT>(sQ + st * TileQ::ELEMS, TileQ::LD, gQ + (i64)row0 * p.q_ss,
                                    p.q_ss, valid, tid);
    load_tile_async<T, SUB, BV, NT>(sH + st * TileH::ELEMS, TileH::LD, gH + (i64)row0 * p.dh_ss,
                                    p.dh_ss, valid, tid);
    cp_async_commit();
  };
  if (total > 0) issue(0);  // an empty packed sequence walks nothing
  float m_c = 0.f;
  for (int it = 0; it < total; ++it) {
    const int idx = top - it;
    const int c = idx / NSUB, sub = idx % NSUB;
    const int st = it & 1;
    if (sub == NSUB - 1) {
      // Leaving chunk c (walking backwards): publish dC_{c+1}, then apply the decay.
      TS* out = static_cast<TS*>(p.dstates_C) + ((i64)bh * p.NC + c) * DQK * DV;
      store_acc<TS, G>(acc, out + (i64)k0 * DV + v0, DV, BK, warp_m, warp_n, lane);
      const float g = p.chunk_g[(i64)bh * p.NC + c];
      m_c = EXP ? p.chunk_m[(i64)bh * (p.NC + 1) + c] : 0.f;
      const float m_next = EXP ? p.chunk_m[(i64)bh * (p.NC + 1) + c + 1] : 0.f;
      scale_acc<G>(acc, __expf(g + m_c - m_next));
    }
    if (tid < SUB) {
      const int t = c * CHUNK + sub * SUB + tid;
      float w = 0.f;
      if (t < sq.S) {
        const i64 o = bh * S_pad + t;
        const float bi = p.gate_b[o];
        const float rq = EXP ? -fmaxf(m_c, p.gate_pm[o]) : bi;
        w = p.scale * __expf(rq + m_c) / (p.norm[sq.row + t] + p.eps);
      }
      sW[st * SUB + tid] = w;
    }
    if (it + 1 < total) {
      issue(it + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    G::run_scaled_k(acc, sQ + st * TileQ::ELEMS, TileQ::LD, sH + st * TileH::ELEMS, TileH::LD,
                    warp_m, warp_n, lane, sW + st * SUB);
    __syncthreads();
  }
  if (SPLIT && nseg > 1) {  // this segment's dC at its first chunk, for the fix kernel
    store_acc<float, G>(acc, p.seg_dC + (i64)blockIdx.z * DQK * DV + (i64)k0 * DV + v0, DV, BK, warp_m, warp_n, lane);
    return;
  }
  if (p.dC0)
    store_acc<float, G>(acc, p.dC0 + (i64)bh * DQK * DV + (i64)k0 * DV + v0, DV, BK, warp_m, warp_n, lane);
}

}  // namespace tfla
