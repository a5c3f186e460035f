// Which engine a call gets, without a GPU: the sm90 families' serve rules and defaults, the
// resolution of pinned engine, form and chunk keys, stored configs that name their engine, and
// the tuner's sm90 candidates (all accepted by the family's own rule).
#include "tfla_catch.hpp"
#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "ops/bwd_config.hpp"
#include "ops/family.hpp"
#include "ops/fwd_config.hpp"
#include "ops/mlstm_backward.hpp"
#include "ops/mlstm_forward.hpp"
#include "ops/plan.hpp"
#include "tfla/mlstm_sm90_params.cuh"
#include "tuner/search_space.hpp"
#include "config_helpers.hpp"

using namespace tfla;
using namespace tfla::test;

namespace {

MlstmProblem problem(int64_t B, int64_t S, int64_t dqk, int64_t dv, DType dt = DType::BF16) {
  return make_problem(B, 8, S, dqk, dv, dt);
}

const ops::Family& resolved(ops::Op op, const MlstmProblem& p, const Config& pinned,
                            const ops::DeviceLimits& dev = ref()) {
  return *ops::resolve(op, p, dev, pinned).family;
}

}  // namespace

TEST_CASE("the sm90 forward serves 16-bit heads up to Dqk 256 on sm_90a, and is their default", "[engine]") {
  const MlstmProblem paper = problem(8, 8192, 256, 512);
  CHECK(ops::sm90_fwd_serves(paper, ref()).empty());
  CHECK(std::string(resolved(ops::Op::Forward, paper, {}).name()) == "fwd.chunkwise.sm90");
  CHECK(!ops::sm90_fwd_serves(problem(8, 8192, 256, 512, DType::FP32), ref()).empty());
  CHECK(!ops::sm90_fwd_serves(problem(8, 8192, 512, 512), ref()).empty());
  CHECK(!ops::sm90_fwd_serves(problem(8, 8192, 96, 160), ref()).empty());
  CHECK(std::string(resolved(ops::Op::Forward, problem(8, 8192, 512, 512), {}).name()) == "fwd.chunkwise.mma");
  ops::DeviceLimits ampere = ref();
  ampere.arch = "sm_80";
  ampere.cc_major = 8;
  CHECK(ops::sm90_fwd_serves(paper, ampere).find("sm_90a") != std::string::npos);
  CHECK(std::string(resolved(ops::Op::Forward, paper, {}, ampere).name()) == "fwd.chunkwise.mma");
  // short sequences run the engine's parallel form; where it does not serve, the mma.sync one
  CHECK(std::string(resolved(ops::Op::Forward, problem(2, 256, 256, 512), {}).name()) == "fwd.parallel.sm90");
  CHECK(std::string(resolved(ops::Op::Forward, problem(2, 256, 96, 160), {}).name()) == "fwd.parallel.mma");
  CHECK(std::string(resolved(ops::Op::Forward, problem(2, 256, 256, 512, DType::FP32), {}).name()) ==
        "fwd.parallel.mma");
}

TEST_CASE("the sm90 forward default: 128-row tiles, its state kernel wherever Dqk is 128 or 256", "[engine]") {
  const ops::FwdConfig c = fwd_default(problem(8, 8192, 256, 512));
  CHECK(c.engine == ops::Engine::Sm90);
  CHECK(c.chunk == 256);
  CHECK(c.siz_b_q == 128);
  CHECK(c.siz_b_kv == 64);
  CHECK(c.siz_b_v == 256);
  CHECK(c.st_sm90 == 1);  // 64 heads x 512 / 128 = 256 CTAs
  CHECK(c.st_siz_b_k == 256);
  CHECK(c.st_siz_b_v == 128);
  CHECK(check_fwd(c, problem(8, 8192, 256, 512)).empty());
  CHECK(c.st_seg == 1);
  // B = 1 at S = 65536: 8 heads x 512 / 128 = 32 walks would leave SMs idle, so the sequence is
  // split: 4 segments of 64 chunks, 128 CTAs in one wave
  const ops::FwdConfig l = fwd_default(problem(1, 65536, 256, 512));
  CHECK(l.engine == ops::Engine::Sm90);
  CHECK(l.st_sm90 == 1);
  CHECK(l.st_siz_b_v == 128);
  CHECK(l.st_seg == 4);
  CHECK(check_fwd(l, problem(1, 65536, 256, 512)).empty());
  // too short to split (fewer than 8 chunks per segment): 64-column walks instead
  const ops::FwdConfig m = fwd_default(problem(1, 2048, 256, 512));
  CHECK(m.st_seg == 1);
  CHECK(m.st_siz_b_v == 64);
  // Dqk 64: the output kernel on the engine, the state kernel on mma.sync
  const ops::FwdConfig s = fwd_default(problem(64, 1024, 64, 64));
  CHECK(s.engine == ops::Engine::Sm90);
  CHECK(s.st_sm90 == 0);
  // one chunk length at every S (short sequences run only their own query tiles)
  CHECK(ops::sm90_fwd_config(problem(8, 100, 64, 64), ref()).chunk == 256);
  CHECK(ops::sm90_fwd_config(problem(8, 8192, 64, 64), ref()).chunk == 256);
}

