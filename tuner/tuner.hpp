// The tuner's orchestration (the parent side of `tfla tune`; DESIGN.md section 6): for each
// problem it enumerates and prunes the search spaces, compiles every kept candidate's kernels
// with NVRTC in parallel threads (deviceless, for the worker's arch; cubins go to the cubin
// store so the worker loads them without NVRTC), sends candidates one at a time to a worker
// process that times and validates them, records each result in the cache as it arrives, and
// finally stores the winner. A worker that dies or hangs costs only its in-flight candidate,
// recorded as faulted; a fresh worker is started for the rest.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tfla_cache/types.hpp"
#include "tuner/worker.hpp"

namespace tfla::tuner {

struct TuneOptions {
  std::string cache_path;       // the cache file (results, winners, cubins)
  // The worker's argv, argv[0] its executable's path (no shell, no PATH search); empty = this
  // executable: /proc/self/exe tune-worker. Tests start a fake worker script this way.
  std::vector<std::string> worker_argv;
  int budget = 24;              // max timed candidates per kernel family and problem (0 = all)
  int reps = 10, warmup = 3;    // timed repeats and warm-up launches per candidate
  bool resume = false;          // skip candidates already recorded for this env + problem
  bool compile = true;          // compile in the parent before timing (tests turn it off)
  int jobs = 0;                 // compile threads (0 = hardware concurrency)
  double candidate_timeout_s = 60;  // a worker silent this long is killed: faulted
  // Progress: stage ("compiling", "timing"), what (candidate), done, total. Optional.
  std::function<void(const std::string&, const std::string&, size_t, size_t)> progress;
};

// One tuned kernel family for one problem.
struct FamilySummary {
  TuneProblem problem;
  Family family = Family::Forward;
  cache::ProblemKey key;
  double default_us = 0, winner_us = 0;  // 0 when not measured
  Config winner;                         // empty when no candidate passed
  int ok = 0, failed = 0, resumed = 0, pruned = 0;
  // Candidates that did not pass, by reason ("rejected" by the family's acceptance rule,
  // "compile_error", "launch_error", "wrong_result", "fault", "timeout"), with the first message
  // of each reason.
  std::map<std::string, int> failed_by;
  std::map<std::string, std::string> first_failure;
  std::vector<cache::CandidateResult> results;  // every candidate of this run (and resumed)
};

struct TuneReport {
  Hello hello;
  std::vector<FamilySummary> rows;
  int worker_restarts = 0;
};

// The reason of a candidate that did not pass, as FamilySummary::failed_by counts it; "" for ok
// and pending.
std::string failure_reason(const cache::CandidateResult& r);

// The cache key of a family's results for problem t.
cache::ProblemKey problem_key(const TuneProblem& t, Family f);

// Tunes every problem. Throws Error(NoDriver) when the worker reports no GPU, Error(Internal)
// when a worker cannot be started or speaks no protocol, cache errors as CacheError.
TuneReport tune(const std::vector<TuneProblem>& problems, const TuneOptions& opt);

}  // namespace tfla::tuner
