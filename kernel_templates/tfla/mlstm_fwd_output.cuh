// Forward, kernel 3 of 3: the output. One CTA per (query tile, Dv tile, head) computes, for its
// BQ rows i of chunk c and BV columns of h:
//   H_i = beta_i C_c^T (s q_i) + sum_{j<=i in chunk} exp(r_i + u_j) (s q_i . k_j) v_j
//   N_i = beta_i n_c . (s q_i)  + sum_{j<=i in chunk} exp(r_i + u_j) (s q_i . k_j)
//   h_i = H_i / (den_i + eps),   den_i = max(|N_i|, exp(-mu_i))  (mLSTMexp)
// with r_i = -max(m_c, pm_i), beta_i = exp(m_c - max(m_c, pm_i)), mu_i = b_i + max(m_c, pm_i)
// for mLSTMexp, and r_i = b_i, beta_i = exp(b_i), mu_i = 0 for mLSTMsig. The intra-chunk part
// is tiled over key tiles (BKV) so the chunk length is bounded by nothing but memory; the
// stabilizers come from the gate kernel, so no online rescaling is needed.
// Pipeline: K(j+1) loads during P V(j); V(j+1) loads during Q K(j+1)^T.
//
// CHUNK = 0 is the parallel (quadratic) form, the whole forward in this one launch: one chunk
// spans the sequence, there is no state (beta_i = 0), and r_i, u_j, mu_i come from the raw gates
// G through the CTA's own scans (mlstm_gate_scan.cuh) instead of the gate kernel's workspace.
// Its key tiles run from the diagonal down to position 0, so the scan carries outwards from the
// query tile (BQ must be a multiple of BKV).
#pragma once
#include "tfla/mlstm_gate_scan.cuh"
#include "tfla/seq_span.cuh"
#include "tfla/tile.cuh"

