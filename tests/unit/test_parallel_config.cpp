// The parallel form's config rules, without a GPU: the "parallel" key of the forward and backward
// configs (defaults, resolution of pinned keys, validity rules, workspace sizes), the public
// API's refusals of states with parallel = 1 pinned (before any driver call), and the tuner's
// parallel candidates.
#include "tfla_catch.hpp"
#include <cstdint>
#include <string>
#include <tuple>

#include "ops/bwd_config.hpp"
#include "ops/fwd_config.hpp"
#include "ops/mlstm_backward.hpp"
#include "ops/mlstm_forward.hpp"
#include "ops/packed.hpp"
#include "ops/plan.hpp"
#include "tuner/search_space.hpp"
#include "config_helpers.hpp"

using namespace tfla;
using namespace tfla::test;

namespace {

MlstmProblem problem(int64_t S, int64_t dqk = 256, int64_t dv = 512, DType dt = DType::BF16) {
  return make_problem(8, 8, S, dqk, dv, dt);
}

// Fake device addresses 256 MiB apart: the tensors of these problems never share a byte.
void* fake_ptr(int slot) { return reinterpret_cast<void*>((uintptr_t(1) << 28) * uintptr_t(slot + 1)); }

ForwardTensors fwd_tensors() {
  ForwardTensors t;
  t.q = fake_ptr(0); t.k = fake_ptr(1); t.v = fake_ptr(2); t.i = fake_ptr(3); t.f = fake_ptr(4);
  t.h = fake_ptr(5);
  return t;
}

BackwardTensors bwd_tensors() {
  BackwardTensors t;
  t.q = fake_ptr(0); t.k = fake_ptr(1); t.v = fake_ptr(2); t.i = fake_ptr(3); t.f = fake_ptr(4);
  t.dh = fake_ptr(5); t.norm = static_cast<const float*>(fake_ptr(6));
  t.dq = fake_ptr(7); t.dk = fake_ptr(8); t.dv = fake_ptr(9); t.di = fake_ptr(10); t.df = fake_ptr(11);
  return t;
}

template <class F> std::string invalid_argument(F&& call) {
  try {
    call();
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
    return e.what();
  }
  FAIL("the call was accepted");
  return {};
}

}  // namespace

TEST_CASE("the default is the parallel form for short sequences only", "[parallel][config]") {
  CHECK(fwd_default(problem(64)).parallel() == 1);
  CHECK(bwd_default(problem(64)).parallel() == 1);
  CHECK(fwd_default(problem(8192)).parallel() == 0);
  CHECK(bwd_default(problem(8192)).parallel() == 0);
  // a fixed chunk is the chunkwise form
  CHECK(fwd_default(problem(64), 64).parallel() == 0);
  CHECK(bwd_default(problem(64), 64).parallel() == 0);
  // the rule is monotone in S: once chunkwise, chunkwise for every longer sequence
  for (auto [dqk, dv] : {std::pair{256, 512}, {128, 128}, {64, 64}}) {
    bool chunkwise = false;
    for (int64_t S = 1; S <= 32768; S *= 2) {
      const bool par = ops::parallel_by_default(problem(S, dqk, dv));
      INFO("S = " << S << " Dqk = " << dqk << " Dv = " << dv);
      if (chunkwise) CHECK(!par);
      chunkwise = chunkwise || !par;
    }
    CHECK(chunkwise);
  }
  // one query tile per sequence: the whole Dv in one tile where it fits
  CHECK(par_fwd(problem(64)).siz_b_v == 512);
  CHECK(par_fwd(problem(128)).siz_b_v == 256);
  CHECK(par_fwd(problem(64, 256, 512, DType::FP32)).siz_b_v < 512);  // too big for smem
  // every default is valid
  for (int64_t S : {1, 15, 64, 100, 256, 1000, 2048, 4096})
    for (auto [dt, dqk, dv] : {std::tuple{DType::BF16, 512, 512}, {DType::FP32, 512, 512}, {DType::BF16, 48, 80},
                               {DType::FP16, 112, 48}, {DType::FP32, 256, 512}, {DType::BF16, 128, 384}}) {
      const MlstmProblem p = problem(S, dqk, dv, dt);
      INFO("S = " << S);
      CHECK(check_fwd(par_fwd(p), p).empty());
      CHECK(check_bwd(par_bwd(p), p).empty());
      CHECK(ops::fwd_output_smem(par_fwd(p), p) <= 227 * 1024);
      CHECK(ops::bwd_parallel_smem(par_bwd(p), p) <= 227 * 1024);
    }
}

