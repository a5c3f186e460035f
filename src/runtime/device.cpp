#include "runtime/device.hpp"

#include <cstdlib>
#include <map>
#include <mutex>

#include "runtime/driver.hpp"
#include "tfla_util/env_flag.hpp"

namespace tfla::rt {

std::string arch_for(int cc_major, int cc_minor) {
  std::string a = "sm_" + std::to_string(cc_major) + std::to_string(cc_minor);
  if (cc_major == 9 && cc_minor == 0) a += "a";
  return a;
}

int ensure_context() {
  int ordinal = 0;  // read first: a bad TFLA_DEVICE is an error on any machine
  try {
    ordinal = static_cast<int>(util::env_int("TFLA_DEVICE", 0, 0, 1 << 20));
  } catch (const std::invalid_argument& e) {
    throw Error(ErrorCode::InvalidArgument, e.what());
  }
  const Driver& d = driver();
  CUcontext ctx = nullptr;
  check(d.cuCtxGetCurrent(&ctx), "cuCtxGetCurrent");
  if (ctx) {
    CUdevice dev = 0;
    check(d.cuCtxGetDevice(&dev), "cuCtxGetDevice");
    return static_cast<int>(dev);
  }
  int count = 0;
  check(d.cuDeviceGetCount(&count), "cuDeviceGetCount");
  if (ordinal < 0 || ordinal >= count)
    throw Error(ErrorCode::InvalidArgument, "TFLA_DEVICE=" + std::to_string(ordinal) +
                                                " but only " + std::to_string(count) +
                                                " CUDA device(s) are visible");
  CUdevice dev = 0;
  check(d.cuDeviceGet(&dev, ordinal), "cuDeviceGet");
  check(d.cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");
  check(d.cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
  return ordinal;
}

const DeviceInfo& device_info(int ordinal) {
  static std::mutex mu;
  static std::map<int, DeviceInfo> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(ordinal);
  if (it != cache.end()) return it->second;
  const Driver& d = driver();
  CUdevice dev = 0;
  check(d.cuDeviceGet(&dev, ordinal), "cuDeviceGet");
  DeviceInfo info;
  info.ordinal = ordinal;
  char name[256] = {};
  check(d.cuDeviceGetName(name, sizeof(name), dev), "cuDeviceGetName");
  info.name = name;
  auto attr = [&](CUdevice_attribute a) {
    int v = 0;
    check(d.cuDeviceGetAttribute(&v, a, dev), "cuDeviceGetAttribute");
    return v;
  };
  info.cc_major = attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
  info.cc_minor = attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
  info.sm_count = attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
  info.l2_bytes = attr(CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE);
  info.smem_optin_bytes = attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
  info.smem_per_sm_bytes = attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR);
  size_t total = 0;
  check(d.cuDeviceTotalMem(&total, dev), "cuDeviceTotalMem");
  info.total_memory_bytes = static_cast<int64_t>(total);
  info.arch = arch_for(info.cc_major, info.cc_minor);
  return cache.emplace(ordinal, info).first->second;
}

}  // namespace tfla::rt