TEST_CASE("the fused forward: bf16 where its walks fill their waves; its workspace the gate kernel's", "[engine][fused]") {
  // walks = B * NH * Dv / 128 against the reference device's 132 SMs
  CHECK(fwd_default(problem(8, 8192, 256, 512)).fused == 1);   // 256 walks: two waves, 97% full
  CHECK(fwd_default(problem(4, 8192, 256, 512)).fused == 1);   // 128: one wave, 97%
  CHECK(fwd_default(problem(16, 2048, 256, 512)).fused == 1);  // 512
  CHECK(fwd_default(problem(2, 8192, 256, 512)).fused == 1);   // 64: half a wave, split in 2 (below)
  CHECK(fwd_default(problem(5, 8192, 256, 512)).fused == 0);   // 160: a second wave 21% full
  // few walks: the fused walk split into one wave of segments of 32 chunks or more
  CHECK(fwd_default(problem(1, 65536, 256, 512)).fused == 1);  // 32 walks x 4 segments of 256 chunks
  CHECK(fwd_default(problem(1, 65536, 256, 512)).st_seg == 4);
  CHECK(fwd_default(problem(2, 32768, 256, 512)).fused == 1);  // 64 walks x 2 x 256 chunks
  CHECK(fwd_default(problem(1, 8192, 256, 512)).fused == 1);   // 4 x 32 chunks
  CHECK(fwd_default(problem(1, 4096, 256, 512)).fused == 0);   // 32 walks x 2: a wave half full
  CHECK(fwd_default(problem(1, 4096, 256, 512)).st_seg == 2);
  CHECK(fwd_default(problem(1, 65536, 256, 512, DType::FP16)).fused == 0);
  CHECK(fwd_default(problem(1, 65536, 64, 128)).fused == 0);   // no summary walk at Dqk 64
  CHECK(fwd_default(make_problem(8, 16, 8192, 128, 256, DType::BF16)).fused == 1);  // the seed's heads
  CHECK(fwd_default(problem(8, 8192, 256, 512, DType::FP16)).fused == 0);           // bf16 only
  CHECK(fwd_default(problem(8, 8192, 96, 160)).fused == 0);    // not served (mma.sync)
  CHECK(fwd_default(problem(64, 8192, 256, 192)).fused == 0);  // Dv not a multiple of 128
  CHECK(!ops::check_fwd_fused_sm90(problem(8, 8192, 192, 512), ref()).empty());
  ops::DeviceLimits ampere = ref();
  ampere.arch = "sm_80";
  CHECK(!ops::check_fwd_fused_sm90(problem(8, 8192, 256, 512), ampere).empty());

  const MlstmProblem p = problem(8, 8192, 256, 512);
  const ops::FwdConfig f = fwd_default(p);
  CHECK(check_fwd(f, p).empty());
  // its workspace is the gate kernel's at chunk 64; with a saved buffer the gate kernel runs at
  // the config's chunk into the buffer and the walk fills the rest of the saved layout: the same
  // size as the three kernels', no workspace
  const size_t gates = static_cast<size_t>(p.B * p.NH) * p.S * 3 * 4 + static_cast<size_t>(p.B * p.NH) * (p.S / 64) * 2 * 4;
  CHECK(mlstm_forward_workspace_size(p) == gates);
  ops::FwdConfig u = f;
  u.fused = 0;
  CHECK(mlstm_saved_size(p) == ops::saved_size(p, u.chunk));
  CHECK(mlstm_forward_workspace_size(p, {}, true) == 0);
  {
    const ops::Plan sv = ops::fwd_plan(p, f, ref(), true);
    CHECK(sv.saved_bytes == ops::saved_size(p, f.chunk));
    CHECK(sv.workspace_bytes == 0);
    CHECK(sv.nc == p.S / f.chunk);
    REQUIRE(sv.count == 2);
    CHECK(sv.launches[0].kernel == 2);  // the gate kernel at the config's chunk
    CHECK(sv.launches[1].kernel == 1);
    CHECK(sv.launches[1].block == ops::Block::FwdFusedSm90);
    CHECK(sv.launches[1].tile == f.chunk);
    for (ops::Region r : {ops::Region::GateB, ops::Region::ChunkM, ops::Region::StatesC, ops::Region::StatesN,
                          ops::Region::CLast})
      CHECK(sv[r].buffer == ops::Buffer::Saved);
    CHECK(sv[ops::Region::StatesC].offset == ops::fwd_plan(p, u, ref(), true)[ops::Region::StatesC].offset);
  }
  // the kernels: the gate kernel at chunk 64, the walk, the gate kernel at the config's chunk
  const auto ks = ops::fwd_kernels(p, f, ref());
  REQUIRE(ks.size() == 3);
  CHECK(ks[0].key.find("mlstm_fwd_gates<64,") == 0);
  CHECK(ks[1].key.find("mlstm_fwd_fused_sm90<") == 0);
  CHECK(ks[2].key.find("mlstm_fwd_gates<" + std::to_string(f.chunk) + ",") == 0);
  CHECK(ks[2].key == ops::fwd_kernels(p, u, ref())[0].key);  // the three kernels' own
  // from S = 1024 it beats the engine's parallel form, the default up to 512; the mma.sync parallel
  // form stays the default from S = 256 only where neither serves
  CHECK(std::string(resolved(ops::Op::Forward, problem(64, 1024, 256, 512), {}).name()) == "fwd.chunkwise.sm90");
  CHECK(fwd_default(problem(64, 1024, 256, 512)).fused == 1);
  CHECK(std::string(resolved(ops::Op::Forward, problem(256, 256, 256, 512), {}).name()) == "fwd.parallel.sm90");
  CHECK(std::string(resolved(ops::Op::Forward, problem(256, 128, 256, 512), {}).name()) == "fwd.parallel.sm90");
  CHECK(std::string(resolved(ops::Op::Forward, problem(2, 512, 256, 512), {}).name()) == "fwd.parallel.sm90");
  CHECK(std::string(resolved(ops::Op::Forward, problem(256, 512, 256, 512, DType::FP16), {}).name()) ==
        "fwd.parallel.sm90");
  CHECK(std::string(resolved(ops::Op::Forward, problem(256, 1024, 256, 512), {{"parallel", 1}}).name()) ==
        "fwd.parallel.sm90");
  CHECK(std::string(resolved(ops::Op::Forward, problem(64, 2048, 256, 512), {{"parallel", 1}}).name()) ==
        "fwd.parallel.mma");
  // the tuner times the fused forward once per chunk length (the chunk a call with a saved buffer
  // runs), whatever the other axes chose, beside the three kernels; with few heads on a long
  // sequence once per split of its walk (st_seg 1, 2, 4, 8)
  for (const MlstmProblem& q : {p, problem(1, 8192, 256, 512)}) {
    const tuner::Enumerated e = tuner::enumerate(tuner::Family::Forward, q, tuner::SpaceLimits{}, 0);
    std::map<int64_t, int> fused;
    int unfused = 0;
    for (const auto* list : {&e.kept, &e.pruned})
      for (const tuner::Candidate& c : *list)
        if (c.config.count("fused") && c.config.at("parallel") == 0 && c.config.at("engine") == 1) {
          if (c.config.at("fused")) ++fused[c.config.at("chunk")];
          else ++unfused;
        }
    INFO("B = " << q.B);
    CHECK(!fused.empty());
    const bool split = q.B * q.NH <= 32 && q.S >= 8192;
    // (the defaults of the other chunk lengths head the list: fused too where the default is)
    for (const auto& [chunk, n] : fused) CHECK(n == (split && chunk == fwd_default(q).chunk ? 4 : 1));
    CHECK(unfused > 10);
  }
  // fused=1 on the mma.sync engine is refused by name
  ops::FwdConfig m = ops::chunkwise_fwd_config(p, ref());
  m.fused = 1;
  CHECK(check_fwd(m, p).find("fused=1") != std::string::npos);
  // the fused walk's split: its summary walk needs Dqk 128 or 256, so at Dqk 64 it runs whole
  const MlstmProblem p64 = problem(1, 8192, 64, 128);
  const ops::FwdConfig f64 = fwd_resolve(p64, {{"engine", 1}, {"fused", 1}, {"st_seg", 4}});
  CHECK(check_fwd(f64, p64).empty());
  CHECK(ops::fused_segments(p64, ref(), 4).nseg == 1);
  CHECK(ops::fwd_plan(p64, f64, ref(), false).count == 2);
  CHECK(ops::fwd_kernels(p64, f64, ref()).size() == 3);
  // its kernels follow from the config and the head sizes, not S (the loaded kernels are keyed
  // so): a short sequence that does not split loads the same list as a long one that does
  {
    const MlstmProblem shrt = problem(1, 256, 256, 512), lng = problem(1, 8192, 256, 512);
    const ops::FwdConfig fs = fwd_resolve(lng, {{"engine", 1}, {"fused", 1}, {"st_seg", 4}});
    CHECK(ops::fused_segments(shrt, ref(), 4).nseg == 1);
    CHECK(ops::fused_segments(lng, ref(), 4).nseg == 4);
    const auto a = ops::fwd_kernels(shrt, fs, ref()), b = ops::fwd_kernels(lng, fs, ref());
    REQUIRE(a.size() == 6);
    REQUIRE(b.size() == 6);
    for (size_t i = 0; i < a.size(); ++i) CHECK(a[i].key == b[i].key);
    CHECK(ops::fwd_plan(shrt, fs, ref(), false).count == 2);
    CHECK(ops::fwd_plan(lng, fs, ref(), false).count == 4);
    // with a saved buffer: the gate kernel at the config's chunk into the buffer, the summary
    // walk at that chunk (kernel 5, storing no chunk states), the fold and the split walk, with
    // only the segments' states in the workspace
    CHECK(ops::fwd_plan(shrt, fs, ref(), true).count == 2);
    CHECK(ops::fwd_plan(shrt, fs, ref(), true).saved_bytes == ops::saved_size(shrt, fs.chunk));
    const ops::Plan ls = ops::fwd_plan(lng, fs, ref(), true);
    REQUIRE(ls.count == 4);
    CHECK(ls.launches[0].kernel == 2);
    CHECK(ls.launches[1].kernel == 5);
    CHECK(ls.launches[1].block == ops::Block::FwdWalkSm90);
    CHECK(ls.launches[1].mode == ops::kWalkSummary);
    CHECK(ls.launches[2].kernel == 4);
    CHECK(ls.launches[3].kernel == 1);
    CHECK(ls.launches[3].tile == fs.chunk);
    CHECK(ls.saved_bytes == ops::saved_size(lng, fs.chunk));
    const ops::SegmentPlan s64 = ops::fused_segments(lng, ref(), fs.st_seg, fs.chunk);
    REQUIRE(s64.nseg > 1);
    CHECK(ls.launches[3].grid.z == static_cast<unsigned>(s64.nseg));
    CHECK(ls.walk.nseg == s64.nseg);
    CHECK(ls.walk.seg_chunks * fs.chunk == s64.seg_chunks * 64);  // the buffer's chunks
    CHECK(ls[ops::Region::SegC].buffer == ops::Buffer::Workspace);
    CHECK(ls[ops::Region::ChunkM].buffer == ops::Buffer::Saved);
    CHECK(ls[ops::Region::GateB].buffer == ops::Buffer::Saved);
    CHECK(mlstm_forward_workspace_size(lng, {{"engine", 1}, {"fused", 1}, {"st_seg", 4}}, true) == ls.workspace_bytes);
    CHECK(ls.workspace_bytes > 0);
  }
  // its segments are whole multiples of 4 chunks (the walk's ring phases follow the chunk index)
  // and, for a walk that fills a saved buffer, of the buffer's chunks
  for (int gate_chunk : {64, 128, 256, 512})
    for (int want : {2, 3, 4, 7, 8, 64})
      for (int64_t nc : {1, 5, 16, 47, 1024}) {
        const ops::SegmentPlan s =
            ops::fused_segments(problem(1, nc * 64 - 7, 256, 512), ref(), want, gate_chunk);
        INFO(want << " segments of " << nc << " chunks, gate chunk " << gate_chunk);
        if (s.nseg <= 1) continue;
        CHECK(s.seg_chunks % 4 == 0);
        CHECK(s.seg_chunks % (gate_chunk / 64) == 0);
        CHECK(int64_t{s.nseg - 1} * s.seg_chunks < nc);
        CHECK(int64_t{s.nseg} * s.seg_chunks >= nc);
        CHECK(s.nseg <= want);
      }
}

