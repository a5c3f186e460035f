/* A stand-in libcuda.so.1 for timing tfla's host path on a machine without a GPU.

   It exports cuGetProcAddress_v2 and answers every Driver API function tfla loads
   (src/runtime/driver.hpp) with no device behind it: one device that reports an H200's
   attributes (compute capability 9.0, 132 SMs, 227 KiB of shared memory per block), "device"
   memory from malloc (copies are memcpy, memsets memset), and launches, module loads, events
   and tensor-map encodes that return CUDA_SUCCESS at once (a module's function is found only
   where a loaded cubin's symbols hold its name, as with the driver). No kernel runs, so
   outputs are whatever the buffers held: it is for host time (tfla bench overhead / step, the
   Python binding's calls) and for host paths that load cubins (tests/unit: `tfla cache
   verify`), not for results.

   Build and use (tools/dev/host_profile.sh does both):
     cc -O2 -shared -fPIC -I/usr/local/cuda/include tools/dev/stub_driver.c -o DIR/libcuda.so.1
     LD_LIBRARY_PATH=DIR build/tools/tfla bench step --batch 1 --tokens 1 */
#include <cuda.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define OK return CUDA_SUCCESS

static int g_ctx_dummy;
static CUcontext g_ctx = (CUcontext)&g_ctx_dummy;
static CUcontext g_current = NULL;
static int g_module_dummy, g_func_dummy, g_stream_dummy, g_event_dummy;

static CUresult s_cuInit(unsigned int f) { (void)f; OK; }
static CUresult s_cuDriverGetVersion(int* v) { *v = 13000; OK; }
static CUresult s_cuDeviceGetCount(int* n) { *n = 1; OK; }
static CUresult s_cuDeviceGet(CUdevice* d, int ordinal) {
  if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
  *d = 0;
  OK;
}
static CUresult s_cuDeviceGetName(char* name, int len, CUdevice d) {
  (void)d;
  strncpy(name, "tfla stub driver (H200 attributes)", (size_t)len);
  if (len > 0) name[len - 1] = 0;
  OK;
}
static CUresult s_cuDeviceGetAttribute(int* v, CUdevice_attribute a, CUdevice d) {
  (void)d;
  switch (a) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = 9; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = 0; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = 132; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *v = 232448; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: *v = 233472; break;
    case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: *v = 62914560; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *v = 32; break;
    default: *v = 0; break;
  }
  OK;
}
static CUresult s_cuDeviceTotalMem(size_t* b, CUdevice d) { (void)d; *b = (size_t)141 << 30; OK; }
static CUresult s_cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice d) { (void)d; *c = g_ctx; OK; }
static CUresult s_cuCtxGetCurrent(CUcontext* c) { *c = g_current; OK; }
static CUresult s_cuCtxSetCurrent(CUcontext c) { g_current = c; OK; }
static CUresult s_cuCtxGetDevice(CUdevice* d) {
  if (!g_current) return CUDA_ERROR_INVALID_CONTEXT;
  *d = 0;
  OK;
}
static CUresult s_cuCtxSynchronize(void) { OK; }
/* The last loaded image, while it is an ELF file (a cubin): its bytes up to the end of the
   section header table, where cuModuleGetFunction looks for the entry's name as the driver
   would in the symbol table (any other image: every name is found). */
