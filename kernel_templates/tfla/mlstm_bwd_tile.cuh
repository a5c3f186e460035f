// Backward, the per-chunk gradients dQ, dK, dV. One kernel template, three modes; a CTA owns BR
// rows and BN output columns of one gradient and loops over the tiles of the other side of the
// causal intra-chunk matrix (like the forward's output kernel with roles swapped):
//
//   out_r = rowscale_r * (X_r . Y)  +  sum_t P_rt W_t,   P_rt = (X_r . Z_t) exp(er_r + ec_t) fr_r fc_t
//
//   mode  rows r   X    Y (inter)          Z    W      rowscale             mask
//   DQ    query i  dh   C_c^T              v_j  k_j    s beta_i / den~_i    j <= i
//   DK    key j    v    dC_{c+1}^T         dh_i q_i    abar_j               i >= j
//   DV    key j    k    dC_{c+1}           q_i  dh_i   abar_j               i >= j
//
// den~_i = den_i + eps; D_ij = exp(r_i + u_j) as in the forward (r_i = -max(m_c, pm_i) for
// mLSTMexp, b_i for mLSTMsig); abar_j = exp(g + u_j - m_{c+1}); DQ: er = r_i, fr = s / den~_i,
// ec = u_j, fc = 1; DK, DV: er = u_j, fr = 1, ec = r_i, fc = s / den~_i.
//
// CHUNK = 0 is the parallel (quadratic) form: one chunk spans the sequence, there is no state
// (no inter part), and r, u come from the raw gates G through the CTA's own scans
// (mlstm_gate_scan.cuh) measured from the row tile's start. DQ walks its key tiles from the
// diagonal down to 0, DK/DV their query tiles from the row tile up to S, so the scans carry
// outwards; BT must divide BR. mlstm_bwd_parallel runs the three modes in one launch.
#pragma once
#include "tfla/mlstm_gate_scan.cuh"
#include "tfla/seq_span.cuh"
#include "tfla/tile.cuh"