TEST_CASE("the fused walk in 256-column CTAs: Dqk <= 128, the default where it saves a wave of walks",
          "[engine][fused]") {
  const MlstmProblem seed = make_problem(8, 16, 8192, 128, 256, DType::BF16);  // 256 walks of 128 columns
  // served at Dqk 64 and 128 with Dv a multiple of 256, refused by name elsewhere
  CHECK(ops::check_fwd_fused_sm90(seed, ref(), 256).empty());
  CHECK(ops::check_fwd_fused_sm90(problem(8, 8192, 64, 512), ref(), 256).empty());
  CHECK(ops::check_fwd_fused_sm90(problem(8, 8192, 256, 512), ref(), 256).find("fused_bv=256") != std::string::npos);
  CHECK(ops::check_fwd_fused_sm90(problem(8, 8192, 128, 384), ref(), 256).find("fused_bv=256") != std::string::npos);
  CHECK(!ops::check_fwd_fused_sm90(seed, ref(), 192).empty());
  ops::FwdConfig bad = fwd_default(seed);
  bad.fused_bv = 192;
  CHECK(check_fwd(bad, seed).find("fused_bv") != std::string::npos);
  ops::FwdConfig mma = ops::chunkwise_fwd_config(seed, ref());  // the mma.sync engine names it too
  mma.fused_bv = 192;
  CHECK(check_fwd(mma, seed).find("fused_bv") != std::string::npos);
  bad.fused_bv = 256;
  CHECK(check_fwd(bad, problem(8, 8192, 256, 512)).find("fused_bv=256") != std::string::npos);
  CHECK(ops::acceptance(ops::Op::Forward, problem(8, 8192, 256, 512), ref(),
                        {{"engine", 1}, {"fused", 1}, {"fused_bv", 256}})
            .find("fused_bv=256") != std::string::npos);
  CHECK_THROWS_AS(fwd_resolve(seed, {{"fused_bv", 512}}), Error);  // out of the key's range
  // the default: 256 columns where the 128-column walks take more than 1.75x the waves of the
  // 256-column ones (measured in fwd_config.cpp); 128 at one wave either way and at Dqk 256
  CHECK(fwd_default(seed).fused_bv == 256);                                               // 2 waves -> 1
  CHECK(fwd_default(make_problem(16, 16, 8192, 128, 256, DType::BF16)).fused_bv == 256);  // 4 -> 2
  CHECK(fwd_default(make_problem(4, 16, 8192, 128, 256, DType::BF16)).fused_bv == 128);   // 1 -> 1
  CHECK(fwd_default(make_problem(12, 16, 8192, 128, 256, DType::BF16)).fused_bv == 128);  // 3 -> 2
  CHECK(fwd_default(problem(8, 8192, 256, 512)).fused_bv == 128);
  CHECK(fwd_default(problem(1, 65536, 128, 256)).fused_bv == 128);  // split: 128-column segments
  // the plan's grid, the kernel's key and shared memory follow the config
  const ops::FwdConfig w = fwd_default(seed);
  REQUIRE(w.fused == 1);
  const ops::Plan plan = ops::fwd_plan(seed, w, ref(), false);
  REQUIRE(plan.count == 2);
  CHECK(plan.launches[1].block == ops::Block::FwdFusedSm90);
  CHECK(plan.launches[1].grid.x == 1);
  CHECK(plan.launches[1].grid.y == 128);
  const auto ks = ops::fwd_kernels(seed, w, ref());
  CHECK(ks[1].key == ops::fwd_fused_sm90_kernel(seed, 256).key);
  CHECK(ks[1].key != ops::fwd_fused_sm90_kernel(seed, 128).key);
  CHECK(ks[1].smem_bytes == tfla::fwd_fused_sm90_smem_bytes(128, 256));
  CHECK(tfla::fwd_fused_sm90_smem_bytes(128, 256) <= ref().smem_optin_bytes);
  ops::FwdConfig narrow = w;
  narrow.fused_bv = 128;
  CHECK(ops::fwd_plan(seed, narrow, ref(), false).launches[1].grid.x == 2);
  // the tuner times both widths where the wide walk serves
  const tuner::Enumerated e = tuner::enumerate(tuner::Family::Forward, seed, tuner::SpaceLimits{}, 0);
  std::map<int64_t, int> widths;
  for (const auto* list : {&e.kept, &e.pruned})
    for (const tuner::Candidate& c : *list)
      if (c.config.count("fused") && c.config.at("parallel") == 0 && c.config.at("fused") == 1)
        ++widths[c.config.at("fused_bv")];
  CHECK(widths[128] > 0);
  CHECK(widths[256] > 0);
  CHECK(widths.size() == 2);
}

