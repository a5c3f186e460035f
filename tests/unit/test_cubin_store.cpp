// The cubin store (src/runtime/cubin_store): round trips through a cache file named by
// TFLA_CACHE, the disabled and read-only modes, the cubin key, and the environment keys.
// No NVRTC call is made here (nvrtc_compile_count() proves it); tests/nvrtc compiles for real.
#include "tfla_catch.hpp"
#include <cstdlib>

#include "ops/kernel_space.hpp"
#include "store/cubin_store.hpp"
#include "runtime/driver.hpp"
#include "store/env_key.hpp"
#include "test_cache_support.hpp"

using namespace tfla;
using tfla::cache::test::ScratchDir;

namespace {
// Sets an environment variable for the scope, restoring the old value.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    had_ = std::getenv(name) != nullptr;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_)
      ::setenv(name_, old_.c_str(), 1);
    else
      ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};
const std::string kFakeCubin = std::string(
    "\x7f"
    "ELF fake cubin bytes\0with a nul",
    31);
}  // namespace

TEST_CASE("a cubin stored through TFLA_CACHE is served by a new store on the same file",
          "[cubin_store]") {
  ScratchDir dir;
  ScopedEnv cache_env("TFLA_CACHE", dir.file("c.sqlite").c_str());
  ScopedEnv disable("TFLA_CACHE_DISABLE", nullptr);
  const rt::KernelSpec spec = ops::smoke_kernel(DType::BF16);
  const std::string key = store::cubin_key(spec, "sm_90a");
  {
    store::CubinStore store = store::CubinStore::from_environment();
    REQUIRE(store.enabled());
    CHECK(store.writable());
    CHECK(store.path() == dir.file("c.sqlite"));
    CHECK_FALSE(store.get(key));
    CHECK(store.put(key, "sm_90a", spec.key, kFakeCubin));
  }
  store::CubinStore again = store::CubinStore::from_environment();  // as a new process would
  REQUIRE(again.get(key));
  CHECK(*again.get(key) == kFakeCubin);

  // fetch_or_compile serves it without NVRTC.
  const uint64_t before = rt::nvrtc_compile_count();
  const store::FetchedCubin f = store::fetch_or_compile(again, spec, "sm_90a");
  CHECK(f.from_cache);
  CHECK_FALSE(f.stored);
  CHECK(f.key == key);
  CHECK(f.compiled.cubin == kFakeCubin);
  CHECK(f.compiled.arch == "sm_90a");
  CHECK(rt::nvrtc_compile_count() == before);
}

TEST_CASE("TFLA_CACHE_DISABLE=1 turns the disk cache off", "[cubin_store]") {
  ScratchDir dir;
  ScopedEnv cache_env("TFLA_CACHE", dir.file("c.sqlite").c_str());
  {
    ScopedEnv disable("TFLA_CACHE_DISABLE", "1");
    store::CubinStore store = store::CubinStore::from_environment();
    CHECK_FALSE(store.enabled());
    CHECK(store.why_disabled().find("TFLA_CACHE_DISABLE") != std::string::npos);
    CHECK_FALSE(store.put("k", "sm_90a", "name", kFakeCubin));
    CHECK_FALSE(store.get("k"));
    CHECK_FALSE(cache::test::fs::exists(dir.file("c.sqlite")));  // not even created
  }
  ScopedEnv zero("TFLA_CACHE_DISABLE", "0");  // "0" means enabled
  CHECK(store::CubinStore::from_environment().enabled());
}

TEST_CASE("a read-only cache still serves cubins and stores none", "[cubin_store]") {
  ScratchDir dir;
  const std::string path = dir.file("c.sqlite");
  REQUIRE(store::CubinStore(path).put("key1", "sm_90a", "k1", kFakeCubin));
  store::CubinStore ro(path, cache::OpenMode::ReadOnly);
  REQUIRE(ro.enabled());
  CHECK_FALSE(ro.writable());
  REQUIRE(ro.get("key1"));
  CHECK(*ro.get("key1") == kFakeCubin);
  CHECK_FALSE(ro.put("key2", "sm_90a", "k2", kFakeCubin));
  CHECK_FALSE(ro.get("key2"));
}

TEST_CASE("a cache that cannot be opened disables the store instead of failing", "[cubin_store]") {
  ScratchDir dir;
  // A directory where the file should be: SQLite cannot open it.
  cache::test::fs::create_directories(dir.file("c.sqlite"));
  store::CubinStore store(dir.file("c.sqlite"));
  CHECK_FALSE(store.enabled());
  CHECK_FALSE(store.why_disabled().empty());
  CHECK_FALSE(store.get("anything"));
}

TEST_CASE("the cubin key depends on the kernel, arch and templates, never on the device",
          "[cubin_store]") {
  const rt::KernelSpec a = ops::smoke_kernel(DType::BF16);
  const rt::KernelSpec b = ops::smoke_kernel(DType::FP16);
  CHECK(store::cubin_key(a, "sm_90a") == store::cubin_key(a, "sm_90a"));
  CHECK(store::cubin_key(a, "sm_90a").size() == 64);
  CHECK(store::cubin_key(a, "sm_90a") != store::cubin_key(b, "sm_90a"));
  CHECK(store::cubin_key(a, "sm_90a") != store::cubin_key(a, "sm_90"));
  CHECK(store::cubin_key(a, "sm_90a") != store::cubin_key(a, "sm_80"));
}

TEST_CASE("the deviceless environment key records the arch and software, no device",
          "[cubin_store]") {
  const cache::EnvKey k = store::deviceless_env_key("sm_90a");
  CHECK(k.gpu_name.empty());
  CHECK(k.sm_count == 0);
  CHECK(k.l2_bytes == 0);
  CHECK(k.smem_optin_bytes == 0);
  CHECK(k.driver_version == 0);
  CHECK(k.cc_major == 9);
  CHECK(k.cc_minor == 0);
  CHECK(k.tfla_version == version());
  CHECK(k.nvrtc_major > 0);
  CHECK(store::is_deviceless(k));
  CHECK(k.templates_hash == store::templates_hash("sm_90a"));
  CHECK(k.templates_hash != store::templates_hash("sm_90"));  // the options name the arch
  CHECK(store::deviceless_env_key("sm_100a").cc_major == 10);
  CHECK(store::deviceless_env_key("sm_120").cc_minor == 0);
  CHECK(store::deviceless_env_key("sm_86").cc_minor == 6);
  for (const char* bad : {"90a", "sm_9", "sm_", "sm_90ab", "compute_90"})
    CHECK_THROWS_AS(store::deviceless_env_key(bad), Error);
}

TEST_CASE("the device environment key takes every device field", "[cubin_store]") {
  // current_env_key needs a driver for its version; without one it throws NoDriver.
  DeviceInfo dev;
  dev.name = "NVIDIA H100 80GB HBM3";
  dev.cc_major = 9;
  dev.sm_count = 132;
  dev.l2_bytes = 50331648;
  dev.smem_optin_bytes = 232448;
  dev.arch = "sm_90a";
  std::string why;
  if (!rt::driver_available(&why)) {
    CHECK_THROWS_AS(store::current_env_key(dev), Error);
    return;
  }
  const cache::EnvKey k = store::current_env_key(dev);
  CHECK(k.gpu_name == dev.name);
  CHECK(k.sm_count == 132);
  CHECK(k.l2_bytes == 50331648);
  CHECK(k.smem_optin_bytes == 232448);
  CHECK(k.driver_version > 0);
  CHECK(k.templates_hash == store::deviceless_env_key("sm_90a").templates_hash);
  CHECK_FALSE(store::is_deviceless(k));
}
