// The tuner without a GPU: search-space pruning and ordering, spec-file parsing, the worker
// JSON-line protocol, and the orchestrator's fault handling with a fake worker script.
#include <unistd.h>

#include "tfla_catch.hpp"
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "ops/bwd_config.hpp"
#include "ops/fwd_config.hpp"
#include "ops/step_config.hpp"
#include "tfla_cache/cache.hpp"
#include "tuner/search_space.hpp"
#include "tuner/spec_file.hpp"
#include "tuner/tuner.hpp"
#include "tuner/worker.hpp"
#include "config_helpers.hpp"

using namespace tfla;
using namespace tfla::test;
using namespace tfla::tuner;

namespace {
MlstmProblem paper_problem(DType dt = DType::BF16) {
  TuneProblem t;
  t.dtype = dt;
  return t.problem();
}
}  // namespace

TEST_CASE("forward space: every kept candidate is valid and fits; the default is first", "[tuner]") {
  for (DType dt : {DType::BF16, DType::FP32}) {
    const MlstmProblem p = paper_problem(dt);
    SpaceLimits lim;
    lim.smem_optin_bytes = 227 * 1024;
    const Enumerated e = enumerate(Family::Forward, p, lim, 0);
    REQUIRE(e.kept.size() > 10);
    CHECK(e.pruned_count > 0);
    CHECK(e.kept.front().config == fwd_default(p).to_config());
    for (const Candidate& c : e.kept) {
      ops::FwdConfig f;
      f.apply(c.config);
      INFO(to_string(c.config));
      CHECK(check_fwd(f, p).empty());
      CHECK(ops::fwd_output_smem(f, p) <= lim.smem_optin_bytes);
      CHECK(ops::fwd_states_smem(f, p) <= lim.smem_optin_bytes);
      CHECK(c.reason.empty());
    }
    for (const Candidate& c : e.pruned) CHECK(!c.reason.empty());
  }
}

TEST_CASE("backward space: kept candidates pass check_bwd_config and the smem limit", "[tuner]") {
  const MlstmProblem p = paper_problem();
  SpaceLimits lim;
  const Enumerated e = enumerate(Family::Backward, p, lim, 50);
  REQUIRE(e.kept.size() == 50);
  CHECK(e.kept.front().config == bwd_default(p).to_config());
  for (const Candidate& c : e.kept) {
    ops::BwdConfig b;
    b.apply(c.config);
    INFO(to_string(c.config));
    CHECK(check_bwd(b, p).empty());
    for (int mode = 0; mode < 3; ++mode) {
      if (b.tl_sm90)  // the sm90 tiles: a ring of at least two slots fits
        CHECK(ops::bwd_tile_sm90_stages(p, mode, mode == 2 ? b.siz_b_nv : b.siz_b_nqk, ref()) >= 2);
      else
        CHECK(ops::bwd_tile_smem(b, p, mode) <= lim.smem_optin_bytes);
    }
    if (!b.ds_sm90) CHECK(ops::bwd_dstates_smem(b, p) <= lim.smem_optin_bytes);
  }
}

TEST_CASE("a small shared-memory limit prunes with a reason; budget caps; chunk filter", "[tuner]") {
  const MlstmProblem p = paper_problem();
  SpaceLimits small;
  small.smem_optin_bytes = 48 * 1024;
  const Enumerated e = enumerate(Family::Forward, p, small, 8);
  CHECK(e.kept.size() <= 8);
  REQUIRE(!e.pruned.empty());
  bool smem_reason = false;
  for (const Candidate& c : e.pruned) smem_reason = smem_reason || c.reason.find("shared memory") != std::string::npos;
  CHECK(smem_reason);
  const Enumerated capped = enumerate(Family::Forward, p, SpaceLimits{}, 3);
  CHECK(capped.kept.size() == 3);
  const Enumerated c128 = enumerate(Family::Forward, p, SpaceLimits{}, 0, 128);
  for (const Candidate& c : c128.kept) CHECK(c.config.at("chunk") == 128);
  // Register estimate: a 128 x (256 + 64) output block in 2 x 2 warps: 320 accumulators a thread.
  Config big = ops::chunkwise_fwd_config(p, ops::DeviceLimits::reference()).to_config();  // mma.sync
  big["siz_b_q"] = 128; big["siz_b_v"] = 256; big["siz_b_kv"] = 64; big["warps_m"] = 2; big["warps_n"] = 2;
  CHECK(prune_reason(Family::Forward, big, p, SpaceLimits{}).find("accumulators") != std::string::npos);
}