TEST_CASE("pinned keys: a chunk the sm90 engine refuses goes to mma.sync unless the engine is pinned", "[engine]") {
  const MlstmProblem p = problem(8, 8192, 256, 512);
  CHECK(fwd_resolve(p, {{"chunk", 64}}).engine == ops::Engine::MmaSync);
  CHECK(fwd_resolve(p, {{"chunk", 256}}).engine == ops::Engine::Sm90);
  CHECK(fwd_resolve(p, {{"engine", 0}}).engine == ops::Engine::MmaSync);
  // the state walk pinned to mma.sync alone takes that kernel's default tiles
  const ops::FwdConfig ms = fwd_resolve(p, {{"engine", 1}, {"fused", 0}, {"st_sm90", 0}});
  const ops::FwdConfig mma = ops::chunkwise_fwd_config(p, ref(), ms.chunk);
  CHECK(ms.st_siz_b_k == mma.st_siz_b_k);
  CHECK(ms.st_siz_b_v == mma.st_siz_b_v);
  CHECK(ms.st_warps_n == mma.st_warps_n);
  CHECK(fwd_resolve(p, {{"engine", 1}, {"st_sm90", 0}, {"st_siz_b_k", 64}}).st_siz_b_k == 64);
  // pinned to sm90 with a chunk it refuses: resolved as asked, refused by name
  const ops::FwdConfig bad = fwd_resolve(p, {{"engine", 1}, {"chunk", 64}});
  CHECK(bad.engine == ops::Engine::Sm90);
  CHECK(check_fwd(bad, p).find("chunk must be a multiple of 128") != std::string::npos);
  // the sm90 state kernel's keys are the sm90 family's
  CHECK(ops::acceptance(ops::Op::Forward, p, ref(), {{"engine", 0}, {"st_sm90", 1}}).find("sm90 engine") !=
        std::string::npos);
  CHECK(ops::acceptance(ops::Op::Forward, p, ref(), {{"engine", 1}, {"st_sm90", 1}, {"st_siz_b_k", 128}})
            .find("st_siz_b_k must be Dqk") != std::string::npos);
}

