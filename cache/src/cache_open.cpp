// Opening a cache: choosing read-write or read-only, creating or migrating the schema, and
// setting a damaged or foreign file aside (under a lock file, so that concurrent processes
// finding the same damage set it aside once, and never reset a healthy cache).
#include <fcntl.h>
#include <fmt/format.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

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

// Holds an exclusive flock on "<path>.lock" for its lifetime. Throws CacheError(Io).
class LockFile {
 public:
  explicit LockFile(const std::string& path)
      : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
    if (fd_ < 0) {
      throw CacheError(ErrorCode::Io,
                       fmt::format("{}: cannot create lock file: {}", path, std::strerror(errno)));
    }
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) {
        int err = errno;
        ::close(fd_);
        throw CacheError(ErrorCode::Io,
                         fmt::format("{}: cannot lock: {}", path, std::strerror(err)));
      }
    }
  }
  ~LockFile() { ::close(fd_); }  // closing releases the lock
  LockFile(const LockFile&) = delete;
  LockFile& operator=(const LockFile&) = delete;

 private:
  int fd_;
};

// Copies the damaged file at `path` (and its -wal) to "<path>.corrupt-<unix time>", then resets
// `path` in place to an empty database. Call with the lock file held. Returns the message to
// report. Throws CacheError.
//
// Why copy and reset rather than rename: SQLite opens the -wal and -shm by name, lazily. A
// process that opened the old file just before a rename would attach the fresh file's -wal and
// -shm to the old file, and its checkpoint on close would corrupt the fresh cache. Resetting
// through SQLite (SQLITE_DBCONFIG_RESET_DATABASE + VACUUM, which works on a malformed file)
// keeps every process on one file, coordinated by SQLite's own locks.
std::string set_aside_and_reset(const std::string& path, const std::string& problem) {
  std::string aside = fmt::format("{}.corrupt-{}", path, detail::now_unix());
  for (int n = 1; fs::exists(aside); ++n) {
    aside = fmt::format("{}.corrupt-{}-{}", path, detail::now_unix(), n);
  }
  std::error_code ec, wal_ec;
  fs::copy_file(path, aside, ec);
  // Best effort: the -wal vanishes when the last process reading the file closes it.
  if (!ec) fs::copy_file(path + "-wal", aside + "-wal", wal_ec);
  if (ec) {
    fs::remove(aside, wal_ec);
    throw CacheError(ErrorCode::Io, fmt::format("tfla cache {}: {}; cannot copy it aside to {}: {}",
                                                path, problem, aside, ec.message()));
  }
  Db db(path, SQLITE_OPEN_READWRITE, path, Cache::kBusyTimeoutMs);
  int rc = sqlite3_db_config(db.handle(), SQLITE_DBCONFIG_RESET_DATABASE, 1, nullptr);
  if (rc != SQLITE_OK) db.fail(rc, "enabling reset");
  db.exec("VACUUM");
  rc = sqlite3_db_config(db.handle(), SQLITE_DBCONFIG_RESET_DATABASE, 0, nullptr);
  if (rc != SQLITE_OK) db.fail(rc, "disabling reset");
  std::string msg = fmt::format("tfla cache {}: {}; moved it aside to {} and started a fresh cache",
                                path, problem, aside);
  tfla::cache_log()->warn("{}", msg);
  return msg;
}

// Reads application_id, user_version and the tables in one snapshot: separate reads could see
// another process's schema creation half before and half after its commit.
detail::Probe probe_snapshot(Db& db) {
  detail::Txn snapshot(db, detail::Txn::Read);
  return detail::probe(db);
}

// Opens `path` read-write, creating or migrating the schema. Returns nullptr, with `problem`
// set, when the file is damaged or foreign. Throws CacheError (SchemaTooNew, Io, Busy, ...).
std::unique_ptr<Db> open_read_write_db(const std::string& path, std::string& problem) {
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
    problem = "not a tfla cache: " + p.problem;
  } catch (const CacheError& e) {
    if (e.code() != ErrorCode::Corrupt) throw;
    std::string what = e.what();
    if (what.rfind(path + ": ", 0) == 0) what.erase(0, path.size() + 2);
    problem = "damaged or not a SQLite database (" + what + ")";
  }
  return nullptr;
}

