// The tuned-config and cubin cache: one SQLite file shared by every tfla process on a machine.
//
// Concurrency: SQLite in WAL mode; readers never block writers; every write is one short
// BEGIN IMMEDIATE transaction that waits up to the busy timeout (10 s) for other writers.
// A process killed mid-write loses at most the transaction in flight; the file stays valid.
// Within a process, one Cache serializes its calls with an internal mutex, so it may be shared
// between threads. A Cache must not cross fork(): open a new one in the child. A moved-from
// Cache may only be destroyed or assigned to.
//
// Faults: a file at the cache path that is not a tfla cache (not SQLite, another
// application's database, a database whose header cannot say whose it is) is never modified:
// open() throws CacheError(Foreign) naming the file and what it is. A damaged tfla cache (tfla's
// application_id in its header, but truncated, malformed or missing tables) is logged and
// renamed, with its -wal and -shm, to "<path>.corrupt-<unix time>", and a fresh cache is
// created at the path (Cache::recovered() and recovery_message() say so; verify() reports it).
// A file or directory without write permission is opened read-only: lookups work and every
// write throws CacheError(ReadOnly).
//
// Cubin integrity: a cubin is served by get_cubin() only when it was stored by put_cubin() (the
// caller compiled it on this machine for its key) or imported with ImportOptions::trust_cubins.
// An imported cubin is stored unverified and is a miss until a put_cubin() of its key (the
// runtime's recompile, `tfla compile`, `tfla cache verify` on a GPU) compares the fresh bytes
// with it and replaces it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tfla_cache/error.hpp"
#include "tfla_cache/types.hpp"

namespace tfla::cache {

enum class OpenMode {
  ReadWrite,  // create if missing, migrate, recover a damaged file; falls back to read-only
              // (with reason()) when the file or its directory is not writable
  ReadOnly,   // never creates, migrates, resets or writes; throws on a damaged file
};

enum class LookupKind { Exact, Bucket, Neighbour, None };
const char* to_string(LookupKind k) noexcept;  // "exact", "bucket", "neighbour", "none"

struct LookupResult {
  LookupKind kind = LookupKind::None;
  std::optional<TunedEntry> entry;  // set unless kind == None; candidates are not loaded
  std::string why;                  // one line: what was found, or what was rejected and why
};

// Accepts a tuned config for the requested shape (tile sizes divide, fits the device, ...).
using ConfigPredicate = std::function<bool(const Config&)>;

struct ListFilter {  // empty field = any
  std::string env_id, op, variant, dtype, layout;
};

struct CubinInfo {
  std::string hash, arch, kernel_name, env_id;
  int64_t size_bytes = 0;
  int64_t created_unix = 0;
  bool verified = false;  // compiled here or checked against a local compile (see above)
};

struct EnvStats {
  EnvKey env;
  std::string env_id;
  int64_t entries = 0, candidates = 0, cubins = 0;
};

struct Stats {
  int schema_version = 0;
  int64_t environments = 0, entries = 0, candidates = 0, cubins = 0;
  int64_t cubin_bytes = 0;  // sum of stored cubin sizes
  int64_t file_bytes = 0;   // database file plus its -wal file on disk
  std::vector<EnvStats> per_env;
};

struct RecordedShape {
  std::string env_id;
  ProblemKey problem;
  int64_t lookups = 0;  // how many process lookups found no exact entry
  int64_t first_seen_unix = 0, last_seen_unix = 0;
};

struct PruneReport {
  int64_t environments = 0, entries = 0, candidates = 0, cubins = 0;  // rows deleted
  int64_t recorded = 0;
};

struct VerifyReport {
  bool ok = true;
  std::vector<std::string> problems;  // one line each; empty when ok
  int64_t entries_checked = 0, cubins_checked = 0;
  int64_t cubins_unverified = 0;  // imported, not yet checked against a local compile (not
                                  // a problem: they are never loaded until checked)
};

struct MergeReport {
  int64_t environments_added = 0;
  int64_t entries_added = 0;     // problems the destination did not have
  int64_t entries_replaced = 0;  // the source's winner was faster
  int64_t entries_kept = 0;      // the destination's winner was as fast or faster
  int64_t candidates_added = 0;  // candidate rows inserted or overwritten
  int64_t cubins_added = 0;
  int64_t cubins_unverified = 0;  // of cubins_added: stored unverified (see Cubin integrity)
  int64_t rows_rejected = 0;      // rows of the source that failed validation, not copied
  std::vector<std::string> rejected;  // why, one line per row (the first kMaxRejectedLines)
  static constexpr size_t kMaxRejectedLines = 50;
};

struct ExportOptions {
  std::vector<std::string> env_ids;  // environments to export; empty = all
  bool include_cubins = true;        // cubins of those environments and env-less ones
  bool overwrite = false;            // replace an existing file at the path (else refuse)
};

struct ImportOptions {
  // Serve the bundle's cubins without checking them against a local compile. Only for
  // bundles from a trusted source: a cubin is machine code the driver runs as it is.
  bool trust_cubins = false;
  // Keep each cubin's verified flag as the file has it. Only for a file this cache exported
  // itself moments ago (tfla cache prune keeps environments by exporting and re-importing
  // them); a flag in any other file proves nothing.
  bool own_export = false;
};

class Cache {
 public:
  static constexpr int kSchemaVersion = 3;
  static constexpr uint32_t kApplicationId = 0x54464C41;  // "TFLA" in PRAGMA application_id
  static constexpr int kBusyTimeoutMs = 10000;

