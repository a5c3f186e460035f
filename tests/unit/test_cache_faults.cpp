// tfla_cache under damaged, foreign, newer and read-only files.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/sinks/ostream_sink.h>

#include <chrono>
#include <sstream>
#include <thread>

#include "tfla_catch.hpp"

#include "test_cache_support.hpp"
#include "tfla_cache/cache.hpp"
#include "tfla_cache/hash.hpp"
#include "tfla_util/logger.hpp"

using namespace tfla::cache;
using namespace tfla::cache::test;

namespace {

// A closed cache with entries and a large cubin, so the file spans many pages.
void fill_cache(const std::string& path) {
  Cache c = Cache::open(path);
  for (int s = 1; s <= 20; ++s)
    c.put_entry(sample_entry(sample_env(), sample_problem(8, 512 * s), 128, 100 + s));
  c.put_cubin(content_hash("k"), "sm_90a", "kernel", std::string(200000, 'c'));
}

// Opens `path` read-write and checks that the damaged file was moved aside, byte for byte,
// reported, and replaced by an empty, working cache.
void check_moved_aside(const ScratchDir& dir, const std::string& path,
                       const std::string& expect_in_message) {
  const std::string before = read_file(path);
  Cache c = Cache::open(path);
  CHECK(c.recovered());
  CHECK_THAT(c.recovery_message(), Catch::Contains(path) && Catch::Contains("moved it aside") &&
                                       Catch::Contains(expect_in_message));
  auto aside = files_starting(dir.path(), fs::path(path).filename().string() + ".corrupt-");
  REQUIRE(aside.size() == 1);
  CHECK(read_file(aside[0]) == before);
  CHECK_THAT(c.recovery_message(), Catch::Contains(aside[0]));
  CHECK(c.stats().entries == 0);
  c.put_entry(sample_entry(sample_env(), sample_problem(), 64, 10));
  CHECK(c.get_exact(sample_env(), sample_problem()).has_value());
  // verify() of this open reports the file that was moved aside; a later open finds it fine
  const VerifyReport v = c.verify();
  CHECK_FALSE(v.ok);
  REQUIRE_FALSE(v.problems.empty());
  CHECK_THAT(v.problems[0], Catch::Contains("moved it aside"));
  CHECK(Cache::open(path).verify().ok);
}

}  // namespace

TEST_CASE("a truncated cache is reported and moved aside", "[cache][faults]") {
  ScratchDir dir;
  const std::string path = dir.file("tfla.sqlite");
  fill_cache(path);
  const auto full = fs::file_size(path);
  REQUIRE(full > 200000);
  SECTION("cut in half") { fs::resize_file(path, full / 2); }
  SECTION("cut inside the first page") { fs::resize_file(path, 3000); }
  check_moved_aside(dir, path, "damaged");
}

TEST_CASE("a tfla cache that lost a table is reported and moved aside", "[cache][faults]") {
  ScratchDir dir;
  const std::string path = dir.file("tfla.sqlite");
  fill_cache(path);
  raw_sql(path, "DROP TABLE candidates");
  check_moved_aside(dir, path, "candidates");
}

