// Opening a cache: choosing read-write or read-only, creating or migrating the schema, refusing
// a file that is not a tfla cache (left untouched), and moving a damaged tfla cache aside
// (under a lock file, so that concurrent processes finding the same damage move it once, and
// never a healthy cache).
#include <fcntl.h>
#include <pwd.h>
#include <fmt/format.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <thread>
#include <vector>

#include "cache_impl.hpp"
#include "log.hpp"
#include "schema.hpp"

namespace tfla::cache {
namespace fs = std::filesystem;
using detail::Db;
using detail::FileKind;

namespace {

std::string dir_of(const std::string& path) {
  fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

// "file:" URI for `path` with `query`, escaping the characters a URI gives meaning to.
std::string file_uri(const std::string& path, const char* query) {
  std::string uri = "file:";
  for (unsigned char c : path) {
    if (c == '%' || c == '?' || c == '#' || c < 0x20) {
      uri += fmt::format("%{:02X}", c);
    } else {
      uri.push_back(static_cast<char>(c));
    }
  }
  return uri + "?" + query;
}

// Holds a flock (LOCK_EX or LOCK_SH) on "<path>.lock" for its lifetime. Throws CacheError(Io).
// Where another process holds it longer than kLockNoticeMs, says once on the "tfla" logger (warn)
// what it waits for, then keeps waiting.
class LockFile {
 public:
  static constexpr int kLockNoticeMs = 2000;
  explicit LockFile(const std::string& path, int how = LOCK_EX)
      : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
    if (fd_ < 0) {
      throw CacheError(ErrorCode::Io,
                       fmt::format("{}: cannot create lock file: {}", path, std::strerror(errno)));
    }
    const auto start = std::chrono::steady_clock::now();
    bool blocking = false;
    while (::flock(fd_, blocking ? how : how | LOCK_NB) != 0) {
      if (errno == EINTR) continue;
      if (errno != EWOULDBLOCK || blocking) {
        int err = errno;
        ::close(fd_);
        throw CacheError(ErrorCode::Io,
                         fmt::format("{}: cannot lock: {}", path, std::strerror(err)));
      }
      if (std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(kLockNoticeMs)) {
        tfla::cache_log()->warn("tfla cache: waiting for {}: another process holds it; still waiting", path);
        blocking = true;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
  }
  ~LockFile() { ::close(fd_); }  // closing releases the lock
  LockFile(const LockFile&) = delete;
  LockFile& operator=(const LockFile&) = delete;

 private:
  int fd_;
};

// Whose file `path` is, judged from its 100-byte SQLite header alone (a damaged file may not
// open at all): tfla's application_id at offset 68 means it is a tfla cache, however damaged.
// One open, then the size and the header from that descriptor: another process may move a
// damaged cache aside at any moment (move_aside), and a file gone between two looks is absent,
// not another application's.
enum class Owner { Absent, EmptyFile, Tfla, OtherSqlite, NotSqlite };

Owner owner_of(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? Owner::Absent : Owner::NotSqlite;
  struct stat st {};
  unsigned char header[72] = {};
  const bool empty = ::fstat(fd, &st) == 0 && st.st_size == 0;
  const ssize_t n = empty ? 0 : ::read(fd, header, sizeof header);
  ::close(fd);
  if (empty) return Owner::EmptyFile;
  static const char kMagic[] = "SQLite format 3";  // with its NUL: 16 bytes
  if (n < 16 || std::memcmp(header, kMagic, 16) != 0) return Owner::NotSqlite;
  if (n < 72) return Owner::OtherSqlite;  // cut inside the header: nobody can tell whose
  const uint32_t app_id = (uint32_t{header[68]} << 24) | (uint32_t{header[69]} << 16) |
                          (uint32_t{header[70]} << 8) | uint32_t{header[71]};
  return app_id == Cache::kApplicationId ? Owner::Tfla : Owner::OtherSqlite;
}

// Throws Io where something other than a regular file is at `path` (one stat: an absent path,
// also one that another process just moved aside, passes).
void check_regular(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (fs::exists(st) && !fs::is_regular_file(st))
    throw CacheError(ErrorCode::Io, "tfla cache " + path + ": not a regular file");
}

// The error for a file at the cache path that is not (recognizably) a tfla cache: it is never
// modified, moved or reset.
CacheError not_ours(const std::string& path, const std::string& what) {
  return CacheError(ErrorCode::Foreign,
                    fmt::format("tfla cache {}: {}; it is not a tfla cache, so tfla left it untouched "
                                "(move it away, or point TFLA_CACHE or --cache at another file)",
                                path, what));
}

// Renames the damaged tfla cache at `path` (and its -wal and -shm) to
// "<path>.corrupt-<unix time>[-n]". Call with the lock file held. Returns the message to report.
// Throws CacheError(Io).
//
// SQLite opens the -wal and -shm by name when a connection first reads, so a process that had
// opened the old file but not yet read it could attach the fresh file's -wal. Cache::open
// therefore opens and first reads under a shared lock on the same lock file; a process that
// has read keeps its descriptors on the renamed files.
std::string move_aside(const std::string& path, const std::string& problem) {
  std::string aside = fmt::format("{}.corrupt-{}", path, detail::now_unix());
  for (int n = 1; fs::exists(aside); ++n) {
    aside = fmt::format("{}.corrupt-{}-{}", path, detail::now_unix(), n);
  }
  std::error_code ec;
  fs::rename(path, aside, ec);
  if (ec) {
    throw CacheError(ErrorCode::Io, fmt::format("tfla cache {}: {}; cannot move it aside to {}: {}",
                                                path, problem, aside, ec.message()));
  }
  for (const char* suffix : {"-wal", "-shm"}) {
    std::error_code side_ec;
    if (fs::exists(path + suffix, side_ec)) fs::rename(path + suffix, aside + suffix, side_ec);
  }
  std::string msg = fmt::format("tfla cache {}: {}; moved it aside to {} and started a fresh cache",
                                path, problem, aside);
  tfla::cache_log()->warn("{}", msg);
  return msg;
}

// For a file whose header carries another application's id (or none): throws not_ours() unless
// its main file is an empty database (no tables, no ids; e.g. one another tfla process is
// creating right now, its first commit still in the -wal). Reads it as immutable: no locks, no
// -wal or -shm opened or created, nothing written to a file that may not be ours.
void refuse_if_foreign(const std::string& path) {
  try {
    Db ro(file_uri(path, "immutable=1"), SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, path,
          Cache::kBusyTimeoutMs);
    const detail::Probe p = detail::probe(ro);
    if (p.kind != FileKind::Empty && p.kind != FileKind::Ours && p.kind != FileKind::Old)
      throw not_ours(path, p.problem.empty() ? "another application's SQLite database" : p.problem);
  } catch (const CacheError& e) {
    if (e.code() != ErrorCode::Corrupt) throw;
    std::string what = e.what();
    if (what.rfind(path + ": ", 0) == 0) what.erase(0, path.size() + 2);
    throw not_ours(path, "a damaged SQLite database (" + what + ")");
  }
}

// Creates a complete, empty tfla cache at `path` where there is no file: the schema is built in
// WAL mode in a file of its own beside it and then linked into place, so that no other process
// opening the path ever reads a cache half created (SQLite writes a new database's first pages
// in place, where a reader that takes no locks, as refuse_if_foreign's does, would find a
// malformed file and take it for another application's). Where another process links its file
// first, ours is discarded. On a file system without hard links it does nothing: the caller then
// creates the cache in place.
void create_fresh(const std::string& path) {
  detail::remove_stale_temporaries(path, ".new-", "the creation of a cache");
  static std::atomic<unsigned> serial{0};
  const std::string tmp = fmt::format("{}.new-{}-{}", path, ::getpid(), serial++);
  auto remove_tmp = [&] {
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) ::unlink((tmp + suffix).c_str());
  };
  try {
    Db db(tmp, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, tmp, Cache::kBusyTimeoutMs);
    detail::create_or_migrate(db);
    detail::set_wal(db);
  } catch (...) {  // the path's own open reports what is wrong there
    remove_tmp();
    return;
  }  // the last connection closed: the -wal is checkpointed into the file and removed
  if (::link(tmp.c_str(), path.c_str()) != 0 && errno != EEXIST)
    tfla::cache_log()->debug("tfla cache {}: cannot link a fresh cache into place ({}); creating it in place",
                             path, std::strerror(errno));
  remove_tmp();
}

// Reads application_id, user_version and the tables in one snapshot: separate reads could see
// another process's schema creation half before and half after its commit.
detail::Probe probe_snapshot(Db& db) {
  detail::Txn snapshot(db, detail::Txn::Read);
  return detail::probe(db);
}

// Opens `path` read-write, creating or migrating the schema. Returns nullptr, with `problem`
// set, when the file is a damaged tfla cache. Throws CacheError: Foreign for a file that is not
// a tfla cache (untouched), SchemaTooNew, Io, Busy, ...
std::unique_ptr<Db> open_read_write_db(const std::string& path, std::string& problem) {
  // Judge the header before SQLite touches the file: opening read-write may write to it.
  check_regular(path);
  if (owner_of(path) == Owner::Absent) create_fresh(path);
  const Owner owner = owner_of(path);
  if (owner == Owner::NotSqlite) throw not_ours(path, "not a SQLite database");
  if (owner == Owner::OtherSqlite) refuse_if_foreign(path);
  try {
    auto db = std::make_unique<Db>(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, path,
                                   Cache::kBusyTimeoutMs);
    detail::Probe p = probe_snapshot(*db);
    if (p.kind == FileKind::Empty || p.kind == FileKind::Old) p = detail::create_or_migrate(*db);
    if (p.kind == FileKind::TooNew)
      throw CacheError(ErrorCode::SchemaTooNew, "tfla cache " + path + ": " + p.problem);
    if (p.kind == FileKind::Ours) {
      detail::set_wal(*db);  // a copied or exported file may come in another mode
      db->exec("PRAGMA synchronous = NORMAL");  // WAL: durable across a killed process
      return db;
    }
    if (p.kind == FileKind::Foreign) throw not_ours(path, p.problem);
    problem = "damaged: " + p.problem;
  } catch (const CacheError& e) {
    if (e.code() != ErrorCode::Corrupt) throw;
    std::string what = e.what();
    if (what.rfind(path + ": ", 0) == 0) what.erase(0, path.size() + 2);
    if (owner != Owner::Tfla) throw not_ours(path, "a damaged SQLite database (" + what + ")");
    problem = "damaged (" + what + ")";
  }
  return nullptr;
}

// An in-memory cache at the current schema: empty, or a copy of `from` migrated (what a
// read-only open serves for a file with no schema yet or an older one).
std::unique_ptr<Db> memory_db(const std::string& label, Db* from = nullptr) {
  auto db = std::make_unique<Db>(":memory:", SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, label,
                                 Cache::kBusyTimeoutMs);
  if (from) detail::copy_database(*from, *db);
  detail::create_or_migrate(*db);
  return db;
}

// Whether reading `path` in WAL mode would leave files that its owner trips on: another user's
// file (root's side files are handed to the file's owner by SQLite itself) missing its -wal or
// its -shm, which a reader would create as its own, where the owner's next write then fails
// ("attempt to write a readonly database"). With no -wal the file holds every commit; a -wal
// without its -shm (an owner that crashed) holds commits an immutable read does not see.
bool reader_would_orphan_wal(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return false;
  const uid_t me = ::geteuid();
  if (me == 0 || st.st_uid == me) return false;
  std::error_code ec;
  return !fs::exists(path + "-wal", ec) || !fs::exists(path + "-shm", ec);
}

// Read-only open (never writes, resets or creates). Throws CacheError for a damaged, foreign
// or newer file, or one that cannot be opened. *immutable (where given) tells whether the file
// was read as an immutable one, whose later changes this connection does not see.
std::unique_ptr<Db> open_read_only_db(const std::string& path, bool* immutable_out = nullptr) {
  if (immutable_out) *immutable_out = false;
  if (!fs::exists(path)) throw CacheError(ErrorCode::Io, "tfla cache " + path + ": no such file");
  if (owner_of(path) == Owner::OtherSqlite) {
    try {
      refuse_if_foreign(path);
    } catch (const CacheError& e) {
      throw CacheError(e.code(), std::string(e.what()) + " (opened read-only)");
    }
  }
  const int flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_URI;
  std::unique_ptr<Db> db;
  detail::Probe p;
  try {
    // Another user's idle cache is read as an immutable file: nothing is made beside it. Its
    // owner's later commits go to the owner's -wal, unseen here until Cache::Impl::refresh
    // opens the file again; a checkpoint that rewrites pages of the file under this reader before
    // then can fail one of its reads (SQLITE_CORRUPT: a miss, as every failing cache read is) or,
    // as SQLite warns for immutable files, return a stale or wrong row. Neither can make a kernel
    // compute wrong results: a cubin is found by its content hash and checked against its
    // checksum, and a tuned config only chooses among valid ones (it is checked before use). The
    // side files are looked for before the open, and SQLite makes them at the first read: an
    // owner whose own open falls between the two still sees its files.
    const bool immutable = reader_would_orphan_wal(path);
    if (immutable_out) *immutable_out = immutable;
    db = std::make_unique<Db>(file_uri(path, immutable ? "immutable=1" : "mode=ro"), flags, path,
                              Cache::kBusyTimeoutMs);
    p = probe_snapshot(*db);
  } catch (const CacheError& e) {
    if (e.code() != ErrorCode::Io && e.code() != ErrorCode::ReadOnly) throw;
    // A WAL database in a directory we cannot write: no -shm can be made. Read it as an
    // immutable file (no locks, and a leftover -wal is ignored), which is right for a
    // deployed, read-only cache that no process writes.
    tfla::cache_log()->info("tfla cache {}; reading it as immutable", e.what());
    if (immutable_out) *immutable_out = true;
    db = std::make_unique<Db>(file_uri(path, "immutable=1"), flags, path, Cache::kBusyTimeoutMs);
    p = probe_snapshot(*db);
  }
  switch (p.kind) {
    case FileKind::Ours: return db;
    case FileKind::Empty: return memory_db(path);
    case FileKind::Old:
      // The file stays as it is; its rows are served from a migrated copy in memory.
      tfla::cache_log()->info("tfla cache {}: schema v{} opened read-only; migrated in memory",
                              path, p.user_version);
      return memory_db(path, db.get());
    case FileKind::TooNew:
      throw CacheError(ErrorCode::SchemaTooNew, "tfla cache " + path + ": " + p.problem);
    case FileKind::Damaged:
      throw CacheError(ErrorCode::Corrupt, "tfla cache " + path + ": damaged: " + p.problem +
                                               " (opened read-only, so it was left in place)");
    case FileKind::Foreign: break;
  }
  throw CacheError(ErrorCode::Foreign, "tfla cache " + path + ": " + p.problem +
                                           " (opened read-only, so it was left in place)");
}

// Why `path` must be opened read-only, or "" if it can be written.
std::string not_writable_reason(const std::string& path) {
  const std::string dir = dir_of(path);
  if (::access(dir.c_str(), W_OK) != 0) return "no write permission on directory " + dir;
  // (one access: a file moved aside meanwhile is absent, so writable)
  if (::access(path.c_str(), W_OK) != 0 && errno != ENOENT) return "no write permission on " + path;
  return "";
}

}  // namespace

// ------------------------------------------------------------------------ Cache lifecycle

std::unique_ptr<Db> detail::open_memory_db(const std::string& label) { return memory_db(label); }

Cache::Cache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Cache::Cache(Cache&&) noexcept = default;
Cache& Cache::operator=(Cache&&) noexcept = default;
Cache::~Cache() = default;

const std::string& Cache::path() const noexcept { return impl_->path; }

namespace {
FileStamp stamp_of(const std::string& path) {
  FileStamp f;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0)
    f = {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), static_cast<int64_t>(st.st_size),
         static_cast<int64_t>(st.st_mtim.tv_sec), static_cast<int64_t>(st.st_mtim.tv_nsec)};
  std::error_code ec;
  f.wal = fs::exists(path + "-wal", ec);
  return f;
}
}  // namespace

