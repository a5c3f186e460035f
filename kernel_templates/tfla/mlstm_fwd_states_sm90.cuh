// Forward, kernel 2 of 3 on the sm_90a engine: the inter-chunk state recurrence (the math is
// mlstm_fwd_states.cuh's):
//   C_c+1 = exp(g + m_c - m_c+1) C_c + (K_c * w)^T V_c,   w_t = exp(g + u_t - m_c+1)
//   n_c+1 = exp(g + m_c - m_c+1) n_c + sum_t w_t k_t
// storing C_c (the state entering chunk c) in the input dtype and n_c in fp32.
//
// One CTA per (BV columns of C, head) walks the sequence in 64-row sub-blocks, 384 threads:
//  - warpgroup 0 (producer, 40 registers): one thread loads each sub-block's K (64 x Dqk) and V
//    (64 x BV) by TMA into the next ring slot;
//  - warpgroups 1 and 2 (consumers, 232 registers) own Dqk / 2 rows of C each, as fp32
//    accumulators (Dqk / 128 m64 blocks x BV columns). Per sub-block a warpgroup scales its own
//    columns of the K tile by the row weights w_t in shared memory (summing n's partials on the
//    way, in the CTA that owns n), makes the writes visible to the async proxy and, after a
//    barrier of its 128 threads, issues C += (K * w)^T V as wgmma with both operands MN-major
//    from shared memory. One wgmma group stays in flight while the next sub-block is scaled;
//    at each chunk boundary the last group completes, the accumulators are stored, then decayed.
// Rows past S are zero-filled by TMA and carry w = 0 (u = -inf past S).
#pragma once
#include "tfla/mlstm_sm90_params.cuh"
#include "tfla/sm90.cuh"
#include "tfla/sm90_wgmma.cuh"

namespace tfla {

template <class T, int DQK, int DV, int CHUNK, int BV, int STAGES, bool EXP>
__device__ void mlstm_fwd_states_sm90(const MlstmFwdStatesSm90Params& P, char* smem_raw) {
  using namespace sm90;
  using Shape = FwdStatesSm90Shape;
  constexpr int kSub = Shape::kSub;
  constexpr int kMB = DQK / 128;                  // m64 blocks of C per consumer warpgroup
  constexpr int kPanelBytes = kSub * 128;         // 64 rows of 64 16-bit columns
  constexpr int kKBytes = DQK / 64 * kPanelBytes;
  constexpr int kVBytes = BV / 64 * kPanelBytes;
  constexpr int kSlotBytes = fwd_states_sm90_slot_bytes(DQK, BV);
  constexpr int kAcc = BV / 2;                    // floats per thread per m64 block
  // The scaling pass: a warpgroup's K columns are kCpr 16-byte chunks per row; its 128 threads
  // take a chunk position each in kRg row groups (rows r0, r0 + kRg, ...).
  constexpr int kCpr = 8 * kMB, kRg = 128 / kCpr, kRows = kSub / kRg;
  static_assert(DQK % 128 == 0 && DQK <= 256 && BV % 64 == 0 && BV <= 128 && DV % BV == 0,
                "Dqk 128 or 256, BV 64 or 128 dividing Dv");
  static_assert(CHUNK % kSub == 0, "64-row sub-blocks tile the chunk");
  static_assert(kRg % 8 == 0, "a thread's rows share their swizzle phase");
  static_assert(Elem<T>::is16, "16-bit inputs");
  static_assert(kKBytes % 1024 == 0 && kSlotBytes % 1024 == 0, "swizzle atoms stay aligned");
  static_assert(1024 + STAGES * kSlotBytes + 2 * 1024 * 4 + 2 * STAGES * 8 ==
                    fwd_states_sm90_smem_bytes(DQK, BV, STAGES),
                "the layout below must match fwd_states_sm90_smem_bytes, which the host sizes the launch with");

  const MlstmFwdParams& p = P.p;
  char* ring = align_smem<1024>(smem_raw);
  float* sN = reinterpret_cast<float*>(ring + STAGES * kSlotBytes);  // [2][kRg][kCpr * 8]
  u64* full = reinterpret_cast<u64*>(sN + 2 * 1024);
  u64* empty = full + STAGES;
  constexpr int kConsumerWarps = 4 * Shape::kConsumers;
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kConsumerWarps);
    }
    fence_mbarrier_init();
    tma_prefetch_desc(&P.k);
    tma_prefetch_desc(&P.v);
  }
  __syncthreads();

  const int vt = blockIdx.x, bh = blockIdx.y;
  const int b = bh / p.NH, h = bh % p.NH;
  const int v0 = vt * BV;
  const int NC = p.NC;
  const int total = NC * (CHUNK / kSub);
  const long long S_pad = static_cast<long long>(NC) * CHUNK;

  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    setmaxnreg_dec<40>();
    if (threadIdx.x == 0) {
      RingPos<STAGES> pos;
      for (int it = 0; it < total; ++it) {
        const int row0 = it * kSub;
        mbar_wait(&empty[pos.slot], pos.phase ^ 1u);
        char* slot = ring + pos.slot * kSlotBytes;
        mbar_arrive_expect_tx(&full[pos.slot], kKBytes + kVBytes);
#pragma unroll
        for (int kp = 0; kp < DQK / 64; ++kp)
          tma_load_4d(slot + kp * kPanelBytes, &P.k, &full[pos.slot], 64 * kp, row0, h, b);
#pragma unroll
        for (int vp = 0; vp < BV / 64; ++vp)
          tma_load_4d(slot + kKBytes + vp * kPanelBytes, &P.v, &full[pos.slot], v0 + 64 * vp, row0, h, b);
        pos.advance();
      }
    }
    return;
  }

  setmaxnreg_inc<232>();
  const int cw = wg - 1;
  const int lt = threadIdx.x % 128;
  const int lane = lt % 32, warp = lt / 32;
  const int g = lane / 4, cq = lane % 4;
  const bool warp_leader = lane == 0;
  const bool own_n = vt == 0;  // the Dv-tile-0 CTA carries n
  const bool lead = vt == 0;
  // scaling pass: this thread's physical chunk position and first row
  const int pc = lt % kCpr, r0 = lt / kCpr;
  const int my_panel = cw * kMB + pc / 8;          // K panel (64 Dqk columns)
  const int my_lchunk = (pc % 8) ^ (r0 & 7);        // logical 8-column chunk within the panel
  const int my_col = 64 * my_panel + 8 * my_lchunk; // first Dqk column of the chunk
  const int row_base = cw * 64 * kMB;               // this warpgroup's first Dqk row of C

  float acc[kMB][kAcc];
