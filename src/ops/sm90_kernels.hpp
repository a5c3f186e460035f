// The sm_90a kernels built from the primitives of kernel_templates/tfla/sm90.cuh, and their
// host side: the GEMM (`tfla bench gemm`, tests/gpu/test_sm90.cpp) and the probes that prove
// TMA, wgmma and mbarrier rings on the GPU. All need an sm_90a device to run; all compile
// deviceless for sm_90a (tests/nvrtc).
#pragma once
#include <cuda.h>

#include <vector>

#include "runtime/kernel.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

// C (M x N, row-major) = A (M x K, row-major) * B (N x K, row-major)^T in dtype (bf16 or fp16),
// fp32 accumulation. Persistent: grid = min(tiles, SMs).
rt::KernelSpec gemm_sm90_kernel(DType dtype);
// Launches the GEMM on stream (tensor maps memoized by pointer and shape). Throws
// Error(InvalidArgument) for K % 8 != 0, N % 2 != 0, non-positive sizes, misaligned pointers or
// an fp32 dtype; Error(Unsupported) on a device that is not sm_90a.
void gemm_sm90(const void* a,  // (M, K) dtype
               const void* b,  // (N, K) dtype
               void* c,        // (M, N) dtype, written
               int M, int N, int K, DType dtype, CUstream stream);

// Copies bytes (a multiple of 128) from src to dst through TMA loads and stores (bf16 rows of
// 64 elements), three CTAs per SM.
rt::KernelSpec tma_copy_kernel();
void tma_copy_sm90(const void* src, void* dst, size_t bytes, CUstream stream);

// Probes (contracts in kernel_templates/tfla/sm90_params.cuh).
rt::KernelSpec tma_roundtrip_kernel(int rank);
int tma_roundtrip_smem_bytes(int box_bytes);
// amode 0: A K-major (SS), 1: A MN-major (SS), 2: A from registers (RS); bmajor 0: K, 1: MN.
rt::KernelSpec wgmma_probe_kernel(DType dtype, int n, int amode, int bmajor);
rt::KernelSpec mbar_ring_kernel(int depth);
rt::KernelSpec misc_probe_kernel();  // elect.sync, named barriers, stmatrix; 256 threads
constexpr int kMbarRingThreads = 160;

// Every sm_90a kernel above that the tests compile (the GEMM per dtype and every probe).
std::vector<rt::KernelSpec> sm90_kernels();

}  // namespace tfla::ops
