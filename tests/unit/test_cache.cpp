// tfla_cache behaviour: round-trips, lookup order, environment isolation, schema creation,
// cubins, stats, prune, verify, export and import.
#include "tfla_catch.hpp"
#include <cstdlib>
#include <thread>

#include "test_cache_support.hpp"
#include "tfla_cache/cache.hpp"
#include "tfla_cache/hash.hpp"

using namespace tfla::cache;
using namespace tfla::cache::test;

TEST_CASE("a new cache file gets the current schema, WAL and tfla's application_id", "[cache][schema]") {
  ScratchDir dir;
  SECTION("missing file in missing directories") {
    const std::string path = dir.file("a/b/tfla.sqlite");
    Cache c = Cache::open(path);
    CHECK_FALSE(c.read_only());
    CHECK_FALSE(c.recovered());
    CHECK(fs::exists(path));
  }
  SECTION("zero-length file") {
    write_file(dir.file("tfla.sqlite"), "");
    Cache c = Cache::open(dir.file("tfla.sqlite"));
    CHECK_FALSE(c.recovered());
  }
  const std::string path =
      fs::exists(dir.file("tfla.sqlite")) ? dir.file("tfla.sqlite") : dir.file("a/b/tfla.sqlite");
  CHECK(raw_int(path, "PRAGMA user_version") == Cache::kSchemaVersion);
  CHECK(raw_int(path, "PRAGMA application_id") == Cache::kApplicationId);
  CHECK(raw_int(path,
                "SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN "
                "('meta','environments','entries','candidates','cubins','recorded')") == 6);
  CHECK(read_file(path).substr(18, 2) == std::string("\x02\x02", 2));  // header: WAL mode
  // Re-opening keeps the data and does not migrate again.
  {
    Cache c = Cache::open(path);
    c.put_entry(sample_entry(sample_env(), sample_problem(), 128, 100));
  }
  Cache c = Cache::open(path);
  CHECK(c.stats().entries == 1);
  CHECK(c.stats().schema_version == Cache::kSchemaVersion);
}

TEST_CASE("default_path follows TFLA_CACHE, then XDG_CACHE_HOME, then HOME", "[cache][path]") {
  auto keep = [](const char* name) {
    const char* v = std::getenv(name);
    return std::make_pair(std::string(name), v ? std::optional<std::string>(v) : std::nullopt);
  };
  auto saved = {keep("TFLA_CACHE"), keep("XDG_CACHE_HOME"), keep("HOME")};
  ::setenv("TFLA_CACHE", "/x/custom.sqlite", 1);
  ::setenv("XDG_CACHE_HOME", "/xdg", 1);
  ::setenv("HOME", "/home/u", 1);
  CHECK(Cache::default_path() == "/x/custom.sqlite");
  ::unsetenv("TFLA_CACHE");
  CHECK(Cache::default_path() == "/xdg/tfla/tfla.sqlite");
  ::setenv("XDG_CACHE_HOME", "", 1);
  CHECK(Cache::default_path() == "/home/u/.cache/tfla/tfla.sqlite");
  for (const auto& [name, value] : saved) {
    if (value)
      ::setenv(name.c_str(), value->c_str(), 1);
    else
      ::unsetenv(name.c_str());
  }
}

TEST_CASE("entries and candidates round-trip", "[cache][entries]") {
  ScratchDir dir;
  const EnvKey env = sample_env();
  const ProblemKey p = sample_problem(8, 4096);
  TunedEntry e = sample_entry(env, p, 128, 250.5);
  {
    Cache c = Cache::open(dir.file("c.sqlite"));
    c.put_entry(e);
  }
  Cache c = Cache::open(dir.file("c.sqlite"));
  auto got = c.get_exact(env, p);
  REQUIRE(got.has_value());
  CHECK(got->env == env);
  CHECK(got->problem == p);
  CHECK(got->winner == e.winner);
  CHECK(got->winner_median_us == e.winner_median_us);
  CHECK(got->winner_spread_us == e.winner_spread_us);
  CHECK(got->default_median_us == e.default_median_us);
  CHECK(got->tuning_seconds == e.tuning_seconds);
  CHECK(got->tool_version == e.tool_version);
  CHECK(got->timestamp_unix == e.timestamp_unix);
  REQUIRE(got->candidates.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    CHECK(got->candidates[i].config == e.candidates[i].config);
    CHECK(got->candidates[i].status == e.candidates[i].status);
    CHECK(got->candidates[i].time_median_us == e.candidates[i].time_median_us);
    CHECK(got->candidates[i].time_spread_us == e.candidates[i].time_spread_us);
    CHECK(got->candidates[i].max_rel_error == e.candidates[i].max_rel_error);
    CHECK(got->candidates[i].message == e.candidates[i].message);
  }
  // Another shape, normalize flag or dtype is not this entry.
  CHECK_FALSE(c.get_exact(env, sample_problem(8, 4095)).has_value());
  ProblemKey other = p;
  other.normalize = false;
  CHECK_FALSE(c.get_exact(env, other).has_value());
  // put_entry replaces the winner of the same problem.
  e.winner = Config::parse("chunk=64,siz_b_q=32,warps=8");
  e.winner_median_us = 200;
  e.candidates.clear();
  c.put_entry(e);
  got = c.get_exact(env, p);
  REQUIRE(got.has_value());
  CHECK(got->winner.to_string() == "chunk=64,siz_b_q=32,warps=8");
  CHECK(got->winner_median_us == 200);
  CHECK(got->candidates.size() == 3);  // earlier candidates stay
  CHECK(c.stats().entries == 1);
}

