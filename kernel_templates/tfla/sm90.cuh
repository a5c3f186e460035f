// sm_90a device primitives as raw inline PTX: TMA tensor copies (cp.async.bulk.tensor) and 1D
// bulk copies completing on mbarriers, mbarrier rings, async-proxy fences, wgmma fences and
// groups, register reallocation (setmaxnreg), elect.sync, named barriers, stmatrix.
// The wgmma instructions themselves are in sm90_wgmma.cuh; tile layouts and the descriptor
// encoder in sm90_layout.cuh.
//
// Everything here needs the architecture-specific sm_90a target: bodies are compiled only under
// __CUDA_ARCH_FEAT_SM90_ALL (defined by NVRTC for --gpu-architecture=sm_90a alone) and
// __trap() elsewhere, so a kernel built from these primitives compiles for any arch but runs
// only on sm_90a.
//
// Conventions: shared-memory operands are pointers into shared memory (converted with
// smem_u32); TMA descriptors are TmaDesc fields of a `const __grid_constant__` parameter block,
// addressed generically. Coordinates are element indices, innermost dimension first, and may
// be negative or past the end: TMA zero-fills what lies outside the tensor on loads (and counts
// those bytes towards the transaction), and skips it on stores.
//
// Debug: define TFLA_MBAR_SPIN_LIMIT (e.g. -DTFLA_MBAR_SPIN_LIMIT=100000000) to make a wait that
// spins that many times __trap(), so a phase bug fails instead of hanging.
#pragma once
#include "tfla/common.cuh"
#include "tfla/sm90_layout.cuh"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define TFLA_SM90(body) body
#else
#define TFLA_SM90(body) __trap();
#endif

namespace tfla::sm90 {

typedef unsigned long long u64;

__device__ __forceinline__ u64 desc_ptr(const TmaDesc* d) { return reinterpret_cast<u64>(d); }

// ---- mbarrier ------------------------------------------------------------------------------
// Initializes a barrier that completes a phase after `count` arrivals (plus any expected
// transaction bytes). One thread initializes; fence_mbarrier_init() and a CTA barrier follow.
__device__ __forceinline__ void mbar_init(u64* bar, u32 count) {
  TFLA_SM90(asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count)
                         : "memory");)
}
// Makes initialized barriers visible to the async proxy (TMA) and the rest of the cluster.
__device__ __forceinline__ void fence_mbarrier_init() {
  TFLA_SM90(asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");)
}
// One arrival (release semantics at CTA scope).
__device__ __forceinline__ void mbar_arrive(u64* bar) {
  TFLA_SM90(asm volatile("{\n .reg .b64 st;\n mbarrier.arrive.shared::cta.b64 st, [%0];\n}" ::"r"(
                             smem_u32(bar))
                         : "memory");)
}
// One arrival that also expects `bytes` more transaction bytes in the current phase.
__device__ __forceinline__ void mbar_arrive_expect_tx(u64* bar, u32 bytes) {
  TFLA_SM90(
      asm volatile(
          "{\n .reg .b64 st;\n mbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}" ::"r"(
              smem_u32(bar)),
          "r"(bytes)
          : "memory");)
}
// True once the phase with parity `parity` has completed (acquire semantics). The phase before
// the first (parity 1 on a fresh barrier) counts as completed.
__device__ __forceinline__ bool mbar_try_wait(u64* bar, u32 parity) {
  u32 done = 0;
  TFLA_SM90(
      asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                   " selp.b32 %0, 1, 0, p;\n}"
                   : "=r"(done)
                   : "r"(smem_u32(bar)), "r"(parity)
                   : "memory");)
  return done != 0;
}
// Waits until the phase with parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(u64* bar, u32 parity) {
#if defined(TFLA_MBAR_SPIN_LIMIT)
  for (long long spins = 0; !mbar_try_wait(bar, parity); ++spins)
    if (spins >= (long long)(TFLA_MBAR_SPIN_LIMIT)) __trap();
#else
  while (!mbar_try_wait(bar, parity)) {
  }
#endif
}

