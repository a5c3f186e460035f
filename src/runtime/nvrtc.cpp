#include "runtime/nvrtc.hpp"

#include <dlfcn.h>
#include <link.h>

#include <cstdlib>
#include <filesystem>
#include <set>
#include <system_error>

#include "runtime/log.hpp"
#include "tfla/tfla.hpp"

#ifndef TFLA_BUILD_CUDA_LIBDIR
#define TFLA_BUILD_CUDA_LIBDIR ""
#endif

namespace tfla::rt {
namespace {
namespace fs = std::filesystem;

// File names in the order they are tried in a folder: the CUDA 13 NVRTC first (the toolkit
// tfla is built and tested with), then CUDA 12's, then the unversioned development link.
constexpr const char* kNames[] = {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"};

// Where the nvidia-cuda-nvrtc wheels put libnvrtc under site-packages.
struct WheelLayout {
  const char* dir;
  const char* file;
};
constexpr WheelLayout kWheels[] = {{"nvidia/cu13/lib", "libnvrtc.so.13"},       // CUDA 13
                                   {"nvidia/cuda_nvrtc/lib", "libnvrtc.so.12"}};  // CUDA 12

#if defined(__aarch64__)
constexpr const char* kTargetsLib = "targets/sbsa-linux/lib";
#else
constexpr const char* kTargetsLib = "targets/x86_64-linux/lib";
#endif

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);  // follows symlinks
}

// The file a dlopen handle maps ("" when unknown).
std::string mapped_path(void* handle) {
  link_map* lm = nullptr;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name) return lm->l_name;
  return {};
}

// The folder holding libtfla (this code), or "" when the loader does not say. Normalized: a
// library found through an RPATH is named like ".../tfla/bin/../lib/libtfla.so".
fs::path own_folder() {
  static const int anchor = 0;
  Dl_info info{};
  if (!dladdr(&anchor, &info) || !info.dli_fname || !*info.dli_fname) return {};
  std::error_code ec;
  fs::path p = fs::absolute(info.dli_fname, ec);
  return ec ? fs::path() : p.lexically_normal().parent_path();
}

class Search {
 public:
  explicit Search(NvrtcStatus& status) : st_(status) {}

