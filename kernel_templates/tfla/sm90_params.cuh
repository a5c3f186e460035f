// Parameter blocks and shared-memory plans of the sm_90a kernels built from the primitives (the
// GEMM and the probes that prove the primitives on the GPU). Plain data shared by host and
// device code; the kernels static_assert their layouts against the constants here, which the
// host uses to size shared memory.
#pragma once
#include "tfla/sm90_layout.cuh"

namespace tfla {

// ---- GEMM: C (M x N, row-major) = A (M x K, row-major) * B (N x K, row-major)^T ------------
// Both operands K-major; fp32 accumulation; C in the input dtype.
struct GemmSm90Shape {
  static constexpr int kBM = 128, kBN = 256, kBK = 64;  // CTA tile and k step
  static constexpr int kStages = 4;                     // TMA ring depth
  static constexpr int kGroupM = 8;                     // tile raster: 8 M-tiles per group
  static constexpr int kConsumers = 2;                  // wgmma warpgroups (64 rows each)
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kStageBytes = (kBM + kBN) * kBK * 2;
  // Stage ring, then full[kStages] and empty[kStages] mbarriers; +1024 to align the ring.
  static constexpr int kSmemBytes = 1024 + kStages * kStageBytes + 2 * kStages * 8;
};

struct GemmSm90Params {
  TmaDesc a;  // A: dims {K, M}, box {kBK, kBM}, 128B swizzle
  TmaDesc b;  // B: dims {K, N}, box {kBK, kBN}, 128B swizzle
  void* c;    // (M, N) T, row stride N
  int M, N, K;
  int tiles_m, tiles_n;
};

// ---- TMA copy (tfla bench tma-copy): rows of 64 16-bit elements -----------------------------
struct TmaCopyShape {
  static constexpr int kBoxRows = 128, kStages = 4;
  static constexpr int kBoxBytes = kBoxRows * 128;
  static constexpr int kSmemBytes = 1024 + kStages * kBoxBytes + kStages * 8;
};
struct TmaCopyParams {
  TmaDesc src;  // dims {64, rows}, box {64, kBoxRows}
  TmaDesc dst;  // the same shape
  int boxes;    // rows / kBoxRows, rounded up
};

// ---- probes (tests/gpu/test_sm90.cpp) -------------------------------------------------------
// TMA round trip: each CTA loads box number blockIdx.x into shared memory, copies the shared
// bytes as they are to raw + blockIdx.x * box_bytes, flips the sign bit of every element in
// shared memory and TMA-stores the box to `out` (same shape as `in`).
struct TmaRoundtripParams {
  TmaDesc in;
  TmaDesc out;
  void* raw;     // (boxes, box_bytes) bytes
  int box[5];    // box extent per dim, innermost first
  int boxes[5];  // boxes per dim
  int box_bytes;
  int elem_bytes;  // 2 or 4
};

// wgmma probe: one warpgroup computes D (64 x N, fp32) = A (64 x 64) * B (64 x N) in four k16
// steps. A comes by TMA (K-major: tensor {64 K, 64 M}; MN-major: {64 M, 64 K}) or, for the RS
// form, from a_rm (64 x 64 row-major) straight into registers. B comes by TMA as one K-major
// box {64 K, N} or as MN-major panels {swizzle / 2 N, 64 K}. The descriptor strides come from
// the host so a test can try alternatives.
struct WgmmaProbeParams {
  TmaDesc a;
  TmaDesc b;
  const void* a_rm;                     // (64, 64) T, for the RS form
  float* d;                             // (64, N) fp32
  unsigned a_lbo, a_sbo, b_lbo, b_sbo;  // descriptor strides, bytes
  unsigned a_step, b_step;              // start-address step per k16 slice, bytes
  int b_panels;                         // MN-major B: TMA boxes of swizzle / 2 columns
  int b_panel_bytes;                    // bytes of one B box
  int b_panel_cols;                     // columns per B box
};

// mbarrier ring stress: one producer warp and four consumer warps pass `iters` slots of 64 u32
// through a ring of Depth slots. mode 0: the producer's 32 lanes write the slot and each
// arrives (full count 32); mode 1: one lane bulk-copies src[i] (256 bytes) with expect_tx.
// Every consumer thread folds what it reads into sums[blockIdx.x * 128 + thread] (u64).
struct MbarRingParams {
  const unsigned* src;       // (iters, 64) u32, mode 1
  unsigned long long* sums;  // (gridDim.x, 128) u64
  int iters;
  int mode;
};

// elect.sync, named barriers and stmatrix, 256 threads (two warpgroups). out (u32):
//  [0] lanes elected (one per warp), [1 + w] the lane warp w elected;
//  [16 + t] for t < 128: the word thread 128 + t of warpgroup 1 read after named barrier 1,
//    which warpgroup 0 (which wrote the words) only arrives at: word 127 - t = 3 (127 - t) + 1;
//  [512..639] as u16 [0..255]: four 8 x 8 matrices stored by warp 0 with stmatrix.x4, element
//    (r, c) of matrix i at 64 i + 8 r + c; lane l's register i holds (l / 4, 2 (l % 4) + j) =
//    64 i + 2 l + j for j = 0, 1; u16 [256..511]: the same registers with .trans.
struct MiscProbeParams {
  unsigned* out;  // (1024,) u32, zeroed
};

}  // namespace tfla
