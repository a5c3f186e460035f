// Tuning results: candidates as they are measured, winners, exact lookup and the
// exact -> bucket -> neighbour lookup the dispatcher uses.
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <tuple>

#include "cache_impl.hpp"

namespace tfla::cache {
using detail::Stmt;
using detail::Txn;

namespace {

constexpr const char* kEntryValues =
    "winner, winner_median_us, winner_spread_us, default_median_us, tuning_seconds, "
    "tool_version, timestamp_unix";
constexpr int kEntryFirstValue = 11;  // after the 11 problem columns

// An entries row selected as "<kProblemColumns>, <kEntryValues>"; env is left empty.
TunedEntry read_entry(const Stmt& s, const std::string& where) {
  TunedEntry e;
  e.problem = detail::read_problem(s, 0);
  const int v = kEntryFirstValue;
  e.winner = detail::parse_stored_config(s.text(v), where);
  e.winner_median_us = s.f64(v + 1);
  e.winner_spread_us = s.f64(v + 2);
  e.default_median_us = s.f64(v + 3);
  e.tuning_seconds = s.f64(v + 4);
  e.tool_version = s.text(v + 5);
  e.timestamp_unix = s.i64(v + 6);
  return e;
}

double log2_distance(const ProblemKey& a, const ProblemKey& b) {
  const double dbh = std::log2(double(a.batch_heads)) - std::log2(double(b.batch_heads));
  const double ds = std::log2(double(a.seq_len)) - std::log2(double(b.seq_len));
  return std::sqrt(dbh * dbh + ds * ds);
}

std::string shape_of(const ProblemKey& p) {
  return fmt::format("BH={},S={}", p.batch_heads, p.seq_len);
}

}  // namespace

// ------------------------------------------------------------------- shared row helpers

Config detail::parse_stored_config(const std::string& text, const std::string& where) {
  try {
    return Config::parse(text);
  } catch (const CacheError& e) {
    throw CacheError(ErrorCode::Corrupt, where + ": stored config is unreadable: " + e.what());
  }
}

int detail::bind_problem(Stmt& s, int i, const std::string& env_id, const ProblemKey& p) {
  s.bind(i, env_id).bind(i + 1, p.class_key()).bind(i + 2, p.op).bind(i + 3, p.variant);
  s.bind(i + 4, p.normalize ? 1 : 0).bind(i + 5, p.dtype).bind(i + 6, p.dqk).bind(i + 7, p.dv);
  s.bind(i + 8, p.layout).bind(i + 9, p.batch_heads).bind(i + 10, p.seq_len);
  return i + 11;
}

ProblemKey detail::read_problem(const Stmt& s, int c) {
  ProblemKey p;  // column c is env_id, c + 1 class_key
  p.op = s.text(c + 2);
  p.variant = s.text(c + 3);
  p.normalize = s.i64(c + 4) != 0;
  p.dtype = s.text(c + 5);
  // A dimension outside int's range reads as -1, which validate() refuses, never as a
  // truncated (and plausible) value.
  auto dim = [](int64_t v) { return v < INT32_MIN || v > INT32_MAX ? -1 : static_cast<int>(v); };
  p.dqk = dim(s.i64(c + 6));
  p.dv = dim(s.i64(c + 7));
  p.layout = s.text(c + 8);
  p.batch_heads = s.i64(c + 9);
  p.seq_len = s.i64(c + 10);
  return p;
}

EnvKey detail::read_env(const Stmt& s, int c) {
  EnvKey k;
  k.gpu_name = s.text(c);
  k.cc_major = static_cast<int>(s.i64(c + 1));
  k.cc_minor = static_cast<int>(s.i64(c + 2));
  k.sm_count = static_cast<int>(s.i64(c + 3));
  k.l2_bytes = s.i64(c + 4);
  k.smem_optin_bytes = s.i64(c + 5);
  k.driver_version = static_cast<int>(s.i64(c + 6));
  k.nvrtc_major = static_cast<int>(s.i64(c + 7));
  k.nvrtc_minor = static_cast<int>(s.i64(c + 8));
  k.tfla_version = s.text(c + 9);
  k.templates_hash = s.text(c + 10);
  return k;
}

int64_t Cache::Impl::upsert_env(const EnvKey& env, const std::string& env_id) {
  Stmt s = db->prepare(
      fmt::format("INSERT OR IGNORE INTO environments(env_id, {}, key_json, first_seen_unix) "
                  "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                  detail::kEnvColumns));
  s.bind(1, env_id).bind(2, env.gpu_name).bind(3, env.cc_major).bind(4, env.cc_minor);
  s.bind(5, env.sm_count).bind(6, env.l2_bytes).bind(7, env.smem_optin_bytes);
  s.bind(8, env.driver_version).bind(9, env.nvrtc_major).bind(10, env.nvrtc_minor);
  s.bind(11, env.tfla_version).bind(12, env.templates_hash).bind(13, env.to_json());
  s.bind(14, detail::now_unix());
  return s.run();
}

void Cache::Impl::upsert_candidate(const std::string& env_id, const ProblemKey& p,
                                   const CandidateResult& r, int64_t timestamp_unix) {
  Stmt s = db->prepare(fmt::format(
      "INSERT INTO candidates({}, config, status, time_median_us, time_spread_us, max_rel_error, "
      "message, timestamp_unix) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
      "ON CONFLICT(env_id, class_key, batch_heads, seq_len, config) DO UPDATE SET "
      "status = excluded.status, time_median_us = excluded.time_median_us, "
      "time_spread_us = excluded.time_spread_us, max_rel_error = excluded.max_rel_error, "
      "message = excluded.message, timestamp_unix = excluded.timestamp_unix",
      detail::kProblemColumns));
  int i = detail::bind_problem(s, 1, env_id, p);
  s.bind(i, r.config.to_string()).bind(i + 1, to_string(r.status)).bind(i + 2, r.time_median_us);
  s.bind(i + 3, r.time_spread_us).bind(i + 4, r.max_rel_error).bind(i + 5, r.message);
  s.bind(i + 6, timestamp_unix);
  s.run();
}

void Cache::Impl::upsert_entry(const std::string& env_id, const TunedEntry& e) {
  Stmt s = db->prepare(fmt::format(
      "INSERT INTO entries({}, bucket_bh, bucket_s, {}) "
      "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
      "ON CONFLICT(env_id, class_key, batch_heads, seq_len) DO UPDATE SET "
      "winner = excluded.winner, winner_median_us = excluded.winner_median_us, "
      "winner_spread_us = excluded.winner_spread_us, "
      "default_median_us = excluded.default_median_us, tuning_seconds = excluded.tuning_seconds, "
      "tool_version = excluded.tool_version, timestamp_unix = excluded.timestamp_unix",
      detail::kProblemColumns, kEntryValues));
  int i = detail::bind_problem(s, 1, env_id, e.problem);
  s.bind(i, e.problem.bucket_batch_heads()).bind(i + 1, e.problem.bucket_seq_len());
  s.bind(i + 2, e.winner.to_string()).bind(i + 3, e.winner_median_us);
  s.bind(i + 4, e.winner_spread_us).bind(i + 5, e.default_median_us);
  s.bind(i + 6, e.tuning_seconds).bind(i + 7, e.tool_version);
  s.bind(i + 8, e.timestamp_unix != 0 ? e.timestamp_unix : detail::now_unix());
  s.run();
}

// -------------------------------------------------------------------------- public API

const char* to_string(LookupKind k) noexcept {
  switch (k) {
    case LookupKind::Exact: return "exact";
    case LookupKind::Bucket: return "bucket";
    case LookupKind::Neighbour: return "neighbour";
    case LookupKind::None: return "none";
  }
  return "unknown";
}

void Cache::record_candidate(const EnvKey& env, const ProblemKey& problem,
                             const CandidateResult& r) {
  problem.validate();
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->require_writable("record a candidate");
  const std::string env_id = env.id();
  Txn txn(*impl_->db, Txn::Write);
  impl_->upsert_env(env, env_id);
  impl_->upsert_candidate(env_id, problem, r, detail::now_unix());
  txn.commit();
}

namespace {

// Candidates of (env_id, problem) in the order first recorded. Caller holds the Cache's mutex.
std::vector<CandidateResult> read_candidates(Cache::Impl& impl, const std::string& env_id,
                                             const ProblemKey& problem) {
  Stmt s = impl.db->prepare(
      "SELECT config, status, time_median_us, time_spread_us, max_rel_error, message "
      "FROM candidates WHERE env_id = ? AND class_key = ? AND batch_heads = ? AND seq_len = ? "
      "ORDER BY rowid");
  s.bind(1, env_id)
      .bind(2, problem.class_key())
      .bind(3, problem.batch_heads)
      .bind(4, problem.seq_len);
  std::vector<CandidateResult> out;
  while (s.step()) {
    CandidateResult r;
    r.config = detail::parse_stored_config(s.text(0), impl.path);
    auto status = candidate_status_from_string(s.text(1));
    if (!status) {
      throw CacheError(ErrorCode::Corrupt,
                       impl.path + ": unknown candidate status '" + s.text(1) + "'");
    }
    r.status = *status;
    r.time_median_us = s.f64(2);
    r.time_spread_us = s.f64(3);
    r.max_rel_error = s.f64(4);
    r.message = s.text(5);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

std::vector<CandidateResult> Cache::candidates(const EnvKey& env, const ProblemKey& problem) const {
  problem.validate();
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->refresh();
  return read_candidates(*impl_, env.id(), problem);
}

void Cache::put_entry(const TunedEntry& e) {
  e.problem.validate();
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->require_writable("store a tuned entry");
  const std::string env_id = e.env.id();
  const int64_t now = detail::now_unix();
  Txn txn(*impl_->db, Txn::Write);
  impl_->upsert_env(e.env, env_id);
  impl_->upsert_entry(env_id, e);
  for (const CandidateResult& r : e.candidates) impl_->upsert_candidate(env_id, e.problem, r, now);
  txn.commit();
}

std::optional<TunedEntry> Cache::get_exact(const EnvKey& env, const ProblemKey& problem) const {
  problem.validate();
  const std::string env_id = env.id();
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->refresh();
  Txn snapshot(*impl_->db, Txn::Read);  // the entry and its candidates from one commit
  Stmt s = impl_->db->prepare(fmt::format(
      "SELECT {}, {} FROM entries WHERE env_id = ? AND class_key = ? AND batch_heads = ? "
      "AND seq_len = ?",
      detail::kProblemColumns, kEntryValues));
  s.bind(1, env_id)
      .bind(2, problem.class_key())
      .bind(3, problem.batch_heads)
      .bind(4, problem.seq_len);
  if (!s.step()) return std::nullopt;
  TunedEntry out = read_entry(s, impl_->path);
  out.env = env;
  out.candidates = read_candidates(*impl_, env_id, problem);
  return out;
}

LookupResult Cache::lookup(const EnvKey& env, const ProblemKey& problem,
                           const ConfigPredicate& accept) const {
  problem.validate();
  const std::string env_id = env.id();
  std::vector<TunedEntry> rows;
  int64_t other_env_rows = 0;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->refresh();
    Txn txn(*impl_->db, Txn::Read);
    Stmt s = impl_->db->prepare(
        fmt::format("SELECT {}, {} FROM entries WHERE env_id = ? AND class_key = ?",
                    detail::kProblemColumns, kEntryValues));
    s.bind(1, env_id).bind(2, problem.class_key());
    while (s.step()) rows.push_back(read_entry(s, impl_->path));
    if (rows.empty()) {
      Stmt c =
          impl_->db->prepare("SELECT count(*) FROM entries WHERE class_key = ? AND env_id != ?");
      c.bind(1, problem.class_key()).bind(2, env_id);
      other_env_rows = c.step() ? c.i64(0) : 0;
    }
  }
  LookupResult res;
  if (rows.empty()) {
    res.why = fmt::format("no tuned entry for {} in environment {}", problem.class_key(), env_id);
    if (other_env_rows > 0)
      res.why += fmt::format(" ({} in other environments, not used)", other_env_rows);
    return res;
  }
  // Exact shape, then the same bucket, then the rest; nearest first within each tier, ties
  // broken by shape so that the choice is deterministic.
  auto tier = [&](const ProblemKey& p) {
    if (p.batch_heads == problem.batch_heads && p.seq_len == problem.seq_len)
      return LookupKind::Exact;
    if (p.bucket_batch_heads() == problem.bucket_batch_heads() &&
        p.bucket_seq_len() == problem.bucket_seq_len()) {
      return LookupKind::Bucket;
    }
    return LookupKind::Neighbour;
  };
  auto rank = [&](const TunedEntry& e) {
    return std::make_tuple(static_cast<int>(tier(e.problem)), log2_distance(e.problem, problem),
                           e.problem.seq_len, e.problem.batch_heads);
  };
  std::sort(rows.begin(), rows.end(),
            [&](const TunedEntry& a, const TunedEntry& b) { return rank(a) < rank(b); });
  std::string rejected;
  for (TunedEntry& e : rows) {
    if (accept && !accept(e.winner)) {
      rejected += fmt::format("{}{} [{}]", rejected.empty() ? "" : ", ", shape_of(e.problem),
                              e.winner.to_string());
      continue;
    }
    res.kind = tier(e.problem);
    if (res.kind == LookupKind::Exact) {
      res.why = fmt::format("exact shape {} tuned", shape_of(problem));
    } else if (res.kind == LookupKind::Bucket) {
      res.why = fmt::format("same bucket (BH<={},S<={}): tuned shape {}, log2-distance {:.2f}",
                            problem.bucket_batch_heads(), problem.bucket_seq_len(),
                            shape_of(e.problem), log2_distance(e.problem, problem));
    } else {
      res.why = fmt::format(
          "nearest valid neighbour: tuned shape {}, log2-distance {:.2f} (nothing valid "
          "in bucket BH<={},S<={})",
          shape_of(e.problem), log2_distance(e.problem, problem), problem.bucket_batch_heads(),
          problem.bucket_seq_len());
    }
    if (!rejected.empty()) res.why += "; rejected as invalid for this shape: " + rejected;
    e.env = env;
    res.entry = std::move(e);
    return res;
  }
  res.why = fmt::format("{} tuned shapes of {}, none valid for {}: {}", rows.size(),
                        problem.class_key(), shape_of(problem), rejected);
  return res;
}

std::vector<TunedEntry> Cache::list(const ListFilter& f) const {
  std::string where;
  std::vector<std::string> args;
  const std::pair<const char*, const std::string*> fields[] = {{"env_id", &f.env_id},
                                                               {"op", &f.op},
                                                               {"variant", &f.variant},
                                                               {"dtype", &f.dtype},
                                                               {"layout", &f.layout}};
  for (const auto& [column, value] : fields) {
    if (value->empty()) continue;
    where += fmt::format("{} {} = ?", where.empty() ? " WHERE" : " AND", column);
    args.push_back(*value);
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->refresh();
  Stmt s = impl_->db->prepare(
      fmt::format("SELECT {}, {}, {} FROM entries LEFT JOIN environments USING(env_id){} "
                  "ORDER BY env_id, class_key, batch_heads, seq_len",
                  detail::kProblemColumns, kEntryValues, detail::kEnvColumns, where));
  for (size_t i = 0; i < args.size(); ++i) s.bind(static_cast<int>(i + 1), args[i]);
  std::vector<TunedEntry> out;
  while (s.step()) {
    out.push_back(read_entry(s, impl_->path));
    out.back().env = detail::read_env(s, kEntryFirstValue + 7);
  }
  return out;
}

std::vector<std::pair<std::string, EnvKey>> Cache::environments() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->refresh();
  Stmt s = impl_->db->prepare(fmt::format(
      "SELECT env_id, {} FROM environments ORDER BY first_seen_unix, env_id", detail::kEnvColumns));
  std::vector<std::pair<std::string, EnvKey>> out;
  while (s.step()) out.emplace_back(s.text(0), detail::read_env(s, 1));
  return out;
}

void Cache::record_shape(const EnvKey& env, const ProblemKey& problem) {
  problem.validate();
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->require_writable("record a shape");
  const std::string env_id = env.id();
  const int64_t now = detail::now_unix();
  Txn txn(*impl_->db, Txn::Write);
  impl_->upsert_env(env, env_id);
  Stmt s = impl_->db->prepare(fmt::format(
      "INSERT INTO recorded({}, lookups, first_seen_unix, last_seen_unix) "
      "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?) "
      "ON CONFLICT(env_id, class_key, batch_heads, seq_len) DO UPDATE SET "
      "lookups = lookups + 1, last_seen_unix = excluded.last_seen_unix",
      detail::kProblemColumns));
  const int next = detail::bind_problem(s, 1, env_id, problem);
  s.bind(next, now).bind(next + 1, now).run();
  txn.commit();
}

std::vector<RecordedShape> Cache::recorded(const std::string& env_id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->refresh();
  Txn txn(*impl_->db, Txn::Read);
  Stmt s = impl_->db->prepare(fmt::format(
      "SELECT {}, lookups, first_seen_unix, last_seen_unix FROM recorded r "
      "WHERE (?1 = '' OR r.env_id = ?1) AND NOT EXISTS (SELECT 1 FROM entries e WHERE "
      "e.env_id = r.env_id AND e.class_key = r.class_key AND e.batch_heads = r.batch_heads AND "
      "e.seq_len = r.seq_len) ORDER BY lookups DESC, class_key, batch_heads, seq_len",
      detail::kProblemColumns));
  s.bind(1, env_id);
  std::vector<RecordedShape> out;
  while (s.step()) {
    RecordedShape r;
    r.env_id = s.text(0);
    r.problem = detail::read_problem(s, 0);
    r.lookups = s.i64(11);
    r.first_seen_unix = s.i64(12);
    r.last_seen_unix = s.i64(13);
    out.push_back(std::move(r));
  }
  return out;
}

int64_t Cache::clear_recorded(const std::string& env_id) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->require_writable("clear recorded shapes");
  Txn txn(*impl_->db, Txn::Write);
  const int64_t n =
      impl_->db->prepare("DELETE FROM recorded WHERE ?1 = '' OR env_id = ?1").bind(1, env_id).run();
  txn.commit();
  return n;
}

}  // namespace tfla::cache
