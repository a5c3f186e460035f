#include "schema.hpp"

#include <fmt/format.h>
#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <set>
#include <thread>

#include "log.hpp"
#include "tfla_cache/cache.hpp"

namespace tfla::cache::detail {

const char* const kTables[5] = {"meta", "environments", "entries", "candidates", "recorded"};

namespace {

// v1: environments, tuned entries (one per env + problem class + exact shape), every
// candidate's result (written as measured, so a killed tuning run resumes), cubins.
void migrate_to_v1(Db& db) {
  db.exec(R"sql(
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE environments(
  env_id TEXT PRIMARY KEY, gpu_name TEXT NOT NULL, cc_major INTEGER NOT NULL,
  cc_minor INTEGER NOT NULL, sm_count INTEGER NOT NULL, l2_bytes INTEGER NOT NULL,
  smem_optin_bytes INTEGER NOT NULL, driver_version INTEGER NOT NULL,
  nvrtc_major INTEGER NOT NULL, nvrtc_minor INTEGER NOT NULL, tfla_version TEXT NOT NULL,
  templates_hash TEXT NOT NULL, key_json TEXT NOT NULL, first_seen_unix INTEGER NOT NULL);
CREATE TABLE entries(
  env_id TEXT NOT NULL, class_key TEXT NOT NULL, op TEXT NOT NULL, variant TEXT NOT NULL,
  normalize INTEGER NOT NULL, dtype TEXT NOT NULL, dqk INTEGER NOT NULL, dv INTEGER NOT NULL,
  layout TEXT NOT NULL, batch_heads INTEGER NOT NULL, seq_len INTEGER NOT NULL,
  bucket_bh INTEGER NOT NULL, bucket_s INTEGER NOT NULL,
  winner TEXT NOT NULL, winner_median_us REAL NOT NULL, winner_spread_us REAL NOT NULL,
  default_median_us REAL NOT NULL, tuning_seconds REAL NOT NULL, tool_version TEXT NOT NULL,
  timestamp_unix INTEGER NOT NULL,
  PRIMARY KEY(env_id, class_key, batch_heads, seq_len));
CREATE INDEX entries_by_bucket ON entries(env_id, class_key, bucket_bh, bucket_s);
CREATE TABLE candidates(
  env_id TEXT NOT NULL, class_key TEXT NOT NULL, op TEXT NOT NULL, variant TEXT NOT NULL,
  normalize INTEGER NOT NULL, dtype TEXT NOT NULL, dqk INTEGER NOT NULL, dv INTEGER NOT NULL,
  layout TEXT NOT NULL, batch_heads INTEGER NOT NULL, seq_len INTEGER NOT NULL,
  config TEXT NOT NULL, status TEXT NOT NULL, time_median_us REAL NOT NULL,
  time_spread_us REAL NOT NULL, max_rel_error REAL NOT NULL, message TEXT NOT NULL,
  timestamp_unix INTEGER NOT NULL,
  PRIMARY KEY(env_id, class_key, batch_heads, seq_len, config));
CREATE TABLE cubins(
  hash TEXT PRIMARY KEY, arch TEXT NOT NULL, kernel_name TEXT NOT NULL, env_id TEXT NOT NULL,
  size_bytes INTEGER NOT NULL, checksum TEXT NOT NULL, created_unix INTEGER NOT NULL,
  bytes BLOB NOT NULL);
)sql");
}

// v2: shapes that processes looked up without an exact tuned entry (TFLA_RECORD_SHAPES=1), so
// `tfla tune --from-recorded` can tune them later.
void migrate_to_v2(Db& db) {
  db.exec(R"sql(
CREATE TABLE recorded(
  env_id TEXT NOT NULL, class_key TEXT NOT NULL, op TEXT NOT NULL, variant TEXT NOT NULL,
  normalize INTEGER NOT NULL, dtype TEXT NOT NULL, dqk INTEGER NOT NULL, dv INTEGER NOT NULL,
  layout TEXT NOT NULL, batch_heads INTEGER NOT NULL, seq_len INTEGER NOT NULL,
  lookups INTEGER NOT NULL, first_seen_unix INTEGER NOT NULL, last_seen_unix INTEGER NOT NULL,
  PRIMARY KEY(env_id, class_key, batch_heads, seq_len));
)sql");
}

// v3: whether a cubin may be loaded. 1: compiled by this library into this file (put_cubin),
// or checked by recompiling its key here and comparing bytes, or imported with an explicit
// trust flag. 0: imported from a bundle and not checked, so never loaded (get_cubin misses,
// the runtime recompiles and put_cubin replaces it). Rows from before v3 cannot tell, so
// they start at 0 and are recompiled once.
void migrate_to_v3(Db& db) {
  db.exec("ALTER TABLE cubins ADD COLUMN verified INTEGER NOT NULL DEFAULT 0");
}

using Migration = void (*)(Db&);
// kMigrations[i] takes the schema from user_version i to i + 1.
constexpr Migration kMigrations[] = {&migrate_to_v1, &migrate_to_v2, &migrate_to_v3};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == Cache::kSchemaVersion,
              "one migration per schema version");

}  // namespace

