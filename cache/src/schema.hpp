// The cache's SQLite schema and its migrations (PRAGMA user_version), and the probe that tells
// a tfla cache from an empty, foreign or newer file.
//
// Adding schema v2: write `void migrate_to_v2(Db&)` in schema.cpp, append it to kMigrations,
// bump Cache::kSchemaVersion. Migrations run in order inside one BEGIN IMMEDIATE transaction.
#pragma once

#include <string>

#include "sqlite_db.hpp"

namespace tfla::cache::detail {

enum class FileKind {
  Ours,     // application_id is tfla's and the tables are there
  Empty,    // a new or zero-length database: no tables, no ids
  Old,      // ours, at a user_version below the current one (needs migrations)
  TooNew,   // ours, written by a newer tfla
  Foreign,  // another application's SQLite database (another or no application_id)
  Damaged,  // tfla's application_id at the current schema, with tables missing
};

struct Probe {
  FileKind kind = FileKind::Empty;
  int user_version = 0;
  std::string problem;  // for Foreign/Damaged/TooNew: one line naming what is wrong
};

// Reads application_id, user_version and the table names. Throws CacheError(Corrupt) when
// SQLite finds the file malformed, truncated or not a database.
Probe probe(Db& db);

// Copies the database `src` (all of it, in one snapshot) into `dst`, e.g. a read-only file
// into an in-memory database that can then be migrated. Throws CacheError.
void copy_database(Db& src, Db& dst);

// Puts the file in WAL mode if it is not (journal_mode is persistent, so this writes once),
// retrying while other processes hold locks, up to the busy timeout. Throws CacheError.
void set_wal(Db& db);

// Sets WAL mode and brings the schema to Cache::kSchemaVersion in one write transaction,
// re-probing inside it (another process may have created or migrated it meanwhile). Returns
// the probe seen inside the transaction (Ours after success; Foreign/Damaged/TooNew leave the
// file untouched). Throws CacheError.
Probe create_or_migrate(Db& db);

// Tables every schema version has; verify() and probe() check them.
extern const char* const kTables[5];

}  // namespace tfla::cache::detail
