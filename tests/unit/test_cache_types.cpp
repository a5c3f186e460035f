// Keys, configs, statuses and hashes of tfla_cache: text forms round-trip, bad text is refused.
#include "tfla_catch.hpp"

#include "test_cache_support.hpp"
#include "tfla_cache/hash.hpp"
#include "tfla_cache/types.hpp"

using namespace tfla::cache;
using tfla::cache::test::sample_env;
using tfla::cache::test::sample_problem;

TEST_CASE("content_hash is SHA-256", "[cache][hash]") {
  CHECK(content_hash("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(content_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(content_hash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(content_hash(std::string(1000000, 'a')) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Boundary lengths around the 56-byte padding limit.
  CHECK(content_hash(std::string(55, 'x')) != content_hash(std::string(56, 'x')));
}

TEST_CASE("content_hash_parts separates its parts", "[cache][hash]") {
  CHECK(content_hash_parts({"ab", "c"}) != content_hash_parts({"a", "bc"}));
  CHECK(content_hash_parts({"src", "-O3", "sm_90a"}) ==
        content_hash_parts({"src", "-O3", "sm_90a"}));
  CHECK(content_hash_parts({"x"}).size() == 64);
}

TEST_CASE("Config text round-trips and is canonical", "[cache][config]") {
  Config c = Config::parse(" warps=4, chunk=128 ,siz_b_q=64,stages=-1");
  CHECK(c.to_string() == "chunk=128,siz_b_q=64,stages=-1,warps=4");
  CHECK(Config::parse(c.to_string()) == c);
  CHECK(c.get("chunk") == 128);
  CHECK(c.get_or("missing", 7) == 7);
  CHECK_THROWS_AS(c.get("missing"), CacheError);
  CHECK(Config::parse("").empty());
  CHECK(Config::parse("").to_string().empty());
  Config big;
  big.set("n", INT64_MAX);
  CHECK(Config::parse(big.to_string()).get("n") == INT64_MAX);
}

TEST_CASE("Config::parse refuses malformed text", "[cache][config]") {
  for (const char* bad : {"chunk", "chunk=", "chunk=12x", "Chunk=1", "a=1,a=2", "a=1,", "=3",
                          "a=99999999999999999999", "a b=1"}) {
    INFO(bad);
    try {
      Config::parse(bad);
      FAIL("accepted");
    } catch (const CacheError& e) {
      CHECK(e.code() == ErrorCode::InvalidArgument);
    }
  }
}

TEST_CASE("ProblemKey buckets shapes by powers of two", "[cache][problem]") {
  CHECK(ceil_pow2(0) == 1);
  CHECK(ceil_pow2(1) == 1);
  CHECK(ceil_pow2(2) == 2);
  CHECK(ceil_pow2(3) == 4);
  CHECK(ceil_pow2(1024) == 1024);
  CHECK(ceil_pow2(1025) == 2048);
  ProblemKey p = sample_problem(6, 1000);
  CHECK(p.bucket_batch_heads() == 8);
  CHECK(p.bucket_seq_len() == 1024);
  CHECK(p.class_key() == "fwd/exp/norm/bf16/256x512/bhsd");
  CHECK(p.to_string() == "fwd/exp/norm/bf16/256x512/bhsd/BH=6,S=1000");
  ProblemKey q = p;
  q.normalize = false;
  CHECK(q.class_key() != p.class_key());
  CHECK(q != p);
}

TEST_CASE("ProblemKey::validate names the bad field", "[cache][problem]") {
  ProblemKey p = sample_problem();
  CHECK_NOTHROW(p.validate());
  p.op = "";
  CHECK_THROWS_WITH(p.validate(), Catch::Contains("op"));
  p = sample_problem();
  p.dtype = "BF16";
  CHECK_THROWS_WITH(p.validate(), Catch::Contains("dtype"));
  p = sample_problem();
  p.layout = "bh/sd";
  CHECK_THROWS_AS(p.validate(), CacheError);
  p = sample_problem();
  p.seq_len = 0;
  CHECK_THROWS_WITH(p.validate(), Catch::Contains("shape"));
  p = sample_problem();
  p.dv = -1;
  CHECK_THROWS_AS(p.validate(), CacheError);
}

TEST_CASE("EnvKey JSON round-trips, id is stable and sensitive to every field", "[cache][env]") {
  EnvKey e = sample_env("GPU \"quoted\" \\ name\t1");
  CHECK(EnvKey::from_json(e.to_json()) == e);
  CHECK(e.id().size() == 32);
  CHECK(e.id() == sample_env("GPU \"quoted\" \\ name\t1").id());
  // A change in any field changes the id.
  std::vector<EnvKey> variants(11, sample_env());
  variants[0].gpu_name = "NVIDIA H200";
  variants[1].cc_major = 8;
  variants[2].cc_minor = 9;
  variants[3].sm_count = 114;
  variants[4].l2_bytes += 1;
  variants[5].smem_optin_bytes -= 1024;
  variants[6].driver_version = 12050;
  variants[7].nvrtc_major = 11;
  variants[8].nvrtc_minor = 8;
  variants[9].tfla_version = "0.1.1";
  variants[10].templates_hash = "ffff";
  for (const EnvKey& v : variants) {
    CHECK(v != sample_env());
    CHECK(v.id() != sample_env().id());
  }
  // Known text: the id must not change between builds (it is stored in files).
  CHECK(sample_env().to_json() ==
        R"({"gpu_name":"NVIDIA H100 80GB HBM3","cc_major":9,"cc_minor":0,"sm_count":132,)"
        R"("l2_bytes":50331648,"smem_optin_bytes":232448,"driver_version":12040,"nvrtc_major":12,)"
        R"("nvrtc_minor":4,"tfla_version":"0.1.0","templates_hash":"0123456789abcdef"})");
}

TEST_CASE("EnvKey::from_json refuses bad text", "[cache][env]") {
  CHECK_THROWS_AS(EnvKey::from_json("not json"), CacheError);
  CHECK_THROWS_AS(EnvKey::from_json(R"({"cc_major": "nine"})"), CacheError);
  CHECK_THROWS_AS(EnvKey::from_json(R"({"cc_major": 9)"), CacheError);
  CHECK_THROWS_AS(EnvKey::from_json(R"({"a": {"b": 1}})"), CacheError);
  CHECK(EnvKey::from_json(R"({ "sm_count" : 78, "unknown": true })").sm_count == 78);
}

TEST_CASE("CandidateStatus names round-trip", "[cache][status]") {
  for (auto s : {CandidateStatus::Ok, CandidateStatus::CompileFailed, CandidateStatus::OverLimits,
                 CandidateStatus::LaunchFailed, CandidateStatus::WrongResult,
                 CandidateStatus::Faulted, CandidateStatus::Pending}) {
    CHECK(candidate_status_from_string(to_string(s)) == s);
  }
  CHECK(std::string(to_string(CandidateStatus::OverLimits)) == "over_limits");
  CHECK_FALSE(candidate_status_from_string("Ok").has_value());
}