TEST_CASE("the sm90 backward is the default for Dv >= 256 or with its dK/dV kernel, else runs when pinned or tuned",
          "[engine]") {
  const MlstmProblem p = problem(8, 8192, 256, 512);
  CHECK(ops::sm90_bwd_serves(p, ref()).empty());
  CHECK(std::string(resolved(ops::Op::Backward, p, {}).name()) == "bwd.chunkwise.sm90");
  CHECK(std::string(resolved(ops::Op::Backward, p, {{"parallel", 0}}).name()) == "bwd.chunkwise.sm90");
  CHECK(std::string(resolved(ops::Op::Backward, p, {{"engine", 0}}).name()) == "bwd.chunkwise.mma");
  const MlstmProblem headline = problem(8, 8192, 128, 256);
  CHECK(std::string(resolved(ops::Op::Backward, headline, {}).name()) == "bwd.chunkwise.sm90");
  CHECK(std::string(resolved(ops::Op::Backward, headline, {{"engine", 0}}).name()) == "bwd.chunkwise.mma");
  const MlstmProblem narrow = problem(8, 8192, 128, 192);  // Dv < 256 and no dK/dV kernel (Dv 192)
  CHECK(std::string(resolved(ops::Op::Backward, narrow, {}).name()) == "bwd.chunkwise.mma");
  CHECK(std::string(resolved(ops::Op::Backward, narrow, {{"engine", 1}}).name()) == "bwd.chunkwise.sm90");
  CHECK(std::string(resolved(ops::Op::Backward, problem(8, 8192, 128, 128), {}).name()) == "bwd.chunkwise.sm90");
  ops::DeviceLimits ampere = ref();
  ampere.arch = "sm_80";
  ampere.cc_major = 8;
  CHECK(std::string(resolved(ops::Op::Backward, p, {}, ampere).name()) == "bwd.chunkwise.mma");
  // a pinned chunk the engine's tiles refuse: the mma.sync family, unless the engine is pinned
  CHECK(std::string(resolved(ops::Op::Backward, p, {{"chunk", 64}}).name()) == "bwd.chunkwise.mma");
  const ops::BwdConfig s = bwd_resolve(p, {{"engine", 1}});
  CHECK(s.engine == ops::Engine::Sm90);
  CHECK(s.st_sm90 == 1);  // as the forward's default
  CHECK(s.st_siz_b_k == 256);
  CHECK(s.ds_sm90 == 1);  // the dC walk too, in the same tiles
  CHECK(s.ds_siz_b_k == 256);
  CHECK(s.ds_siz_b_v == 128);
  CHECK(s.tl_sm90 == 1);
  CHECK(s.siz_b_r == 128);
  CHECK(s.siz_b_t == 64);
  CHECK(s.siz_b_nqk == 256);
  CHECK(s.siz_b_nv == 256);
  CHECK(check_bwd(s, p).empty());
  // one long sequence: the recompute's state walk split as the forward's, the engine's tiles
  const MlstmProblem one = problem(1, 65536, 256, 512);
  const ops::BwdConfig l = bwd_resolve(one, {{"engine", 1}});
  CHECK(l.st_sm90 == 1);
  CHECK(l.st_siz_b_v == 128);
  CHECK(l.st_seg == 4);
  // the dC walk likewise: 8 heads x 4 column tiles x 4 segments = 128 CTAs, one wave
  CHECK(l.ds_sm90 == 1);
  CHECK(l.ds_siz_b_k == 256);
  CHECK(l.ds_siz_b_v == 128);
  CHECK(l.ds_seg == 4);
  CHECK(l.tl_sm90 == 1);
  CHECK(check_bwd(l, one).empty());
  // a walk pinned to mma.sync alone takes that kernel's default tiles (not the sm90 walk's whole
  // Dqk rows) and, for dC, its split; a tile or split pinned with it stays
  const ops::BwdConfig m = bwd_resolve(one, {{"engine", 1}, {"ds_sm90", 0}});
  const ops::BwdConfig mma = ops::chunkwise_bwd_config(one, ref(), m.chunk);
  CHECK(m.ds_sm90 == 0);
  CHECK(m.ds_siz_b_k == mma.ds_siz_b_k);
  CHECK(m.ds_siz_b_v == mma.ds_siz_b_v);
  CHECK(m.ds_warps_m == mma.ds_warps_m);
  CHECK(m.ds_seg == mma.ds_seg);
  CHECK(bwd_resolve(one, {{"engine", 1}, {"ds_sm90", 0}, {"ds_seg", 2}}).ds_seg == 2);
  CHECK(m.st_sm90 == 1);
  CHECK(m.st_siz_b_k == 256);
  CHECK(check_bwd(m, one).empty());
  CHECK(bwd_resolve(one, {{"engine", 1}, {"ds_sm90", 0}, {"ds_siz_b_v", 64}}).ds_siz_b_v == 64);
  const MlstmProblem odd = problem(1, 65536, 256, 320);
  const ops::BwdConfig o = bwd_resolve(odd, {{"engine", 1}});
  CHECK(o.ds_sm90 == 0);
  CHECK(o.ds_seg == ops::chunkwise_bwd_config(odd, ref(), o.chunk).ds_seg);
  CHECK(o.ds_seg > 1);
  CHECK(bwd_resolve(problem(8, 8192, 256, 320), {{"engine", 1}}).ds_sm90 == 1);
  const ops::BwdConfig pst = bwd_resolve(p, {{"engine", 1}, {"st_sm90", 0}});
  CHECK(pst.st_siz_b_k == ops::chunkwise_bwd_config(p, ref(), pst.chunk).st_siz_b_k);
  CHECK(pst.ds_sm90 == 1);
  CHECK(check_bwd(pst, p).empty());
  // a pinned chunk the engine refuses (not a multiple of 128) is named; a head wider than 512
  // keeps the mma.sync tiles
  CHECK(ops::acceptance(ops::Op::Backward, p, ref(), {{"engine", 1}, {"chunk", 64}}).find("multiple of 128") !=
        std::string::npos);
  const MlstmProblem wide = problem(8, 8192, 256, 640);
  const ops::BwdConfig w = bwd_resolve(wide, {{"engine", 1}});
  CHECK(w.tl_sm90 == 0);
  CHECK(check_bwd(w, wide).empty());
  // dK and dV in one kernel where its ring holds three slots: the seed's heads (128 x 256), and
  // there by default (no engine pinned); not at 256 x 256 (two slots) nor where Dv = 512
  CHECK(s.tl_dkv == 0);
  const MlstmProblem seed_heads = problem(8, 8192, 128, 256);
  const ops::BwdConfig h = bwd_resolve(seed_heads, {});
  CHECK(h.engine == ops::Engine::Sm90);
  CHECK(h.tl_sm90 == 1);
  CHECK(h.tl_dkv == 1);
  CHECK(check_bwd(h, seed_heads).empty());
  CHECK(bwd_resolve(problem(8, 8192, 256, 256), {}).tl_dkv == 0);
  // narrower values: the engine with the kernel is the default (it beat the mma.sync family)
  const MlstmProblem thin = problem(8, 8192, 128, 128);
  const ops::BwdConfig n = bwd_resolve(thin, {});
  CHECK(n.engine == ops::Engine::Sm90);
  CHECK(n.tl_dkv == 1);
  CHECK(check_bwd(n, thin).empty());
  // its rule names what it refuses
  CHECK(ops::acceptance(ops::Op::Backward, p, ref(), {{"engine", 1}, {"tl_dkv", 1}}).find("Dqk and Dv of 64, 128 or 256") !=
        std::string::npos);
  CHECK(ops::acceptance(ops::Op::Backward, seed_heads, ref(), {{"engine", 1}, {"tl_sm90", 0}, {"tl_dkv", 1}})
            .find("tl_sm90=1") != std::string::npos);
  CHECK(ops::acceptance(ops::Op::Backward, seed_heads, ref(), {{"engine", 0}, {"tl_dkv", 1}}).find("engine=1") !=
        std::string::npos);
  // the tiles' rule names what it refuses
  CHECK(ops::acceptance(ops::Op::Backward, p, ref(), {{"engine", 1}, {"siz_b_r", 64}}).find("siz_b_r must be 128") !=
        std::string::npos);
  CHECK(ops::acceptance(ops::Op::Backward, p, ref(), {{"engine", 1}, {"siz_b_nqk", 32}}).find("siz_b_nqk") !=
        std::string::npos);
  CHECK(ops::acceptance(ops::Op::Backward, p, ref(), {{"engine", 0}, {"tl_sm90", 1}}).find("engine=1") !=
        std::string::npos);
  // Dqk 64 is not served: the sm90 backward's rule names why
  const MlstmProblem small = problem(8, 8192, 64, 64);
  CHECK(!ops::sm90_bwd_serves(small, ref()).empty());
  CHECK(ops::acceptance(ops::Op::Backward, small, ref(), {{"engine", 1}}).find("Dqk 128 or 256") != std::string::npos);
}

