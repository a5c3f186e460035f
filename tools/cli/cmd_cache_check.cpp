// tfla cache explain | prune | verify: the subcommands that judge the cache against an
// environment key, the current GPU's when there is one.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "cache_cli.hpp"
#include "commands.hpp"
#include "output.hpp"
#include "ops/family.hpp"
#include "ops/kernel_space.hpp"
#include "ops/problem_check.hpp"
#include "store/cubin_store.hpp"
#include "runtime/device.hpp"
#include "store/env_key.hpp"
#include "runtime/kernel.hpp"
#include "tfla_util/dtype_name.hpp"

namespace tfla::cli::cache_cli {
namespace {

// ---- explain -------------------------------------------------------------------------------

cache::ProblemKey problem_from(const Args& args) {
  cache::ProblemKey p;
  p.op = args.get("op", "fwd");
  p.variant = args.get("variant", "exp");
  p.normalize = !args.flag("no-normalize");
  p.dtype = args.get("dtype", "bf16");
  p.layout = args.get("layout", "bhsd");
  for (const char* need : {"dqk", "dv", "bh", "seq"})
    if (!args.has(need))
      throw UsageError(std::string("cache explain needs --") + need +
                       " (e.g. --op fwd --variant exp --dtype bf16 --dqk 256 --dv 512 --bh 64 "
                       "--seq 8192)");
  // each dimension by the library's rules (as bench, tune and compile check them), named by its
  // option: a problem of that dimension and otherwise the smallest shape
  for (const char* name : {"dqk", "dv", "bh", "seq"}) {
    MlstmProblem one;
    one.B = one.NH = one.S = 1;
    one.Dqk = one.Dv = 64;
    int64_t& dim = std::string(name) == "dqk" ? one.Dqk
                   : std::string(name) == "dv" ? one.Dv
                   : std::string(name) == "bh" ? one.NH
                                               : one.S;
    dim = args.get_int(name, 0);
    try {
      ops::check_problem(one);
    } catch (const Error& e) {
      throw UsageError("--" + std::string(name) + " " + args.get(name) + ": " + e.what());
    }
  }
  p.dqk = static_cast<int>(args.get_int("dqk", 0));
  p.dv = static_cast<int>(args.get_int("dv", 0));
  p.batch_heads = args.get_int("bh", 0);
  p.seq_len = args.get_int("seq", 0);
  check_key_names(p.op, p.variant, p.dtype);
  try {
    p.validate();
  } catch (const cache::CacheError& e) {
    throw UsageError(e.what());
  }
  return p;
}

// The library's problem for a cache key (B = 1, NH = batch_heads), or nullopt for a dtype or
// variant it does not know.
std::optional<MlstmProblem> mlstm_problem(const cache::ProblemKey& k) {
  MlstmProblem p;
  p.B = 1;
  p.NH = k.batch_heads;
  p.S = k.seq_len;
  p.Dqk = k.dqk;
  p.Dv = k.dv;
  if (std::optional<DType> d = util::parse_dtype(k.dtype))
    p.dtype = *d;
  else
    return std::nullopt;
  if (k.variant == "exp")
    p.variant = Variant::Exp;
  else if (k.variant == "sig")
    p.variant = Variant::Sig;
  else
    return std::nullopt;
  p.normalize = k.normalize;
  return p;
}

// The environment to explain against: the current device's, else the most recently tuned one
// in the cache. *source says which, in words.
std::optional<cache::EnvKey> explain_env(const cache::Cache& c, std::string* source) {
  std::string why;
  if (auto cur = current_env(&why)) {
    *source = "current device " + std::to_string(cur->device.ordinal) + ": " + describe(cur->env);
    return cur->env;
  }
  std::map<std::string, int64_t> newest;  // env id -> newest entry timestamp
  for (const auto& e : c.list()) {
    int64_t& t = newest[e.env.id()];
    t = std::max(t, e.timestamp_unix);
  }
  std::optional<std::pair<std::string, cache::EnvKey>> best;
  int64_t best_t = -1;
  for (auto& [id, env] : c.environments()) {  // in first-seen order: later wins ties
    const int64_t t = newest.count(id) ? newest[id] : 0;
    if (t >= best_t) {
      best_t = t;
      best = std::make_pair(id, env);
    }
  }
  if (!best) {
    *source = "no GPU visible and no environment in the cache";
    return std::nullopt;
  }
  *source =
      "no GPU visible; using the most recently tuned environment in the cache: " + best->first +
      " " + describe(best->second);
  return best->second;
}

}  // namespace

// The device limits of the explained environment (its shared-memory opt-in, SM count and
// compute capability), the reference limits where it has none.
ops::DeviceLimits explain_limits(const std::optional<cache::EnvKey>& env) {
  ops::DeviceLimits l = ops::DeviceLimits::reference();
  if (!env) return l;
  if (env->smem_optin_bytes > 0) l.smem_optin_bytes = env->smem_optin_bytes;
  if (env->sm_count > 0) l.sm_count = env->sm_count;
  if (env->cc_major > 0) {
    l.cc_major = env->cc_major;
    l.cc_minor = env->cc_minor;
    l.arch = rt::arch_for(env->cc_major, env->cc_minor);
  }
  return l;
}

int cmd_explain(const Args& args) {
  const cache::ProblemKey key = problem_from(args);
  cache::Cache c = open(args);
  std::string source;
  const std::optional<cache::EnvKey> env = explain_env(c, &source);
  const std::optional<MlstmProblem> mp = mlstm_problem(key);

  // What the library would run without a tuned entry, and which stored configs it accepts: the
  // families' one acceptance rule (ops::acceptance), against the explained environment's limits.
  std::string fallback = "(none: unknown dtype or variant)";
  cache::ConfigPredicate accept;
  if (mp) {
    try {
      ops::check_problem(*mp);
      const std::optional<ops::Op> op = ops::op_from_string(key.op);
      if (op) {
        const ops::DeviceLimits limits = explain_limits(env);
        fallback = to_string(ops::resolve(*op, *mp, limits, {}).config);
        accept = [p = *mp, o = *op, limits](const cache::Config& cfg) {
          return ops::acceptance(o, p, limits, cfg.values).empty();
        };
      } else {
        fallback = "(none: unknown op '" + key.op + "')";
      }
    } catch (const Error& e) {
      fallback = std::string("(none: ") + e.what() + ")";
    }
  }
  cache::LookupResult r;
  if (env)
    r = c.lookup(*env, key, accept);
  else
    r.why = "no environment to look up";
  const bool found = r.kind != cache::LookupKind::None && r.entry;

  if (args.flag("json")) {
    nlohmann::json j = {{"cache", c.path()},
                        {"problem", key.to_string()},
                        {"environment_source", source},
                        {"env_id", env ? env->id() : ""},
                        {"kind", cache::to_string(r.kind)},
                        {"why", r.why},
                        {"config", found ? r.entry->winner.to_string() : fallback},
                        {"heuristic_default", fallback},
                        {"entry", found ? entry_json(*r.entry, false) : nlohmann::json()}};
    print_json(j);
    return kOk;
  }
  std::printf("problem      %s\n", key.to_string().c_str());
  std::printf("environment  %s\n", source.c_str());
  std::printf("lookup       %s: %s\n", cache::to_string(r.kind), r.why.c_str());
  if (found) {
    const cache::TunedEntry& e = *r.entry;
    std::printf("entry        %s (tuned at BH=%lld, S=%lld): %s us, default %s us\n",
                entry_id(e).c_str(), static_cast<long long>(e.problem.batch_heads),
                static_cast<long long>(e.problem.seq_len), fmt_us(e.winner_median_us).c_str(),
                fmt_us(e.default_median_us).c_str());
    std::printf("config       %s\n", e.winner.to_string().c_str());
  } else {
    std::printf("config       heuristic default: %s\n", fallback.c_str());
  }
  return kOk;
}

// ---- prune ---------------------------------------------------------------------------------

namespace {

struct Doomed {  // an environment to delete, with what it holds
  std::string env_id, what, reason;
  int64_t entries = 0, candidates = 0, cubins = 0;
};

// Why `e` can never match this build (tfla, NVRTC, templates) or, with a GPU, this machine's
// device (same GPU, another driver); "" if it may still match somewhere.
std::string stale_reason(const cache::EnvKey& e, const std::optional<CurrentEnv>& cur) {
  if (cur && e == cur->env) return "";
  int nv_major = 0, nv_minor = 0;
  rt::nvrtc_version(&nv_major, &nv_minor);
  if (e.tfla_version != version()) return "tfla " + e.tfla_version + " (this is " + version() + ")";
  if (e.nvrtc_major != nv_major || e.nvrtc_minor != nv_minor)
    return "NVRTC " + std::to_string(e.nvrtc_major) + "." + std::to_string(e.nvrtc_minor) +
           " (this is " + std::to_string(nv_major) + "." + std::to_string(nv_minor) + ")";
  if (e.templates_hash != store::templates_hash(rt::arch_for(e.cc_major, e.cc_minor)))
    return "other kernel templates or compile options";
  if (cur && e.gpu_name == cur->env.gpu_name && e.cc_major == cur->env.cc_major &&
      e.cc_minor == cur->env.cc_minor && e.sm_count == cur->env.sm_count)
    return "this GPU under another driver or limits (driver " + std::to_string(e.driver_version) +
           ", current " + std::to_string(cur->env.driver_version) + ")";
  return "";
}

// Deletes every environment (and its rows and cubins) except `keep` (ids; cubin-only ids too),
// atomically when at most one environment with a known key is kept; otherwise by copying the
// kept ones aside, pruning all and merging them back (a tuner writing to a kept environment
// meanwhile may lose that write). Throws cache::CacheError.
void delete_all_but(cache::Cache& c, const std::set<std::string>& keep,
                    const std::map<std::string, cache::EnvKey>& known) {
  cache::EnvKey none;  // an id that matches no environment
  none.tfla_version = "(none)";
  if (keep.empty()) {
    c.prune_stale(none);
    return;
  }
  if (keep.size() == 1 && known.count(*keep.begin())) {
    c.prune_stale(known.at(*keep.begin()));
    return;
  }
  const std::string tmp = c.path() + ".prune-" + std::to_string(::getpid());
  cache::ExportOptions opt;
  opt.env_ids.assign(keep.begin(), keep.end());
  opt.overwrite = true;  // our own temporary name
  auto remove_tmp = [&] {
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) std::filesystem::remove(tmp + suffix, ec);
  };
  try {
    c.export_to(tmp, opt);
    c.prune_stale(none);
  } catch (...) {  // nothing was deleted: the copy is not needed
    remove_tmp();
    throw;
  }
  try {
    cache::ImportOptions own;
    own.own_export = true;  // this cache's own cubins: their verified flags stand
    c.import_from(tmp, own);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("merging the kept environments back failed: ") + e.what() +
                             "; they are in " + tmp + " (run: tfla cache import " + tmp + ")");
  }
  remove_tmp();
}

}  // namespace

