// Thin RAII over the SQLite C API: a connection (Db) with a cache of prepared statements, a
// statement guard (Stmt) and a transaction guard (Txn). Every return code is checked; a
// failure throws CacheError with the file name, what was being done and SQLite's message.
// Not thread-safe: Cache serializes access with its mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "tfla_cache/error.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace tfla::cache::detail {

class Db;

// A prepared statement borrowed from Db's cache (or owned, when the cached one is in use);
// reset and unbound when the guard dies.
class Stmt {
 public:
  Stmt(Db& db, sqlite3_stmt* stmt, bool owned) : db_(&db), stmt_(stmt), owned_(owned) {}
  Stmt(Stmt&& o) noexcept : db_(o.db_), stmt_(o.stmt_), owned_(o.owned_) { o.stmt_ = nullptr; }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt& operator=(Stmt&&) = delete;
  ~Stmt();

  // Parameters are 1-based, as in SQLite. Throw CacheError on a bad index.
  Stmt& bind(int i, int64_t v);
  Stmt& bind(int i, int v) { return bind(i, static_cast<int64_t>(v)); }
  Stmt& bind(int i, double v);
  Stmt& bind(int i, std::string_view text);
  Stmt& bind(int i, const char* text) { return bind(i, std::string_view(text)); }
  Stmt& bind(int i, const std::string& text) { return bind(i, std::string_view(text)); }
  Stmt& bind_blob(int i, std::string_view bytes);

  // Advances: true if a row is ready, false when done. Throws CacheError on any error.
  bool step();
  // Steps to completion, expecting no rows (INSERT, UPDATE, DELETE); returns changes().
  int64_t run();

  // Columns are 0-based. NULL reads as 0 or "".
  int64_t i64(int col) const;
  double f64(int col) const;
  std::string text(int col) const;
  std::string blob(int col) const;

 private:
  Db* db_;
  sqlite3_stmt* stmt_;
  bool owned_;
};

class Db {
 public:
  // Opens `name` (a path, or a file: URI when flags include SQLITE_OPEN_URI) with sqlite3
  // open flags; `label` names the file in messages. Sets the busy timeout. Throws CacheError.
  Db(const std::string& name, int flags, std::string label, int busy_timeout_ms);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  sqlite3* handle() const noexcept { return db_; }
  const std::string& label() const noexcept { return label_; }

  // A prepared statement for `sql`, reused across calls. Throws CacheError.
  Stmt prepare(const std::string& sql);
  // Runs one or more statements without results. Throws CacheError.
  void exec(const std::string& sql);
  // Integer result of a one-row query such as "PRAGMA user_version". Throws CacheError.
  int64_t query_int(const std::string& sql);
  bool read_only() const;  // sqlite3_db_readonly on "main"
  bool in_memory() const;  // an in-memory database (":memory:")

  // Throws CacheError for SQLite result `rc` while doing `what`: the code maps BUSY to Busy,
  // READONLY to ReadOnly, CORRUPT/NOTADB to Corrupt, CANTOPEN/IOERR/PERM/FULL to Io.
  [[noreturn]] void fail(int rc, const std::string& what) const;

 private:
  sqlite3* db_ = nullptr;
  std::string label_;
  std::unordered_map<std::string, sqlite3_stmt*> stmts_;
};

// BEGIN IMMEDIATE (Write: takes the write lock now, waiting up to the busy timeout) or BEGIN
// (Read: one consistent snapshot across several queries). Rolls back unless commit() ran.
class Txn {
 public:
  enum Kind { Read, Write };
  Txn(Db& db, Kind kind);
  ~Txn();
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  void commit();

 private:
  Db& db_;
  bool open_ = false;
};

}  // namespace tfla::cache::detail