namespace tfla {

// One CTA: gradient column tile nt, row tile rt, head bh.
template <class T, class TS, int DQK, int DV, int CHUNK, int BR, int BT, int BN, int BKC, int WM,
          int WN, bool EXP, int MODE, class G>
__device__ void mlstm_bwd_tile_at(const MlstmBwdParams& p, char* smem, int nt, int rt, int bh) {
  constexpr int NT = WM * WN * 32;
  constexpr bool PAR = CHUNK == 0;     // the parallel form (see the top of the file)
  constexpr int L = PAR ? BR : CHUNK;  // chunk length of the chunked form's index arithmetic
  constexpr int DX = MODE == kDV ? DQK : DV;         // contraction dim of X . Z and X . Y
  constexpr int DN = MODE == kDV ? DV : DQK;         // width of the gradient
  constexpr bool Y_NMAJOR = MODE != kDV;             // Y = state^T for DQ and DK
  typedef STile<T, BR, DX> TileX;
  typedef STile<T, BT, DX> TileZ;
  typedef STile<T, BT, BN> TileW;
  typedef STile<T, BR, BT> TileP;
  typedef STile<TS, (Y_NMAJOR ? BN : BKC), (Y_NMAJOR ? BKC : BN)> TileY;
  typedef Gemm<T, BR, BT, DX, WM, WN, false, true> GS;       // X Z^T
  typedef Gemm<T, BR, BN, BT, WM, WN, false, false> GO;      // P W
  typedef Gemm<T, BR, BN, BKC, WM, WN, false, Y_NMAJOR> GI;  // X Y (one Dx block)
  static_assert(L % BR == 0 && L % BT == 0, "tiles must divide the chunk (parallel: BT must divide BR)");
  static_assert(DX % BKC == 0 && DN % BN == 0, "tiles must divide the head dims");
  static_assert(NT >= BR && NT >= BT, "one thread per row needed");
  constexpr int ELEMS_A = TileZ::ELEMS > TileY::ELEMS ? TileZ::ELEMS : TileY::ELEMS;
  constexpr int ELEMS_B = TileW::ELEMS > TileY::ELEMS ? TileW::ELEMS : TileY::ELEMS;
  T* sX = reinterpret_cast<T*>(smem);
  T* sZ = sX + TileX::ELEMS;
  T* sW = sZ + ELEMS_A;
  T* sP = sW + ELEMS_B;
  TS* const sY0 = reinterpret_cast<TS*>(sZ);
  TS* const sY1 = reinterpret_cast<TS*>(sW);
  float* s_er = reinterpret_cast<float*>(sP + TileP::ELEMS);  // [BR]
  float* s_fr = s_er + BR;                                     // [BR]
  float* s_rs = s_fr + BR;                                     // [BR] rowscale
  float* s_ec = s_rs + BR;                                     // [BT]
  float* s_fc = s_ec + BT;                                     // [BT]
  float* s_uown = s_fc + BT;                                   // [BR] parallel: u' of the rows
  float* s_scan = s_uown + BR;                                 // [NT / 32] parallel: scan partials
  static_assert(Elem<TS>::bytes == Elem<T>::bytes, "the Y blocks alias the Z and W tiles");
  static_assert((TileX::ELEMS + ELEMS_A + ELEMS_B + TileP::ELEMS) * Elem<T>::bytes +
                        (3 * BR + 2 * BT + (PAR ? BR + NT / 32 : 0)) * 4 ==
                    bwd_tile_smem_bytes(Elem<T>::bytes, DX, BR, BT, BN, BKC, Y_NMAJOR) +
                        (PAR ? gate_scan_smem_bytes(BR, NT / 32) : 0),
                "the layout above must match bwd_tile_smem_bytes (+ the gate scan's), which the host "
                "sizes the launch with");

  const int b = bh / p.NH, h = bh % p.NH;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp / WN, warp_n = warp % WN;
  const int row0 = rt * BR;
  const int c = PAR ? 0 : row0 / L;
  const int chunk0 = c * L;
  const int n0 = nt * BN;
  const i64 S_pad = PAR ? (i64)p.S : (i64)p.NC * L;
  const float scale = p.scale;
  const GateScan<NT, EXP, G> gs{{s_scan}, b, h};
  // The parallel form takes the plain layout only; a packed sequence's CTAs past its end exit.
  const SeqSpan sq = seq_span<PAR ? 0 : L>(p, b, h);
  if (row0 >= sq.S) return;
  const int S = sq.S;

  const T* gq = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh + sq.tok0 * p.q_ss;
  const T* gk = static_cast<const T*>(p.k) + b * p.k_sb + h * p.k_sh + sq.tok0 * p.k_ss;
  const T* gv = static_cast<const T*>(p.v) + b * p.v_sb + h * p.v_sh + sq.tok0 * p.v_ss;
  const T* gdh = static_cast<const T*>(p.dh) + b * p.dh_sb + h * p.dh_sh + sq.tok0 * p.dh_ss;
  // X rows, Z rows (full DX), W rows (BN columns) and their sequence strides
  const T* gX = MODE == kDQ ? gdh : MODE == kDK ? gv : gk;
  const i64 sXs = MODE == kDQ ? p.dh_ss : MODE == kDK ? p.v_ss : p.k_ss;
  const T* gZ = MODE == kDQ ? gv : MODE == kDK ? gdh : gq;
  const i64 sZs = MODE == kDQ ? p.v_ss : MODE == kDK ? p.dh_ss : p.q_ss;
  const T* gW = (MODE == kDQ ? gk : MODE == kDK ? gq : gdh) + n0;
  const i64 sWs = MODE == kDQ ? p.k_ss : MODE == kDK ? p.q_ss : p.dh_ss;

  load_tile_async<T, BR, DX, NT>(sX, TileX::LD, gX + (i64)row0 * sXs, sXs, S - row0, tid);
  cp_async_commit();

  const float m_c = EXP && !PAR ? p.chunk_m[(i64)bh * (p.NC + 1) + c] : 0.f;
  const float m_next = EXP && !PAR ? p.chunk_m[(i64)bh * (p.NC + 1) + c + 1] : 0.f;
  const float g = PAR ? 0.f : p.chunk_g[(i64)bh * p.NC + c];
  auto r_of = [&](i64 o) { return EXP ? -fmaxf(m_c, p.gate_pm[o]) : p.gate_b[o]; };
  auto inv_den = [&](int t) { return t < S ? 1.f / (p.norm[sq.row + t] + p.eps) : 0.f; };
  float B = 0.f, P0 = neg_inf();  // parallel: b_{row0 - 1} and max u' below row0
  if constexpr (PAR) {
    float csum = 0.f, cmax, bp, u, pm;
    if (EXP) gs.prefix(p, row0, &B, &P0);
    cmax = P0;
    gs.up(p, row0, BR, csum, cmax, bp, u, pm);
    if (tid < BR) {
      if (MODE == kDQ) {
        s_uown[tid] = u;
        s_er[tid] = EXP ? -fmaxf(B, pm) : bp;
        s_fr[tid] = scale * inv_den(row0 + tid);
      } else {
        s_er[tid] = u;
        s_fr[tid] = 1.f;
      }
      s_rs[tid] = 0.f;
    }
  } else if (tid < BR) {
    const int t = row0 + tid;
    const i64 o = bh * S_pad + t;
    if (MODE == kDQ) {
      const float r = r_of(o);
      const float id = inv_den(t);
      s_er[tid] = r;
      s_fr[tid] = scale * id;
      s_rs[tid] = scale * __expf(r + m_c) * id;
    } else {
      const float u = p.gate_u[o];
      s_er[tid] = u;
      s_fr[tid] = 1.f;
      s_rs[tid] = __expf(g + u - m_next);
    }
  }

  typename GO::Acc acc;
  GO::zero(acc);
  // inter part: X (BR x DX) . Y (DX x BN), Y streamed in BKC blocks of DX, double-buffered
  if constexpr (!PAR) {
    const TS* gY = static_cast<const TS*>(MODE == kDQ ? p.states_C : p.dstates_C) +
                   ((i64)bh * p.NC + c) * DQK * DV;
    auto y_block = [&](int ib) -> const TS* {
      return Y_NMAJOR ? gY + (i64)n0 * DV + ib * BKC : gY + (i64)ib * BKC * DV + n0;
    };
    constexpr int YR = Y_NMAJOR ? BN : BKC, YC = Y_NMAJOR ? BKC : BN;
    load_tile_async<TS, YR, YC, NT>(sY0, TileY::LD, y_block(0), DV, YR, tid);
    cp_async_commit();
    constexpr int NKC = DX / BKC;
#pragma unroll 1
    for (int ib = 0; ib < NKC; ++ib) {
      if (ib + 1 < NKC) {
        load_tile_async<TS, YR, YC, NT>(((ib + 1) & 1) ? sY1 : sY0, TileY::LD, y_block(ib + 1), DV,
                                        YR, tid);
        cp_async_commit();
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      GI::run(acc, sX + ib * BKC, TileX::LD, (ib & 1) ? sY1 : sY0, TileY::LD, warp_m, warp_n, lane);
      __syncthreads();
    }
  }
  cp_async_wait<0>();
  __syncthreads();
  if constexpr (!PAR) {
#pragma unroll
    for (int fm = 0; fm < GO::FM; ++fm)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float f = s_rs[warp_m * GO::WTM + acc_row(fm, e, lane)];
#pragma unroll
        for (int fn = 0; fn < GO::FN; ++fn) acc[fm][fn][e] *= f;
      }
  }

  // intra part: the causal tiles of the other side within the chunk (chunked: in order;
  // parallel: outwards from the row tile, DQ down to 0, DK/DV up to S)
  const int chunk_end = PAR ? S : min(chunk0 + L, S);
  const int t_begin = MODE == kDQ ? chunk0 : (row0 / BT) * BT;
  const int t_end = MODE == kDQ ? min(row0 + BR, S) : chunk_end;
  const int n_tiles = (t_end - t_begin + BT - 1) / BT;
  auto col_tile = [&](int n) { return t_begin + (PAR && MODE == kDQ ? n_tiles - 1 - n : n) * BT; };
  auto issue_z = [&](int t0) {
    load_tile_async<T, BT, DX, NT>(sZ, TileZ::LD, gZ + (i64)t0 * sZs, sZs, S - t0, tid);
    cp_async_commit();
  };
  auto issue_w = [&](int t0) {
    load_tile_async<T, BT, BN, NT>(sW, TileW::LD, gW + (i64)t0 * sWs, sWs, S - t0, tid);
    cp_async_commit();
  };
  if (n_tiles > 0) {
    issue_z(col_tile(0));
    issue_w(col_tile(0));
  }
  float csum = 0.f, cmax = P0;  // parallel: the scan's carries (DQ: sum of f~ from the tile up to row0)
  for (int n = 0; n < n_tiles; ++n) {
    const int t0 = col_tile(n);
    const bool more = n + 1 < n_tiles;
    if constexpr (PAR) {
      if (MODE == kDQ) {
        if (t0 >= row0) {
          if (tid < BT) s_ec[tid] = s_uown[t0 - row0 + tid];
        } else {
          const float u = gs.down(p, t0, BT, csum);
          if (tid < BT) s_ec[BT - 1 - tid] = u;
        }
        if (tid < BT) s_fc[tid] = 1.f;
      } else {
        float bp, u, pm;
        gs.up(p, t0, BT, csum, cmax, bp, u, pm);
        if (tid < BT) {
          s_ec[tid] = EXP ? -fmaxf(B, pm) : bp;
          s_fc[tid] = scale * inv_den(t0 + tid);
        }
      }
    } else if (tid < BT) {
      const int t = t0 + tid;
      const i64 o = bh * S_pad + t;
      if (MODE == kDQ) {
        s_ec[tid] = p.gate_u[o];
        s_fc[tid] = 1.f;
      } else {
        s_ec[tid] = r_of(o);
        s_fc[tid] = scale * inv_den(t);
      }
    }
    cp_async_wait<1>();
    __syncthreads();
    typename GS::Acc sacc;
    GS::zero(sacc);
    GS::run(sacc, sX, TileX::LD, sZ, TileZ::LD, warp_m, warp_n, lane);
    __syncthreads();
    if (more) issue_z(col_tile(n + 1));
#pragma unroll
    for (int fm = 0; fm < GS::FM; ++fm)
#pragma unroll
      for (int fn = 0; fn < GS::FN; ++fn)
#pragma unroll
        for (int e = 0; e < 4; e += 2) {
          const int rl = warp_m * GS::WTM + acc_row(fm, e, lane);
          const int tl = warp_n * GS::WTN + acc_col(fn, e, lane);
          const int gr = row0 + rl, gt = t0 + tl;
          const float er = s_er[rl], fr = s_fr[rl];
          const bool ok0 = MODE == kDQ ? gt <= gr : gt >= gr;
          const bool ok1 = MODE == kDQ ? gt + 1 <= gr : gt + 1 >= gr;
          const float w0 = masked_exp(ok0, er + s_ec[tl]) * fr * s_fc[tl];
          const float w1 = masked_exp(ok1, er + s_ec[tl + 1]) * fr * s_fc[tl + 1];
          const float p0 = sacc[fm][fn][e] * w0, p1 = sacc[fm][fn][e + 1] * w1;
          T* dst = sP + rl * TileP::LD + tl;
          if constexpr (Elem<T>::is16) {
            *reinterpret_cast<u32*>(dst) = Elem<T>::pack2(p0, p1);
          } else {
            *reinterpret_cast<float2*>(dst) = make_float2(p0, p1);
          }
        }
    if (more) cp_async_wait<1>(); else cp_async_wait<0>();
    __syncthreads();
    GO::run(acc, sP, TileP::LD, sW, TileW::LD, warp_m, warp_n, lane);
    __syncthreads();
    if (more) issue_w(col_tile(n + 1));
  }

  // dQ / dK: fp32 partial row dots q.dq or k.dk over this CTA's Dqk columns, for the gate
  // gradients (exact accumulators, not the rounded outputs).
  if constexpr (MODE != kDV) {
    const T* gIn = (MODE == kDQ ? gq : gk) + n0;
    const i64 in_ss = MODE == kDQ ? p.q_ss : p.k_ss;
    float* s_part = reinterpret_cast<float*>(sP);  // [WN][BR], P is free after the last tile
#pragma unroll
    for (int fm = 0; fm < GO::FM; ++fm)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int rl = warp_m * GO::WTM + acc_row(fm, 2 * hh, lane);
        float d = 0.f;
        if (row0 + rl < S) {
#pragma unroll
          for (int fn = 0; fn < GO::FN; ++fn) {
            const int cl = warp_n * GO::WTN + acc_col(fn, 0, lane);
            const T* x = gIn + (i64)(row0 + rl) * in_ss + cl;
            d += acc[fm][fn][2 * hh] * Elem<T>::to_float(x[0]) + acc[fm][fn][2 * hh + 1] * Elem<T>::to_float(x[1]);
          }
        }
        d += __shfl_xor_sync(0xffffffffu, d, 1);
        d += __shfl_xor_sync(0xffffffffu, d, 2);
        if ((lane & 3) == 0) s_part[warp_n * BR + rl] = d;
      }
    __syncthreads();
    if (tid < BR && (!PAR || row0 + tid < S)) {
      float d = 0.f;
      for (int w = 0; w < WN; ++w) d += s_part[w * BR + tid];
      p.xpart[((bh * S_pad + row0 + tid) * 2 + (MODE == kDK ? 1 : 0)) * p.xparts + nt] = d;
    }
  }

