// Probe kernels that prove the sm_90a primitives on the GPU (tests/gpu/test_sm90.cpp) before
// any mLSTM kernel relies on them: a TMA round trip, one warpgroup's wgmma in every operand
// form, and an mbarrier ring under stress. Parameter blocks and their contracts are in
// sm90_params.cuh.
#pragma once
#include "tfla/sm90.cuh"
#include "tfla/sm90_params.cuh"
#include "tfla/sm90_wgmma.cuh"

namespace tfla {

// TMA load of one box -> raw copy of the shared bytes -> sign flip by ordinary stores ->
// fence.proxy.async -> TMA store. Shared memory: box_bytes + 1024 alignment slack + barrier.
template <int Rank>
__device__ void sm90_tma_roundtrip(const TmaRoundtripParams& p, char* smem_raw) {
  using namespace sm90;
  char* box = align_smem<1024>(smem_raw);
  u64* bar = reinterpret_cast<u64*>(box + ((p.box_bytes + 15) / 16) * 16);
  int c[Rank];
  int rest = blockIdx.x;
#pragma unroll
  for (int i = 0; i < Rank; ++i) {
    c[i] = (rest % p.boxes[i]) * p.box[i];
    rest /= p.boxes[i];
  }
  if (threadIdx.x == 0) {
    mbar_init(bar, 1);
    fence_mbarrier_init();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    mbar_arrive_expect_tx(bar, p.box_bytes);
    tma_load<Rank>(box, &p.in, bar, c);
  }
  mbar_wait(bar, 0);
  u32* words = reinterpret_cast<u32*>(box);
  u32* raw = reinterpret_cast<u32*>(static_cast<char*>(p.raw) +
                                    static_cast<long long>(blockIdx.x) * p.box_bytes);
  const u32 sign = p.elem_bytes == 4 ? 0x80000000u : 0x80008000u;
  for (int i = threadIdx.x; i < p.box_bytes / 4; i += blockDim.x) {
    const u32 w = words[i];
    raw[i] = w;
    words[i] = w ^ sign;
  }
  fence_proxy_async();
  __syncthreads();
  if (threadIdx.x == 0) {
    tma_store<Rank>(&p.out, box, c);
    tma_store_commit();
    tma_store_wait<0>();
  }
}

// One warpgroup: D (64 x N) = A (64 x 64) * B (64 x N). AMode 0: A K-major by TMA, 1: A MN-major
// by TMA, 2: A from registers (RS). BMajor 0: K-major B, 1: MN-major B. Swizzle: B's swizzle
// bytes when MN-major (128, or 64 for N = 32); everything else uses 128.
template <class T, int N, int AMode, int BMajor>
__device__ void sm90_wgmma_probe(const WgmmaProbeParams& p, char* smem_raw) {
  using namespace sm90;
  constexpr int kSwB = BMajor == 1 && N < 64 ? N * 2 : 128;
  char* a_tile = align_smem<1024>(smem_raw);  // 8 KB
  char* b_tile = a_tile + 8192;               // N * 128 bytes
  u64* bar = reinterpret_cast<u64*>(b_tile + N * 128);
  if (threadIdx.x == 0) {
    mbar_init(bar, 1);
    fence_mbarrier_init();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const u32 bytes = (AMode == 2 ? 0 : 8192) + N * 128;
    mbar_arrive_expect_tx(bar, bytes);
    if (AMode != 2) tma_load_2d(a_tile, &p.a, bar, 0, 0);
    if (BMajor == 0) {
      tma_load_2d(b_tile, &p.b, bar, 0, 0);
    } else {
      for (int i = 0; i < p.b_panels; ++i)
        tma_load_2d(b_tile + i * p.b_panel_bytes, &p.b, bar, i * p.b_panel_cols, 0);
    }
  }
  // The RS operand: this thread's A fragments for the four k16 slices, read from global memory.
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, cq = lane % 4;
  u32 afrag[4][4];
  if (AMode == 2) {
    const u16* a = static_cast<const u16*>(p.a_rm);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int row = 16 * warp + g + 8 * (i % 2), col = 16 * kk + 8 * (i / 2) + 2 * cq;
        afrag[kk][i] =
            static_cast<u32>(a[row * 64 + col]) | (static_cast<u32>(a[row * 64 + col + 1]) << 16);
      }
  }
  mbar_wait(bar, 0);
  float d[N / 2];
  const u32 sa = smem_u32(a_tile), sb = smem_u32(b_tile);
  constexpr int kSwA = 128;
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const u64 db = wgmma_desc(sb + kk * p.b_step, p.b_lbo, p.b_sbo, BMajor == 1 ? kSwB : 128);
    if constexpr (AMode == 2) {
      Wgmma<N>::template rs<T, BMajor>(d, afrag[kk], db, kk != 0);
    } else {
      const u64 da = wgmma_desc(sa + kk * p.a_step, p.a_lbo, p.a_sbo, kSwA);
      Wgmma<N>::template ss<T, AMode, BMajor>(d, da, db, kk != 0);
    }
  }
  wgmma_commit();
  wgmma_wait<0>();
  reg_fence(d);