namespace tfla {

template <class T, class TS, int DQK, int DV, int CHUNK, int BQ, int BKV, int BV, int BKC, int WM,
          int WN, bool EXP, bool NORMALIZE, class G = float>
__device__ void mlstm_fwd_output(const MlstmFwdParams& p, char* smem) {
  constexpr int NT = WM * WN * 32;
  constexpr int NW = WM * WN;
  constexpr bool NEED_N = EXP || NORMALIZE;
  constexpr bool PAR = CHUNK == 0;        // the parallel form (see the top of the file)
  constexpr int L = PAR ? BQ : CHUNK;     // chunk length of the chunked form's index arithmetic
  typedef STile<T, BQ, DQK> TileQ;
  typedef STile<T, BKV, DQK> TileK;
  typedef STile<T, BKV, BV> TileV;
  typedef STile<T, BQ, BKV> TileP;
  typedef STile<TS, BKC, BV> TileC;
  typedef Gemm<T, BQ, BKV, DQK, WM, WN, false, true> GS;   // S = Q K^T
  typedef Gemm<T, BQ, BV, BKV, WM, WN, false, false> GO;   // O += P V
  typedef Gemm<T, BQ, BV, BKC, WM, WN, false, false> GI;   // O = Q C (inter)
  static_assert(L % BQ == 0 && L % BKV == 0, "tiles must divide the chunk (parallel: BKV must divide BQ)");
  static_assert(DQK % BKC == 0 && DV % BV == 0, "tiles must divide the head dims");
  static_assert(NT >= BQ && NT >= BKV, "one thread per row needed");

  // The two staged blocks of the chunk state (inter part) alias the K and V tiles (intra part).
  constexpr int ELEMS_A = TileK::ELEMS > TileC::ELEMS ? TileK::ELEMS : TileC::ELEMS;
  constexpr int ELEMS_B = TileV::ELEMS > TileC::ELEMS ? TileV::ELEMS : TileC::ELEMS;
  T* sQ = reinterpret_cast<T*>(smem);
  T* sK = sQ + TileQ::ELEMS;
  T* sV = sK + ELEMS_A;
  T* sP = sV + ELEMS_B;
  TS* const sC0 = reinterpret_cast<TS*>(sK);
  TS* const sC1 = reinterpret_cast<TS*>(sV);
  float* s_r = reinterpret_cast<float*>(sP + TileP::ELEMS);  // [BQ]
  float* s_beta = s_r + BQ;                                   // [BQ]
  float* s_mu = s_beta + BQ;                                  // [BQ]
  float* s_nq = s_mu + BQ;                                    // [BQ]  n_c . q_i
  float* s_u = s_nq + BQ;                                     // [BKV]
  float* s_N = s_u + BKV;                                     // [WN][BQ]
  float* s_uown = s_N + WN * BQ;                              // [BQ]  parallel: u' of the rows
  float* s_scan = s_uown + BQ;                                // [NW]  parallel: scan partials
  static_assert(Elem<TS>::bytes == Elem<T>::bytes, "the C blocks alias the K and V tiles");
  static_assert((TileQ::ELEMS + ELEMS_A + ELEMS_B + TileP::ELEMS) * Elem<T>::bytes +
                        (4 * BQ + BKV + WN * BQ + (PAR ? BQ + NW : 0)) * 4 ==
                    fwd_output_smem_bytes(Elem<T>::bytes, DQK, BQ, BKV, BV, BKC, WN) +
                        (PAR ? gate_scan_smem_bytes(BQ, NW) : 0),
                "the layout above must match fwd_output_smem_bytes (+ the gate scan's), which the host "
                "sizes the launch with");

  // Dv tiles of one query tile are adjacent in launch order, so they share Q, K, V and C in L2.
  const int vt = blockIdx.x, qt = blockIdx.y, bh = blockIdx.z;
  const int b = bh / p.NH, h = bh % p.NH;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp / WN, warp_n = warp % WN;
  const int row0 = qt * BQ;
  const int c = PAR ? 0 : row0 / L;
  const int chunk0 = c * L;
  const int v0 = vt * BV;
  const i64 S_pad = (i64)p.NC * L;
  const float scale = p.scale;
  const GateScan<NT, EXP, G> gs{{s_scan}, b, h};
  // The parallel form takes the plain layout only; a packed sequence's CTAs past its end exit.
  const SeqSpan sq = seq_span<PAR ? 0 : L>(p, b, h);
  if (row0 >= sq.S) return;

  const T* gQ = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh + sq.tok0 * p.q_ss;
  const T* gK = static_cast<const T*>(p.k) + b * p.k_sb + h * p.k_sh + sq.tok0 * p.k_ss;
  const T* gV = static_cast<const T*>(p.v) + b * p.v_sb + h * p.v_sh + sq.tok0 * p.v_ss + v0;

  load_tile_async<T, BQ, DQK, NT>(sQ, TileQ::LD, gQ + (i64)row0 * p.q_ss, p.q_ss, sq.S - row0, tid);
  cp_async_commit();

  const float m_c = EXP && !PAR ? p.chunk_m[(i64)bh * (p.NC + 1) + c] : 0.f;
  if constexpr (PAR) {
    float B = 0.f, P0 = neg_inf(), csum = 0.f, bp, u, pm;
    if (EXP) gs.prefix(p, row0, &B, &P0);
    gs.up(p, row0, BQ, csum, P0, bp, u, pm);
    if (tid < BQ) {
      const float M = fmaxf(B, pm);
      s_uown[tid] = u;
      s_r[tid] = EXP ? -M : bp;
      s_beta[tid] = 0.f;
      s_mu[tid] = EXP ? bp + M : 0.f;
    }
  } else if (tid < BQ) {
    const i64 o = bh * S_pad + row0 + tid;
    const float bi = p.gate_b[o];
    if (EXP) {
      const float M = fmaxf(m_c, p.gate_pm[o]);
      s_r[tid] = -M;
      s_beta[tid] = __expf(m_c - M);
      s_mu[tid] = bi + M;
    } else {
      s_r[tid] = bi;
      s_beta[tid] = __expf(bi);
      s_mu[tid] = 0.f;
    }
  }

  typename GO::Acc acc;
  GO::zero(acc);
  const bool has_state = !PAR && !(c == 0 && p.C0 == nullptr);
  if (has_state) {
    const TS* gC = static_cast<const TS*>(p.states_C) + ((i64)bh * p.NC + c) * DQK * DV + v0;
    // double-buffered over Dqk blocks of C_c: block kc + 1 loads while block kc multiplies
    load_tile_async<TS, BKC, BV, NT>(sC0, TileC::LD, gC, DV, BKC, tid);
    cp_async_commit();
    constexpr int NKC = DQK / BKC;
#pragma unroll 1
    for (int ib = 0; ib < NKC; ++ib) {
      if (ib + 1 < NKC) {
        load_tile_async<TS, BKC, BV, NT>(((ib + 1) & 1) ? sC1 : sC0, TileC::LD, gC + (i64)(ib + 1) * BKC * DV,
                                         DV, BKC, tid);
        cp_async_commit();
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      GI::run(acc, sQ + ib * BKC, TileQ::LD, (ib & 1) ? sC1 : sC0, TileC::LD, warp_m, warp_n, lane);
      __syncthreads();
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // Q and the row values are visible
  // n_c . q_i, one warp per row
  if (NEED_N) {
    for (int r = warp; r < BQ; r += NW) {
      float s = 0.f;
      if (has_state) {
        const float* nc = p.states_n + ((i64)bh * p.NC + c) * DQK;
        for (int d = lane; d < DQK; d += 32) s += Elem<T>::to_float(sQ[r * TileQ::LD + d]) * nc[d];
      }
      s = warp_sum(s);
      if (lane == 0) s_nq[r] = s;
    }
  }
  // scale the inter part by beta_i * s
  if (has_state) {
#pragma unroll
    for (int fm = 0; fm < GO::FM; ++fm)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float f = s_beta[warp_m * GO::WTM + acc_row(fm, e, lane)] * scale;
#pragma unroll
        for (int fn = 0; fn < GO::FN; ++fn) acc[fm][fn][e] *= f;
      }
  }

  // intra-chunk: the key tiles from the chunk start up to the last row of this query tile
  // (chunked: in order; parallel: from the diagonal down, carrying the gate scan outwards)
  float rowN[GS::FM][2];
#pragma unroll
  for (int fm = 0; fm < GS::FM; ++fm) rowN[fm][0] = rowN[fm][1] = 0.f;
  const int key_end = min(row0 + BQ, sq.S);
  const int n_tiles = (key_end - chunk0 + BKV - 1) / BKV;
  auto key_tile = [&](int n) { return chunk0 + (PAR ? n_tiles - 1 - n : n) * BKV; };
  auto issue_k = [&](int j0) {
    load_tile_async<T, BKV, DQK, NT>(sK, TileK::LD, gK + (i64)j0 * p.k_ss, p.k_ss, sq.S - j0, tid);
    cp_async_commit();
  };
  auto issue_v = [&](int j0) {
    load_tile_async<T, BKV, BV, NT>(sV, TileV::LD, gV + (i64)j0 * p.v_ss, p.v_ss, sq.S - j0, tid);
    cp_async_commit();
  };
  issue_k(key_tile(0));
  issue_v(key_tile(0));
  float sfx = 0.f;  // parallel: the sum of f~ from the current key tile's end up to row0
  for (int n = 0; n < n_tiles; ++n) {
    const int j0 = key_tile(n);
    const bool more = n + 1 < n_tiles;
    if constexpr (PAR) {
      if (j0 >= row0) {
        if (tid < BKV) s_u[tid] = s_uown[j0 - row0 + tid];
      } else {
        const float u = gs.down(p, j0, BKV, sfx);
        if (tid < BKV) s_u[BKV - 1 - tid] = u;
      }
    } else if (tid < BKV) {
      s_u[tid] = p.gate_u[bh * S_pad + j0 + tid];
    }
    cp_async_wait<1>();
    __syncthreads();
    typename GS::Acc sacc;
    GS::zero(sacc);
    GS::run(sacc, sQ, TileQ::LD, sK, TileK::LD, warp_m, warp_n, lane);
    __syncthreads();
    if (more) issue_k(key_tile(n + 1));
    // decay-weighted, causal scores -> P (shared, input dtype); row sums -> N
#pragma unroll
    for (int fm = 0; fm < GS::FM; ++fm)
#pragma unroll
      for (int fn = 0; fn < GS::FN; ++fn)
#pragma unroll
        for (int e = 0; e < 4; e += 2) {
          const int il = warp_m * GS::WTM + acc_row(fm, e, lane);
          const int jl = warp_n * GS::WTN + acc_col(fn, e, lane);
          const int gi = row0 + il, gj = j0 + jl;
          const float ri = s_r[il];
          const float w0 = masked_exp(gj <= gi, ri + s_u[jl]) * scale;
          const float w1 = masked_exp(gj + 1 <= gi, ri + s_u[jl + 1]) * scale;
          const float p0 = sacc[fm][fn][e] * w0, p1 = sacc[fm][fn][e + 1] * w1;
          rowN[fm][e >> 1] += p0 + p1;
          T* dst = sP + il * TileP::LD + jl;
          if constexpr (Elem<T>::is16) {
            *reinterpret_cast<u32*>(dst) = Elem<T>::pack2(p0, p1);
          } else {
            *reinterpret_cast<float2*>(dst) = make_float2(p0, p1);
          }
        }
    if (more) cp_async_wait<1>(); else cp_async_wait<0>();
    __syncthreads();
    GO::run(acc, sP, TileP::LD, sV, TileV::LD, warp_m, warp_n, lane);
    __syncthreads();
    if (more) issue_v(key_tile(n + 1));
  }

  // N_i: reduce the row sums over the quad, then over the warps that share the rows
  if (NEED_N) {
#pragma unroll
    for (int fm = 0; fm < GS::FM; ++fm)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        float x = rowN[fm][hh];
        x += __shfl_xor_sync(0xffffffffu, x, 1);
        x += __shfl_xor_sync(0xffffffffu, x, 2);
        if ((lane & 3) == 0) s_N[warp_n * BQ + warp_m * GS::WTM + fm * 16 + (lane >> 2) + hh * 8] = x;
      }
    __syncthreads();
    if (tid < BQ) {
      float n = s_beta[tid] * scale * s_nq[tid];
      for (int w = 0; w < WN; ++w) n += s_N[w * BQ + tid];
      s_nq[tid] = n;  // now the full N_i
    }
    __syncthreads();
  }
  // epilogue: normalize and store h; the Dv-tile-0 CTA stores den and m for the backward
  if (tid < BQ && vt == 0 && row0 + tid < sq.S) {
    float den = 1.f;
    if (EXP) den = fmaxf(fabsf(s_nq[tid]), __expf(-s_mu[tid]));
    else if (NORMALIZE) den = fmaxf(fabsf(s_nq[tid]), 1.f);
    const i64 o = sq.row + row0 + tid;
    if (p.norm_out) p.norm_out[o] = den;
    if (p.m_out) p.m_out[o] = s_mu[tid];
  }
  T* gH = static_cast<T*>(p.h) + b * p.h_sb + h * p.h_sh + sq.tok0 * p.h_ss + v0;
  store_acc<T, GO>(acc, gH + (i64)row0 * p.h_ss, p.h_ss, sq.S - row0, warp_m, warp_n, lane, [&](int il) {
    float den = 1.f;
    if (EXP) den = fmaxf(fabsf(s_nq[il]), __expf(-s_mu[il]));
    else if (NORMALIZE) den = fmaxf(fabsf(s_nq[il]), 1.f);
    return 1.f / (den + p.eps);
  });
}

}  // namespace tfla
