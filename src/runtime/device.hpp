// The device the library runs on: a current CUDA context (the caller's, or the primary context
// of device $TFLA_DEVICE / 0 made current) and its properties.
#pragma once
#include <cuda.h>

#include "tfla/tfla.hpp"

namespace tfla::rt {

// Makes sure a context is current on this thread and returns its device ordinal.
// Throws Error(NoDriver) without a driver or device.
int ensure_context();
// Properties of a device (cached). Throws like ensure_context.
const DeviceInfo& device_info(int ordinal);
// The NVRTC arch for a compute capability: sm_90a on Hopper (wgmma/TMA/setmaxnreg), else sm_XY.
std::string arch_for(int cc_major, int cc_minor);

}  // namespace tfla::rt
