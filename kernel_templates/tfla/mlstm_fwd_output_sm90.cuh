// Forward, kernel 3 of 3 on the sm_90a engine: the output (the math is mlstm_fwd_output.cuh's).
// For a tile of 128 query rows of chunk c and BV columns of h:
//   H_i = beta_i s (q_i C_c) + sum_{j<=i in chunk} exp(r_i + u_j) s (q_i . k_j) v_j
//   N_i = beta_i s (q_i . n_c) + sum_{j<=i in chunk} exp(r_i + u_j) s (q_i . k_j)
//   h_i = H_i / (den_i + eps)
//
// Persistent (a CTA takes its tiles in persistent_tile order) and warp-specialized, 384 threads:
//  - warpgroup 0 (producer, 40 registers): one thread walks the CTA's tiles and loads by TMA, in
//    this order per tile: Q (128 x Dqk, its own buffer, refilled once the consumers have issued
//    their last Q K^T of the previous tile), the chunk state's Dqk/64 blocks (64 x BV) when the
//    chunk has one, then per key tile K (64 x Dqk) and V (64 x BV), each into the next ring slot.
//  - warpgroups 1 and 2 (consumers, 232 registers) own 64 query rows each and all BV columns
//    (a 64 x BV fp32 accumulator). The inter part runs first: acc = Q C_c (wgmma, A = Q and
//    B = the state block from shared memory), then rows scaled by beta_i s; q_i . n_c in fp32 on
//    the CUDA cores from the Q tile. Per key tile: S = Q K^T (m64n64, both from shared memory),
//    decay and causal mask in registers, P rounded to 16-bit register fragments, acc += P V
//    (wgmma with A from registers). A warpgroup whose rows all precede a key tile skips it (it
//    still waits for and frees the slots, so the ring stays in step).
//  - Epilogue: N_i (row sums reduced over the quad), den_i, h_i stored from registers; the
//    Dv-tile-0 CTA stores den_i and m_i for the backward.
// Rows past S read zeros (TMA fills outside the tensor; in a packed sequence the next sequence's
// tokens) and are not stored; keys past S have u = -inf (the gate kernel's padding), so they
// weigh nothing.
#pragma once
#include "tfla/mlstm_sm90_params.cuh"
#include "tfla/seq_span.cuh"
#include "tfla/sm90.cuh"
#include "tfla/sm90_wgmma.cuh"

