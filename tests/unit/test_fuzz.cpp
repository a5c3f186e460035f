// A bounded, deterministic fuzz test (fixed seed, a time budget per target) of what reads
// untrusted text or files: the config text parser, the spec-file parser, bundle import and the
// C ABI's argument checks. Each target asserts its contract on every input, e.g. a parsed config
// prints and parses back to itself; an import either succeeds and leaves a cache that verifies,
// or throws CacheError with a message, and never changes the bundle; a C ABI call the oracle
// knows to be invalid returns TFLA_ERROR_INVALID_ARGUMENT with a message, never NO_DRIVER,
// INTERNAL or a crash. No GPU: forward calls always carry an invalid argument, so nothing is
// ever launched on the fake pointers.
#include "tfla_catch.hpp"
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>

#include "ops/problem_check.hpp"
#include "test_cache_support.hpp"
#include "tfla/tfla.h"
#include "tfla/tfla.hpp"
#include "tfla_cache/cache.hpp"
#include "tfla_cache/hash.hpp"
#include "tfla_util/config_text.hpp"
#include "tuner/spec_file.hpp"

using namespace tfla::cache;
using namespace tfla::cache::test;

namespace {

constexpr uint64_t kSeed = 16;  // issue 16

// Runs `body(i)` for at most `max_iters` iterations or `budget_ms`, whichever ends first;
// returns how many ran.
template <class F> int bounded(int max_iters, int budget_ms, F&& body) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(budget_ms);
  int i = 0;
  for (; i < max_iters && std::chrono::steady_clock::now() < end; ++i) body(i);
  return i;
}

template <class T> const T& pick(std::mt19937_64& rng, const std::vector<T>& v) {
  return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)];
}

// `base` with a few random single-character edits drawn from `alphabet`.
std::string mutate(std::mt19937_64& rng, std::string base, const std::string& alphabet) {
  std::uniform_int_distribution<int> edits(1, 4), kind(0, 2);
  for (int e = edits(rng); e > 0; --e) {
    const size_t at = base.empty() ? 0 : std::uniform_int_distribution<size_t>(0, base.size())(rng);
    const char c = alphabet[std::uniform_int_distribution<size_t>(0, alphabet.size() - 1)(rng)];
    switch (kind(rng)) {
      case 0: base.insert(base.begin() + at, c); break;
      case 1: if (at < base.size()) base.erase(at, 1); break;
      default: if (at < base.size()) base[at] = c; break;
    }
  }
  return base;
}

std::string hex_of(const std::string& bytes) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) out += {d[c >> 4], d[c & 15]};
  return out;
}

}  // namespace

TEST_CASE("fuzz: config text parses, prints and parses back, or is refused by name", "[fuzz]") {
  std::mt19937_64 rng(kSeed);
  const std::vector<std::string> seeds = {"chunk=128", " chunk = 64 ,\tsiz_b_q=32 ", "a=1,b=2,c=3", "",
                                          "parallel=0", "x=2147483647", "x=-0", "n=+5"};
  const std::string alphabet = " \t,=-+0123456789abcz_Zx.\xff";
  int accepted = 0;
  const int n = bounded(20000, 1500, [&](int) {
    const std::string text = mutate(rng, pick(rng, seeds), alphabet);
    INFO("text: '" << text << "'");
    tfla::util::ConfigValues v;
    try {
      v = tfla::util::parse_config_text(text);
    } catch (const tfla::util::ConfigTextError& e) {
      REQUIRE(std::string(e.what()).size() > 10);
      // The C ABI refuses it too, with a message.
      tfla_problem p{};
      p.B = p.NH = 1;
      p.S = 64;
      p.Dqk = p.Dv = 64;
      p.gate_dtype = TFLA_FP32;
      p.eps = 1e-6f;
      size_t bytes = 0;
      REQUIRE(tfla_mlstm_forward_workspace_size(&p, text.c_str(), &bytes) == TFLA_ERROR_INVALID_ARGUMENT);
      REQUIRE(std::string(tfla_last_error()).size() > 10);
      return;
    }
    ++accepted;
    for (const auto& [name, value] : v) {
      REQUIRE(tfla::util::is_config_name(name));
      REQUIRE(value >= tfla::util::kConfigValueMin);
      REQUIRE(value <= tfla::util::kConfigValueMax);
    }
    const std::string printed = tfla::util::config_to_text(v);
    REQUIRE(tfla::util::parse_config_text(printed) == v);
    REQUIRE(Config::parse(text).values == v);  // the cache reads it the same way
    REQUIRE(Config::parse(printed).to_string() == printed);
  });
  CHECK(n > 100);
  CHECK(accepted > 10);
}

