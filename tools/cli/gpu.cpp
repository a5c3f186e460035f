#include "gpu.hpp"

#include <algorithm>
#include <chrono>

#include "ops/kernel_space.hpp"
#include "runtime/device.hpp"
#include "runtime/driver.hpp"
#include "runtime/kernel.hpp"
#include "tfla/util_params.cuh"

namespace tfla::cli {

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  rt::ensure_context();
  if (bytes) TFLA_CU(cuMemAlloc(&ptr_, bytes));
}
DeviceBuffer::~DeviceBuffer() {
  if (ptr_) rt::driver().cuMemFree(ptr_);
}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) rt::driver().cuMemFree(ptr_);
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = 0;
    o.bytes_ = 0;
  }
  return *this;
}
// The "synchronous" copy from pageable memory and memset may still be in flight on the legacy
// stream when they return, which a non-blocking stream does not wait for: both end with a context
// synchronize, so whatever a caller launches next, on any stream, sees the bytes.
void DeviceBuffer::upload(const void* host, size_t bytes) {
  TFLA_CU(cuMemcpyHtoD(ptr_, host, bytes));
  TFLA_CU(cuCtxSynchronize());
}
void DeviceBuffer::download(void* host, size_t bytes) const { TFLA_CU(cuMemcpyDtoH(host, ptr_, bytes)); }
void DeviceBuffer::fill_byte(unsigned char b) {
  TFLA_CU(cuMemsetD8(ptr_, b, bytes_));
  TFLA_CU(cuCtxSynchronize());
}

void fill_random(void* ptr, DType dtype, int64_t n, uint64_t seed, float mean, float std, bool normal,
                 CUstream stream) {
  const rt::LoadedKernel& k = rt::get_kernel(ops::fill_kernel(dtype));
  FillParams p{ptr, n, seed, mean, std, normal ? 1 : 0};
  k.launch({static_cast<unsigned>((n + 255) / 256), 1, 1}, stream, &p, sizeof(p));
}

std::vector<double> time_ms(const std::function<void()>& fn, int warmup, int reps, CUstream stream) {
  for (int i = 0; i < warmup; ++i) fn();
  CUevent a, b;
  TFLA_CU(cuEventCreate(&a, CU_EVENT_DEFAULT));
  TFLA_CU(cuEventCreate(&b, CU_EVENT_DEFAULT));
  std::vector<double> out;
  for (int i = 0; i < reps; ++i) {
    TFLA_CU(cuEventRecord(a, stream));
    fn();
    TFLA_CU(cuEventRecord(b, stream));
    TFLA_CU(cuEventSynchronize(b));
    float ms = 0;
    TFLA_CU(cuEventElapsedTime(&ms, a, b));
    out.push_back(ms);
  }
  rt::driver().cuEventDestroy(a);
  rt::driver().cuEventDestroy(b);
  std::sort(out.begin(), out.end());
  return out;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

CallTime time_us_per_call(const std::function<void()>& fn, int calls, int warmup, int reps,
                          const DeviceBuffer& blocker) {
  for (int i = 0; i < warmup; ++i) fn();
  synchronize();
  CUevent a, b;
  TFLA_CU(cuEventCreate(&a, CU_EVENT_DEFAULT));
  TFLA_CU(cuEventCreate(&b, CU_EVENT_DEFAULT));
  CallTime out;
  std::vector<double> host;
  try {
    for (int r = 0; r < reps; ++r) {
      for (int f = 0; f < 4; ++f)  // ~0.1 ms each for 256 MiB: longer than enqueueing the calls
        fill_random(blocker.get(), DType::FP32, static_cast<int64_t>(blocker.bytes() / 4), 90 + f, 0.f, 1.f, false);
      TFLA_CU(cuEventRecord(a, nullptr));
      const auto t0 = std::chrono::steady_clock::now();
      for (int c = 0; c < calls; ++c) fn();
      const auto t1 = std::chrono::steady_clock::now();
      TFLA_CU(cuEventRecord(b, nullptr));
      TFLA_CU(cuEventSynchronize(b));
      float ms = 0;
      TFLA_CU(cuEventElapsedTime(&ms, a, b));
      out.us_all.push_back(1e3 * ms / calls);
      host.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / calls);
      out.loop_all.push_back(std::max(out.us_all.back(), host.back()));
    }
  } catch (...) {
    rt::driver().cuEventDestroy(a);
    rt::driver().cuEventDestroy(b);
    throw;
  }
  rt::driver().cuEventDestroy(a);
  rt::driver().cuEventDestroy(b);
  std::sort(out.us_all.begin(), out.us_all.end());
  std::sort(out.loop_all.begin(), out.loop_all.end());
  out.us = median(out.us_all);
  out.host_us = median(host);
  return out;
}

void synchronize() { TFLA_CU(cuCtxSynchronize()); }
void mem_info(size_t* free_bytes, size_t* total_bytes) { TFLA_CU(cuMemGetInfo(free_bytes, total_bytes)); }

}  // namespace tfla::cli
