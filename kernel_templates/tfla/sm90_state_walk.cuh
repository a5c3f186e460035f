// The machinery of a chunk-state walk on the sm_90a engine, shared by the forward's state kernel
// (mlstm_fwd_states_sm90.cuh: C += (K * w)^T V, chunks in order), the backward's dC kernel
// (mlstm_bwd_dstates_sm90.cuh: dC += (Q * w)^T dH, chunks in reverse) and, in the transposed
// form further below, the fused forward split's summary walk (mlstm_fwd_summary_sm90.cuh). The
// first two accumulate
//   X (Dqk x BV, fp32) += (A * w)^T B
// over 64-row sub-blocks of A (64 x Dqk) and B (64 x BV), 384 threads:
//  - warpgroup 0 (producer, 40 registers): one thread loads each sub-block's A and B by TMA into
//    the next ring slot (128B-swizzled panels of 64 columns);
//  - warpgroups 1 and 2 (consumers, 232 registers) own Dqk / 2 rows of X each (Dqk / 128 m64
//    blocks x BV columns of accumulators). Per sub-block the row weights w_t scale, in shared
//    memory and in place, either each warpgroup's own columns of A (then a barrier of its 128
//    threads; summed in fp32 as they are scaled where the caller wants the column sums of A * w,
//    SUMS) or, with SCALE_B, B's rows (the 256 consumer threads together, then a barrier of the
//    256: (A * w)^T B = A^T (w * B), and B's 64 x BV is a quarter to a half of A's 64 x Dqk).
//    SCALE_B holds only without SUMS and where the accumulators take fewer than 128 registers
//    (at Dqk 256, BV 128 ptxas spilled with it). The backward's dC walk sets SCALE_B; the
//    forward's walk, whose Dv-tile-0 CTA sums n, scales A. The writes are
//    made visible to the async proxy, and each warpgroup issues its rows of X += (A * w)^T B as
//    wgmma with both operands MN-major from shared memory. One wgmma group stays in flight while
//    the next sub-block is scaled.
//  - With A_REGS, A * w never goes back to shared memory: each consumer warp loads its rows of
//    (A * w)^T as wgmma register fragments (ldmatrix.trans from the swizzled panels), scales them
//    in registers (packed bf16 products, fp32 products for fp16) and issues the register-A
//    wgmma; no write-back, proxy fence or barrier. Per kRsGroup k16 steps of the sub-block one
//    commit group (each step the Dqk / 128 m64 blocks: at Dqk 256 one step a group, at Dqk 128 the
//    whole sub-block); the group before has completed (wgmma_wait<0>) when the fragments are
//    loaded: ptxas serializes every wgmma (C7513) where a register operand is defined while a
//    group is in flight, and the other consumer warpgroup's wgmma keeps the tensor pipe busy
//    meanwhile. step() is the whole sub-block; there is no prepare / issue split. The dC walk
//    uses it; the forward's walk, which sums n, scales A in shared memory (PERF_NOTES v23 has
//    both measured).
// The kernel bodies say which rows each step reads, what w is, and what happens at chunk
// boundaries (where no wgmma is in flight: drain() first).
#pragma once
#include "tfla/mlstm_sm90_params.cuh"
#include "tfla/sm90.cuh"
#include "tfla/sm90_wgmma.cuh"