namespace tfla {

template <class T, int DQK, int DV, int CHUNK, int BV, int STAGES, bool EXP, bool NORMALIZE>
__device__ void mlstm_fwd_output_sm90(const MlstmFwdSm90Params& P, char* smem_raw) {
  using namespace sm90;
  using Shape = FwdOutputSm90Shape;
  constexpr int kBQ = Shape::kBQ, kBKV = Shape::kBKV;
  constexpr int kQPanels = DQK / 64, kVPanels = BV / 64;
  constexpr int kPanelBytes = 64 * 128;             // 64 rows of 64 16-bit columns
  constexpr int kQPanelBytes = kBQ * 128;           // 128 rows
  constexpr int kQBytes = kQPanels * kQPanelBytes;
  constexpr int kSlotBytes = fwd_output_sm90_slot_bytes(DQK, BV);
  constexpr int kKBytes = kQPanels * kPanelBytes, kVBytes = kVPanels * kPanelBytes;
  constexpr bool NEED_N = EXP || NORMALIZE;
  constexpr int kAcc = BV / 2;  // accumulator floats per thread (64 x BV per warpgroup)
  static_assert(DQK % 64 == 0 && DQK <= 256 && BV % 64 == 0 && BV <= 256 && DV % BV == 0,
                "Dqk and BV multiples of 64 up to 256, BV dividing Dv");
  static_assert(CHUNK % kBQ == 0, "query tiles must not straddle chunks");
  static_assert(Elem<T>::is16, "16-bit inputs");
  static_assert(kQBytes % 1024 == 0 && kSlotBytes % 1024 == 0, "swizzle atoms stay aligned");
  static_assert(1024 + kQBytes + STAGES * kSlotBytes + (2 * STAGES + 2) * 8 ==
                    fwd_output_sm90_smem_bytes(DQK, BV, STAGES),
                "the layout below must match fwd_output_sm90_smem_bytes, which the host sizes the launch with");

  const MlstmFwdParams& p = P.p;
  char* sQ = align_smem<1024>(smem_raw);
  char* ring = sQ + kQBytes;
  u64* full = reinterpret_cast<u64*>(ring + STAGES * kSlotBytes);
  u64* empty = full + STAGES;
  u64* q_full = empty + STAGES;
  u64* q_empty = q_full + 1;
  constexpr int kConsumerWarps = 4 * Shape::kConsumers;
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kConsumerWarps);
    }
    mbar_init(q_full, 1);
    mbar_init(q_empty, kConsumerWarps);
    fence_mbarrier_init();
    tma_prefetch_desc(&P.q);
    tma_prefetch_desc(&P.k);
    tma_prefetch_desc(&P.v);
    if (p.states_C) tma_prefetch_desc(&P.c);  // the parallel form binds no chunk states
  }
  __syncthreads();

  const int NC = p.NC;
  const long long S_pad = static_cast<long long>(NC) * CHUNK;
  // Tile t: Dv tile fastest (the Dv tiles of a query tile share Q and K in L2), then the query
  // tile, then the head. A packed sequence (seq_span.cuh) is a head of its own length S whose
  // tokens start at tok0 of a (1, NH, T, D) layout (TMA batch coordinate tb 0); the tiles past
  // its end are skipped by every warpgroup alike.
  struct Tile {
    int vt, qt, bh, b, h, row0, c, chunk0, n_tiles, S, tb;
    long long tok0, nrow;
    bool has_state;
  };
  auto tile_of = [&](int t) {
    Tile x;
    x.vt = t % P.v_tiles;
    const int rest = t / P.v_tiles;
    x.qt = rest % P.q_tiles;
    x.bh = rest / P.q_tiles;
    x.b = x.bh / p.NH;
    x.h = x.bh % p.NH;
    const SeqSpan sq = seq_span<CHUNK>(p, x.b, x.h);
    x.S = sq.S;
    x.tok0 = sq.tok0;
    x.nrow = sq.row;
    x.tb = TFLA_PACKED ? 0 : x.b;
    x.row0 = x.qt * kBQ;
    x.c = x.row0 / CHUNK;
    x.chunk0 = x.c * CHUNK;
    x.has_state = !(x.c == 0 && p.C0 == nullptr);
    const int key_end = min(x.row0 + kBQ, x.S);
    x.n_tiles = (key_end - x.chunk0 + kBKV - 1) / kBKV;
    return x;
  };

  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    setmaxnreg_dec<40>();
    if (threadIdx.x == 0) {
      RingPos<STAGES> pos;
      u32 q_phase = 0;
      for (int round = 0, t = persistent_tile(0); t < P.tiles; t = persistent_tile(++round)) {
        const Tile x = tile_of(t);
        if (x.row0 >= x.S) continue;
        mbar_wait(q_empty, q_phase ^ 1u);
        mbar_arrive_expect_tx(q_full, kQBytes);
#pragma unroll
        for (int kp = 0; kp < kQPanels; ++kp)
          tma_load_4d(sQ + kp * kQPanelBytes, &P.q, q_full, 64 * kp, static_cast<int>(x.tok0) + x.row0, x.h, x.tb);
        q_phase ^= 1u;
        if (x.has_state) {
          const int cidx = x.bh * NC + x.c;
#pragma unroll 1
          for (int kb = 0; kb < kQPanels; ++kb) {
            mbar_wait(&empty[pos.slot], pos.phase ^ 1u);
            char* slot = ring + pos.slot * kSlotBytes;
            mbar_arrive_expect_tx(&full[pos.slot], kVBytes);
#pragma unroll
            for (int vp = 0; vp < kVPanels; ++vp)
              tma_load_3d(slot + vp * kPanelBytes, &P.c, &full[pos.slot], x.vt * BV + 64 * vp, 64 * kb, cidx);
            pos.advance();
          }
        }
#pragma unroll 1
        for (int n = 0; n < x.n_tiles; ++n) {
          const int j0 = x.chunk0 + n * kBKV;
          mbar_wait(&empty[pos.slot], pos.phase ^ 1u);
          char* slot = ring + pos.slot * kSlotBytes;
          mbar_arrive_expect_tx(&full[pos.slot], kKBytes);
#pragma unroll
          for (int kp = 0; kp < kQPanels; ++kp)
            tma_load_4d(slot + kp * kPanelBytes, &P.k, &full[pos.slot], 64 * kp, static_cast<int>(x.tok0) + j0, x.h, x.tb);
          pos.advance();
          mbar_wait(&empty[pos.slot], pos.phase ^ 1u);
          slot = ring + pos.slot * kSlotBytes;
          mbar_arrive_expect_tx(&full[pos.slot], kVBytes);
#pragma unroll
          for (int vp = 0; vp < kVPanels; ++vp)
            tma_load_4d(slot + vp * kPanelBytes, &P.v, &full[pos.slot], x.vt * BV + 64 * vp, static_cast<int>(x.tok0) + j0,
                        x.h, x.tb);
          pos.advance();
        }
      }
    }
    return;
  }

  setmaxnreg_inc<232>();
  // consumer warpgroup: query rows 64 cw .. 64 cw + 63 of the tile (through a shuffle, so the
  // compiler knows it is warp-uniform and builds the wgmma descriptors that depend on it in uniform
  // registers)
  const int cw = __shfl_sync(0xffffffffu, wg, 0) - 1;
  const int lane = threadIdx.x % 32, warp = (threadIdx.x / 32) % 4;
  const int g = lane / 4, cq = lane % 4;
  const bool warp_leader = lane == 0;
  const float scale = p.scale;
  const u32 q_base = smem_u32(sQ);
  RingPos<STAGES> pos;
  u32 q_phase = 0;
  float acc[kAcc];
  float sacc[32];

  auto release = [&](int slot) {
    __syncwarp();
    if (warp_leader) mbar_arrive(&empty[slot]);
  };

  for (int round = 0, t = persistent_tile(0); t < P.tiles; t = persistent_tile(++round)) {
    const Tile x = tile_of(t);
    if (x.row0 >= x.S) continue;
    const int S = x.S;
    const int v0 = x.vt * BV;
    const int lrow = 64 * cw + 16 * warp + g;  // this thread's rows: lrow and lrow + 8 of the tile
    // Row values from the gate kernel's workspace: r_i, beta_i, mu_i.
    float r[2], beta[2], mu[2];
    {
      // a chunk without a state (the first, with no initial state) starts from m = 0; the parallel
      // form's one chunk is such a chunk, and its plan binds no stabilizers
      const float m_c = EXP && x.has_state ? p.chunk_m[static_cast<long long>(x.bh) * (NC + 1) + x.c] : 0.f;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const long long o = x.bh * S_pad + x.row0 + lrow + 8 * hh;
        const float bi = p.gate_b[o];
        if (EXP) {
          const float M = fmaxf(m_c, p.gate_pm[o]);
          r[hh] = -M;
          beta[hh] = __expf(m_c - M);
          mu[hh] = bi + M;
        } else {
          r[hh] = bi;
          beta[hh] = __expf(bi);
          mu[hh] = 0.f;
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[i] = 0.f;

    mbar_wait(q_full, q_phase);
    q_phase ^= 1u;
    // inter part: acc = Q C_c over the state's Dqk blocks, rows scaled by beta_i s
    if (x.has_state) {
      int prev = -1;
#pragma unroll 1
      for (int kb = 0; kb < kQPanels; ++kb) {
        mbar_wait(&full[pos.slot], pos.phase);
        const u64 da = wgmma_desc_kmajor(q_base + kb * kQPanelBytes + cw * 64 * 128, 128);
        const u64 db = wgmma_desc_mnmajor(smem_u32(ring + pos.slot * kSlotBytes), 128, kPanelBytes);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          Wgmma<BV>::template ss<T, 0, 1>(acc, da + desc_step(32 * kk), db + desc_step(16 * 128 * kk), 1);
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
          const float f = beta[hh] * scale;
          acc[4 * j + 2 * hh] *= f;
          acc[4 * j + 2 * hh + 1] *= f;
        }
    }
    // q_i . n_c (fp32): lane (g, cq) sums the 16-byte chunks cq and cq + 4 of each 128-byte Q row
    // panel for its two rows, then the quad adds its partial sums.
    float nq[2] = {0.f, 0.f};
    if (NEED_N && x.has_state) {
      const float* nc = p.states_n + (static_cast<long long>(x.bh) * NC + x.c) * DQK;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int row = lrow + 8 * hh;
#pragma unroll
        for (int kp = 0; kp < kQPanels; ++kp)
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            const int ch = cq + 4 * half;
            const uint4 qv = *reinterpret_cast<const uint4*>(sQ + kp * kQPanelBytes + row * 128 +
                                                              ((ch ^ (row & 7)) << 4));
            const float4 n0 = *reinterpret_cast<const float4*>(nc + 64 * kp + 8 * ch);
            const float4 n1 = *reinterpret_cast<const float4*>(nc + 64 * kp + 8 * ch + 4);
            const u32 w[4] = {qv.x, qv.y, qv.z, qv.w};
            const float nn[8] = {n0.x, n0.y, n0.z, n0.w, n1.x, n1.y, n1.z, n1.w};
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const float2 f = Elem<T>::unpack2(w[e]);
              nq[hh] += f.x * nn[2 * e] + f.y * nn[2 * e + 1];
            }
          }
        nq[hh] += __shfl_xor_sync(0xffffffffu, nq[hh], 1);
        nq[hh] += __shfl_xor_sync(0xffffffffu, nq[hh], 2);
      }
    }

    // intra-chunk part
    // N_i's row sums start from the inter part's beta_i s (q_i . n_c), held by the quad's lane 0
    float rowN[2];
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) rowN[hh] = cq == 0 ? beta[hh] * scale * nq[hh] : 0.f;
    const int my_rows_end = x.row0 + 64 * cw + 64;  // one past this warpgroup's last row
    const int my_tiles = min(x.n_tiles, (my_rows_end - x.chunk0 + kBKV - 1) / kBKV);
    // Up to 128 columns the last P V stays in flight while the next key tile's scores are issued
    // (wgmma groups complete in order): its V slot is freed once those scores are waited for. At
    // 256 columns the accumulator in flight spills: P V completes before the next tile.
    constexpr bool kOverlapPV = BV <= 128;
    int v_pending = -1;
    u32 pa[4][4];  // P of the key tile (written once its scores, and so the last P V, completed)
