// tfla cache: inspect and maintain the tuned-config and cubin cache (one SQLite file).
//   list | show <id or filter> | explain | export FILE | import FILE | prune | verify | stats
// Every subcommand takes --json and --cache PATH. This file: dispatch, shared helpers, and the
// read/copy subcommands; cmd_cache_check.cpp: explain, prune and verify (which need an
// environment key, from the GPU when there is one).
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "cache_cli.hpp"
#include "commands.hpp"
#include "output.hpp"
#include "runtime/device.hpp"
#include "runtime/driver.hpp"
#include "store/env_key.hpp"
#include "tfla_cache/hash.hpp"
#include "tfla_util/dtype_name.hpp"
#include "tfla_util/env_flag.hpp"

namespace tfla::cli {
namespace cache_cli {

cache::Cache open(const Args& args) {
  const std::string path = args.has("cache") ? args.get("cache") : cache::Cache::default_path();
  if (path.empty())
    throw UsageError("no cache path: give --cache PATH or set TFLA_CACHE (HOME and XDG_CACHE_HOME "
                     "are unset or not absolute)");
  cache::Cache c = cache::Cache::open(path, cache::OpenMode::ReadWrite);
  if (c.recovered()) note(c.recovery_message());
  if (c.read_only()) note("the cache " + path + " is open read-only: " + c.read_only_reason());
  return c;
}

std::optional<CurrentEnv> current_env(std::string* why) {
  int ordinal = 0;  // read first: a bad TFLA_DEVICE is an error on any machine
  try {
    ordinal = static_cast<int>(util::env_int("TFLA_DEVICE", 0, 0, 1 << 20));
  } catch (const std::invalid_argument& e) {
    throw Error(ErrorCode::InvalidArgument, e.what());
  }
  if (!rt::driver_available(why)) return std::nullopt;
  try {
    CurrentEnv out;
    out.device = rt::device_info(ordinal);
    out.env = store::current_env_key(out.device);
    return out;
  } catch (const std::exception& e) {
    *why = e.what();
    return std::nullopt;
  }
}

std::string describe(const cache::EnvKey& env) {
  char buf[512];
  if (store::is_deviceless(env)) {
    std::snprintf(buf, sizeof(buf), "deviceless (cc %d.%d, NVRTC %d.%d, tfla %s)", env.cc_major,
                  env.cc_minor, env.nvrtc_major, env.nvrtc_minor, env.tfla_version.c_str());
  } else {
    std::snprintf(buf, sizeof(buf), "%s (cc %d.%d, %d SMs, driver %d, NVRTC %d.%d, tfla %s)",
                  env.gpu_name.c_str(), env.cc_major, env.cc_minor, env.sm_count,
                  env.driver_version, env.nvrtc_major, env.nvrtc_minor, env.tfla_version.c_str());
  }
  return buf;
}

nlohmann::json env_json(const std::string& env_id, const cache::EnvKey& env) {
  nlohmann::json j = nlohmann::json::parse(env.to_json());
  j["env_id"] = env_id;
  return j;
}

std::string entry_id(const cache::TunedEntry& e) {
  return cache::content_hash(e.env.id() + "|" + e.problem.to_string()).substr(0, 12);
}

std::string fmt_us(double us) {
  if (us <= 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", us);
  return buf;
}

namespace {
double speedup(const cache::TunedEntry& e) {
  return e.winner_median_us > 0 && e.default_median_us > 0
             ? e.default_median_us / e.winner_median_us
             : 0;
}
std::string fmt_time(int64_t unix_s) {
  if (unix_s <= 0) return "-";
  const std::time_t t = static_cast<std::time_t>(unix_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}
}  // namespace

nlohmann::json entry_json(const cache::TunedEntry& e, bool with_candidates) {
  const cache::ProblemKey& p = e.problem;
  nlohmann::json j = {{"id", entry_id(e)},
                      {"env_id", e.env.id()},
                      {"op", p.op},
                      {"variant", p.variant},
                      {"normalize", p.normalize},
                      {"dtype", p.dtype},
                      {"dqk", p.dqk},
                      {"dv", p.dv},
                      {"layout", p.layout},
                      {"batch_heads", p.batch_heads},
                      {"seq_len", p.seq_len},
                      {"problem", p.to_string()},
                      {"winner", e.winner.to_string()},
                      {"winner_median_us", e.winner_median_us},
                      {"winner_spread_us", e.winner_spread_us},
                      {"default_median_us", e.default_median_us},
                      {"speedup_vs_default", speedup(e)},
                      {"tuning_seconds", e.tuning_seconds},
                      {"tool_version", e.tool_version},
                      {"timestamp_unix", e.timestamp_unix}};
  if (with_candidates) {
    j["candidates"] = nlohmann::json::array();
    for (const auto& c : e.candidates)
      j["candidates"].push_back({{"config", c.config.to_string()},
                                 {"status", cache::to_string(c.status)},
                                 {"time_median_us", c.time_median_us},
                                 {"time_spread_us", c.time_spread_us},
                                 {"max_rel_error", c.max_rel_error},
                                 {"message", c.message}});
  }
  return j;
}

void print_table(const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size() && i < width.size(); ++i)
      width[i] = std::max(width[i], r[i].size());
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (size_t i = 0; i < r.size(); ++i) {
      s += r[i];
      if (i + 1 < r.size()) s += std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::printf("%s\n", s.c_str());
  };
  line(header);
  for (const auto& r : rows) line(r);
}

void check_key_names(const std::string& op, const std::string& variant, const std::string& dtype) {
  if (!op.empty() && op != "fwd" && op != "bwd" && op != "step")
    throw UsageError("--op must be fwd, bwd or step (the ops with tuned entries), got '" + op + "'");
  if (!variant.empty() && variant != "exp" && variant != "sig")
    throw UsageError("--variant must be exp or sig, got '" + variant + "'");
  if (!dtype.empty() && !util::is_dtype_name(dtype))
    throw UsageError("--dtype must be one of " + std::string(util::dtype_names()) + ", got '" + dtype + "'");
}

int cmd_list(const Args& args) {
  cache::ListFilter f;
  f.env_id = args.get("env");
  f.op = args.get("op");
  f.variant = args.get("variant");
  f.dtype = args.get("dtype");
  check_key_names(f.op, f.variant, f.dtype);
  cache::Cache c = open(args);
  const std::vector<cache::TunedEntry> entries = c.list(f);
  if (args.flag("json")) {
    nlohmann::json j = {{"cache", c.path()}, {"entries", nlohmann::json::array()}};
    for (const auto& e : entries) j["entries"].push_back(entry_json(e, false));
    print_json(j);
    return kOk;
  }
  if (entries.empty()) {
    std::printf("no tuned entries in %s%s\n", c.path().c_str(),
                f.env_id.empty() && f.op.empty() && f.variant.empty() && f.dtype.empty()
                    ? ""
                    : " match the filter");
    return kOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& e : entries) {
    const cache::ProblemKey& p = e.problem;
    char sp[32] = "-";
    if (speedup(e) > 0) std::snprintf(sp, sizeof(sp), "%.2fx", speedup(e));
    rows.push_back({entry_id(e), p.op, p.variant + (p.normalize ? "" : "/nonorm"), p.dtype,
                    std::to_string(p.dqk) + "x" + std::to_string(p.dv),
                    "BH=" + std::to_string(p.batch_heads) + ",S=" + std::to_string(p.seq_len),
                    e.winner.to_string(), fmt_us(e.winner_median_us), sp});
  }
  print_table(
      {"ID", "OP", "VARIANT", "DTYPE", "DIMS", "SHAPE", "WINNER", "MEDIAN_US", "VS_DEFAULT"}, rows);
  std::printf("%zu entries in %s\n", entries.size(), c.path().c_str());
  return kOk;
}

int cmd_show(const Args& args) {
  if (args.positionals().size() != 1)
    throw UsageError("cache show expects one entry id (from tfla cache list) or a filter");
  const std::string want = args.positionals()[0];
  cache::Cache c = open(args);
  std::vector<cache::TunedEntry> hits;
  for (auto& e : c.list())
    if (entry_id(e).rfind(want, 0) == 0 || e.problem.to_string().find(want) != std::string::npos)
      hits.push_back(std::move(e));
  if (hits.empty())
    throw CommandFailed(kFailed, "no entry matches '" + want + "' (see tfla cache list)");
  if (hits.size() > 1) {
    std::string msg = std::to_string(hits.size()) + " entries match '" + want + "'; give one id:";
    for (const auto& e : hits) msg += "\n  " + entry_id(e) + "  " + e.problem.to_string();
    throw UsageError(msg);
  }
  cache::TunedEntry e = *c.get_exact(hits[0].env, hits[0].problem);  // with its candidates
  if (args.flag("json")) {
    nlohmann::json j = entry_json(e, true);
    j["env"] = env_json(e.env.id(), e.env);
    print_json(j);
    return kOk;
  }
  std::printf("entry        %s\n", entry_id(e).c_str());
  std::printf("problem      %s\n", e.problem.to_string().c_str());
  std::printf("environment  %s %s\n", e.env.id().c_str(), describe(e.env).c_str());
  std::printf("winner       %s\n", e.winner.to_string().c_str());
  std::printf("median       %s us (spread %s us); default %s us",
              fmt_us(e.winner_median_us).c_str(), fmt_us(e.winner_spread_us).c_str(),
              fmt_us(e.default_median_us).c_str());
  if (speedup(e) > 0) std::printf(" -> %.2fx", speedup(e));
  std::printf("\ntuned        %s by %s in %.1f s\n\n", fmt_time(e.timestamp_unix).c_str(),
              e.tool_version.c_str(), e.tuning_seconds);
  std::vector<cache::CandidateResult> cands = e.candidates;
  std::stable_sort(cands.begin(), cands.end(), [](const auto& a, const auto& b) {
    const bool ao = a.status == cache::CandidateStatus::Ok,
               bo = b.status == cache::CandidateStatus::Ok;
    if (ao != bo) return ao;
    return ao && a.time_median_us < b.time_median_us;
  });
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : cands) {
    char err[32];
    std::snprintf(err, sizeof(err), "%.2g", r.max_rel_error);
    std::string msg = r.message.substr(0, r.message.find('\n'));
    if (msg.size() > 60) msg = msg.substr(0, 57) + "...";
    rows.push_back({r.config == e.winner ? "*" : "", r.config.to_string(),
                    cache::to_string(r.status), fmt_us(r.time_median_us), fmt_us(r.time_spread_us),
                    err, msg});
  }
  if (rows.empty()) {
    std::printf("no candidates recorded\n");
  } else {
    print_table({"", "CONFIG", "STATUS", "MEDIAN_US", "SPREAD_US", "MAX_REL_ERR", "MESSAGE"}, rows);
  }
  return kOk;
}

int cmd_stats(const Args& args) {
  cache::Cache c = open(args);
  const cache::Stats st = c.stats();
  if (args.flag("json")) {
    nlohmann::json j = {{"cache", c.path()},
                        {"read_only", c.read_only()},
                        {"schema_version", st.schema_version},
                        {"environments", st.environments},
                        {"entries", st.entries},
                        {"candidates", st.candidates},
                        {"cubins", st.cubins},
                        {"cubin_bytes", st.cubin_bytes},
                        {"file_bytes", st.file_bytes},
                        {"per_env", nlohmann::json::array()}};
    for (const auto& e : st.per_env) {
      nlohmann::json je = env_json(e.env_id, e.env);
      je["entries"] = e.entries;
      je["candidates"] = e.candidates;
      je["cubins"] = e.cubins;
      j["per_env"].push_back(je);
    }
    print_json(j);
    return kOk;
  }
  std::printf("cache          %s%s\n", c.path().c_str(), c.read_only() ? " (read-only)" : "");
  std::printf("schema         %d\n", st.schema_version);
  std::printf("environments   %lld\n", static_cast<long long>(st.environments));
  std::printf("entries        %lld\n", static_cast<long long>(st.entries));
  std::printf("candidates     %lld\n", static_cast<long long>(st.candidates));
  std::printf("cubins         %lld (%.1f MiB)\n", static_cast<long long>(st.cubins),
              st.cubin_bytes / 1048576.0);
  std::printf("file           %.1f MiB\n", st.file_bytes / 1048576.0);
  if (!st.per_env.empty()) {
    std::printf("\n");
    std::vector<std::vector<std::string>> rows;
    for (const auto& e : st.per_env)
      rows.push_back({e.env_id, describe(e.env), std::to_string(e.entries),
                      std::to_string(e.candidates), std::to_string(e.cubins)});
    print_table({"ENV", "ENVIRONMENT", "ENTRIES", "CANDIDATES", "CUBINS"}, rows);
  }
  return kOk;
}

int cmd_export(const Args& args) {
  if (args.positionals().size() != 1) throw UsageError("cache export expects one FILE");
  const std::string file = args.positionals()[0];
  std::error_code ec;
  if (std::filesystem::exists(std::filesystem::symlink_status(file, ec)) && !args.flag("force"))
    throw UsageError(file + " exists; tfla cache export never overwrites a file unless --force");
  cache::Cache c = open(args);
  cache::ExportOptions opt;
  const std::string envs = args.get("env");
  for (size_t pos = 0; !envs.empty() && pos <= envs.size();) {
    size_t end = envs.find(',', pos);
    if (end == std::string::npos) end = envs.size();
    opt.env_ids.push_back(envs.substr(pos, end - pos));
    pos = end + 1;
  }
  if (!opt.env_ids.empty()) {  // each ID names an environment, or cubins labelled with it
    std::set<std::string> known;
    for (const auto& [id, env] : c.environments()) known.insert(id);
    for (const cache::CubinInfo& ci : c.list_cubins())
      if (!ci.env_id.empty()) known.insert(ci.env_id);
    for (const std::string& id : opt.env_ids)
      if (!known.count(id))
        throw CommandFailed(kFailed, "--env '" + id + "': no environment with that ID in " + c.path() +
                                         " (see tfla cache stats)");
  }
  opt.include_cubins = !args.flag("no-cubins");
  opt.overwrite = args.flag("force");
  const cache::MergeReport r = c.export_to(file, opt);
  if (args.flag("json")) {
    print_json({{"ok", true},
                {"cache", c.path()},
                {"file", file},
                {"environments", r.environments_added},
                {"entries", r.entries_added},
                {"candidates", r.candidates_added},
                {"cubins", r.cubins_added},
                {"rows_skipped", r.rows_rejected},
                {"skipped", r.rejected}});
  } else {
    std::printf("exported %lld environments, %lld entries, %lld candidates, %lld cubins from %s to %s\n",
                static_cast<long long>(r.environments_added), static_cast<long long>(r.entries_added),
                static_cast<long long>(r.candidates_added), static_cast<long long>(r.cubins_added),
                c.path().c_str(), file.c_str());
    if (r.rows_rejected > 0)
      std::printf("%lld rows of the cache break its rules and were left out (run tfla cache verify):\n",
                  static_cast<long long>(r.rows_rejected));
    for (const auto& line : r.rejected) std::printf("  %s\n", line.c_str());
  }
  return kOk;
}

namespace {
// A bundle is an SQLite file (what cache export writes): a regular file that starts with
// SQLite's header. Anything else (an empty file, a device, a text) is refused naming the file.
void check_bundle_file(const std::string& file) {
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(file, ec);
  if (ec) throw CommandFailed(kFailed, "cannot import " + file + ": " + ec.message());
  if (!std::filesystem::is_regular_file(st))
    throw CommandFailed(kFailed, "cannot import " + file + ": not a regular file (a bundle from tfla cache export)");
  static const char kHeader[16] = {'S', 'Q', 'L', 'i', 't', 'e', ' ', 'f', 'o', 'r', 'm', 'a', 't', ' ', '3', '\0'};
  char head[16] = {};
  std::ifstream in(file, std::ios::binary);
  if (!in) throw CommandFailed(kFailed, "cannot import " + file + ": cannot read it");
  in.read(head, sizeof head);
  if (in.gcount() != static_cast<std::streamsize>(sizeof head) || std::memcmp(head, kHeader, sizeof head) != 0)
    throw CommandFailed(kFailed, "cannot import " + file + ": not a tfla cache bundle (no SQLite header; "
                                 "bundles come from tfla cache export)");
}
}  // namespace

int cmd_import(const Args& args) {
  if (args.positionals().size() != 1) throw UsageError("cache import expects one FILE");
  const std::string file = args.positionals()[0];
  if (file.empty()) throw UsageError("cache import expects one FILE, got an empty name");
  check_bundle_file(file);
  cache::Cache c = open(args);
  cache::ImportOptions opt;
  opt.trust_cubins = args.flag("trust-cubins");
  const cache::MergeReport r = c.import_from(file, opt);
  const bool ok = r.rows_rejected == 0;
  if (args.flag("json")) {
    print_json({{"ok", ok},
                {"cache", c.path()},
                {"file", file},
                {"environments_added", r.environments_added},
                {"entries_added", r.entries_added},
                {"entries_replaced", r.entries_replaced},
                {"entries_kept", r.entries_kept},
                {"candidates_added", r.candidates_added},
                {"cubins_added", r.cubins_added},
                {"cubins_unverified", r.cubins_unverified},
                {"rows_rejected", r.rows_rejected},
                {"rejected", r.rejected}});
  } else {
    std::printf(
        "imported %s into %s: %lld environments, %lld entries added, %lld replaced (faster), "
        "%lld kept (as fast or faster here), %lld candidates, %lld cubins\n",
        file.c_str(), c.path().c_str(), static_cast<long long>(r.environments_added),
        static_cast<long long>(r.entries_added), static_cast<long long>(r.entries_replaced),
        static_cast<long long>(r.entries_kept), static_cast<long long>(r.candidates_added),
        static_cast<long long>(r.cubins_added));
    if (r.cubins_unverified > 0)
      std::printf("%lld cubins are unverified: they are not loaded until a local compile of their key "
                  "matches them (tfla compile, or their first use); --trust-cubins skips the check\n",
                  static_cast<long long>(r.cubins_unverified));
    if (r.rows_rejected > 0)
      std::printf("REJECTED %lld rows that break the cache's rules (not imported):\n",
                  static_cast<long long>(r.rows_rejected));
    for (const auto& line : r.rejected) std::printf("  %s\n", line.c_str());
    if (r.rows_rejected > static_cast<int64_t>(r.rejected.size()))
      std::printf("  ... and %lld more\n", static_cast<long long>(r.rows_rejected - r.rejected.size()));
  }
  return ok ? kOk : kFailed;
}

}  // namespace cache_cli

namespace cache_cli {

int cmd_recorded(const Args& args) {
  cache::Cache c = open(args);
  const std::string env_id = args.get("env", "");
  if (args.flag("clear")) {
    const int64_t n = c.clear_recorded(env_id);
    if (args.flag("json"))
      print_json({{"cache", c.path()}, {"cleared", n}});
    else
      std::printf("cleared %lld recorded shape(s)\n", static_cast<long long>(n));
    return kOk;
  }
  const std::vector<cache::RecordedShape> rows = c.recorded(env_id);
  if (args.flag("json")) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : rows)
      j.push_back({{"env_id", r.env_id}, {"problem", r.problem.to_string()}, {"lookups", r.lookups},
                   {"first_seen_unix", r.first_seen_unix}, {"last_seen_unix", r.last_seen_unix}});
    print_json(nlohmann::json{{"cache", c.path()}, {"recorded", j}});
    return kOk;
  }
  if (rows.empty()) {
    std::printf("no recorded shapes without a tuned entry in %s (TFLA_RECORD_SHAPES=1 records them)\n",
                c.path().c_str());
    return kOk;
  }
  std::vector<std::vector<std::string>> table;
  for (const auto& r : rows)
    table.push_back({r.env_id, r.problem.to_string(), std::to_string(r.lookups)});
  print_table({"ENV", "PROBLEM", "LOOKUPS"}, table);
  std::printf("\ntune them on this GPU: tfla tune --from-recorded\n");
  return kOk;
}

}  // namespace cache_cli

