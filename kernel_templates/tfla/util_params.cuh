// Parameter blocks of the utility kernels (random fill, smoke test). Plain data shared by host
// and device code.
#pragma once

namespace tfla {

struct FillParams {
  void* out;
  long long n;
  unsigned long long seed;
  float mean, std;
  int normal;
};

struct SmokeParams {
  const void* x;  // (n,) T
  void* y;        // (n,) T, updated in place
  float a;
  long long n;
};

}  // namespace tfla