namespace tfla {

template <class T, int DQK, int DV, int BV, int STAGES, bool SCALE_B = false, bool A_REGS = false>
struct StateWalkSm90 {
  using u64 = sm90::u64;
  static constexpr int kSub = StateWalkSm90Shape::kSub;
  static constexpr int kMB = DQK / 128;           // m64 blocks of X per consumer warpgroup
  static constexpr int kPanelBytes = kSub * 128;  // 64 rows of 64 16-bit columns
  static constexpr int kABytes = DQK / 64 * kPanelBytes;
  static constexpr int kBBytes = BV / 64 * kPanelBytes;
  static constexpr int kSlotBytes = state_walk_sm90_slot_bytes(DQK, BV);
  static constexpr int kAcc = BV / 2;             // floats per thread per m64 block
  // Scaling A (SUMS): a warpgroup's A columns are kCpr 16-byte chunks per row; its 128 threads
  // take a chunk position each in kRg row groups (rows r0, r0 + kRg, ...: kRows weights).
  static constexpr int kCpr = 8 * kMB, kRg = 128 / kCpr, kRows = kSub / kRg;
  // Scaling B: consumer thread u (0 .. 255) takes the 16-byte chunk u % 8 of B's rows
  // w_row(j) = u / 8 + 32 j (j < kWRows) in each of its BV / 64 panels.
  static constexpr int kWRows = kSub / 32;
  static constexpr bool kScaleB = SCALE_B && !A_REGS && kMB * kAcc < 128;
  // A_REGS: lane l gives the weights of rows (tokens) 2 l and 2 l + 1 of the sub-block; the
  // fragments' tokens (pairs 8 j + 2 cq, j < 8) take them by shuffles from lanes 4 j + cq.
  static constexpr int kRegRows = 2;
  static constexpr int kParts = 8;
  // The rows this thread scales (scales_a: A, else B) and their weights' count.
  __device__ static constexpr bool scales_a(bool sums) { return sums || !kScaleB; }
  __device__ static constexpr int scaled_rows(bool sums) { return A_REGS ? kRegRows : scales_a(sums) ? kRows : kWRows; }
  __device__ static int scaled_row(bool sums, int i) {
    if constexpr (A_REGS) return 2 * lane() + i;
    return scales_a(sums) ? r0() + kRg * i : w_row(i);
  }
  static_assert(DQK % 128 == 0 && DQK <= 256 && BV % 64 == 0 && BV <= 128 && DV % BV == 0,
                "Dqk 128 or 256, BV 64 or 128 dividing Dv");
  static_assert(kRg % 8 == 0, "a thread's rows share their swizzle phase");
  static_assert(Elem<T>::is16, "16-bit inputs");
  static_assert(kABytes % 1024 == 0 && kSlotBytes % 1024 == 0, "swizzle atoms stay aligned");
  static_assert(1024 + STAGES * kSlotBytes + (2 * 1024 + 8) * 4 + 2 * STAGES * 8 ==
                    state_walk_sm90_smem_bytes(DQK, BV, STAGES),
                "the layout below must match state_walk_sm90_smem_bytes, which the host sizes the launch with");

  // Only the ring's address and the ring position live in the object (its users hold a
  // 128-register accumulator); everything else is recomputed from threadIdx and constants.
  char* ring;
  sm90::RingPos<STAGES> pos;
  int prev_slot = -1;
  // A_REGS: k16 steps per commit group and their (A * w)^T fragments. Dqk 128 (kMB = 1): 4, one
  // wait and one group per sub-block, its 16 fragment registers held at once; Dqk 256: 1, a wait
  // before each step's fragments (four steps' 64 registers beside the accumulator would spill).
  static constexpr int kRsGroup = DQK <= 128 ? 4 : 1;
  static_assert(4 % kRsGroup == 0, "whole groups of k16 steps per sub-block");
  u32 afrag[A_REGS ? kRsGroup : 1][A_REGS ? kMB : 1][4];