TEST_CASE("fuzz: spec lines parse to valid problems that round-trip, or fail as InvalidArgument",
          "[fuzz]") {
  std::mt19937_64 rng(kSeed + 1);
  const std::vector<std::string> seeds = {
      "op=fwbw variant=exp dtype=bf16 dqk=256 dv=512 bh=64 seq=8192",
      "op=step variant=sig dtype=fp16 dqk=64 dv=128 bh=16 seq=4 normalize=0",
      "# comment\nop=fwd dqk=128 dv=128 bh=8 seq=1024  # x\n\nop=bwd layout=bhsd",
      "op=fwd dqk=17 dv=512", "bh=4294967296 seq=2"};
  const std::string alphabet = " =#\n\tabdefgopqsvwx0123456789-_";
  int accepted = 0;
  const int n = bounded(5000, 1200, [&](int) {
    const std::string text = mutate(rng, pick(rng, seeds), alphabet);
    INFO("spec: '" << text << "'");
    std::vector<tfla::tuner::TuneProblem> problems;
    try {
      problems = tfla::tuner::parse_spec(text);
    } catch (const tfla::Error& e) {
      REQUIRE(e.code() == tfla::ErrorCode::InvalidArgument);
      REQUIRE(std::string(e.what()).size() > 5);
      return;
    }
    accepted += !problems.empty();
    for (const auto& t : problems) {
      REQUIRE_NOTHROW(tfla::ops::check_problem(t.problem()));
      const tfla::tuner::TuneProblem back = tfla::tuner::parse_spec_line(t.to_string());
      REQUIRE(back.to_string() == t.to_string());
    }
  });
  CHECK(n > 100);
  CHECK(accepted > 5);
}

