#include "tuner/tuner.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "ops/family.hpp"
#include "ops/packed.hpp"
#include "store/cubin_store.hpp"
#include "tfla_cache/cache.hpp"

namespace tfla::tuner {
namespace {
using cache::CandidateResult;
using cache::CandidateStatus;
using Clock = std::chrono::steady_clock;

// The kernels of a candidate: its family's (the one its config resolves to).
std::vector<rt::KernelSpec> specs_of(Family f, const MlstmProblem& p, const Config& c, const SpaceLimits& lim) {
  const ops::Resolved r = ops::resolve(f, p, lim, c);
  return ops::launch_kernels(*r.family, p, r.config, /*packed=*/false, lim);
}

// Compiles the kernels of `cands` into the cubin store: each distinct kernel once (candidates
// share most of theirs: the gate kernels depend on the chunk only, the backward's tile kernels
// on one tile each), the distinct ones in parallel threads. Returns, per candidate index, the
// first compile error among its kernels ("" = all compiled or already cached).
std::vector<std::string> compile_all(Family f, const MlstmProblem& p, const std::vector<Candidate>& cands,
                                     const SpaceLimits& lim, const Hello& hello, const TuneOptions& opt) {
  std::vector<rt::KernelSpec> unique;
  std::map<std::string, size_t> index;          // spec key -> position in unique
  std::vector<std::vector<size_t>> uses(cands.size());  // candidate -> its kernels
  std::vector<std::string> errors(cands.size());
  for (size_t i = 0; i < cands.size(); ++i) {
    try {
      for (rt::KernelSpec& s : specs_of(f, p, cands[i].config, lim)) {
        auto [it, fresh] = index.emplace(s.key, unique.size());
        if (fresh) unique.push_back(std::move(s));
        uses[i].push_back(it->second);
      }
    } catch (const std::exception& e) {
      errors[i] = e.what();
    }
  }
  std::vector<std::string> kernel_errors(unique.size());
  store::CubinStore store(opt.cache_path);
  size_t done = 0;
  const auto results = store::fetch_or_compile_all(
      store, unique, hello.arch, hello.env.id(), store::Lookup::UseStore, opt.jobs,
      [&](size_t i, const store::PooledCubin& r) {
        if (!r.ok) kernel_errors[i] = r.error;
        if (opt.progress) opt.progress("compiling", unique[i].family, ++done, unique.size());
      });
  for (size_t i = 0; i < cands.size(); ++i)
    for (size_t u : uses[i])
      if (errors[i].empty() && !kernel_errors[u].empty()) errors[i] = kernel_errors[u];
  return errors;
}

// A worker that is (re)started on demand and says hello first.
class WorkerLane {
 public:
  explicit WorkerLane(const TuneOptions& opt) : opt_(opt) {}
  Hello start() {
    proc_ = std::make_unique<WorkerProcess>(opt_.worker_argv,
                                            std::vector<std::string>{"TFLA_CACHE=" + opt_.cache_path});
    const auto line = proc_->receive(120);
    if (!line) throw Error(ErrorCode::Internal, "the tune worker did not say hello: it " + proc_->why());
    Hello h = parse_hello(*line);
    if (!h.ok) throw Error(h.no_gpu ? ErrorCode::NoDriver : ErrorCode::Internal, h.error);
    return h;
  }
  // Runs one request; a dead or silent worker gives Faulted and is restarted for the next.
  CandidateResult run(const RunRequest& req, int* restarts) {
    if (!proc_) {
      start();
      ++*restarts;
    }
    CandidateResult r;
    std::optional<std::string> line;
    if (proc_->send(to_line(req))) line = proc_->receive(opt_.candidate_timeout_s);
    if (line) {
      try {
        r = parse_result(*line);
      } catch (const Error& e) {
        r.status = CandidateStatus::Faulted;
        r.message = e.what();
        proc_.reset();
      }
      if (r.status == CandidateStatus::Faulted) proc_.reset();  // it exits after a fault
    } else {
      r.status = CandidateStatus::Faulted;
      r.message = "worker " + (proc_->why().empty() ? std::string("closed its input") : proc_->why());
      proc_.reset();
    }
    return r;
  }