#pragma unroll 1
    for (int n = 0; n < x.n_tiles; ++n) {
      const int j0 = x.chunk0 + n * kBKV;
      const bool mine = n < my_tiles;
      const int k_slot = pos.slot;
      mbar_wait(&full[k_slot], pos.phase);
      pos.advance();
      if (mine) {
        const u32 kbase = smem_u32(ring + k_slot * kSlotBytes);
        wgmma_fence();
#pragma unroll
        for (int kp = 0; kp < kQPanels; ++kp) {
          const u64 da = wgmma_desc_kmajor(q_base + kp * kQPanelBytes + cw * 64 * 128, 128);
          const u64 db = wgmma_desc_kmajor(kbase + kp * kPanelBytes, 128);
#pragma unroll
          for (int kk = 0; kk < 4; ++kk)
            Wgmma<64>::template ss<T, 0, 0>(sacc, da + desc_step(32 * kk), db + desc_step(32 * kk),
                                            (kp | kk) != 0);
        }
        wgmma_commit();
        wgmma_wait<1>();
        if (v_pending >= 0) release(v_pending);
        v_pending = -1;
        // u_j of this thread's columns 8 jj + 2 cq + e while the scores are computed (after the
        // last P V: its A fragments' registers take them)
        float2 u[8];
        const float* gu = p.gate_u + x.bh * S_pad + j0 + 2 * cq;
#pragma unroll
        for (int jj = 0; jj < 8; ++jj) u[jj] = *reinterpret_cast<const float2*>(gu + 8 * jj);
        wgmma_wait<0>();
        reg_fence(sacc);
        release(k_slot);
        if (n == my_tiles - 1) {
          __syncwarp();
          if (warp_leader) mbar_arrive(q_empty);  // the last read of this tile's Q has completed
        }
        // decay and causal mask; P as A fragments: key slice kk holds columns 16 kk .. 16 kk + 15
#pragma unroll
        for (int jj = 0; jj < 8; ++jj)
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) {
            const int gi = x.row0 + lrow + 8 * hh;
            const int gj = j0 + 8 * jj + 2 * cq;
            const float w0 = masked_exp(gj <= gi, r[hh] + u[jj].x) * scale;
            const float w1 = masked_exp(gj + 1 <= gi, r[hh] + u[jj].y) * scale;
            const float p0 = sacc[4 * jj + 2 * hh] * w0, p1 = sacc[4 * jj + 2 * hh + 1] * w1;
            rowN[hh] += p0 + p1;
            pa[jj / 2][2 * (jj % 2) + hh] = Elem<T>::pack2(p0, p1);
          }
      } else {
        wgmma_wait<0>();  // free the last P V's slot first (the producer may need it)
        if (v_pending >= 0) release(v_pending);
        v_pending = -1;
        release(k_slot);
      }
      const int v_slot = pos.slot;
      mbar_wait(&full[v_slot], pos.phase);
      pos.advance();
      if (mine) {
        const u64 db = wgmma_desc_mnmajor(smem_u32(ring + v_slot * kSlotBytes), 128, kPanelBytes);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          Wgmma<BV>::template rs<T, 1>(acc, pa[kk], db + desc_step(16 * 128 * kk), 1);
        wgmma_commit();
        if constexpr (kOverlapPV) {
          v_pending = v_slot;
        } else {
          wgmma_wait<0>();
          reg_fence(acc);
          release(v_slot);
        }
      } else {
        release(v_slot);
      }
    }
    wgmma_wait<0>();
    reg_fence(acc);
    if (v_pending >= 0) release(v_pending);

    // epilogue
    float inv[2];
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float den = 1.f;
      if (NEED_N) {
        float rn = rowN[hh];
        rn += __shfl_xor_sync(0xffffffffu, rn, 1);
        rn += __shfl_xor_sync(0xffffffffu, rn, 2);
        const float N = rn;
        if (EXP) den = fmaxf(fabsf(N), __expf(-mu[hh]));
        else den = fmaxf(fabsf(N), 1.f);
      }
      inv[hh] = 1.f / (den + p.eps);
      const int gi = x.row0 + lrow + 8 * hh;
      if (x.vt == 0 && cq == 0 && gi < S) {
        const long long o = x.nrow + gi;
        if (p.norm_out) p.norm_out[o] = den;
        if (p.m_out) p.m_out[o] = mu[hh];
      }
    }
    // h: each quad writes 64 contiguous bytes per row and group of four 8-column blocks
    T* gH = static_cast<T*>(p.h) + x.b * p.h_sb + x.h * p.h_sh + x.tok0 * p.h_ss + v0 + 8 * cq;
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int gi = x.row0 + lrow + 8 * hh;
      T* row = gH + static_cast<long long>(gi) * p.h_ss;
#pragma unroll
      for (int j0 = 0; j0 < kAcc / 4; j0 += 4) {
        u32 pr[4];
#pragma unroll
        for (int k = 0; k < 4; ++k)
          pr[k] = Elem<T>::pack2(acc[4 * (j0 + k) + 2 * hh] * inv[hh], acc[4 * (j0 + k) + 2 * hh + 1] * inv[hh]);
        const uint4 y = quad_transpose(pr[0], pr[1], pr[2], pr[3], cq);
        if (gi < S) *reinterpret_cast<uint4*>(row + 8 * j0) = y;
      }
    }
  }
}

}  // namespace tfla
