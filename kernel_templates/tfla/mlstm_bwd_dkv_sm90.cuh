// Backward on the sm_90a engine: dK and dV in one kernel, one pass over the query side's tiles
// for both (the math and the factors are mlstm_bwd_tile_sm90.cuh's modes DK and DV):
//
//   dK_j = rs_j (v_j . dC_{c+1}^T)  +  sum_i P2_ji q_i,    P2_ji = (v_j . dh_i) w_ji
//   dV_j = rs_j (k_j . dC_{c+1})    +  sum_i P1_ji dh_i,   P1_ji = (k_j . q_i)  w_ji
//   w_ji = exp(u_j + r_i) s / den~_i   for i >= j in key j's chunk (i < S),  rs_j = exp(g_c + u_j - m_{c+1})
//
// Both gradients read the same query-side tiles (q_i and dh_i) and the same chunk state dC_{c+1},
// and weigh their scores with the same w: one CTA tile is 64 key rows of one chunk with all Dqk
// columns of dK and all Dv columns of dV. Persistent (tiles in persistent_tile order) and
// warp-specialized, 384 threads:
//  - warpgroup 0 (producer, 40 registers): one thread walks the CTA's tiles and loads by TMA the
//    tile's k_j (64 x Dqk) and v_j (64 x Dv) into their own buffers (refilled once both consumers
//    have issued their last score of the previous tile), then dC_{c+1} in bands of 64 Dqk rows
//    (64 x Dv each), then per query tile q_i and dh_i together, each into the next ring slot.
//    Its second warp walks the same slots and writes each query tile's column factors
//    ec_i = r_i + log(s / den~_i) beside it (every lane arrives on the slot's factor barrier once
//    its two are written), so the consumers' global loads and logarithms leave the path between
//    their scores and P. The factor row has a barrier of its own for its reuse: every consumer
//    thread arrives on it once it holds its factors of the slot (at once for a band), and the
//    factor warp waits on it, not on the slot's release, before it writes the slot's next row.
//  - warpgroup 1 (dK) and warpgroup 2 (dV), 232 registers, each the tile's 64 rows and all columns
//    of its gradient. The inter part first: dK's column block a of 64 from band a
//    (v_j band_a^T, Dv deep), dV from every band (k_j's block a times band_a); rows scaled by rs.
//    Per query tile: the scores (dK: v_j dh_i^T over Dv; dV: k_j q_i^T over Dqk, m64n64 from
//    shared memory), w and the causal mask in registers, P rounded to 16-bit register fragments,
//    acc += P W (dK: W = q_i, dV: W = dh_i; wgmma with A from registers).
//  - Epilogue: dK writes the fp32 row dots k . dk for the gate gradients (one per XCOLS columns,
//    the partition the dQ kernel uses), then both gradients are stored from registers, 16 bytes
//    per lane.
// Rows past S are not stored: in the plain layout they read zeros (TMA fills outside the tensor),
// in a packed one the next sequence's tokens; queries past S get the factor -inf, so w = 0 there.
#pragma once
#include "tfla/mlstm_sm90_params.cuh"
#include "tfla/seq_span.cuh"
#include "tfla/sm90.cuh"
#include "tfla/sm90_wgmma.cuh"

