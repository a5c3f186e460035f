// tfla info: what this library is, what it was built with and what GPU it sees.
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "args.hpp"
#include "commands.hpp"
#include "output.hpp"
#include "runtime/embedded.hpp"
#include "tfla/tfla.h"
#include "tfla/tfla.hpp"
#include "tfla_cache/cache.hpp"
#include "tfla_util/env_flag.hpp"

namespace tfla::cli {
namespace {
std::string cache_path() { return cache::Cache::default_path(); }
// Indents every line after the first of a multi-line message.
std::string indent(const std::string& text, const std::string& pad) {
  std::string out;
  for (char c : text) {
    out += c;
    if (c == '\n') out += pad;
  }
  return out;
}
// TFLA_CACHE_DISABLE as the library reads it; a value that is not a boolean is an error.
bool cache_disabled() {
  try {
    return util::env_flag("TFLA_CACHE_DISABLE", false);
  } catch (const std::invalid_argument& e) {
    throw Error(ErrorCode::InvalidArgument, e.what());
  }
}
}  // namespace

int cmd_info(const std::vector<std::string>& argv) {
  Args args(argv, {"json"}, {});
  if (!args.positionals().empty()) throw UsageError("unexpected argument '" + args.positionals()[0] + "'");
  const bool disabled = cache_disabled();  // a bad TFLA_CACHE_DISABLE fails before any output
  const RuntimeInfo info = runtime_info();
  if (args.flag("json")) {
    nlohmann::json j;
    j["tfla_version"] = info.tfla_version;
    j["abi_version"] = TFLA_ABI_VERSION;
    j["nvrtc_version"] = std::to_string(info.nvrtc_major) + "." + std::to_string(info.nvrtc_minor);
    j["nvrtc_loaded"] = info.nvrtc_error.empty();
    j["nvrtc_path"] = info.nvrtc_path;
    j["nvrtc_found_by"] = info.nvrtc_found_by;
    j["nvrtc_builtins_path"] = info.nvrtc_builtins_path;
    j["nvrtc_error"] = info.nvrtc_error;
    j["templates_hash"] = rt::kTemplatesHash;
    j["driver_loaded"] = info.driver_loaded;
    j["driver_version"] = info.driver_version;
    j["driver_error"] = info.driver_error;
    j["cache_path"] = cache_path();
    j["cache_disabled"] = disabled;
    j["devices"] = nlohmann::json::array();
    for (const auto& d : info.devices)
      j["devices"].push_back({{"ordinal", d.ordinal}, {"name", d.name},
                              {"compute_capability", std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor)},
                              {"arch", d.arch}, {"sm_count", d.sm_count}, {"l2_bytes", d.l2_bytes},
                              {"smem_optin_bytes", d.smem_optin_bytes},
                              {"total_memory_bytes", d.total_memory_bytes}});
    print_json(j);
  } else {
    std::printf("tfla %s (C ABI %d)\n", info.tfla_version.c_str(), TFLA_ABI_VERSION);
    if (info.nvrtc_error.empty()) {
      std::printf("  NVRTC          %d.%d: %s\n", info.nvrtc_major, info.nvrtc_minor, info.nvrtc_path.c_str());
      std::printf("                 found by: %s\n", info.nvrtc_found_by.c_str());
      std::printf("                 builtins: %s\n", info.nvrtc_builtins_path.c_str());
    } else {
      std::printf("  NVRTC          none: kernels cannot be compiled (cubins already in the cache still load)\n");
      std::printf("                 %s\n", indent(info.nvrtc_error, "                 ").c_str());
    }
    std::printf("  templates      %s (%zu files embedded)\n", rt::kTemplatesHash, rt::kNumEmbeddedTemplates);
    std::printf("  cache          %s%s\n", cache_path().empty() ? "(none: set TFLA_CACHE or HOME)" : cache_path().c_str(),
                disabled ? " (disabled: TFLA_CACHE_DISABLE)" : "");
    if (!info.driver_loaded || info.devices.empty()) {
      std::printf("  driver         none: %s\n", info.driver_error.c_str());
      std::printf("  devices        no CUDA driver/device: GPU commands (bench, tune) will fail;\n"
                  "                 deviceless compilation (tfla compile --arch sm_90a) works\n");
    } else {
      std::printf("  driver         CUDA %d.%d\n", info.driver_version / 1000, (info.driver_version % 1000) / 10);
      for (const auto& d : info.devices) {
        std::printf("  device %d       %s\n", d.ordinal, d.name.c_str());
        std::printf("    compute      %d.%d (NVRTC arch %s)\n", d.cc_major, d.cc_minor, d.arch.c_str());
        std::printf("    SMs          %d\n", d.sm_count);
        std::printf("    L2           %.1f MiB\n", d.l2_bytes / 1048576.0);
        std::printf("    smem opt-in  %lld KiB per block\n", static_cast<long long>(d.smem_optin_bytes / 1024));
        std::printf("    memory       %.1f GiB\n", d.total_memory_bytes / 1073741824.0);
      }
    }
  }
  return kOk;
}

}  // namespace tfla::cli