TEST_CASE("pinned parallel and chunk keys resolve over the matching default", "[parallel][config]") {
  const MlstmProblem p = problem(8192);
  const ops::FwdConfig par = fwd_resolve(p, {{"parallel", 1}});
  CHECK(par.parallel() == 1);
  CHECK(par.to_config() == par_fwd(p).to_config());
  CHECK(fwd_resolve(p, {{"parallel", 1}, {"siz_b_v", 128}}).siz_b_v == 128);
  const MlstmProblem s = problem(64);
  CHECK(fwd_resolve(s, {{"parallel", 0}}).to_config() == cw_fwd(s).to_config());
  CHECK(fwd_resolve(s, {{"chunk", 128}}).parallel() == 0);
  CHECK(bwd_resolve(s, {{"parallel", 0}}).to_config() == cw_bwd(s).to_config());
  CHECK(bwd_resolve(p, {{"parallel", 1}}).parallel() == 1);
  // a parallel config keeps the chunkwise keys of the fallback
  CHECK(par_fwd(s).chunk == cw_fwd(s).chunk);
  CHECK(par_bwd(s).chunk == cw_bwd(s).chunk);
  // the key round-trips
  ops::FwdConfig f;
  f.apply(par.to_config());
  CHECK(f.parallel() == 1);
  ops::BwdConfig b;
  b.apply(par_bwd(p).to_config());
  CHECK(b.parallel() == 1);
}

TEST_CASE("parallel config rules name the violated rule", "[parallel][config]") {
  const MlstmProblem p = problem(1000);
  ops::FwdConfig f = par_fwd(p);
  REQUIRE(check_fwd(f, p).empty());
  CHECK(invalid_argument([&] { f.apply({{"parallel", 2}}); }).find("must be 0 (chunkwise) or 1") != std::string::npos);
  CHECK(invalid_argument([&] { f.apply({{"chunk", int64_t{1} << 40}}); }).find("out of range") != std::string::npos);
  f = par_fwd(p);
  f.siz_b_q = 64;
  f.siz_b_kv = 128;
  f.warps_m = 2;
  CHECK(check_fwd(f, p).find("siz_b_kv must divide siz_b_q") != std::string::npos);
  // tiles need not divide the chunk in the parallel form
  f = par_fwd(p);
  f.chunk = 64;
  f.siz_b_q = 128;
  f.warps_m = 4;
  f.warps_n = 4;
  CHECK(check_fwd(f, p).empty());
  const MlstmProblem long_seq = problem(ops::parallel_max_seq() + 16);
  const std::string why = check_fwd(par_fwd(long_seq), long_seq);
  CHECK(why.find("S up to " + std::to_string(ops::parallel_max_seq())) != std::string::npos);
  CHECK(check_bwd(par_bwd(long_seq), long_seq).find("S up to") != std::string::npos);
  ops::BwdConfig b = par_bwd(p);
  b.siz_b_r = 64;
  b.siz_b_t = 128;
  CHECK(check_bwd(b, p).find("siz_b_t must divide siz_b_r") != std::string::npos);
  // the parallel default over a long sequence is never chosen, but pinning is refused clearly
  CHECK(invalid_argument([&] { (void)mlstm_forward_config(long_seq, {{"parallel", 1}}); }).find("S up to") !=
        std::string::npos);
  CHECK(invalid_argument([&] { (void)mlstm_backward_config(long_seq, {{"parallel", 1}}); }).find("S up to") !=
        std::string::npos);
}