namespace tfla {

// Tile t: the key tile fastest, then the head. Its query tiles run from its first row to the
// chunk's (or the sequence's) end. A packed sequence (seq_span.cuh) is a head of its own length S
// whose tokens start at tok0 of a (1, NH, T, D) layout (TMA batch coordinate tb 0); its key tiles
// are numbered along the packed token axis (packed_tile_seq, P.row_tiles per head), and a number
// in a gap between sequences is a tile of no rows (S = 0) that every warpgroup skips alike.
struct DkvTile {
  int bh, b, h, tb, row0, c, n_tiles, S;
  long long tok0, nrow;
};
template <int CHUNK> __device__ __forceinline__ DkvTile dkv_tile(const MlstmBwdDkvSm90Params& P, int t) {
  constexpr int kB = BwdDkvSm90Shape::kBR;
  DkvTile x;
  int rt;
  if (TFLA_PACKED) {
    x.h = t / P.row_tiles;
    x.b = packed_tile_seq<kB, CHUNK>(P.p, t % P.row_tiles, rt);
    x.bh = x.b * P.p.NH + x.h;
  } else {
    rt = t % P.row_tiles;
    x.bh = t / P.row_tiles;
    x.b = x.bh / P.p.NH;
    x.h = x.bh % P.p.NH;
  }
  const SeqSpan sq = seq_span<CHUNK>(P.p, x.b, x.h);
  x.S = sq.S;
  if (TFLA_PACKED && rt < 0) rt = x.S = 0;
  x.tok0 = sq.tok0;
  x.nrow = sq.row;
  x.tb = TFLA_PACKED ? 0 : x.b;
  x.row0 = rt * kB;
  x.c = x.row0 / CHUNK;
  const int t_end = min((x.c + 1) * CHUNK, x.S);
  x.n_tiles = (t_end - x.row0 + kB - 1) / kB;
  return x;
}

// A consumer warpgroup: ROLE 0 computes dK (X = v_j, scores against dh_i, W = q_i), ROLE 1 dV
// (X = k_j, scores against q_i, W = dh_i). Both consume every ring slot.
template <class T, int DQK, int DV, int CHUNK, int STAGES, bool EXP, int XCOLS, bool PARALLEL, int ROLE>
__device__ __forceinline__ void mlstm_bwd_dkv_sm90_consumer(const MlstmBwdDkvSm90Params& P, char* sK, char* sV,
                                                            char* ring, const float* ecs, sm90::u64* full,
                                                            sm90::u64* empty, sm90::u64* ec_full,
                                                            sm90::u64* ec_empty, sm90::u64* x_full,
                                                            sm90::u64* x_empty) {
  using namespace sm90;
  constexpr int kQP = DQK / 64, kVP = DV / 64;
  constexpr int kPanelBytes = 64 * 128;
  constexpr int kSlotBytes = (kQP + kVP) * kPanelBytes;
  constexpr int N = ROLE == 0 ? DQK : DV;   // the gradient's width
  constexpr int XP = ROLE == 0 ? kVP : kQP;  // the scores' contraction in panels
  constexpr int kZOff = ROLE == 0 ? kQP * kPanelBytes : 0;  // Z: dh_i for dK, q_i for dV
  constexpr int kWOff = ROLE == 0 ? 0 : kQP * kPanelBytes;  // W: q_i for dK, dh_i for dV
  constexpr int kAcc = N / 2;
  constexpr int kBT = BwdDkvSm90Shape::kBT;
  // The last P W stays in flight over the next tile's score issue up to 128 columns (at 256 the
  // accumulator in flight would spill, as in mlstm_bwd_tile_sm90.cuh).
  constexpr bool kOverlapPW = N <= 128;
  const MlstmBwdParams& p = P.p;
  constexpr bool has_y = !PARALLEL;  // the parallel form has no dC: no inter part
  const int NC = p.NC;
  const long long S_pad = static_cast<long long>(NC) * CHUNK;
  const int lane = threadIdx.x % 32, warp = (threadIdx.x / 32) % 4;
  const int g = lane / 4, cq = lane % 4;
  const bool warp_leader = lane == 0;
  const u32 x_base = smem_u32(ROLE == 0 ? sV : sK);
  RingPos<STAGES> pos;
  u32 x_phase = 0;
  float acc[kAcc];
  float sacc[32];

  auto release = [&](int slot) {
    __syncwarp();
    if (warp_leader) mbar_arrive(&empty[slot]);
  };

  for (int round = 0, t = persistent_tile(0); t < P.tiles; t = persistent_tile(++round)) {
    const DkvTile x = dkv_tile<CHUNK>(P, t);
    if (x.row0 >= x.S) continue;
    const int S = x.S;
    const int lrow = 16 * warp + g;  // this thread's rows: lrow and lrow + 8 of the tile
    // row factors: er_j = u_j and rowscale rs_j
    float er[2], rs[2];
    {
      const float m_next = EXP && has_y ? p.chunk_m[static_cast<long long>(x.bh) * (NC + 1) + x.c + 1] : 0.f;
      const float gch = p.chunk_g[static_cast<long long>(x.bh) * NC + x.c];
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const float u = p.gate_u[x.bh * S_pad + x.row0 + lrow + 8 * hh];
        er[hh] = u;
        rs[hh] = __expf(gch + u - m_next);
      }
    }
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[i] = 0.f;

    mbar_wait(x_full, x_phase);
    x_phase ^= 1u;
    // inter part over dC_{c+1}'s bands (64 Dqk rows each)
    if (has_y) {
      int prev = -1;
#pragma unroll
      for (int a = 0; a < kQP; ++a) {
        mbar_wait(&full[pos.slot], pos.phase);
        mbar_wait(&ec_full[pos.slot], pos.phase);  // (no factors for a band: every phase is waited for)
        mbar_arrive(&ec_empty[pos.slot]);
        const u32 band = smem_u32(ring + pos.slot * kSlotBytes);
        wgmma_fence();
        if constexpr (ROLE == 0) {  // dK columns 64 a ..: v_j band_a^T, Dv deep
          float(&blk)[32] = *reinterpret_cast<float(*)[32]>(acc + 32 * a);
#pragma unroll
          for (int kp = 0; kp < kVP; ++kp) {
            const u64 da = wgmma_desc_kmajor(x_base + kp * kPanelBytes, 128);
            const u64 db = wgmma_desc_kmajor(band + kp * kPanelBytes, 128);
#pragma unroll
            for (int kk = 0; kk < 4; ++kk)
              Wgmma<64>::template ss<T, 0, 0>(blk, da + desc_step(32 * kk), db + desc_step(32 * kk), 1);
          }
        } else {  // dV: k_j's block a (64 deep) times band_a (64 x Dv)
          const u64 da = wgmma_desc_kmajor(x_base + a * kPanelBytes, 128);
          const u64 db = wgmma_desc_mnmajor(band, 128, kPanelBytes);
#pragma unroll
          for (int kk = 0; kk < 4; ++kk)
            Wgmma<N>::template ss<T, 0, 1>(acc, da + desc_step(32 * kk), db + desc_step(16 * 128 * kk), 1);
        }
        wgmma_commit();
        wgmma_wait<1>();
        if (prev >= 0) release(prev);
        prev = pos.slot;
        pos.advance();
      }
      wgmma_wait<0>();
      release(prev);
      reg_fence(acc);
#pragma unroll
      for (int j = 0; j < kAcc / 4; ++j)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          acc[4 * j + 2 * hh] *= rs[hh];
          acc[4 * j + 2 * hh + 1] *= rs[hh];
        }
    }