  __device__ float* sRed() const { return reinterpret_cast<float*>(ring + STAGES * kSlotBytes); }
  __device__ u64* full() const { return reinterpret_cast<u64*>(sRed() + 2 * 1024 + 8); }
  __device__ u64* empty() const { return full() + STAGES; }
  // consumer thread: warpgroup (0, 1), thread in it, lane, warp, row group in the fragment
  // layout (g) and quad lane (cq)
  __device__ static int cw() { return static_cast<int>(threadIdx.x) / 128 - 1; }
  __device__ static int lt() { return static_cast<int>(threadIdx.x) % 128; }
  __device__ static int lane() { return static_cast<int>(threadIdx.x) % 32; }
  __device__ static int warp() { return lt() / 32; }
  __device__ static int g() { return lane() / 4; }
  __device__ static int cq() { return lane() % 4; }
  // the scaling pass: chunk position, first row, A panel, first column of the logical chunk
  __device__ static int pc() { return lt() % kCpr; }
  __device__ static int r0() { return lt() / kCpr; }
  __device__ static int my_panel() { return cw() * kMB + pc() / 8; }
  __device__ static int my_col() { return 64 * my_panel() + 8 * ((pc() % 8) ^ (r0() & 7)); }
  __device__ static int row_base() { return cw() * 64 * kMB; }  // first Dqk row of X held
  __device__ static int cu() { return static_cast<int>(threadIdx.x) - 128; }
  __device__ static int w_row(int j) { return cu() / 8 + 32 * j; }

  // Carves shared memory and initializes the barriers (all threads; contains __syncthreads).
  __device__ StateWalkSm90(char* smem_raw, const TmaDesc* a, const TmaDesc* b) {
    using namespace sm90;
    ring = align_smem<1024>(smem_raw);
    if (threadIdx.x == 0) {
      for (int s = 0; s < STAGES; ++s) {
        mbar_init(&full()[s], 1);
        mbar_init(&empty()[s], 4 * StateWalkSm90Shape::kConsumers);
      }
      fence_mbarrier_init();
      tma_prefetch_desc(a);
      tma_prefetch_desc(b);
    }
    __syncthreads();
  }

  // The producer thread: sub-blocks it = 0 .. total - 1 start at row row_of(it) of head (h, b);
  // B's columns start at v0.
  template <class RowOf>
  __device__ void produce(const TmaDesc* a, const TmaDesc* b, int total, int v0, int h, int bb, RowOf row_of) {
    using namespace sm90;
    RingPos<STAGES> ppos;
    for (int it = 0; it < total; ++it) {
      const int row0 = row_of(it);
      mbar_wait(&empty()[ppos.slot], ppos.phase ^ 1u);
      char* slot = ring + ppos.slot * kSlotBytes;
      mbar_arrive_expect_tx(&full()[ppos.slot], kABytes + kBBytes);
#pragma unroll
      for (int kp = 0; kp < DQK / 64; ++kp) tma_load_4d(slot + kp * kPanelBytes, a, &full()[ppos.slot], 64 * kp, row0, h, bb);
#pragma unroll
      for (int vp = 0; vp < BV / 64; ++vp)
        tma_load_4d(slot + kABytes + vp * kPanelBytes, b, &full()[ppos.slot], v0 + 64 * vp, row0, h, bb);
      ppos.advance();
    }
  }

  // Splits the CTA into its roles: the producer warpgroup lowers its registers, its first thread
  // loads every sub-block (see produce) and all of it gets false; the consumer warpgroups raise
  // theirs and get true.
  template <class RowOf>
  __device__ bool consumer(const TmaDesc* a, const TmaDesc* b, int total, int v0, int h, int bb, RowOf row_of) {
    if (threadIdx.x < 128) {
      sm90::setmaxnreg_dec<40>();
      if (threadIdx.x == 0) produce(a, b, total, v0, h, bb, row_of);
      return false;
    }
    sm90::setmaxnreg_inc<232>();
    return true;
  }
  __device__ static void zero(float (&acc)[kMB][kAcc]) {
#pragma unroll
    for (int mb = 0; mb < kMB; ++mb)
#pragma unroll
      for (int i = 0; i < kAcc; ++i) acc[mb][i] = 0.f;
  }

  // Accumulator element (mb, i) of this thread: row (Dqk) and column (within the BV tile).
  __device__ int acc_row(int mb, int i) const { return row_base() + 64 * mb + 16 * warp() + g() + 8 * ((i / 2) % 2); }
  __device__ int acc_col(int i) const { return 8 * (i / 4) + 2 * cq() + i % 2; }