 private:
  const TuneOptions& opt_;
  std::unique_ptr<WorkerProcess> proc_;
};

bool failed(CandidateStatus s) { return s != CandidateStatus::Ok && s != CandidateStatus::Pending; }
}  // namespace

std::string failure_reason(const CandidateResult& r) {
  switch (r.status) {
    case CandidateStatus::Ok:
    case CandidateStatus::Pending: return {};
    case CandidateStatus::OverLimits: return "rejected";
    case CandidateStatus::CompileFailed: return "compile_error";
    case CandidateStatus::LaunchFailed: return "launch_error";
    case CandidateStatus::WrongResult: return "wrong_result";
    case CandidateStatus::Faulted: return r.message.find("timed out") != std::string::npos ? "timeout" : "fault";
  }
  return "fault";
}

cache::ProblemKey problem_key(const TuneProblem& t, Family f) {
  cache::ProblemKey k;
  k.op = to_string(f);
  k.variant = tfla::to_string(t.variant);
  k.normalize = t.normalize;
  k.dtype = tfla::to_string(t.dtype);
  k.dqk = static_cast<int>(t.dqk);
  k.dv = static_cast<int>(t.dv);
  k.layout = "bhsd";
  k.batch_heads = t.bh;
  k.seq_len = t.seq;
  return k;
}

namespace {

// Measures (or, with --resume, recalls) every candidate of one family; fills s.results.
// compiled: the compile errors of space.kept, by index (filled by the compile pipeline).
void tune_family(FamilySummary& s, const Enumerated& space,
                 std::shared_future<std::vector<std::string>> compiled, WorkerLane& lane,
                 cache::Cache& db, const TuneOptions& opt, TuneReport& report) {
  const Hello& hello = report.hello;
  s.pruned = static_cast<int>(space.pruned_count);
  std::map<std::string, CandidateResult> known;
  if (opt.resume)
    for (CandidateResult& r : db.candidates(hello.env, s.key))
      if (r.status != CandidateStatus::Pending) known[r.config.to_string()] = r;
  auto record = [&](CandidateResult r) {
    db.record_candidate(hello.env, s.key, r);
    s.results.push_back(std::move(r));
  };
  for (const Candidate& c : space.pruned) {
    if (known.count(config_text(c.config))) continue;
    record({cache::Config{c.config}, CandidateStatus::OverLimits, 0, 0, 0, c.reason});
  }
  std::vector<size_t> todo;  // indices into space.kept
  for (size_t i = 0; i < space.kept.size(); ++i) {
    auto it = known.find(config_text(space.kept[i].config));
    if (it == known.end()) todo.push_back(i);
    else {
      s.results.push_back(it->second);
      ++s.resumed;
    }
  }
  const std::vector<std::string>& compile_errors = compiled.get();
  const Config reference = space.kept.front().config;
  for (size_t n = 0; n < todo.size(); ++n) {
    const Candidate& c = space.kept[todo[n]];
    const std::string what = std::string(to_string(s.family)) + " " + config_text(c.config);
    if (opt.progress) opt.progress("timing", what, n + 1, todo.size());
    CandidateResult r;
    if (todo[n] < compile_errors.size() && !compile_errors[todo[n]].empty()) {
      r.status = CandidateStatus::CompileFailed;
      r.message = compile_errors[todo[n]].substr(0, 2000);
    } else {
      RunRequest req{s.problem, s.family, c.config, reference, opt.reps, opt.warmup};
      r = lane.run(req, &report.worker_restarts);
    }
    r.config = cache::Config{c.config};
    record(std::move(r));
  }
  for (const CandidateResult& r : s.results) {
    if (r.status == CandidateStatus::Ok) ++s.ok;
    else if (failed(r.status)) ++s.failed;
    if (const std::string why = failure_reason(r); !why.empty()) {
      ++s.failed_by[why];
      s.first_failure.emplace(why, r.message.substr(0, 300));
    }
    if (r.config.values == reference && r.status == CandidateStatus::Ok) s.default_us = r.time_median_us;
  }
}

// The fastest Ok result (restricted to one chunk length when chunk > 0); null when none.
const CandidateResult* best(const FamilySummary& s, int64_t chunk = 0) {
  const CandidateResult* b = nullptr;
  for (const CandidateResult& r : s.results)
    if (r.status == CandidateStatus::Ok && (chunk <= 0 || r.config.get_or("chunk", 0) == chunk) &&
        (!b || r.time_median_us < b->time_median_us))
      b = &r;
  return b;
}

void store_winner(FamilySummary& s, const CandidateResult* w, const Hello& hello, cache::Cache& db,
                  double seconds) {
  if (!w) return;
  s.winner = w->config.values;
  s.winner_us = w->time_median_us;
  cache::TunedEntry e;
  e.env = hello.env;
  e.problem = s.key;
  e.winner = w->config;
  e.winner_median_us = w->time_median_us;
  e.winner_spread_us = w->time_spread_us;
  e.default_median_us = s.default_us;
  e.candidates = s.results;
  e.tuning_seconds = seconds;
  e.tool_version = "tfla " + tfla::version();
  db.put_entry(e);
}

}  // namespace

TuneReport tune(const std::vector<TuneProblem>& problems, const TuneOptions& in_opt) {
  TuneReport report;
  // The compile pipeline and the timing loop both report progress: one at a time.
  TuneOptions opt = in_opt;
  auto progress_mu = std::make_shared<std::mutex>();
  if (in_opt.progress)
    opt.progress = [progress_mu, f = in_opt.progress](const std::string& st, const std::string& what,
                                                      size_t done, size_t total) {
      std::lock_guard<std::mutex> lock(*progress_mu);
      f(st, what, done, total);
    };
  WorkerLane lane(opt);
  report.hello = lane.start();
  const Hello& hello = report.hello;
  cache::Cache db = cache::Cache::open(opt.cache_path);
  // The worker's device, as the families' defaults and acceptance rules see it.
  SpaceLimits lim;
  if (!hello.arch.empty()) lim.arch = hello.arch;
  if (hello.env.cc_major > 0) lim.cc_major = hello.env.cc_major, lim.cc_minor = hello.env.cc_minor;
  if (hello.env.sm_count > 0) lim.sm_count = hello.env.sm_count;
  if (hello.smem_optin_bytes > 0) lim.smem_optin_bytes = hello.smem_optin_bytes;

  // Every (problem, family) in tuning order, its space enumerated up front. A compile thread
  // works through them in the same order, so the kernels of the next family compile while the
  // GPU times the current one (compiling, not timing, dominates a tuning run).
  struct Task {
    size_t problem;
    Family family;
    Enumerated space;
    std::promise<std::vector<std::string>> compiled;
    std::shared_future<std::vector<std::string>> result;
  };
  std::vector<std::unique_ptr<Task>> tasks;
  for (size_t pi = 0; pi < problems.size(); ++pi) {
    const TuneProblem& t = problems[pi];
    std::vector<Family> fams;
    if (t.op == "step") fams.push_back(Family::Step);
    if (t.op != "bwd" && t.op != "step") fams.push_back(Family::Forward);
    if (t.op != "fwd" && t.op != "step") fams.push_back(Family::Backward);
    for (Family f : fams) {
      auto task = std::make_unique<Task>();
      task->problem = pi;
      task->family = f;
      task->space = enumerate(f, t.problem(), lim, opt.budget);
      task->result = task->compiled.get_future().share();
      tasks.push_back(std::move(task));
    }
  }
  std::atomic<bool> stop{false};
  std::thread compiler([&] {
    for (auto& task : tasks) {
      std::vector<std::string> errors(task->space.kept.size());
      if (opt.compile && !stop) {
        try {
          errors = compile_all(task->family, problems[task->problem].problem(), task->space.kept, lim, hello, opt);
        } catch (const std::exception& e) {
          for (std::string& err : errors) err = std::string("compile pipeline: ") + e.what();
        }
      }
      task->compiled.set_value(std::move(errors));
    }
  });
  struct Joiner {
    std::thread& t;
    std::atomic<bool>& stop;
    ~Joiner() {
      stop = true;
      if (t.joinable()) t.join();
    }
  } joiner{compiler, stop};

  size_t next_task = 0;
  for (const TuneProblem& t : problems) {
    const auto t0 = Clock::now();
    std::vector<FamilySummary> rows;
    for (; next_task < tasks.size() && &problems[tasks[next_task]->problem] == &t; ++next_task) {
      Task& task = *tasks[next_task];
      FamilySummary s;
      s.problem = t;
      s.family = task.family;
      s.key = problem_key(t, task.family);
      tune_family(s, task.space, task.result, lane, db, opt, report);
      rows.push_back(std::move(s));
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    if (rows.size() == 2) {
      // fwbw: the forward and the backward share the chunk length (the backward reads the
      // forward's saved states): pick the chunk whose best pair is fastest.
      int64_t chunk = 0;
      double best_sum = 0;
      for (int64_t L : {64, 128, 256, 512}) {
        const CandidateResult *f = best(rows[0], L), *b = best(rows[1], L);
        if (f && b && (chunk == 0 || f->time_median_us + b->time_median_us < best_sum)) {
          chunk = L;
          best_sum = f->time_median_us + b->time_median_us;
        }
      }
      for (FamilySummary& s : rows) store_winner(s, chunk ? best(s, chunk) : nullptr, hello, db, seconds);
    } else {
      store_winner(rows[0], best(rows[0]), hello, db, seconds);
    }
    for (FamilySummary& s : rows) report.rows.push_back(std::move(s));
  }
  return report;
}

}  // namespace tfla::tuner
