// A smoke kernel that proves the render -> compile -> load -> launch pipeline end to end:
// y[i] = a * x[i] + y[i] in the requested dtype, computed in fp32.
#pragma once
#include "tfla/common.cuh"
#include "tfla/util_params.cuh"

namespace tfla {

template <class T>
__device__ void smoke_axpy(const SmokeParams& p) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  if (i < p.n) y[i] = Elem<T>::from_float(p.a * Elem<T>::to_float(x[i]) + Elem<T>::to_float(y[i]));
}

}  // namespace tfla