TEST_CASE("parallel=1 pinned refuses states before any GPU work", "[parallel][api]") {
  const MlstmProblem p = problem(256, 64, 128);
  LaunchOptions o;
  o.config = {{"parallel", 1}};
  const float* f32 = static_cast<const float*>(fake_ptr(20));
  float* f32_out = static_cast<float*>(fake_ptr(21));
  ForwardTensors t = fwd_tensors();
  t.C0 = f32;
  CHECK(invalid_argument([&] { mlstm_forward(p, t, o); }).find("initial states") != std::string::npos);
  t = fwd_tensors();
  t.n_last = f32_out;
  CHECK(invalid_argument([&] { mlstm_forward(p, t, o); }).find("last states") != std::string::npos);
  t = fwd_tensors();
  t.saved = fake_ptr(22);
  t.saved_bytes = 1 << 20;
  CHECK(invalid_argument([&] { mlstm_forward(p, t, o); }).find("saved") != std::string::npos);
  BackwardTensors bt = bwd_tensors();
  bt.dC_last = f32;
  CHECK(invalid_argument([&] { mlstm_backward(p, bt, o); }).find("dC_last") != std::string::npos);
  bt = bwd_tensors();
  bt.dC0 = f32_out;
  CHECK(invalid_argument([&] { mlstm_backward(p, bt, o); }).find("dC0") != std::string::npos);
  bt = bwd_tensors();
  bt.C0 = f32;
  CHECK(invalid_argument([&] { mlstm_backward(p, bt, o); }).find("initial states") != std::string::npos);
  bt = bwd_tensors();
  bt.saved = fake_ptr(22);
  bt.saved_bytes = 1 << 20;
  CHECK(invalid_argument([&] { mlstm_backward(p, bt, o); }).find("saved") != std::string::npos);
}

TEST_CASE("the library's parallel choice falls back to the chunkwise default for states", "[parallel][api]") {
  const MlstmProblem p = problem(64, 64, 64);
  REQUIRE(fwd_default(p).parallel() == 1);
  ForwardTensors t = fwd_tensors();
  CHECK(sel_fwd(p, t, {}).parallel() == 1);
  t.C_last = static_cast<float*>(fake_ptr(20));
  CHECK(sel_fwd(p, t, {}).to_config() == cw_fwd(p).to_config());
  // keys pinned without the form still fall back; a pinned form never does
  CHECK(sel_fwd(p, t, {{"siz_b_v", 32}}).parallel() == 0);
  CHECK(sel_fwd(p, t, {{"parallel", 1}}).parallel() == 1);
  BackwardTensors bt = bwd_tensors();
  CHECK(sel_bwd(p, bt, {}).parallel() == 1);
  bt.dC0 = static_cast<float*>(fake_ptr(20));
  CHECK(sel_bwd(p, bt, {}).to_config() == cw_bwd(p).to_config());
}