// Issue 16, defect 1: a file tfla does not own is never emptied, reset, moved or rewritten.
TEST_CASE("a file that is not a tfla cache is refused and left untouched", "[cache][faults]") {
  ScratchDir dir;
  const std::string path = dir.file("tfla.sqlite");
  std::string expect;
  SECTION("a text file") {
    std::string text;
    for (int i = 0; i < 200; ++i) text += "this is somebody's notes file, not a database\n";
    write_file(path, text);
    expect = "not a SQLite database";
  }
  SECTION("a SQLite file of another application") {
    raw_sql(path, "create table u(i); insert into u values(1);");
    expect = "tables: u";
  }
  SECTION("a SQLite file with another application_id") {
    raw_sql(path, "PRAGMA application_id = 1234; CREATE TABLE t(x);");
    expect = "application_id";
  }
  SECTION("a tfla cache cut inside its header (whose it is cannot be told)") {
    fill_cache(path);
    fs::resize_file(path, 50);
    expect = "damaged SQLite database";
  }
  const std::string before = read_file(path);
  auto wal = [&] { return fs::exists(path + "-wal") ? read_file(path + "-wal") : "(none)"; };
  const std::string wal_before = wal();
  const bool lock_before = fs::exists(path + ".lock");  // (left by fill_cache in the last section)
  for (OpenMode mode : {OpenMode::ReadWrite, OpenMode::ReadWrite, OpenMode::ReadOnly}) {
    try {
      Cache::open(path, mode);
      FAIL("opened");
    } catch (const CacheError& e) {
      if (mode == OpenMode::ReadWrite) {
        CHECK(e.code() == ErrorCode::Foreign);
        CHECK_THAT(e.what(), Catch::Contains(path) && Catch::Contains("not a tfla cache") &&
                                 Catch::Contains("untouched") && Catch::Contains(expect));
      }
    }
  }
  CHECK(read_file(path) == before);
  CHECK(wal() == wal_before);
  CHECK(files_starting(dir.path(), "tfla.sqlite.corrupt").empty());
  CHECK(fs::exists(path + ".lock") == lock_before);  // nothing made beside a file that is not ours
}

TEST_CASE("an open that waits on the lock file says so once it has waited a while", "[cache][faults]") {
  ScratchDir dir;
  const std::string path = dir.file("tfla.sqlite");
  { Cache made = Cache::open(path); }
  // another holder of the lock file, exclusively (a second open file description conflicts with
  // the cache's own even within one process), released after 2.6 s
  const int fd = ::open((path + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::flock(fd, LOCK_EX) == 0);
  std::ostringstream said;
  const auto log = tfla::util::logger();
  const spdlog::level::level_enum level = log->level();
  log->set_level(spdlog::level::warn);
  log->sinks().push_back(std::make_shared<spdlog::sinks::ostream_sink_mt>(said));
  std::thread holder([fd] {
    std::this_thread::sleep_for(std::chrono::milliseconds(2600));
    ::close(fd);
  });
  const auto start = std::chrono::steady_clock::now();
  {
    Cache c = Cache::open(path);
    CHECK(c.stats().entries == 0);
  }
  const auto waited = std::chrono::steady_clock::now() - start;
  holder.join();
  log->sinks().pop_back();
  log->set_level(level);
  CHECK(waited >= std::chrono::milliseconds(2500));
  CHECK_THAT(said.str(), Catch::Contains("waiting for " + path + ".lock"));
}

TEST_CASE("OpenMode::ReadOnly never moves a damaged file", "[cache][faults]") {
  ScratchDir dir;
  const std::string path = dir.file("tfla.sqlite");
  write_file(path, std::string(5000, 'x'));
  try {
    Cache::open(path, OpenMode::ReadOnly);
    FAIL("opened");
  } catch (const CacheError& e) {
    CHECK(e.code() == ErrorCode::Corrupt);
    CHECK_THAT(e.what(), Catch::Contains(path));
  }
  raw_sql(dir.file("other.sqlite"), "CREATE TABLE users(id);");
  CHECK_THROWS_WITH(Cache::open(dir.file("other.sqlite"), OpenMode::ReadOnly),
                    Catch::Contains("untouched"));
  CHECK(read_file(path) == std::string(5000, 'x'));
  CHECK(files_starting(dir.path(), "tfla.sqlite.corrupt").empty());
  CHECK_THROWS_AS(Cache::open(dir.file("missing.sqlite"), OpenMode::ReadOnly), CacheError);
  CHECK_FALSE(fs::exists(dir.file("missing.sqlite")));
}

TEST_CASE("a cache from a newer tfla is refused, not moved aside", "[cache][faults]") {
  ScratchDir dir;
  const std::string path = dir.file("tfla.sqlite");
  fill_cache(path);
  raw_sql(path, "PRAGMA user_version = 99");
  for (OpenMode mode : {OpenMode::ReadWrite, OpenMode::ReadOnly}) {
    try {
      Cache::open(path, mode);
      FAIL("opened");
    } catch (const CacheError& e) {
      CHECK(e.code() == ErrorCode::SchemaTooNew);
      CHECK_THAT(e.what(), Catch::Contains("99"));
    }
  }
  CHECK(files_starting(dir.path(), "tfla.sqlite.corrupt").empty());
  CHECK(raw_int(path, "SELECT count(*) FROM entries") == 20);
}

// Forks `kids` processes that at once open the cache at `path` and each write an entry of its
// own; checks that every one exited 0 (a child's error goes to stderr).
static void open_and_write_at_once(const std::string& path, int kids) {
  std::vector<pid_t> pids;
  for (int k = 0; k < kids; ++k) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int code = 1;
      try {
        Cache c = Cache::open(path);
        c.put_entry(sample_entry(sample_env(), sample_problem(8, 1024 * (k + 1)), 64, 10));
        code = 0;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child %d: %s\n", k, e.what());
      }
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  }
}