// An empty in-memory cache: what a read-only open serves when the file has no schema yet.
std::unique_ptr<Db> empty_memory_db(const std::string& label) {
  auto db = std::make_unique<Db>(":memory:", SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, label,
                                 Cache::kBusyTimeoutMs);
  detail::create_or_migrate(*db);
  return db;
}

// Read-only open (never writes, resets or creates). Throws CacheError for a damaged, foreign
// or newer file, or one that cannot be opened.
std::unique_ptr<Db> open_read_only_db(const std::string& path) {
  if (!fs::exists(path)) throw CacheError(ErrorCode::Io, "tfla cache " + path + ": no such file");
  const int flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_URI;
  std::unique_ptr<Db> db;
  detail::Probe p;
  try {
    db = std::make_unique<Db>(file_uri(path, "mode=ro"), flags, path, Cache::kBusyTimeoutMs);
    p = probe_snapshot(*db);
  } catch (const CacheError& e) {
    if (e.code() != ErrorCode::Io && e.code() != ErrorCode::ReadOnly) throw;
    // A WAL database in a directory we cannot write: no -shm can be made. Read it as an
    // immutable file (no locks, and a leftover -wal is ignored), which is right for a
    // deployed, read-only cache that no process writes.
    tfla::cache_log()->info("tfla cache {}; reading it as immutable", e.what());
    db = std::make_unique<Db>(file_uri(path, "immutable=1"), flags, path, Cache::kBusyTimeoutMs);
    p = probe_snapshot(*db);
  }
  switch (p.kind) {
    case FileKind::Ours: return db;
    case FileKind::Empty:
    case FileKind::Old:
      tfla::cache_log()->warn(
          "tfla cache {}: schema v{} cannot be migrated read-only; serving "
          "an empty cache",
          path, p.user_version);
      return empty_memory_db(path);
    case FileKind::TooNew:
      throw CacheError(ErrorCode::SchemaTooNew, "tfla cache " + path + ": " + p.problem);
    case FileKind::Foreign: break;
  }
  throw CacheError(ErrorCode::Foreign, "tfla cache " + path + ": " + p.problem +
                                           " (opened read-only, so it was left in place)");
}

// Why `path` must be opened read-only, or "" if it can be written.
std::string not_writable_reason(const std::string& path) {
  const std::string dir = dir_of(path);
  if (::access(dir.c_str(), W_OK) != 0) return "no write permission on directory " + dir;
  if (fs::exists(path) && ::access(path.c_str(), W_OK) != 0)
    return "no write permission on " + path;
  return "";
}

}  // namespace

// ------------------------------------------------------------------------ Cache lifecycle

Cache::Cache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Cache::Cache(Cache&&) noexcept = default;
Cache& Cache::operator=(Cache&&) noexcept = default;
Cache::~Cache() = default;

const std::string& Cache::path() const noexcept { return impl_->path; }
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
  if (std::string p = env("TFLA_CACHE"); !p.empty()) return p;
  if (std::string x = env("XDG_CACHE_HOME"); !x.empty()) return x + "/tfla/tfla.sqlite";
  if (std::string h = env("HOME"); !h.empty()) return h + "/.cache/tfla/tfla.sqlite";
  return "tfla.sqlite";
}

Cache Cache::open(const std::string& path, OpenMode mode) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  if (mode == OpenMode::ReadOnly) {
    impl->db = open_read_only_db(path);
    impl->read_only = true;
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
      impl->db = open_read_only_db(path);
      impl->read_only = true;
      impl->read_only_reason = why;
      return Cache(std::move(impl));
    }
    std::string problem;
    if ((impl->db = open_read_write_db(path, problem))) return Cache(std::move(impl));
    // Damaged or foreign. Under the lock file, read it again (another process may have reset
    // it meanwhile) and, if still damaged, set it aside and reset it: once, however many
    // processes found the damage.
    LockFile lock(path + ".lock");
    if ((impl->db = open_read_write_db(path, problem))) return Cache(std::move(impl));
    impl->recovery_message = set_aside_and_reset(path, problem);
    impl->recovered = true;
  }
  throw CacheError(ErrorCode::Io, "tfla cache " + path + ": still damaged after moving it aside");
}

}  // namespace tfla::cache