#pragma unroll
  for (int j = 0; j < N / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = 16 * warp + g + 8 * (e / 2), col = 8 * j + 2 * cq + (e % 2);
      p.d[row * N + col] = d[4 * j + e];
    }
}

// 160 threads: warp 0 produces, warps 1-4 consume. Shared memory: Depth * 256 bytes of slots,
// then full[Depth] and empty[Depth].
template <int Depth> __device__ void sm90_mbar_ring(const MbarRingParams& p, char* smem_raw) {
  using namespace sm90;
  u32* slots = reinterpret_cast<u32*>(align_smem<128>(smem_raw));
  u64* full = reinterpret_cast<u64*>(slots + Depth * 64);
  u64* empty = full + Depth;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (threadIdx.x == 0) {
    for (int s = 0; s < Depth; ++s) {
      mbar_init(&full[s], p.mode == 0 ? 32 : 1);
      mbar_init(&empty[s], 128);
    }
    fence_mbarrier_init();
  }
  __syncthreads();
  RingPos<Depth> pos;
  if (warp == 0) {
    for (int i = 0; i < p.iters; ++i) {
      mbar_wait(&empty[pos.slot], pos.phase ^ 1u);
      u32* slot = slots + pos.slot * 64;
      if (p.mode == 0) {
        slot[2 * lane] = (u32)i * 2654435761u ^ (u32)(2 * lane) * 40503u ^ blockIdx.x;
        slot[2 * lane + 1] = (u32)i * 2654435761u ^ (u32)(2 * lane + 1) * 40503u ^ blockIdx.x;
        mbar_arrive(&full[pos.slot]);
      } else if (lane == 0) {
        mbar_arrive_expect_tx(&full[pos.slot], 256);
        bulk_load(slot, p.src + static_cast<long long>(i) * 64, 256, &full[pos.slot]);
      }
      pos.advance();
    }
  } else {
    const int t = threadIdx.x - 32;
    unsigned long long sum = 0;
    for (int i = 0; i < p.iters; ++i) {
      mbar_wait(&full[pos.slot], pos.phase);
      const u32* slot = slots + pos.slot * 64;
      const u32 w = slot[t % 64] + slot[(t * 7 + 3) % 64];
      sum += static_cast<unsigned long long>(w) * static_cast<unsigned long long>(i % 7 + 1);
      mbar_arrive(&empty[pos.slot]);
      pos.advance();
    }
    p.sums[blockIdx.x * 128 + t] = sum;
  }
}

// elect.sync, a producer/consumer named barrier and stmatrix (plain and transposed); 256
// threads. Unused: the rendered kernel passes one template argument.
template <int Unused> __device__ void sm90_misc_probe(const MiscProbeParams& p, char* smem_raw) {
  using namespace sm90;
  u32* words = reinterpret_cast<u32*>(align_smem<128>(smem_raw));  // 128 words
  u16* mats = reinterpret_cast<u16*>(words + 128);                 // 2 x 256 u16
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (elect_one()) {
    atomicAdd(&p.out[0], 1u);
    p.out[1 + warp] = lane;
  }
  if (threadIdx.x < 128) {
    words[threadIdx.x] = threadIdx.x * 3 + 1;
    named_bar_arrive(1, 256);
  } else {
    named_bar_sync(1, 256);
    p.out[16 + threadIdx.x - 128] = words[255 - threadIdx.x];
  }
  if (warp == 0) {
    u32 r[4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
      r[i] = static_cast<u32>(64 * i + 2 * lane) | (static_cast<u32>(64 * i + 2 * lane + 1) << 16);
    const int row = (lane / 8) * 8 + lane % 8;  // lanes 8i..8i+7 address the rows of matrix i
    stmatrix_x4(mats + row * 8, r[0], r[1], r[2], r[3]);
    stmatrix_x4_trans(mats + 256 + row * 8, r[0], r[1], r[2], r[3]);
    __syncwarp();
    u16* out16 = reinterpret_cast<u16*>(p.out + 512);
    for (int k = lane; k < 512; k += 32) out16[k] = mats[k];
  }
}

}  // namespace tfla
