#include "runtime/driver.hpp"

#include <dlfcn.h>

#include <mutex>

#include "tfla/tfla.hpp"

namespace tfla::rt {
namespace {

struct Loaded {
  Driver drv;
  std::string error;  // empty when loaded
};

Loaded load() {
  Loaded out;
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* e = dlerror();
    out.error = std::string("no CUDA driver: could not load libcuda.so.1 (") + (e ? e : "?") +
                "); install the NVIDIA driver or run on a machine with a GPU";
    return out;
  }
  using GetProc = CUresult (*)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*);
  auto get_proc = reinterpret_cast<GetProc>(dlsym(lib, "cuGetProcAddress_v2"));
  if (!get_proc) {
    out.error = "the CUDA driver is too old: libcuda.so.1 has no cuGetProcAddress_v2 (need CUDA 12+)";
    return out;
  }
  // Ask for each entry point as of CUDA 12.8: the prototypes tfla calls through (cuda.h's
  // un-suffixed names) match that version. CUDA 13 changed some signatures under new suffixes
  // (cuCtxGetDevice_v13000 takes a context) that the un-suffixed declarations do not describe.
  constexpr int kApiVersion = 12080;
  std::string missing;
#define TFLA_LOAD(name)                                                                     \
  {                                                                                         \
    void* fn = nullptr;                                                                     \
    CUdriverProcAddressQueryResult q{};                                                     \
    if (get_proc(#name, &fn, kApiVersion, CU_GET_PROC_ADDRESS_DEFAULT, &q) != CUDA_SUCCESS || \
        !fn)                                                                                \
      missing += std::string(missing.empty() ? "" : ", ") + #name;                          \
    out.drv.name = reinterpret_cast<decltype(out.drv.name)>(fn);                            \
  }
  TFLA_DRIVER_FUNCTIONS(TFLA_LOAD)
#undef TFLA_LOAD
  if (!missing.empty()) {
    out.error = "the CUDA driver lacks functions tfla needs: " + missing;
    return out;
  }
  CUresult r = out.drv.cuInit(0);
  if (r != CUDA_SUCCESS) {
    const char* name = nullptr;
    out.drv.cuGetErrorName(r, &name);
    out.error = std::string("the CUDA driver loaded but cuInit failed: ") + (name ? name : "?") +
                (r == CUDA_ERROR_NO_DEVICE ? " (no CUDA device is visible)" : "");
    return out;
  }
  out.drv.cuDriverGetVersion(&out.drv.version);
  int count = 0;
  out.drv.cuDeviceGetCount(&count);
  if (count == 0) out.error = "the CUDA driver loaded but no CUDA device is visible";
  return out;
}

const Loaded& loaded() {
  static const Loaded l = load();
  return l;
}

}  // namespace

const Driver& driver() {
  const Loaded& l = loaded();
  if (!l.error.empty()) throw Error(ErrorCode::NoDriver, l.error);
  return l.drv;
}

bool driver_available(std::string* why) {
  const Loaded& l = loaded();
  if (why) *why = l.error;
  return l.error.empty();
}

void check(CUresult r, const char* what) {
  if (r == CUDA_SUCCESS) return;
  const Driver& d = loaded().drv;
  const char* name = nullptr;
  const char* str = nullptr;
  if (d.cuGetErrorName) d.cuGetErrorName(r, &name);
  if (d.cuGetErrorString) d.cuGetErrorString(r, &str);
  throw Error(ErrorCode::Cuda,
              std::string(what) + " failed: " + (name ? name : "CUDA error") + " (" +
                  (str ? str : "no description") + ")",
              name ? name : "");
}

}  // namespace tfla::rt
