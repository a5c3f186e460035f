// Fills a buffer with reproducible pseudo-random values (a hash of seed and index), so
// benchmarks and the tuner never run on zeros. normal=true: approximately N(mean, std) (sum of
// four uniforms); else uniform in [mean - std, mean + std].
#pragma once
#include "tfla/common.cuh"
#include "tfla/util_params.cuh"

namespace tfla {

__device__ __forceinline__ u32 hash32(unsigned long long x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return (u32)x;
}

template <class T>
__device__ void fill_random(const FillParams& p) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= p.n) return;
  float x;
  if (p.normal) {
    float s = 0.f;
    for (int k = 0; k < 4; ++k) s += hash32(p.seed * 0x9E3779B97F4A7C15ULL + (i << 2) + k) * 2.3283064e-10f;
    x = (s - 2.f) * 1.7320508f;  // variance of the sum of 4 U(0,1) is 1/3
  } else {
    x = hash32(p.seed * 0x9E3779B97F4A7C15ULL + i) * 4.656613e-10f - 1.f;
  }
  static_cast<T*>(p.out)[i] = Elem<T>::from_float(p.mean + p.std * x);
}

}  // namespace tfla
