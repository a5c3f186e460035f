// Helpers shared by the `tfla cache` subcommands (cmd_cache.cpp, cmd_cache_check.cpp): opening
// the cache file, naming environments and entries, and finding the current device's key.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "args.hpp"
#include "tfla/tfla.hpp"
#include "tfla_cache/cache.hpp"

namespace tfla::cli::cache_cli {

// Opens --cache PATH (or Cache::default_path()) read-write, creating it if missing. A damaged
// tfla cache is moved aside by the Cache: its recovery_message() is reported with note() (on
// stdout, or in the JSON document), as is a cache that could only be opened read-only. Throws
// cache::CacheError (Foreign for a file that is not a tfla cache, left untouched), UsageError
// when there is no path at all.
cache::Cache open(const Args& args);

// The current device's environment key, or nullopt (with *why) when no CUDA driver or device
// is visible. Device $TFLA_DEVICE, else 0; throws Error(InvalidArgument) when TFLA_DEVICE is
// set to something other than an ordinal (on any machine).
struct CurrentEnv {
  cache::EnvKey env;
  DeviceInfo device;
};
std::optional<CurrentEnv> current_env(std::string* why);

// "NVIDIA H100 80GB HBM3 (cc 9.0, 132 SMs, driver 12040, NVRTC 12.4, tfla 0.1.0)".
std::string describe(const cache::EnvKey& env);
nlohmann::json env_json(const std::string& env_id, const cache::EnvKey& env);

// Checks the --op, --variant and --dtype names of a cache query (empty: not given) against the
// names tuned entries carry; throws UsageError naming the option.
void check_key_names(const std::string& op, const std::string& variant, const std::string& dtype);

// A short stable id of an entry: 12 hex digits of the hash of its env id and problem.
std::string entry_id(const cache::TunedEntry& e);
nlohmann::json entry_json(const cache::TunedEntry& e, bool with_candidates);
// Prints rows as a table with a header, columns padded to their widest cell.
void print_table(const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows);
std::string fmt_us(double us);  // "123.4", or "-" for 0

int cmd_list(const Args& args);
int cmd_show(const Args& args);
int cmd_stats(const Args& args);
int cmd_export(const Args& args);
int cmd_import(const Args& args);
int cmd_explain(const Args& args);
int cmd_prune(const Args& args);
int cmd_verify(const Args& args);
int cmd_recorded(const Args& args);  // shapes recorded with TFLA_RECORD_SHAPES=1

}  // namespace tfla::cli::cache_cli
