// A device-to-device copy through the TMA engine, to measure the bandwidth the sm_90a kernels
// can get from TMA loads and stores (`tfla bench tma-copy`). The source and destination are
// seen as 2D tensors of 64-element rows; each CTA's one working thread walks boxes of
// TmaCopyShape::kBoxRows rows, keeps kStages - 1 loads in flight ahead of the box it stores, and
// reuses a slot only after the store that read it has finished reading (bulk wait_group.read).
#pragma once
#include "tfla/sm90.cuh"
#include "tfla/sm90_params.cuh"

namespace tfla {

// T: the 16-bit element type of the maps (the copy moves bytes; T only names the instantiation).
template <class T> __device__ void tma_copy_sm90(const TmaCopyParams& p, char* smem_raw) {
  using namespace sm90;
  static_assert(Elem<T>::bytes == 2, "rows of 64 16-bit elements");
  using Shape = TmaCopyShape;
  constexpr int kStages = Shape::kStages, kBoxBytes = Shape::kBoxBytes;
  char* ring = align_smem<1024>(smem_raw);
  u64* full = reinterpret_cast<u64*>(ring + kStages * kBoxBytes);
  if (threadIdx.x != 0) return;
  for (int s = 0; s < kStages; ++s) mbar_init(&full[s], 1);
  fence_mbarrier_init();
  // Boxes blockIdx.x, blockIdx.x + gridDim.x, ...: count of them for this CTA.
  const int count =
      p.boxes > static_cast<int>(blockIdx.x)
          ? (p.boxes - 1 - static_cast<int>(blockIdx.x)) / static_cast<int>(gridDim.x) + 1
          : 0;
  auto box_row = [&](int n) {
    return (static_cast<int>(blockIdx.x) + n * static_cast<int>(gridDim.x)) * Shape::kBoxRows;
  };
  auto load = [&](int n) {
    const int s = n % kStages;
    mbar_arrive_expect_tx(&full[s], kBoxBytes);
    tma_load_2d(ring + s * kBoxBytes, &p.src, &full[s], 0, box_row(n));
  };
  for (int n = 0; n < kStages - 1 && n < count; ++n) load(n);
  for (int n = 0; n < count; ++n) {
    const int ahead = n + kStages - 1;  // goes into the slot that store n - 1 read
    if (ahead < count) {
      tma_store_wait_read<0>();
      load(ahead);
    }
    const int s = n % kStages;
    mbar_wait(&full[s], static_cast<u32>(n / kStages) & 1u);
    tma_store_2d(&p.dst, ring + s * kBoxBytes, 0, box_row(n));
    tma_store_commit();
  }
  tma_store_wait<0>();
}

}  // namespace tfla