  // store the gradient tile
  T* gOut = static_cast<T*>(MODE == kDQ ? p.dq : MODE == kDK ? p.dk : p.dv);
  const i64 o_sb = MODE == kDQ ? p.dq_sb : MODE == kDK ? p.dk_sb : p.dv_sb;
  const i64 o_sh = MODE == kDQ ? p.dq_sh : MODE == kDK ? p.dk_sh : p.dv_sh;
  const i64 o_ss = MODE == kDQ ? p.dq_ss : MODE == kDK ? p.dk_ss : p.dv_ss;
  gOut += b * o_sb + h * o_sh + sq.tok0 * o_ss + n0;
  store_acc<T, GO>(acc, gOut + (i64)row0 * o_ss, o_ss, S - row0, warp_m, warp_n, lane);
}

// The chunkwise backward's tile kernels: one launch per mode.
template <class T, class TS, int DQK, int DV, int CHUNK, int BR, int BT, int BN, int BKC, int WM,
          int WN, bool EXP, int MODE>
__device__ void mlstm_bwd_tile(const MlstmBwdParams& p, char* smem) {
  mlstm_bwd_tile_at<T, TS, DQK, DV, CHUNK, BR, BT, BN, BKC, WM, WN, EXP, MODE, float>(p, smem, blockIdx.x,
                                                                                    blockIdx.y, blockIdx.z);
}