  // X <- src (fp32, row stride DV, columns from v0).
  __device__ void load_acc(float (&acc)[kMB][kAcc], const float* src, int v0) const {
#pragma unroll
    for (int mb = 0; mb < kMB; ++mb)
#pragma unroll
      for (int i = 0; i < kAcc; i += 2) {
        const float2 c = *reinterpret_cast<const float2*>(src + static_cast<long long>(acc_row(mb, i)) * DV + v0 + acc_col(i));
        acc[mb][i] = c.x;
        acc[mb][i + 1] = c.y;
      }
  }
  // X -> d16 (T: 16 bytes per lane, the quad's 64 contiguous bytes per row through
  // quad_transpose) or d32 (fp32 column pairs), whichever is given (row stride DV, columns from v0).
  __device__ void store_acc(const float (&acc)[kMB][kAcc], T* d16, float* d32, int v0) const {
#pragma unroll
    for (int mb = 0; mb < kMB; ++mb)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const long long o = static_cast<long long>(row_base() + 64 * mb + 16 * warp() + g() + 8 * hh) * DV + v0;
        if (d16) {
#pragma unroll
          for (int j0 = 0; j0 < kAcc / 4; j0 += 4) {
            u32 pr[4];
#pragma unroll
            for (int k = 0; k < 4; ++k)
              pr[k] = Elem<T>::pack2(acc[mb][4 * (j0 + k) + 2 * hh], acc[mb][4 * (j0 + k) + 2 * hh + 1]);
            // an explicit 16-byte store: NVVM turns a uint4 assignment through this pointer into
            // four 4-byte stores (four times the store instructions and partial L2 sector writes)
            __stwb(reinterpret_cast<uint4*>(d16 + o + 8 * (j0 + cq())), sm90::quad_transpose(pr[0], pr[1], pr[2], pr[3], cq()));
          }
        } else {
#pragma unroll
          for (int j = 0; j < kAcc / 4; ++j)
            *reinterpret_cast<float2*>(d32 + o + 2 * cq() + 8 * j) =
                make_float2(acc[mb][4 * j + 2 * hh], acc[mb][4 * j + 2 * hh + 1]);
        }
      }
  }
  // x (one value per thread) summed over both consumer warpgroups, in thread 128 (consumer
  // warpgroup 0's first). Contains a barrier of the 256 consumer threads: all of them call it.
  __device__ float cta_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 16);
    x += __shfl_xor_sync(0xffffffffu, x, 8);
    x += __shfl_xor_sync(0xffffffffu, x, 4);
    x += __shfl_xor_sync(0xffffffffu, x, 2);
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    float* red = sRed() + 2 * 1024;
    if (lane() == 0) red[4 * cw() + warp()] = x;
    sm90::named_bar_sync(3, 256);
    float s = 0.f;
    if (cw() == 0 && lt() == 0)
      for (int w = 0; w < 8; ++w) s += red[w];
    sm90::named_bar_sync(3, 256);
    return s;
  }
  // The column sums of the scaled A -> dst[row_base .. row_base + Dqk / 2): the partials of this
  // thread's 8 columns summed over the row groups (contains the warpgroup's barrier).
  __device__ void colsum_store(const float (&part)[kParts], float* dst) {
    static_assert(!A_REGS, "the register-fragment walk keeps no sums");
    float* mine = sRed() + cw() * 1024;
#pragma unroll
    for (int e = 0; e < 8; ++e) mine[r0() * kCpr * 8 + (my_col() - row_base()) + e] = part[e];
    sm90::named_bar_sync(1 + cw(), 128);
    if (lt() < kCpr * 8) {
      float n = 0.f;
#pragma unroll
      for (int r = 0; r < kRg; ++r) n += mine[r * kCpr * 8 + lt()];
      dst[row_base() + lt()] = n;
    }
    sm90::named_bar_sync(1 + cw(), 128);
  }

  // One sub-block: wait for its slot, scale it by w (scales_a(SUMS): this warpgroup's A columns,
  // rows r0 + kRg i, adding the scaled values to part when SUMS; else B's rows w_row(j)), then
  // issue X += (A * w)^T B.
  // The previous sub-block's group completes here and its slot is freed.
  // The weights w: scaled_rows(SUMS) floats, for the rows scaled_row(SUMS, i).
  template <bool SUMS, int N>
  __device__ void step(float (&acc)[kMB][kAcc], const float (&w)[N], float (&part)[kParts]) {
    if constexpr (A_REGS) {
      step_regs<SUMS>(acc, w, part);
    } else {
      prepare<SUMS>(w, part);
      issue<scales_a(SUMS)>(acc);
    }
  }
  // step's first half: wait for the next sub-block and scale it. It touches no accumulator, so it
  // may run while the previous group is still in flight, before a drain.
  template <bool SUMS, int N>
  __device__ void prepare(const float (&w)[N], float (&part)[kParts]) {
    using namespace sm90;
    static_assert(!A_REGS, "the register-fragment walk has only step()");
    static_assert(N >= scaled_rows(SUMS), "a weight per scaled row of this thread");
    mbar_wait(&full()[pos.slot], pos.phase);
    char* slot = ring + pos.slot * kSlotBytes;
    if constexpr (scales_a(SUMS)) {
      char* chunk = slot + my_panel() * kPanelBytes + (pc() % 8) * 16;
#pragma unroll
      for (int i = 0; i < kRows; ++i) scale_chunk<SUMS>(reinterpret_cast<uint4*>(chunk + (r0() + kRg * i) * 128), w[i], part);
    } else {
      char* chunk = slot + kABytes + (cu() % 8) * 16;
#pragma unroll
      for (int vp = 0; vp < BV / 64; ++vp)
#pragma unroll
        for (int j = 0; j < kWRows; ++j)
          scale_chunk<false>(reinterpret_cast<uint4*>(chunk + vp * kPanelBytes + w_row(j) * 128), w[j], part);
    }
    fence_proxy_async();
  }
  // step's second half: X += (A * w)^T B for the prepared sub-block, once the rows it reads are
  // scaled (SCALED_A = scales_a(SUMS): this warpgroup's A columns; else all of B, by both
  // warpgroups). The previous group completes here and its slot is freed.
  template <bool SCALED_A = !kScaleB>
  __device__ void issue(float (&acc)[kMB][kAcc]) {
    using namespace sm90;
    // the caller's writes of X (a decay) stay before the pipeline stage opened below
#pragma unroll
    for (int mb = 0; mb < kMB; ++mb) reg_fence(acc[mb]);
    static_assert(!A_REGS, "the register-fragment walk has only step()");
    if constexpr (SCALED_A) named_bar_sync(1 + cw(), 128);
    else named_bar_sync(4, 256);
    char* slot = ring + pos.slot * kSlotBytes;
    const u32 abase = smem_u32(slot), bbase = smem_u32(slot + kABytes);
    // the warpgroup through a shuffle: warp-uniform to the compiler, so the descriptors are built
    // in uniform registers
    const int cwu = __shfl_sync(0xffffffffu, cw(), 0);
    wgmma_fence();
#pragma unroll
    for (int mb = 0; mb < kMB; ++mb) {
      const u64 da = wgmma_desc_mnmajor(abase + (cwu * kMB + mb) * kPanelBytes, 128, kPanelBytes);
      const u64 db = wgmma_desc_mnmajor(bbase, 128, kPanelBytes);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        Wgmma<BV>::template ss<T, 1, 1>(acc[mb], da + desc_step(16 * 128 * kk), db + desc_step(16 * 128 * kk), 1);
    }
    wgmma_commit();
    wgmma_wait<1>();
    release_prev();
    prev_slot = pos.slot;
    pos.advance();
  }
  // The transposed form (the split's summary walk, mlstm_fwd_summary_sm90.cuh, BV = 128):
  // X^T (BV x Dqk) += (w * B)^T A. Consumer warpgroup cw owns B's panel cw (64 columns of BV) as
  // the wgmma's rows and all of Dqk as its columns (m64 nDQK, kAccT floats per thread). Per
  // sub-block each warpgroup scales only its own panel of B (64 columns, against Dqk / 2 of A in
  // the (A * w)^T B form), and each wgmma reads a 64-row slice of B and all of A: fewer
  // shared-memory bytes than that form, whose m64 blocks (two at Dqk 256) read all of B each.
  static constexpr int kAccT = DQK / 2;
  // The B rows this thread scales, kTRows of them, chunk lt % 8 of each, are among the rows whose
  // column sums of A it keeps (r0 + kRg i, kRows of them; see colsum_store): i = kTSpread j + t_b().
  static constexpr int kTRows = kSub / 16, kTSpread = kRows / kTRows;
  static_assert(kTRows * kTSpread == kRows, "the scaled rows are a subset of the summed rows");
  __device__ static int t_b() { return (lt() / 8) % kTSpread; }
  __device__ static int t_row(int j) { return r0() + kRg * (kTSpread * j + t_b()); }

  // Accumulator element i of this thread in X^T: row (a column of the BV tile) and column (Dqk).
  __device__ static int acc_t_v(int i) { return 64 * cw() + 16 * warp() + g() + 8 * ((i / 2) % 2); }
  __device__ static int acc_t_k(int i) { return 8 * (i / 4) + 2 * cq() + i % 2; }
  // X^T <- src (fp32 X, row stride DV, columns from v0).
  __device__ static void load_acc_t(float (&acc)[kAccT], const float* src, int v0) {
#pragma unroll
    for (int i = 0; i < kAccT; ++i) acc[i] = src[static_cast<long long>(acc_t_k(i)) * DV + v0 + acc_t_v(i)];
  }
  // X^T -> dst (fp32 X, row stride DV, columns from v0): for each register the warp's lanes write
  // 4 whole 32-byte sectors (4 rows of X, 8 consecutive columns each: g runs along the columns).
  __device__ static void store_acc_t(const float (&acc)[kAccT], float* dst, int v0) {
#pragma unroll
    for (int i = 0; i < kAccT; ++i) dst[static_cast<long long>(acc_t_k(i)) * DV + v0 + acc_t_v(i)] = acc[i];
  }

  // The transposed step's first half: wait for the next sub-block; with SUMS add this thread's
  // part of the column sums of A * w (A as loaded, fp32 products; rows r0 + kRg i, the layout
  // colsum_store reduces); scale this warpgroup's panel of B in place. The weight of row r0 + kRg i
  // is exp(bias + u[i]).
  template <bool SUMS>
  __device__ void prepare_t(float bias, const float (&u)[kRows], float (&part)[kParts]) {
    using namespace sm90;
    static_assert(BV == 128 && !A_REGS, "one 64-column panel of B per consumer warpgroup");
    mbar_wait(&full()[pos.slot], pos.phase);
    char* slot = ring + pos.slot * kSlotBytes;
    if constexpr (SUMS) {
      const char* chunk = slot + my_panel() * kPanelBytes + (pc() % 8) * 16;
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const float w = __expf(bias + u[i]);
        const uint4 x = *reinterpret_cast<const uint4*>(chunk + (r0() + kRg * i) * 128);
        const u32 wd[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 f = Elem<T>::unpack2(wd[e]);
          part[2 * e] = fmaf(f.x, w, part[2 * e]);
          part[2 * e + 1] = fmaf(f.y, w, part[2 * e + 1]);
        }
      }
    }
    asm volatile("" ::: "memory");  // the sums' registers are free before the scaling's loads
    // every chunk of a row takes the row's weight, so the swizzle does not matter here
    char* bchunk = slot + kABytes + cw() * kPanelBytes + (lt() % 8) * 16;
    const int b = t_b();