// A position in a ring of `Depth` slots: the slot index and the parity of its current phase.
// Producer and consumer each keep one and advance it once per slot use.
template <int Depth> struct RingPos {
  int slot = 0;
  u32 phase = 0;
  __device__ __forceinline__ void advance() {
    if (++slot == Depth) {
      slot = 0;
      phase ^= 1u;
    }
  }
};

// ---- fences ---------------------------------------------------------------------------------
// Orders this thread's generic-proxy shared-memory writes before later async-proxy accesses
// (TMA stores, wgmma operand reads); put it before the barrier that hands the data over.
__device__ __forceinline__ void fence_proxy_async() {
  TFLA_SM90(asm volatile("fence.proxy.async.shared::cta;" ::: "memory");)
}

// ---- TMA: tensor copies global <-> shared ----------------------------------------------------
// Loads one box at the given coordinates into dst (aligned to 128 bytes, 1024 for a 128B
// swizzle); the bytes complete on bar (expect them with mbar_arrive_expect_tx).
__device__ __forceinline__ void tma_load_2d(void* dst, const TmaDesc* d, u64* bar, int c0, int c1) {
  TFLA_SM90(
      asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
                   " [%0], [%1, {%3, %4}], [%2];" ::"r"(smem_u32(dst)),
                   "l"(desc_ptr(d)), "r"(smem_u32(bar)), "r"(c0), "r"(c1)
                   : "memory");)
}
__device__ __forceinline__ void tma_load_3d(void* dst, const TmaDesc* d, u64* bar, int c0, int c1,
                                            int c2) {
  TFLA_SM90(
      asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
                   " [%0], [%1, {%3, %4, %5}], [%2];" ::"r"(smem_u32(dst)),
                   "l"(desc_ptr(d)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2)
                   : "memory");)
}
__device__ __forceinline__ void tma_load_4d(void* dst, const TmaDesc* d, u64* bar, int c0, int c1,
                                            int c2, int c3) {
  TFLA_SM90(
      asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes"
                   " [%0], [%1, {%3, %4, %5, %6}], [%2];" ::"r"(smem_u32(dst)),
                   "l"(desc_ptr(d)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
                   : "memory");)
}
__device__ __forceinline__ void tma_load_5d(void* dst, const TmaDesc* d, u64* bar, int c0, int c1,
                                            int c2, int c3, int c4) {
  TFLA_SM90(
      asm volatile("cp.async.bulk.tensor.5d.shared::cluster.global.mbarrier::complete_tx::bytes"
                   " [%0], [%1, {%3, %4, %5, %6, %7}], [%2];" ::"r"(smem_u32(dst)),
                   "l"(desc_ptr(d)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4)
                   : "memory");)
}
// Stores one box from src to the tensor (elements outside it are skipped). Completion is
// tracked by bulk groups: tma_store_commit(), then tma_store_wait_read<N>() before reusing src,
// tma_store_wait<N>() before the writes must be visible (e.g. kernel exit is enough).
__device__ __forceinline__ void tma_store_2d(const TmaDesc* d, const void* src, int c0, int c1) {
  TFLA_SM90(asm volatile(
                "cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%2, %3}], [%1];" ::"l"(
                    desc_ptr(d)),
                "r"(smem_u32(src)), "r"(c0), "r"(c1)
                : "memory");)
}
__device__ __forceinline__ void tma_store_3d(const TmaDesc* d, const void* src, int c0, int c1,
                                             int c2) {
  TFLA_SM90(
      asm volatile(
          "cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [%0, {%2, %3, %4}], [%1];" ::"l"(
              desc_ptr(d)),
          "r"(smem_u32(src)), "r"(c0), "r"(c1), "r"(c2)
          : "memory");)
}
__device__ __forceinline__ void tma_store_4d(const TmaDesc* d, const void* src, int c0, int c1,
                                             int c2, int c3) {
  TFLA_SM90(
      asm volatile(
          "cp.async.bulk.tensor.4d.global.shared::cta.bulk_group [%0, {%2, %3, %4, %5}], [%1];" ::
              "l"(desc_ptr(d)),
          "r"(smem_u32(src)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
          : "memory");)
}
__device__ __forceinline__ void tma_store_5d(const TmaDesc* d, const void* src, int c0, int c1,
                                             int c2, int c3, int c4) {
  TFLA_SM90(asm volatile("cp.async.bulk.tensor.5d.global.shared::cta.bulk_group [%0, {%2, %3, %4, "
                         "%5, %6}], [%1];" ::"l"(desc_ptr(d)),
                         "r"(smem_u32(src)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4)
                         : "memory");)
}
// Rank-generic forms: c holds Rank coordinates.
template <int Rank>
__device__ __forceinline__ void tma_load(void* dst, const TmaDesc* d, u64* bar,
                                         const int (&c)[Rank]) {
  static_assert(Rank >= 2 && Rank <= 5, "TMA rank 2..5");
  if constexpr (Rank == 2) tma_load_2d(dst, d, bar, c[0], c[1]);
  if constexpr (Rank == 3) tma_load_3d(dst, d, bar, c[0], c[1], c[2]);
  if constexpr (Rank == 4) tma_load_4d(dst, d, bar, c[0], c[1], c[2], c[3]);
  if constexpr (Rank == 5) tma_load_5d(dst, d, bar, c[0], c[1], c[2], c[3], c[4]);
}
template <int Rank>
__device__ __forceinline__ void tma_store(const TmaDesc* d, const void* src, const int (&c)[Rank]) {
  static_assert(Rank >= 2 && Rank <= 5, "TMA rank 2..5");
  if constexpr (Rank == 2) tma_store_2d(d, src, c[0], c[1]);
  if constexpr (Rank == 3) tma_store_3d(d, src, c[0], c[1], c[2]);
  if constexpr (Rank == 4) tma_store_4d(d, src, c[0], c[1], c[2], c[3]);
  if constexpr (Rank == 5) tma_store_5d(d, src, c[0], c[1], c[2], c[3], c[4]);
}
__device__ __forceinline__ void tma_store_commit() {
  TFLA_SM90(asm volatile("cp.async.bulk.commit_group;" ::: "memory");)
}
// Waits until at most N committed store groups are still reading their shared-memory source.
template <int N> __device__ __forceinline__ void tma_store_wait_read() {
  TFLA_SM90(asm volatile("cp.async.bulk.wait_group.read %0;" ::"n"(N) : "memory");)
}
// Waits until at most N committed store groups are incomplete (their writes done).
template <int N> __device__ __forceinline__ void tma_store_wait() {
  TFLA_SM90(asm volatile("cp.async.bulk.wait_group %0;" ::"n"(N) : "memory");)
}
// Prefetches a descriptor into the TMA unit's cache (optional, once per CTA).
__device__ __forceinline__ void tma_prefetch_desc(const TmaDesc* d) {
  TFLA_SM90(asm volatile("prefetch.tensormap [%0];" ::"l"(desc_ptr(d)) : "memory");)
}
// 1D bulk copy of `bytes` (a multiple of 16; both addresses 16-byte aligned) completing on bar.
__device__ __forceinline__ void bulk_load(void* dst, const void* src, u32 bytes, u64* bar) {
  TFLA_SM90(asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], "
                         "[%1], %2, [%3];" ::"r"(smem_u32(dst)),
                         "l"(src), "r"(bytes), "r"(smem_u32(bar))
                         : "memory");)
}