TEST_CASE("several processes finding one damaged file move it aside once", "[cache][faults]") {
  ScratchDir dir;
  const std::string path = dir.file("tfla.sqlite");
  SECTION("a tfla cache that lost a table") {
    fill_cache(path);
    raw_sql(path, "DROP TABLE entries");
  }
  SECTION("a truncated WAL-mode cache") {
    fill_cache(path);
    fs::resize_file(path, fs::file_size(path) / 3);
  }
  constexpr int kKids = 6;
  open_and_write_at_once(path, kKids);
  CHECK(files_starting(dir.path(), "tfla.sqlite.corrupt-").size() == 1);
  Cache c = Cache::open(path);
  CHECK_FALSE(c.recovered());
  CHECK(c.stats().entries == kKids);  // every process wrote into the one fresh cache
  CHECK(c.verify().ok);
}

TEST_CASE("several processes creating one cache at once all open it", "[cache][faults]") {
  // A fresh cache appears at its path whole (create_fresh): a process that reads the file while
  // another creates it never sees it half written, so none takes it for a foreign file.
  for (int round = 0; round < 5; ++round) {
    ScratchDir dir;
    const std::string path = dir.file("tfla.sqlite");
    constexpr int kKids = 8;
    open_and_write_at_once(path, kKids);
    Cache c = Cache::open(path);
    CHECK(c.stats().entries == kKids);
    CHECK(files_starting(dir.path(), "tfla.sqlite.new-").empty());  // no creation file left behind
  }
}