Probe probe(Db& db) {
  Probe p;
  const auto app_id = static_cast<uint32_t>(db.query_int("PRAGMA application_id"));
  p.user_version = static_cast<int>(db.query_int("PRAGMA user_version"));
  std::set<std::string> tables;
  {
    Stmt s = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'");
    while (s.step()) tables.insert(s.text(0));
  }
  auto table_list = [&] {
    std::string out;
    for (const auto& t : tables) out += (out.empty() ? "" : ", ") + t;
    return out;
  };
  if (app_id == 0 && p.user_version == 0 && tables.empty()) {
    p.kind = FileKind::Empty;
  } else if (app_id != Cache::kApplicationId) {
    p.kind = FileKind::Foreign;
    p.problem =
        app_id == 0
            ? fmt::format("a SQLite database of another application (tables: {})",
                          tables.empty() ? "none" : table_list())
            : fmt::format("a SQLite database with application_id 0x{:08x}, not tfla's 0x{:08x}",
                          app_id, Cache::kApplicationId);
  } else if (p.user_version > Cache::kSchemaVersion) {
    p.kind = FileKind::TooNew;
    p.problem = fmt::format(
        "schema version {} was written by a newer tfla (this one reads up "
        "to {})",
        p.user_version, Cache::kSchemaVersion);
  } else if (p.user_version < Cache::kSchemaVersion) {
    p.kind = FileKind::Old;
  } else {
    p.kind = FileKind::Ours;
    for (const char* t : kTables) {
      if (!tables.count(t)) {
        p.kind = FileKind::Damaged;
        p.problem =
            fmt::format("a tfla cache without its '{}' table (tables: {})", t, table_list());
        break;
      }
    }
  }
  return p;
}

void set_wal(Db& db) {
  if (db.in_memory()) return;  // an in-memory database has no WAL
  {
    Stmt s = db.prepare("PRAGMA journal_mode");
    if (s.step() && s.text(0) == "wal") return;
  }
  // The switch needs an exclusive lock and SQLite answers BUSY at once, without its busy
  // handler, while another connection reads the file in rollback mode: retry here, up to
  // the busy timeout.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(Cache::kBusyTimeoutMs);
  for (int attempt = 0;; ++attempt) {
    try {
      Stmt s = db.prepare("PRAGMA journal_mode = WAL");
      std::string mode = s.step() ? s.text(0) : "";
      if (mode != "wal") {
        tfla::cache_log()->warn("tfla cache {}: journal mode is '{}', not WAL", db.label(), mode);
      }
      return;
    } catch (const CacheError& e) {
      if (e.code() != ErrorCode::Busy || std::chrono::steady_clock::now() > deadline) throw;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1 + (attempt * 7 + ::getpid()) % 10));
  }
}

void copy_database(Db& src, Db& dst) {
  sqlite3_backup* b = sqlite3_backup_init(dst.handle(), "main", src.handle(), "main");
  if (!b) dst.fail(sqlite3_errcode(dst.handle()), "copying " + src.label());
  const int rc = sqlite3_backup_step(b, -1);
  sqlite3_backup_finish(b);
  if (rc != SQLITE_DONE) src.fail(rc, "copying it");
}

Probe create_or_migrate(Db& db) {
  set_wal(db);
  Txn txn(db, Txn::Write);
  Probe p = probe(db);
  if (p.kind == FileKind::Ours || p.kind == FileKind::Foreign || p.kind == FileKind::TooNew ||
      p.kind == FileKind::Damaged) {
    return p;  // nothing to do, or nothing we may do; the transaction rolls back
  }
  for (int v = p.user_version; v < Cache::kSchemaVersion; ++v) {
    tfla::cache_log()->info("tfla cache {}: migrating schema v{} -> v{}", db.label(), v, v + 1);
    kMigrations[v](db);
  }
  db.exec(fmt::format("PRAGMA application_id = {}", static_cast<int32_t>(Cache::kApplicationId)));
  db.exec(fmt::format("PRAGMA user_version = {}", Cache::kSchemaVersion));
  db.prepare("INSERT OR IGNORE INTO meta(key, value) VALUES('created_unix', ?)")
      .bind(1, static_cast<int64_t>(std::time(nullptr)))
      .run();
  txn.commit();
  p.kind = FileKind::Ours;
  p.user_version = Cache::kSchemaVersion;
  return p;
}

}  // namespace tfla::cache::detail
