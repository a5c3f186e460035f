// tfla_test_cache_seed FILE: writes sample tuned entries into the cache FILE for the CLI tests
// (check_cache_cli.sh): three entries under an environment of this build on an H100 (tuned
// last), one under the same build on an H200, one under a stale environment (tfla 0.0.1), and
// four cubins: ahead of time (no env), labelled with the H100 env, with the stale env, and
// with an env id that has no row (as get_kernel stores them for an untuned environment).
#include <cstdio>

#include "ops/fwd_config.hpp"
#include "store/env_key.hpp"
#include "tfla_cache/cache.hpp"
#include "config_helpers.hpp"

using namespace tfla;
using namespace tfla::test;

namespace {
cache::EnvKey h100(const std::string& tfla_version,
                   const std::string& name = "NVIDIA H100 80GB HBM3") {
  cache::EnvKey e = store::deviceless_env_key("sm_90a");
  e.gpu_name = name;
  e.sm_count = 132;
  e.l2_bytes = 50331648;
  e.smem_optin_bytes = 232448;
  e.driver_version = 12040;
  e.tfla_version = tfla_version;
  return e;
}

cache::TunedEntry entry(const cache::EnvKey& env, int64_t bh, int64_t s, int64_t when) {
  cache::TunedEntry t;
  t.env = env;
  t.problem = {"fwd", "exp", true, "bf16", 256, 512, "bhsd", bh, s};
  MlstmProblem p;
  p.B = 1;
  p.NH = bh;
  p.S = s;
  p.Dqk = 256;
  p.Dv = 512;
  t.winner.values = fwd_default(p, 128).to_config();
  t.winner_median_us = 100;
  t.winner_spread_us = 2;
  t.default_median_us = 150;
  cache::CandidateResult ok{t.winner, cache::CandidateStatus::Ok, 100, 2, 1e-3, ""};
  cache::CandidateResult bad{cache::Config::parse("chunk=64,siz_b_q=128"),
                             cache::CandidateStatus::CompileFailed,
                             0,
                             0,
                             0,
                             "error: too much shared memory"};
  t.candidates = {ok, bad};
  t.tuning_seconds = 12.5;
  t.tool_version = "tfla test seed";
  t.timestamp_unix = when;
  return t;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: tfla_test_cache_seed FILE\n");
    return 2;
  }
  try {
    cache::Cache c = cache::Cache::open(argv[1]);
    const cache::EnvKey stale = h100("0.0.1"), fresh = h100(version());
    c.put_entry(entry(stale, 2, 512, 1700000000));
    c.put_entry(entry(h100(version(), "NVIDIA H200"), 16, 2048, 1700000050));
    c.put_entry(entry(fresh, 64, 8192, 1700000100));
    c.put_entry(entry(fresh, 8, 1024, 1700000200));
    c.put_entry(entry(fresh, 512, 65536, 1700000300));
    // shapes a process looked up without an exact entry (TFLA_RECORD_SHAPES=1)
    c.record_shape(fresh, {"fwd", "exp", true, "bf16", 256, 512, "bhsd", 32, 4096});
    c.record_shape(fresh, {"fwd", "exp", true, "bf16", 256, 512, "bhsd", 32, 4096});
    c.record_shape(fresh, {"step", "sig", true, "bf16", 256, 512, "bhsd", 128, 1});
    c.put_cubin(std::string(64, 'a'), "sm_90a", "seeded_aot", "not a real cubin", "");
    c.put_cubin(std::string(64, 'b'), "sm_90a", "seeded_fresh", "not a real cubin", fresh.id());
    c.put_cubin(std::string(64, 'c'), "sm_90a", "seeded_stale", "not a real cubin", stale.id());
    c.put_cubin(std::string(64, 'd'), "sm_90a", "seeded_unlisted", "not a real cubin",
                std::string(32, '0'));
    std::printf("seeded %s: fresh env %s, stale env %s\n", argv[1], fresh.id().c_str(),
                stale.id().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tfla_test_cache_seed: %s\n", e.what());
    return 1;
  }
}