void Cache::Impl::open_read_only() {
  // (the stamp first: a change between it and the open is then seen as one by the next refresh)
  const FileStamp before = stamp_of(path);
  db = open_read_only_db(path, &immutable);
  read_only = true;
  stamp = before;
}

void Cache::Impl::refresh() {
  if (!immutable) return;
  if (stamp_of(path) == stamp) return;
  try {
    open_read_only();
  } catch (const std::exception& e) {  // the old snapshot keeps serving
    tfla::cache_log()->debug(
        "tfla cache {}: changed, but opening it again failed ({}); reading the snapshot opened before", path,
        e.what());
  }
}

bool Cache::read_only() const noexcept { return impl_->read_only; }
const std::string& Cache::read_only_reason() const noexcept { return impl_->read_only_reason; }
bool Cache::recovered() const noexcept { return impl_->recovered; }
const std::string& Cache::recovery_message() const noexcept { return impl_->recovery_message; }

void Cache::Impl::require_writable(const char* op) const {
  if (!read_only) return;
  throw CacheError(
      ErrorCode::ReadOnly,
      fmt::format("tfla cache {}: cannot {}: the cache is read-only ({})", path, op,
                  read_only_reason.empty() ? "opened with OpenMode::ReadOnly" : read_only_reason));
}