TEST_CASE("workspace sizes: none pinned parallel, the fallback's when the library chooses", "[parallel][api]") {
  const MlstmProblem p = problem(128);
  REQUIRE(fwd_default(p).parallel() == 1);
  const Config mma{{"parallel", 1}, {"engine", 0}}, sm90{{"parallel", 1}, {"engine", 1}};
  CHECK(mlstm_forward_workspace_size(p, mma) == 0);
  CHECK(mlstm_forward_workspace_size(p) == mlstm_forward_workspace_size(p, {{"parallel", 0}}));
  CHECK(mlstm_forward_workspace_size(p) > 0);
  const size_t par = mlstm_backward_workspace_size(p, mma);
  // the mma.sync parallel backward's one buffer: fp32 partial dots (B*NH, S, 2, Dqk / siz_b_nqk)
  const ops::BwdConfig b = par_bwd(p);
  CHECK(par == static_cast<size_t>(p.B * p.NH * p.S * 2 * (p.Dqk / b.siz_b_nqk) * 4));
  // the sm90 engine's: the gate kernel's rows (three fp32 rows of its one chunk and two chunk
  // values per head), each region rounded to 256 bytes; the backward adds its partial dots, the
  // rows' reverse sums and the chunk totals
  auto r256 = [](int64_t x) { return static_cast<size_t>((x + 255) / 256 * 256); };
  const int64_t bh = p.B * p.NH, ch = ops::parallel_sm90_chunk(p);
  REQUIRE(ch == 128);
  const size_t gates = 3 * r256(bh * ch * 4) + 2 * r256(bh * 4);
  CHECK(mlstm_forward_workspace_size(p, sm90) == gates);
  ops::BwdConfig sb;
  sb.apply(mlstm_backward_config(p, sm90));
  CHECK(mlstm_backward_workspace_size(p, sm90) ==
        gates + r256(bh * ch * 2 * (p.Dqk / sb.siz_b_nqk) * 4) + r256(bh * ch * 4) + r256(bh * 4));
  CHECK(mlstm_backward_workspace_size(p) >= mlstm_backward_workspace_size(p, {{"parallel", 0}}));
  CHECK(mlstm_backward_workspace_size(p) >= par);
  // where the parallel backward is the default, its size covers the chunkwise one a call with
  // states (dC_last, initial states, a saved buffer) runs instead, on either engine's default
  int sm90_fallbacks = 0;
  for (int64_t B : {1, 2, 8})
    for (int64_t NH : {1, 4, 16})
      for (auto [dqk, dv] : {std::pair<int64_t, int64_t>{64, 64}, {128, 128}, {128, 256}, {128, 512}, {256, 512},
                             {256, 192}, {128, 320}})
        for (int64_t S : {1, 64, 200, 511}) {
          const MlstmProblem q = make_problem(B, NH, S, dqk, dv, DType::BF16);
          if (tfla::mlstm_backward_config(q).at("parallel") != 1) continue;
          INFO(B << " " << NH << " " << S << " " << dqk << "x" << dv);
          CHECK(mlstm_backward_workspace_size(q) >= mlstm_backward_workspace_size(q, {{"parallel", 0}}));
          CHECK(mlstm_backward_workspace_size(q) >= mlstm_backward_workspace_size(q, {{"parallel", 0}}, true));
          sm90_fallbacks += tfla::mlstm_backward_config(q, {{"parallel", 0}}).at("engine") == 1;
        }
  CHECK(sm90_fallbacks > 0);
}

