// tfla compile: deviceless NVRTC compilation of kernel template instantiations, stored in the
// cubin cache (as compiled ahead of time: env-less, so prune never drops them) where a process
// on a GPU of that arch finds them and makes no NVRTC call.
#include <atomic>
#include <algorithm>
#include <chrono>
#include <cctype>
#include <climits>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "args.hpp"
#include "commands.hpp"
#include "output.hpp"
#include "ops/kernel_space.hpp"
#include "ops/problem_check.hpp"
#include "store/cubin_store.hpp"
#include "store/env_key.hpp"
#include "runtime/kernel.hpp"
#include "tfla_util/dtype_name.hpp"
#include "tfla_util/env_flag.hpp"

namespace tfla::cli {
namespace {

DType parse_dtype(const std::string& s) {
  if (std::optional<DType> d = util::parse_dtype(s)) return *d;
  throw UsageError("unknown dtype '" + s + "' (" + util::dtype_names() + ")");
}

// The items of a comma-separated list, empty ones included.
std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    out.push_back(s.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

// "A<sep>B[,A<sep>B...]": each item and its two integers; std::invalid_argument where an item is
// not two integers joined by sep.
struct PairItem {
  std::string item;
  int64_t a, b;
};
std::vector<PairItem> parse_pairs(const std::string& s, char sep) {
  std::vector<PairItem> out;
  for (const std::string& item : split_commas(s)) {
    const size_t at = item.find(sep);
    if (at == std::string::npos) throw std::invalid_argument(item);
    size_t used_a = 0, used_b = 0;
    const std::string a = item.substr(0, at), b = item.substr(at + 1);
    out.push_back({item, std::stoll(a, &used_a), std::stoll(b, &used_b)});
    if (used_a != a.size() || used_b != b.size()) throw std::invalid_argument(item);
  }
  return out;
}

std::vector<std::pair<int, int>> parse_dims(const std::string& s) {
  std::vector<PairItem> items;
  try {
    items = parse_pairs(s, 'x');
  } catch (const std::exception&) {
    throw UsageError("--dims expects DQKxDV[,DQKxDV...], got '" + s + "'");
  }
  std::vector<std::pair<int, int>> out;
  for (const PairItem& d : items) {
    // the library's head-dimension rule, named as it names it
    MlstmProblem p;
    p.B = p.NH = p.S = 1;
    p.Dqk = d.a;
    p.Dv = d.b;
    try {
      ops::check_problem(p);
    } catch (const Error& e) {
      throw UsageError("--dims " + d.item + ": " + e.what());
    }
    out.emplace_back(static_cast<int>(d.a), static_cast<int>(d.b));
  }
  return out;
}

// --packed N:MAXLEN[,...]: the (N, max_seqlen) shapes of packed calls.
std::vector<std::pair<int64_t, int64_t>> parse_packed(const std::string& s) {
  std::vector<PairItem> items;
  try {
    items = parse_pairs(s, ':');
  } catch (const std::exception&) {
    throw UsageError("--packed expects N:MAXLEN[,N:MAXLEN...] (sequences and their longest length), got '" + s +
                     "'");
  }
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const PairItem& x : items) {
    if (x.a < 1 || x.b < 1) throw UsageError("--packed " + x.item + ": N and MAXLEN must be >= 1");
    out.emplace_back(x.a, x.b);
  }
  return out;
}

// --arch: sm_<major><minor> with an optional "a" (arch-specific features, sm_90 and later), one
// of the CUDA archs the library's kernels build for (the mma.sync kernels need sm_80 or later).
void check_arch(const std::string& arch) {
  static const int kArchs[] = {80, 86, 87, 88, 89, 90, 100, 101, 103, 110, 120, 121};
  const char* const supported =
      "sm_80, sm_86, sm_87, sm_88, sm_89, sm_90, sm_100, sm_101, sm_103, sm_110, sm_120, sm_121; "
      "with an 'a' suffix from sm_90a on";
  std::string digits = arch.rfind("sm_", 0) == 0 ? arch.substr(3) : "";
  const bool suffix = !digits.empty() && digits.back() == 'a';
  if (suffix) digits.pop_back();
  if (digits.size() < 2 || digits.size() > 3 || digits.find_first_not_of("0123456789") != std::string::npos)
    throw UsageError("--arch expects sm_<major><minor>[a], e.g. sm_90a, got '" + arch + "'");
  const int cc = std::stoi(digits);
  if (std::find(std::begin(kArchs), std::end(kArchs), cc) == std::end(kArchs) || (suffix && cc < 90))
    throw UsageError("--arch " + arch + " is not supported (" + supported + ")");
}

}  // namespace

int cmd_compile(const std::vector<std::string>& argv) {
  Args args(argv, {"all", "json", "verbose", "no-cache", "force", "every-family"},
            {"arch", "dtype", "dims", "jobs", "emit", "cache", "packed", "heads"});
  ops::SpaceFilter filter;
  if (!args.flag("all") && !args.has("dtype") && !args.has("dims"))
    throw UsageError("say what to compile: --all, or --dtype and/or --dims");
  if (args.has("dtype")) {
    filter.dtypes.clear();
    for (const std::string& d : split_commas(args.get("dtype"))) filter.dtypes.push_back(parse_dtype(d));
  }
  if (args.has("dims")) filter.dims = parse_dims(args.get("dims"));
  if (args.has("heads") && !args.has("packed")) throw UsageError("--heads is the head count of --packed calls");
  if (args.has("packed")) {
    filter.packed = parse_packed(args.get("packed"));
    filter.packed_heads = args.get_int("heads", 8);
    for (auto [n, maxlen] : filter.packed) {  // the library's rules for such a call, named as it names them
      MlstmProblem p;
      p.B = 1;
      p.NH = filter.packed_heads;
      p.S = maxlen;
      p.Dqk = p.Dv = 64;
      p.num_seqs = n;
      p.max_seqlen = maxlen;
      try {
        ops::check_problem(p);
      } catch (const Error& e) {
        throw UsageError("--packed " + std::to_string(n) + ":" + std::to_string(maxlen) + " with --heads " +
                         std::to_string(filter.packed_heads) + ": " + e.what());
      }
    }
  }
  const std::string arch = args.get("arch", "sm_90a");
  check_arch(arch);
  cache::EnvKey env;
  try {
    env = store::deviceless_env_key(arch);
  } catch (const std::exception&) {
    throw UsageError("--arch expects sm_<major><minor>[a], e.g. sm_90a, got '" + arch + "'");
  }
  filter.arch = arch;
  if (args.flag("every-family") && args.has("packed"))
    throw UsageError("--every-family is for plain calls; --packed compiles what packed calls select");
  filter.every_family = args.flag("every-family");
  if (args.flag("no-cache") && (args.flag("force") || args.has("cache")))
    throw UsageError("--no-cache excludes --force and --cache");
  if (!args.positionals().empty()) throw UsageError("unexpected argument '" + args.positionals()[0] + "'");
  if (args.has("emit")) {
    std::error_code ec;
    if (!std::filesystem::is_directory(args.get("emit"), ec))
      throw UsageError("--emit " + args.get("emit") + ": not an existing directory");
  }
  const int jobs = static_cast<int>(
      args.get_int_in("jobs", std::max(1u, std::thread::hardware_concurrency()), 1, INT_MAX));
  bool no_cache_asked = args.flag("no-cache");  // no cache, on purpose: nothing to store
  try {
    no_cache_asked = no_cache_asked || util::env_flag("TFLA_CACHE_DISABLE", false);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  store::CubinStore store = args.flag("no-cache") ? store::CubinStore::disabled("--no-cache")
                         : args.has("cache")   ? store::CubinStore(args.get("cache"))
                                               : store::CubinStore::from_environment();
  if (!store.enabled() && !args.flag("no-cache"))
    std::fprintf(stderr, "tfla compile: not caching cubins: %s\n", store.why_disabled().c_str());
  else if (store.enabled() && !store.writable())
    std::fprintf(stderr, "tfla compile: %s is read-only: new cubins will not be stored\n",
                 store.path().c_str());
  const store::Lookup lookup = args.flag("force") ? store::Lookup::Recompile : store::Lookup::UseStore;
  const std::vector<rt::KernelSpec> specs = ops::default_space_kernels(filter);

  struct Result {
    bool ok = false;
    bool cached = false;  // found in the cache: not compiled
    bool stored = false;  // compiled and stored in the cache
    double ms = 0;
    size_t bytes = 0;
    std::string error;
  };
  std::vector<Result> results(specs.size());
  Progress progress("compiling for " + arch, specs.size());
  const std::vector<store::PooledCubin> pooled =
      store::fetch_or_compile_all(store, specs, arch, "", lookup, jobs, [&](size_t i, const store::PooledCubin&) {
        progress.step(specs[i].key);
      });
  for (size_t i = 0; i < specs.size(); ++i) {
    const store::PooledCubin& p = pooled[i];
    Result& r = results[i];
    r.ms = p.fetched.ms;
    if (!p.ok) {
      r.error = p.error + "\n" + p.details;
      continue;
    }
    const rt::CompiledKernel& c = p.fetched.compiled;
    r.ok = true;
    r.cached = p.fetched.from_cache;
    r.stored = p.fetched.stored;
    r.bytes = c.cubin.size();
    if (args.flag("verbose")) r.error = c.log;
    if (args.has("emit")) {
      std::string name = specs[i].key;
      for (char& ch : name)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      const std::string file = args.get("emit") + "/" + name + ".cubin";
      std::ofstream out(file, std::ios::binary);
      out << c.cubin;
      out.close();
      if (!out) {
        r.ok = false;
        r.error = "cannot write " + file;
      }
    }
  }
  progress.done();

  size_t failed = 0, cached = 0, stored = 0;
  for (const auto& r : results) {
    failed += r.ok ? 0 : 1;
    cached += r.cached ? 1 : 0;
    stored += r.stored ? 1 : 0;
  }
  const size_t compiled = specs.size() - failed - cached;
  // Compiled cubins that should have gone into the cache and did not (it could not be opened,
  // is read-only, or a write failed): a failure, unless no cache was asked for.
  const size_t unstored = no_cache_asked ? 0 : compiled - std::min(compiled, stored);
  if (args.flag("json")) {
    nlohmann::json j;
    j["arch"] = arch;
    j["total"] = specs.size();
    j["failed"] = failed;
    j["compiled"] = compiled;
    j["cached"] = cached;
    j["stored"] = stored;
    j["unstored"] = unstored;
    j["ok"] = failed == 0 && unstored == 0;
    j["cache"] = store.enabled() ? store.path() : "";
    j["templates_hash"] = env.templates_hash;
    j["kernels"] = nlohmann::json::array();
    for (size_t i = 0; i < specs.size(); ++i)
      j["kernels"].push_back({{"key", specs[i].key}, {"ok", results[i].ok}, {"ms", results[i].ms},
                              {"cubin_bytes", results[i].bytes}, {"cached", results[i].cached},
                              {"error", results[i].error}});
    print_json(j);
  } else {
    for (size_t i = 0; i < specs.size(); ++i) {
      if (!results[i].ok)
        std::printf("FAILED %s\n%s\n", specs[i].key.c_str(), results[i].error.c_str());
      else if (args.flag("verbose"))
        std::printf("%s %-100s %7.0f ms %8zu bytes\n%s\n", results[i].cached ? "cached" : "ok    ",
                    specs[i].key.c_str(), results[i].ms, results[i].bytes,
                    results[i].error.c_str());
    }
    std::printf("compiled %zu kernel instantiations for %s: %zu ok, %zu failed\n", specs.size(),
                arch.c_str(), specs.size() - failed, failed);
    if (store.enabled())
      std::printf("cache %s: %zu already cached (skipped%s), %zu compiled, %zu stored\n",
                  store.path().c_str(), cached, args.flag("force") ? "" : "; --force recompiles",
                  compiled, stored);
    else
      std::printf("cache: not used (%s)\n", store.why_disabled().c_str());
    if (unstored > 0)
      std::printf("FAILED to store %zu compiled cubins in the cache%s\n", unstored,
                  store.enabled() ? "" : (": " + store.why_disabled()).c_str());
  }
  return failed || unstored ? kFailed : kOk;
}

}  // namespace tfla::cli
