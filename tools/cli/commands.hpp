// The tfla CLI's subcommands. Each returns the process exit code:
//   0 success, 1 failure (an error or a failed check), 2 usage error, 3 no GPU/driver.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

namespace tfla::cli {

enum ExitCode { kOk = 0, kFailed = 1, kUsage = 2, kNoGpu = 3 };

// A command that fails with a message and an exit code (kFailed or kNoGpu); main prints it
// (and, with --json, the JSON error object).
class CommandFailed : public std::runtime_error {
 public:
  CommandFailed(int exit_code, const std::string& message)
      : std::runtime_error(message), exit_code_(exit_code) {}
  int exit_code() const noexcept { return exit_code_; }

 private:
  int exit_code_;
};

int cmd_info(const std::vector<std::string>& args);
int cmd_compile(const std::vector<std::string>& args);
int cmd_bench(const std::vector<std::string>& args);
int cmd_cache(const std::vector<std::string>& args);
int cmd_tune(const std::vector<std::string>& args);
int cmd_tune_worker(const std::vector<std::string>& args);  // hidden: the tuner's GPU side
int bench_gemm(const std::vector<std::string>& args);       // `bench gemm` (cmd_bench_sm90.cpp)
int bench_tma_copy(const std::vector<std::string>& args);   // `bench tma-copy` (cmd_bench_sm90.cpp)

// A progress bar on stderr for long work (hidden when stderr is not a terminal unless forced).
class Progress {
 public:
  Progress(std::string what, size_t total);
  void step(const std::string& item);
  void done();

 private:
  std::string what_;
  size_t total_, n_ = 0;
  bool tty_;
};

}  // namespace tfla::cli