// The size queries cover what the calls run with the same config: the forward without states
// (maybe the parallel form), with states (the chunkwise form where the library chose the
// parallel one, the caller's other pins kept) and beside a saved buffer; the backward likewise.
TEST_CASE("workspace queries cover every selection a call with the same config runs", "[parallel][api]") {
  int fallbacks = 0, packed_cases = 0;
  const std::vector<Config> configs = {{}, {{"engine", 0}}, {{"engine", 1}}, {{"chunk", 64}}, {{"chunk", 256}},
                                       {{"parallel", 0}}, {{"st_seg", 2}}};
  for (int64_t S : {1, 64, 200, 511, 3000})
    for (auto [dqk, dv] : {std::pair<int64_t, int64_t>{64, 64}, {128, 256}, {256, 512}, {64, 448}, {256, 192}})
      for (DType dt : {DType::BF16, DType::FP16, DType::FP32})
        for (int64_t seqs : {0, 3})  // a plain call, and 3 packed sequences of S tokens in all
          for (const Config& c : configs) {
            MlstmProblem p = make_problem(1, 2, S, dqk, dv, dt);
            if (seqs) {
              if (c.count("parallel") || c.count("st_seg")) continue;  // (keys a packed call pins itself)
              p.num_seqs = seqs;
              p.max_seqlen = S;
              ++packed_cases;
            }
            INFO("S " << S << " " << dqk << "x" << dv << " " << to_string(dt) << " seqs " << seqs << " "
                      << to_string(c));
            // what mlstm_forward and mlstm_backward select for this config (src/api.cpp)
            const MlstmProblem lp = ops::launch_problem(p);
            const bool packed = ops::is_packed(p);
            Config fs, bs, none_s;
            const Config& fpins = ops::packed_pins(p, c, ops::Op::Forward, fs);
            const Config& bpins = ops::packed_pins(p, c, ops::Op::Backward, bs);
            const Config none;
            const ops::FwdSelection& fp = ops::select_fwd(lp, fpins, false, packed);
            const ops::FwdSelection& fc = ops::select_fwd(lp, fpins, true, packed);
            if (fp.rejected.empty() && fc.rejected.empty()) {
              const size_t q = mlstm_forward_workspace_size(p, c);
              CHECK(q >= fp.plans[0].workspace_bytes);
              CHECK(q >= fc.plans[0].workspace_bytes);
              if (!fc.cfg.parallel()) {
                CHECK(mlstm_forward_workspace_size(p, c, true) == fc.plans[1].workspace_bytes);
                CHECK(mlstm_saved_size(p, c) == fc.plans[1].saved_bytes);  // what the forward checks
              }
              fallbacks += fp.cfg.parallel() && !fc.cfg.parallel();
            }
            const ops::BwdSelection& bp = ops::select_bwd(lp, bpins, false, packed);
            const ops::BwdSelection& bc = ops::select_bwd(lp, bpins, true, packed);
            if (bp.rejected.empty() && bc.rejected.empty()) {
              const size_t q = mlstm_backward_workspace_size(p, c);
              CHECK(q >= bp.plans[0].workspace_bytes);
              CHECK(q >= bc.plans[0].workspace_bytes);
              // the backward of a buffer a default forward filled (its chunk recorded with it)
              const ops::FwdSelection& fd =
                  ops::select_fwd(lp, ops::packed_pins(p, none, ops::Op::Forward, none_s), true, packed);
              const ops::BwdSelection& saved = ops::select_bwd_for_saved(
                  lp, bpins, ops::packed_pins(p, none, ops::Op::Forward, none_s), nullptr,
                  ops::saved_size(lp, fd.cfg.chunk), packed);
              if (saved.rejected.empty() && !saved.cfg.parallel())
                CHECK(mlstm_backward_workspace_size(p, c, true) == saved.plans[1].workspace_bytes);
            }
          }
  CHECK(fallbacks > 0);
  CHECK(packed_cases > 0);
}

TEST_CASE("the tuner's spaces hold parallel candidates for sequences it supports", "[parallel][tuner]") {
  for (tuner::Family fam : {tuner::Family::Forward, tuner::Family::Backward}) {
    const MlstmProblem p = problem(1024);
    const tuner::Enumerated e = tuner::enumerate(fam, p, tuner::SpaceLimits{}, 0);
    int parallel = 0, chunkwise = 0;
    for (const tuner::Candidate& c : e.kept) {
      (c.config.at("parallel") ? parallel : chunkwise)++;
      INFO(to_string(c.config));
      CHECK(c.reason.empty());
    }
    CHECK(parallel > 1);
    CHECK(chunkwise > 1);
    // the other form's default is among the first candidates
    const tuner::Enumerated head = tuner::enumerate(fam, p, tuner::SpaceLimits{}, 6);
    bool has_parallel = false, has_chunkwise = false;
    for (const tuner::Candidate& c : head.kept) {
      has_parallel = has_parallel || c.config.at("parallel") == 1;
      has_chunkwise = has_chunkwise || c.config.at("parallel") == 0;
    }
    CHECK(has_parallel);
    CHECK(has_chunkwise);
    // beyond the parallel form's limit: none
    const MlstmProblem lp = problem(ops::parallel_max_seq() * 2);
    for (const tuner::Candidate& c : tuner::enumerate(fam, lp, tuner::SpaceLimits{}, 0).kept)
      CHECK(c.config.at("parallel") == 0);
  }
}
