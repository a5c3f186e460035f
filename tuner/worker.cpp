#include "tuner/worker.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "tfla_util/config_text.hpp"

extern char** environ;

namespace tfla::tuner {
namespace {
using nlohmann::json;
[[noreturn]] void bad(const std::string& msg) { throw Error(ErrorCode::InvalidArgument, msg); }

json parse_object(const std::string& line, const char* type) {
  json j = json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) bad("worker protocol: not a JSON object: " + line);
  if (j.value("type", "") != type) bad(std::string("worker protocol: expected a '") + type + "' line: " + line);
  return j;
}
}  // namespace

std::string config_text(const Config& c) { return util::config_to_text(c); }
Config parse_config_text(const std::string& text) {
  try {
    return util::parse_config_text(text);
  } catch (const util::ConfigTextError& e) {
    bad("bad config '" + text + "': " + e.what());
  }
}

std::string to_line(const Hello& h) {
  json j{{"type", "hello"}, {"ok", h.ok}};
  if (!h.ok) {
    j["no_gpu"] = h.no_gpu;
    j["error"] = h.error;
    return j.dump();
  }
  j["device"] = {{"name", h.device_name}, {"arch", h.arch}, {"smem_optin_bytes", h.smem_optin_bytes},
                 {"l2_bytes", h.l2_bytes}};
  j["env"] = json::parse(h.env.to_json());
  j["env_id"] = h.env.id();
  return j.dump();
}

Hello parse_hello(const std::string& line) {
  const json j = parse_object(line, "hello");
  Hello h;
  h.ok = j.value("ok", false);
  if (!h.ok) {
    h.no_gpu = j.value("no_gpu", false);
    h.error = j.value("error", "worker reported no device");
    return h;
  }
  if (!j.contains("device") || !j.contains("env")) bad("worker protocol: hello lacks device or env: " + line);
  const json& d = j["device"];
  h.device_name = d.value("name", "");
  h.arch = d.value("arch", "");
  h.smem_optin_bytes = d.value("smem_optin_bytes", int64_t{0});
  h.l2_bytes = d.value("l2_bytes", int64_t{0});
  try {
    h.env = cache::EnvKey::from_json(j["env"].dump());
  } catch (const std::exception& e) {
    bad(std::string("worker protocol: bad env: ") + e.what());
  }
  return h;
}

std::string to_line(const RunRequest& r) {
  return json{{"type", "run"},
              {"problem", r.problem.to_string()},
              {"family", to_string(r.family)},
              {"config", config_text(r.config)},
              {"reference", config_text(r.reference)},
              {"reps", r.reps},
              {"warmup", r.warmup}}
      .dump();
}

RunRequest parse_request(const std::string& line) {
  const json j = parse_object(line, "run");
  RunRequest r;
  try {
    r.problem = parse_spec_line(j.at("problem").get<std::string>());
    const std::string fam = j.at("family").get<std::string>();
    if (fam != "fwd" && fam != "bwd" && fam != "step")
      bad("worker protocol: family must be fwd, bwd or step, got " + fam);
    r.family = fam == "fwd" ? Family::Forward : fam == "bwd" ? Family::Backward : Family::Step;
    r.config = parse_config_text(j.at("config").get<std::string>());
    r.reference = parse_config_text(j.at("reference").get<std::string>());
    r.reps = j.value("reps", 10);
    r.warmup = j.value("warmup", 3);
  } catch (const json::exception& e) {
    bad(std::string("worker protocol: bad run line: ") + e.what());
  }
  return r;
}

std::string to_line(const cache::CandidateResult& r) {
  return json{{"type", "result"},
              {"status", cache::to_string(r.status)},
              {"median_us", r.time_median_us},
              {"spread_us", r.time_spread_us},
              {"max_rel_error", r.max_rel_error},
              {"message", r.message}}
      .dump();
}

cache::CandidateResult parse_result(const std::string& line) {
  const json j = parse_object(line, "result");
  cache::CandidateResult r;
  const auto st = cache::candidate_status_from_string(j.value("status", ""));
  if (!st) bad("worker protocol: unknown status in " + line);
  r.status = *st;
  r.time_median_us = j.value("median_us", 0.0);
  r.time_spread_us = j.value("spread_us", 0.0);
  r.max_rel_error = j.value("max_rel_error", 0.0);
  r.message = j.value("message", "");
  return r;
}

// ---- the process ---------------------------------------------------------------------------

WorkerProcess::WorkerProcess(const std::vector<std::string>& command, const std::vector<std::string>& extra_env) {
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0) throw Error(ErrorCode::Internal, std::string("pipe: ") + std::strerror(errno));
  if (pipe2(out, O_CLOEXEC) != 0) {
    close(in[0]);
    close(in[1]);
    throw Error(ErrorCode::Internal, std::string("pipe: ") + std::strerror(errno));
  }
  signal(SIGPIPE, SIG_IGN);  // a dead worker must show up as a failed write, not kill us
  // The child's environment and argv are built before fork: the parent has compile threads, so
  // the child may only make async-signal-safe calls (no malloc) until exec.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    const std::string s = *e;
    bool overridden = false;
    for (const std::string& x : extra_env)
      overridden = overridden || s.compare(0, x.find('=') + 1, x, 0, x.find('=') + 1) == 0;
    if (!overridden) env_strings.push_back(s);
  }
  env_strings.insert(env_strings.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args =
      command.empty() ? std::vector<std::string>{"tfla", "tune-worker"} : command;
  const std::string path = command.empty() ? "/proc/self/exe" : command[0];
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_ = fork();
  if (pid_ < 0) throw Error(ErrorCode::Internal, std::string("fork: ") + std::strerror(errno));
  if (pid_ == 0) {  // child: only async-signal-safe calls until exec
    dup2(in[0], STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    execve(path.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  to_child_ = in[1];
  from_child_ = out[0];
}

WorkerProcess::~WorkerProcess() {
  if (to_child_ >= 0) close(to_child_);
  if (from_child_ >= 0) close(from_child_);
  reap(false);
}

void WorkerProcess::reap(bool kill_first) {
  if (pid_ <= 0) return;
  if (kill_first) kill(pid_, SIGKILL);
  int status = 0;
  // Give a worker whose stdin just closed a moment to exit on its own.
  for (int i = 0; i < 200 && !kill_first; ++i) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    usleep(10000);
  }
  if (!kill_first) kill(pid_, SIGKILL);
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

bool WorkerProcess::send(const std::string& line) {
  const std::string msg = line + "\n";
  size_t done = 0;
  while (done < msg.size()) {
    const ssize_t n = write(to_child_, msg.data() + done, msg.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

std::optional<std::string> WorkerProcess::receive(double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    const size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      why_ = "timed out after " + std::to_string(static_cast<int>(timeout_s)) + " s";
      reap(true);
      return std::nullopt;
    }
    pollfd p{from_child_, POLLIN, 0};
    const int r = poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    char buf[4096];
    const ssize_t n = read(from_child_, buf, sizeof buf);
    if (n > 0) {
      buffer_.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // EOF: the worker is gone
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    if (WIFEXITED(status)) why_ = "exited with status " + std::to_string(WEXITSTATUS(status));
    else if (WIFSIGNALED(status)) why_ = std::string("killed by signal ") + strsignal(WTERMSIG(status));
    else why_ = "ended";
    return std::nullopt;
  }
}

}  // namespace tfla::tuner