TEST_CASE("record_candidate keeps results as they come, for --resume", "[cache][entries]") {
  ScratchDir dir;
  const EnvKey env = sample_env();
  const ProblemKey p = sample_problem();
  {
    Cache c = Cache::open(dir.file("c.sqlite"));
    c.record_candidate(env, p, sample_candidate(64, 300));
    c.record_candidate(env, p, sample_candidate(128, 0, CandidateStatus::CompileFailed));
    c.record_candidate(env, p, sample_candidate(256, 0, CandidateStatus::Pending));
    c.record_candidate(env, p, sample_candidate(256, 280));  // the pending one, now measured
  }
  Cache c = Cache::open(dir.file("c.sqlite"));
  auto cands = c.candidates(env, p);
  REQUIRE(cands.size() == 3);
  CHECK(cands[0].config.get("chunk") == 64);
  CHECK(cands[1].status == CandidateStatus::CompileFailed);
  CHECK(cands[1].message == "failed: \"quoted\" text");
  CHECK(cands[2].config.get("chunk") == 256);
  CHECK(cands[2].status == CandidateStatus::Ok);
  CHECK(cands[2].time_median_us == 280);
  CHECK_FALSE(c.get_exact(env, p).has_value());  // no winner yet
  CHECK(c.candidates(sample_env("other gpu"), p).empty());
  CHECK(c.candidates(env, sample_problem(8, 4096)).empty());
}

