// tfla bench gemm | tma-copy: the sm_90a kernels built from the Hopper primitives
// (ops/sm90_kernels.hpp), timed and checked.
//  - gemm: C (M x N) = A (M x K) * B (N x K)^T in bf16 or fp16 with fp32 accumulation. Prints the
//    median time, TFLOP/s (2 M N K per run) and the relative error of sampled entries against a
//    float64 CPU GEMM of the same (rounded) inputs; fails when that error is over 1e-2 or any
//    entry of C is not finite (C is poisoned with NaN before the checked run).
//  - tma-copy: a device-to-device copy through TMA loads and stores beside cuMemcpyDtoD on the
//    same buffers; prints both bandwidths (read + write bytes per second); fails when the copy
//    is not bit-exact.
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

#include "args.hpp"
#include "commands.hpp"
#include "gpu.hpp"
#include "ops/sm90_kernels.hpp"
#include "runtime/device.hpp"
#include "runtime/driver.hpp"

namespace tfla::cli {
namespace {

double to_double(uint16_t bits, DType dt) {
  if (dt == DType::BF16) {
    const uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  _Float16 h;
  std::memcpy(&h, &bits, 2);
  return static_cast<double>(h);
}

std::vector<uint16_t> download16(const DeviceBuffer& b) {
  std::vector<uint16_t> v(b.bytes() / 2);
  b.download(v.data(), b.bytes());
  return v;
}

}  // namespace

int bench_gemm(const std::vector<std::string>& argv) {
  Args args(argv, {"json"}, {"m", "n", "k", "dtype", "warmup", "reps", "samples"});
  if (!args.positionals().empty()) throw UsageError("bench gemm: unexpected argument '" + args.positionals()[0] + "'");
  const int M = static_cast<int>(args.get_int("m", 8192));
  const int N = static_cast<int>(args.get_int("n", 8192));
  const int K = static_cast<int>(args.get_int("k", 8192));
  const std::string dts = args.get("dtype", "bf16");
  if (dts != "bf16" && dts != "fp16") throw UsageError("bench gemm --dtype takes bf16 or fp16");
  const DType dt = dts == "bf16" ? DType::BF16 : DType::FP16;
  const int warmup = static_cast<int>(args.get_int_in("warmup", 5, 0, INT_MAX));
  const int reps = static_cast<int>(args.get_int_in("reps", 20, 1, INT_MAX));
  const int samples = static_cast<int>(args.get_int_in("samples", 4096, 0, INT_MAX));
  // Every argument is judged before the driver is touched: a usage error is exit 2 on any machine.
  for (const char* k : {"m", "n", "k"})
    if (args.get_int(k, 8192) < 1 || args.get_int(k, 8192) > (1 << 20))
      throw UsageError(std::string("bench gemm --") + k + " must be in [1, 1048576]");
  if (K % 8 || N % 2) throw UsageError("bench gemm needs --k a multiple of 8 and --n even (16-byte rows)");
  if (warmup < 0 || reps < 1 || samples < 0)
    throw UsageError("bench gemm: --reps must be >= 1, --warmup and --samples >= 0");
  const DeviceInfo& dev = rt::device_info(rt::ensure_context());

  DeviceBuffer a(static_cast<size_t>(M) * K * 2), b(static_cast<size_t>(N) * K * 2),
      c(static_cast<size_t>(M) * N * 2);
  const uint64_t seed =
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  fill_random(a.get(), dt, static_cast<int64_t>(M) * K, seed, 0.f, 1.f);
  fill_random(b.get(), dt, static_cast<int64_t>(N) * K, seed * 31 + 7, 0.f, 1.f);
  c.fill_byte(0xFF);
  ops::gemm_sm90(a.get(), b.get(), c.get(), M, N, K, dt, nullptr);
  synchronize();

  // Sampled check against float64.
  const auto ha = download16(a), hb = download16(b), hc = download16(c);
  size_t nonfinite = 0;
  for (uint16_t v : hc) nonfinite += std::isfinite(to_double(v, dt)) ? 0 : 1;
  std::mt19937_64 g(seed);
  double err = 0, nrm = 0;
  for (int s = 0; s < samples; ++s) {
    const int i = static_cast<int>(g() % static_cast<uint64_t>(M)),
              j = static_cast<int>(g() % static_cast<uint64_t>(N));
    double want = 0;
    for (int k = 0; k < K; ++k)
      want += to_double(ha[static_cast<size_t>(i) * K + k], dt) *
              to_double(hb[static_cast<size_t>(j) * K + k], dt);
    const double got = to_double(hc[static_cast<size_t>(i) * N + j], dt);
    err += (got - want) * (got - want);
    nrm += want * want;
  }
  const double rel = std::sqrt(err / nrm);

  const auto ms = time_ms([&] { ops::gemm_sm90(a.get(), b.get(), c.get(), M, N, K, dt, nullptr); },
                          warmup, reps);
  const double med = median(ms);
  const double tflops = 2.0 * M * N * K / (med * 1e-3) / 1e12;
  const bool ok = nonfinite == 0 && rel < 1e-2;
  if (args.flag("json")) {
    nlohmann::json j = {{"kernel", "gemm_sm90"},
                        {"dtype", dts},
                        {"M", M},
                        {"N", N},
                        {"K", K},
                        {"ms", med},
                        {"ms_min", ms.front()},
                        {"tflops", tflops},
                        {"rel_err", rel},
                        {"samples", samples},
                        {"nonfinite", nonfinite},
                        {"device", dev.name}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("tfla bench gemm on %s: C = A * B^T, %s, M = %d, N = %d, K = %d\n",
                dev.name.c_str(), dts.c_str(), M, N, K);
    std::printf("  %.3f ms median of %d (min %.3f), %.1f TFLOP/s\n", med, reps, ms.front(), tflops);
    std::printf(
        "  check vs float64 CPU GEMM, %d sampled entries: relative error %.2e; non-finite "
        "entries in C: %zu -> %s\n",
        samples, rel, nonfinite, ok ? "ok" : "FAILED");
  }
  return ok ? kOk : kFailed;
}

int bench_tma_copy(const std::vector<std::string>& argv) {
  Args args(argv, {"json"}, {"mib", "warmup", "reps"});
  if (!args.positionals().empty())
    throw UsageError("bench tma-copy: unexpected argument '" + args.positionals()[0] + "'");
  const size_t bytes = static_cast<size_t>(args.get_int("mib", 1024)) << 20;
  const int warmup = static_cast<int>(args.get_int_in("warmup", 3, 0, INT_MAX));
  const int reps = static_cast<int>(args.get_int_in("reps", 20, 1, INT_MAX));
  if (args.get_int("mib", 1024) < 1 || args.get_int("mib", 1024) > (1 << 20))
    throw UsageError("bench tma-copy --mib must be in [1, 1048576]");
  if (warmup < 0 || reps < 1) throw UsageError("bench tma-copy: --reps must be >= 1 and --warmup >= 0");
  const DeviceInfo& dev = rt::device_info(rt::ensure_context());
  DeviceBuffer src(bytes), dst(bytes);
  fill_random(src.get(), DType::BF16, static_cast<int64_t>(bytes / 2),
              static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()),
              0.f, 1.f);
  dst.fill_byte(0xFF);
  ops::tma_copy_sm90(src.get(), dst.get(), bytes, nullptr);
  synchronize();
  std::vector<uint8_t> hs(bytes), hd(bytes);
  src.download(hs.data(), bytes);
  dst.download(hd.data(), bytes);
  const bool exact = std::memcmp(hs.data(), hd.data(), bytes) == 0;
  const double tma_ms = median(
      time_ms([&] { ops::tma_copy_sm90(src.get(), dst.get(), bytes, nullptr); }, warmup, reps));
  const double dtod_ms = median(time_ms(
      [&] {
        TFLA_CU(cuMemcpyDtoDAsync(reinterpret_cast<CUdeviceptr>(dst.get()),
                                  reinterpret_cast<CUdeviceptr>(src.get()), bytes, nullptr));
      },
      warmup, reps));
  const double tma_gbps = 2.0 * bytes / (tma_ms * 1e-3) / 1e9,
               dtod_gbps = 2.0 * bytes / (dtod_ms * 1e-3) / 1e9;
  if (args.flag("json")) {
    nlohmann::json j = {{"kernel", "tma_copy_sm90"},
                        {"bytes", bytes},
                        {"tma_ms", tma_ms},
                        {"tma_gbps", tma_gbps},
                        {"dtod_ms", dtod_ms},
                        {"dtod_gbps", dtod_gbps},
                        {"exact", exact},
                        {"device", dev.name}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("tfla bench tma-copy on %s: %zu MiB, read + write bytes per second\n",
                dev.name.c_str(), bytes >> 20);
    std::printf("  TMA copy      %.3f ms  %.0f GB/s (%.0f%% of cuMemcpyDtoD)  bit-exact: %s\n",
                tma_ms, tma_gbps, 100.0 * tma_gbps / dtod_gbps, exact ? "yes" : "NO");
    std::printf("  cuMemcpyDtoD  %.3f ms  %.0f GB/s\n", dtod_ms, dtod_gbps);
  }
  return exact ? kOk : kFailed;
}

}  // namespace tfla::cli