#pragma unroll
  for (int mb = 0; mb < kMB; ++mb)
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[mb][i] = 0.f;
  float npart[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) npart[e] = 0.f;
  float m_prev = 0.f;
  if (p.C0) {
#pragma unroll
    for (int mb = 0; mb < kMB; ++mb)
#pragma unroll
      for (int j = 0; j < kAcc / 4; ++j)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int row = row_base + 64 * mb + 16 * warp + g + 8 * hh;
          const float2 c = *reinterpret_cast<const float2*>(p.C0 + (static_cast<long long>(bh) * DQK + row) * DV +
                                                            v0 + 8 * j + 2 * cq);
          acc[mb][4 * j + 2 * hh] = c.x;
          acc[mb][4 * j + 2 * hh + 1] = c.y;
        }
  }
  if (EXP && p.m0) m_prev = p.m0[bh];
  if (own_n && p.n0 && r0 == 0) {
#pragma unroll
    for (int e = 0; e < 8; ++e) npart[e] = p.n0[static_cast<long long>(bh) * DQK + my_col + e];
  }
  // n = the sum of the row groups' partials -> dst[0 .. Dqk / 2) of this warpgroup's columns.
  // Contains the warpgroup's barrier: all its threads call it.
  auto store_n = [&](float* dst) {
    float* mine = sN + cw * 1024;
#pragma unroll
    for (int e = 0; e < 8; ++e) mine[r0 * kCpr * 8 + (my_col - row_base) + e] = npart[e];
    named_bar_sync(1 + cw, 128);
    if (lt < kCpr * 8) {
      float n = 0.f;
#pragma unroll
      for (int r = 0; r < kRg; ++r) n += mine[r * kCpr * 8 + lt];
      dst[row_base + lt] = n;
    }
    named_bar_sync(1 + cw, 128);
  };
  // C -> d16 (T: 16 bytes per lane, the quad's 64 contiguous bytes per row through
  // quad_transpose) or d32 (fp32, column pairs), whichever is given (row stride DV).
  auto store_acc = [&](T* d16, float* d32) {
#pragma unroll
    for (int mb = 0; mb < kMB; ++mb)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const long long o = static_cast<long long>(row_base + 64 * mb + 16 * warp + g + 8 * hh) * DV + v0;
        if (d16) {
#pragma unroll
          for (int j0 = 0; j0 < kAcc / 4; j0 += 4) {
            u32 pr[4];
#pragma unroll
            for (int k = 0; k < 4; ++k)
              pr[k] = Elem<T>::pack2(acc[mb][4 * (j0 + k) + 2 * hh], acc[mb][4 * (j0 + k) + 2 * hh + 1]);
            *reinterpret_cast<uint4*>(d16 + o + 8 * (j0 + cq)) = quad_transpose(pr[0], pr[1], pr[2], pr[3], cq);
          }
        } else {
#pragma unroll
          for (int j = 0; j < kAcc / 4; ++j)
            *reinterpret_cast<float2*>(d32 + o + 2 * cq + 8 * j) =
                make_float2(acc[mb][4 * j + 2 * hh], acc[mb][4 * j + 2 * hh + 1]);
        }
      }
  };

  RingPos<STAGES> pos;
  constexpr int kNSub = CHUNK / kSub;
  // u_t of this thread's rows in the next sub-block, loaded one sub-block ahead
  float u_next[kRows];
  auto load_u = [&](int it) {
    const long long urow = bh * S_pad + static_cast<long long>(it) * kSub;
#pragma unroll
    for (int i = 0; i < kRows; ++i) u_next[i] = it < total ? p.gate_u[urow + r0 + kRg * i] : 0.f;
  };
  load_u(0);