TEST_CASE("spec files: good lines, comments, and clear errors", "[tuner]") {
  const auto v = parse_spec("# a model\n\nop=fwd variant=sig dtype=fp16 dqk=128 dv=256 bh=8 seq=4096  # x\n"
                            "op=fwbw bh=64 seq=8192\n");
  REQUIRE(v.size() == 2);
  CHECK(v[0].op == "fwd");
  CHECK(v[0].variant == Variant::Sig);
  CHECK(v[0].dtype == DType::FP16);
  CHECK(v[0].dqk == 128);
  CHECK(v[1].dv == 512);
  CHECK(parse_spec_line(v[0].to_string()).to_string() == v[0].to_string());
  auto err = [](const std::string& text) {
    try {
      parse_spec(text);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(err("op=fwd\nop=sideways\n").find("line 2") != std::string::npos);
  CHECK(err("dqk=-4").find("dqk=-4") != std::string::npos);
  CHECK(err("dqk=12x").find("positive integer") != std::string::npos);
  CHECK(err("colour=red").find("unknown key 'colour'") != std::string::npos);
  CHECK(err("dtype=int8").find("unknown dtype") != std::string::npos);
  CHECK(err("justaword").find("key=value") != std::string::npos);
  CHECK_THROWS_AS(read_spec_file("/nonexistent/spec.txt"), Error);
}

TEST_CASE("spec files: directories, endless files, NUL bytes and repeated keys are refused", "[tuner]") {
  auto err = [](auto&& parse) {
    try {
      parse();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(err([] { read_spec_file("/tmp"); }).find("cannot read spec file '/tmp': it is a directory") !=
        std::string::npos);
  // a device that never ends: only a bounded prefix is read
  CHECK(err([] { read_spec_file("/dev/zero"); }).find("larger than 1 MiB") != std::string::npos);
  CHECK(err([] { parse_spec("op=fwd\n" + std::string(5000, ' ') + "op=fwd\n"); })
            .find("line 2: longer than 4096 characters") != std::string::npos);
  CHECK(err([] { parse_spec(std::string("op=fwd\nop=fwd dqk=6\0" "4\n", 22)); })
            .find("line 2: a NUL byte at column 13") != std::string::npos);
  CHECK(err([] { parse_spec("op=fwd dqk=256 dqk=512\n"); }).find("'dqk' is given twice") != std::string::npos);
  CHECK(err([] { parse_spec_line("op=fwd op=bwd"); }).find("'op' is given twice") != std::string::npos);
  CHECK(parse_spec("op=fwd dqk=128\n").at(0).dqk == 128);
}

TEST_CASE("worker protocol: lines round-trip", "[tuner]") {
  Hello h;
  h.ok = true;
  h.device_name = "Fake GPU";
  h.arch = "sm_90a";
  h.smem_optin_bytes = 232448;
  h.l2_bytes = 50 << 20;
  h.env.gpu_name = "Fake GPU";
  h.env.cc_major = 9;
  h.env.sm_count = 132;
  const Hello h2 = parse_hello(to_line(h));
  CHECK(h2.ok);
  CHECK(h2.arch == "sm_90a");
  CHECK(h2.smem_optin_bytes == 232448);
  CHECK(h2.env == h.env);
  Hello none;
  none.no_gpu = true;
  none.error = "no CUDA driver";
  const Hello n2 = parse_hello(to_line(none));
  CHECK(!n2.ok);
  CHECK(n2.no_gpu);
  CHECK(n2.error == "no CUDA driver");

  RunRequest r;
  r.problem = parse_spec_line("op=fwbw variant=sig dqk=128 dv=128 bh=4 seq=512");
  r.family = Family::Backward;
  r.config = {{"chunk", 128}, {"siz_b_r", 64}};
  r.reference = {{"chunk", 256}};
  r.reps = 7;
  const RunRequest r2 = parse_request(to_line(r));
  CHECK(r2.problem.to_string() == r.problem.to_string());
  CHECK(r2.family == Family::Backward);
  CHECK(r2.config == r.config);
  CHECK(r2.reference == r.reference);
  CHECK(r2.reps == 7);

  cache::CandidateResult c;
  c.status = cache::CandidateStatus::WrongResult;
  c.time_median_us = 12.5;
  c.max_rel_error = 0.3;
  c.message = "error 0.3 > 0.02";
  const cache::CandidateResult c2 = parse_result(to_line(c));
  CHECK(c2.status == cache::CandidateStatus::WrongResult);
  CHECK(c2.time_median_us == 12.5);
  CHECK(c2.message == c.message);
  CHECK_THROWS_AS(parse_result("{\"type\":\"result\",\"status\":\"great\"}"), Error);
  CHECK_THROWS_AS(parse_result("not json"), Error);
}

namespace {
struct Scratch {
  std::string dir;
  Scratch() {
    char t[] = "/tmp/tfla_tuner_XXXXXX";
    dir = mkdtemp(t);
  }
  ~Scratch() { (void)std::system(("rm -rf '" + dir + "'").c_str()); }
};

// A fake worker: says hello, answers ok in 90 us for sm90 configs and 100 us for others, kills itself
// (SIGSEGV) on the request whose config is $CRASH, and logs every request to $LOG.
std::string write_fake_worker(const std::string& dir, const Hello& h) {
  const std::string path = dir + "/worker.sh";
  std::ofstream f(path);
  f << "#!/bin/sh\n"
    << "printf '%s\\n' '" << to_line(h) << "'\n"
    << "while IFS= read -r line; do\n"
    << "  echo \"$line\" >> \"$LOG\"\n"
    << "  case \"$line\" in *\"\\\"config\\\":\\\"$CRASH\\\"\"*) kill -SEGV $$ ;; esac\n"
    << "  t=100; case \"$line\" in *'\"config\":\"'*engine=1*) t=90 ;; esac\n"
    << "  printf '{\"type\":\"result\",\"status\":\"ok\",\"median_us\":%s,\"spread_us\":1,"
       "\"max_rel_error\":0.001,\"message\":\"\"}\\n' $t\n"
    << "done\n";
  return path;
}
}  // namespace

TEST_CASE("orchestrator: a crashing candidate is faulted, the run goes on, resume skips", "[tuner]") {
  Scratch s;
  Hello h;
  h.ok = true;
  h.device_name = "Fake GPU";
  h.arch = "sm_90a";
  h.smem_optin_bytes = 227 * 1024;
  h.env.gpu_name = "Fake GPU";
  h.env.cc_major = 9;
  h.env.tfla_version = "test";
  TuneProblem t = parse_spec_line("op=fwd variant=exp dtype=bf16 dqk=256 dv=512 bh=64 seq=8192");
  const Enumerated space = enumerate(Family::Forward, t.problem(), SpaceLimits{}, 5);
  REQUIRE(space.kept.size() == 5);
  const std::string crash = config_text(space.kept[2].config);
  const std::string log = s.dir + "/requests.log";
  setenv("CRASH", crash.c_str(), 1);
  setenv("LOG", log.c_str(), 1);
  TuneOptions opt;
  opt.cache_path = s.dir + "/c.sqlite";
  opt.worker_argv = {"/bin/sh", write_fake_worker(s.dir, h)};
  opt.budget = 5;
  opt.compile = false;
  opt.candidate_timeout_s = 20;
  const TuneReport rep = tune({t}, opt);
  REQUIRE(rep.rows.size() == 1);
  const FamilySummary& row = rep.rows[0];
  CHECK(rep.worker_restarts == 1);
  CHECK(row.ok == 4);
  int faulted = 0;
  for (const auto& r : row.results)
    if (r.status == cache::CandidateStatus::Faulted) {
      ++faulted;
      CHECK(r.config.to_string() == crash);
      CHECK(r.message.find("signal") != std::string::npos);
    }
  CHECK(faulted == 1);
  CHECK(row.default_us == 90);  // the default runs the sm90 engine (engine=1)
  CHECK(!row.winner.empty());

  cache::Cache db = cache::Cache::open(opt.cache_path);
  const auto recorded = db.candidates(h.env, problem_key(t, Family::Forward));
  CHECK(recorded.size() == 5 + space.pruned.size());
  auto entry = db.get_exact(h.env, problem_key(t, Family::Forward));
  REQUIRE(entry);
  CHECK(entry->default_median_us == 90);

  // --resume: nothing is sent to the worker again.
  std::remove(log.c_str());
  opt.resume = true;
  const TuneReport again = tune({t}, opt);
  CHECK(again.rows[0].resumed == 5);
  CHECK(again.rows[0].ok == 4);
  std::ifstream lf(log);
  std::string any;
  CHECK(!std::getline(lf, any));
}

TEST_CASE("orchestrator: a worker without a GPU is Error(NoDriver)", "[tuner]") {
  Scratch s;
  const std::string path = s.dir + "/w.sh";
  std::ofstream(path) << "echo '{\"type\":\"hello\",\"ok\":false,\"no_gpu\":true,\"error\":\"no CUDA driver\"}'\n";
  TuneOptions opt;
  opt.cache_path = s.dir + "/c.sqlite";
  opt.worker_argv = {"/bin/sh", path};
  try {
    tune({TuneProblem{}}, opt);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::NoDriver);
    CHECK(std::string(e.what()).find("no CUDA driver") != std::string::npos);
  }
}

// ---- the step family ---------------------------------------------------------------------------

TEST_CASE("step space: kept candidates are valid, the default first; spec and protocol carry step",
          "[tuner][step]") {
  for (auto [dqk, dv] : {std::pair{256, 512}, {96, 160}, {16, 16}, {512, 512}}) {
    const MlstmProblem p = parse_spec_line("op=step dtype=bf16 dqk=" + std::to_string(dqk) + " dv=" +
                                           std::to_string(dv) + " bh=8 seq=1")
                               .problem();
    INFO("Dqk " << dqk << " Dv " << dv);
    const Enumerated e = enumerate(Family::Step, p, SpaceLimits{}, 0);
    REQUIRE(!e.kept.empty());
    CHECK(e.kept.front().config == ops::default_step_config(p).to_config());
    CHECK(e.kept.front().config == default_config(Family::Step, p));
    for (const Candidate& c : e.kept) {
      INFO(to_string(c.config));
      CHECK(c.family == Family::Step);
      ops::StepConfig s;
      s.apply(c.config);
      CHECK(ops::check_step_config(s, p).empty());
      CHECK(p.Dv % s.siz_b_v == 0);
    }
    for (const Candidate& c : e.pruned) CHECK(!c.reason.empty());
    CHECK(enumerate(Family::Step, p, SpaceLimits{}, 3).kept.size() == std::min<size_t>(3, e.kept.size()));
  }
  // several slice widths for the paper head and several thread counts
  const MlstmProblem paper = parse_spec_line("op=step dqk=256 dv=512 bh=8 seq=1").problem();
  const Enumerated e = enumerate(Family::Step, paper, SpaceLimits{}, 0);
  std::set<int64_t> widths, threads;
  for (const Candidate& c : e.kept) {
    widths.insert(c.config.at("siz_b_v"));
    threads.insert(c.config.at("threads"));
  }
  CHECK(widths.size() >= 4);  // 16, 32, 64 and 128 (wider slices would not fit the registers)
  CHECK(threads.size() >= 3);

  const TuneProblem t = parse_spec_line("op=step variant=sig dtype=fp16 dqk=64 dv=128 bh=16 seq=4");
  CHECK(t.op == "step");
  CHECK(parse_spec_line(t.to_string()).op == "step");
  CHECK(problem_key(t, Family::Step).op == "step");
  CHECK(problem_key(t, Family::Step).seq_len == 4);
  CHECK(std::string(to_string(Family::Step)) == "step");
  RunRequest r;
  r.problem = t;
  r.family = Family::Step;
  r.config = {{"siz_b_v", 64}, {"threads", 128}};
  r.reference = ops::default_step_config(t.problem()).to_config();
  const RunRequest r2 = parse_request(to_line(r));
  CHECK(r2.family == Family::Step);
  CHECK(r2.config == r.config);
  CHECK(r2.reference == r.reference);
  CHECK_THROWS_AS(parse_spec_line("op=steps"), Error);
}

TEST_CASE("recorded shapes become tune problems: fwd + bwd of one shape tune as fwbw",
          "[tuner][recorded]") {
  auto row = [](const std::string& op, const std::string& variant, int64_t bh, int64_t seq,
                const std::string& dtype = "bf16") {
    tfla::cache::RecordedShape r;
    r.env_id = "env";
    r.problem.op = op;
    r.problem.variant = variant;
    r.problem.dtype = dtype;
    r.problem.dqk = 256;
    r.problem.dv = 512;
    r.problem.layout = "bhsd";
    r.problem.batch_heads = bh;
    r.problem.seq_len = seq;
    r.lookups = 1;
    return r;
  };
  const auto ps = tfla::tuner::problems_from_recorded({
      row("fwd", "exp", 64, 8192), row("step", "exp", 64, 1), row("bwd", "exp", 64, 8192),
      row("fwd", "sig", 64, 8192), row("fwd", "exp", 32, 8192), row("bwd", "exp", 32, 4096),
      row("fwd", "exp", 8, 128, "int8"), row("parallel", "exp", 8, 128)});
  REQUIRE(ps.size() == 5);  // the int8 row and the unknown op are skipped
  CHECK(ps[0].op == "fwbw");
  CHECK(ps[0].variant == tfla::Variant::Exp);
  CHECK(ps[0].bh == 64);
  CHECK(ps[0].seq == 8192);
  CHECK(ps[1].op == "step");
  CHECK(ps[1].seq == 1);
  CHECK(ps[2].op == "fwd");  // other variant: not merged
  CHECK(ps[2].variant == tfla::Variant::Sig);
  CHECK(ps[3].op == "fwd");  // other shapes: not merged
  CHECK(ps[4].op == "bwd");
  CHECK(ps[4].seq == 4096);
  CHECK(tfla::tuner::problems_from_recorded({}).empty());
}

TEST_CASE("dispatch, the tuner and explain accept exactly the same configs", "[tuner][families]") {
  // All three ask ops::acceptance (the resolved family's reject); the tuner's prune reason is it
  // verbatim, and a config that breaks only the device's shared-memory limit is refused by it
  // (explain once accepted such configs).
  const MlstmProblem p = paper_problem();
  for (Family op : {Family::Forward, Family::Backward, Family::Step}) {
    const Enumerated e = enumerate(op, p, SpaceLimits{}, 40);
    REQUIRE(!e.kept.empty());
    for (const std::vector<Candidate>* list : {&e.kept, &e.pruned})
      for (const Candidate& c : *list) {
        INFO(ops::to_string(op) << " " << to_string(c.config));
        const std::string rule = ops::acceptance(op, p, SpaceLimits{}, c.config);
        CHECK(prune_reason(op, c.config, p, SpaceLimits{}) == rule);
        try {
          const ops::Resolved r = ops::resolve(op, p, SpaceLimits{}, c.config);
          CHECK(r.family->reject(r.config, p, SpaceLimits{}) == rule);
        } catch (const Error& err) {  // keys out of range: the same words as the rule's
          CHECK(rule == err.what());
        }
        CHECK(rule.empty() == c.reason.empty());
      }
  }
  // The forward default on a device with 100 KiB of shared memory per block: the rules of the
  // tiles hold, the device limit does not.
  SpaceLimits small;
  small.smem_optin_bytes = 100 * 1024;
  const Config def = ops::resolve(Family::Forward, p, SpaceLimits{}, {}).config;
  CHECK(ops::acceptance(Family::Forward, p, SpaceLimits{}, def).empty());
  CHECK(ops::acceptance(Family::Forward, p, small, def).find("shared memory") != std::string::npos);
  // The defaults themselves are device-aware: on that device the default fits.
  CHECK(ops::acceptance(Family::Forward, p, small, ops::resolve(Family::Forward, p, small, {}).config).empty());
}
