// Export and import: a merge of one cache file into another, row by row, validating each row
// (validate_row.hpp) and marking imported cubins unverified (see Cache's Cubin integrity).
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "cache_impl.hpp"
#include "log.hpp"
#include "schema.hpp"
#include "validate_row.hpp"

namespace tfla::cache {
namespace fs = std::filesystem;
using detail::Stmt;
using detail::Txn;

namespace {

// Rows of `table` (entries or candidates) to copy, as "<kProblemColumns>, <rest>", selected in
// `src` for `env_id`.
Stmt select_rows(detail::Db& src, const char* table, const char* rest, const std::string& env_id) {
  Stmt s = src.prepare(fmt::format("SELECT {}, {} FROM {} WHERE env_id = ? ORDER BY rowid",
                                   detail::kProblemColumns, rest, table));
  s.bind(1, env_id);
  return s;
}

// How merged cubins are marked: Copy keeps the source's verified flag (an export of this
// cache's own rows); Untrusted stores them unverified, Trusted verified (an import).
enum class CubinTrust { Copy, Untrusted, Trusted };

// Notes a source row that failed validation and was not copied.
void reject(MergeReport& rep, const std::string& where, const std::string& why) {
  ++rep.rows_rejected;
  if (rep.rejected.size() < MergeReport::kMaxRejectedLines) {
    std::string line = where + ": " + why;
    if (!detail::is_utf8(line)) line = "(a row with non-UTF-8 text): " + why;
    rep.rejected.push_back(std::move(line));
  }
}

// Copies src's valid cubins (of the `wanted` environments and env-less ones; all if `wanted`
// is empty) that dst lacks; a cubin dst has already stays as it is. Returns how many were
// added.
void merge_cubins(Cache::Impl& src, Cache::Impl& dst, const std::set<std::string>& wanted,
                  CubinTrust trust, MergeReport& rep) {
  constexpr int kBatch = 32;
  Stmt s = src.db->prepare(
      "SELECT hash, arch, kernel_name, env_id, size_bytes, checksum, created_unix, bytes, "
      "verified FROM cubins ORDER BY rowid");
  std::optional<Txn> write;
  for (int in_batch = 0; s.step();) {
    if (!wanted.empty() && !s.text(3).empty() && !wanted.count(s.text(3))) continue;
    const std::string bytes = s.blob(7);
    if (std::string why = detail::check_cubin_row(s.text(0), s.text(1), s.text(2), s.text(3),
                                                  s.i64(4), s.text(5), bytes);
        !why.empty()) {
      reject(rep, "cubin " + (detail::is_utf8(s.text(0)) ? s.text(0) : "(non-UTF-8 hash)"), why);
      continue;
    }
    const bool verified = trust == CubinTrust::Trusted || (trust == CubinTrust::Copy && s.i64(8) != 0);
    if (!write) write.emplace(*dst.db, Txn::Write);
    Stmt ins = dst.db->prepare(
        "INSERT OR IGNORE INTO cubins(hash, arch, kernel_name, env_id, size_bytes, "
        "checksum, created_unix, bytes, verified) VALUES(?,?,?,?,?,?,?,?,?)");
    ins.bind(1, s.text(0)).bind(2, s.text(1)).bind(3, s.text(2)).bind(4, s.text(3));
    ins.bind(5, s.i64(4)).bind(6, s.text(5)).bind(7, std::max<int64_t>(0, s.i64(6)));
    ins.bind_blob(8, bytes).bind(9, verified ? 1 : 0);
    const int64_t n = ins.run();
    rep.cubins_added += n;
    if (!verified) rep.cubins_unverified += n;
    if (++in_batch == kBatch) {
      write->commit();
      write.reset();
      in_batch = 0;
    }
  }
  if (write) write->commit();
}

// Copies src's valid rows into dst: see Cache::import_from. Both are locked by the caller; src
// is read in one snapshot; dst's environments, entries and candidates are written in one
// transaction, its cubins in batches.
MergeReport merge(Cache::Impl& src, Cache::Impl& dst, const ExportOptions& opt, CubinTrust trust) {
  MergeReport rep;
  Txn read(*src.db, Txn::Read);
  Txn write(*dst.db, Txn::Write);
  const std::set<std::string> wanted(opt.env_ids.begin(), opt.env_ids.end());
  std::vector<std::pair<std::string, EnvKey>> envs;
  {
    Stmt s =
        src.db->prepare(fmt::format("SELECT env_id, {} FROM environments", detail::kEnvColumns));
    while (s.step()) {
      if (!wanted.empty() && !wanted.count(s.text(0))) continue;
      EnvKey env = detail::read_env(s, 1);
      if (std::string why = detail::check_env_row(s.text(0), env); !why.empty()) {
        // its rows could be mislabelled: none of them is copied
        reject(rep, "environment " + (detail::is_utf8(s.text(0)) ? s.text(0) : "(non-UTF-8 id)"),
               why + " (its entries, candidates and recorded shapes are skipped)");
        continue;
      }
      envs.emplace_back(s.text(0), std::move(env));
    }
  }
  for (const auto& [env_id, env] : envs) {
    rep.environments_added += dst.upsert_env(env, env_id);
    // Entries: add new problems; for problems both have, keep the faster winner. Remember what
    // happened to each problem, so its candidates follow the winner's file.
    std::map<std::string, bool> src_wins;  // ProblemKey::to_string() -> src entry taken
    Stmt e = select_rows(
        *src.db, "entries",
        "winner, winner_median_us, winner_spread_us, default_median_us, tuning_seconds, "
        "tool_version, timestamp_unix",
        env_id);
    while (e.step()) {
      TunedEntry t;
      t.problem = detail::read_problem(e, 0);
      const std::string where = detail::row_name("entry", env_id, t.problem);
      try {
        t.winner = Config::parse(e.text(11));
      } catch (const CacheError& err) {
        reject(rep, where, std::string("winner: ") + err.what());
        continue;
      }
      t.winner_median_us = e.f64(12);
      t.winner_spread_us = e.f64(13);
      t.default_median_us = e.f64(14);
      t.tuning_seconds = e.f64(15);
      t.tool_version = e.text(16);
      t.timestamp_unix = e.i64(17);
      if (std::string why = detail::check_entry_row(t); !why.empty()) {
        reject(rep, where, why);
        continue;
      }
      Stmt have = dst.db->prepare(
          "SELECT winner_median_us FROM entries WHERE env_id = ? AND class_key = ? "
          "AND batch_heads = ? AND seq_len = ?");
      have.bind(1, env_id)
          .bind(2, t.problem.class_key())
          .bind(3, t.problem.batch_heads)
          .bind(4, t.problem.seq_len);
      const bool exists = have.step();
      const bool take = !exists || t.winner_median_us < have.f64(0);
      (exists ? (take ? rep.entries_replaced : rep.entries_kept) : rep.entries_added) += 1;
      src_wins[t.problem.to_string()] = take;
      if (take) dst.upsert_entry(env_id, t);
    }
    Stmt c = select_rows(
        *src.db, "candidates",
        "config, status, time_median_us, time_spread_us, max_rel_error, message, timestamp_unix",
        env_id);
    while (c.step()) {
      const ProblemKey p = detail::read_problem(c, 0);
      const std::string where = detail::row_name("candidate", env_id, p);
      CandidateResult r;
      try {
        p.validate();
        r.config = Config::parse(c.text(11));
      } catch (const CacheError& err) {
        reject(rep, where, err.what());
        continue;
      }
      r.status = candidate_status_from_string(c.text(12)).value_or(CandidateStatus::Pending);
      r.time_median_us = c.f64(13);
      r.time_spread_us = c.f64(14);
      r.max_rel_error = c.f64(15);
      r.message = c.text(16);
      if (std::string why = detail::check_candidate_row(r, c.text(12)); !why.empty()) {
        reject(rep, where + " [" + r.config.to_string() + "]", why);
        continue;
      }
      const int64_t stamp = std::max<int64_t>(0, c.i64(17));
      auto it = src_wins.find(p.to_string());
      if (it != src_wins.end() && it->second) {
        dst.upsert_candidate(env_id, p, r, stamp);
        rep.candidates_added += 1;
      } else {  // dst's result stands; add only configs it never measured
        Stmt probe = dst.db->prepare(
            "SELECT 1 FROM candidates WHERE env_id = ? AND class_key = ? AND "
            "batch_heads = ? AND seq_len = ? AND config = ?");
        probe.bind(1, env_id).bind(2, p.class_key()).bind(3, p.batch_heads).bind(4, p.seq_len);
        probe.bind(5, r.config.to_string());
        if (!probe.step()) {
          dst.upsert_candidate(env_id, p, r, stamp);
          rep.candidates_added += 1;
        }
      }
    }
    // Recorded shapes: lookups add up.
    Stmt r = select_rows(*src.db, "recorded", "lookups, first_seen_unix, last_seen_unix", env_id);
    while (r.step()) {
      const ProblemKey p = detail::read_problem(r, 0);
      try {
        p.validate();
      } catch (const CacheError& err) {
        reject(rep, detail::row_name("recorded shape", env_id, p), err.what());
        continue;
      }
      if (r.i64(11) < 0 || r.i64(12) < 0 || r.i64(13) < 0) {
        reject(rep, detail::row_name("recorded shape", env_id, p), "negative count or time");
        continue;
      }
      Stmt ins = dst.db->prepare(fmt::format(
          "INSERT INTO recorded({}, lookups, first_seen_unix, last_seen_unix) "
          "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
          "ON CONFLICT(env_id, class_key, batch_heads, seq_len) DO UPDATE SET "
          "lookups = lookups + excluded.lookups, "
          "first_seen_unix = min(first_seen_unix, excluded.first_seen_unix), "
          "last_seen_unix = max(last_seen_unix, excluded.last_seen_unix)",
          detail::kProblemColumns));
      const int next = detail::bind_problem(ins, 1, env_id, p);
      ins.bind(next, r.i64(11)).bind(next + 1, r.i64(12)).bind(next + 2, r.i64(13)).run();
    }
  }
  write.commit();
  // Cubins in batches of their own transactions, so that a large import does not hold the
  // write lock past other processes' busy timeout. Inserting a cubin twice is harmless.
  if (opt.include_cubins) merge_cubins(src, dst, wanted, trust, rep);
  return rep;
}

}  // namespace

void detail::remove_stale_temporaries(const std::string& path, const std::string& marker, const char* left_by) {
  const fs::path target(path);
  const fs::path dir = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  const std::string prefix = target.filename().string() + marker;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string rest = name.substr(prefix.size());
    size_t digits = rest.find_first_not_of("0123456789");
    if (digits == 0) continue;
    const long pid = std::strtol(rest.substr(0, digits).c_str(), nullptr, 10);
    std::string suffix = digits == std::string::npos ? "" : rest.substr(digits);
    if (suffix.size() > 1 && suffix[0] == '-' && std::isdigit(static_cast<unsigned char>(suffix[1]))) {
      const size_t n_end = suffix.find_first_not_of("0123456789", 1);  // a serial "-<n>"
      suffix = n_end == std::string::npos ? "" : suffix.substr(n_end);
    }
    if (!suffix.empty() && suffix != "-journal" && suffix != "-wal" && suffix != "-shm") continue;
    if (pid <= 0 || pid == ::getpid() || !(::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH))
      continue;
    std::error_code rm_ec;
    fs::remove(it->path(), rm_ec);
    if (!rm_ec) tfla::cache_log()->info("removed {}, left by {} that was killed", it->path().string(), left_by);
  }
}

