// The on-disk cubin cache: compiled kernels kept in the tuned-config cache file (tfla_cache's
// cubin table), so that a process with a warm cache reaches its first launch with no NVRTC
// call. get_kernel() consults it on a memo miss; `tfla compile` fills it ahead of time.
//
// Keys: cubin_key() hashes what determines a cubin's bytes (rendered source, embedded
// templates, compile options, arch, NVRTC version) and no device field, so a cubin compiled
// without a GPU (`tfla compile --arch sm_90a`) is found by a process on a real sm_90a GPU.
// Stored cubins carry a checksum (tfla_cache): a damaged one is a miss, never loaded.
//
// Environment: TFLA_CACHE (file; see tfla::cache::Cache::default_path), TFLA_CACHE_DISABLE=1
// (no disk cache: every memo miss compiles).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "runtime/kernel.hpp"
#include "tfla_cache/cache.hpp"

namespace tfla::store {

using rt::CompiledKernel;
using rt::KernelSpec;

// The cubin key of `spec` compiled for `arch`: 64 hex digits of
// content_hash_parts({spec.source(), compile_options(arch) joined by ' ', arch,
//                     "nvrtc <major>.<minor>", kTemplatesHash}).
// The templates hash is a part because the rendered source only #includes them. Renders the
// source and hashes it: call it on a memo miss only, never on the hot path.
std::string cubin_key(const KernelSpec& spec, const std::string& arch);

// A cubin cache on one cache file, or a disabled one. Thread-safe (tfla::cache::Cache
// serializes its calls). Never throws from get/put: a failing cache is logged and treated as
// a miss, because the cache may speed things up but must never stop a kernel from running.
class CubinStore {
 public:
  // Opens the cache file at `path` (ReadWrite: creating it; falling back to read-only when
  // it is not writable; ReadOnly: never writing). If it cannot be opened at all, the store
  // is disabled and why_disabled() says why (logged as a warning). Never throws.
  explicit CubinStore(const std::string& path, cache::OpenMode mode = cache::OpenMode::ReadWrite);
  // A store that holds nothing and stores nothing; why_disabled() = `why`.
  static CubinStore disabled(std::string why);
  // A store as the environment asks: disabled if TFLA_CACHE_DISABLE is set to anything but
  // "" or "0", else on Cache::default_path() (TFLA_CACHE, XDG_CACHE_HOME, HOME). Never throws.
  static CubinStore from_environment();
  // This process's store: from_environment(), made on the first call (lazily, once per
  // process; a forked child that calls it gets its own, as a Cache must not cross fork()).
  // Never throws.
  static CubinStore& process();

  CubinStore(CubinStore&&) noexcept = default;
  CubinStore& operator=(CubinStore&&) noexcept = default;
  CubinStore(const CubinStore&) = delete;
  CubinStore& operator=(const CubinStore&) = delete;

  bool enabled() const noexcept { return cache_ != nullptr; }
  bool writable() const noexcept { return cache_ && !cache_->read_only(); }
  const std::string& path() const noexcept { return path_; }
  const std::string& why_disabled() const noexcept { return why_; }
  // The cache itself (null when disabled), for tools that report on it.
  cache::Cache* cache() noexcept { return cache_.get(); }

  // The cubin stored under `key`; nullopt when absent, damaged, disabled or on an error
  // (logged). Never throws.
  std::optional<std::string> get(const std::string& key) const;
  // Stores (replacing) `cubin` under `key`. env_id labels it for pruning ("" = compiled ahead
  // of time, never pruned). Returns false when disabled, read-only or on an error (logged).
  // Never throws.
  bool put(const std::string& key, const std::string& arch, const std::string& kernel_name,
           const std::string& cubin, const std::string& env_id = "");

 private:
  CubinStore() = default;
  std::unique_ptr<cache::Cache> cache_;
  std::string path_, why_;
};

struct FetchedCubin {
  CompiledKernel compiled;  // the cubin (log empty when it came from the store)
  std::string key;          // cubin_key(spec, arch)
  bool from_cache = false;  // served by the store: no NVRTC call was made
  bool stored = false;      // compiled now and written to the store
  double ms = 0;            // wall time of the lookup and (on a miss) the compile
};

enum class Lookup { UseStore, Recompile };

// The cubin of `spec` for `arch`: the store's (no NVRTC call) unless `lookup` is Recompile
// or it has none; otherwise compiled with NVRTC and stored (replacing) under `env_id` when
// the store is writable. Logs hit/miss and time at debug level. Throws Error(Compile) like
// compile(); store failures are logged, never thrown.
FetchedCubin fetch_or_compile(CubinStore& store, const KernelSpec& spec, const std::string& arch,
                              const std::string& env_id = "", Lookup lookup = Lookup::UseStore);
// How many cubin lookups (fetch_or_compile with Lookup::UseStore) this process has made (tests
// count what a warm call does).
uint64_t cubin_lookup_count() noexcept;

// One spec's outcome in the compile pool: the cubin (fetched.compiled) or the error.
struct PooledCubin {
  bool ok = false;
  FetchedCubin fetched;
  std::string error, details;  // what() and details() of the Error when !ok
};
// The one parallel compile pool (tfla compile, the tuner): fetch_or_compile of every spec on
// `jobs` threads (0 = the hardware's), results by index. `done` (optional) is called after each
// spec, one call at a time. Never throws for a failed compile (it is in the result).
std::vector<PooledCubin> fetch_or_compile_all(CubinStore& store, const std::vector<KernelSpec>& specs,
                                              const std::string& arch, const std::string& env_id,
                                              Lookup lookup, int jobs,
                                              const std::function<void(size_t, const PooledCubin&)>& done = {});

}  // namespace tfla::store