TEST_CASE("configs name their engine, so a stored config runs on the engine it was tuned on", "[engine]") {
  const MlstmProblem p = problem(8, 8192, 256, 512);
  const Config mma = ops::chunkwise_fwd_config(p, ref()).to_config();
  REQUIRE(mma.count("engine"));
  CHECK(mma.at("engine") == 0);
  CHECK(fwd_resolve(p, mma).engine == ops::Engine::MmaSync);
  // a config tuned for the mma.sync engine that the sm90 rule would also accept stays on mma.sync
  Config shared = mma;
  shared["siz_b_q"] = 128;
  shared["siz_b_v"] = 256;
  CHECK(fwd_resolve(p, shared).engine == ops::Engine::MmaSync);
  const Config bwd = ops::chunkwise_bwd_config(p, ref()).to_config();
  REQUIRE(bwd.count("engine"));
  CHECK(bwd.at("engine") == 0);
}

TEST_CASE("the tuner's sm90 candidates are accepted by their family's rule", "[engine][tuner]") {
  for (ops::Op op : {ops::Op::Forward, ops::Op::Backward}) {
    const MlstmProblem p = problem(8, 8192, 256, 512);
    const tuner::Enumerated e = tuner::enumerate(op, p, tuner::SpaceLimits{}, 0);
    int sm90 = 0;
    for (const tuner::Candidate& c : e.kept) {
      INFO(to_string(c.config));
      if (c.config.count("engine") && c.config.at("engine") == 1) ++sm90;
      CHECK(ops::acceptance(op, p, ref(), c.config).empty());
    }
    CHECK(sm90 > 0);
  }
}

TEST_CASE("the state walk's sequence split: whole chunks per segment, none empty, within the grid", "[engine]") {
  // want, chunks, heads -> segments x chunks per segment
  const auto plan = [](int want, int64_t nc, int64_t bh) {
    const ops::SegmentPlan s = ops::state_segments(want, nc, bh);
    return std::pair<int, int>{s.nseg, s.seg_chunks};
  };
  CHECK(plan(1, 256, 8) == std::pair<int, int>{1, 0});
  CHECK(plan(4, 256, 8) == std::pair<int, int>{4, 64});
  CHECK(plan(3, 10, 8) == std::pair<int, int>{3, 4});   // 4 + 4 + 2
  CHECK(plan(4, 5, 8) == std::pair<int, int>{3, 2});    // 2 + 2 + 1: never an empty segment
  CHECK(plan(8, 3, 1) == std::pair<int, int>{3, 1});    // at most one segment per chunk
  CHECK(plan(8, 1, 1) == std::pair<int, int>{1, 0});
  CHECK(plan(64, 4096, 4096) == std::pair<int, int>{15, 274});  // heads x segments <= 65535
  for (int want = 1; want <= 40; ++want)
    for (int64_t nc = 1; nc <= 70; ++nc) {
      const ops::SegmentPlan s = ops::state_segments(want, nc, 2);
      REQUIRE(s.nseg >= 1);
      if (s.nseg == 1) continue;
      CHECK(s.nseg <= want);
      CHECK(int64_t{s.nseg - 1} * s.seg_chunks < nc);  // the last segment has a chunk
      CHECK(int64_t{s.nseg} * s.seg_chunks >= nc);     // every chunk is in a segment
    }
  // the default fills one wave: 32 walks on 132 SMs (one CTA each) -> 4 segments; 64 -> 2;
  // 128 walks fill half the SMs or more -> no split
  const ops::DeviceLimits& dev = ref();
  CHECK(ops::default_state_segments(problem(1, 65536, 256, 512), dev, 256, 32, 1) == 4);
  CHECK(ops::default_state_segments(problem(2, 32768, 256, 512), dev, 256, 64, 1) == 2);
  CHECK(ops::default_state_segments(problem(4, 16384, 256, 512), dev, 256, 128, 1) == 1);
  CHECK(ops::default_state_segments(problem(1, 65536, 256, 512), dev, 256, 64, 2) == 4);
}