    // intra-chunk part over the query tiles i >= the tile's first row
    int w_pending = -1;
#pragma unroll 1
    for (int n = 0; n < x.n_tiles; ++n) {
      const int t0 = x.row0 + n * kBT;
      const int slot = pos.slot;
      const u32 phase = pos.phase;
      mbar_wait(&full[slot], phase);
      pos.advance();
      const u32 sbase = smem_u32(ring + slot * kSlotBytes);
      wgmma_fence();
#pragma unroll
      for (int kp = 0; kp < XP; ++kp) {
        const u64 da = wgmma_desc_kmajor(x_base + kp * kPanelBytes, 128);
        const u64 db = wgmma_desc_kmajor(sbase + kZOff + kp * kPanelBytes, 128);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          Wgmma<64>::template ss<T, 0, 0>(sacc, da + desc_step(32 * kk), db + desc_step(32 * kk), (kp | kk) != 0);
      }
      wgmma_commit();
      // the column factors ec_i = r_i + log(s / den~_i) (-inf past S), from the slot's factor row
      mbar_wait(&ec_full[slot], phase);
      float2 ec[8];
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) ec[jj] = *reinterpret_cast<const float2*>(ecs + slot * 64 + 8 * jj + 2 * cq);
      mbar_arrive(&ec_empty[slot]);  // this thread's factors are read: the row may be rewritten
      if (kOverlapPW && w_pending >= 0) {  // the previous tile's P W is done: free its slot
        wgmma_wait<1>();
        release(w_pending);
        w_pending = -1;
      }
      wgmma_wait<0>();
      reg_fence(sacc);
      if (n + 1 == x.n_tiles) {  // this warpgroup's last read of the tile's k_j / v_j has completed
        __syncwarp();
        if (warp_leader) mbar_arrive(x_empty);
      }
      // w and the causal mask (query i >= key j); P as A fragments: slice kk holds columns 16 kk .. + 15
      u32 pa[4][4];
#pragma unroll
      for (int jj = 0; jj < 8; ++jj)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int gr = x.row0 + lrow + 8 * hh;
          const int gt = t0 + 8 * jj + 2 * cq;
          const float w0 = masked_exp(gt >= gr, er[hh] + ec[jj].x);
          const float w1 = masked_exp(gt + 1 >= gr, er[hh] + ec[jj].y);
          pa[jj / 2][2 * (jj % 2) + hh] = Elem<T>::pack2(sacc[4 * jj + 2 * hh] * w0, sacc[4 * jj + 2 * hh + 1] * w1);
        }
      const u64 db = wgmma_desc_mnmajor(sbase + kWOff, 128, kPanelBytes);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) Wgmma<N>::template rs<T, 1>(acc, pa[kk], db + desc_step(16 * 128 * kk), 1);
      wgmma_commit();
      if constexpr (kOverlapPW) {
        w_pending = slot;
      } else {
        wgmma_wait<0>();
        reg_fence(acc);
        release(slot);
      }
    }
    if constexpr (kOverlapPW) {
      wgmma_wait<0>();
      reg_fence(acc);
      if (w_pending >= 0) release(w_pending);
    }

    // dK: the fp32 row dots k . dk per XCOLS columns, from the exact accumulators, for the gate
    // gradients (each lane loads the 4-byte pairs of its own columns 8 j + 2 cq, + 1)
    if constexpr (ROLE == 0) {
      constexpr int kParts = DQK / XCOLS, kJPer = XCOLS / 8;
      const T* gIn = static_cast<const T*>(p.k) + x.b * p.k_sb + x.h * p.k_sh + x.tok0 * p.k_ss + 2 * cq;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int gi = x.row0 + lrow + 8 * hh;
        const T* row = gIn + static_cast<long long>(gi) * p.k_ss;
#pragma unroll
        for (int part = 0; part < kParts; ++part) {
          float d = 0.f;
#pragma unroll
          for (int j = part * kJPer; j < (part + 1) * kJPer; ++j) {
            const u32 w = gi < S ? *reinterpret_cast<const u32*>(row + 8 * j) : 0u;
            const float2 f = Elem<T>::unpack2(w);
            d += acc[4 * j + 2 * hh] * f.x + acc[4 * j + 2 * hh + 1] * f.y;
          }
          d += __shfl_xor_sync(0xffffffffu, d, 1);
          d += __shfl_xor_sync(0xffffffffu, d, 2);
          if (cq == 0 && gi < S) p.xpart[((x.bh * S_pad + gi) * 2 + 1) * p.xparts + part] = d;
        }
      }
    }

    // the gradient tile: each quad writes 64 contiguous bytes per row and group of four blocks
    const long long o_sb = ROLE == 0 ? p.dk_sb : p.dv_sb;
    const long long o_sh = ROLE == 0 ? p.dk_sh : p.dv_sh;
    const long long o_ss = ROLE == 0 ? p.dk_ss : p.dv_ss;
    T* gOut = static_cast<T*>(ROLE == 0 ? p.dk : p.dv) + x.b * o_sb + x.h * o_sh + x.tok0 * o_ss + 8 * cq;
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int gi = x.row0 + lrow + 8 * hh;
      T* row = gOut + static_cast<long long>(gi) * o_ss;
