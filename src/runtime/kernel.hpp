// The runtime pipeline, one verb per step:
//   KernelSpec (rendered source) -> compile() -> CompiledKernel (cubin) -> load() -> LoadedKernel
//   -> launch(). get_kernel() memoizes the chain per (context, key) so a hot call does no
//   rendering, no compiling and no hashing of source text.
#pragma once
#include <cuda.h>

#include <array>
#include <atomic>
#include <cstdint>

#include <memory>
#include <string>
#include <vector>

#include "tfla/tfla.hpp"

namespace tfla::rt {

// A rendered kernel: one extern "C" entry, named after its family (entry()), that calls a
// template instantiation.
// One template argument of a rendered kernel: the name of its parameter in the header's template
// list (tests/unit/test_kernel_signatures.cpp holds the names to the header) and its value.
struct TemplateArg {
  std::string name;
  std::string value;
};

struct KernelSpec {
  std::string key;       // unique, human readable: "<family>|<template args>|t<threads>"
  std::string family;    // e.g. "mlstm_fwd_output"
  std::string header;    // e.g. "tfla/mlstm_fwd_output.cuh"
  std::string function;  // e.g. "tfla::mlstm_fwd_output"
  std::string params_type;  // e.g. "tfla::MlstmFwdParams"
  std::vector<std::string> template_args;       // the values, in the header's order
  std::vector<std::string> template_arg_names;  // their parameters' names, same order
  int threads = 128;
  int smem_bytes = 0;        // dynamic shared memory per block
  bool uses_smem_arg = true; // the device function takes (params, smem)
  int min_blocks = 0;        // __launch_bounds__'s CTAs per SM (registers capped to fit); 0 = none
  bool packed = false;       // compiled with TFLA_PACKED=1: reads packed sequences' offsets (seq_span.cuh)
  // The entry begins with griddepcontrol.wait (sm_90+): nothing of the kernel runs before the
  // stream's previous kernel has completed with its memory visible, so it may be launched as a
  // programmatic dependent of it (LoadedKernel::launch_dependent). It triggers its own dependents
  // only as its CTAs exit (no launch_dependents): the next kernel's CTAs would otherwise sit
  // waiting on SMs the running kernel's last CTAs could use (PERF_NOTES v26).
  bool grid_dependent = false;
  std::string source() const;  // the rendered translation unit
  // The entry's name: "tfla_" + family, other characters than [A-Za-z0-9_] as '_' (what
  // profilers list, e.g. ncu --kernel-name tfla_mlstm_fwd_fused_sm90).
  std::string entry() const;
};
// The family a spec key ("<family><template args>|t<threads>...") was rendered for.
std::string family_of_key(const std::string& key);
// Renders a spec (fills key) from its parts.
KernelSpec render(std::string family, std::string header, std::string function,
                  std::string params_type, std::vector<TemplateArg> template_args, int threads,
                  int smem_bytes, bool uses_smem_arg = true);
// The same spec asking the compiler to fit min_blocks CTAs per SM (key and source change).
KernelSpec with_min_blocks(KernelSpec spec, int min_blocks);
// The same spec for packed sequences (key and source change: TFLA_PACKED=1).
KernelSpec with_packed(KernelSpec spec);
// The same spec launched as a programmatic dependent (key and source change: grid_dependent).
KernelSpec with_grid_dependent(KernelSpec spec);

struct CompiledKernel {
  std::string cubin;  // ELF bytes
  std::string arch;
  std::string log;    // NVRTC's log (warnings)
};
// The compile options used for an arch (part of the cache key).
std::vector<std::string> compile_options(const std::string& arch);
// Compiles with NVRTC for arch (e.g. "sm_90a"); needs no GPU. Throws Error(Compile) carrying
// the NVRTC log, the kernel's key and its template arguments.
CompiledKernel compile(const KernelSpec& spec, const std::string& arch);
// The PTX NVRTC makes of the kernel for a virtual arch (e.g. "compute_90a"), as text: what tests
// read to check the code the compiler front end emits (vector loads and stores, say).
std::string compile_ptx(const KernelSpec& spec, const std::string& arch);
void nvrtc_version(int* major, int* minor);

struct Grid3 {
  unsigned x = 1, y = 1, z = 1;
};

class LoadedKernel {
 public:
  // sm90: the device takes programmatic dependent launches and thread-block clusters (sm_90+).
  // grid_dependent: the spec's (its entry waits on the stream's previous kernel).
  LoadedKernel(CUmodule module, CUfunction fn, int threads, int smem_bytes, std::string key,
               bool sm90 = false, bool grid_dependent = false);
  ~LoadedKernel();
  LoadedKernel(const LoadedKernel&) = delete;
  LoadedKernel& operator=(const LoadedKernel&) = delete;
  // Launches on stream with one by-value parameter block of size bytes.
  void launch(Grid3 grid, CUstream stream, const void* params, size_t bytes) const;
  // The same as a programmatic dependent of the stream's previous kernel (cuLaunchKernelEx with
  // CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, sm_90+): it may be scheduled once
  // every CTA of that kernel has executed griddepcontrol.launch_dependents (or exited), and its
  // griddepcontrol.wait returns when that kernel has completed with its memory visible. Before
  // sm_90 a plain launch (stream order is then the dependency; griddepcontrol compiles to nothing).
  void launch_dependent(Grid3 grid, CUstream stream, const void* params, size_t bytes) const;
  // Launches in thread-block clusters of cluster_x x 1 x 1 CTAs (grid.x a multiple of cluster_x;
  // sm_90+, else Error(Internal)).
  void launch_cluster(Grid3 grid, unsigned cluster_x, CUstream stream, const void* params) const;
  // How many clusters of cluster_x CTAs of this kernel fit on the device at once
  // (cuOccupancyMaxActiveClusters, memoized); 0 where clusters are not available (before sm_90,
  // cluster_x outside 1..8, or the query fails).
  int max_active_clusters(unsigned cluster_x) const;
  bool sm90() const { return sm90_; }
  // Its entry begins with griddepcontrol.wait (KernelSpec::grid_dependent): launches may be
  // programmatic dependents.
  bool grid_dependent() const { return grid_dependent_; }
  const std::string& key() const { return key_; }
  int registers() const;
  int local_bytes() const;