int cmd_prune(const Args& args) {
  std::string why;
  const std::optional<CurrentEnv> cur = current_env(&why);
  const bool all_but = args.flag("all-but-current");
  if (all_but && !cur)  // before the cache is opened (which creates a missing one)
    throw CommandFailed(kNoGpu, "cache prune --all-but-current needs the current GPU's environment: " + why);
  cache::Cache c = open(args);
  const std::string current_id = cur ? cur->env.id() : "";
  const cache::Stats st = c.stats();
  std::map<std::string, cache::EnvKey> known;
  std::set<std::string> all_ids;
  std::vector<Doomed> plan;
  for (const auto& e : st.per_env) {
    known[e.env_id] = e.env;
    all_ids.insert(e.env_id);
    const std::string reason = all_but
                                   ? (e.env_id == current_id ? "" : "not the current environment")
                                   : stale_reason(e.env, cur);
    if (!reason.empty())
      plan.push_back({e.env_id, describe(e.env), reason, e.entries, e.candidates, e.cubins});
  }
  // Cubins labelled with an environment that has no row (get_kernel stores cubins under the
  // current environment whether or not it was tuned): only --all-but-current can judge them.
  std::map<std::string, int64_t> unlisted;
  for (const auto& ci : c.list_cubins())
    if (!ci.env_id.empty() && !known.count(ci.env_id)) ++unlisted[ci.env_id];
  for (const auto& [id, n] : unlisted) {
    all_ids.insert(id);
    if (all_but && id != current_id)
      plan.push_back({id, "(cubins only)", "not the current environment", 0, 0, n});
  }
  Doomed total;
  std::set<std::string> keep = all_ids;
  for (const auto& d : plan) {
    keep.erase(d.env_id);
    total.entries += d.entries;
    total.candidates += d.candidates;
    total.cubins += d.cubins;
  }
  const bool dry = args.flag("dry-run");
  if (!dry && !plan.empty() && c.read_only())
    throw CommandFailed(kFailed, "cannot prune " + c.path() + ": the cache is read-only (" +
                                     c.read_only_reason() + ")");
  if (!dry && !plan.empty()) {
    if (all_but)
      c.prune_stale(cur->env);
    else
      delete_all_but(c, keep, known);
  }
  const std::string note =
      cur ? "" : "no GPU visible: environments that differ only in driver were kept";
  if (args.flag("json")) {
    nlohmann::json j = {{"cache", c.path()},
                        {"dry_run", dry},
                        {"mode", all_but ? "all-but-current" : "stale"},
                        {"current_env_id", current_id},
                        {"note", note},
                        {"environments", plan.size()},
                        {"entries", total.entries},
                        {"candidates", total.candidates},
                        {"cubins", total.cubins},
                        {"pruned", nlohmann::json::array()}};
    for (const auto& d : plan)
      j["pruned"].push_back({{"env_id", d.env_id},
                             {"environment", d.what},
                             {"reason", d.reason},
                             {"entries", d.entries},
                             {"candidates", d.candidates},
                             {"cubins", d.cubins}});
    print_json(j);
    return kOk;
  }
  if (!note.empty()) std::printf("note: %s\n", note.c_str());
  if (plan.empty()) {
    std::printf("nothing to prune in %s (%zu environments kept)\n", c.path().c_str(),
                all_ids.size());
    return kOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& d : plan)
    rows.push_back({d.env_id, d.what, d.reason, std::to_string(d.entries),
                    std::to_string(d.candidates), std::to_string(d.cubins)});
  print_table({"ENV", "ENVIRONMENT", "WHY", "ENTRIES", "CANDIDATES", "CUBINS"}, rows);
  std::printf(
      "%s %zu environments (%lld entries, %lld candidates, %lld cubins) from %s; "
      "%zu kept\n",
      dry ? "would prune" : "pruned", plan.size(), static_cast<long long>(total.entries),
      static_cast<long long>(total.candidates), static_cast<long long>(total.cubins),
      c.path().c_str(), keep.size());
  return kOk;
}

