// Small RAII helpers for the CLI and tests: device buffers, events, random fills.
#pragma once
#include <cuda.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "tfla/tfla.hpp"

namespace tfla::cli {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = 0; o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return reinterpret_cast<void*>(ptr_); }
  template <class T> T* as() const { return reinterpret_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }
  void upload(const void* host, size_t bytes);
  void download(void* host, size_t bytes) const;
  void fill_byte(unsigned char b);  // complete on return, like upload

 private:
  CUdeviceptr ptr_ = 0;
  size_t bytes_ = 0;
};

// Fills n elements of dtype with N(mean, std)-like values (normal) or U(mean-std, mean+std).
void fill_random(void* ptr, DType dtype, int64_t n, uint64_t seed, float mean, float std,
                 bool normal = true, CUstream stream = nullptr);

// Times fn() with CUDA events: warm-up, then `reps` timed runs; returns per-run ms (sorted).
std::vector<double> time_ms(const std::function<void()>& fn, int warmup, int reps, CUstream stream = nullptr);
double median(std::vector<double> v);

// GPU time per call of `calls` back-to-back fn() calls with the host's enqueueing hidden: fills of
// `blocker` keep the GPU busy while the host enqueues the calls between two events, so a short
// kernel is timed as the GPU runs it, not as fast as the host launches it. Per rep: elapsed /
// calls in us (us_all, sorted); us: their median; host_us: the host's enqueue time per call.
struct CallTime {
  double us = 0, host_us = 0;
  std::vector<double> us_all;    // GPU us per call of each repeat, sorted
  // per repeat, the larger of its GPU and its host us per call, sorted: the time per call of a
  // loop that waits on neither (the host enqueues while the GPU runs the previous calls)
  std::vector<double> loop_all;
};
CallTime time_us_per_call(const std::function<void()>& fn, int calls, int warmup, int reps,
                          const DeviceBuffer& blocker);

void synchronize();
// Free and total device memory, bytes.
void mem_info(size_t* free_bytes, size_t* total_bytes);

}  // namespace tfla::cli