#pragma unroll
    for (int j = 0; j < kTRows; ++j) {
      float uj = u[kTSpread * j];
#pragma unroll
      for (int s = 1; s < kTSpread; ++s) uj = b == s ? u[kTSpread * j + s] : uj;
      scale_chunk<false>(reinterpret_cast<uint4*>(bchunk + t_row(j) * 128), __expf(bias + uj), part);
    }
    fence_proxy_async();
  }
  // The transposed step's second half: once the warpgroup's panel is scaled, X^T += (w B)^T A for
  // the sub-block (both operands MN-major: B's panel as the 64 rows, A's Dqk / 64 panels as the
  // columns). The previous group completes here and its slot is freed.
  __device__ void issue_t(float (&acc)[kAccT]) {
    using namespace sm90;
    reg_fence(acc);  // the caller's writes of X^T (a decay) stay before the stage opened below
    named_bar_sync(1 + cw(), 128);
    char* slot = ring + pos.slot * kSlotBytes;
    const int cwu = __shfl_sync(0xffffffffu, cw(), 0);
    const u64 db = wgmma_desc_mnmajor(smem_u32(slot + kABytes) + cwu * kPanelBytes, 128, kPanelBytes);
    const u64 da = wgmma_desc_mnmajor(smem_u32(slot), 128, kPanelBytes);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      Wgmma<DQK>::template ss<T, 1, 1>(acc, db + desc_step(16 * 128 * kk), da + desc_step(16 * 128 * kk), 1);
    wgmma_commit();
    wgmma_wait<1>();
    release_prev();
    prev_slot = pos.slot;
    pos.advance();
  }
  __device__ void drain_t(float (&acc)[kAccT]) {
    sm90::wgmma_wait<0>();
    sm90::reg_fence(acc);
    release_prev();
    prev_slot = -1;
  }

  // Completes the group in flight and frees its slot: the accumulators may be read and written.
  __device__ void drain(float (&acc)[kMB][kAcc]) {
    sm90::wgmma_wait<0>();
#pragma unroll
    for (int mb = 0; mb < kMB; ++mb) sm90::reg_fence(acc[mb]);
    release_prev();
    prev_slot = -1;
  }

 private:
  // A_REGS: one sub-block as four k16 steps. Step kk's fragments (set kk % kRsGroup), for each m64 block
  // mb, are ldmatrix.trans matrices i = 0..3: tokens 16 kk + 8 (i / 2) .., Dqk columns 16 warp +
  // 8 (i % 2) .. of the warpgroup's block (panel cw kMB + mb); lanes 8 i .. 8 i + 7 give matrix
  // i's row addresses. Register i then holds tokens 8 j + 2 cq + {0, 1}, j = 2 kk + i / 2, whose
  // weights lane 4 j + cq gave. Before they are loaded the step before completes; at kk = 0 that
  // is the previous sub-block's last, whose slot is then freed.
  template <bool SUMS, int N>
  __device__ void step_regs(float (&acc)[kMB][kAcc], const float (&w)[N], float (&part)[kParts]) {
    using namespace sm90;
    static_assert(!SUMS, "the register-fragment walk keeps no sums");
    constexpr bool kPacked = WgmmaIsBf16<T>::value;  // else fp32 products
    static_assert(N >= kRegRows, "a weight per scaled row of this thread");
    const float wa = w[0], wb = w[1];
    const u32 wp = kPacked ? Elem<T>::pack2(wa, wb) : 0u;
    const int i4 = lane() / 8, rr = lane() % 8;
    const int chunk16 = 2 * warp() + (i4 % 2);
#pragma unroll
    for (int mb = 0; mb < kMB; ++mb) reg_fence(acc[mb]);  // the caller's decay stays before
    mbar_wait(&full()[pos.slot], pos.phase);
    const char* slot = ring + pos.slot * kSlotBytes;
    const u64 db = wgmma_desc_mnmajor(smem_u32(slot + kABytes), 128, kPanelBytes);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      float w0[2], w1[2];
      u32 w01[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int src = 4 * (2 * kk + h) + cq();
        if constexpr (kPacked) {
          w01[h] = __shfl_sync(0xffffffffu, wp, src);
        } else {
          w0[h] = __shfl_sync(0xffffffffu, wa, src);
          w1[h] = __shfl_sync(0xffffffffu, wb, src);
        }
      }
      if (kk % kRsGroup == 0) {
        wgmma_wait<0>();
        if (kk == 0) {
          release_prev();
          prev_slot = -1;
        }
      }
      u32 (&a)[kMB][4] = afrag[kk % kRsGroup];
      const int t = 16 * kk + 8 * (i4 / 2) + rr;
#pragma unroll
      for (int mb = 0; mb < kMB; ++mb) {
        ldmatrix_x4_trans(a[mb], slot + (cw() * kMB + mb) * kPanelBytes + t * 128 + ((chunk16 ^ rr) << 4));
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          if constexpr (kPacked) {
            a[mb][i] = Elem<T>::mul2(a[mb][i], w01[i / 2]);
          } else {
            float2 f = Elem<T>::unpack2(a[mb][i]);
            f.x *= w0[i / 2];
            f.y *= w1[i / 2];
            a[mb][i] = Elem<T>::pack2(f.x, f.y);
          }
        }
      }
      if (kk % kRsGroup != kRsGroup - 1) continue;
      // the fragments' scaling stays before the stage (a definition inside it serializes the wgmma)