TEST_CASE("lookup goes exact, then bucket, then nearest valid neighbour, then none",
          "[cache][lookup]") {
  ScratchDir dir;
  Cache c = Cache::open(dir.file("c.sqlite"));
  const EnvKey env = sample_env();
  // Tuned shapes: (8, 1000) and (8, 600) in bucket (8, 1024); (8, 512) in bucket (8, 512);
  // (64, 65536) far away.
  c.put_entry(sample_entry(env, sample_problem(8, 1000), 128, 100));
  c.put_entry(sample_entry(env, sample_problem(8, 600), 64, 90));
  c.put_entry(sample_entry(env, sample_problem(8, 512), 32, 80));
  c.put_entry(sample_entry(env, sample_problem(64, 65536), 256, 5000));

  auto r = c.lookup(env, sample_problem(8, 1000));
  CHECK(r.kind == LookupKind::Exact);
  REQUIRE(r.entry);
  CHECK(r.entry->winner.get("chunk") == 128);
  CHECK(r.entry->env == env);

  // S = 700: same bucket as 600 and 1000; 600 is nearer. (512 is nearer still, but in another
  // bucket, so it must not win over a bucket match.)
  r = c.lookup(env, sample_problem(8, 700));
  CHECK(r.kind == LookupKind::Bucket);
  REQUIRE(r.entry);
  CHECK(r.entry->problem.seq_len == 600);
  CHECK_THAT(r.why, Catch::Contains("same bucket"));

  // A predicate that rejects chunk=64 moves the bucket choice to S = 1000.
  auto no64 = [](const Config& cfg) { return cfg.get("chunk") != 64; };
  r = c.lookup(env, sample_problem(8, 700), no64);
  CHECK(r.kind == LookupKind::Bucket);
  REQUIRE(r.entry);
  CHECK(r.entry->problem.seq_len == 1000);
  CHECK_THAT(r.why, Catch::Contains("rejected"));

  // An exact entry the predicate rejects is not used.
  r = c.lookup(env, sample_problem(8, 1000),
               [](const Config& cfg) { return cfg.get("chunk") != 128; });
  CHECK(r.kind == LookupKind::Bucket);
  CHECK(r.entry->problem.seq_len == 600);

  // S = 300: bucket (8, 512) holds (8, 512).
  r = c.lookup(env, sample_problem(8, 300));
  CHECK(r.kind == LookupKind::Bucket);
  CHECK(r.entry->problem.seq_len == 512);
  // S = 200: bucket (8, 256) has no entry; nearest neighbour is (8, 512).
  r = c.lookup(env, sample_problem(8, 200));
  CHECK(r.kind == LookupKind::Neighbour);
  REQUIRE(r.entry);
  CHECK(r.entry->problem.seq_len == 512);
  // ... and with chunk<=64 required, the nearest passing one: (8, 600) with chunk 64.
  r = c.lookup(env, sample_problem(8, 200),
               [](const Config& cfg) { return cfg.get("chunk") == 64; });
  CHECK(r.kind == LookupKind::Neighbour);
  CHECK(r.entry->problem.seq_len == 600);
  // Big shape: nearest is (64, 65536).
  r = c.lookup(env, sample_problem(32, 50000));
  CHECK(r.kind == LookupKind::Neighbour);
  CHECK(r.entry->problem.batch_heads == 64);

  // Nothing valid: None, with the reason.
  r = c.lookup(env, sample_problem(8, 200), [](const Config&) { return false; });
  CHECK(r.kind == LookupKind::None);
  CHECK_FALSE(r.entry);
  CHECK_THAT(r.why, Catch::Contains("none valid"));

  // Another class (dtype) has nothing.
  ProblemKey fp32 = sample_problem(8, 1000);
  fp32.dtype = "fp32";
  r = c.lookup(env, fp32);
  CHECK(r.kind == LookupKind::None);
  CHECK(std::string(to_string(LookupKind::Neighbour)) == "neighbour");
}

TEST_CASE("an environment mismatch is a miss, never another GPU's config", "[cache][lookup]") {
  ScratchDir dir;
  Cache c = Cache::open(dir.file("c.sqlite"));
  const EnvKey h100 = sample_env();
  c.put_entry(sample_entry(h100, sample_problem(8, 1024), 128, 100));
  EnvKey newer_driver = h100;
  newer_driver.driver_version = 12050;
  EnvKey other_templates = h100;
  other_templates.templates_hash = "changed";
  for (const EnvKey& env : {newer_driver, other_templates, sample_env("NVIDIA H200")}) {
    CHECK_FALSE(c.get_exact(env, sample_problem(8, 1024)).has_value());
    auto r = c.lookup(env, sample_problem(8, 1024));
    CHECK(r.kind == LookupKind::None);
    CHECK_FALSE(r.entry);
    CHECK_THAT(r.why, Catch::Contains("other environments"));
  }
  CHECK(c.lookup(h100, sample_problem(8, 1024)).kind == LookupKind::Exact);
}

TEST_CASE("cubins round-trip by hash and a damaged one is a miss", "[cache][cubins]") {
  ScratchDir dir;
  const std::string path = dir.file("c.sqlite");
  std::string cubin(300000, '\0');
  for (size_t i = 0; i < cubin.size(); ++i) cubin[i] = static_cast<char>((i * 131) ^ (i >> 7));
  const std::string key = content_hash_parts({"source", "-arch=sm_90a", "sm_90a", "12.4"});
  {
    Cache c = Cache::open(path);
    c.put_cubin(key, "sm_90a", "tfla_fwd_kernel", cubin, sample_env().id());
    c.put_cubin(content_hash("other"), "sm_90a", "tfla_bwd_kernel", "small");
    CHECK_THROWS_AS(c.put_cubin("", "sm_90a", "k", "x"), CacheError);
  }
  Cache c = Cache::open(path);
  auto got = c.get_cubin(key);
  REQUIRE(got.has_value());
  CHECK(*got == cubin);
  CHECK(c.get_cubin(content_hash("other")) == std::optional<std::string>("small"));
  CHECK_FALSE(c.get_cubin(content_hash("absent")).has_value());
  auto infos = c.list_cubins();
  REQUIRE(infos.size() == 2);
  CHECK(infos[1].kernel_name == "tfla_fwd_kernel");
  CHECK(infos[1].size_bytes == 300000);
  CHECK(infos[1].env_id == sample_env().id());
  CHECK(c.stats().cubin_bytes == 300005);
  CHECK(c.verify().ok);

  // Flip bytes behind the cache's back: get_cubin refuses it, verify names it.
  raw_sql(path, "UPDATE cubins SET bytes = zeroblob(300000) WHERE hash = '" + key + "'");
  CHECK_FALSE(c.get_cubin(key).has_value());
  VerifyReport v = c.verify();
  CHECK_FALSE(v.ok);
  CHECK(v.cubins_checked == 2);
  REQUIRE(v.problems.size() == 1);
  CHECK_THAT(v.problems[0], Catch::Contains("checksum") && Catch::Contains("tfla_fwd_kernel"));
}

