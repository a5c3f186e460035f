// Backward on the sm_90a engine: the chunkwise gradient tiles dQ, dK and dV (the math, the roles
// X, Y, Z, W and the row and column factors are mlstm_bwd_tile.cuh's):
//
//   out_r = rowscale_r (X_r . Y)  +  sum_t P_rt W_t,   P_rt = (X_r . Z_t) exp(er_r + ec_t) fr_r fc_t
//
//   mode  rows r   X    Y (inter)          Z    W      t in the chunk
//   DQ    query i  dh   C_c^T              v_j  k_j    j <= i
//   DK    key j    v    dC_{c+1}^T         dh_i q_i    i >= j
//   DV    key j    k    dC_{c+1}           q_i  dh_i   i >= j
//
// A CTA tile is 128 rows of one chunk by BN columns of the gradient. Persistent (tiles in
// persistent_tile order) and warp-specialized like the forward's output kernel
// (mlstm_fwd_output_sm90.cuh), 384 threads:
//  - warpgroup 0 (producer, 40 registers): one thread walks the CTA's tiles and loads by TMA:
//    X (128 x DX, its own buffer, refilled once both consumers have issued their last X Z^T of
//    the previous tile), the chunk state's DX / 64 blocks (64 contraction rows x BN), then per
//    tile t of the other side Z (64 x DX, in slots of BN / 64 panels) and W (64 x BN), each into
//    the next ring slot.
//  - warpgroups 1 and 2 (consumers, 232 registers) own 64 rows each and all BN columns. The
//    inter part runs first: acc = X Y (wgmma from shared memory; Y K-major for dQ and dK, whose Y
//    is a transposed state, MN-major for dV), rows scaled by rowscale. Per tile t: S = X Z^T
//    (m64n64, DX / 16 steps), the factors and the causal mask in registers, P rounded to 16-bit
//    register fragments, acc += P W (wgmma with A from registers). A warpgroup none of whose rows
//    the tile reaches skips it (it still waits for and frees the slots).
//  - Epilogue: dQ and dK write the fp32 row dots q . dq or k . dk of their columns (xpart) for the
//    gate gradients; the gradient tile is stored from registers, 16 bytes per lane.
// Rows past S read zeros (TMA fills outside the tensor; in a packed sequence the next sequence's
// tokens) and are not stored; keys past S have u = -inf (the gate kernel's padding) and queries
// past S are masked, so they weigh nothing.
#pragma once
#include "tfla/mlstm_sm90_params.cuh"
#include "tfla/seq_span.cuh"
#include "tfla/sm90.cuh"
#include "tfla/sm90_wgmma.cuh"