static const unsigned char* g_image;
static size_t g_image_bytes;
static CUresult s_cuModuleLoadData(CUmodule* m, const void* image) {
  const unsigned char* e = (const unsigned char*)image;
  g_image = NULL;
  g_image_bytes = 0;
  if (e && e[0] == 0x7f && e[1] == 'E' && e[2] == 'L' && e[3] == 'F' && e[4] == 2) {
    uint64_t shoff;
    uint16_t shentsize, shnum;
    memcpy(&shoff, e + 0x28, 8);
    memcpy(&shentsize, e + 0x3a, 2);
    memcpy(&shnum, e + 0x3c, 2);
    g_image = e;
    g_image_bytes = (size_t)shoff + (size_t)shentsize * shnum;
  }
  *m = (CUmodule)&g_module_dummy;
  OK;
}
static CUresult s_cuModuleUnload(CUmodule m) { (void)m; OK; }
static CUresult s_cuModuleGetFunction(CUfunction* f, CUmodule m, const char* name) {
  (void)m;
  if (g_image) {
    const size_t n = strlen(name) + 1; /* with its terminator: a whole symbol name */
    int found = 0;
    for (size_t i = 0; !found && i + n <= g_image_bytes; ++i) found = memcmp(g_image + i, name, n) == 0;
    if (!found) return CUDA_ERROR_NOT_FOUND;
  }
  *f = (CUfunction)&g_func_dummy;
  OK;
}
static CUresult s_cuFuncSetAttribute(CUfunction f, CUfunction_attribute a, int v) { (void)f; (void)a; (void)v; OK; }
static CUresult s_cuFuncGetAttribute(int* v, CUfunction_attribute a, CUfunction f) {
  (void)f;
  switch (a) {
    case CU_FUNC_ATTRIBUTE_NUM_REGS: *v = 128; break;
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *v = 232448; break;
    case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
    default: *v = 0; break;
  }
  OK;
}
static CUresult s_cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                 unsigned bz, unsigned smem, CUstream s, void** params, void** extra) {
  (void)f; (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)smem; (void)s; (void)params;
  (void)extra;
  OK;
}
static CUresult s_cuLaunchKernelEx(const CUlaunchConfig* c, CUfunction f, void** params, void** extra) {
  (void)c; (void)f; (void)params; (void)extra;
  OK;
}
/* Room for 16 clusters: enough for the step's one-launch cluster path at small batches. */
static CUresult s_cuOccupancyMaxActiveClusters(int* n, CUfunction f, const CUlaunchConfig* c) {
  (void)f;
  *n = c && c->numAttrs ? 16 : 0;
  OK;
}
static CUresult s_cuMemAlloc(CUdeviceptr* p, size_t n) {
  void* m = aligned_alloc(256, (n + 255) / 256 * 256 + 256);
  if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
  *p = (CUdeviceptr)(uintptr_t)m;
  OK;
}
static CUresult s_cuMemFree(CUdeviceptr p) { free((void*)(uintptr_t)p); OK; }
static CUresult s_cuMemAllocAsync(CUdeviceptr* p, size_t n, CUstream s) { (void)s; return s_cuMemAlloc(p, n); }
static CUresult s_cuMemFreeAsync(CUdeviceptr p, CUstream s) { (void)s; return s_cuMemFree(p); }
static CUresult s_cuMemcpyHtoD(CUdeviceptr d, const void* h, size_t n) { memcpy((void*)(uintptr_t)d, h, n); OK; }
static CUresult s_cuMemcpyDtoH(void* h, CUdeviceptr d, size_t n) { memcpy(h, (void*)(uintptr_t)d, n); OK; }
static CUresult s_cuMemcpyDtoDAsync(CUdeviceptr d, CUdeviceptr s, size_t n, CUstream st) {
  (void)st;
  memmove((void*)(uintptr_t)d, (void*)(uintptr_t)s, n);
  OK;
}
static CUresult s_cuMemsetD8(CUdeviceptr d, unsigned char v, size_t n) { memset((void*)(uintptr_t)d, v, n); OK; }
static CUresult s_cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, CUstream s) {
  (void)s;
  return s_cuMemsetD8(d, v, n);
}
static CUresult s_cuMemsetD32Async(CUdeviceptr d, unsigned int v, size_t n, CUstream s) {
  (void)s;
  unsigned int* p = (unsigned int*)(uintptr_t)d;
  for (size_t i = 0; i < n; ++i) p[i] = v;
  OK;
}
static CUresult s_cuStreamCreate(CUstream* s, unsigned int f) { (void)f; *s = (CUstream)&g_stream_dummy; OK; }
static CUresult s_cuStreamDestroy(CUstream s) { (void)s; OK; }
static CUresult s_cuStreamSynchronize(CUstream s) { (void)s; OK; }
static CUresult s_cuEventCreate(CUevent* e, unsigned int f) { (void)f; *e = (CUevent)&g_event_dummy; OK; }
static CUresult s_cuEventDestroy(CUevent e) { (void)e; OK; }
static CUresult s_cuEventRecord(CUevent e, CUstream s) { (void)e; (void)s; OK; }
static CUresult s_cuEventSynchronize(CUevent e) { (void)e; OK; }
static CUresult s_cuEventElapsedTime(float* ms, CUevent a, CUevent b) { (void)a; (void)b; *ms = 0.f; OK; }
static CUresult s_cuGetErrorName(CUresult r, const char** s) { (void)r; *s = "CUDA_ERROR_STUB"; OK; }
static CUresult s_cuGetErrorString(CUresult r, const char** s) { (void)r; *s = "the stub driver reports an error"; OK; }
static CUresult s_cuMemGetInfo(size_t* f, size_t* t) { *f = (size_t)140 << 30; *t = (size_t)141 << 30; OK; }
static CUresult s_cuPointerGetAttribute(void* data, CUpointer_attribute a, CUdeviceptr p) {
  (void)p;
  switch (a) {
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE: *(unsigned int*)data = CU_MEMORYTYPE_DEVICE; break;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: *(int*)data = 0; break;
    case CU_POINTER_ATTRIBUTE_CONTEXT: *(CUcontext*)data = g_ctx; break;
    default: return CUDA_ERROR_INVALID_VALUE;
  }
  OK;
}
static CUresult s_cuTensorMapEncodeTiled(CUtensorMap* m, CUtensorMapDataType t, cuuint32_t rank, void* base,
                                         const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                                         const cuuint32_t* estrides, CUtensorMapInterleave il, CUtensorMapSwizzle sw,
                                         CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob) {
  (void)t; (void)rank; (void)base; (void)dims; (void)strides; (void)box; (void)estrides; (void)il; (void)sw; (void)l2;
  (void)oob;
  memset(m, 0, sizeof(*m));
  OK;
}

