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
#pragma once
#include "tfla/tile.cuh"

namespace tfla {

enum BwdMode { kDQ = 0, kDK = 1, kDV = 2 };

template <class T, class TS, int DQK, int DV, int CHUNK, int BR, int BT, int BN, int BKC, int WM,
          int WN, bool EXP, int MODE>
__device__ void mlstm_bwd_tile(const MlstmBwdParams& p, char* smem) {
  constexpr int NT = WM * WN * 32;
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
  static_assert(CHUNK % BR == 0 && CHUNK % BT == 0, "tiles must divide the chunk");
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

  const int nt = blockIdx.x, rt = blockIdx.y, bh = blockIdx.z;
  const int b = bh / p.NH, h = bh % p.NH;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp / WN, warp_n = warp % WN;
  const int row0 = rt * BR;
  const int c = row0 / CHUNK;
  const int chunk0 = c * CHUNK;
  const int n0 = nt * BN;
  const i64 S_pad = (i64)p.NC * CHUNK;
  const float scale = p.scale;

  const T* gq = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh;
  const T* gk = static_cast<const T*>(p.k) + b * p.k_sb + h * p.k_sh;
  const T* gv = static_cast<const T*>(p.v) + b * p.v_sb + h * p.v_sh;
  const T* gdh = static_cast<const T*>(p.dh) + b * p.dh_sb + h * p.dh_sh;
  // X rows, Z rows (full DX), W rows (BN columns) and their sequence strides
  const T* gX = MODE == kDQ ? gdh : MODE == kDK ? gv : gk;
  const i64 sXs = MODE == kDQ ? p.dh_ss : MODE == kDK ? p.v_ss : p.k_ss;
  const T* gZ = MODE == kDQ ? gv : MODE == kDK ? gdh : gq;
  const i64 sZs = MODE == kDQ ? p.v_ss : MODE == kDK ? p.dh_ss : p.q_ss;
  const T* gW = (MODE == kDQ ? gk : MODE == kDK ? gq : gdh) + n0;
  const i64 sWs = MODE == kDQ ? p.k_ss : MODE == kDK ? p.q_ss : p.dh_ss;
  const TS* gY = static_cast<const TS*>(MODE == kDQ ? p.states_C : p.dstates_C) +
                 ((i64)bh * p.NC + c) * DQK * DV;

  load_tile_async<T, BR, DX, NT>(sX, TileX::LD, gX + (i64)row0 * sXs, sXs, p.S - row0, tid);
  cp_async_commit();

  const float m_c = EXP ? p.chunk_m[(i64)bh * (p.NC + 1) + c] : 0.f;
  const float m_next = EXP ? p.chunk_m[(i64)bh * (p.NC + 1) + c + 1] : 0.f;
  const float g = p.chunk_g[(i64)bh * p.NC + c];
  auto r_of = [&](i64 o) { return EXP ? -fmaxf(m_c, p.gate_pm[o]) : p.gate_b[o]; };
  auto inv_den = [&](int t) { return t < p.S ? 1.f / (p.norm[(i64)bh * p.S + t] + p.eps) : 0.f; };
  if (tid < BR) {
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
  {
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
#pragma unroll
  for (int fm = 0; fm < GO::FM; ++fm)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float f = s_rs[warp_m * GO::WTM + acc_row(fm, e, lane)];
#pragma unroll
      for (int fn = 0; fn < GO::FN; ++fn) acc[fm][fn][e] *= f;
    }

  // intra part: the causal tiles of the other side within the chunk
  const int chunk_end = min(chunk0 + CHUNK, p.S);
  const int t_begin = MODE == kDQ ? chunk0 : (row0 / BT) * BT;
  const int t_end = MODE == kDQ ? min(row0 + BR, p.S) : chunk_end;
  auto issue_z = [&](int t0) {
    load_tile_async<T, BT, DX, NT>(sZ, TileZ::LD, gZ + (i64)t0 * sZs, sZs, p.S - t0, tid);
    cp_async_commit();
  };
  auto issue_w = [&](int t0) {
    load_tile_async<T, BT, BN, NT>(sW, TileW::LD, gW + (i64)t0 * sWs, sWs, p.S - t0, tid);
    cp_async_commit();
  };
  if (t_begin < t_end) {
    issue_z(t_begin);
    issue_w(t_begin);
  }
  for (int t0 = t_begin; t0 < t_end; t0 += BT) {
    const bool more = t0 + BT < t_end;
    if (tid < BT) {
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
    if (more) issue_z(t0 + BT);
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
          const float w0 = ok0 ? __expf(er + s_ec[tl]) * fr * s_fc[tl] : 0.f;
          const float w1 = ok1 ? __expf(er + s_ec[tl + 1]) * fr * s_fc[tl + 1] : 0.f;
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
    if (more) issue_w(t0 + BT);
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
        if (row0 + rl < p.S) {
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
    if (tid < BR) {
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
  gOut += b * o_sb + h * o_sh + n0;
  store_acc<T, GO>(acc, gOut + (i64)row0 * o_ss, o_ss, p.S - row0, warp_m, warp_n, lane);
}

}  // namespace tfla
