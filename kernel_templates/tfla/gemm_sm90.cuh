// A bf16/fp16 GEMM for sm_90a built from the primitives of sm90.cuh, to prove them fast:
//   C (M x N, row-major, T) = A (M x K, row-major) * B (N x K, row-major)^T, fp32 accumulation.
// Both operands are K-major, as wgmma reads them without transposes.
//
// Persistent and warp-specialized, 384 threads:
//  - warpgroup 0 (producer) drops to 40 registers; one thread walks the CTA's tiles and k steps,
//    waits for a free ring slot (empty barrier), arms the slot's full barrier with the stage's
//    byte count and issues two TMA loads (A 128 x 64, B 256 x 64, 128B-swizzled);
//  - warpgroups 1 and 2 (consumers) rise to 232 registers; each owns 64 rows of the 128 x 256
//    tile (a 64 x 256 fp32 accumulator, 128 registers), waits for a full slot, issues four
//    m64n256k16 wgmmas on it, keeps one wgmma group in flight and frees the previous slot (one
//    arrival per consumer warp) once its group has completed. After the last k step each thread
//    writes its accumulator fragment to C as packed pairs; the producer meanwhile already fills
//    the ring for the next tile.
// Tiles are visited in groups of kGroupM M-tiles (all N-tiles of a group before the next group)
// so the CTAs in flight share A and B panels in L2. Rows and columns past M, N and K are zero-
// filled by TMA and masked on store. Needs K % 8 == 0 (16-byte TMA strides) and N % 2 == 0.
#pragma once
#include "tfla/sm90.cuh"
#include "tfla/sm90_params.cuh"
#include "tfla/sm90_wgmma.cuh"

namespace tfla {

namespace gemm_sm90_detail {

using Shape = GemmSm90Shape;

// Tile t's (M-tile, N-tile) in the grouped raster order.
__device__ __forceinline__ void tile_coords(int t, int tiles_m, int tiles_n, int& tm, int& tn) {
  const int group_tiles = Shape::kGroupM * tiles_n;
  const int group = t / group_tiles;
  const int first_m = group * Shape::kGroupM;
  const int group_m = min(tiles_m - first_m, Shape::kGroupM);
  const int r = t - group * group_tiles;
  tm = first_m + r % group_m;
  tn = r / group_m;
}

template <class T>
__device__ __forceinline__ void store_tile(const GemmSm90Params& p, const float (&acc)[128],
                                           int row0, int col0) {
  const int lane = threadIdx.x % 32, warp = (threadIdx.x / 32) % 4;
  const int row = row0 + 16 * warp + lane / 4;
  const int col = col0 + 2 * (lane % 4);
  T* c = static_cast<T*>(p.c);
#pragma unroll
  for (int j = 0; j < 32; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = row + 8 * h, cc = col + 8 * j;
      if (r < p.M && cc < p.N) {
        const u32 v = Elem<T>::pack2(acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
        *reinterpret_cast<u32*>(c + static_cast<long long>(r) * p.N + cc) = v;
      }
    }
  }
}

}  // namespace gemm_sm90_detail

template <class T> __device__ void gemm_sm90(const GemmSm90Params& p, char* smem_raw) {
  using namespace sm90;
  using Shape = GemmSm90Shape;
  constexpr int kBM = Shape::kBM, kBN = Shape::kBN, kBK = Shape::kBK, kStages = Shape::kStages;
  constexpr int kABytes = kBM * kBK * 2;
  static_assert(kBK * 2 == 128, "one 128-byte swizzle row per k step");
  static_assert(Shape::kStageBytes % 1024 == 0 && kABytes % 1024 == 0,
                "swizzle atoms stay aligned");
  static_assert(Shape::kThreads == 384 && Shape::kConsumers == 2, "one producer, two consumers");

  char* ring = align_smem<1024>(smem_raw);
  u64* full = reinterpret_cast<u64*>(ring + kStages * Shape::kStageBytes);
  u64* empty = full + kStages;
  constexpr int kConsumerWarps = 4 * Shape::kConsumers;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kConsumerWarps);
    }
    fence_mbarrier_init();
    tma_prefetch_desc(&p.a);
    tma_prefetch_desc(&p.b);
  }
  __syncthreads();

  const int tiles = p.tiles_m * p.tiles_n;
  const int k_steps = (p.K + kBK - 1) / kBK;
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    setmaxnreg_dec<40>();
    if (threadIdx.x == 0) {
      RingPos<kStages> pos;
      for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
        int tm, tn;
        gemm_sm90_detail::tile_coords(t, p.tiles_m, p.tiles_n, tm, tn);
        for (int k = 0; k < k_steps; ++k) {
          mbar_wait(&empty[pos.slot], pos.phase ^ 1u);
          char* stage = ring + pos.slot * Shape::kStageBytes;
          mbar_arrive_expect_tx(&full[pos.slot], Shape::kStageBytes);
          tma_load_2d(stage, &p.a, &full[pos.slot], k * kBK, tm * kBM);
          tma_load_2d(stage + kABytes, &p.b, &full[pos.slot], k * kBK, tn * kBN);
          pos.advance();
        }
      }
    }
  } else {
    setmaxnreg_inc<232>();
    const int consumer = wg - 1;
    const bool warp_leader = threadIdx.x % 32 == 0;
    float acc[128];
    RingPos<kStages> pos;
    for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
      int tm, tn;
      gemm_sm90_detail::tile_coords(t, p.tiles_m, p.tiles_n, tm, tn);
      int prev_slot = -1;
      for (int k = 0; k < k_steps; ++k) {
        mbar_wait(&full[pos.slot], pos.phase);
        const u32 stage = smem_u32(ring + pos.slot * Shape::kStageBytes);
        const u64 da = wgmma_desc_kmajor(stage + consumer * 64 * 128, 128);
        const u64 db = wgmma_desc_kmajor(stage + kABytes, 128);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kBK / 16; ++kk)
          Wgmma<256>::ss<T, 0, 0>(acc, da + desc_step(32 * kk), db + desc_step(32 * kk),
                                  (k | kk) != 0);
        wgmma_commit();
        wgmma_wait<1>();
        if (prev_slot >= 0 && warp_leader) mbar_arrive(&empty[prev_slot]);
        prev_slot = pos.slot;
        pos.advance();
      }
      wgmma_wait<0>();
      if (prev_slot >= 0 && warp_leader) mbar_arrive(&empty[prev_slot]);
      reg_fence(acc);
      gemm_sm90_detail::store_tile<T>(p, acc, tm * kBM + consumer * 64, tn * kBN);
    }
  }
}

}  // namespace tfla