struct Entry {
  const char* name;
  void* fn;
};
#define E(n) {#n, (void*)s_##n}
static const struct Entry kTable[] = {
    E(cuInit), E(cuDriverGetVersion), E(cuDeviceGetCount), E(cuDeviceGet), E(cuDeviceGetName),
    E(cuDeviceGetAttribute), E(cuDeviceTotalMem), E(cuDevicePrimaryCtxRetain), E(cuCtxGetCurrent),
    E(cuCtxSetCurrent), E(cuCtxGetDevice), E(cuCtxSynchronize), E(cuModuleLoadData), E(cuModuleUnload),
    E(cuModuleGetFunction), E(cuFuncSetAttribute), E(cuFuncGetAttribute), E(cuLaunchKernel), E(cuMemAlloc),
    E(cuMemFree), E(cuMemAllocAsync), E(cuMemFreeAsync), E(cuMemcpyHtoD), E(cuMemcpyDtoH), E(cuMemsetD8),
    E(cuMemsetD8Async), E(cuMemsetD32Async), E(cuStreamCreate), E(cuStreamDestroy), E(cuStreamSynchronize),
    E(cuEventCreate), E(cuEventDestroy), E(cuEventRecord), E(cuEventSynchronize), E(cuEventElapsedTime),
    E(cuGetErrorName), E(cuGetErrorString), E(cuMemGetInfo), E(cuPointerGetAttribute), E(cuMemcpyDtoDAsync),
    E(cuLaunchKernelEx), E(cuTensorMapEncodeTiled), E(cuOccupancyMaxActiveClusters),
};
#undef E

__attribute__((visibility("default"))) CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int version,
                                                                    cuuint64_t flags,
                                                                    CUdriverProcAddressQueryResult* status) {
  (void)version; (void)flags;
  for (size_t i = 0; i < sizeof(kTable) / sizeof(kTable[0]); ++i)
    if (strcmp(kTable[i].name, symbol) == 0) {
      *pfn = kTable[i].fn;
      if (status) *status = CU_GET_PROC_ADDRESS_SUCCESS;
      return CUDA_SUCCESS;
    }
  *pfn = NULL;
  if (status) *status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  return CUDA_ERROR_NOT_FOUND;
}