#pragma unroll
      for (int j0 = 0; j0 < kAcc / 4; j0 += 4) {
        u32 pr[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) pr[k] = Elem<T>::pack2(acc[4 * (j0 + k) + 2 * hh], acc[4 * (j0 + k) + 2 * hh + 1]);
        const uint4 y = quad_transpose(pr[0], pr[1], pr[2], pr[3], cq);
        // explicit: as uint4 assignments, a quarter of these compile to four 4-byte stores each
        if (gi < S) __stwb(reinterpret_cast<uint4*>(row + 8 * j0), y);
      }
    }
  }
}

template <class T, int DQK, int DV, int CHUNK, int STAGES, bool EXP, int XCOLS, bool PARALLEL>
__device__ void mlstm_bwd_dkv_sm90(const MlstmBwdDkvSm90Params& P, char* smem_raw) {
  using namespace sm90;
  using Shape = BwdDkvSm90Shape;
  constexpr int kBR = Shape::kBR, kBT = Shape::kBT;
  constexpr int kQP = DQK / 64, kVP = DV / 64;  // 64-column panels of a q / k row and a v / dh row
  constexpr int kPanelBytes = 64 * 128;         // 64 rows of 64 16-bit columns
  constexpr int kSlotBytes = (kQP + kVP) * kPanelBytes;
  static_assert(kBR == 64 && kBT == 64, "64-row key and query tiles");
  static_assert((DQK == 64 || DQK == 128 || DQK == 256) && (DV == 64 || DV == 128 || DV == 256),
                "Dqk and Dv 64, 128 or 256 (one wgmma N per gradient)");
  static_assert(XCOLS % 64 == 0 && DQK % XCOLS == 0, "the xpart partition divides Dqk in blocks of 64");
  static_assert(CHUNK % kBR == 0, "key tiles must not straddle chunks");
  static_assert(Elem<T>::is16, "16-bit inputs");
  static_assert(STAGES >= 2, "a band or query tile per slot: two slots keep one loading while one is read");
  static_assert(kSlotBytes == bwd_dkv_sm90_slot_bytes(DQK, DV), "slot layout");
  static_assert(1024 + (kQP + kVP) * kPanelBytes + STAGES * kSlotBytes + STAGES * kBT * 4 + (4 * STAGES + 2) * 8 ==
                    bwd_dkv_sm90_smem_bytes(DQK, DV, STAGES),
                "the layout below must match bwd_dkv_sm90_smem_bytes, which the host sizes the launch with");

  const MlstmBwdParams& p = P.p;
  // PARALLEL: the parallel form (one chunk, no dC_last) runs no dC walk; its plan binds no dC, and
  // the inter part, whose dC is zero there, is left out by the producer, the factor warp and the
  // consumers alike.
  constexpr bool has_y = !PARALLEL;
  char* sK = align_smem<1024>(smem_raw);  // k_j: kQP panels
  char* sV = sK + kQP * kPanelBytes;       // v_j: kVP panels
  char* ring = sV + kVP * kPanelBytes;     // a slot: q_i's kQP panels, then dh_i's kVP; or a band of dC
  float* ecs = reinterpret_cast<float*>(ring + STAGES * kSlotBytes);  // per slot: its query tile's ec_i
  u64* full = reinterpret_cast<u64*>(ecs + STAGES * kBT);
  u64* empty = full + STAGES;
  u64* ec_full = empty + STAGES;
  u64* ec_empty = ec_full + STAGES;
  u64* x_full = ec_empty + STAGES;
  u64* x_empty = x_full + 1;
  constexpr int kConsumerWarps = 4 * Shape::kConsumers;
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kConsumerWarps);
      mbar_init(&ec_full[s], 32);                  // the factor warp's lanes
      mbar_init(&ec_empty[s], 32 * kConsumerWarps);  // every consumer thread
    }
    mbar_init(x_full, 1);
    mbar_init(x_empty, kConsumerWarps);
    fence_mbarrier_init();
    tma_prefetch_desc(&P.q);
    tma_prefetch_desc(&P.k);
    tma_prefetch_desc(&P.v);
    tma_prefetch_desc(&P.dh);
    if (has_y) tma_prefetch_desc(&P.y);
  }
  __syncthreads();

  const int NC = p.NC;
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    setmaxnreg_dec<40>();
    if (threadIdx.x == 0) {
      RingPos<STAGES> pos;
      u32 x_phase = 0;
      for (int round = 0, t = persistent_tile(0); t < P.tiles; t = persistent_tile(++round)) {
        const DkvTile x = dkv_tile<CHUNK>(P, t);
        if (x.row0 >= x.S) continue;
        const int tok0 = static_cast<int>(x.tok0);
        mbar_wait(x_empty, x_phase ^ 1u);
        mbar_arrive_expect_tx(x_full, (kQP + kVP) * kPanelBytes);
#pragma unroll
        for (int i = 0; i < kQP; ++i)
          tma_load_4d(sK + i * kPanelBytes, &P.k, x_full, 64 * i, tok0 + x.row0, x.h, x.tb);
#pragma unroll
        for (int i = 0; i < kVP; ++i)
          tma_load_4d(sV + i * kPanelBytes, &P.v, x_full, 64 * i, tok0 + x.row0, x.h, x.tb);
        x_phase ^= 1u;
        // dC_{c+1}'s bands: 64 Dqk rows by all Dv columns
        const int cidx = x.bh * NC + x.c;
#pragma unroll 1
        for (int a = 0; a < (has_y ? kQP : 0); ++a) {
          mbar_wait(&empty[pos.slot], pos.phase ^ 1u);
          char* slot = ring + pos.slot * kSlotBytes;
          mbar_arrive_expect_tx(&full[pos.slot], kVP * kPanelBytes);
#pragma unroll
          for (int i = 0; i < kVP; ++i)
            tma_load_3d(slot + i * kPanelBytes, &P.y, &full[pos.slot], 64 * i, 64 * a, cidx);
          pos.advance();
        }
#pragma unroll 1
        for (int n = 0; n < x.n_tiles; ++n) {
          const int t0 = x.row0 + n * kBT;
          mbar_wait(&empty[pos.slot], pos.phase ^ 1u);
          char* slot = ring + pos.slot * kSlotBytes;
          mbar_arrive_expect_tx(&full[pos.slot], kSlotBytes);
#pragma unroll
          for (int i = 0; i < kQP; ++i)
            tma_load_4d(slot + i * kPanelBytes, &P.q, &full[pos.slot], 64 * i, tok0 + t0, x.h, x.tb);
#pragma unroll
          for (int i = 0; i < kVP; ++i)
            tma_load_4d(slot + (kQP + i) * kPanelBytes, &P.dh, &full[pos.slot], 64 * i, tok0 + t0, x.h, x.tb);
          pos.advance();
        }
      }
    } else if (threadIdx.x / 32 == 1) {
      // The factor warp: the same slots in the same order; for a query tile it writes
      // ec_i = r_i + log(s / den~_i), r_i = -max(m_c, pm_i) (mLSTMexp) or b_i, -inf past S.
      const int lane = threadIdx.x % 32;
      const long long S_pad = static_cast<long long>(NC) * CHUNK;
      RingPos<STAGES> pos;
      auto fill = [&]() {
        mbar_arrive(&ec_full[pos.slot]);
        pos.advance();
      };
      for (int round = 0, t = persistent_tile(0); t < P.tiles; t = persistent_tile(++round)) {
        const DkvTile x = dkv_tile<CHUNK>(P, t);
        if (x.row0 >= x.S) continue;
#pragma unroll 1
        for (int a = 0; a < (has_y ? kQP : 0); ++a) {  // the dC bands: nothing to add
          mbar_wait(&ec_empty[pos.slot], pos.phase ^ 1u);
          fill();
        }
        const float m_c = EXP && has_y ? p.chunk_m[static_cast<long long>(x.bh) * (NC + 1) + x.c] : 0.f;
        const float* norm = p.norm + x.nrow;
#pragma unroll 1
        for (int n = 0; n < x.n_tiles; ++n) {
          const int t0 = x.row0 + n * kBT;
          // the factors are computed before the slot frees up, then written once it has
          float e[2];
#pragma unroll
          for (int k = 0; k < 2; ++k) {
            const int gt = t0 + lane + 32 * k;
            const long long o = x.bh * S_pad + gt;
            const float r = EXP ? -fmaxf(m_c, p.gate_pm[o]) : p.gate_b[o];
            e[k] = neg_inf();
            if (gt < x.S) e[k] = r + (__logf(p.scale) - __logf(norm[gt] + p.eps));  // the tile kernels' form
          }
          mbar_wait(&ec_empty[pos.slot], pos.phase ^ 1u);
          ecs[pos.slot * kBT + lane] = e[0];
          ecs[pos.slot * kBT + lane + 32] = e[1];
          fill();
        }
      }
    }
    return;
  }

  setmaxnreg_inc<232>();
  // the consumer's gradient, through a shuffle so the compiler knows it is warp-uniform
  const int role = __shfl_sync(0xffffffffu, wg, 0) - 1;
  if (role == 0)
    mlstm_bwd_dkv_sm90_consumer<T, DQK, DV, CHUNK, STAGES, EXP, XCOLS, PARALLEL, 0>(P, sK, sV, ring, ecs, full, empty, ec_full,
                                                                           ec_empty, x_full, x_empty);
  else
    mlstm_bwd_dkv_sm90_consumer<T, DQK, DV, CHUNK, STAGES, EXP, XCOLS, PARALLEL, 1>(P, sK, sV, ring, ecs, full, empty, ec_full,
                                                                           ec_empty, x_full, x_empty);
}

}  // namespace tfla