namespace tfla {

template <class T, int DQK, int DV, int CHUNK, int BN, int STAGES, bool EXP, int MODE, bool PARALLEL>
__device__ void mlstm_bwd_tile_sm90(const MlstmBwdTileSm90Params& P, char* smem_raw) {
  using namespace sm90;
  using Shape = BwdTileSm90Shape;
  constexpr int kBR = Shape::kBR, kBT = Shape::kBT;
  constexpr int DX = MODE == kDV ? DQK : DV;  // contraction dim of X Z^T and X Y
  constexpr int DN = MODE == kDV ? DV : DQK;  // width of the gradient
  constexpr bool Y_KMAJOR = MODE != kDV;      // Y = a state transposed for dQ and dK
  constexpr int kXPanels = DX / 64, kSlotPanels = BN / 64;
  constexpr int kZSlots = (kXPanels + kSlotPanels - 1) / kSlotPanels;
  constexpr int kPanelBytes = 64 * 128;   // 64 rows of 64 16-bit columns
  constexpr int kXPanelBytes = kBR * 128;  // 128 rows
  constexpr int kXBytes = kXPanels * kXPanelBytes;
  constexpr int kSlotBytes = bwd_tile_sm90_slot_bytes(BN);
  constexpr int kAcc = BN / 2;  // accumulator floats per thread (64 x BN per warpgroup)
  static_assert(MODE == kDQ || MODE == kDK || MODE == kDV, "mode is dQ, dK or dV");
  static_assert(DX % 64 == 0 && DX <= 512 && BN % 64 == 0 && BN <= 256 && DN % BN == 0,
                "DX a multiple of 64 up to 512; BN a multiple of 64 up to 256 dividing the gradient's width");
  static_assert(CHUNK % kBR == 0, "row tiles must not straddle chunks");
  static_assert(Elem<T>::is16, "16-bit inputs");
  static_assert(STAGES >= 2, "the Z slots of a tile are freed one by one: two slots suffice");
  static_assert(kSlotBytes == kSlotPanels * kPanelBytes && kXBytes % 1024 == 0, "swizzle atoms stay aligned");
  static_assert(1024 + kXBytes + STAGES * kSlotBytes + (2 * STAGES + 2) * 8 ==
                    bwd_tile_sm90_smem_bytes(DX, BN, STAGES),
                "the layout below must match bwd_tile_sm90_smem_bytes, which the host sizes the launch with");

  const MlstmBwdParams& p = P.p;
  char* sX = align_smem<1024>(smem_raw);
  char* ring = sX + kXBytes;
  u64* full = reinterpret_cast<u64*>(ring + STAGES * kSlotBytes);
  u64* empty = full + STAGES;
  u64* x_full = empty + STAGES;
  u64* x_empty = x_full + 1;
  constexpr int kConsumerWarps = 4 * Shape::kConsumers;
  // PARALLEL: the parallel form (one chunk spanning the sequence, no initial state, no dC_last)
  // runs no state kernels; its plan binds no chunk states, and the inter part, whose state is zero
  // there, is left out.
  constexpr bool has_y = !PARALLEL;
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kConsumerWarps);
    }
    mbar_init(x_full, 1);
    mbar_init(x_empty, kConsumerWarps);
    fence_mbarrier_init();
    tma_prefetch_desc(&P.x);
    tma_prefetch_desc(&P.z);
    tma_prefetch_desc(&P.w);
    if (has_y) tma_prefetch_desc(&P.y);
  }
  __syncthreads();

  const int NC = p.NC;
  const long long S_pad = static_cast<long long>(NC) * CHUNK;
  // Tile t: column tile fastest (the column tiles of a row tile share X and Z in L2), then the
  // row tile, then the head. The other side's tiles run from t_begin (dQ: the chunk's start;
  // dK, dV: the row tile's start) to the causal end. A packed sequence (seq_span.cuh) is a head
  // of its own length S whose tokens start at tok0 of a (1, NH, T, D) layout (TMA batch
  // coordinate tb 0); its row tiles are numbered along the packed token axis (packed_tile_seq,
  // P.row_tiles per head), and the gaps between sequences are skipped by every warpgroup alike.
  struct Tile {
    int nt, rt, bh, b, h, row0, c, chunk0, t_begin, n_tiles, S, tb;
    long long tok0, nrow;
  };
  auto tile_of = [&](int t) {
    Tile x;
    x.nt = t % P.n_tiles;
    const int rest = t / P.n_tiles;
    if (TFLA_PACKED) {
      x.h = rest / P.row_tiles;
      x.b = packed_tile_seq<kBR, CHUNK>(p, rest % P.row_tiles, x.rt);
      x.bh = x.b * p.NH + x.h;
    } else {
      x.rt = rest % P.row_tiles;
      x.bh = rest / P.row_tiles;
      x.b = x.bh / p.NH;
      x.h = x.bh % p.NH;
    }
    const SeqSpan sq = seq_span<CHUNK>(p, x.b, x.h);
    x.S = sq.S;
    if (TFLA_PACKED && x.rt < 0) x.rt = x.S = 0;  // a gap: skipped
    x.tok0 = sq.tok0;
    x.nrow = sq.row;
    x.tb = TFLA_PACKED ? 0 : x.b;
    x.row0 = x.rt * kBR;
    x.c = x.row0 / CHUNK;
    x.chunk0 = x.c * CHUNK;
    x.t_begin = MODE == kDQ ? x.chunk0 : x.row0;
    const int t_end = MODE == kDQ ? min(x.row0 + kBR, x.S) : min(x.chunk0 + CHUNK, x.S);
    x.n_tiles = (t_end - x.t_begin + kBT - 1) / kBT;
    return x;
  };

  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    setmaxnreg_dec<40>();
    if (threadIdx.x == 0) {
      RingPos<STAGES> pos;
      u32 x_phase = 0;
      for (int round = 0, t = persistent_tile(0); t < P.tiles; t = persistent_tile(++round)) {
        const Tile x = tile_of(t);
        if (x.row0 >= x.S) continue;
        const int n0 = x.nt * BN;
        const int tok0 = static_cast<int>(x.tok0);
        mbar_wait(x_empty, x_phase ^ 1u);
        mbar_arrive_expect_tx(x_full, kXBytes);
#pragma unroll
        for (int kp = 0; kp < kXPanels; ++kp)
          tma_load_4d(sX + kp * kXPanelBytes, &P.x, x_full, 64 * kp, tok0 + x.row0, x.h, x.tb);
        x_phase ^= 1u;
        // the state's blocks of 64 contraction rows (Y_KMAJOR: BN state rows of 64 Dv columns)
        const int cidx = x.bh * NC + x.c;
#pragma unroll 1
        for (int kb = 0; kb < (has_y ? kXPanels : 0); ++kb) {
          mbar_wait(&empty[pos.slot], pos.phase ^ 1u);
          char* slot = ring + pos.slot * kSlotBytes;
          mbar_arrive_expect_tx(&full[pos.slot], kSlotBytes);
#pragma unroll
          for (int i = 0; i < kSlotPanels; ++i) {
            if (Y_KMAJOR)
              tma_load_3d(slot + i * kPanelBytes, &P.y, &full[pos.slot], 64 * kb, n0 + 64 * i, cidx);
            else
              tma_load_3d(slot + i * kPanelBytes, &P.y, &full[pos.slot], n0 + 64 * i, 64 * kb, cidx);
          }
          pos.advance();
        }
#pragma unroll 1
        for (int n = 0; n < x.n_tiles; ++n) {
          const int t0 = x.t_begin + n * kBT;
#pragma unroll
          for (int zs = 0; zs < kZSlots; ++zs) {
            constexpr int kLast = kXPanels - (kZSlots - 1) * kSlotPanels;
            const int panels = zs + 1 < kZSlots ? kSlotPanels : kLast;
            mbar_wait(&empty[pos.slot], pos.phase ^ 1u);
            char* slot = ring + pos.slot * kSlotBytes;
            mbar_arrive_expect_tx(&full[pos.slot], panels * kPanelBytes);
            for (int i = 0; i < panels; ++i)
              tma_load_4d(slot + i * kPanelBytes, &P.z, &full[pos.slot], 64 * (zs * kSlotPanels + i), tok0 + t0, x.h,
                          x.tb);
            pos.advance();
          }
          mbar_wait(&empty[pos.slot], pos.phase ^ 1u);
          char* slot = ring + pos.slot * kSlotBytes;
          mbar_arrive_expect_tx(&full[pos.slot], kSlotBytes);
#pragma unroll
          for (int i = 0; i < kSlotPanels; ++i)
            tma_load_4d(slot + i * kPanelBytes, &P.w, &full[pos.slot], n0 + 64 * i, tok0 + t0, x.h, x.tb);
          pos.advance();
        }
      }
    }
    return;
  }

  setmaxnreg_inc<232>();
  // consumer warpgroup: rows 64 cw .. 64 cw + 63 of the tile (through a shuffle, so the compiler
  // knows it is warp-uniform and builds the wgmma descriptors that depend on it in uniform
  // registers)
  const int cw = __shfl_sync(0xffffffffu, wg, 0) - 1;
  const int lane = threadIdx.x % 32, warp = (threadIdx.x / 32) % 4;
  const int g = lane / 4, cq = lane % 4;
  const bool warp_leader = lane == 0;
  const float scale = p.scale;
  const float log_scale = __logf(scale);
  const u32 x_base = smem_u32(sX);
  RingPos<STAGES> pos;
  u32 x_phase = 0;
  float acc[kAcc];
  float sacc[32];

  auto release = [&](int slot) {
    __syncwarp();
    if (warp_leader) mbar_arrive(&empty[slot]);
  };
  auto release_x = [&] {
    __syncwarp();
    if (warp_leader) mbar_arrive(x_empty);
  };
  for (int round = 0, t = persistent_tile(0); t < P.tiles; t = persistent_tile(++round)) {
    const Tile x = tile_of(t);
    if (x.row0 >= x.S) continue;
    const int S = x.S;
    auto inv_den = [&](const float* norm, int t) { return t < S ? 1.f / (norm[t] + p.eps) : 0.f; };
    // log(s / den~_t), -inf past S: no division (an IEEE one is a reciprocal, a refinement and a
    // slow-path branch per element)
    auto log_fc = [&](const float* norm, int t) { return t < S ? log_scale - __logf(norm[t] + p.eps) : neg_inf(); };
    const int n0 = x.nt * BN;
    const int lrow = 64 * cw + 16 * warp + g;  // this thread's rows: lrow and lrow + 8 of the tile
    const float* norm = p.norm + x.nrow;
    // the parallel form's stabilizer entering its one chunk is 0, as with no initial state
    const float m_c = EXP && has_y ? p.chunk_m[static_cast<long long>(x.bh) * (NC + 1) + x.c] : 0.f;
    // Row factors: er_r, fr_r and rowscale_r.
    float er[2], fr[2], rs[2];
    {
      const float m_next = EXP && has_y ? p.chunk_m[static_cast<long long>(x.bh) * (NC + 1) + x.c + 1] : 0.f;
      const float gch = p.chunk_g[static_cast<long long>(x.bh) * NC + x.c];
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int gi = x.row0 + lrow + 8 * hh;
        const long long o = x.bh * S_pad + gi;
        if (MODE == kDQ) {
          const float r = EXP ? -fmaxf(m_c, p.gate_pm[o]) : p.gate_b[o];
          const float id = inv_den(norm, gi);
          er[hh] = r;
          fr[hh] = scale * id;
          rs[hh] = scale * __expf(r + m_c) * id;
        } else {
          const float u = p.gate_u[o];
          er[hh] = u;
          fr[hh] = 1.f;
          rs[hh] = __expf(gch + u - m_next);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[i] = 0.f;

    mbar_wait(x_full, x_phase);
    x_phase ^= 1u;
    // inter part: acc = X Y over the state's DX / 64 blocks
    if (has_y) {
      int prev = -1;
#pragma unroll 1
      for (int kb = 0; kb < kXPanels; ++kb) {
        mbar_wait(&full[pos.slot], pos.phase);
        const u64 da = wgmma_desc_kmajor(x_base + kb * kXPanelBytes + cw * 64 * 128, 128);
        const u32 sb = smem_u32(ring + pos.slot * kSlotBytes);
        wgmma_fence();
        if constexpr (Y_KMAJOR) {
          const u64 db = wgmma_desc_kmajor(sb, 128);
#pragma unroll
          for (int kk = 0; kk < 4; ++kk)
            Wgmma<BN>::template ss<T, 0, 0>(acc, da + desc_step(32 * kk), db + desc_step(32 * kk), 1);
        } else {
          const u64 db = wgmma_desc_mnmajor(sb, 128, kPanelBytes);
#pragma unroll
          for (int kk = 0; kk < 4; ++kk)
            Wgmma<BN>::template ss<T, 0, 1>(acc, da + desc_step(32 * kk), db + desc_step(16 * 128 * kk), 1);
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

    // intra-chunk part. The tiles this warpgroup's rows reach: dQ the first ones (keys up to its
    // last row), dK and dV all but the first cw (queries from its first row).
    const int first_mine = MODE == kDQ ? 0 : cw;
    const int end_mine =
        MODE == kDQ ? min(x.n_tiles, (x.row0 + 64 * cw + 64 - x.chunk0 + kBT - 1) / kBT) : x.n_tiles;
    const int last_x = end_mine > first_mine ? end_mine - 1 : -1;  // the tile of its last X read
    if (last_x < 0) release_x();
    // Up to 128 columns, the ring slot of the last P W, still in flight: freed once the next
    // tile's first scores are issued (wgmma groups complete in order), so P W overlaps the next
    // Z wait and X Z^T issue. At 256 columns the accumulator in flight would spill: P W completes
    // before the next tile.
    constexpr bool kOverlapPW = BN <= 128;
    int w_pending = -1;
#pragma unroll 1
    for (int n = 0; n < x.n_tiles; ++n) {
      const int t0 = x.t_begin + n * kBT;
      const bool mine = n >= first_mine && n < end_mine;
      // column factors of this thread's columns 8 jj + 2 cq + e, folded into one exponent:
      // dQ ec = u_j (fc = 1); dK, dV ec = r_i + log(s / den~_i) (-inf past S)
      float2 ec[8];
      u32 pa[4][4] = {};
      if (mine) {
        int z_prev = -1;
#pragma unroll
        for (int zs = 0; zs < kZSlots; ++zs) {
          constexpr int kLast = kXPanels - (kZSlots - 1) * kSlotPanels;
          const int panels = zs + 1 < kZSlots ? kSlotPanels : kLast;
          mbar_wait(&full[pos.slot], pos.phase);
          const u32 zbase = smem_u32(ring + pos.slot * kSlotBytes);
          wgmma_fence();
#pragma unroll
          for (int i = 0; i < panels; ++i) {
            const int kp = zs * kSlotPanels + i;
            const u64 da = wgmma_desc_kmajor(x_base + kp * kXPanelBytes + cw * 64 * 128, 128);
            const u64 db = wgmma_desc_kmajor(zbase + i * kPanelBytes, 128);
#pragma unroll
            for (int kk = 0; kk < 4; ++kk)
              Wgmma<64>::template ss<T, 0, 0>(sacc, da + desc_step(32 * kk), db + desc_step(32 * kk),
                                              (kp | kk) != 0);
          }
          wgmma_commit();
          if (zs == 0) {  // the column factors load while the scores are computed
            const long long o = x.bh * S_pad + t0 + 2 * cq;
#pragma unroll
            for (int jj = 0; jj < 8; ++jj) {
              if (MODE == kDQ) {
                ec[jj] = *reinterpret_cast<const float2*>(p.gate_u + o + 8 * jj);
              } else {
                float2 r;
                if (EXP) {
                  const float2 pm = *reinterpret_cast<const float2*>(p.gate_pm + o + 8 * jj);
                  r = make_float2(-fmaxf(m_c, pm.x), -fmaxf(m_c, pm.y));
                } else {
                  r = *reinterpret_cast<const float2*>(p.gate_b + o + 8 * jj);
                }
                const int gt = t0 + 8 * jj + 2 * cq;
                ec[jj] = make_float2(r.x + log_fc(norm, gt), r.y + log_fc(norm, gt + 1));
              }
            }
          }
          if (kOverlapPW && zs == 0 && w_pending >= 0) {  // the previous tile's P W is done: free its slot
            wgmma_wait<1>();
            release(w_pending);
            w_pending = -1;
          }
          if (zs > 0) {  // the previous slot's scores are done: free it
            wgmma_wait<1>();
            release(z_prev);
          }
          z_prev = pos.slot;
          pos.advance();
        }
        wgmma_wait<0>();
        reg_fence(sacc);
        release(z_prev);
        if (n == last_x) release_x();  // this warpgroup's last read of the tile's X has completed
        // factors and causal mask; P as A fragments: column slice kk holds columns 16 kk .. + 15
#pragma unroll
        for (int jj = 0; jj < 8; ++jj)
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) {
            const int gr = x.row0 + lrow + 8 * hh;
            const int gt = t0 + 8 * jj + 2 * cq;
            const bool ok0 = MODE == kDQ ? gt <= gr : (gt >= gr && gt < S);
            const bool ok1 = MODE == kDQ ? gt + 1 <= gr : (gt + 1 >= gr && gt + 1 < S);
            const float w0 = masked_exp(ok0, er[hh] + ec[jj].x) * fr[hh];
            const float w1 = masked_exp(ok1, er[hh] + ec[jj].y) * fr[hh];
            pa[jj / 2][2 * (jj % 2) + hh] =
                Elem<T>::pack2(sacc[4 * jj + 2 * hh] * w0, sacc[4 * jj + 2 * hh + 1] * w1);
          }
      } else {  // in step with the ring: wait for the Z slots and free them
        if (kOverlapPW && w_pending >= 0) {  // first free the last P W's slot (the producer may need it)
          wgmma_wait<0>();
          release(w_pending);
          w_pending = -1;
        }
#pragma unroll 1
        for (int zs = 0; zs < kZSlots; ++zs) {
          mbar_wait(&full[pos.slot], pos.phase);
          release(pos.slot);
          pos.advance();
        }
      }
      const int w_slot = pos.slot;
      mbar_wait(&full[w_slot], pos.phase);
      pos.advance();
      if (mine) {
        const u64 db = wgmma_desc_mnmajor(smem_u32(ring + w_slot * kSlotBytes), 128, kPanelBytes);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          Wgmma<BN>::template rs<T, 1>(acc, pa[kk], db + desc_step(16 * 128 * kk), 1);
        wgmma_commit();
        if constexpr (kOverlapPW) {
          w_pending = w_slot;
        } else {
          wgmma_wait<0>();
          reg_fence(acc);
        }
      }
      if (!kOverlapPW || !mine) release(w_slot);
    }
    if constexpr (kOverlapPW) {
      wgmma_wait<0>();
      reg_fence(acc);
      if (w_pending >= 0) release(w_pending);
    }

    // dQ / dK: the fp32 row dots q . dq or k . dk over this tile's columns, from the exact
    // accumulators, for the gate gradients. Each lane loads the 4-byte pairs of its own columns
    // (8 j + 2 cq, + 1), so nothing moves between lanes while the accumulator is live.
    if constexpr (MODE != kDV) {
      const long long in_sb = MODE == kDQ ? p.q_sb : p.k_sb, in_sh = MODE == kDQ ? p.q_sh : p.k_sh;
      const long long in_ss = MODE == kDQ ? p.q_ss : p.k_ss;
      const T* gIn = static_cast<const T*>(MODE == kDQ ? p.q : p.k) + x.b * in_sb + x.h * in_sh + x.tok0 * in_ss + n0 +
                     2 * cq;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int gi = x.row0 + lrow + 8 * hh;
        const T* row = gIn + static_cast<long long>(gi) * in_ss;
        float d = 0.f;
#pragma unroll
        for (int j = 0; j < kAcc / 4; ++j) {
          const u32 w = gi < S ? *reinterpret_cast<const u32*>(row + 8 * j) : 0u;
          const float2 f = Elem<T>::unpack2(w);
          d += acc[4 * j + 2 * hh] * f.x + acc[4 * j + 2 * hh + 1] * f.y;
        }
        d += __shfl_xor_sync(0xffffffffu, d, 1);
        d += __shfl_xor_sync(0xffffffffu, d, 2);
        if (cq == 0 && gi < S)
          p.xpart[((x.bh * S_pad + gi) * 2 + (MODE == kDK ? 1 : 0)) * p.xparts + x.nt] = d;
      }
    }

    // the gradient tile: each quad writes 64 contiguous bytes per row and group of four blocks
    const long long o_sb = MODE == kDQ ? p.dq_sb : MODE == kDK ? p.dk_sb : p.dv_sb;
    const long long o_sh = MODE == kDQ ? p.dq_sh : MODE == kDK ? p.dk_sh : p.dv_sh;
    const long long o_ss = MODE == kDQ ? p.dq_ss : MODE == kDK ? p.dk_ss : p.dv_ss;
    T* gOut = static_cast<T*>(MODE == kDQ ? p.dq : MODE == kDK ? p.dk : p.dv) + x.b * o_sb + x.h * o_sh +
              x.tok0 * o_ss + n0 + 8 * cq;
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
        if (gi < S) *reinterpret_cast<uint4*>(row + 8 * j0) = y;
      }
    }
  }
}

}  // namespace tfla