TEST_CASE("the fused split's summary walks its segments in pieces where that ends it sooner", "[engine][fused]") {
  const ops::DeviceLimits& dev = ref();
  // B = 1, S = 65536, paper heads: 4 segments, 96 summary walks of 256 chunks of 64 on 132 SMs;
  // 4 pieces are 384 walks of 64 chunks in 3 waves (192 < 256; 2 pieces: 2 waves of 128, 8: 6 of 32)
  const MlstmProblem paper = problem(1, 65536, 256, 512);
  const ops::SegmentPlan s = ops::fused_segments(paper, dev, 4);
  REQUIRE(s.nseg == 4);
  REQUIRE(s.seg_chunks == 256);
  CHECK(ops::summary_pieces(paper, dev, s, 64) == 4);
  ops::SegmentPlan s256 = ops::fused_segments(paper, dev, 4, 256);  // filling a saved buffer at chunk 256
  s256.seg_chunks /= 4;
  CHECK(ops::summary_pieces(paper, dev, s256, 256) == 4);
  MlstmProblem seed = make_problem(1, 16, 65536, 128, 256);  // the seed's heads: 2 x 16 x 3 walks too
  CHECK(ops::summary_pieces(seed, dev, ops::fused_segments(seed, dev, 4), 64) == 4);
  // whole segments where pieces end no sooner, pieces never under 1024 tokens, no split: 1
  const MlstmProblem mid = problem(1, 8192, 256, 512);  // segments of 32 chunks: 2 pieces, 2 waves
  CHECK(ops::summary_pieces(mid, dev, ops::fused_segments(mid, dev, 4), 64) == 1);
  const MlstmProblem few = make_problem(1, 1, 8192, 128, 128);  // 1 walk a segment: pieces of 1024
  CHECK(ops::summary_pieces(few, dev, ops::fused_segments(few, dev, 2), 64) == 4);
  CHECK(ops::summary_pieces(paper, dev, ops::SegmentPlan{}, 64) == 1);
  {  // the GPU split case filling a saved buffer at chunk 256 (test_ops.cpp): 72 + 69 chunks of 64
    const MlstmProblem sv = make_problem(1, 2, 9000, 128, 256);
    ops::SegmentPlan b = ops::fused_segments(sv, dev, 2, 256);
    REQUIRE(b.nseg == 2);
    CHECK(b.seg_chunks == 72);
    b.seg_chunks /= 4;
    CHECK(ops::summary_pieces(sv, dev, b, 256) == 2);
  }
  for (int64_t B : {1, 2, 4})
    for (int64_t S : {4096, 16384, 65536, 100000})
      for (int want : {2, 3, 4, 8}) {
        const MlstmProblem p = problem(B, S, 128, 256);
        const ops::SegmentPlan sp = ops::fused_segments(p, dev, want);
        const int k = ops::summary_pieces(p, dev, sp, 64);
        INFO(B << " x " << S << ", " << want << " segments: " << k << " pieces");
        CHECK(k >= 1);
        if (sp.nseg <= 1) {
          CHECK(k == 1);
          continue;
        }
        CHECK(sp.seg_chunks % k == 0);
        if (k > 1) CHECK(sp.seg_chunks / k * 64 >= 1024);
        CHECK(B * 8 * (sp.nseg - 1) * k <= 65535);
      }
  // the plan: the summary's grid rows are heads x pieces of the segments before the last
  const ops::FwdConfig c = ops::sm90_fwd_config(paper, dev);
  REQUIRE(c.fused == 1);
  const ops::Plan plan = ops::fwd_plan(paper, c, dev, false);
  CHECK(plan.walk.pieces == 4);
  bool summary = false;
  for (int i = 0; i < plan.count; ++i)
    if (plan.launches[static_cast<size_t>(i)].mode == ops::kWalkSummary) {
      summary = true;
      CHECK(plan.launches[static_cast<size_t>(i)].grid.x == 4u);
      CHECK(plan.launches[static_cast<size_t>(i)].grid.y == 8u * 3 * 4);
    }
  CHECK(summary);
}

TEST_CASE("a split walk's workspace: its regions last, sized by the query, the saved layout unchanged", "[engine]") {
  const MlstmProblem p = problem(1, 65536, 256, 512);  // 8 heads, 256 chunks of 256
  ops::FwdConfig c = fwd_default(p);
  REQUIRE(c.st_seg == 4);
  REQUIRE(c.fused == 1);  // the default: the fused walk, split (its plan below)
  const ops::Plan fused = ops::fwd_plan(p, c, ref(), false);
  c.fused = 0;  // the three kernels' split
  ops::FwdConfig c1 = c;
  c1.st_seg = 1;
  const ops::Plan one = ops::fwd_plan(p, c1, ref(), false), four = ops::fwd_plan(p, c, ref(), false);
  const size_t seg_bytes = size_t{8} * 4 * 256 * 512 * 4 + size_t{8} * 4 * 256 * 4 + 256 /* m, rounded */ +
                           (size_t{8} * 257 * 4 + 255) / 256 * 256 /* mloc */;
  using R = ops::Region;
  CHECK(one[R::SegC].buffer == ops::Buffer::None);
  CHECK(four[R::SegC].offset == one.workspace_bytes);
  CHECK(four.workspace_bytes == one.workspace_bytes + seg_bytes);
  CHECK(four[R::GateB].offset == one[R::GateB].offset);
  CHECK(four[R::StatesC].offset == one[R::StatesC].offset);
  // the size query answers for the config the call runs
  CHECK(ops::fwd_workspace_size(p, c, false, false) == four.workspace_bytes);
  CHECK(mlstm_forward_workspace_size(p, {{"fused", 0}}) == four.workspace_bytes);
  CHECK(mlstm_forward_workspace_size(p, {{"fused", 0}, {"st_seg", 1}}) == one.workspace_bytes);
  // the fused split: the gate kernel's regions at chunk 64 (1024 chunks), chunk_m, the split's
  CHECK(mlstm_forward_workspace_size(p, {}) == fused.workspace_bytes);
  CHECK(fused.walk.nseg == 4);
  CHECK(fused.walk.seg_chunks == 256);
  CHECK(fused.walk.pieces == 4);  // the summary in 4 pieces a segment: 16 pieces' states, no mloc
  const size_t piece_bytes = size_t{8} * 16 * 256 * 512 * 4 + size_t{8} * 16 * 256 * 4 + 512 /* m */;
  CHECK(fused[R::StatesC].buffer == ops::Buffer::None);
  CHECK(fused.workspace_bytes == 3 * size_t{8} * 65536 * 4 + 2 * size_t{8} * 1024 * 4 +
                                     (size_t{8} * 1025 * 4 + 255) / 256 * 256 + piece_bytes);
  CHECK(fused[R::SegMloc].buffer == ops::Buffer::None);
  // a saved buffer never holds the split's regions: they are the workspace of that call
  const ops::Plan with_saved = ops::fwd_plan(p, c, ref(), true);
  CHECK(with_saved.workspace_bytes == seg_bytes);
  CHECK(with_saved[R::SegC].buffer == ops::Buffer::Workspace);
  CHECK(with_saved[R::StatesC].buffer == ops::Buffer::Saved);
  CHECK(mlstm_saved_size(p, {}) == with_saved.saved_bytes);
  CHECK(mlstm_saved_size(p, {}) == ops::fwd_plan(p, c1, ref(), true).saved_bytes);
  CHECK(mlstm_saved_size(p, {{"st_seg", 1}}) == mlstm_saved_size(p, {}));
  // the backward: the recompute's regions only without a saved buffer, the dC walk's always
  const ops::BwdConfig b = bwd_resolve(p, {});
  REQUIRE(b.st_seg == 4);
  REQUIRE(b.ds_seg == 4);
  const ops::Plan plain = ops::bwd_plan(p, b, ref(), false), saved = ops::bwd_plan(p, b, ref(), true);
  CHECK(plain[R::SegMloc].offset + plain[R::SegMloc].bytes - plain[R::SegC].offset == seg_bytes);
  CHECK(saved[R::SegC].buffer == ops::Buffer::None);
  CHECK(plain[R::SegDC].buffer == ops::Buffer::Workspace);
  CHECK(saved[R::SegDC].buffer == ops::Buffer::Workspace);
  CHECK(mlstm_backward_workspace_size(p, {}) == plain.workspace_bytes);
  CHECK(mlstm_backward_workspace_size(p, {}, true) == saved.workspace_bytes);
}