#pragma unroll
      for (int j = 0; j < kRsGroup; ++j)
#pragma unroll
        for (int mb = 0; mb < kMB; ++mb) reg_fence(afrag[j][mb]);
      wgmma_fence();
#pragma unroll
      for (int j = 0; j < kRsGroup; ++j) {
        const int k = kk - kRsGroup + 1 + j;
#pragma unroll
        for (int mb = 0; mb < kMB; ++mb) Wgmma<BV>::template rs<T, 1>(acc[mb], afrag[j][mb], db + desc_step(16 * 128 * k), 1);
      }
      wgmma_commit();
    }
    prev_slot = pos.slot;
    pos.advance();
  }
  // 16 bytes of a row times its weight w, in place; SUMS adds the fp32 products to part.
  template <bool SUMS>
  __device__ static void scale_chunk(uint4* q, float w, float (&part)[kParts]) {
    const uint4 x = *q;
    u32 wd[4] = {x.x, x.y, x.z, x.w};
    if constexpr (SUMS || !sm90::WgmmaIsBf16<T>::value) {  // fp32 products (in fp16 w alone may pass 65504)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float2 f = Elem<T>::unpack2(wd[e]);
        f.x *= w;
        f.y *= w;
        if (SUMS) {
          part[2 * e] += f.x;
          part[2 * e + 1] += f.y;
        }
        wd[e] = Elem<T>::pack2(f.x, f.y);
      }
    } else {  // bf16: packed products (w rounded to bf16 once per row)
      const u32 ww = Elem<T>::pack2(w, w);
#pragma unroll
      for (int e = 0; e < 4; ++e) wd[e] = Elem<T>::mul2(wd[e], ww);
    }
    *q = make_uint4(wd[0], wd[1], wd[2], wd[3]);
  }
  __device__ void release_prev() {
    if (prev_slot < 0) return;
    __syncwarp();
    if (lane() == 0) sm90::mbar_arrive(&empty()[prev_slot]);
  }
};

}  // namespace tfla
