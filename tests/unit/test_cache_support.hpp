// Helpers shared by the tfla_cache tests: a scratch directory, sample keys and entries, raw
// SQLite access for tampering with a file, and running a check in a forked child.
#pragma once

#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "tfla_cache/cache.hpp"

namespace tfla::cache::test {

namespace fs = std::filesystem;

// A fresh directory under $TMPDIR (or /tmp), removed with its contents at scope exit.
class ScratchDir {
 public:
  ScratchDir() {
    std::string tmpl = (fs::temp_directory_path() / "tfla_cache_test.XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
    for (auto& e : fs::recursive_directory_iterator(path_, ec)) {
      fs::permissions(e.path(), fs::perms::owner_all, fs::perm_options::add, ec);
    }
    fs::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

inline EnvKey sample_env(const std::string& gpu = "NVIDIA H100 80GB HBM3") {
  EnvKey e;
  e.gpu_name = gpu;
  e.cc_major = 9;
  e.cc_minor = 0;
  e.sm_count = 132;
  e.l2_bytes = 50331648;
  e.smem_optin_bytes = 232448;
  e.driver_version = 12040;
  e.nvrtc_major = 12;
  e.nvrtc_minor = 4;
  e.tfla_version = "0.1.0";
  e.templates_hash = "0123456789abcdef";
  return e;
}

inline ProblemKey sample_problem(int64_t batch_heads = 8, int64_t seq_len = 8192) {
  ProblemKey p;
  p.op = "fwd";
  p.variant = "exp";
  p.normalize = true;
  p.dtype = "bf16";
  p.dqk = 256;
  p.dv = 512;
  p.layout = "bhsd";
  p.batch_heads = batch_heads;
  p.seq_len = seq_len;
  return p;
}

inline CandidateResult sample_candidate(int64_t chunk, double time_us,
                                        CandidateStatus status = CandidateStatus::Ok) {
  CandidateResult r;
  r.config = Config::parse("chunk=" + std::to_string(chunk) + ",siz_b_q=64,warps=4");
  r.status = status;
  r.time_median_us = time_us;
  r.time_spread_us = time_us / 100;
  r.max_rel_error = 1e-3;
  r.message = status == CandidateStatus::Ok ? "" : "failed: \"quoted\" text";
  return r;
}

inline TunedEntry sample_entry(const EnvKey& env, const ProblemKey& p, int64_t chunk,
                               double time_us) {
  TunedEntry e;
  e.env = env;
  e.problem = p;
  e.winner = sample_candidate(chunk, time_us).config;
  e.winner_median_us = time_us;
  e.winner_spread_us = time_us / 50;
  e.default_median_us = time_us * 1.5;
  e.candidates = {sample_candidate(chunk, time_us), sample_candidate(chunk * 2, time_us * 1.2),
                  sample_candidate(chunk * 4, 0, CandidateStatus::OverLimits)};
  e.tuning_seconds = 12.5;
  e.tool_version = "tfla 0.1.0";
  e.timestamp_unix = 1700000000;
  return e;
}

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// Files in `dir` whose name starts with `prefix`, except SQLite's -wal, -shm and -journal.
inline std::vector<std::string> files_starting(const fs::path& dir, const std::string& prefix) {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    auto ends_with = [&](const std::string& s) {
      return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
    };
    if (name.rfind(prefix, 0) == 0 && !ends_with("-wal") && !ends_with("-shm") &&
        !ends_with("-journal")) {
      out.push_back(e.path().string());
    }
  }
  return out;
}

// Runs SQL on `path` directly, bypassing tfla_cache (to build foreign files or tamper).
inline void raw_sql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) throw std::runtime_error("raw open failed");
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  if (rc != SQLITE_OK) throw std::runtime_error("raw sql failed: " + msg);
}

inline int64_t raw_int(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  sqlite3_stmt* st = nullptr;
  int64_t v = -1;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK &&
      sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW) {
    v = sqlite3_column_int64(st, 0);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

// Runs `body` in a forked child and returns its exit status (0 = passed); a child that
// throws exits 100, one killed by a signal gives 128 + the signal. The child must not use
// Catch2 assertions; it returns a nonzero code that names the failed check.
inline int run_in_child(const std::function<int()>& body) {
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int code = 100;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
    }
    std::fflush(stderr);
    ::_exit(code);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace tfla::cache::test