#pragma unroll 1
  for (int c = 0; c < NC; ++c) {
    // Entering chunk c: the state is published, then decayed (no wgmma is in flight here).
    T* outC = static_cast<T*>(p.states_C) + (static_cast<long long>(bh) * NC + c) * DQK * DV;
    store_acc(outC, nullptr);
    if (own_n) store_n(p.states_n + (static_cast<long long>(bh) * NC + c) * DQK);
    if (lead && cw == 0 && lt == 0) p.chunk_m[static_cast<long long>(bh) * (NC + 1) + c] = m_prev;
    const float g_c = p.chunk_g[static_cast<long long>(bh) * NC + c];
    const float m_new = EXP ? fmaxf(g_c + m_prev, g_c + p.chunk_umax[static_cast<long long>(bh) * NC + c]) : 0.f;
    const float decay = __expf(g_c + m_prev - m_new);
#pragma unroll
    for (int mb = 0; mb < kMB; ++mb)
#pragma unroll
      for (int i = 0; i < kAcc; ++i) acc[mb][i] *= decay;
#pragma unroll
    for (int e = 0; e < 8; ++e) npart[e] *= decay;
    m_prev = m_new;
    int prev_slot = -1;
#pragma unroll 1
    for (int sub = 0; sub < kNSub; ++sub) {
      const int it = c * kNSub + sub;
      float w[kRows];
#pragma unroll
      for (int i = 0; i < kRows; ++i) w[i] = __expf(g_c + u_next[i] - m_new);
      load_u(it + 1);
      mbar_wait(&full[pos.slot], pos.phase);
      char* slot = ring + pos.slot * kSlotBytes;
      // scale this warpgroup's K columns by w_t (in place) and sum n's partials
      char* kchunk = slot + my_panel * kPanelBytes + (pc % 8) * 16;
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        uint4* q = reinterpret_cast<uint4*>(kchunk + (r0 + kRg * i) * 128);
        const uint4 x = *q;
        u32 wd[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float2 f = Elem<T>::unpack2(wd[e]);
          f.x *= w[i];
          f.y *= w[i];
          if (own_n) {
            npart[2 * e] += f.x;
            npart[2 * e + 1] += f.y;
          }
          wd[e] = Elem<T>::pack2(f.x, f.y);
        }
        *q = make_uint4(wd[0], wd[1], wd[2], wd[3]);
      }
      fence_proxy_async();
      named_bar_sync(1 + cw, 128);
      const u32 kbase = smem_u32(slot), vbase = smem_u32(slot + kKBytes);
      wgmma_fence();
#pragma unroll
      for (int mb = 0; mb < kMB; ++mb) {
        const u64 da = wgmma_desc_mnmajor(kbase + (cw * kMB + mb) * kPanelBytes, 128, kPanelBytes);
        const u64 db = wgmma_desc_mnmajor(vbase, 128, kPanelBytes);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          Wgmma<BV>::template ss<T, 1, 1>(acc[mb], da + desc_step(16 * 128 * kk), db + desc_step(16 * 128 * kk), 1);
      }
      wgmma_commit();
      // one group stays in flight while the next sub-block is scaled; the previous one's slot
      // is free once it has completed
      wgmma_wait<1>();
      if (prev_slot >= 0) {
        __syncwarp();
        if (warp_leader) mbar_arrive(&empty[prev_slot]);
      }
      prev_slot = pos.slot;
      pos.advance();
    }
    wgmma_wait<0>();
#pragma unroll
    for (int mb = 0; mb < kMB; ++mb) reg_fence(acc[mb]);
    __syncwarp();
    if (warp_leader) mbar_arrive(&empty[prev_slot]);
  }
  if (p.C_last) store_acc(nullptr, p.C_last + static_cast<long long>(bh) * DQK * DV);
  if (own_n && p.n_last) store_n(p.n_last + static_cast<long long>(bh) * DQK);
  if (lead && cw == 0 && lt == 0) {
    p.chunk_m[static_cast<long long>(bh) * (NC + 1) + NC] = m_prev;
    if (p.m_last) p.m_last[bh] = m_prev;
  }
}

}  // namespace tfla
