#include "sqlite_db.hpp"

#include <sqlite3.h>

#include "log.hpp"

namespace tfla::cache::detail {
namespace {

ErrorCode code_of(int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return ErrorCode::Busy;
    case SQLITE_READONLY: return ErrorCode::ReadOnly;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return ErrorCode::Corrupt;
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_PERM:
    case SQLITE_FULL: return ErrorCode::Io;
    default: return ErrorCode::Sqlite;
  }
}

}  // namespace

// ------------------------------------------------------------------------------------ Stmt

Stmt::~Stmt() {
  if (!stmt_) return;
  if (owned_) {
    sqlite3_finalize(stmt_);
  } else {
    sqlite3_reset(stmt_);  // its code repeats the last step's error, already reported
    sqlite3_clear_bindings(stmt_);
  }
}

Stmt& Stmt::bind(int i, int64_t v) {
  if (int rc = sqlite3_bind_int64(stmt_, i, v); rc != SQLITE_OK) db_->fail(rc, "bind");
  return *this;
}

Stmt& Stmt::bind(int i, double v) {
  if (int rc = sqlite3_bind_double(stmt_, i, v); rc != SQLITE_OK) db_->fail(rc, "bind");
  return *this;
}

Stmt& Stmt::bind(int i, std::string_view text) {
  int rc = sqlite3_bind_text64(stmt_, i, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  if (rc != SQLITE_OK) db_->fail(rc, "bind");
  return *this;
}

Stmt& Stmt::bind_blob(int i, std::string_view bytes) {
  int rc = sqlite3_bind_blob64(stmt_, i, bytes.data(), bytes.size(), SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) db_->fail(rc, "bind");
  return *this;
}

bool Stmt::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  db_->fail(rc, std::string("running: ") + sqlite3_sql(stmt_));
}

int64_t Stmt::run() {
  while (step()) {
  }
  return sqlite3_changes64(db_->handle());
}

int64_t Stmt::i64(int col) const { return sqlite3_column_int64(stmt_, col); }
double Stmt::f64(int col) const { return sqlite3_column_double(stmt_, col); }

std::string Stmt::text(int col) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
}

std::string Stmt::blob(int col) const {
  const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
  return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
}

// -------------------------------------------------------------------------------------- Db

Db::Db(const std::string& name, int flags, std::string label, int busy_timeout_ms)
    : label_(std::move(label)) {
  int rc = sqlite3_open_v2(name.c_str(), &db_, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw CacheError(code_of(rc), label_ + ": cannot open: " + msg);
  }
  sqlite3_extended_result_codes(db_, 1);
  if ((rc = sqlite3_busy_timeout(db_, busy_timeout_ms)) != SQLITE_OK) {
    std::string msg = sqlite3_errmsg(db_);
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw CacheError(code_of(rc), label_ + ": cannot set busy timeout: " + msg);
  }
}

Db::~Db() {
  for (auto& [sql, stmt] : stmts_) sqlite3_finalize(stmt);
  if (db_ && sqlite3_close_v2(db_) != SQLITE_OK) {
    tfla::cache_log()->warn("tfla cache {}: close failed: {}", label_, sqlite3_errmsg(db_));
  }
}

Stmt Db::prepare(const std::string& sql) {
  auto it = stmts_.find(sql);
  if (it != stmts_.end() && !sqlite3_stmt_busy(it->second)) return Stmt(*this, it->second, false);
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size() + 1),
                              SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) fail(rc, "preparing: " + sql);
  if (it != stmts_.end()) return Stmt(*this, stmt, true);  // the cached one is in use
  stmts_.emplace(sql, stmt);
  return Stmt(*this, stmt, false);
}

void Db::exec(const std::string& sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    throw CacheError(code_of(rc), label_ + ": " + sql.substr(0, 60) + ": " + msg);
  }
}

int64_t Db::query_int(const std::string& sql) {
  Stmt s = prepare(sql);
  if (!s.step()) throw CacheError(ErrorCode::Sqlite, label_ + ": no row from " + sql);
  return s.i64(0);
}

bool Db::read_only() const { return sqlite3_db_readonly(db_, "main") == 1; }

bool Db::in_memory() const {
  const char* file = sqlite3_db_filename(db_, "main");
  return !file || !*file;
}

void Db::fail(int rc, const std::string& what) const {
  std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
  std::string hint;
  if ((rc & 0xff) == SQLITE_BUSY)
    hint = " (another process held the write lock past the busy timeout)";
  throw CacheError(code_of(rc), label_ + ": " + what + ": " + msg + hint);
}

// ------------------------------------------------------------------------------------- Txn

Txn::Txn(Db& db, Kind kind) : db_(db) {
  db_.exec(kind == Write ? "BEGIN IMMEDIATE" : "BEGIN");
  open_ = true;
}

Txn::~Txn() {
  if (open_ && sqlite3_get_autocommit(db_.handle()) == 0) {
    sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
  }
}

void Txn::commit() {
  db_.exec("COMMIT");
  open_ = false;
}

}  // namespace tfla::cache::detail
