// The cubin store with real NVRTC compilations (deviceless, sm_90a): the second request for a
// kernel, from the same store or a new one on the same file (as a new process would open),
// makes no NVRTC call and returns the same cubin.
#include "tfla_catch.hpp"
#include <cstdlib>
#include <filesystem>
#include <string>

#include "ops/kernel_space.hpp"
#include "store/cubin_store.hpp"

using namespace tfla;
namespace fs = std::filesystem;

namespace {
struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "tfla_cubin_nvrtc.XXXXXX").string();
    REQUIRE(::mkdtemp(t.data()));
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};
}  // namespace

TEST_CASE("a kernel compiled through the store is not compiled again", "[nvrtc][cubin_store]") {
  TempDir dir;
  const std::string file = (dir.path / "c.sqlite").string();
  const rt::KernelSpec spec = ops::fill_kernel(DType::BF16);

  store::CubinStore store(file);
  REQUIRE(store.writable());
  const uint64_t n0 = rt::nvrtc_compile_count();
  const store::FetchedCubin first = store::fetch_or_compile(store, spec, "sm_90a");
  CHECK_FALSE(first.from_cache);
  CHECK(first.stored);
  CHECK(first.compiled.cubin.size() > 1000);
  CHECK(rt::nvrtc_compile_count() == n0 + 1);

  const store::FetchedCubin second = store::fetch_or_compile(store, spec, "sm_90a");
  CHECK(second.from_cache);
  CHECK(rt::nvrtc_compile_count() == n0 + 1);
  CHECK(second.compiled.cubin == first.compiled.cubin);

  store::CubinStore reopened(file);  // a new process with a warm cache
  const store::FetchedCubin third = store::fetch_or_compile(reopened, spec, "sm_90a");
  CHECK(third.from_cache);
  CHECK(rt::nvrtc_compile_count() == n0 + 1);
  CHECK(third.compiled.cubin == first.compiled.cubin);

  // Recompile bypasses the lookup and overwrites; a disabled store always compiles.
  const store::FetchedCubin forced =
      store::fetch_or_compile(store, spec, "sm_90a", "", store::Lookup::Recompile);
  CHECK_FALSE(forced.from_cache);
  CHECK(forced.stored);
  CHECK(rt::nvrtc_compile_count() == n0 + 2);
  store::CubinStore off = store::CubinStore::disabled("test");
  CHECK_FALSE(store::fetch_or_compile(off, spec, "sm_90a").from_cache);
  CHECK(rt::nvrtc_compile_count() == n0 + 3);
}