 private:
  CUmodule module_;
  CUfunction fn_;
  int threads_, smem_bytes_;
  std::string key_;
  bool sm90_;
  bool grid_dependent_;
  static constexpr unsigned kMaxPortableCluster = 8;
  mutable std::array<std::atomic<int>, kMaxPortableCluster + 1> active_clusters_;  // -1: not asked yet

  void launch_ex(Grid3 grid, CUstream stream, const void* params, const CUlaunchAttribute& attr,
                 const char* what) const;
};
// Loads a cubin into the current context and sets its shared-memory limit.
std::unique_ptr<LoadedKernel> load(const CompiledKernel& compiled, const KernelSpec& spec);
// Memoized render/compile/load for the current context and device. Thread-safe.
const LoadedKernel& get_kernel(const KernelSpec& spec);

// Where get_kernel() takes a cubin on a memo miss: compile() with NVRTC unless a source is
// installed. The store layer (src/store) installs the disk cache's, so the runtime itself knows
// nothing of storage. The source sets *from_cache when the cubin was not compiled just now;
// `recompile`: the cubin it gave before did not load, compile afresh.
using CubinSource = CompiledKernel (*)(const KernelSpec& spec, const DeviceInfo& dev, bool recompile,
                                       bool* from_cache);
void set_cubin_source(CubinSource source) noexcept;

// NVRTC compilations (calls of compile() that reached nvrtcCompileProgram) made by this
// process so far. Thread-safe; never throws. A warm-cache test asserts it stays unchanged.
uint64_t nvrtc_compile_count() noexcept;

}  // namespace tfla::rt
