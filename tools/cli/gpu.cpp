#include "gpu.hpp"

#include <algorithm>

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
void DeviceBuffer::upload(const void* host, size_t bytes) { TFLA_CU(cuMemcpyHtoD(ptr_, host, bytes)); }
void DeviceBuffer::download(void* host, size_t bytes) const { TFLA_CU(cuMemcpyDtoH(host, ptr_, bytes)); }
void DeviceBuffer::fill_byte(unsigned char b) { TFLA_CU(cuMemsetD8(ptr_, b, bytes_)); }

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

void synchronize() { TFLA_CU(cuCtxSynchronize()); }
void mem_info(size_t* free_bytes, size_t* total_bytes) { TFLA_CU(cuMemGetInfo(free_bytes, total_bytes)); }

}  // namespace tfla::cli