TEST_CASE("verify finds rows that break the schema's rules", "[cache][verify]") {
  ScratchDir dir;
  const std::string path = dir.file("c.sqlite");
  Cache c = Cache::open(path);
  c.put_entry(sample_entry(sample_env(), sample_problem(8, 1024), 128, 100));
  VerifyReport ok = c.verify();
  CHECK(ok.ok);
  CHECK(ok.entries_checked == 1);
  raw_sql(path,
          "UPDATE entries SET bucket_s = 999, winner = 'garbage'; UPDATE candidates SET status = "
          "'weird'");
  VerifyReport bad = c.verify();
  CHECK_FALSE(bad.ok);
  CHECK(bad.problems.size() == 5);  // bucket, winner, and 3 candidate statuses
}

TEST_CASE("list, stats and prune_stale", "[cache][admin]") {
  ScratchDir dir;
  Cache c = Cache::open(dir.file("c.sqlite"));
  const EnvKey cur = sample_env(), old = sample_env("NVIDIA A100");
  c.put_entry(sample_entry(cur, sample_problem(8, 1024), 128, 100));
  ProblemKey bwd = sample_problem(8, 1024);
  bwd.op = "bwd";
  c.put_entry(sample_entry(cur, bwd, 64, 300));
  c.put_entry(sample_entry(old, sample_problem(8, 1024), 64, 200));
  c.record_candidate(old, sample_problem(16, 1024), sample_candidate(64, 10));
  c.put_cubin(content_hash("a"), "sm_80", "k", "aaaa", old.id());
  c.put_cubin(content_hash("b"), "sm_90a", "k", "bbbb", cur.id());
  c.put_cubin(content_hash("c"), "sm_90a", "k", "cccc");

  CHECK(c.list().size() == 3);
  ListFilter cur_only;
  cur_only.env_id = cur.id();
  CHECK(c.list(cur_only).size() == 2);
  ListFilter bwd_only;
  bwd_only.op = "bwd";
  auto l = c.list(bwd_only);
  REQUIRE(l.size() == 1);
  CHECK(l[0].env == cur);
  CHECK(l[0].winner.get("chunk") == 64);
  CHECK(c.environments().size() == 2);

  Stats s = c.stats();
  CHECK(s.environments == 2);
  CHECK(s.entries == 3);
  CHECK(s.candidates == 10);
  CHECK(s.cubins == 3);
  CHECK(s.cubin_bytes == 12);
  CHECK(s.file_bytes > 0);
  REQUIRE(s.per_env.size() == 2);
  int64_t old_entries = 0;
  for (const auto& pe : s.per_env) {
    if (pe.env == old) old_entries = pe.entries;
  }
  CHECK(old_entries == 1);

  PruneReport p = c.prune_stale(cur);
  CHECK(p.environments == 1);
  CHECK(p.entries == 1);
  CHECK(p.candidates == 4);
  CHECK(p.cubins == 1);  // the env-less cubin stays
  s = c.stats();
  CHECK(s.environments == 1);
  CHECK(s.entries == 2);
  CHECK(s.cubins == 2);
  CHECK(c.get_exact(cur, sample_problem(8, 1024)).has_value());
  CHECK(c.verify().ok);
}