  // $TFLA_CACHE if set and non-empty, else $XDG_CACHE_HOME/tfla/tfla.sqlite, else
  // $HOME/.cache/tfla/tfla.sqlite (each only when that variable is an absolute path), else
  // <the account's home directory>/.cache/tfla/tfla.sqlite, else "" (no default: open("")
  // throws). Never the working directory. Never throws.
  static std::string default_path();

  // Opens (ReadWrite: creating parent directories, the file and the schema, migrating older
  // schemas) the cache at `path`. ReadOnly serves an older schema from a migrated copy in
  // memory, leaving the file as it is. Throws CacheError: Io if the file cannot be opened at
  // all or `path` is empty; Foreign for a file that is not a tfla cache (never modified);
  // SchemaTooNew for a newer schema; in ReadOnly mode Corrupt for a damaged tfla cache
  // (ReadWrite moves it aside and starts fresh; see recovered()). Blocks up to the busy
  // timeout while another process holds the write lock.
  static Cache open(const std::string& path, OpenMode mode = OpenMode::ReadWrite);

  Cache(Cache&&) noexcept;
  Cache& operator=(Cache&&) noexcept;
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;
  ~Cache();  // closes the database; never throws

  const std::string& path() const noexcept;
  bool read_only() const noexcept;
  // Why the cache is read-only ("" if it is not, or if OpenMode::ReadOnly was asked for).
  const std::string& read_only_reason() const noexcept;
  // True when open() found a damaged or foreign file and set it aside; recovery_message()
  // names the file, the problem and where it went (for a CLI to print).
  bool recovered() const noexcept;
  const std::string& recovery_message() const noexcept;

  // --- tuning results (cache_entries.cpp) ---
  // Stores one candidate's result for (env, problem) in its own transaction, replacing an
  // earlier result for the same config. Throws CacheError (ReadOnly, Busy, InvalidArgument...).
  void record_candidate(const EnvKey& env, const ProblemKey& problem, const CandidateResult& r);
  // Every candidate recorded so far for exactly (env, problem), in the order first recorded.
  std::vector<CandidateResult> candidates(const EnvKey& env, const ProblemKey& problem) const;
  // Upserts the winner of e.problem under e.env (replacing an older entry) and records
  // e.candidates, in one transaction. timestamp_unix 0 is stored as now. Throws like above.
  void put_entry(const TunedEntry& e);
  // The entry tuned for exactly this env and shape, with its candidates; nullopt if none.
  std::optional<TunedEntry> get_exact(const EnvKey& env, const ProblemKey& problem) const;
  // Lookup order: the exact shape, then the nearest tuned shape in the same bucket, then the
  // nearest tuned shape of the same class (distance in log2(batch_heads), log2(seq_len)); at
  // every step only configs that `accept` allows (null = all). None if nothing qualifies:
  // the caller then uses its heuristic default. Entries of other environments never match.
  LookupResult lookup(const EnvKey& env, const ProblemKey& problem,
                      const ConfigPredicate& accept = nullptr) const;
  // Entries (without candidates) matching `filter`, ordered by class and shape.
  std::vector<TunedEntry> list(const ListFilter& filter = {}) const;
  // Every environment that has a row, with its id.
  std::vector<std::pair<std::string, EnvKey>> environments() const;

