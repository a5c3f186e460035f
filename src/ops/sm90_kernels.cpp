#include "ops/sm90_kernels.hpp"

#include <algorithm>
#include <string>

#include "runtime/device.hpp"
#include "runtime/tensor_map.hpp"
#include "tfla/sm90_params.cuh"

namespace tfla::ops {
namespace {
const char* type_name(DType d) { return d == DType::BF16 ? "tfla::bf16" : "tfla::fp16"; }
}  // namespace

rt::KernelSpec gemm_sm90_kernel(DType dtype) {
  // __launch_bounds__(384, 1): ptxas caps registers at 168 so setmaxnreg can move 128 x 128
  // of the producer's to the two consumer warpgroups (40 / 232).
  return rt::with_min_blocks(
      rt::render("gemm_sm90", "tfla/gemm_sm90.cuh", "tfla::gemm_sm90", "tfla::GemmSm90Params",
                 {{"T", type_name(dtype)}}, GemmSm90Shape::kThreads, GemmSm90Shape::kSmemBytes),
      1);
}

void gemm_sm90(const void* a, const void* b, void* c, int M, int N, int K, DType dtype,
               CUstream stream) {
  using S = GemmSm90Shape;
  if (dtype == DType::FP32) throw Error(ErrorCode::InvalidArgument, "gemm_sm90 takes bf16 or fp16");
  if (M <= 0 || N <= 0 || K <= 0 || K % 8 || N % 2)
    throw Error(ErrorCode::InvalidArgument,
                "gemm_sm90 needs M, N, K > 0, K % 8 == 0 and N % 2 == 0; got M=" +
                    std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K));
  for (const void* p : {a, b, static_cast<const void*>(c)})
    if (reinterpret_cast<uintptr_t>(p) % 16)
      throw Error(ErrorCode::InvalidArgument, "gemm_sm90 needs 16-byte aligned pointers");
  const DeviceInfo& dev = rt::device_info(rt::ensure_context());
  if (dev.arch != "sm_90a")
    throw Error(ErrorCode::Unsupported,
                "gemm_sm90 needs an sm_90a device; " + dev.name + " is " + dev.arch);
  GemmSm90Params p{};
  rt::TensorMapSpec ta;
  ta.base = a;
  ta.dtype = dtype;
  ta.rank = 2;
  ta.dims[0] = static_cast<uint64_t>(K);
  ta.dims[1] = static_cast<uint64_t>(M);
  ta.strides[1] = static_cast<uint64_t>(K) * 2;
  ta.box[0] = S::kBK;
  ta.box[1] = S::kBM;
  ta.swizzle = 128;
  rt::TensorMapSpec tb = ta;
  tb.base = b;
  tb.dims[1] = static_cast<uint64_t>(N);
  tb.box[1] = S::kBN;
  p.a = rt::tensor_map(ta);
  p.b = rt::tensor_map(tb);
  p.c = c;
  p.M = M;
  p.N = N;
  p.K = K;
  p.tiles_m = (M + S::kBM - 1) / S::kBM;
  p.tiles_n = (N + S::kBN - 1) / S::kBN;
  const int tiles = p.tiles_m * p.tiles_n;
  const rt::LoadedKernel& k = rt::get_kernel(gemm_sm90_kernel(dtype));
  k.launch({static_cast<unsigned>(std::min(tiles, dev.sm_count)), 1, 1}, stream, &p, sizeof(p));
}

rt::KernelSpec tma_copy_kernel() {
  return rt::render("tma_copy_sm90", "tfla/tma_copy_sm90.cuh", "tfla::tma_copy_sm90",
                    "tfla::TmaCopyParams", {{"T", "tfla::bf16"}}, 32, TmaCopyShape::kSmemBytes);
}

