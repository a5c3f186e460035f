// tfla compile: deviceless NVRTC compilation of kernel template instantiations.
#include <atomic>
#include <chrono>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "args.hpp"
#include "commands.hpp"
#include "ops/kernel_space.hpp"
#include "runtime/kernel.hpp"

namespace tfla::cli {
namespace {

DType parse_dtype(const std::string& s) {
  if (s == "bf16") return DType::BF16;
  if (s == "fp16") return DType::FP16;
  if (s == "fp32") return DType::FP32;
  throw UsageError("unknown dtype '" + s + "' (bf16, fp16, fp32)");
}

std::vector<std::pair<int, int>> parse_dims(const std::string& s) {
  std::vector<std::pair<int, int>> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    const std::string item = s.substr(pos, end - pos);
    const size_t x = item.find('x');
    try {
      if (x == std::string::npos) throw std::invalid_argument(item);
      out.emplace_back(std::stoi(item.substr(0, x)), std::stoi(item.substr(x + 1)));
    } catch (const std::exception&) {
      throw UsageError("--dims expects DQKxDV[,DQKxDV...], got '" + s + "'");
    }
    pos = end + 1;
  }
  return out;
}

}  // namespace

int cmd_compile(const std::vector<std::string>& argv) {
  Args args(argv, {"all", "json", "verbose"}, {"arch", "dtype", "dims", "jobs", "emit"});
  ops::SpaceFilter filter;
  if (!args.flag("all") && !args.has("dtype") && !args.has("dims"))
    throw UsageError("say what to compile: --all, or --dtype and/or --dims");
  if (args.has("dtype")) {
    filter.dtypes.clear();
    std::string s = args.get("dtype");
    size_t pos = 0;
    while (pos <= s.size()) {
      size_t end = s.find(',', pos);
      if (end == std::string::npos) end = s.size();
      filter.dtypes.push_back(parse_dtype(s.substr(pos, end - pos)));
      pos = end + 1;
    }
  }
  if (args.has("dims")) filter.dims = parse_dims(args.get("dims"));
  const std::string arch = args.get("arch", "sm_90a");
  if (arch.rfind("sm_", 0) != 0) throw UsageError("--arch expects sm_XY[a], got '" + arch + "'");
  const std::vector<rt::KernelSpec> specs = ops::default_space_kernels(filter);
  const int jobs = static_cast<int>(
      args.get_int("jobs", std::max(1u, std::thread::hardware_concurrency())));
  if (jobs < 1) throw UsageError("--jobs must be >= 1");

  struct Result {
    bool ok = false;
    double ms = 0;
    size_t bytes = 0;
    std::string error;
  };
  std::vector<Result> results(specs.size());
  std::atomic<size_t> next{0};
  std::mutex mu;
  Progress progress("compiling for " + arch, specs.size());
  auto worker = [&] {
    for (size_t i = next++; i < specs.size(); i = next++) {
      const auto t0 = std::chrono::steady_clock::now();
      Result r;
      try {
        const rt::CompiledKernel c = rt::compile(specs[i], arch);
        r.ok = true;
        r.bytes = c.cubin.size();
        if (args.flag("verbose")) r.error = c.log;
        if (args.has("emit")) {
          std::string name = specs[i].key;
          for (char& ch : name)
            if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
          std::ofstream(args.get("emit") + "/" + name + ".cubin", std::ios::binary) << c.cubin;
        }
      } catch (const Error& e) {
        r.error = std::string(e.what()) + "\n" + e.details();
      }
      r.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::lock_guard<std::mutex> lock(mu);
      results[i] = r;
      progress.step(specs[i].key);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < jobs; ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  progress.done();

  size_t failed = 0;
  for (const auto& r : results) failed += r.ok ? 0 : 1;
  if (args.flag("json")) {
    nlohmann::json j;
    j["arch"] = arch;
    j["total"] = specs.size();
    j["failed"] = failed;
    j["kernels"] = nlohmann::json::array();
    for (size_t i = 0; i < specs.size(); ++i)
      j["kernels"].push_back({{"key", specs[i].key}, {"ok", results[i].ok}, {"ms", results[i].ms},
                              {"cubin_bytes", results[i].bytes}, {"error", results[i].error}});
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    for (size_t i = 0; i < specs.size(); ++i) {
      if (!results[i].ok)
        std::printf("FAILED %s\n%s\n", specs[i].key.c_str(), results[i].error.c_str());
      else if (args.flag("verbose"))
        std::printf("ok     %-100s %7.0f ms %8zu bytes\n%s\n", specs[i].key.c_str(), results[i].ms,
                    results[i].bytes, results[i].error.c_str());
    }
    std::printf("compiled %zu kernel instantiations for %s: %zu ok, %zu failed\n", specs.size(),
                arch.c_str(), specs.size() - failed, failed);
  }
  return failed ? kFailed : kOk;
}

}  // namespace tfla::cli