TEST_CASE("export and import merge, keeping the faster winner", "[cache][export]") {
  ScratchDir dir;
  const EnvKey h100 = sample_env(), h200 = sample_env("NVIDIA H200");
  const ProblemKey shared = sample_problem(8, 1024), only_a = sample_problem(8, 2048),
                   only_b = sample_problem(8, 4096), b_faster = sample_problem(16, 1024);
  Cache a = Cache::open(dir.file("a.sqlite"));
  a.put_entry(sample_entry(h100, shared, 128, 100));  // a faster
  a.put_entry(sample_entry(h100, only_a, 128, 100));
  a.put_entry(sample_entry(h100, b_faster, 128, 300));
  a.put_entry(sample_entry(h200, shared, 128, 50));  // filtered out of the export below
  a.put_cubin(content_hash("h100 cubin"), "sm_90a", "k", "h100", h100.id());
  a.put_cubin(content_hash("h200 cubin"), "sm_90a", "k", "h200", h200.id());
  for (int i = 0; i < 40; ++i) {  // env-less (compiled ahead of time): more than one batch
    a.put_cubin(content_hash("aot " + std::to_string(i)), "sm_90a", "k",
                std::string(1000, 'a' + i % 26));
  }

  Cache b = Cache::open(dir.file("b.sqlite"));
  b.put_entry(sample_entry(h100, shared, 64, 150));
  b.put_entry(sample_entry(h100, only_b, 64, 100));
  b.put_entry(sample_entry(h100, b_faster, 64, 200));

  ExportOptions opt;
  opt.env_ids = {h100.id()};
  const std::string exported = dir.file("fleet.tfla");
  write_file(exported, "an older export, replaced");
  CHECK_THROWS_WITH(a.export_to(exported, opt), Catch::Contains("exists"));  // never unasked
  CHECK(read_file(exported) == "an older export, replaced");
  opt.overwrite = true;
  MergeReport ex = a.export_to(exported, opt);
  CHECK(ex.environments_added == 1);
  CHECK(ex.entries_added == 3);
  CHECK(ex.cubins_added == 41);
  CHECK(files_starting(dir.path(), "fleet.tfla.tmp").empty());
  CHECK_FALSE(fs::exists(exported + "-wal"));
  {
    Cache e = Cache::open(exported, OpenMode::ReadOnly);
    CHECK(e.stats().entries == 3);
    CHECK(e.environments().size() == 1);
    CHECK(
        raw_int(exported,
                "SELECT count(*) FROM meta WHERE key IN ('kind','exported_unix','environments')") ==
        3);
  }

  MergeReport im = b.import_from(exported);
  CHECK(im.environments_added == 0);
  CHECK(im.entries_added == 1);     // only_a
  CHECK(im.entries_replaced == 1);  // shared: a's 100 us beats b's 150 us
  CHECK(im.entries_kept == 1);      // b_faster: b's 200 us beats a's 300 us
  CHECK(im.cubins_added == 41);
  CHECK(im.cubins_unverified == 41);  // imported cubins are not served until checked
  CHECK_FALSE(b.get_cubin(content_hash("aot 39")).has_value());
  CHECK(b.get_exact(h100, shared)->winner.get("chunk") == 128);
  CHECK(b.get_exact(h100, shared)->winner_median_us == 100);
  CHECK(b.get_exact(h100, b_faster)->winner.get("chunk") == 64);
  CHECK(b.get_exact(h100, only_a).has_value());
  CHECK(b.get_exact(h100, only_b).has_value());
  CHECK_FALSE(b.get_exact(h200, shared).has_value());
  CHECK_FALSE(b.get_cubin(content_hash("h100 cubin")).has_value());
  CHECK(b.verify().ok);
  CHECK(b.verify().cubins_unverified == 41);
  {  // with the trust flag they are served as they are
    Cache t = Cache::open(dir.file("trusting.sqlite"));
    ImportOptions trust;
    trust.trust_cubins = true;
    CHECK(t.import_from(exported, trust).cubins_unverified == 0);
    CHECK(t.get_cubin(content_hash("aot 39")) == std::string(1000, 'a' + 39 % 26));
    CHECK(t.get_cubin(content_hash("h100 cubin")) == std::optional<std::string>("h100"));
  }

  // Importing again changes no winner.
  MergeReport again = b.import_from(exported);
  CHECK(again.entries_added == 0);
  CHECK(again.entries_replaced == 0);
  CHECK(again.entries_kept == 3);
  CHECK(again.cubins_added == 0);

  // Importing a foreign file or itself is refused, and the foreign file is left in place.
  write_file(dir.file("foreign.txt"), "hello");
  CHECK_THROWS_AS(b.import_from(dir.file("foreign.txt")), CacheError);
  CHECK(read_file(dir.file("foreign.txt")) == "hello");
  CHECK_THROWS_AS(b.import_from(dir.file("b.sqlite")), CacheError);
}

