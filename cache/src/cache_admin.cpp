// Maintenance: stats, prune and verify (cache_merge.cpp: export and import).
#include <fmt/format.h>

#include <filesystem>
#include <set>

#include "cache_impl.hpp"
#include "log.hpp"
#include "schema.hpp"
#include "validate_row.hpp"
#include "tfla_cache/hash.hpp"

namespace tfla::cache {
namespace fs = std::filesystem;
using detail::Stmt;
using detail::Txn;

namespace {

int64_t file_size_or_zero(const std::string& path) {
  std::error_code ec;
  auto n = fs::file_size(path, ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

}  // namespace

Stats Cache::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->refresh();
  detail::Db& db = *impl_->db;
  Txn txn(db, Txn::Read);
  Stats st;
  st.schema_version = static_cast<int>(db.query_int("PRAGMA user_version"));
  st.environments = db.query_int("SELECT count(*) FROM environments");
  st.entries = db.query_int("SELECT count(*) FROM entries");
  st.candidates = db.query_int("SELECT count(*) FROM candidates");
  st.cubins = db.query_int("SELECT count(*) FROM cubins");
  st.cubin_bytes = db.query_int("SELECT coalesce(sum(size_bytes), 0) FROM cubins");
  st.file_bytes = file_size_or_zero(impl_->path) + file_size_or_zero(impl_->path + "-wal");
  Stmt s = db.prepare(
      fmt::format("SELECT env_id, {}, (SELECT count(*) FROM entries e WHERE e.env_id = v.env_id), "
                  "(SELECT count(*) FROM candidates c WHERE c.env_id = v.env_id), "
                  "(SELECT count(*) FROM cubins b WHERE b.env_id = v.env_id) "
                  "FROM environments v ORDER BY first_seen_unix, env_id",
                  detail::kEnvColumns));
  while (s.step()) {
    EnvStats e;
    e.env_id = s.text(0);
    e.env = detail::read_env(s, 1);
    e.entries = s.i64(12);
    e.candidates = s.i64(13);
    e.cubins = s.i64(14);
    st.per_env.push_back(std::move(e));
  }
  return st;
}

PruneReport Cache::prune_stale(const EnvKey& current) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->require_writable("prune");
  const std::string keep = current.id();
  detail::Db& db = *impl_->db;
  Txn txn(db, Txn::Write);
  PruneReport rep;
  rep.entries = db.prepare("DELETE FROM entries WHERE env_id != ?").bind(1, keep).run();
  rep.candidates = db.prepare("DELETE FROM candidates WHERE env_id != ?").bind(1, keep).run();
  rep.cubins =
      db.prepare("DELETE FROM cubins WHERE env_id != '' AND env_id != ?").bind(1, keep).run();
  rep.recorded = db.prepare("DELETE FROM recorded WHERE env_id != ?").bind(1, keep).run();
  rep.environments = db.prepare("DELETE FROM environments WHERE env_id != ?").bind(1, keep).run();
  txn.commit();
  tfla::cache_log()->info(
      "tfla cache {}: pruned {} environments, {} entries, {} candidates, {} cubins", impl_->path,
      rep.environments, rep.entries, rep.candidates, rep.cubins);
  return rep;
}

VerifyReport Cache::verify() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->refresh();
  detail::Db& db = *impl_->db;
  VerifyReport rep;
  auto problem = [&](std::string text) {
    rep.ok = false;
    if (!detail::is_utf8(text)) text = "(a row with non-UTF-8 text)";
    rep.problems.push_back(std::move(text));
  };
  if (impl_->recovered) problem(impl_->recovery_message);
  try {
    {
      Stmt s = db.prepare("PRAGMA integrity_check(100)");
      while (s.step()) {
        if (s.text(0) != "ok") problem("integrity_check: " + s.text(0));
      }
    }
    Txn txn(db, Txn::Read);
    std::set<std::string> envs;
    {
      Stmt s = db.prepare(fmt::format("SELECT env_id, {} FROM environments", detail::kEnvColumns));
      while (s.step()) {
        envs.insert(s.text(0));
        if (std::string why = detail::check_env_row(s.text(0), detail::read_env(s, 1)); !why.empty())
          problem("environment " + s.text(0) + ": " + why);
      }
    }
    Stmt e = db.prepare(fmt::format(
        "SELECT {}, winner, bucket_bh, bucket_s, winner_median_us, winner_spread_us, "
        "default_median_us, tuning_seconds, tool_version, timestamp_unix FROM entries",
        detail::kProblemColumns));
    while (e.step()) {
      ++rep.entries_checked;
      TunedEntry t;
      t.problem = detail::read_problem(e, 0);
      const std::string where = detail::row_name("entry", e.text(0), t.problem);
      if (!envs.count(e.text(0))) problem(where + ": unknown environment");
      try {
        t.winner = Config::parse(e.text(11));
        t.winner_median_us = e.f64(14);
        t.winner_spread_us = e.f64(15);
        t.default_median_us = e.f64(16);
        t.tuning_seconds = e.f64(17);
        t.tool_version = e.text(18);
        t.timestamp_unix = e.i64(19);
        if (std::string why = detail::check_entry_row(t); !why.empty()) problem(where + ": " + why);
      } catch (const CacheError& err) {
        problem(where + ": " + err.what());
      }
      if (t.problem.class_key() != e.text(1)) problem(where + ": class_key column is '" + e.text(1) + "'");
      if (e.i64(12) != t.problem.bucket_batch_heads() || e.i64(13) != t.problem.bucket_seq_len())
        problem(where + ": wrong bucket");
    }
    Stmt c = db.prepare(
        "SELECT env_id, class_key, batch_heads, seq_len, config, status, time_median_us, "
        "time_spread_us, max_rel_error, message FROM candidates");
    while (c.step()) {
      const std::string where = fmt::format("candidate {} {} BH={},S={} [{}]", c.text(0), c.text(1),
                                            c.i64(2), c.i64(3), c.text(4));
      try {
        CandidateResult r;
        r.config = Config::parse(c.text(4));
        r.time_median_us = c.f64(6);
        r.time_spread_us = c.f64(7);
        r.max_rel_error = c.f64(8);
        r.message = c.text(9);
        if (std::string why = detail::check_candidate_row(r, c.text(5)); !why.empty())
          problem(where + ": " + why);
      } catch (const CacheError& err) {
        problem(where + ": " + err.what());
      }
    }
    Stmt b = db.prepare("SELECT hash, kernel_name, size_bytes, checksum, bytes, verified FROM cubins");
    while (b.step()) {
      ++rep.cubins_checked;
      const std::string bytes = b.blob(4);
      if (static_cast<int64_t>(bytes.size()) != b.i64(2)) {
        problem(fmt::format("cubin {} ({}): {} bytes, {} recorded", b.text(0), b.text(1),
                            bytes.size(), b.i64(2)));
      } else if (content_hash(bytes) != b.text(3)) {
        problem(fmt::format("cubin {} ({}): checksum mismatch", b.text(0), b.text(1)));
      }
      if (b.i64(5) == 0) ++rep.cubins_unverified;
    }
  } catch (const CacheError& err) {  // a malformed file can stop the walk; report, don't throw
    problem(err.what());
  }
  return rep;
}

}  // namespace tfla::cache
