// Catch2 main of the GPU tests: without a CUDA driver or device every GPU test binary prints
// why and exits 77, which ctest reports as "Skipped" (SKIP_RETURN_CODE).
#define CATCH_CONFIG_RUNNER
#include "tfla_catch.hpp"
#include <cstdio>

#include "runtime/driver.hpp"

int main(int argc, char** argv) {
  std::string why;
  if (!tfla::rt::driver_available(&why)) {
    std::printf("SKIPPED: GPU tests need a CUDA device: %s\n", why.c_str());
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