TEST_CASE("a Cache can move and be shared by threads", "[cache][threads]") {
  ScratchDir dir;
  Cache c = Cache::open(dir.file("c.sqlite"));
  Cache moved = std::move(c);
  const EnvKey env = sample_env();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        moved.record_candidate(env, sample_problem(1 + t, 1024), sample_candidate(16 * (i + 1), i));
        moved.lookup(env, sample_problem(1 + t, 1024));
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(moved.stats().candidates == 100);
}

TEST_CASE("recorded shapes: counted, hidden once tuned, cleared and pruned", "[cache][recorded]") {
  ScratchDir dir;
  Cache c = Cache::open(dir.file("c.sqlite"));
  const EnvKey cur = sample_env(), old = sample_env("NVIDIA A100");
  c.record_shape(cur, sample_problem(8, 1024));
  c.record_shape(cur, sample_problem(8, 1024));
  c.record_shape(cur, sample_problem(64, 8192));
  c.record_shape(old, sample_problem(8, 1024));
  auto all = c.recorded();
  REQUIRE(all.size() == 3);
  CHECK(all[0].problem == sample_problem(8, 1024));  // most looked-up first
  CHECK(all[0].lookups == 2);
  CHECK(all[0].env_id == cur.id());
  CHECK(all[0].first_seen_unix > 0);
  CHECK(all[0].last_seen_unix >= all[0].first_seen_unix);
  CHECK(c.recorded(cur.id()).size() == 2);
  CHECK(c.recorded(old.id()).size() == 1);
  CHECK(c.recorded("no-such-env").empty());

  // A shape tuned since it was recorded is no longer listed (in its environment only).
  c.put_entry(sample_entry(cur, sample_problem(8, 1024), 128, 100));
  auto left = c.recorded(cur.id());
  REQUIRE(left.size() == 1);
  CHECK(left[0].problem == sample_problem(64, 8192));
  CHECK(c.recorded(old.id()).size() == 1);

  CHECK(c.prune_stale(cur).recorded == 1);
  CHECK(c.recorded().size() == 1);
  CHECK(c.clear_recorded(cur.id()) == 2);  // the tuned row went too
  CHECK(c.recorded().empty());
  CHECK_THROWS_AS(c.record_shape(cur, ProblemKey{}), CacheError);  // invalid key named
  CHECK(c.verify().ok);
}

TEST_CASE("a v1 cache migrates to the current schema and keeps its entries", "[cache][schema]") {
  ScratchDir dir;
  const std::string path = dir.file("old.sqlite");
  {
    Cache c = Cache::open(path);
    c.put_entry(sample_entry(sample_env(), sample_problem(8, 1024), 128, 100));
  }
  raw_sql(path, "DROP TABLE recorded; ALTER TABLE cubins DROP COLUMN verified; PRAGMA user_version = 1;");
  Cache c = Cache::open(path);
  CHECK_FALSE(c.recovered());
  CHECK(raw_int(path, "PRAGMA user_version") == Cache::kSchemaVersion);
  CHECK(c.get_exact(sample_env(), sample_problem(8, 1024)).has_value());
  c.record_shape(sample_env(), sample_problem(16, 2048));
  CHECK(c.recorded().size() == 1);
}

TEST_CASE("a read-only cache refuses to record", "[cache][recorded]") {
  ScratchDir dir;
  const std::string path = dir.file("c.sqlite");
  { Cache::open(path).record_shape(sample_env(), sample_problem(8, 1024)); }
  Cache ro = Cache::open(path, OpenMode::ReadOnly);
  CHECK(ro.recorded().size() == 1);
  CHECK_THROWS_AS(ro.record_shape(sample_env(), sample_problem(8, 2048)), CacheError);
}

TEST_CASE("export and import carry recorded shapes; lookups add up", "[cache][recorded]") {
  ScratchDir dir;
  Cache a = Cache::open(dir.file("a.sqlite"));
  a.record_shape(sample_env(), sample_problem(8, 1024));
  a.record_shape(sample_env(), sample_problem(8, 1024));
  a.export_to(dir.file("x.sqlite"));
  Cache b = Cache::open(dir.file("b.sqlite"));
  b.record_shape(sample_env(), sample_problem(8, 1024));
  b.import_from(dir.file("x.sqlite"));
  auto r = b.recorded();
  REQUIRE(r.size() == 1);
  CHECK(r[0].lookups == 3);
}