  // --- recorded shapes (cache_entries.cpp) ---
  // Notes that a process looked up `problem` under `env` and found no exact tuned entry
  // (counted once per call; the library calls it once per shape per process). Throws
  // CacheError like record_candidate (ReadOnly included: callers that must not fail check
  // read_only() first).
  void record_shape(const EnvKey& env, const ProblemKey& problem);
  // The recorded shapes of env_id ("" = every environment) that still have no exact entry in
  // their environment, most looked-up first.
  std::vector<RecordedShape> recorded(const std::string& env_id = "") const;
  // Forgets the recorded shapes of env_id ("" = all); returns how many rows went.
  int64_t clear_recorded(const std::string& env_id = "");

  // --- cubins (cache_cubins.cpp) ---
  // Stores `bytes` under `hash` (e.g. content_hash_parts({source, options, arch, nvrtc})) with
  // a SHA-256 checksum; replaces an earlier cubin of the same hash. env_id may be "" (a cubin
  // compiled ahead of time); prune_stale() drops cubins of other non-empty env ids.
  void put_cubin(const std::string& hash, const std::string& arch, const std::string& kernel_name,
                 const std::string& bytes, const std::string& env_id = "");
  // The cubin stored under `hash`, or nullopt if absent, not verified (imported, see Cubin
  // integrity above) or if its checksum does not match (logged: the caller recompiles and
  // stores the fresh bytes; a damaged or unchecked cubin is never returned).
  std::optional<std::string> get_cubin(const std::string& hash) const;
  std::vector<CubinInfo> list_cubins() const;

  // --- maintenance (cache_admin.cpp) ---
  Stats stats() const;
  // Deletes environments other than `current` with their entries, candidates and cubins.
  PruneReport prune_stale(const EnvKey& current);
  // PRAGMA integrity_check, every row against the rules import applies (validate_row.cpp),
  // every cubin's size and checksum; and, as the first problem, that open() moved a damaged
  // file aside (the fresh cache is fine, but what the file held is gone from this path).
  VerifyReport verify() const;
  // Writes the selected environments into a new portable cache file at `path` (same format,
  // stamped in its meta table): built in memory, written to "<path>.tmp-<pid>" and linked or
  // renamed into place, so `path` is never half-written. An existing `path` is refused
  // (CacheError(InvalidArgument)) unless opt.overwrite. Temporary files that a killed export
  // left beside `path` are removed. Throws CacheError.
  MergeReport export_to(const std::string& path, const ExportOptions& opt = {}) const;
  // Merges the cache file at `path` into this one: new environments and problems are added;
  // for a problem both have, the faster winner is kept. Every row is validated (dimensions,
  // op, variant, dtype and layout names, config ranges, positive finite times, UTF-8 text,
  // cubin hashes and checksums); a row that fails is not copied and is counted in
  // rows_rejected with its reason. An older schema is migrated in memory. Cubins arrive
  // unverified unless opt.trust_cubins. Opens `path` read-only. Throws CacheError (Foreign,
  // Corrupt, SchemaTooNew, ReadOnly, Io, ...).
  MergeReport import_from(const std::string& path, const ImportOptions& opt = {});

  struct Impl;  // defined in src/cache_impl.hpp

 private:
  explicit Cache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tfla::cache
