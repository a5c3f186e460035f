#include "runtime/kernel.hpp"

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>

#include "runtime/device.hpp"
#include "runtime/driver.hpp"
#include "runtime/embedded.hpp"
#include "runtime/log.hpp"
#include "runtime/nvrtc.hpp"
#include "tfla/tfla.hpp"

namespace tfla::rt {
namespace {
std::atomic<uint64_t> g_nvrtc_compiles{0};
std::atomic<CubinSource> g_source{nullptr};
}  // namespace

uint64_t nvrtc_compile_count() noexcept { return g_nvrtc_compiles.load(); }
void set_cubin_source(CubinSource source) noexcept { g_source.store(source); }

KernelSpec render(std::string family, std::string header, std::string function,
                  std::string params_type, std::vector<TemplateArg> template_args, int threads,
                  int smem_bytes, bool uses_smem_arg) {
  KernelSpec s;
  s.family = std::move(family);
  s.header = std::move(header);
  s.function = std::move(function);
  s.params_type = std::move(params_type);
  for (TemplateArg& a : template_args) {
    s.template_arg_names.push_back(std::move(a.name));
    s.template_args.push_back(std::move(a.value));
  }
  s.threads = threads;
  s.smem_bytes = smem_bytes;
  s.uses_smem_arg = uses_smem_arg;
  std::string args;
  for (const auto& a : s.template_args) args += (args.empty() ? "" : ",") + a;
  s.key = s.family + "<" + args + ">|t" + std::to_string(threads);
  return s;
}

std::string family_of_key(const std::string& key) { return key.substr(0, key.find('<')); }

KernelSpec with_min_blocks(KernelSpec spec, int min_blocks) {
  if (min_blocks <= 0 || min_blocks == spec.min_blocks) return spec;
  spec.min_blocks = min_blocks;
  spec.key += "|b" + std::to_string(min_blocks);
  return spec;
}

KernelSpec with_packed(KernelSpec spec) {
  if (spec.packed) return spec;
  spec.packed = true;
  spec.key += "|packed";
  return spec;
}

KernelSpec with_grid_dependent(KernelSpec spec) {
  if (spec.grid_dependent) return spec;
  spec.grid_dependent = true;
  spec.key += "|dep";
  return spec;
}

std::string KernelSpec::entry() const {
  std::string e = "tfla_" + family;
  for (char& c : e)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') c = '_';
  return e;
}

std::string KernelSpec::source() const {
  std::ostringstream o;
  std::string args;
  for (const auto& a : template_args) args += (args.empty() ? "" : ", ") + a;
  o << "// tfla kernel " << key << "\n" << (packed ? "#define TFLA_PACKED 1\n" : "") << "#include \"" << header
    << "\"\n"
    << "extern \"C\" __global__ void __launch_bounds__(" << threads
    << (min_blocks > 0 ? ", " + std::to_string(min_blocks) : std::string())
    << ") " << entry() << "(const __grid_constant__ " << params_type << " p) {\n";
  if (grid_dependent)
    o << "#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900\n"
      << "  asm volatile(\"griddepcontrol.wait;\" ::: \"memory\");\n"
      << "#endif\n";
  if (uses_smem_arg) {
    o << "  extern __shared__ __align__(16) char smem[];\n"
      << "  " << function << "<" << args << ">(p, smem);\n";
  } else {
    o << "  " << function << "<" << args << ">(p);\n";
  }
  o << "}\n";
  return o.str();
}

std::vector<std::string> compile_options(const std::string& arch) {
  return {"--gpu-architecture=" + arch, "-std=c++17", "-lineinfo", "-DTFLA_NVRTC=1"};
}

void nvrtc_version(int* major, int* minor) {
  const NvrtcStatus& st = nvrtc_status();
  *major = st.loaded ? st.nvrtc.major : 0;
  *minor = st.loaded ? st.nvrtc.minor : 0;
}

namespace {
void nvrtc_check(nvrtcResult r, const char* what, const KernelSpec& spec, const std::string& log) {
  if (r == NVRTC_SUCCESS) return;
  throw Error(ErrorCode::Compile,
              std::string("NVRTC ") + what + " failed for kernel " + spec.key + ": " +
                  nvrtc().nvrtcGetErrorString(r),
              "kernel: " + spec.key + "\ntemplate arguments: " + [&] {
                std::string a;
                for (size_t i = 0; i < spec.template_args.size(); ++i)
                  a += (i < spec.template_arg_names.size() ? spec.template_arg_names[i] + "=" : "") +
                       spec.template_args[i] + " ";
                return a;
              }() + "\nNVRTC log:\n" + log);
}
}  // namespace

namespace {
// Compiles spec for arch; out.cubin gets the cubin, or the PTX text where ptx.
CompiledKernel compile_program(const KernelSpec& spec, const std::string& arch, bool ptx) {
  const Nvrtc& nv = nvrtc();  // throws, naming where it looked, when there is none
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<const char*> names, texts;
  for (size_t i = 0; i < kNumEmbeddedTemplates; ++i) {
    names.push_back(kEmbeddedTemplates[i].name);
    texts.push_back(kEmbeddedTemplates[i].text);
  }
  const std::string src = spec.source();
  nvrtcProgram prog = nullptr;
  nvrtc_check(nv.nvrtcCreateProgram(&prog, src.c_str(), (spec.family + ".cu").c_str(),
                                 static_cast<int>(names.size()), texts.data(), names.data()),
              "create", spec, "");
  struct Guard {
    nvrtcProgram* p;
    const Nvrtc& nv;
    ~Guard() { nv.nvrtcDestroyProgram(p); }
  } guard{&prog, nv};
  auto opts = compile_options(arch);
  // Diagnostics only (not part of any cache key): ptxas register/spill report in the log.
  if (std::getenv("TFLA_PTXAS_VERBOSE")) opts.push_back("--ptxas-options=-v");
  std::vector<const char*> copts;
  for (const auto& o : opts) copts.push_back(o.c_str());
  g_nvrtc_compiles.fetch_add(1);
  const nvrtcResult r = nv.nvrtcCompileProgram(prog, static_cast<int>(copts.size()), copts.data());
  size_t log_size = 0;
  nv.nvrtcGetProgramLogSize(prog, &log_size);
  std::string log(log_size, '\0');
  if (log_size) nv.nvrtcGetProgramLog(prog, log.data());
  while (!log.empty() && (log.back() == '\0' || log.back() == '\n')) log.pop_back();
  nvrtc_check(r, "compile", spec, log + "\nsource:\n" + src);
  CompiledKernel out;
  size_t size = 0;
  if (ptx) {
    nvrtc_check(nv.nvrtcGetPTXSize(prog, &size), "get ptx size", spec, log);
    out.cubin.resize(size);
    nvrtc_check(nv.nvrtcGetPTX(prog, out.cubin.data()), "get ptx", spec, log);
    while (!out.cubin.empty() && out.cubin.back() == '\0') out.cubin.pop_back();
  } else {
    nvrtc_check(nv.nvrtcGetCUBINSize(prog, &size), "get cubin size", spec, log);
    out.cubin.resize(size);
    nvrtc_check(nv.nvrtcGetCUBIN(prog, out.cubin.data()), "get cubin", spec, log);
  }
  out.arch = arch;
  out.log = log;
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  log_debug("compiled {} for {} in {:.0f} ms ({} bytes)", spec.key, arch, ms, size);
  return out;
}
}  // namespace

CompiledKernel compile(const KernelSpec& spec, const std::string& arch) { return compile_program(spec, arch, false); }

std::string compile_ptx(const KernelSpec& spec, const std::string& arch) {
  return compile_program(spec, arch, true).cubin;
}

LoadedKernel::LoadedKernel(CUmodule module, CUfunction fn, int threads, int smem_bytes,
                           std::string key, bool sm90, bool grid_dependent)
    : module_(module),
      fn_(fn),
      threads_(threads),
      smem_bytes_(smem_bytes),
      key_(std::move(key)),
      sm90_(sm90),
      grid_dependent_(grid_dependent) {
  for (auto& a : active_clusters_) a.store(-1, std::memory_order_relaxed);
}

LoadedKernel::~LoadedKernel() {
  std::string why;
  if (module_ && driver_available(&why)) driver().cuModuleUnload(module_);
}

// Kernels take one parameter block, passed through kernelParams: the driver then copies it to
// the offset the cubin records for it. (A packed CU_LAUNCH_PARAM_BUFFER_POINTER buffer would
// put it at offset 0, but a block holding 64-byte aligned TMA descriptors starts 48 bytes into
// the parameter space on sm_90, whose start is only 16-byte aligned.)
void LoadedKernel::launch(Grid3 grid, CUstream stream, const void* params, size_t bytes) const {
  (void)bytes;
  void* args[] = {const_cast<void*>(params)};
  const CUresult r = driver().cuLaunchKernel(fn_, grid.x, grid.y, grid.z, threads_, 1, 1,
                                             smem_bytes_, stream, args, nullptr);
  if (r != CUDA_SUCCESS) check(r, ("cuLaunchKernel(" + key_ + ")").c_str());
}

void LoadedKernel::launch_ex(Grid3 grid, CUstream stream, const void* params, const CUlaunchAttribute& attr,
                             const char* what) const {
  void* args[] = {const_cast<void*>(params)};
  CUlaunchConfig lc{};
  lc.gridDimX = grid.x;
  lc.gridDimY = grid.y;
  lc.gridDimZ = grid.z;
  lc.blockDimX = static_cast<unsigned>(threads_);
  lc.blockDimY = 1;
  lc.blockDimZ = 1;
  lc.sharedMemBytes = static_cast<unsigned>(smem_bytes_);
  lc.hStream = stream;
  lc.attrs = const_cast<CUlaunchAttribute*>(&attr);
  lc.numAttrs = 1;
  const CUresult r = driver().cuLaunchKernelEx(&lc, fn_, args, nullptr);
  if (r != CUDA_SUCCESS) check(r, ("cuLaunchKernelEx(" + key_ + ", " + what + ")").c_str());
}

void LoadedKernel::launch_dependent(Grid3 grid, CUstream stream, const void* params, size_t bytes) const {
  if (!sm90_) return launch(grid, stream, params, bytes);
  CUlaunchAttribute attr{};
  attr.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
  attr.value.programmaticStreamSerializationAllowed = 1;
  launch_ex(grid, stream, params, attr, "programmatic dependent");
}

namespace {
CUlaunchAttribute cluster_attribute(unsigned cluster_x) {
  CUlaunchAttribute attr{};
  attr.id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
  attr.value.clusterDim.x = cluster_x;
  attr.value.clusterDim.y = 1;
  attr.value.clusterDim.z = 1;
  return attr;
}
}  // namespace

void LoadedKernel::launch_cluster(Grid3 grid, unsigned cluster_x, CUstream stream, const void* params) const {
  if (!sm90_) throw Error(ErrorCode::Internal, "cluster launch of " + key_ + " on a device before sm_90");
  launch_ex(grid, stream, params, cluster_attribute(cluster_x), "clusters");
}

int LoadedKernel::max_active_clusters(unsigned cluster_x) const {
  if (!sm90_ || cluster_x < 1 || cluster_x > kMaxPortableCluster) return 0;
  std::atomic<int>& memo = active_clusters_[cluster_x];
  int n = memo.load(std::memory_order_relaxed);
  if (n >= 0) return n;
  const CUlaunchAttribute attr = cluster_attribute(cluster_x);
  CUlaunchConfig lc{};
  lc.gridDimX = cluster_x;
  lc.gridDimY = 1;
  lc.gridDimZ = 1;
  lc.blockDimX = static_cast<unsigned>(threads_);
  lc.blockDimY = 1;
  lc.blockDimZ = 1;
  lc.sharedMemBytes = static_cast<unsigned>(smem_bytes_);
  lc.attrs = const_cast<CUlaunchAttribute*>(&attr);
  lc.numAttrs = 1;
  n = 0;
  if (driver().cuOccupancyMaxActiveClusters(&n, fn_, &lc) != CUDA_SUCCESS) n = 0;  // 0: never clusters
  memo.store(n, std::memory_order_relaxed);
  return n;
}

int LoadedKernel::registers() const {
  int v = 0;
  check(driver().cuFuncGetAttribute(&v, CU_FUNC_ATTRIBUTE_NUM_REGS, fn_), "cuFuncGetAttribute");
  return v;
}
int LoadedKernel::local_bytes() const {
  int v = 0;
  check(driver().cuFuncGetAttribute(&v, CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, fn_),
        "cuFuncGetAttribute");
  return v;
}

std::unique_ptr<LoadedKernel> load(const CompiledKernel& compiled, const KernelSpec& spec) {
  const Driver& d = driver();
  CUmodule mod = nullptr;
  check(d.cuModuleLoadData(&mod, compiled.cubin.data()), ("cuModuleLoadData(" + spec.key + ")").c_str());
  CUfunction fn = nullptr;
  CUresult r = d.cuModuleGetFunction(&fn, mod, spec.entry().c_str());
  if (r != CUDA_SUCCESS) {
    d.cuModuleUnload(mod);
    check(r, ("cuModuleGetFunction(" + spec.entry() + ", " + spec.key + ")").c_str());
  }
  if (spec.smem_bytes > 48 * 1024) {
    r = d.cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, spec.smem_bytes);
    if (r != CUDA_SUCCESS) {
      d.cuModuleUnload(mod);
      check(r, ("cuFuncSetAttribute(max dynamic smem = " + std::to_string(spec.smem_bytes) +
                ") for " + spec.key).c_str());
    }
  }
  // Programmatic dependent and cluster launches need compute capability 9.0+ (the current context's device).
  CUdevice dev = 0;
  int cc_major = 0;
  if (d.cuCtxGetDevice(&dev) == CUDA_SUCCESS)
    d.cuDeviceGetAttribute(&cc_major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
  return std::make_unique<LoadedKernel>(mod, fn, spec.threads, spec.smem_bytes, spec.key, cc_major >= 9,
                                        spec.grid_dependent);
}

namespace {
// A memo miss: the installed source's cubin (the store layer's disk cache) or a fresh compile,
// then loaded. A provided cubin that fails to load is compiled afresh and loaded again.
std::unique_ptr<LoadedKernel> fetch_and_load(const KernelSpec& spec, const DeviceInfo& dev) {
  const CubinSource source = g_source.load();
  if (!source) return load(compile(spec, dev.arch), spec);
  bool from_cache = false;
  CompiledKernel c = source(spec, dev, false, &from_cache);
  if (!from_cache) return load(c, spec);
  try {
    return load(c, spec);
  } catch (const Error& e) {
    log_warn("cached cubin of {} does not load ({}); recompiling it", spec.key, e.what());
  }
  return load(source(spec, dev, true, &from_cache), spec);
}
}  // namespace

const LoadedKernel& get_kernel(const KernelSpec& spec) {
  static std::mutex mu;
  static std::map<std::pair<CUcontext, std::string>, std::unique_ptr<LoadedKernel>> memo;
  const int ordinal = ensure_context();
  CUcontext ctx = nullptr;
  check(driver().cuCtxGetCurrent(&ctx), "cuCtxGetCurrent");
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_pair(ctx, spec.key);
  auto it = memo.find(key);
  if (it != memo.end()) return *it->second;
  const DeviceInfo& dev = device_info(ordinal);
  if (spec.smem_bytes > dev.smem_optin_bytes)
    throw Error(ErrorCode::Unsupported,
                "kernel " + spec.key + " needs " + std::to_string(spec.smem_bytes) +
                    " bytes of shared memory; " + dev.name + " allows " +
                    std::to_string(dev.smem_optin_bytes));
  auto loaded = fetch_and_load(spec, dev);
  return *memo.emplace(key, std::move(loaded)).first->second;
}

}  // namespace tfla::rt
