#include "store/cubin_store.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime/embedded.hpp"
#include "store/env_key.hpp"
#include "runtime/log.hpp"
#include "tfla/tfla.hpp"
#include "tfla_cache/hash.hpp"
#include "tfla_util/env_flag.hpp"

namespace tfla::store {
namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// A boolean environment variable (1/0, true/false, yes/no, on/off); anything else is an error
// that names it.
bool env_flag(const char* name) {
  try {
    return util::env_flag(name, false);
  } catch (const std::invalid_argument& e) {
    throw Error(ErrorCode::InvalidArgument, e.what());
  }
}

}  // namespace


std::string cubin_key(const KernelSpec& spec, const std::string& arch) {
  std::string options;
  for (const auto& o : rt::compile_options(arch)) options += (options.empty() ? "" : " ") + o;
  int major = 0, minor = 0;
  rt::nvrtc_version(&major, &minor);
  const std::string nvrtc = "nvrtc " + std::to_string(major) + "." + std::to_string(minor);
  return cache::content_hash_parts({spec.source(), options, arch, nvrtc, rt::kTemplatesHash});
}

CubinStore::CubinStore(const std::string& path, cache::OpenMode mode) : path_(path) {
  try {
    cache_ = std::make_unique<cache::Cache>(cache::Cache::open(path, mode));
    if (cache_->recovered()) log_warn("cubin cache: {}", cache_->recovery_message());
    if (cache_->read_only() && mode == cache::OpenMode::ReadWrite)
      log_info("cubin cache {} is read-only ({}): cubins are read, never stored", path,
               cache_->read_only_reason());
  } catch (const std::exception& e) {  // CacheError, or bad_alloc from a huge file
    cache_.reset();
    why_ = std::string("cannot open the cache: ") + e.what();
    log_warn("cubin cache {} disabled, kernels will be compiled every run: {}", path, why_);
  }
}

CubinStore CubinStore::disabled(std::string why) {
  CubinStore s;
  s.why_ = std::move(why);
  return s;
}

CubinStore CubinStore::from_environment() {
  if (env_flag("TFLA_CACHE_DISABLE")) return disabled("TFLA_CACHE_DISABLE is set");
  return CubinStore(cache::Cache::default_path());
}

CubinStore& CubinStore::process() {
  static std::mutex mu;
  static std::unique_ptr<CubinStore> store;
  static pid_t owner = 0;
  std::lock_guard<std::mutex> lock(mu);
  if (store && owner != ::getpid()) {
    // A forked child: the parent's SQLite handle must not be used, nor closed, here.
    (void)store.release();  // leaked on purpose
  }
  if (!store) {
    store = std::make_unique<CubinStore>(from_environment());
    owner = ::getpid();
  }
  return *store;
}

std::optional<std::string> CubinStore::get(const std::string& key) const {
  if (!cache_) return std::nullopt;
  try {
    return cache_->get_cubin(key);
  } catch (const std::exception& e) {
    log_warn("cubin cache {}: lookup of {} failed, treating it as a miss: {}", path_, key,
             e.what());
    return std::nullopt;
  }
}

bool CubinStore::put(const std::string& key, const std::string& arch,
                     const std::string& kernel_name, const std::string& cubin,
                     const std::string& env_id) {
  if (!cache_ || cache_->read_only()) return false;
  try {
    cache_->put_cubin(key, arch, kernel_name, cubin, env_id);
    return true;
  } catch (const std::exception& e) {
    log_warn("cubin cache {}: storing {} ({}) failed: {}", path_, key, kernel_name, e.what());
    return false;
  }
}

namespace {
std::atomic<uint64_t> g_cubin_lookups{0};
}  // namespace

uint64_t cubin_lookup_count() noexcept { return g_cubin_lookups.load(); }

FetchedCubin fetch_or_compile(CubinStore& store, const KernelSpec& spec, const std::string& arch,
                              const std::string& env_id, Lookup lookup) {
  const auto t0 = std::chrono::steady_clock::now();
  FetchedCubin out;
  out.key = cubin_key(spec, arch);
  if (lookup == Lookup::UseStore) {
    g_cubin_lookups.fetch_add(1);
    if (std::optional<std::string> bytes = store.get(out.key)) {
      out.compiled.cubin = std::move(*bytes);
      out.compiled.arch = arch;
      out.from_cache = true;
      out.ms = ms_since(t0);
      log_debug("cubin cache hit: {} for {} ({} bytes) in {:.2f} ms", spec.key, arch,
                out.compiled.cubin.size(), out.ms);
      return out;
    }
  }
  out.compiled = compile(spec, arch);
  out.stored = store.put(out.key, arch, spec.key, out.compiled.cubin, env_id);
  out.ms = ms_since(t0);
  log_debug("cubin cache {}: {} for {} compiled in {:.0f} ms ({})",
            lookup == Lookup::Recompile ? "recompile" : "miss", spec.key, arch, out.ms,
            out.stored        ? "stored"
            : store.enabled() ? "not stored"
                              : "disk cache off");
  return out;
}

std::vector<PooledCubin> fetch_or_compile_all(CubinStore& store, const std::vector<KernelSpec>& specs,
                                              const std::string& arch, const std::string& env_id,
                                              Lookup lookup, int jobs,
                                              const std::function<void(size_t, const PooledCubin&)>& done) {
  std::vector<PooledCubin> out(specs.size());
  if (jobs <= 0) jobs = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::atomic<size_t> next{0};
  std::mutex mu;
  auto work = [&] {
    for (size_t i; (i = next++) < specs.size();) {
      PooledCubin r;
      try {
        r.fetched = fetch_or_compile(store, specs[i], arch, env_id, lookup);
        r.ok = true;
      } catch (const Error& e) {
        r.error = e.what();
        r.details = e.details();
      } catch (const std::exception& e) {
        r.error = e.what();
      }
      std::lock_guard<std::mutex> lock(mu);
      out[i] = std::move(r);
      if (done) done(i, out[i]);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < std::min<int>(jobs, static_cast<int>(specs.size())); ++t) pool.emplace_back(work);
  for (std::thread& t : pool) t.join();
  return out;
}

namespace {
// The runtime's cubin source: this process's store, keyed by the device's environment.
rt::CompiledKernel disk_cache_source(const KernelSpec& spec, const DeviceInfo& dev, bool recompile,
                                     bool* from_cache) {
  FetchedCubin f = fetch_or_compile(CubinStore::process(), spec, dev.arch, current_env_id(dev),
                                    recompile ? Lookup::Recompile : Lookup::UseStore);
  *from_cache = f.from_cache;
  return std::move(f.compiled);
}
// Installed when libtfla loads, before any call can reach get_kernel().
const bool installed = (rt::set_cubin_source(&disk_cache_source), true);
}  // namespace

}  // namespace tfla::store
