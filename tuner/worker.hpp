// The tuner's worker protocol: JSON lines over pipes between `tfla tune` (the parent, which
// never touches the GPU) and `tfla tune-worker` (the child, which does all GPU work, so that a
// candidate that faults the context takes only the worker down).
//
//   child  -> parent  {"type":"hello","ok":true,"device":{...},"env":{EnvKey},"env_id":"..."}
//                     {"type":"hello","ok":false,"no_gpu":true,"error":"..."}   then exits
//   parent -> child   {"type":"run","problem":"<spec line>","family":"fwd","config":"k=v,...",
//                      "reference":"k=v,...","reps":10,"warmup":3}
//   child  -> parent  {"type":"result","status":"ok","median_us":..,"spread_us":..,
//                      "max_rel_error":..,"message":""}
// A worker that reports "faulted" exits right after (its context is unusable).
#pragma once
#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "tfla_cache/types.hpp"
#include "tuner/search_space.hpp"
#include "tuner/spec_file.hpp"

namespace tfla::tuner {

struct Hello {
  bool ok = false;
  bool no_gpu = false;
  std::string error;
  std::string device_name, arch;  // arch: NVRTC target, e.g. "sm_90a"
  int64_t smem_optin_bytes = 0, l2_bytes = 0;
  cache::EnvKey env;
};

struct RunRequest {
  TuneProblem problem;
  Family family = Family::Forward;
  Config config, reference;  // the candidate and the default it is validated against
  int reps = 10, warmup = 3;
};

// One line each (no trailing newline); parse_* throw Error(InvalidArgument) on a bad line.
std::string to_line(const Hello& h);
std::string to_line(const RunRequest& r);
std::string to_line(const cache::CandidateResult& r);  // config is not sent back
Hello parse_hello(const std::string& line);
RunRequest parse_request(const std::string& line);
cache::CandidateResult parse_result(const std::string& line);

std::string config_text(const Config& c);          // "k=v,k=v" (sorted)
Config parse_config_text(const std::string& text); // inverse; throws InvalidArgument

// A running worker process: its stdin and stdout are pipes; stderr is inherited.
class WorkerProcess {
 public:
  // Starts argv[0] (a path: no shell, no PATH search) with argv, or /proc/self/exe tune-worker
  // when argv is empty. extra_env: "NAME=value" set in the child. Throws Error(Internal) when
  // fork/pipe fail; a path that cannot be executed shows up as a worker that exited with 127.
  WorkerProcess(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env);
  ~WorkerProcess();  // closes the pipes, kills the child if still running, reaps it
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  bool send(const std::string& line);  // false when the child is gone
  // The next line within timeout_s; nullopt on EOF (child died) or timeout (child killed).
  std::optional<std::string> receive(double timeout_s);
  // Why the last receive failed: "exited with status N", "killed by signal N", "timed out".
  const std::string& why() const { return why_; }

 private:
  void reap(bool kill_first);
  pid_t pid_ = -1;
  int to_child_ = -1, from_child_ = -1;
  std::string buffer_, why_;
};

}  // namespace tfla::tuner
