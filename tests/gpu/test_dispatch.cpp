// Tuning reaches dispatch: `tfla tune` of a tiny shape into a temporary cache, then `tfla cache
// explain` and the library's own choice (mlstm_forward_config / mlstm_backward_config, what
// mlstm_forward / mlstm_backward run) must both name the tuned winner, and a forward and
// backward run with it. The CLI binary: $TFLA_CLI, else the one built beside this test.
#include "tfla_catch.hpp"
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "gpu_test_util.hpp"
#include "tfla/tfla.hpp"
#include "tfla_cache/cache.hpp"

using namespace tfla;

namespace {

std::string cli_path() {
  if (const char* c = std::getenv("TFLA_CLI"); c && *c) return c;
  return TFLA_CLI_PATH;
}

std::string run(const std::string& cmd, int* rc) {
  std::string out;
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE(f);
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, f)) out.append(buf, n);
  *rc = pclose(f);
  return out;
}

Config parse(const std::string& text) {
  const cache::Config c = cache::Config::parse(text);
  return Config(c.values.begin(), c.values.end());
}

}  // namespace

TEST_CASE("a tuned entry is what dispatch and tfla cache explain use", "[dispatch][tune]") {
  char dir_template[] = "/tmp/tfla-dispatch-XXXXXX";
  REQUIRE(mkdtemp(dir_template));
  const std::string cache_path = std::string(dir_template) + "/tuned.sqlite";
  // The library opens its cache lazily, at the first lookup or compile: this test's first.
  REQUIRE(setenv("TFLA_CACHE", cache_path.c_str(), 1) == 0);
  unsetenv("TFLA_TUNED");

  const std::string shape = " --variant exp --dtype bf16 --dqk 64 --dv 128 --bh 4 --seq 640";
  int rc = 0;
  const std::string log = run(cli_path() + " tune --op fwbw" + shape + " --budget 4 --reps 3 --cache " + cache_path, &rc);
  INFO(log);
  REQUIRE(rc == 0);

  MlstmProblem p;
  p.B = 2; p.NH = 2; p.S = 640; p.Dqk = 64; p.Dv = 128;
  p.dtype = DType::BF16;
  p.gate_dtype = DType::FP32;
  p.variant = Variant::Exp;
  for (const char* op : {"fwd", "bwd"}) {
    INFO("op " << op);
    const std::string j = run(cli_path() + " cache explain --json --op " + op + shape + " --cache " + cache_path, &rc);
    INFO(j);
    REQUIRE(rc == 0);
    const nlohmann::json e = nlohmann::json::parse(j.substr(j.find('{')));
    CHECK(e.at("kind").get<std::string>() == "exact");
    const Config explained = parse(e.at("config").get<std::string>());
    const Config stored = parse(e.at("entry").at("winner").get<std::string>());
    CHECK(explained == stored);
    const Config dispatched = std::string(op) == "fwd" ? mlstm_forward_config(p) : mlstm_backward_config(p);
    INFO("dispatch: " << to_string(dispatched) << "\nexplain: " << to_string(explained));
    for (const auto& [key, value] : explained) {
      INFO(key);
      REQUIRE(dispatched.count(key));
      CHECK(dispatched.at(key) == value);
    }
  }

  // The tuned configs run: a forward and a backward with the library's choice, outputs finite.
  const size_t n_qk = p.B * p.NH * p.S * p.Dqk, n_v = p.B * p.NH * p.S * p.Dv, n_g = p.B * p.NH * p.S;
  std::vector<double> q(n_qk), k(n_qk), v(n_v), ig(n_g), fg(n_g), dh(n_v);
  uint64_t s = 12345;
  auto rnd = [&] { s = s * 6364136223846793005ull + 1442695040888963407ull; return ((s >> 11) * 0x1.0p-53) * 2 - 1; };
  for (auto* x : {&q, &k, &v, &dh})
    for (double& y : *x) y = rnd();
  for (double& y : ig) y = rnd();
  for (double& y : fg) y = 3 + rnd();
  auto dq_ = test::upload(q, p.dtype), dk_ = test::upload(k, p.dtype), dv_ = test::upload(v, p.dtype);
  auto di_ = test::upload(ig, DType::FP32), df_ = test::upload(fg, DType::FP32), ddh = test::upload(dh, p.dtype);
  auto h = test::poisoned(n_v * 2), norm = test::poisoned(n_g * 4);
  auto gq = test::poisoned(n_qk * 2), gk = test::poisoned(n_qk * 2), gv = test::poisoned(n_v * 2);
  auto gi = test::poisoned(n_g * 4), gf = test::poisoned(n_g * 4);
  ForwardTensors t;
  t.q = dq_.get(); t.k = dk_.get(); t.v = dv_.get(); t.i = di_.get(); t.f = df_.get();
  t.h = h.get(); t.norm = norm.as<float>();
  mlstm_forward(p, t, {});
  BackwardTensors b;
  b.q = t.q; b.k = t.k; b.v = t.v; b.i = t.i; b.f = t.f; b.dh = ddh.get(); b.norm = norm.as<float>();
  b.dq = gq.get(); b.dk = gk.get(); b.dv = gv.get(); b.di = gi.get(); b.df = gf.get();
  mlstm_backward(p, b, {});
  CHECK(test::count_nonfinite(test::download(h, p.dtype)) == 0);
  CHECK(test::count_nonfinite(test::download(gq, p.dtype)) == 0);
  CHECK(test::count_nonfinite(test::download(gv, p.dtype)) == 0);
  CHECK(test::count_nonfinite(test::download(gf, DType::FP32)) == 0);
}
