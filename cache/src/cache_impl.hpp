// Cache's private state and the helpers shared by its .cpp files (open, entries, cubins, admin).
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>

#include "sqlite_db.hpp"
#include "tfla_cache/cache.hpp"

namespace tfla::cache {

// What a read-only open saw of the file (stat) and whether a -wal was beside it, to tell when
// either changed.
struct FileStamp {
  uint64_t dev = 0, ino = 0;
  int64_t size = -1, mtime_s = 0, mtime_ns = 0;
  bool wal = false;
  bool operator==(const FileStamp& o) const {
    return dev == o.dev && ino == o.ino && size == o.size && mtime_s == o.mtime_s && mtime_ns == o.mtime_ns &&
           wal == o.wal;
  }
};

struct Cache::Impl {
  std::string path;
  std::unique_ptr<detail::Db> db;
  bool read_only = false;
  // Read as an immutable file (another user's idle cache, or a WAL file in a directory this
  // process cannot write): its later changes are seen only by opening it again (refresh).
  bool immutable = false;
  FileStamp stamp;
  std::string read_only_reason;
  bool recovered = false;
  std::string recovery_message;
  mutable std::mutex mu;  // serializes every call on this Cache (and its statement cache)

  // Opens `path` read-only (db, read_only, immutable, stamp). Throws CacheError.
  void open_read_only();
  // For an immutable read: opens the file again where it changed since (another inode, size or
  // mtime) or a -wal appeared or went (its owner at work), so that the owner's later commits are
  // seen; a failing open keeps the old snapshot. Call under mu, before a read.
  void refresh();
  // Throws CacheError(ReadOnly) naming `op`, the file and why it is read-only.
  void require_writable(const char* op) const;
  // Inserts `env` into environments if absent; returns 1 if it was added. Call inside a
  // write transaction.
  int64_t upsert_env(const EnvKey& env, const std::string& env_id);
  // Inserts or replaces one candidate row. Call inside a write transaction.
  void upsert_candidate(const std::string& env_id, const ProblemKey& p, const CandidateResult& r,
                        int64_t timestamp_unix);
  // Inserts or replaces one entry row (not its candidates). Call inside a write transaction.
  void upsert_entry(const std::string& env_id, const TunedEntry& e);
};

namespace detail {

inline int64_t now_unix() { return static_cast<int64_t>(std::time(nullptr)); }

// The problem columns shared by entries and candidates, in this order, starting at
// parameter `first`: env_id, class_key, op, variant, normalize, dtype, dqk, dv, layout,
// batch_heads, seq_len. Returns the next free parameter index.
int bind_problem(Stmt& s, int first, const std::string& env_id, const ProblemKey& p);
constexpr const char* kProblemColumns =
    "env_id, class_key, op, variant, normalize, dtype, dqk, dv, layout, batch_heads, seq_len";
// Reads the problem columns selected as kProblemColumns from column `first` (env_id first).
ProblemKey read_problem(const Stmt& s, int first);
// Reads an EnvKey from the columns of kEnvColumns starting at `first`.
constexpr const char* kEnvColumns =
    "gpu_name, cc_major, cc_minor, sm_count, l2_bytes, smem_optin_bytes, driver_version, "
    "nvrtc_major, nvrtc_minor, tfla_version, templates_hash";
EnvKey read_env(const Stmt& s, int first);
// An empty in-memory database at the current schema, named `label` in messages (an export is
// built in one). Throws CacheError.
std::unique_ptr<Db> open_memory_db(const std::string& label);
// Config::parse for text read back from the file; a failure is CacheError(Corrupt).
Config parse_stored_config(const std::string& text, const std::string& where);
// Removes the files "<path><marker><pid>[-<n>][-journal|-wal|-shm]" beside `path` whose process
// is gone: what a killed process left while building a file it meant to link or rename into
// place (an export's ".tmp-", a fresh cache's ".new-"). `left_by` names that work in the log.
void remove_stale_temporaries(const std::string& path, const std::string& marker, const char* left_by);

}  // namespace detail
}  // namespace tfla::cache