// ---- verify --------------------------------------------------------------------------------

namespace {

struct LoadCheck {
  bool done = false;
  std::string skipped;  // why it was skipped
  int64_t checked = 0, failed = 0, repaired = 0;
  std::vector<std::string> problems;
};

// Loads every cubin of the current device's arch; recompiles (and overwrites) the ones that
// fail to load, fail their checksum or were imported unverified (put_cubin compares the fresh
// bytes with them) when they are in the default kernel space.
LoadCheck load_check(cache::Cache& c, const CurrentEnv& cur) {
  LoadCheck lc;
  lc.done = true;
  rt::ensure_context();
  std::map<std::string, rt::KernelSpec> space;  // key -> spec, built on the first failure
  for (const cache::CubinInfo& ci : c.list_cubins()) {
    if (ci.arch != cur.device.arch) continue;
    ++lc.checked;
    std::string fail;
    if (std::optional<std::string> bytes = c.get_cubin(ci.hash)) {
      rt::KernelSpec probe;  // the entry's name is all load() needs of the spec
      probe.key = ci.kernel_name;
      probe.family = rt::family_of_key(ci.kernel_name);
      // a cache may also hold cubins of library builds whose entries were all tfla_kernel
      if (bytes->find(probe.entry() + '\0') == std::string::npos &&
          bytes->find(std::string("tfla_kernel") + '\0') != std::string::npos)
        probe.family = "kernel";
      try {
        rt::load(rt::CompiledKernel{std::move(*bytes), ci.arch, ""}, probe);
      } catch (const Error& e) {
        fail = e.what();
      }
    } else {
      fail = ci.verified ? "checksum mismatch" : "imported, not verified yet";
    }
    if (fail.empty()) continue;
    ++lc.failed;
    const std::string what = "cubin " + ci.hash.substr(0, 16) + " (" + ci.kernel_name + ")";
    if (space.empty()) {
      ops::SpaceFilter every;
      every.every_family = true;
      for (const ops::SpaceFilter& f : {ops::SpaceFilter{}, every})
        for (auto& s : ops::default_space_kernels(f)) space.emplace(s.key, s);
    }
    auto it = space.find(ci.kernel_name);
    if (it == space.end() || store::cubin_key(it->second, ci.arch) != ci.hash) {
      lc.problems.push_back(what + ": " + fail +
                            "; not in the default kernel space, so not recompiled here (the "
                            "runtime recompiles it when it is next needed)");
      continue;
    }
    if (c.read_only()) {
      lc.problems.push_back(what + ": " + fail + "; not recompiled: the cache is read-only");
      continue;
    }
    try {
      rt::CompiledKernel fresh = rt::compile(it->second, ci.arch);
      rt::load(fresh, it->second);
      c.put_cubin(ci.hash, ci.arch, ci.kernel_name, fresh.cubin, ci.env_id);
      ++lc.repaired;
    } catch (const std::exception& e) {
      lc.problems.push_back(what + ": " + fail + "; recompiling failed: " + e.what());
    }
  }
  return lc;
}

}  // namespace