  // Loads `file` (a path, or a bare name for the loader path) with its builtins library.
  // Returns true when it is the one; otherwise records why not.
  bool try_file(const std::string& file, const std::string& found_by) {
    if (!seen_.insert(file).second) return false;
    void* lib = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* e = dlerror();
      return reject(found_by, file, e ? e : "dlopen failed");
    }
    Nvrtc n;
    std::string missing;
#define TFLA_LOAD(name)                                                   \
  n.name = reinterpret_cast<decltype(n.name)>(dlsym(lib, #name));         \
  if (!n.name) missing += std::string(missing.empty() ? "" : ", ") + #name;
    TFLA_NVRTC_FUNCTIONS(TFLA_LOAD)
#undef TFLA_LOAD
    if (!missing.empty()) {
      dlclose(lib);
      return reject(found_by, file, "not NVRTC: lacks " + missing);
    }
    n.nvrtcVersion(&n.major, &n.minor);
    n.path = mapped_path(lib);
    if (n.path.empty()) n.path = file;
    const std::string version = std::to_string(n.major) + "." + std::to_string(n.minor);
    // NVRTC opens this by name when it compiles; loading it first (from beside libnvrtc when
    // it is there) makes that lookup find it.
    const std::string builtins = "libnvrtc-builtins.so." + version;
    const fs::path beside = fs::path(n.path).parent_path() / builtins;
    void* b = is_file(beside) ? dlopen(beside.c_str(), RTLD_NOW | RTLD_LOCAL) : nullptr;
    if (!b) b = dlopen(builtins.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!b) {
      dlclose(lib);
      return reject(found_by, file,
                    "NVRTC " + version + ", but its " + builtins +
                        " is neither beside it nor on the loader path");
    }
    n.builtins_path = mapped_path(b);
    n.found_by = found_by;
    st_.nvrtc = n;
    st_.loaded = true;
    return true;
  }

  // Tries each of kNames in `dir`; records the folder when it holds none of them.
  bool try_folder(const fs::path& dir, const std::string& found_by) {
    bool any = false;
    for (const char* name : kNames) {
      const fs::path p = dir / name;
      if (!is_file(p)) continue;
      any = true;
      if (try_file(p.string(), found_by)) return true;
    }
    if (!any) note(found_by + ": " + dir.string() + "/ (no libnvrtc.so.13, .so.12 or .so)");
    return false;
  }

  // Tries the wheels' layouts under `root` (a site-packages); true when one loaded.
  // Sets *found when a wheel's libnvrtc exists there.
  bool try_wheels(const fs::path& root, const std::string& found_by, bool* found) {
    for (const WheelLayout& w : kWheels) {
      const fs::path p = root / w.dir / w.file;
      if (!is_file(p)) continue;
      *found = true;
      if (try_file(p.string(), found_by)) return true;
    }
    return false;
  }

  void note(std::string line) { st_.tried.push_back(std::move(line)); }

 private:
  bool reject(const std::string& found_by, const std::string& file, const std::string& why) {
    note(found_by + ": " + file + " (" + why + ")");
    return false;
  }
  NvrtcStatus& st_;
  std::set<std::string> seen_;
};

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// Steps 2-6 of the search (nvrtc.hpp); true when one loaded.
bool search_all(Search& s) {
  // 2. the wheel beside libtfla
  const fs::path own = own_folder();
  if (!own.empty()) {
    std::string looked;
    bool found = false;
    fs::path a = own;
    for (int up = 0; up < 4 && !a.empty(); ++up, a = a.parent_path()) {
      if (s.try_wheels(a, "nvidia-cuda-nvrtc wheel beside libtfla", &found)) return true;
      looked += (looked.empty() ? "" : ", ") + a.string();
      if (a == a.root_path()) break;
    }
    if (!found)
      s.note("nvidia-cuda-nvrtc wheel beside libtfla: no nvidia/cu13/lib/libnvrtc.so.13 or "
             "nvidia/cuda_nvrtc/lib/libnvrtc.so.12 under " + looked);
  }
  // 3. $TFLA_NVRTC_SEARCH_PATH
  const std::string search_path = env("TFLA_NVRTC_SEARCH_PATH");
  for (size_t begin = 0; begin <= search_path.size() && !search_path.empty();) {
    size_t end = search_path.find(':', begin);
    if (end == std::string::npos) end = search_path.size();
    const std::string dir = search_path.substr(begin, end - begin);
    begin = end + 1;
    if (dir.empty()) continue;
    bool found = false;
    if (s.try_wheels(dir, "nvidia-cuda-nvrtc wheel in $TFLA_NVRTC_SEARCH_PATH", &found)) return true;
    if (!found && s.try_folder(dir, "$TFLA_NVRTC_SEARCH_PATH")) return true;
  }
  // 4. $CUDA_HOME / $CUDA_PATH
  const char* home_var = !env("CUDA_HOME").empty() ? "CUDA_HOME" : "CUDA_PATH";
  const std::string home = env(home_var);
  if (!home.empty()) {
    for (const char* sub : {"lib64", "lib", kTargetsLib})
      if (s.try_folder(fs::path(home) / sub, std::string("$") + home_var)) return true;
  } else {
    s.note("$CUDA_HOME, $CUDA_PATH: not set");
  }
  // 5. the toolkit libtfla was built with
  const std::string built = TFLA_BUILD_CUDA_LIBDIR;
  if (!built.empty() && s.try_folder(built, "the CUDA toolkit tfla was built with")) return true;
  // 6. the loader path
  for (const char* name : kNames)
    if (s.try_file(name, "the loader path (LD_LIBRARY_PATH, ldconfig)")) return true;
  return false;
}

NvrtcStatus load() {
  NvrtcStatus st;
  Search s(st);
  const std::string override_path = env("TFLA_NVRTC");
  bool ok = false;
  if (!override_path.empty()) {
    std::error_code ec;
    ok = fs::is_directory(override_path, ec) ? s.try_folder(override_path, "$TFLA_NVRTC")
                                             : s.try_file(override_path, "$TFLA_NVRTC");
  } else {
    ok = search_all(s);
  }
  if (ok) {
    log_debug("NVRTC {}.{} from {} ({}), builtins {}", st.nvrtc.major, st.nvrtc.minor,
              st.nvrtc.path, st.nvrtc.found_by, st.nvrtc.builtins_path);
    return st;
  }
  std::string looked;
  for (const auto& t : st.tried) looked += "\n  " + t;
  st.error = override_path.empty()
                 ? "NVRTC not found (kernels cannot be compiled); looked in:" + looked +
                       "\nInstall a CUDA toolkit (12 or newer) or the nvidia-cuda-nvrtc wheel "
                       "(pip install nvidia-cuda-nvrtc), or set TFLA_NVRTC to a libnvrtc.so"
                 : "NVRTC not loaded from $TFLA_NVRTC=" + override_path + ":" + looked;
  log_debug("{}", st.error);
  return st;
}

}  // namespace

const NvrtcStatus& nvrtc_status() {
  static const NvrtcStatus st = load();
  return st;
}

const Nvrtc& nvrtc() {
  const NvrtcStatus& st = nvrtc_status();
  if (!st.loaded) throw Error(ErrorCode::Compile, st.error);
  return st.nvrtc;
}

}  // namespace tfla::rt