// The backward of a saved buffer runs at the chunk the forward filled it with; the size query
// with a saved buffer and no chunk named is for a buffer of the forward's own chunk, also where the
// backward's own choice is another chunk (as with short sequences of small heads).
TEST_CASE("the saved backward's workspace query follows the forward's chunk", "[config][saved]") {
  int differ = 0;
  for (int64_t S : {23, 100, 300, 1000, 5000})
    for (int64_t dqk : {64, 128, 256})
      for (int64_t dv : {64, 128, 448, 512})
        for (DType dt : {DType::BF16, DType::FP16, DType::FP32}) {
          MlstmProblem p;
          p.B = 1; p.NH = 2; p.S = S; p.Dqk = dqk; p.Dv = dv;
          p.dtype = dt;
          INFO("S " << S << " " << dqk << "x" << dv << " " << to_string(dt));
          Config chunkwise = {{"parallel", 0}};
          const int64_t fwd_chunk = mlstm_forward_config(p, chunkwise).at("chunk");
          const int64_t bwd_chunk = mlstm_backward_config(p, chunkwise).at("chunk");
          differ += fwd_chunk != bwd_chunk;
          const size_t at_fwd = mlstm_backward_workspace_size(p, {{"chunk", fwd_chunk}}, true);
          CHECK(mlstm_backward_workspace_size(p, {}, true) == at_fwd);
          CHECK(mlstm_backward_workspace_size(p, {{"parallel", 0}}, true) == at_fwd);
          // a chunk named is what the query sizes, as before
          CHECK(mlstm_backward_workspace_size(p, {{"chunk", 64}}, true) ==
                ops::bwd_plan(p, bwd_resolve(p, {{"chunk", 64}, {"parallel", 0}}), ref(), true).workspace_bytes);
        }
  CHECK(differ > 0);  // (the grid holds problems where the two defaults differ)
}

namespace {
// The segments a full forward config's state walk runs in for p.
int state_segments_of(const MlstmProblem& p, const Config& c) {
  const int64_t nc = (p.S + c.at("chunk") - 1) / c.at("chunk");
  return ops::state_segments(static_cast<int>(c.at("st_seg")), nc, p.B * p.NH).nseg;
}
}  // namespace

TEST_CASE("every default split is whole chunks of at least 8, within the grid, and sized by the queries", "[engine]") {
  int split_fwd = 0, split_bwd = 0;
  for (const MlstmProblem& p : problem_grid({1, 2, 8, 64}, {1, 4, 16}, {1, 100, 2048, 8192, 65536, 100000},
                                            {{64, 64}, {128, 256}, {256, 512}, {96, 160}})) {
    INFO(describe(p));
    const Config f = mlstm_forward_config(p, {});
    const int64_t nc = (p.S + f.at("chunk") - 1) / f.at("chunk");
    const ops::SegmentPlan fs = ops::state_segments(static_cast<int>(f.at("st_seg")), nc, p.B * p.NH);
    if (f.at("st_seg") > 1) {
      ++split_fwd;
      CHECK(fs.nseg > 1);
      CHECK(fs.seg_chunks >= 8);
      CHECK(p.B * p.NH * fs.nseg <= 65535);
    }
    // a saved buffer's forward needs scratch exactly where the chunkwise walk splits
    CHECK((mlstm_forward_workspace_size(p, {{"parallel", 0}}, true) > 0) ==
          (state_segments_of(p, mlstm_forward_config(p, {{"parallel", 0}})) > 1));
    const Config b = mlstm_backward_config(p, {});
    if (b.at("ds_seg") > 1) {
      ++split_bwd;
      const int64_t bnc = (p.S + b.at("chunk") - 1) / b.at("chunk");
      const ops::SegmentPlan ds = ops::state_segments(static_cast<int>(b.at("ds_seg")), bnc, p.B * p.NH);
      CHECK(ds.nseg > 1);
      CHECK(ds.seg_chunks >= 8);
      CHECK(p.B * p.NH * ds.nseg <= 65535);
    }
  }
  // the defaults do split somewhere in this grid, forward and backward
  CHECK(split_fwd > 0);
  CHECK(split_bwd > 0);
}

// The loaded kernels of a selection are keyed by its kernel list itself: over the tuner's
// candidates (every engine, form and tile choice), two selections share a key exactly when they
// load the same kernels, so a config key that changes the kernels can never reuse another's.
TEST_CASE("selections share loaded kernels exactly when their kernel lists are equal", "[engine][memo]") {
  for (const MlstmProblem& p : {problem(8, 8192, 256, 512), make_problem(8, 16, 8192, 128, 256, DType::BF16),
                                problem(1, 65536, 128, 256)})
    for (auto fam : {tuner::Family::Forward, tuner::Family::Backward}) {
      const tuner::Enumerated e = tuner::enumerate(fam, p, tuner::SpaceLimits{}, 0);
      std::map<ops::MemoKey, std::vector<std::string>> by_key;
      std::map<std::vector<std::string>, ops::MemoKey> by_list;
      int n = 0;
      // a spread of at most about 400 candidates (the spaces hold tens of thousands)
      const size_t step = std::max<size_t>(1, e.kept.size() / 400);
      for (size_t ci = 0; ci < e.kept.size(); ci += step) {
        const tuner::Candidate& c = e.kept[ci];
        std::vector<std::string> keys;
        ops::MemoKey k{};
        // the candidate's selection: false where it is rejected (it loads nothing)
        auto select = [&](auto typed) {
          typed.apply(c.config);
          const auto s = ops::selection_of(p, typed);
          if (!s.rejected.empty()) return false;
          for (const auto& spec : s.family->kernels(p, typed.to_config(), ref())) keys.push_back(spec.key);
          k = s.kernel_key;
          return true;
        };
        if (!(fam == tuner::Family::Forward ? select(ops::FwdConfig{}) : select(ops::BwdConfig{}))) continue;
        ++n;
        const auto [it, fresh] = by_key.emplace(k, keys);
        CHECK(it->second == keys);  // one key, one kernel list
        const auto [jt, fresh2] = by_list.emplace(keys, k);
        CHECK(jt->second == k);     // one kernel list, one key
      }
      INFO("problem S = " << p.S << ", Dqk = " << p.Dqk);
      CHECK(n > 10);
      CHECK(by_key.size() > 1);
    }
}