// The parallel backward's tile launch: the dQ, dK and dV CTAs of a row tile side by side in one
// grid (x: DQK / BNQK dQ column tiles, then as many dK tiles, then DV / BNV dV tiles; y: row
// tiles; z: heads), so one launch does all three, and the causal work, which grows with the row
// for dQ and shrinks for dK and dV, evens out across the CTAs of a row tile.
template <class T, int DQK, int DV, int BR, int BT, int BNQK, int BNV, int BKC, int WM, int WN,
          bool EXP, class G>
__device__ void mlstm_bwd_parallel(const MlstmBwdParams& p, char* smem) {
  constexpr int NQK = DQK / BNQK;
  const int x = blockIdx.x, rt = blockIdx.y, bh = blockIdx.z;
  if (x < NQK)
    mlstm_bwd_tile_at<T, T, DQK, DV, 0, BR, BT, BNQK, BKC, WM, WN, EXP, kDQ, G>(p, smem, x, rt, bh);
  else if (x < 2 * NQK)
    mlstm_bwd_tile_at<T, T, DQK, DV, 0, BR, BT, BNQK, BKC, WM, WN, EXP, kDK, G>(p, smem, x - NQK, rt, bh);
  else
    mlstm_bwd_tile_at<T, T, DQK, DV, 0, BR, BT, BNV, BKC, WM, WN, EXP, kDV, G>(p, smem, x - 2 * NQK, rt, bh);
}

}  // namespace tfla