int cmd_cache(const std::vector<std::string>& argv) {
  using namespace cache_cli;
  if (argv.empty() || argv[0].rfind("--", 0) == 0)
    throw UsageError(
        "cache expects a command: list, show, explain, export, import, prune, "
        "verify, stats or recorded");
  const std::string sub = argv[0];
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  std::set<std::string> flags{"json"}, options{"cache"};
  int (*run)(const Args&) = nullptr;
  if (sub == "list") {
    run = cmd_list;
    options.insert({"op", "variant", "dtype", "env"});
  } else if (sub == "show") {
    run = cmd_show;
  } else if (sub == "stats") {
    run = cmd_stats;
  } else if (sub == "export") {
    run = cmd_export;
    options.insert("env");
    flags.insert({"no-cubins", "force"});
  } else if (sub == "import") {
    run = cmd_import;
    flags.insert("trust-cubins");
  } else if (sub == "explain") {
    run = cmd_explain;
    options.insert({"op", "variant", "dtype", "dqk", "dv", "bh", "seq", "layout"});
    flags.insert("no-normalize");
  } else if (sub == "prune") {
    run = cmd_prune;
    flags.insert({"all-but-current", "dry-run"});
  } else if (sub == "verify") {
    run = cmd_verify;
  } else if (sub == "recorded") {
    run = cmd_recorded;
    options.insert("env");
    flags.insert("clear");
  } else {
    throw UsageError("unknown cache command '" + sub +
                     "' (list, show, explain, export, import, prune, verify, stats, recorded)");
  }
  if (sub != "show" && sub != "export" && sub != "import") {
    const Args args(rest, flags, options);
    if (!args.positionals().empty())
      throw UsageError("cache " + sub + ": unexpected argument '" + args.positionals()[0] + "'");
    return run(args);
  }
  return run(Args(rest, flags, options));
}

}  // namespace tfla::cli
