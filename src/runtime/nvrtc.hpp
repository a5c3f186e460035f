// NVRTC, loaded lazily with dlopen on first use, like libcuda (driver.hpp): libtfla links no
// CUDA library, so it loads where NVRTC is missing (the CPU queries work there) and takes NVRTC
// from wherever it is installed: a CUDA toolkit, or the `nvidia-cuda-nvrtc` wheel that PyTorch
// pulls in (a machine with only a driver and PyTorch runs tfla).
//
// Search order; the first candidate that loads (with its builtins library) wins:
//   1. $TFLA_NVRTC: a libnvrtc file, or a folder holding one. When set, nothing else is tried.
//   2. the nvidia-cuda-nvrtc wheel beside libtfla: <A>/nvidia/cu13/lib/libnvrtc.so.13 (CUDA 13)
//      or <A>/nvidia/cuda_nvrtc/lib/libnvrtc.so.12 (CUDA 12), for A = libtfla's folder and its
//      three parents (site-packages when libtfla is the copy inside the tfla Python package);
//   3. the folders of $TFLA_NVRTC_SEARCH_PATH (':'-separated), each a folder holding libnvrtc
//      or a site-packages holding the wheel. The tfla Python package appends the sys.path
//      entries that hold the wheel before it loads libtfla;
//   4. $CUDA_HOME, else $CUDA_PATH: lib64/, lib/, targets/<arch>-linux/lib/;
//   5. the toolkit libtfla was built with (its library folder, fixed at build time);
//   6. the dynamic loader's path (LD_LIBRARY_PATH, ldconfig): libnvrtc.so.13, .so.12, .so.
// In each folder libnvrtc.so.13 is tried before libnvrtc.so.12 and libnvrtc.so.
//
// NVRTC dlopens its builtins library (libnvrtc-builtins.so.<major>.<minor>) by name when it
// compiles. A candidate counts as found only with that library beside it or on the loader
// path; tfla loads it from beside libnvrtc first, so NVRTC's own lookup finds it already loaded
// whatever LD_LIBRARY_PATH says.
#pragma once
#include <nvrtc.h>

#include <string>
#include <vector>

namespace tfla::rt {

#define TFLA_NVRTC_FUNCTIONS(X)                                                          \
  X(nvrtcVersion) X(nvrtcGetErrorString) X(nvrtcCreateProgram) X(nvrtcDestroyProgram)    \
  X(nvrtcCompileProgram) X(nvrtcGetProgramLogSize) X(nvrtcGetProgramLog)                 \
  X(nvrtcGetCUBINSize) X(nvrtcGetCUBIN) X(nvrtcGetPTXSize) X(nvrtcGetPTX)

struct Nvrtc {
#define TFLA_DECLARE(name) decltype(&::name) name = nullptr;
  TFLA_NVRTC_FUNCTIONS(TFLA_DECLARE)
#undef TFLA_DECLARE
  int major = 0, minor = 0;   // nvrtcVersion
  std::string path;           // the libnvrtc file loaded
  std::string found_by;       // which step of the search found it, e.g. "$CUDA_HOME"
  std::string builtins_path;  // the libnvrtc-builtins file loaded with it
};

// Where NVRTC came from, or why none loaded. Never throws.
struct NvrtcStatus {
  bool loaded = false;
  Nvrtc nvrtc;                     // valid when loaded
  std::string error;               // empty when loaded: "NVRTC not found: looked in ..."
  std::vector<std::string> tried;  // every candidate tried, with why it was rejected
};

// The process's NVRTC, searched for and loaded once (thread-safe). Never throws.
const NvrtcStatus& nvrtc_status();
// The loaded NVRTC. Throws tfla::Error(Compile) naming every place searched when none loads.
const Nvrtc& nvrtc();

}  // namespace tfla::rt