// ---- wgmma bookkeeping -----------------------------------------------------------------------
// Before the first wgmma of a batch, and after registers it reads (accumulators, A fragments)
// were written by other instructions.
__device__ __forceinline__ void wgmma_fence() {
  TFLA_SM90(asm volatile("wgmma.fence.sync.aligned;" ::: "memory");)
}
// Closes the wgmma instructions issued since the last commit into one group.
__device__ __forceinline__ void wgmma_commit() {
  TFLA_SM90(asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");)
}
// Waits until at most N groups are pending: their accumulators and operands are then free.
template <int N> __device__ __forceinline__ void wgmma_wait() {
  TFLA_SM90(asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");)
}
// Keeps the compiler from moving accesses of r across a wgmma wait or fence: call it on every
// accumulator register after wgmma_wait and before reading the results.
template <int N> __device__ __forceinline__ void reg_fence(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N> __device__ __forceinline__ void reg_fence(u32 (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}
// blockIdx.y, read again where it is used: a value the compiler keeps from an earlier read may be
// live across setmaxnreg, where ptxas spills it.
__device__ __forceinline__ int ctaid_y() {
  int r;
  asm volatile("mov.u32 %0, %%ctaid.y;" : "=r"(r));
  return r;
}

// ---- warp specialization -------------------------------------------------------------------
// Lowers (dec) or raises (inc) this warpgroup's register budget to N per thread (a multiple of
// 8 in [24, 256]). Every thread of the warpgroup executes it; the kernel needs a register cap at
// entry (__launch_bounds__ with a CTA count).
template <int N> __device__ __forceinline__ void setmaxnreg_dec() {
  static_assert(N % 8 == 0 && N >= 24 && N <= 256, "setmaxnreg count");
  TFLA_SM90(asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(N));)
}
template <int N> __device__ __forceinline__ void setmaxnreg_inc() {
  static_assert(N % 8 == 0 && N >= 24 && N <= 256, "setmaxnreg count");
  TFLA_SM90(asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(N));)
}
// The k-th tile of a persistent CTA: round k covers tiles k G .. k G + G - 1 (G = gridDim.x), one
// per CTA, in block order in even rounds and in reverse in odd ones. Tiles whose cost depends on
// their index's parity (a query tile's place in its chunk) then alternate on every CTA, where a
// plain stride of an even G would hand half the CTAs only the long ones. Every tile is visited
// once; a CTA stops at its first index >= the tile count (later rounds only go higher).
__device__ __forceinline__ int persistent_tile(int k) {
  const int g = static_cast<int>(gridDim.x), b = static_cast<int>(blockIdx.x);
  return k * g + ((k & 1) ? g - 1 - b : b);
}
// True in exactly one active lane of the (fully active) warp.
__device__ __forceinline__ bool elect_one() {
  u32 elected = 0;
  TFLA_SM90(asm volatile("{\n .reg .pred p;\n .reg .b32 lane;\n elect.sync lane|p, 0xffffffff;\n"
                         " selp.b32 %0, 1, 0, p;\n}"
                         : "=r"(elected));)
  return elected != 0;
}
// Named barriers 1..15 (0 is __syncthreads): `threads` (a multiple of 32) take part.
__device__ __forceinline__ void named_bar_sync(u32 id, u32 threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(u32 id, u32 threads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// ---- stmatrix: register fragments -> shared memory -----------------------------------------
// Four 8x8 16-bit matrices; lanes 8i..8i+7 give the row addresses of matrix i, and register i
// of each lane holds its mma-fragment pair of matrix i (as ldmatrix returns it). .trans stores
// each matrix transposed.
__device__ __forceinline__ void stmatrix_x4(void* p, u32 r0, u32 r1, u32 r2, u32 r3) {
  TFLA_SM90(asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(
                             smem_u32(p)),
                         "r"(r0), "r"(r1), "r"(r2), "r"(r3)
                         : "memory");)
}
__device__ __forceinline__ void stmatrix_x4_trans(void* p, u32 r0, u32 r1, u32 r2, u32 r3) {
  TFLA_SM90(
      asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(
                       smem_u32(p)),
                   "r"(r0), "r"(r1), "r"(r2), "r"(r3)
                   : "memory");)
}

// The 8 x 8 16-bit matrix whose row lane / 4 holds, in lane q = lane % 4, the pair at columns
// 2 q, 2 q + 1 (an accumulator fragment's layout), transposed in the same layout: lane (r, q) gets
// the elements at rows 2 q, 2 q + 1 of column r.
__device__ __forceinline__ u32 movmatrix_trans(u32 x) {
  u32 y = x;
  TFLA_SM90(asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(y) : "r"(x));)
  return y;
}

// quad_transpose is common.cuh's (the mma.sync epilogues use it too)
using tfla::quad_transpose;

// Rounds a dynamic shared-memory pointer up to `Align` bytes (the rendered kernel's buffer is
// only 16-byte aligned; swizzled tiles need 1024).
template <int Align> __device__ __forceinline__ char* align_smem(char* p) {
  const u32 a = smem_u32(p);
  return p + ((Align - (a % Align)) % Align);
}

}  // namespace tfla::sm90