TEST_CASE("a read-only cache serves lookups and refuses writes clearly",
          "[cache][faults][readonly]") {
  ScratchDir dir;
  const fs::path sub = dir.path() / "ro";
  fs::create_directory(sub);
  const std::string path = (sub / "tfla.sqlite").string();
  fill_cache(path);
  // Either the file alone or the file and its directory lose write permission.
  const bool dir_too = GENERATE(false, true);
  INFO("directory read-only too: " << dir_too);
  fs::permissions(dir.path(), fs::perms::owner_all | fs::perms::others_read |
                                  fs::perms::others_exec | fs::perms::group_read |
                                  fs::perms::group_exec);
  fs::permissions(path, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  fs::permissions(sub, dir_too ? fs::perms::owner_read | fs::perms::owner_exec |
                                     fs::perms::others_read | fs::perms::others_exec |
                                     fs::perms::group_read | fs::perms::group_exec
                               : fs::perms::all);
  const std::string before = read_file(path);
  // Run as an unprivileged user: root ignores permissions.
  int rc = run_in_child([&]() -> int {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) return 90;
    Cache c = Cache::open(path);
    if (!c.read_only()) return 1;
    if (c.read_only_reason().find("no write permission") == std::string::npos) return 2;
    auto r = c.lookup(sample_env(), sample_problem(8, 512 * 3));
    if (r.kind != LookupKind::Exact || r.entry->winner_median_us != 103) return 3;
    if (c.lookup(sample_env(), sample_problem(8, 700)).kind != LookupKind::Bucket) return 4;
    if (c.get_cubin(content_hash("k")) != std::string(200000, 'c')) return 5;
    if (c.stats().entries != 20) return 6;
    try {
      c.record_candidate(sample_env(), sample_problem(), sample_candidate(64, 1));
      return 7;
    } catch (const CacheError& e) {
      if (e.code() != ErrorCode::ReadOnly) return 8;
      if (std::string(e.what()).find("read-only") == std::string::npos) return 9;
      if (std::string(e.what()).find(path) == std::string::npos) return 10;
    }
    try {
      c.put_cubin("h", "sm_90a", "k", "x");
      return 11;
    } catch (const CacheError& e) {
      if (e.code() != ErrorCode::ReadOnly) return 12;
    }
    // OpenMode::ReadOnly works the same.
    Cache ro = Cache::open(path, OpenMode::ReadOnly);
    if (!ro.read_only() || ro.stats().entries != 20) return 13;
    return 0;
  });
  CHECK(rc == 0);
  fs::permissions(sub, fs::perms::all);
  fs::permissions(path, fs::perms::owner_all);
  CHECK(read_file(path) == before);
}

// The two users of the shared-cache tests below (root acts as both, in forked children).
static constexpr uid_t kOwner = 65533, kReader = 65534;

// Whether this process may take both users' uids (root); otherwise the test says why it skips.
static bool acting_as_two_users() {
  if (::geteuid() == 0) return true;
  WARN("needs root to act as two users: skipped");
  return false;
}

// A filled cache owned by kOwner (mode 644) in a directory every user may write (777); its path.
static std::string shared_cache(const ScratchDir& dir) {
  const fs::path sub = dir.path() / "shared";
  fs::create_directory(sub);
  const std::string path = (sub / "tfla.sqlite").string();
  fill_cache(path);
  REQUIRE(::chown(path.c_str(), kOwner, kOwner) == 0);
  fs::permissions(dir.path(), fs::perms::all);
  fs::permissions(sub, fs::perms::all);
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                            fs::perms::others_read);
  return path;
}

// A shared cache: one user owns the file (mode 644) in a directory every user may write (777).
// Another user's process opens it read-only (it may not write the file) and must leave nothing
// beside it: a -wal or -shm made by the reader would be the reader's, and the owner's next write
// would fail on it ("attempt to write a readonly database").
TEST_CASE("a reader of another user's cache leaves no -wal or -shm for the owner to trip on",
          "[cache][faults][readonly]") {
  if (!acting_as_two_users()) return;
  ScratchDir dir;
  const std::string path = shared_cache(dir);
  const uid_t owner = kOwner, reader = kReader;
  // Also a -wal of the owner's without its -shm (an owner that crashed): the reader would make
  // the -shm.
  const bool owners_wal = GENERATE(false, true);
  INFO("an empty -wal of the owner's beside the file: " << owners_wal);
  if (owners_wal) {
    { std::ofstream(path + "-wal"); }
    REQUIRE(::chown((path + "-wal").c_str(), owner, owner) == 0);
    fs::permissions(path + "-wal", fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                                       fs::perms::others_read);
  }
  auto as = [](uid_t uid, const std::function<int()>& body) {
    return run_in_child([&]() -> int {
      if (::setgid(uid) != 0 || ::setuid(uid) != 0) return 90;
      return body();
    });
  };
  const int read_rc = as(reader, [&]() -> int {
    Cache c = Cache::open(path);
    if (!c.read_only()) return 1;
    if (c.lookup(sample_env(), sample_problem(8, 512 * 3)).kind != LookupKind::Exact) return 2;
    if (c.get_cubin(content_hash("k")) != std::string(200000, 'c')) return 3;
    return 0;
  });
  CHECK(read_rc == 0);
  CHECK(fs::exists(path + "-wal") == owners_wal);
  for (const char* suffix : {"-shm", "-journal"}) {
    INFO("left beside the file: " << suffix);
    CHECK_FALSE(fs::exists(path + suffix));
  }
  const int write_rc = as(owner, [&]() -> int {
    try {
      Cache c = Cache::open(path);
      if (c.read_only()) return 1;
      c.put_entry(sample_entry(sample_env(), sample_problem(8, 4096 * 7), 64, 10));
      return c.get_exact(sample_env(), sample_problem(8, 4096 * 7)).has_value() ? 0 : 2;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "owner's write: %s\n", e.what());
      return 3;
    }
  });
  CHECK(write_rc == 0);
}