int cmd_verify(const Args& args) {
  cache::Cache c = open(args);
  cache::VerifyReport rep = c.verify();
  std::string why;
  LoadCheck lc;
  if (const std::optional<CurrentEnv> cur = current_env(&why)) {
    lc = load_check(c, *cur);
    if (lc.repaired > 0) rep = c.verify();  // the overwritten cubins pass their checksum now
  } else {
    lc.skipped = "no GPU (" + why + ")";
  }
  const bool ok = rep.ok && lc.problems.empty();
  if (args.flag("json")) {
    nlohmann::json j = {{"cache", c.path()},
                        {"ok", ok},
                        {"entries_checked", rep.entries_checked},
                        {"cubins_checked", rep.cubins_checked},
                        {"cubins_unverified", rep.cubins_unverified},
                        {"problems", rep.problems},
                        {"load_check",
                         {{"done", lc.done},
                          {"skipped", lc.skipped},
                          {"checked", lc.checked},
                          {"failed", lc.failed},
                          {"recompiled", lc.repaired},
                          {"problems", lc.problems}}}};
    print_json(j);
    return ok ? kOk : kFailed;
  }
  std::printf("integrity    %s (%lld entries, %lld cubins checked) in %s\n",
              rep.ok ? "ok" : "PROBLEMS", static_cast<long long>(rep.entries_checked),
              static_cast<long long>(rep.cubins_checked), c.path().c_str());
  for (const auto& p : rep.problems) std::printf("  %s\n", p.c_str());
  if (rep.cubins_unverified > 0)
    std::printf("cubins       %lld imported and unverified: not loaded until a local compile of "
                "their key matches them (tfla compile)\n",
                static_cast<long long>(rep.cubins_unverified));
  if (lc.done) {
    std::printf(
        "load check   %lld cubins of this GPU's arch loaded: %lld failed, %lld recompiled\n",
        static_cast<long long>(lc.checked), static_cast<long long>(lc.failed),
        static_cast<long long>(lc.repaired));
    for (const auto& p : lc.problems) std::printf("  %s\n", p.c_str());
  } else {
    std::printf("load check   skipped: %s; only checksums were verified\n", lc.skipped.c_str());
  }
  return ok ? kOk : kFailed;
}

}  // namespace tfla::cli::cache_cli
