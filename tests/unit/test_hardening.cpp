// Issue 16 (cache and API hardening): one test per defect, each reproducing it and checking the
// promised behaviour. No GPU: device pointers are fake (aligned, never dereferenced) and every
// check named here runs before any driver call. The CLI reproductions are in
// check_hardening_cli.sh.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tfla_catch.hpp"
#include <climits>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>

#include "ops/problem_check.hpp"
#include "test_cache_support.hpp"
#include "tfla/tfla.h"
#include "tfla/tfla.hpp"
#include "tfla_cache/cache.hpp"
#include "tfla_cache/hash.hpp"
#include "tfla_util/config_text.hpp"
#include "tfla_util/env_flag.hpp"
#include "tuner/worker.hpp"

using namespace tfla::cache;
using namespace tfla::cache::test;

namespace {

// Sets (or unsets, for nullptr) an environment variable for one scope.
class EnvVar {
 public:
  EnvVar(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~EnvVar() {
    if (had_) ::setenv(name_.c_str(), old_.c_str(), 1);
    else ::unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

// A real-looking cubin hash: the key of kernel `name`.
std::string key_of(const std::string& name) { return content_hash("kernel source " + name); }

// A file exported from a cache with one entry (2 candidates) and two cubins.
std::string make_bundle(const ScratchDir& dir, const std::string& name) {
  Cache c = Cache::open(dir.file(name + ".src.sqlite"));
  c.put_entry(sample_entry(sample_env(), sample_problem(8, 1024), 128, 100));
  c.put_cubin(key_of("a"), "sm_90a", "kernel_a", "REAL CUBIN A", sample_env().id());
  c.put_cubin(key_of("b"), "sm_90a", "kernel_b", "REAL CUBIN B");
  const std::string out = dir.file(name + ".tfla");
  c.export_to(out);
  return out;
}

// A pid that no process has: a child that has exited and been reaped.
pid_t dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return pid;
}

std::string fmt_tmp(const std::string& file, pid_t pid) { return file + ".tmp-" + std::to_string(pid); }

std::string fmt_hex(unsigned char c) {
  static const char* digits = "0123456789abcdef";
  return {digits[c >> 4], digits[c & 15]};
}

void* fake_ptr(int slot) { return reinterpret_cast<void*>((uintptr_t(1) << 20) * uintptr_t(slot + 1)); }

tfla::MlstmProblem small_problem() {
  tfla::MlstmProblem p;
  p.B = 2;
  p.NH = 4;
  p.S = 256;
  p.Dqk = 64;
  p.Dv = 128;
  return p;
}

tfla_problem c_problem() {
  tfla_problem p{};
  p.B = 2;
  p.NH = 4;
  p.S = 256;
  p.Dqk = 64;
  p.Dv = 128;
  p.dtype = TFLA_BF16;
  p.gate_dtype = TFLA_FP32;
  p.variant = TFLA_VARIANT_EXP;
  p.normalize = 1;
  p.eps = 1e-6f;
  return p;
}

tfla::ErrorCode api_error(const std::function<void()>& call, std::string* message = nullptr) {
  try {
    call();
  } catch (const tfla::Error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  FAIL("accepted");
  return tfla::ErrorCode::Internal;
}

}  // namespace

// ---- 1: a foreign SQLite file at the cache path (test_cache_faults.cpp covers every kind) ----

TEST_CASE("issue 16.1: another program's SQLite file is not emptied by any open", "[hardening]") {
  ScratchDir dir;
  const std::string path = dir.file("x.db");
  raw_sql(path, "create table u(i); insert into u values(1);");
  for (int round = 0; round < 3; ++round)
    CHECK_THROWS_WITH(Cache::open(path), Catch::Contains(path) && Catch::Contains("not a tfla cache"));
  CHECK(raw_int(path, "select count(*) from u") == 1);
  CHECK(raw_int(path, "select i from u") == 1);
  CHECK(files_starting(dir.path(), "x.db.corrupt").empty());
}

// ---- 2: a bundle of schema v1 ------------------------------------------------------------------

TEST_CASE("issue 16.2: a schema v1 bundle imports its entries (migrated in memory, file unchanged)",
          "[hardening]") {
  ScratchDir dir;
  const std::string v1 = dir.file("v1.tfla");
  {
    Cache c = Cache::open(v1);
    c.put_entry(sample_entry(sample_env(), sample_problem(8, 1024), 128, 100));
  }
  raw_sql(v1, "DROP TABLE recorded; ALTER TABLE cubins DROP COLUMN verified; PRAGMA user_version = 1;");
  const std::string before = read_file(v1);
  {
    Cache ro = Cache::open(v1, OpenMode::ReadOnly);  // read as a cache: its entry is there
    CHECK(ro.stats().entries == 1);
  }
  Cache dst = Cache::open(dir.file("dst.sqlite"));
  const MergeReport r = dst.import_from(v1);
  CHECK(r.entries_added == 1);
  CHECK(r.rows_rejected == 0);
  CHECK(dst.get_exact(sample_env(), sample_problem(8, 1024)).has_value());
  CHECK(read_file(v1) == before);
  CHECK(raw_int(v1, "PRAGMA user_version") == 1);
  // A newer schema is refused with an error, not imported as nothing.
  raw_sql(v1, "PRAGMA user_version = 99");
  try {
    dst.import_from(v1);
    FAIL("imported");
  } catch (const CacheError& e) {
    CHECK(e.code() == ErrorCode::SchemaTooNew);
  }
}

// ---- 3: export over an existing file -------------------------------------------------------------

TEST_CASE("issue 16.3: export never overwrites a file unless asked, and cleans killed exports' files",
          "[hardening]") {
  ScratchDir dir;
  Cache c = Cache::open(dir.file("c.sqlite"));
  c.put_entry(sample_entry(sample_env(), sample_problem(8, 1024), 128, 100));
  const std::string notes = dir.file("notes.txt");
  write_file(notes, "my notes\n");
  CHECK_THROWS_WITH(c.export_to(notes), Catch::Contains("exists") && Catch::Contains(notes));
  CHECK(read_file(notes) == "my notes\n");
  const std::string bundle = dir.file("b.tfla");
  c.export_to(bundle);
  const std::string first = read_file(bundle);
  c.put_entry(sample_entry(sample_env(), sample_problem(8, 2048), 128, 100));
  CHECK_THROWS_AS(c.export_to(bundle), CacheError);  // an earlier bundle is not merged over
  CHECK(read_file(bundle) == first);
  ExportOptions force;
  force.overwrite = true;
  CHECK(c.export_to(bundle, force).entries_added == 2);
  CHECK(Cache::open(bundle, OpenMode::ReadOnly).stats().entries == 2);
  // Files a killed export left ("<file>.tmp-<pid>", its journal) go; a live process's stay.
  const std::string stale = fmt_tmp(bundle, dead_pid()), live = fmt_tmp(bundle, ::getppid());
  write_file(stale, "half");
  write_file(stale + "-journal", "half");
  write_file(live, "busy");
  c.export_to(dir.file("other.tfla"));
  c.export_to(bundle, force);
  CHECK_FALSE(fs::exists(stale));
  CHECK_FALSE(fs::exists(stale + "-journal"));
  CHECK(fs::exists(live));
  CHECK(files_starting(dir.path(), "other.tfla.tmp").empty());
}

TEST_CASE("files a killed cache creation left beside the path go; a live process's stay", "[hardening]") {
  ScratchDir dir;
  const std::string path = dir.file("c.sqlite");
  const std::string stale = path + ".new-" + std::to_string(dead_pid()) + "-3";
  const std::string live = path + ".new-" + std::to_string(::getppid()) + "-0";
  write_file(stale, "half");
  write_file(stale + "-wal", "half");
  write_file(live, "busy");
  Cache c = Cache::open(path);  // no cache at the path: a fresh one is created beside it
  c.put_entry(sample_entry(sample_env(), sample_problem(8, 512), 128, 100));
  CHECK(c.stats().entries == 1);
  CHECK_FALSE(fs::exists(stale));
  CHECK_FALSE(fs::exists(stale + "-wal"));
  CHECK(fs::exists(live));
  CHECK(files_starting(dir.path(), "c.sqlite.new-" + std::to_string(::getpid())).empty());
}

// ---- 4: verify after a damaged file was set aside ----------------------------------------------

TEST_CASE("issue 16.4: verify reports a truncated cache that open() moved aside", "[hardening]") {
  ScratchDir dir;
  const std::string path = dir.file("c.sqlite");
  {
    Cache c = Cache::open(path);
    for (int s = 1; s <= 20; ++s) c.put_entry(sample_entry(sample_env(), sample_problem(8, 512 * s), 128, 100));
    c.put_cubin(key_of("x"), "sm_90a", "k", std::string(200000, 'c'));
  }
  fs::resize_file(path, fs::file_size(path) / 2);
  Cache c = Cache::open(path);
  REQUIRE(c.recovered());
  const VerifyReport v = c.verify();
  CHECK_FALSE(v.ok);
  REQUIRE_FALSE(v.problems.empty());
  CHECK_THAT(v.problems[0], Catch::Contains("moved it aside") && Catch::Contains(".corrupt-"));
  CHECK(files_starting(dir.path(), "c.sqlite.corrupt-").size() == 1);
}

// ---- 5: forged cubins --------------------------------------------------------------------------

TEST_CASE("issue 16.5: a forged bundle's cubin under a real key is never served", "[hardening]") {
  ScratchDir dir;
  const std::string bundle = make_bundle(dir, "forged");
  // The attacker's bytes, with a checksum that matches them (it proves nothing).
  const std::string evil = "ATTACKER CODE";
  std::string hex;
  for (unsigned char ch : evil) hex += fmt_hex(ch);
  raw_sql(bundle, "UPDATE cubins SET bytes = X'" + hex + "', size_bytes = " + std::to_string(evil.size()) +
                      ", checksum = '" + content_hash(evil) + "', verified = 1");
  Cache dst = Cache::open(dir.file("dst.sqlite"));
  dst.put_cubin(key_of("b"), "sm_90a", "kernel_b", "REAL CUBIN B");  // compiled here earlier
  const MergeReport r = dst.import_from(bundle);
  CHECK(r.cubins_added == 1);  // kernel_a; kernel_b is not replaced
  CHECK(r.cubins_unverified == 1);
  CHECK_FALSE(dst.get_cubin(key_of("a")).has_value());         // unverified: a miss
  CHECK(dst.get_cubin(key_of("b")) == std::string("REAL CUBIN B"));  // the local one stays
  CHECK(dst.verify().ok);
  CHECK(dst.verify().cubins_unverified == 1);
  // The runtime's recompile of key a stores the local bytes: those are served, verified.
  dst.put_cubin(key_of("a"), "sm_90a", "kernel_a", "REAL CUBIN A", sample_env().id());
  CHECK(dst.get_cubin(key_of("a")) == std::string("REAL CUBIN A"));
  CHECK(dst.verify().cubins_unverified == 0);
  // The documented trust flag serves imported bytes as they are.
  Cache trusting = Cache::open(dir.file("trusting.sqlite"));
  ImportOptions trust;
  trust.trust_cubins = true;
  trusting.import_from(bundle, trust);
  CHECK(trusting.get_cubin(key_of("a")) == evil);
}

// ---- 6: no shell, no working-directory cache ---------------------------------------------------

TEST_CASE("issue 16.6: the default cache path never falls back to the working directory", "[hardening]") {
  EnvVar no_cache("TFLA_CACHE", nullptr), no_xdg("XDG_CACHE_HOME", nullptr), no_home("HOME", nullptr);
  const std::string p = Cache::default_path();
  CHECK(p != "tfla.sqlite");
  CHECK((p.empty() || p[0] == '/'));  // the password database's home, or none
  {
    EnvVar rel("XDG_CACHE_HOME", "relative/dir"), rel_home("HOME", "also/relative");
    const std::string q = Cache::default_path();
    CHECK((q.empty() || q[0] == '/'));
  }
  CHECK_THROWS_WITH(Cache::open(""), Catch::Contains("no cache path"));
}

TEST_CASE("issue 16.6: the tune worker is started by path and argv, never through a shell",
          "[hardening]") {
  ScratchDir dir;
  const std::string marker = dir.file("pwned");
  // As a shell command this would create the marker; as argv it is one literal argument.
  tfla::tuner::WorkerProcess w({"/bin/echo", "hello; touch " + marker}, {});
  const auto line = w.receive(10);
  REQUIRE(line);
  CHECK(*line == "hello; touch " + marker);
  CHECK_FALSE(fs::exists(marker));
  tfla::tuner::WorkerProcess missing({dir.file("no such worker")}, {});
  CHECK_FALSE(missing.receive(10).has_value());
  CHECK_THAT(missing.why(), Catch::Contains("127"));
}

// ---- 7: checked arithmetic, ranges, enums, options at creation ---------------------------------

TEST_CASE("issue 16.7: B * NH is checked arithmetic", "[hardening]") {
  for (auto [B, NH] : {std::pair<int64_t, int64_t>{int64_t{1} << 32, int64_t{1} << 32},
                       {(int64_t{1} << 32) + 1, (int64_t{1} << 32) - 1},
                       {INT64_MAX, 2},
                       {65536, 1}}) {
    tfla_problem p = c_problem();
    p.B = B;
    p.NH = NH;
    size_t bytes = 12345;
    INFO("B=" << B << " NH=" << NH);
    CHECK(tfla_mlstm_forward_workspace_size(&p, "chunk=64", &bytes) == TFLA_ERROR_INVALID_ARGUMENT);
    CHECK_THAT(tfla_last_error(), Catch::Contains("B * NH"));
    CHECK(tfla_mlstm_backward_workspace_size(&p, "chunk=64", &bytes) == TFLA_ERROR_INVALID_ARGUMENT);
    CHECK(tfla_mlstm_saved_size(&p, "chunk=64", &bytes) == TFLA_ERROR_INVALID_ARGUMENT);
    CHECK(bytes == 12345);
  }
}

TEST_CASE("issue 16.7: config values are 64-bit and range-checked, never truncated", "[hardening]") {
  tfla_problem p = c_problem();
  size_t bytes = 0;
  for (const char* cfg : {"chunk=4294967360", "chunk=9223372036854775807", "chunk=-64",
                          "chunk=99999999999999999999", "chunk=2147483648"}) {
    INFO(cfg);
    CHECK(tfla_mlstm_forward_workspace_size(&p, cfg, &bytes) == TFLA_ERROR_INVALID_ARGUMENT);
    CHECK_THAT(tfla_last_error(), Catch::Contains("chunk"));
  }
  const tfla::MlstmProblem mp = small_problem();
  for (int64_t v : {int64_t{4294967360}, INT64_MAX, int64_t{-1}}) {
    std::string msg;
    CHECK(api_error([&] { tfla::mlstm_forward_config(mp, {{"chunk", v}}); }, &msg) ==
          tfla::ErrorCode::InvalidArgument);
    CHECK_THAT(msg, Catch::Contains("out of range"));
    CHECK(api_error([&] { tfla::mlstm_backward_config(mp, {{"chunk", v}}); }) == tfla::ErrorCode::InvalidArgument);
    CHECK(api_error([&] { tfla::mlstm_step_config(mp, {{"siz_b_v", v}}); }) == tfla::ErrorCode::InvalidArgument);
  }
}

TEST_CASE("issue 16.7: the C++ API refuses enum values outside their enums", "[hardening]") {
  tfla::MlstmProblem p = small_problem();
  std::string msg;
  p.dtype = static_cast<tfla::DType>(42);
  CHECK(api_error([&] { tfla::mlstm_forward_workspace_size(p, {{"chunk", 64}}); }, &msg) ==
        tfla::ErrorCode::InvalidArgument);
  CHECK_THAT(msg, Catch::Contains("dtype 42"));
  p = small_problem();
  p.gate_dtype = static_cast<tfla::DType>(-3);
  CHECK(api_error([&] { tfla::mlstm_forward_workspace_size(p, {{"chunk", 64}}); }) == tfla::ErrorCode::InvalidArgument);
  p = small_problem();
  p.variant = static_cast<tfla::Variant>(9);
  CHECK(api_error([&] { tfla::mlstm_step_config(p); }, &msg) == tfla::ErrorCode::InvalidArgument);
  CHECK_THAT(msg, Catch::Contains("variant 9"));
  tfla::BackendOptions o;
  o.mode = static_cast<tfla::Mode>(7);
  CHECK(api_error([&] { tfla::Backend b(o); }, &msg) == tfla::ErrorCode::InvalidArgument);
  CHECK_THAT(msg, Catch::Contains("mode 7"));
}

TEST_CASE("issue 16.7: backend options are validated at creation", "[hardening]") {
  auto refused = [](const tfla::BackendOptions& o, const char* what) {
    std::string msg;
    CHECK(api_error([&] { tfla::Backend b(o); }, &msg) == tfla::ErrorCode::InvalidArgument);
    CHECK_THAT(msg, Catch::Contains(what));
  };
  tfla::BackendOptions o;
  o.config = {{"nosuch", 1}};
  refused(o, "nosuch");
  o = {};
  o.eps = std::numeric_limits<float>::quiet_NaN();
  refused(o, "eps");
  o = {};
  o.scale = -1.f;
  refused(o, "scale");
  o = {};
  o.step_config = {{"threads", int64_t{1} << 40}};
  refused(o, "threads");
  o = {};
  o.config = {{"siz_b_q", 64}};  // a forward key the backward does not take: train mode refuses
  refused(o, "siz_b_q");
  o.mode = tfla::Mode::Inference;  // inference runs only the forward
  CHECK_NOTHROW(tfla::Backend(o));
  // The C ABI: the same at tfla_backend_create.
  tfla_backend_options co{};
  co.mode = TFLA_MODE_TRAIN;
  co.variant = TFLA_VARIANT_EXP;
  co.dtype = TFLA_BF16;
  co.gate_dtype = TFLA_FP32;
  co.eps = 1e-6f;
  co.config = "nosuch=1";
  tfla_backend* b = nullptr;
  CHECK(tfla_backend_create(&co, &b) == TFLA_ERROR_INVALID_ARGUMENT);
  CHECK(b == nullptr);
  co.config = nullptr;
  co.eps = std::numeric_limits<float>::quiet_NaN();
  CHECK(tfla_backend_create(&co, &b) == TFLA_ERROR_INVALID_ARGUMENT);
  CHECK_THAT(tfla_last_error(), Catch::Contains("eps"));
}

// ---- 8: import validates every row -------------------------------------------------------------

TEST_CASE("issue 16.8: import rejects invalid rows, names them and keeps the rest", "[hardening]") {
  ScratchDir dir;
  const std::string bundle = dir.file("bad.tfla");
  const EnvKey env = sample_env();
  {
    Cache c = Cache::open(dir.file("src.sqlite"));
    for (int s = 1; s <= 6; ++s) c.put_entry(sample_entry(env, sample_problem(8, 1024 * s), 128, 100));
    c.export_to(bundle);
  }
  // Forge rows the way an attacker (or a broken tool) would: raw SQL on the bundle.
  raw_sql(bundle,
          "UPDATE entries SET op = 'fwd''; DROP TABLE entries;--' WHERE seq_len = 1024;"
          "UPDATE entries SET dv = -512 WHERE seq_len = 2048;"
          "UPDATE entries SET batch_heads = 4611686018427387904 WHERE seq_len = 3072;"
          "UPDATE entries SET winner_median_us = -5 WHERE seq_len = 4096;"
          "UPDATE entries SET tool_version = CAST(X'fffe41' AS TEXT) WHERE seq_len = 5120;"
          "UPDATE candidates SET status = 'bogus' WHERE seq_len = 6144;");
  Cache dst = Cache::open(dir.file("dst.sqlite"));
  dst.put_entry(sample_entry(env, sample_problem(8, 4096), 64, 50));  // a real entry, 50 us
  const MergeReport r = dst.import_from(bundle);
  CHECK(r.entries_added == 1);  // only seq 6144's entry is clean (its candidates are not)
  CHECK(r.rows_rejected >= 5 + 1);
  std::string all;
  for (const auto& line : r.rejected) all += line + "\n";
  CHECK_THAT(all, Catch::Contains("ProblemKey.op") && Catch::Contains("head dims") &&
                      Catch::Contains("shape") && Catch::Contains("winner_median_us") &&
                      Catch::Contains("tool_version is not UTF-8") && Catch::Contains("unknown status"));
  // The negative time did not replace the real 50 us entry.
  CHECK(dst.get_exact(env, sample_problem(8, 4096))->winner_median_us == 50);
  CHECK(dst.get_exact(env, sample_problem(8, 4096))->winner.get("chunk") == 64);
  CHECK(dst.verify().ok);
  CHECK(raw_int(dst.path(), "SELECT count(*) FROM entries") == 2);
  // verify on the forged file itself names the same problems.
  const VerifyReport v = Cache::open(bundle, OpenMode::ReadOnly).verify();
  CHECK_FALSE(v.ok);
  CHECK(v.problems.size() >= 5);
  // The forged environment: a non-UTF-8 GPU name whose id no longer matches is skipped whole.
  raw_sql(bundle, "UPDATE environments SET gpu_name = CAST(X'c328' AS TEXT)");
  Cache dst2 = Cache::open(dir.file("dst2.sqlite"));
  const MergeReport r2 = dst2.import_from(bundle);
  CHECK(r2.entries_added == 0);
  CHECK(r2.environments_added == 0);
  REQUIRE_FALSE(r2.rejected.empty());
  CHECK_THAT(r2.rejected[0], Catch::Contains("gpu_name is not UTF-8"));
}

// ---- 9: argument checks before any driver work -------------------------------------------------

TEST_CASE("issue 16.9: a too-small or misaligned workspace or saved buffer is InvalidArgument, "
          "not NoDriver", "[hardening]") {
  tfla::MlstmProblem p = small_problem();
  tfla::ForwardTensors t;
  t.q = fake_ptr(0); t.k = fake_ptr(1); t.v = fake_ptr(2); t.i = fake_ptr(3); t.f = fake_ptr(4);
  t.h = fake_ptr(5);
  tfla::LaunchOptions o;
  o.config = {{"chunk", 64}, {"parallel", 0}};
  o.workspace = fake_ptr(6);
  o.workspace_bytes = 16;
  std::string msg;
  CHECK(api_error([&] { tfla::mlstm_forward(p, t, o); }, &msg) == tfla::ErrorCode::InvalidArgument);
  CHECK_THAT(msg, Catch::Contains("workspace of 16 bytes"));
  o.workspace_bytes = size_t{1} << 30;
  o.workspace = static_cast<char*>(fake_ptr(6)) + 16;
  CHECK(api_error([&] { tfla::mlstm_forward(p, t, o); }, &msg) == tfla::ErrorCode::InvalidArgument);
  CHECK_THAT(msg, Catch::Contains("256-byte aligned"));
  o.workspace = nullptr;
  t.saved = fake_ptr(7);
  t.saved_bytes = 16;
  CHECK(api_error([&] { tfla::mlstm_forward(p, t, o); }, &msg) == tfla::ErrorCode::InvalidArgument);
  CHECK_THAT(msg, Catch::Contains("saved buffer has 16 bytes"));

  tfla::BackwardTensors bt;
  bt.q = fake_ptr(0); bt.k = fake_ptr(1); bt.v = fake_ptr(2); bt.i = fake_ptr(3); bt.f = fake_ptr(4);
  bt.dh = fake_ptr(5); bt.dq = fake_ptr(6); bt.dk = fake_ptr(7); bt.dv = fake_ptr(8);
  bt.di = fake_ptr(9); bt.df = fake_ptr(10); bt.norm = static_cast<float*>(fake_ptr(11));
  tfla::LaunchOptions bo;
  bo.config = {{"chunk", 64}, {"parallel", 0}};
  bo.workspace = fake_ptr(12);
  bo.workspace_bytes = 16;
  CHECK(api_error([&] { tfla::mlstm_backward(p, bt, bo); }, &msg) == tfla::ErrorCode::InvalidArgument);
  CHECK_THAT(msg, Catch::Contains("workspace of 16 bytes"));
  bo.workspace = nullptr;
  bt.saved = fake_ptr(13);
  bt.saved_bytes = 16;
  CHECK(api_error([&] { tfla::mlstm_backward(p, bt, bo); }, &msg) == tfla::ErrorCode::InvalidArgument);
  CHECK_THAT(msg, Catch::Contains("saved buffer has 16 bytes"));

  // The C ABI says the same.
  tfla_problem cp = c_problem();
  tfla_forward_tensors ct{};
  ct.q = fake_ptr(0); ct.k = fake_ptr(1); ct.v = fake_ptr(2); ct.i = fake_ptr(3); ct.f = fake_ptr(4);
  ct.h = fake_ptr(5);
  CHECK(tfla_mlstm_forward(&cp, &ct, nullptr, fake_ptr(6), 16, "chunk=64,parallel=0") ==
        TFLA_ERROR_INVALID_ARGUMENT);
  CHECK_THAT(tfla_last_error(), Catch::Contains("workspace"));
}

// ---- 10: one parser, one set of env flag words ---------------------------------------------------

TEST_CASE("issue 16.10: config text is parsed one way everywhere", "[hardening]") {
  const char* text = " chunk = 64 ,\tsiz_b_q=64 ";
  const tfla::util::ConfigValues want{{"chunk", 64}, {"siz_b_q", 64}};
  CHECK(tfla::util::parse_config_text(text) == want);
  CHECK(Config::parse(text).values == want);  // the cache's
  tfla_problem p = c_problem();
  size_t a = 0, b = 0;
  REQUIRE(tfla_mlstm_forward_workspace_size(&p, text, &a) == TFLA_OK);  // the C ABI's
  REQUIRE(tfla_mlstm_forward_workspace_size(&p, "chunk=64,siz_b_q=64", &b) == TFLA_OK);
  CHECK(a == b);
  for (const char* bad : {"chunk=64,", ",chunk=64", "chunk=64,,siz_b_q=64", "chunk=6 4", "Chunk=64"}) {
    INFO(bad);
    CHECK_THROWS_AS(tfla::util::parse_config_text(bad), tfla::util::ConfigTextError);
    CHECK(tfla_mlstm_forward_workspace_size(&p, bad, &a) == TFLA_ERROR_INVALID_ARGUMENT);
  }
}

TEST_CASE("issue 16.10: boolean environment flags take true/false words, and refuse the rest",
          "[hardening]") {
  using tfla::util::env_flag;
  for (const char* on : {"1", "true", "TRUE", "yes", "on", " On "}) {
    EnvVar v("TFLA_TEST_FLAG", on);
    CHECK(env_flag("TFLA_TEST_FLAG", false));
  }
  for (const char* off : {"0", "false", "False", "no", "off"}) {
    EnvVar v("TFLA_TEST_FLAG", off);
    CHECK_FALSE(env_flag("TFLA_TEST_FLAG", true));
  }
  {
    EnvVar v("TFLA_TEST_FLAG", "maybe");
    CHECK_THROWS_WITH(env_flag("TFLA_TEST_FLAG", false),
                      Catch::Contains("TFLA_TEST_FLAG='maybe'") && Catch::Contains("true"));
  }
  EnvVar unset("TFLA_TEST_FLAG", nullptr);
  CHECK(env_flag("TFLA_TEST_FLAG", true));
  EnvVar dev("TFLA_DEVICE", "abc");
  CHECK_THROWS_WITH(tfla::util::env_int("TFLA_DEVICE", 0, 0, 1024), Catch::Contains("TFLA_DEVICE='abc'"));
}
