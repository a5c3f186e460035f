// The CUDA Driver API, loaded lazily with dlopen("libcuda.so.1") on first use, so that the
// library, the CLI and the CPU tests run on machines with no driver. The only code that
// touches the Driver API lives in src/runtime.
#pragma once
#include <cuda.h>

#include <string>

namespace tfla::rt {

#define TFLA_DRIVER_FUNCTIONS(X)                                                              \
  X(cuInit) X(cuDriverGetVersion) X(cuDeviceGetCount) X(cuDeviceGet) X(cuDeviceGetName)       \
  X(cuDeviceGetAttribute) X(cuDeviceTotalMem) X(cuDevicePrimaryCtxRetain)                     \
  X(cuCtxGetCurrent) X(cuCtxSetCurrent) X(cuCtxGetDevice) X(cuCtxSynchronize)                 \
  X(cuModuleLoadData) X(cuModuleUnload) X(cuModuleGetFunction) X(cuFuncSetAttribute)          \
  X(cuFuncGetAttribute) X(cuLaunchKernel) X(cuMemAlloc) X(cuMemFree) X(cuMemAllocAsync)       \
  X(cuMemFreeAsync) X(cuMemcpyHtoD) X(cuMemcpyDtoH) X(cuMemsetD8) X(cuMemsetD8Async)          \
  X(cuMemsetD32Async) X(cuStreamCreate) X(cuStreamDestroy) X(cuStreamSynchronize)             \
  X(cuEventCreate) X(cuEventDestroy) X(cuEventRecord) X(cuEventSynchronize)                   \
  X(cuEventElapsedTime) X(cuGetErrorName) X(cuGetErrorString) X(cuMemGetInfo)                 \
  X(cuPointerGetAttribute) X(cuMemcpyDtoDAsync) X(cuLaunchKernelEx)                     \
  X(cuTensorMapEncodeTiled) X(cuOccupancyMaxActiveClusters)

struct Driver {
#define TFLA_DECLARE(name) decltype(&::name) name = nullptr;
  TFLA_DRIVER_FUNCTIONS(TFLA_DECLARE)
#undef TFLA_DECLARE
  int version = 0;
};

// The loaded driver, cuInit done. Throws tfla::Error(NoDriver) naming what is missing.
const Driver& driver();
// True when a driver loads and reports at least one device; never throws. why: the reason.
bool driver_available(std::string* why = nullptr);
// Throws tfla::Error(Cuda) with the error's name and string when r != CUDA_SUCCESS.
void check(CUresult r, const char* what);

}  // namespace tfla::rt

#define TFLA_CU(call) ::tfla::rt::check(::tfla::rt::driver().call, #call)
