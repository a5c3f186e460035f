// Helpers of the GPU tests: host dtype conversion (rounding like the device), uploads of
// float64 reference data in a dtype, poisoned outputs and their "fully written" check.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gpu.hpp"
#include "tfla/tfla.hpp"

namespace tfla::test {

inline uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);                     // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}
inline float from_bf16(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
inline uint16_t to_fp16(float x) {
  _Float16 h = static_cast<_Float16>(x);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
inline float from_fp16(uint16_t b) {
  _Float16 h;
  std::memcpy(&h, &b, 2);
  return static_cast<float>(h);
}

// Rounds data to dtype in place (so the reference sees exactly what the GPU sees) and returns
// the device representation's bytes.
inline std::vector<uint8_t> encode(std::vector<double>& data, DType dt) {
  std::vector<uint8_t> out(data.size() * dtype_bytes(dt));
  for (size_t i = 0; i < data.size(); ++i) {
    const float x = static_cast<float>(data[i]);
    if (dt == DType::FP32) {
      std::memcpy(&out[4 * i], &x, 4);
      data[i] = x;
    } else {
      const uint16_t b = dt == DType::BF16 ? to_bf16(x) : to_fp16(x);
      std::memcpy(&out[2 * i], &b, 2);
      data[i] = dt == DType::BF16 ? from_bf16(b) : from_fp16(b);
    }
  }
  return out;
}
inline std::vector<double> decode(const std::vector<uint8_t>& bytes, DType dt) {
  const size_t n = bytes.size() / dtype_bytes(dt);
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (dt == DType::FP32) {
      float x;
      std::memcpy(&x, &bytes[4 * i], 4);
      out[i] = x;
    } else {
      uint16_t b;
      std::memcpy(&b, &bytes[2 * i], 2);
      out[i] = dt == DType::BF16 ? from_bf16(b) : from_fp16(b);
    }
  }
  return out;
}

inline cli::DeviceBuffer upload(std::vector<double>& data, DType dt) {
  std::vector<uint8_t> bytes = encode(data, dt);
  cli::DeviceBuffer buf(bytes.size());
  buf.upload(bytes.data(), bytes.size());
  return buf;
}
// A poisoned output buffer: every byte 0xFF, a NaN in every dtype.
inline cli::DeviceBuffer poisoned(size_t bytes) {
  cli::DeviceBuffer buf(bytes);
  buf.fill_byte(0xFF);
  return buf;
}
// The 4-byte words of a poisoned buffer that still hold the poison (0xFFFFFFFF, a NaN in every
// dtype, which no kernel writes as a result): the bytes nothing wrote.
inline size_t count_poison_words(const cli::DeviceBuffer& buf) {
  std::vector<uint32_t> words(buf.bytes() / 4);
  buf.download(words.data(), words.size() * 4);
  size_t n = 0;
  for (uint32_t w : words) n += w == 0xFFFFFFFFu ? 1 : 0;
  return n;
}
inline std::vector<double> download(const cli::DeviceBuffer& buf, DType dt) {
  std::vector<uint8_t> bytes(buf.bytes());
  buf.download(bytes.data(), bytes.size());
  return decode(bytes, dt);
}
// The buffer's bytes as they are on the device.
inline std::vector<uint8_t> raw_bytes(const cli::DeviceBuffer& buf) {
  std::vector<uint8_t> bytes(buf.bytes());
  buf.download(bytes.data(), bytes.size());
  return bytes;
}
inline size_t count_nonfinite(const std::vector<double>& x) {
  size_t n = 0;
  for (double v : x) n += std::isfinite(v) ? 0 : 1;
  return n;
}

// Draws of the GPU tests' random cases: splitmix64 from a seed (Catch's --rng-seed, which the
// tests print), so each run may cover other cases and a failing one is reproducible.
class Draw {
 public:
  explicit Draw(uint64_t seed) : x_(mix(seed + 0x2545F4914F6CDD1Dull)) {}
  // uniform in [0, n)
  uint64_t below(uint64_t n) {
    x_ += 0x9E3779B97F4A7C15ull;
    return mix(x_) % n;
  }
  // uniform in [lo, hi]
  int64_t in(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(below(static_cast<uint64_t>(hi - lo + 1))); }
  bool one_in(uint64_t n) { return below(n) == 0; }
  // a head size the API accepts: a tuned one (a third of the draws) or any multiple of 16 up to 512
  int64_t head_dim() {
    static const int64_t tuned[] = {64, 128, 256, 512};
    return one_in(3) ? tuned[below(4)] : 16 * in(1, 32);
  }

 private:
  static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t x_;
};

}  // namespace tfla::test