MergeReport Cache::export_to(const std::string& path, const ExportOptions& opt) const {
  const std::string where = "export to " + path;
  detail::remove_stale_temporaries(path, ".tmp-", "an export");
  std::error_code ec;
  if (fs::exists(fs::symlink_status(path, ec)) && !opt.overwrite) {
    throw CacheError(ErrorCode::InvalidArgument,
                     where + ": the file exists; tfla never overwrites a file unless asked "
                             "(tfla cache export --force, ExportOptions::overwrite)");
  }
  if (fs::exists(path + "-wal", ec)) {
    throw CacheError(ErrorCode::Io, where + ": that file is in use (it has a -wal file)");
  }
  // Built in memory, so that nothing but the finished file ever appears beside `path`.
  Impl out;
  out.path = path;
  out.db = detail::open_memory_db(path);
  MergeReport rep;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    rep = merge(*impl_, out, opt, CubinTrust::Copy);
  }
  detail::Db& db = *out.db;
  {
    Txn txn(db, Txn::Write);
    auto meta = [&](const char* key, const std::string& value) {
      db.prepare("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)").bind(1, key).bind(2, value).run();
    };
    meta("kind", "export");
    meta("exported_unix", std::to_string(detail::now_unix()));
    meta("exported_from", impl_->path);
    std::string ids;
    Stmt s = db.prepare("SELECT env_id FROM environments ORDER BY env_id");
    while (s.step()) ids += (ids.empty() ? "" : ",") + s.text(0);
    meta("environments", ids);
    txn.commit();
  }
  // VACUUM INTO writes a compact, standalone copy (application_id and user_version included).
  const std::string tmp = fmt::format("{}.tmp-{}", path, ::getpid());
  std::error_code rm_ec;
  for (const char* suffix : {"", "-journal"}) fs::remove(tmp + suffix, rm_ec);
  try {
    db.prepare("VACUUM INTO ?").bind(1, tmp).run();
  } catch (...) {
    for (const char* suffix : {"", "-journal"}) fs::remove(tmp + suffix, rm_ec);
    throw;
  }
  // Into place: rename (replacing) when asked to overwrite, else link, which fails if a file
  // appeared at `path` meanwhile, so that no file is ever replaced unasked.
  std::string failure;
  if (opt.overwrite) {
    if (::rename(tmp.c_str(), path.c_str()) != 0) failure = std::strerror(errno);
  } else if (::link(tmp.c_str(), path.c_str()) != 0) {
    failure = errno == EEXIST ? "the file appeared meanwhile; it was left as it is"
                              : std::strerror(errno);
  }
  fs::remove(tmp, rm_ec);
  if (!failure.empty()) throw CacheError(ErrorCode::Io, where + ": " + failure);
  return rep;
}