TEST_CASE("fuzz: importing a damaged or forged bundle imports valid rows only, or fails cleanly",
          "[fuzz]") {
  std::mt19937_64 rng(kSeed + 2);
  ScratchDir dir;
  const std::string base = dir.file("base.tfla");
  {
    Cache c = Cache::open(dir.file("src.sqlite"));
    for (int s = 1; s <= 4; ++s) c.put_entry(sample_entry(sample_env(), sample_problem(8 * s, 1024 * s), 64 * s, 100 + s));
    c.record_shape(sample_env(), sample_problem(2, 512));
    for (int k = 0; k < 3; ++k)
      c.put_cubin(content_hash("k" + std::to_string(k)), "sm_90a", "kernel", std::string(3000, char('a' + k)));
    c.export_to(base);
  }
  const std::string pristine = read_file(base);
  const std::vector<std::string> tables = {"entries", "candidates", "cubins", "environments", "recorded"};
  const std::vector<std::string> columns = {
      "op", "variant", "dtype", "layout", "dqk", "dv", "batch_heads", "seq_len", "winner", "config",
      "status", "winner_median_us", "time_median_us", "message", "tool_version", "gpu_name", "hash",
      "arch", "checksum", "size_bytes", "bytes", "env_id", "lookups", "class_key", "cc_major"};
  const std::vector<std::string> values = {
      "-512", "0", "4611686018427387904", "9223372036854775807", "-1e300", "1e308*10", "NULL",
      "'fwd''; DROP TABLE entries;--'", "'chunk=4294967360'", "'chunk=-1'", "'ok'", "'bogus'",
      "'sm_90a'", "X'00'", "'exp'", "0.0/0.0"};
  Cache dst = Cache::open(dir.file("dst.sqlite"));
  int imported = 0, refused = 0;
  const int n = bounded(60, 4000, [&](int i) {
    const std::string bundle = dir.file("b" + std::to_string(i) + ".tfla");
    write_file(bundle, pristine);
    std::string what;
    if (i % 3 == 2) {  // bytes: flips or a cut
      std::string bytes = pristine;
      if (rng() % 2) {
        bytes.resize(std::uniform_int_distribution<size_t>(0, bytes.size())(rng));
      } else {
        for (int f = 0; f < 8; ++f) bytes[std::uniform_int_distribution<size_t>(0, bytes.size() - 1)(rng)] ^= char(1 + rng() % 255);
      }
      write_file(bundle, bytes);
      what = "byte damage";
    } else {  // rows: forged values, as SQL would write them
      std::string sql;
      for (int u = 0; u < 3; ++u) {
        std::string value = pick(rng, values);
        if (rng() % 4 == 0) {
          std::string junk;
          for (int b = 0; b < 6; ++b) junk.push_back(char(rng() % 256));
          value = "CAST(X'" + hex_of(junk) + "' AS TEXT)";
        }
        sql += "UPDATE OR IGNORE " + pick(rng, tables) + " SET " + pick(rng, columns) + " = " + value +
               " WHERE rowid = " + std::to_string(1 + rng() % 4) + ";";
      }
      try {
        raw_sql(bundle, sql);  // a column the table lacks: that statement fails, fine
      } catch (const std::exception&) {
      }
      what = sql;
    }
    const std::string before = read_file(bundle);
    INFO("iteration " << i << ": " << what);
    try {
      const MergeReport r = dst.import_from(bundle);
      ++imported;
      REQUIRE(r.rows_rejected >= static_cast<int64_t>(r.rejected.size()));
      const VerifyReport v = dst.verify();
      INFO((v.problems.empty() ? "" : v.problems[0]));
      REQUIRE(v.ok);  // only valid rows got in
    } catch (const CacheError& e) {
      ++refused;
      REQUIRE(std::string(e.what()).size() > 10);
    }
    REQUIRE(read_file(bundle) == before);  // import never writes to the bundle
  });
  CHECK(n >= 10);
  CHECK(imported > 0);
}