// The reader above keeps its snapshot open (a long-lived process): its owner's later commits
// reach it once the file has changed, and the reader still makes no side file of its own.
TEST_CASE("a reader of another user's idle cache sees the owner's later commits", "[cache][faults][readonly]") {
  if (!acting_as_two_users()) return;
  ScratchDir dir;
  const std::string path = shared_cache(dir);
  const uid_t owner = kOwner, reader = kReader;
  const ProblemKey later = sample_problem(8, 4096 * 9);
  int ready[2], go[2];
  REQUIRE(::pipe(ready) == 0);
  REQUIRE(::pipe(go) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // the reader: opens, reads, waits for the owner's commit, reads again
    int code = 100;
    try {
      code = [&]() -> int {
        if (::setgid(reader) != 0 || ::setuid(reader) != 0) return 90;
        Cache c = Cache::open(path);
        if (!c.read_only()) return 1;
        if (c.get_exact(sample_env(), later).has_value()) return 2;
        char b = 1;
        if (::write(ready[1], &b, 1) != 1 || ::read(go[0], &b, 1) != 1) return 3;
        if (!c.get_exact(sample_env(), later).has_value()) return 4;
        if (c.lookup(sample_env(), sample_problem(8, 512 * 3)).kind != LookupKind::Exact) return 5;
        return 0;
      }();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "reader: %s\n", e.what());
    }
    ::_exit(code);
  }
  char b = 0;
  REQUIRE(::read(ready[0], &b, 1) == 1);
  const int write_rc = run_in_child([&]() -> int {
    if (::setgid(owner) != 0 || ::setuid(owner) != 0) return 90;
    Cache c = Cache::open(path);
    if (c.read_only()) return 1;
    c.put_entry(sample_entry(sample_env(), later, 64, 10));
    return 0;
  });
  CHECK(write_rc == 0);
  REQUIRE(::write(go[1], &b, 1) == 1);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  for (int fd : {ready[0], ready[1], go[0], go[1]}) ::close(fd);
  for (const char* suffix : {"-wal", "-shm"}) {
    INFO("left beside the file: " << suffix);
    CHECK_FALSE(fs::exists(path + suffix));
  }
}

TEST_CASE("OpenMode::ReadOnly refuses writes on a writable file", "[cache][faults][readonly]") {
  ScratchDir dir;
  const std::string path = dir.file("tfla.sqlite");
  fill_cache(path);
  Cache c = Cache::open(path, OpenMode::ReadOnly);
  CHECK(c.read_only());
  CHECK(c.get_exact(sample_env(), sample_problem(8, 512)).has_value());
  CHECK_THROWS_WITH(c.put_entry(sample_entry(sample_env(), sample_problem(), 64, 1)),
                    Catch::Contains("read-only"));
  CHECK_THROWS_AS(c.prune_stale(sample_env()), CacheError);
  CHECK_THROWS_AS(c.import_from(path), CacheError);
}