MergeReport Cache::import_from(const std::string& path, const ImportOptions& opt) {
  impl_->require_writable("import");
  std::error_code ec;
  if (fs::equivalent(path, impl_->path, ec)) {
    throw CacheError(ErrorCode::InvalidArgument, "import: " + path + " is this cache's own file");
  }
  Cache src = Cache::open(path, OpenMode::ReadOnly);  // an older schema: migrated in memory
  MergeReport rep;
  {
    std::scoped_lock lock(impl_->mu, src.impl_->mu);
    rep = merge(*src.impl_, *impl_, ExportOptions{},
                opt.trust_cubins ? CubinTrust::Trusted
                : opt.own_export ? CubinTrust::Copy
                                 : CubinTrust::Untrusted);
  }
  tfla::cache_log()->info(
      "tfla cache {}: imported {}: {} environments, {} entries added, {} replaced, "
      "{} kept, {} candidates, {} cubins ({} unverified), {} rows rejected",
      impl_->path, path, rep.environments_added, rep.entries_added, rep.entries_replaced,
      rep.entries_kept, rep.candidates_added, rep.cubins_added, rep.cubins_unverified,
      rep.rows_rejected);
  for (const std::string& line : rep.rejected)
    tfla::cache_log()->warn("tfla cache import {}: rejected {}", path, line);
  return rep;
}

}  // namespace tfla::cache