TEST_CASE("fuzz: the C ABI refuses invalid arguments as INVALID_ARGUMENT, before any driver call",
          "[fuzz]") {
  ::setenv("TFLA_CACHE_DISABLE", "1", 1);  // config queries: no tuned lookups on disk
  std::mt19937_64 rng(kSeed + 3);
  const std::vector<int64_t> sizes = {0, 1, 2, 16, 64, 100, 512, 528, 65535, 65536, -1, -64,
                                      int64_t{1} << 31, int64_t{1} << 32, (int64_t{1} << 32) + 1,
                                      INT64_MAX, INT64_MIN};
  const std::vector<int> enums = {-1, 0, 1, 2, 3, 42};
  const std::vector<float> floats = {1e-6f, 0.f, -1.f, std::numeric_limits<float>::quiet_NaN(),
                                     std::numeric_limits<float>::infinity()};
  const std::vector<const char*> configs = {nullptr, "", "chunk=64", "chunk=64,parallel=0", "chunk=4294967360",
                                            "nosuch=1", "chunk=", " chunk = 128 ", "chunk=64,,"};
  auto known = [](int e) { return e >= 0 && e <= 2; };
  int invalid_calls = 0;
  const int n = bounded(4000, 1500, [&](int) {
    tfla_problem p{};
    p.B = rng() % 3 ? 1 + int64_t(rng() % 4) : pick(rng, sizes);
    p.NH = rng() % 3 ? 1 + int64_t(rng() % 8) : pick(rng, sizes);
    p.S = rng() % 3 ? 1 + int64_t(rng() % 512) : pick(rng, sizes);
    p.Dqk = rng() % 3 ? 64 : pick(rng, sizes);
    p.Dv = rng() % 3 ? 128 : pick(rng, sizes);
    p.dtype = rng() % 3 ? TFLA_BF16 : pick(rng, enums);
    p.gate_dtype = rng() % 3 ? TFLA_FP32 : pick(rng, enums);
    p.variant = rng() % 3 ? TFLA_VARIANT_EXP : pick(rng, enums);
    p.eps = rng() % 3 ? 1e-6f : pick(rng, floats);
    p.scale = rng() % 4 ? 0.f : pick(rng, floats);
    // The oracle: what the library's limits refuse, computed independently.
    __int128 bh = static_cast<__int128>(p.B) * p.NH;
    auto dim_ok = [](int64_t d) { return d >= 16 && d <= 512 && d % 16 == 0; };
    const bool problem_invalid =
        p.B < 1 || p.NH < 1 || p.S < 1 || bh > 65535 || p.S > (int64_t{1} << 30) || !dim_ok(p.Dqk) ||
        !dim_ok(p.Dv) || !known(p.dtype) || !known(p.gate_dtype) || p.variant < 0 || p.variant > 1 ||
        (p.gate_dtype != TFLA_FP32 && p.gate_dtype != p.dtype) || !(p.eps >= 0.f) || std::isinf(p.eps) ||
        !(p.scale >= 0.f) || std::isinf(p.scale);
    const char* cfg = pick(rng, configs);
    INFO("B=" << p.B << " NH=" << p.NH << " S=" << p.S << " Dqk=" << p.Dqk << " Dv=" << p.Dv << " dtype="
              << p.dtype << " gate=" << p.gate_dtype << " variant=" << p.variant << " eps=" << p.eps
              << " scale=" << p.scale << " config=" << (cfg ? cfg : "(null)"));
    auto check_status = [&](tfla_status st, bool must_be_invalid) {
      REQUIRE(st != TFLA_ERROR_INTERNAL);
      if (st != TFLA_OK) REQUIRE(std::string(tfla_last_error()).size() > 5);
      if (must_be_invalid) {
        INFO("message: " << tfla_last_error());
        REQUIRE(st == TFLA_ERROR_INVALID_ARGUMENT);
        ++invalid_calls;
      }
    };
    size_t bytes = 0;
    check_status(tfla_mlstm_forward_workspace_size(&p, cfg, &bytes), problem_invalid);
    check_status(tfla_mlstm_saved_size(&p, cfg, &bytes), problem_invalid);
    char buf[512];
    size_t needed = 0;
    check_status(tfla_mlstm_config(&p, pick(rng, std::vector<const char*>{"fwd", "bwd", "step"}), cfg, buf,
                                   sizeof buf, &needed),
                 problem_invalid);
    // A forward with at least one invalid tensor argument: refused before any driver call.
    tfla_forward_tensors t{};
    void* ptrs[6];
    for (int k = 0; k < 6; ++k) ptrs[k] = reinterpret_cast<void*>((uintptr_t(1) << 20) * uintptr_t(k + 1));
    const int bad = static_cast<int>(rng() % 6);
    // null, or misaligned: +2 bytes breaks a feature tensor's 16-byte rule, +1 any gate's
    const size_t offset = bad == 3 || bad == 4 ? 1 : 2;
    ptrs[bad] = rng() % 2 ? nullptr : static_cast<char*>(ptrs[bad]) + offset;
    t.q = ptrs[0]; t.k = ptrs[1]; t.v = ptrs[2]; t.i = ptrs[3]; t.f = ptrs[4]; t.h = ptrs[5];
    check_status(tfla_mlstm_forward(&p, &t, nullptr, nullptr, 0, cfg), true);
  });
  ::unsetenv("TFLA_CACHE_DISABLE");
  CHECK(n > 100);
  CHECK(invalid_calls > 100);
}
