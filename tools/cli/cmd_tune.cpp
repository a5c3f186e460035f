// tfla tune: tunes the forward and backward kernels for a list of shapes (flags or a spec
// file) and stores the winners in the cache. All GPU work happens in `tfla tune-worker`
// processes (tuner/); this process enumerates, compiles with NVRTC, records and reports.
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "args.hpp"
#include "cache_cli.hpp"
#include "commands.hpp"
#include "output.hpp"
#include "tfla_cache/cache.hpp"
#include "tuner/tuner.hpp"

namespace tfla::cli {
namespace {

// Candidates the family's acceptance rule refused (FamilySummary::failed counts them too).
int rejected_count(const tuner::FamilySummary& r) {
  auto it = r.failed_by.find("rejected");
  return it == r.failed_by.end() ? 0 : it->second;
}

// The options that give one shape (the other sources, --shapes and --from-recorded, take none).
const char* const kShapeOptions[] = {"op", "variant", "dtype", "dqk", "dv", "bh", "seq", "normalize"};

// Checks each shape option's value on its own, by the spec file's rules, so that an error names
// the option: one item of a spec line (no whitespace, '#' or '='), valid for that key.
void check_shape_options(const Args& args) {
  for (const char* name : kShapeOptions) {
    if (!args.has(name)) continue;
    const std::string v = args.get(name);
    if (v.empty() || v.find_first_of(" \t\r\n\v\f#=") != std::string::npos)
      throw UsageError("--" + std::string(name) + " '" + v +
                       "': expected one value (no whitespace, '#' or '=')");
    if (std::string(name) == "variant") continue;  // a list: problems_from parses its items
    try {
      (void)tuner::parse_spec_line(std::string(name) + "=" + v);
    } catch (const Error& e) {
      throw UsageError("--" + std::string(name) + " " + v + ": " + e.what());
    }
  }
}

std::vector<tuner::TuneProblem> problems_from(const Args& args, const std::string& cache_path) {
  if (args.has("shapes") || args.flag("from-recorded"))
    for (const char* name : kShapeOptions)
      if (args.has(name))
        throw UsageError("--" + std::string(name) + " gives a shape: it does not combine with " +
                         (args.has("shapes") ? "--shapes" : "--from-recorded"));
  if (args.flag("from-recorded")) {
    if (args.has("shapes")) throw UsageError("--from-recorded and --shapes are exclusive");
    std::string why;
    const auto env = cache_cli::current_env(&why);
    if (!env) throw Error(ErrorCode::NoDriver, "tune --from-recorded needs the GPU whose shapes to tune: " + why);
    const cache::Cache c = cache::Cache::open(cache_path);
    return tuner::problems_from_recorded(c.recorded(env->env.id()));
  }
  if (args.has("shapes")) {
    try {
      return tuner::read_spec_file(args.get("shapes"));
    } catch (const Error& e) {
      throw UsageError(e.what());
    }
  }
  check_shape_options(args);
  std::vector<tuner::TuneProblem> out;
  tuner::TuneProblem base;
  try {
    std::string line = "op=" + args.get("op", "fwbw") + " dtype=" + args.get("dtype", "bf16") +
                       " dqk=" + args.get("dqk", "256") + " dv=" + args.get("dv", "512") +
                       " bh=" + args.get("bh", "64") +
                       // op=step: seq is the tokens T of one step call (default one token)
                       " seq=" + args.get("seq", args.get("op", "fwbw") == "step" ? "1" : "8192");
    if (args.has("normalize")) line += " normalize=" + args.get("normalize");
    base = tuner::parse_spec_line(line);
    const std::string vs = args.get("variant", "exp,sig");
    size_t pos = 0;
    while (pos <= vs.size()) {
      const size_t end = std::min(vs.find(',', pos), vs.size());
      tuner::TuneProblem t = base;
      try {
        t.variant = tuner::parse_variant(vs.substr(pos, end - pos));
      } catch (const Error& e) {
        throw UsageError("--variant " + vs + ": " + e.what());
      }
      out.push_back(t);
      pos = end + 1;
    }
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  return out;
}

}  // namespace

int cmd_tune(const std::vector<std::string>& argv) {
  Args args(argv, {"resume", "json", "from-recorded"},
            {"op", "variant", "dtype", "dqk", "dv", "bh", "seq", "normalize", "shapes", "budget",
             "reps", "warmup", "cache", "jobs", "timeout"});
  if (!args.positionals().empty()) throw UsageError("unexpected argument '" + args.positionals()[0] + "'");
  tuner::TuneOptions opt;
  opt.cache_path = args.get("cache", cache::Cache::default_path());
  // Every option is judged before problems_from, which needs the GPU for --from-recorded.
  opt.budget = static_cast<int>(args.get_int_in("budget", 24, 0, INT_MAX));
  opt.reps = static_cast<int>(args.get_int_in("reps", 10, 1, INT_MAX));
  opt.warmup = static_cast<int>(args.get_int_in("warmup", 3, 0, INT_MAX));
  opt.jobs = static_cast<int>(args.get_int_in("jobs", 0, 1, INT_MAX));
  opt.candidate_timeout_s = args.get_double("timeout", 60);
  // finite and positive, at most a week (the worker's deadline is a steady_clock time point)
  if (!(opt.candidate_timeout_s > 0 && opt.candidate_timeout_s <= 604800))
    throw UsageError("--timeout must be a number of seconds in (0, 604800], got '" + args.get("timeout") + "'");
  opt.resume = args.flag("resume");
  const std::vector<tuner::TuneProblem> problems = problems_from(args, opt.cache_path);
  if (problems.empty()) {  // only --from-recorded can get here
    if (args.flag("json"))
      print_json({{"cache", opt.cache_path}, {"rows", nlohmann::json::array()}});
    else
      std::printf("no recorded shapes without a tuned entry for this GPU in %s "
                  "(run the model with TFLA_RECORD_SHAPES=1 first)\n", opt.cache_path.c_str());
    return kOk;
  }
  std::unique_ptr<Progress> bar;
  std::string stage;
  opt.progress = [&](const std::string& st, const std::string& what, size_t done, size_t total) {
    if (st != stage || done == 1) {
      if (bar) bar->done();
      stage = st;
      bar = std::make_unique<Progress>(st, total);
    }
    bar->step(what);
  };
  const tuner::TuneReport rep = tuner::tune(problems, opt);
  if (bar) bar->done();
  if (args.flag("json")) {
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& r : rep.rows)
      rows.push_back({{"problem", r.key.to_string()}, {"default_us", r.default_us},
                      {"winner_us", r.winner_us},
                      {"speedup", r.winner_us > 0 ? r.default_us / r.winner_us : 0.0},
                      {"winner", tuner::config_text(r.winner)}, {"ok", r.ok}, {"failed", r.failed}, {"rejected", rejected_count(r)},
                      {"failed_by", r.failed_by}, {"first_failure", r.first_failure},
                      {"resumed", r.resumed}, {"pruned", r.pruned}});
    nlohmann::json j{{"device", rep.hello.device_name}, {"env_id", rep.hello.env.id()},
                     {"cache", opt.cache_path}, {"worker_restarts", rep.worker_restarts}, {"rows", rows}};
    print_json(j);
  } else {
    std::printf("tfla tune on %s (%s), cache %s\n", rep.hello.device_name.c_str(), rep.hello.arch.c_str(),
                opt.cache_path.c_str());
    // "failed": candidates that were timed or compiled and did not pass; "rejected": candidates
    // of the space that the family's rules refuse for this problem, never compiled
    std::printf("%-48s %11s %11s %8s %6s %6s %8s  %s\n", "problem", "default us", "winner us", "speedup", "ok",
                "failed", "rejected", "winner");
    for (const auto& r : rep.rows)
      std::printf("%-48s %11.1f %11.1f %7.2fx %6d %6d %8d  %s\n", r.key.to_string().c_str(), r.default_us,
                  r.winner_us, r.winner_us > 0 ? r.default_us / r.winner_us : 0.0, r.ok,
                  r.failed - rejected_count(r), rejected_count(r),
                  r.winner.empty() ? "(none passed)" : tuner::config_text(r.winner).c_str());
    for (const auto& r : rep.rows)
      for (const auto& [why, n] : r.failed_by)
        std::printf("  %s: %d %s%s (first: %s)\n", r.key.to_string().c_str(), n, why.c_str(),
                    why == "rejected" ? " by the family's rules, not compiled" : "",
                    r.first_failure.count(why) ? r.first_failure.at(why).c_str() : "");
    if (rep.worker_restarts) std::printf("worker restarted %d time(s) after faults\n", rep.worker_restarts);
  }
  for (const auto& r : rep.rows)
    if (r.winner.empty()) return kFailed;
  return kOk;
}

}  // namespace tfla::cli