std::string Cache::default_path() {
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v ? v : "";
  };
  // Only absolute directories (as the XDG spec asks): a relative one would put the cache, and
  // the cubins loaded from it, wherever the process happens to run.
  auto absolute = [](const std::string& dir) { return !dir.empty() && dir[0] == '/'; };
  if (std::string p = env("TFLA_CACHE"); !p.empty()) return p;
  if (std::string x = env("XDG_CACHE_HOME"); absolute(x)) return x + "/tfla/tfla.sqlite";
  if (std::string h = env("HOME"); absolute(h)) return h + "/.cache/tfla/tfla.sqlite";
  // No usable environment: the account's home directory from the password database.
  std::vector<char> buf(16384);
  struct passwd pw {};
  struct passwd* found = nullptr;
  if (::getpwuid_r(::getuid(), &pw, buf.data(), buf.size(), &found) == 0 && found &&
      absolute(found->pw_dir ? found->pw_dir : ""))
    return std::string(found->pw_dir) + "/.cache/tfla/tfla.sqlite";
  return "";
}

Cache Cache::open(const std::string& path, OpenMode mode) {
  if (path.empty()) {
    throw CacheError(ErrorCode::Io,
                     "tfla cache: no cache path (set TFLA_CACHE, or XDG_CACHE_HOME or HOME to an "
                     "absolute directory)");
  }
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  if (mode == OpenMode::ReadOnly) {
    impl->open_read_only();
    return Cache(std::move(impl));
  }
  std::error_code ec;
  fs::create_directories(dir_of(path), ec);  // failure shows up as "not writable" below
  for (int attempt = 0; attempt < 4; ++attempt) {
    if (std::string why = not_writable_reason(path); !why.empty()) {
      if (!fs::exists(path)) {
        throw CacheError(ErrorCode::Io, fmt::format("tfla cache {}: cannot create: {}", path, why));
      }
      tfla::cache_log()->info("tfla cache {}: {}; opening read-only", path, why);
      impl->open_read_only();
      impl->read_only_reason = why;
      return Cache(std::move(impl));
    }
    std::string problem;
    // A file that is not a tfla cache is refused before the lock file is made beside it: the
    // judgement reads the header (and another application's SQLite file as immutable) only.
    check_regular(path);
    if (const Owner owner = owner_of(path); owner == Owner::NotSqlite) {
      throw not_ours(path, "not a SQLite database");
    } else if (owner == Owner::OtherSqlite) {
      refuse_if_foreign(path);
    }
    {
      // Opening and the first read (which attaches the -wal and -shm) under a shared lock, so
      // that no process renames the files in between (move_aside takes the lock exclusively).
      std::optional<LockFile> opening;
      try {
        opening.emplace(path + ".lock", LOCK_SH);
      } catch (const CacheError&) {  // no lock file possible: then no rename is possible either
      }
      if ((impl->db = open_read_write_db(path, problem))) return Cache(std::move(impl));
    }
    // A damaged tfla cache. Under the lock file, read it again (another process may have
    // replaced it meanwhile) and, if still damaged, move it aside: once, however many
    // processes found the damage. The next attempt creates a fresh cache at `path`.
    LockFile lock(path + ".lock");
    if ((impl->db = open_read_write_db(path, problem))) {
      if (impl->recovered) tfla::cache_log()->info("tfla cache {}: fresh cache created", path);
      return Cache(std::move(impl));
    }
    impl->recovery_message = move_aside(path, problem);
    impl->recovered = true;
  }
  throw CacheError(ErrorCode::Io, "tfla cache " + path + ": still damaged after moving it aside");
}

}  // namespace tfla::cache
