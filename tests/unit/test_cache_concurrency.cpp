// tfla_cache across processes: many writers and readers on one file lose and corrupt nothing;
// a writer killed with SIGKILL mid-stream leaves a valid file with every committed row.
#include <signal.h>

#include "tfla_catch.hpp"
#include <chrono>
#include <thread>

#include "test_cache_support.hpp"
#include "tfla_cache/cache.hpp"
#include "tfla_cache/hash.hpp"

using namespace tfla::cache;
using namespace tfla::cache::test;

namespace {

constexpr int kWriters = 4, kReaders = 2;
constexpr int kCandidatesPerWriter = 120, kEntriesPerWriter = 20;

// Writer w tunes problems with batch_heads = w + 1: candidates one by one, then entries
// (each with 3 candidates), then a cubin. Returns 0 on success.
int writer(const std::string& path, int w) {
  Cache c = Cache::open(path);
  const EnvKey env = sample_env();
  for (int i = 0; i < kCandidatesPerWriter; ++i) {
    c.record_candidate(env, sample_problem(w + 1, 100000 + i), sample_candidate(16 + i, 10.0 + i));
  }
  for (int i = 0; i < kEntriesPerWriter; ++i) {
    // chunk encodes the shape, so readers can check that what they read is consistent.
    c.put_entry(
        sample_entry(env, sample_problem(w + 1, 64 * (i + 1)), 1000 * (w + 1) + i, 5.0 + i));
  }
  c.put_cubin(content_hash("w" + std::to_string(w)), "sm_90a", "k",
              std::string(100000, char('a' + w)));
  return 0;
}

// Reads while the writers write, until it has seen every sampled entry (or 10 s pass): every
// entry seen must be whole and consistent.
int reader(const std::string& path) {
  Cache c = Cache::open(path);
  const EnvKey env = sample_env();
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < end) {
    int seen = 0, sampled = 0;
    for (int w = 0; w < kWriters; ++w) {
      for (int i = 0; i < kEntriesPerWriter; i += 7, ++sampled) {
        auto e = c.get_exact(env, sample_problem(w + 1, 64 * (i + 1)));
        if (!e) continue;
        ++seen;
        if (e->winner.get("chunk") != 1000 * (w + 1) + i) return 1;
        if (e->candidates.size() != 3) return 2;  // written in the entry's transaction
      }
      auto r = c.lookup(env, sample_problem(w + 1, 100));  // any writer's nearest entry
      if (r.entry && r.entry->winner.get("chunk") !=
                         1000 * r.entry->problem.batch_heads + r.entry->problem.seq_len / 64 - 1) {
        return 3;
      }
    }
    c.stats();
    if (seen == sampled) return 0;
  }
  return 4;
}

}  // namespace

TEST_CASE("several processes tuning and reading one cache lose nothing", "[cache][concurrency]") {
  ScratchDir dir;
  const std::string path = dir.file("tfla.sqlite");
  std::vector<pid_t> kids;
  for (int k = 0; k < kWriters + kReaders; ++k) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int code = 100;
      try {
        code = k < kWriters ? writer(path, k) : reader(path);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child %d: %s\n", k, e.what());
      }
      ::_exit(code);
    }
    kids.push_back(pid);
  }
  for (size_t k = 0; k < kids.size(); ++k) {
    int status = 0;
    ::waitpid(kids[k], &status, 0);
    INFO("child " << k);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  Cache c = Cache::open(path);
  Stats s = c.stats();
  CHECK(s.environments == 1);
  CHECK(s.entries == kWriters * kEntriesPerWriter);
  CHECK(s.candidates == kWriters * (kCandidatesPerWriter + 3 * kEntriesPerWriter));
  CHECK(s.cubins == kWriters);
  for (int w = 0; w < kWriters; ++w) {
    CHECK(c.candidates(sample_env(), sample_problem(w + 1, 100000 + kCandidatesPerWriter - 1))
              .size() == 1);
    CHECK(c.get_cubin(content_hash("w" + std::to_string(w))) == std::string(100000, char('a' + w)));
  }
  VerifyReport v = c.verify();
  CHECK(v.ok);
  for (const auto& p : v.problems) UNSCOPED_INFO(p);
}

TEST_CASE("a writer killed with SIGKILL mid-stream leaves a valid cache", "[cache][concurrency]") {
  ScratchDir dir;
  const std::string path = dir.file("tfla.sqlite");
  int64_t base_entries = 0, base_cubins = 0;
  // Three runs against the same file, each killed at a different point (as a tuning run that
  // is killed, resumed, killed again).
  for (int run = 0; run < 3; ++run) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(fds[0]);
      try {
        Cache c = Cache::open(path);
        for (int64_t i = 0;; ++i) {
          // Each step: an entry with its 3 candidates in one transaction, then a 64 KiB cubin
          // (many pages per write, so the kill often lands inside a write).
          const int64_t n = run * 1000000 + i;
          c.put_entry(
              sample_entry(sample_env(), sample_problem(1 + n % 64, 1 + n / 64), 128, 1.0 + i));
          c.put_cubin(content_hash("cubin " + std::to_string(n)), "sm_90a", "k",
                      std::string(65536, static_cast<char>(n)));
          const char ack = 1;
          if (::write(fds[1], &ack, 1) != 1) break;
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "killed writer: %s\n", e.what());
      }
      ::_exit(1);
    }
    ::close(fds[1]);
    const int target = 20 + 37 * run;
    int64_t acked = 0;
    char buf;
    while (acked < target && ::read(fds[0], &buf, 1) == 1) ++acked;
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    while (::read(fds[0], &buf, 1) == 1) ++acked;  // acks written just before the kill
    ::close(fds[0]);
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGKILL);

    Cache c = Cache::open(path);
    INFO("run " << run << ", acknowledged steps " << acked);
    CHECK_FALSE(c.recovered());
    Stats s = c.stats();
    // Every acknowledged step is there, and at most one more (committed, not acknowledged).
    const int64_t entries = s.entries - base_entries, cubins = s.cubins - base_cubins;
    CHECK(entries >= acked);
    CHECK(entries <= acked + 1);
    CHECK(cubins >= acked);
    CHECK(cubins <= entries);
    CHECK(s.candidates == 3 * s.entries);  // an entry and its candidates commit together
    VerifyReport v = c.verify();
    CHECK(v.ok);
    for (const auto& p : v.problems) UNSCOPED_INFO(p);
    base_entries = s.entries;
    base_cubins = s.cubins;
  }
}