void tma_copy_sm90(const void* src, void* dst, size_t bytes, CUstream stream) {
  using S = TmaCopyShape;
  if (bytes == 0 || bytes % 128 || reinterpret_cast<uintptr_t>(src) % 16 ||
      reinterpret_cast<uintptr_t>(dst) % 16)
    throw Error(ErrorCode::InvalidArgument,
                "tma_copy_sm90 needs a multiple of 128 bytes and 16-byte aligned pointers");
  const DeviceInfo& dev = rt::device_info(rt::ensure_context());
  if (dev.arch != "sm_90a")
    throw Error(ErrorCode::Unsupported,
                "tma_copy_sm90 needs an sm_90a device; " + dev.name + " is " + dev.arch);
  const uint64_t rows = bytes / 128;
  rt::TensorMapSpec t;
  t.base = src;
  t.dtype = DType::BF16;
  t.rank = 2;
  t.dims[0] = 64;
  t.dims[1] = rows;
  t.strides[1] = 128;
  t.box[0] = 64;
  t.box[1] = S::kBoxRows;
  TmaCopyParams p{};
  p.src = rt::tensor_map(t);
  t.base = dst;
  p.dst = rt::tensor_map(t);
  p.boxes = static_cast<int>((rows + S::kBoxRows - 1) / S::kBoxRows);
  const rt::LoadedKernel& k = rt::get_kernel(tma_copy_kernel());
  const int grid = std::min(p.boxes, 3 * dev.sm_count);
  k.launch({static_cast<unsigned>(grid), 1, 1}, stream, &p, sizeof(p));
}

rt::KernelSpec tma_roundtrip_kernel(int rank) {
  // Shared memory is given at launch through the spec; the largest probe box is 64 KB.
  return rt::render("sm90_tma_roundtrip", "tfla/sm90_probe.cuh", "tfla::sm90_tma_roundtrip",
                    "tfla::TmaRoundtripParams", {{"Rank", std::to_string(rank)}}, 256,
                    tma_roundtrip_smem_bytes(65536));
}
int tma_roundtrip_smem_bytes(int box_bytes) { return box_bytes + 1024 + 16; }

rt::KernelSpec wgmma_probe_kernel(DType dtype, int n, int amode, int bmajor) {
  return rt::render(
      "sm90_wgmma_probe", "tfla/sm90_probe.cuh", "tfla::sm90_wgmma_probe", "tfla::WgmmaProbeParams",
      {{"T", type_name(dtype)}, {"N", std::to_string(n)}, {"AMode", std::to_string(amode)},
       {"BMajor", std::to_string(bmajor)}},
      128,
      1024 + 8192 + 256 * 128 + 16);
}

rt::KernelSpec mbar_ring_kernel(int depth) {
  return rt::render("sm90_mbar_ring", "tfla/sm90_probe.cuh", "tfla::sm90_mbar_ring",
                    "tfla::MbarRingParams", {{"Depth", std::to_string(depth)}}, kMbarRingThreads,
                    128 + depth * (256 + 16));
}

rt::KernelSpec misc_probe_kernel() {
  return rt::render("sm90_misc_probe", "tfla/sm90_probe.cuh", "tfla::sm90_misc_probe",
                    "tfla::MiscProbeParams", {{"Unused", "0"}}, 256, 128 + 128 * 4 + 512 * 2);
}

std::vector<rt::KernelSpec> sm90_kernels() {
  std::vector<rt::KernelSpec> out;
  for (DType dt : {DType::BF16, DType::FP16}) out.push_back(gemm_sm90_kernel(dt));
  out.push_back(tma_copy_kernel());
  for (int rank = 2; rank <= 5; ++rank) out.push_back(tma_roundtrip_kernel(rank));
  for (int n : {32, 64, 128, 256})
    for (int amode = 0; amode < 3; ++amode)
      for (int bmajor = 0; bmajor < 2; ++bmajor)
        out.push_back(wgmma_probe_kernel(DType::BF16, n, amode, bmajor));
  for (int amode = 0; amode < 3; ++amode)
    for (int bmajor = 0; bmajor < 2; ++bmajor)
      out.push_back(wgmma_probe_kernel(DType::FP16, 64, amode, bmajor));
  for (int depth = 1; depth <= 4; ++depth) out.push_back(mbar_ring_kernel(depth));
  out.push_back(misc_probe_kernel());
  return out;
}

}  // namespace tfla::ops
