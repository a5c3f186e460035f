// The pipeline end to end: render -> NVRTC compile for this device's arch -> load -> launch.
#include "tfla_catch.hpp"

#include "gpu_test_util.hpp"
#include "ops/kernel_space.hpp"
#include "runtime/device.hpp"
#include "runtime/kernel.hpp"
#include "tfla/util_params.cuh"

using namespace tfla;

TEST_CASE("smoke kernel compiles with NVRTC, launches and computes axpy", "[gpu][smoke]") {
  for (DType dt : {DType::BF16, DType::FP16, DType::FP32}) {
    const int64_t n = 100003;
    std::vector<double> x(n), y(n);
    for (int64_t i = 0; i < n; ++i) {
      x[i] = std::sin(0.001 * i) * 3;
      y[i] = std::cos(0.002 * i);
    }
    auto xd = test::upload(x, dt);
    auto yd = test::upload(y, dt);
    const rt::LoadedKernel& k = rt::get_kernel(ops::smoke_kernel(dt));
    SmokeParams p{xd.get(), yd.get(), 2.5f, n};
    k.launch({static_cast<unsigned>((n + 255) / 256), 1, 1}, nullptr, &p, sizeof(p));
    cli::synchronize();
    const auto out = test::download(yd, dt);
    std::vector<double> want(n);
    for (int64_t i = 0; i < n; ++i) want[i] = 2.5 * x[i] + y[i];
    double err = 0, nrm = 0;
    for (int64_t i = 0; i < n; ++i) {
      err += (out[i] - want[i]) * (out[i] - want[i]);
      nrm += want[i] * want[i];
    }
    INFO(to_string(dt));
    CHECK(std::sqrt(err / nrm) < (dt == DType::FP32 ? 1e-6 : 1e-2));
  }
  const DeviceInfo& d = rt::device_info(rt::ensure_context());
  INFO(d.name);
  CHECK(d.sm_count > 0);
}
