// The families' launch plans (ops/plan.hpp), without a GPU: for a grid of problems and the
// defaults, pinned forms, engines and splits, and the tuner's candidates of a few problems, every
// launch names one of the family's kernels with the parameter block that kernel declares, grids
// are within the launch limits and cover the problem, regions are aligned and disjoint, the size
// queries answer the plan's sizes, the forward's saved layout is the one the backward reads, and
// each form runs its kernels in the expected order.
#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "ops/family.hpp"
#include "ops/kernel_space.hpp"
#include "ops/mlstm_backward.hpp"
#include "ops/mlstm_forward.hpp"
#include "ops/mlstm_step.hpp"
#include "ops/plan.hpp"
#include "tuner/search_space.hpp"
#include "config_helpers.hpp"
#include "tfla_catch.hpp"

using namespace tfla;
using namespace tfla::test;
using ops::Block;
using ops::Buffer;
using ops::Plan;
using ops::Region;

namespace {

// A template argument's value in a spec, "" when it has none of that name.
std::string targ(const rt::KernelSpec& s, const std::string& name) {
  for (size_t i = 0; i < s.template_arg_names.size(); ++i)
    if (s.template_arg_names[i] == name) return s.template_args[i];
  return "";
}

// The parameter block type each kind of launch passes.
const char* params_of(Block b) {
  switch (b) {
    case Block::Fwd:
    case Block::FwdWalk: return "tfla::MlstmFwdParams";
    case Block::FwdWalkSm90: return "tfla::MlstmFwdStatesSm90Params";
    case Block::FwdOutputSm90: return "tfla::MlstmFwdSm90Params";
    case Block::FwdFusedSm90: return "tfla::MlstmFwdFusedSm90Params";
    case Block::Bwd: return "tfla::MlstmBwdParams";
    case Block::BwdWalkSm90: return "tfla::MlstmBwdDstatesSm90Params";
    case Block::BwdTileSm90: return "tfla::MlstmBwdTileSm90Params";
    case Block::BwdDkvSm90: return "tfla::MlstmBwdDkvSm90Params";
    case Block::Step:
    case Block::StepDependent:
    case Block::StepCluster: return "tfla::MlstmStepParams";
  }
  return "?";
}

std::string name_of(const std::string& function) { return function.substr(function.rfind(':') + 1); }

// The regions of one buffer: 256-byte aligned, nonempty, disjoint and inside the buffer's size.
void check_regions(const Plan& plan, Buffer b, size_t size) {
  std::vector<std::pair<size_t, size_t>> spans;
  for (size_t r = 0; r < ops::kRegions; ++r) {
    const ops::Place& pl = plan.regions[r];
    if (pl.buffer != b) continue;
    INFO("region " << ops::to_string(static_cast<Region>(r)));
    CHECK(pl.offset % 256 == 0);
    CHECK(pl.bytes % 256 == 0);
    CHECK(pl.bytes > 0);
    CHECK(pl.offset + pl.bytes <= size);
    spans.push_back({pl.offset, pl.offset + pl.bytes});
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) CHECK(spans[i - 1].second <= spans[i].first);
}

// The invariants every plan keeps; returns the launched kernels' names in order.
std::vector<std::string> check_plan(const Plan& plan, const std::vector<rt::KernelSpec>& ks, const MlstmProblem& p,
                                    const ops::DeviceLimits& dev) {
  REQUIRE(plan.count >= 1);
  REQUIRE(plan.count <= Plan::kMaxLaunches);
  check_regions(plan, Buffer::Workspace, plan.workspace_bytes);
  check_regions(plan, Buffer::Saved, plan.saved_bytes);
  std::vector<std::string> names;
  for (int i = 0; i < plan.count; ++i) {
    const ops::Launch& l = plan.launches[static_cast<size_t>(i)];
    INFO("launch " << i << " (" << ops::to_string(l.block) << ")");
    REQUIRE(l.kernel < ks.size());
    const rt::KernelSpec& k = ks[l.kernel];
    INFO(k.key);
    CHECK(k.params_type == params_of(l.block));
    CHECK(l.grid.x >= 1);
    CHECK(l.grid.y >= 1);
    CHECK(l.grid.z >= 1);
    CHECK(l.grid.x <= 2147483647u);
    CHECK(l.grid.y <= 65535u);
    CHECK(l.grid.z <= 65535u);
    const std::string chunk = targ(k, "CHUNK");
    // the gate kernels: one CTA per chunk and head
    if (name_of(k.function).find("gates") != std::string::npos && chunk != "0") {
      const int64_t c = std::stoll(chunk);
      CHECK(l.grid.x == static_cast<unsigned>((p.S + c - 1) / c));
      CHECK(static_cast<int>(l.grid.x) == plan.nc);
      CHECK(l.grid.y == static_cast<unsigned>(p.B * p.NH));
    }
    if (l.block == Block::FwdOutputSm90 || l.block == Block::BwdTileSm90) {  // persistent
      CHECK(l.grid.x <= static_cast<unsigned>(dev.sm_count));
      CHECK(std::to_string(l.tile) == targ(k, l.block == Block::FwdOutputSm90 ? "BV" : "BN"));
    }
    if (l.block == Block::BwdTileSm90) CHECK(targ(k, "MODE") == std::to_string(l.mode));
    // the state walks: a row of CTAs per head and segment (z on mma.sync, y on the sm90 engine);
    // the fused split's summary walk one per head and piece of the segments before the last
    const unsigned walks = static_cast<unsigned>(p.B * p.NH * plan.walk.nseg);
    const unsigned dwalks = static_cast<unsigned>(p.B * p.NH * plan.dwalk.nseg);
    if (l.block == Block::FwdWalk) CHECK(l.grid.z == walks);
    if (l.block == Block::FwdWalkSm90)
      CHECK(l.grid.y == (l.mode == ops::kWalkSummary ? static_cast<unsigned>(p.B * p.NH * (plan.walk.nseg - 1) *
                                                                         plan.walk.pieces)
                                                : walks));
    if (l.block == Block::FwdWalkSm90 && l.mode != ops::kWalkSummary) CHECK(plan.walk.pieces == 1);
    if (k.function == "tfla::mlstm_bwd_dstates") CHECK(l.grid.z == dwalks);
    if (l.block == Block::BwdWalkSm90) CHECK(l.grid.y == dwalks);
    names.push_back(name_of(k.function) + (targ(k, "MODE").empty() ? "" : targ(k, "MODE")));
  }
  return names;
}

// The kernel sequence a forward config runs.
std::vector<std::string> expected_fwd(const ops::FwdConfig& c, const Plan& plan) {
  if (c.parallel() && c.engine == ops::Engine::Sm90) return {"mlstm_fwd_gates", "mlstm_fwd_output_sm90"};
  if (c.parallel()) return {"mlstm_fwd_output"};
  if (c.fused) {  // split: the summary walk and the fold to the segments' starts before the walks
    if (plan.walk.nseg > 1)
      return {"mlstm_fwd_gates", "mlstm_fwd_summary_sm90", "mlstm_fwd_state_fix", "mlstm_fwd_fused_sm90"};
    return {"mlstm_fwd_gates", "mlstm_fwd_fused_sm90"};
  }
  std::vector<std::string> v{"mlstm_fwd_gates", c.st_sm90 ? "mlstm_fwd_states_sm90" : "mlstm_fwd_states"};
  if (plan.walk.nseg > 1) v.push_back("mlstm_fwd_state_fix");
  v.push_back(c.engine == ops::Engine::Sm90 ? "mlstm_fwd_output_sm90" : "mlstm_fwd_output");
  return v;
}

std::vector<std::string> expected_bwd(const ops::BwdConfig& c, const Plan& plan, bool saved) {
  if (c.parallel() && c.engine == ops::Engine::MmaSync) return {"mlstm_bwd_parallel", "mlstm_bwd_gates_local"};
  std::vector<std::string> v;
  if (c.parallel()) {  // the sm90 engine's: the gate kernel, the tiles, the gate gradients; no walk
    v.push_back("mlstm_fwd_gates");
  } else if (!saved) {
    v = {"mlstm_fwd_gates", c.st_sm90 ? "mlstm_fwd_states_sm90" : "mlstm_fwd_states"};
    if (plan.walk.nseg > 1) v.push_back("mlstm_fwd_state_fix");
  }
  if (!c.parallel()) v.push_back(c.ds_sm90 ? "mlstm_bwd_dstates_sm90" : "mlstm_bwd_dstates");
  if (plan.dwalk.nseg > 1) v.push_back("mlstm_bwd_dstate_fix");
  for (int mode = 0; mode < (c.tl_dkv ? 1 : 3); ++mode)
    v.push_back(std::string(c.tl_sm90 ? "mlstm_bwd_tile_sm90" : "mlstm_bwd_tile") + std::to_string(mode));
  if (c.tl_dkv) v.push_back("mlstm_bwd_dkv_sm90");
  v.push_back("mlstm_bwd_gates_local");
  v.push_back("mlstm_bwd_gates_df");
  return v;
}

// The regions the forward writes into a saved buffer and the backward reads from it.
constexpr Region kSavedShared[] = {Region::GateB,  Region::GateU,   Region::GatePm, Region::ChunkG,
                                   Region::ChunkUmax, Region::ChunkM, Region::StatesC, Region::CLast};

struct Counts {
  int plans = 0, fused = 0, parallel = 0, split = 0, sm90 = 0, dkv = 0;
};

// Every invariant for one resolved config of op (a full config the family accepts).
void check_config(ops::Op op, const MlstmProblem& p, const ops::Resolved& r, Counts& n) {
  const ops::DeviceLimits& dev = ref();
  const std::vector<rt::KernelSpec> ks = r.family->kernels(p, r.config, dev);
  INFO(r.family->name() << " " << to_string(r.config));
  for (bool saved : {false, true}) {
    INFO("saved " << saved);
    const Plan plan = r.family->plan(p, r.config, dev, saved);
    const std::vector<std::string> names = check_plan(plan, ks, p, dev);
    ++n.plans;
    if (op == ops::Op::Forward) {
      const auto c = typed<ops::FwdConfig>(r.config);
      CHECK(names == expected_fwd(c, plan));
      n.fused += c.fused;
      n.parallel += c.parallel();
      n.split += plan.walk.nseg > 1;
      n.sm90 += c.engine == ops::Engine::Sm90;
      // the size queries answer the plan's sizes (a call with a saved buffer runs fused = 0)
      if (!c.fused || !saved) CHECK(mlstm_forward_workspace_size(p, r.config, saved) == plan.workspace_bytes);
      if (c.parallel()) {  // the sm90 engine's: the gate kernel's rows of its one chunk, no states
        CHECK(plan.saved_bytes == 0);
        CHECK(plan.nc == 1);
        CHECK((plan.workspace_bytes > 0) == (c.engine == ops::Engine::Sm90));
        CHECK(plan[Region::StatesC].buffer == Buffer::None);
        CHECK(plan[Region::ChunkM].buffer == Buffer::None);
      } else if (!c.fused) {
        CHECK(plan.nc == (p.S + c.chunk - 1) / c.chunk);
        CHECK(plan.saved_bytes == (saved ? mlstm_saved_size(p, r.config) : 0));
        if (saved) {  // the forward zeroes the padding before states_C and after states_n; these have none
          const size_t bh = static_cast<size_t>(p.B * p.NH);
          CHECK(plan[Region::StatesC].bytes == bh * plan.nc * p.Dqk * p.Dv * dtype_bytes(p.dtype));
          CHECK(plan[Region::CLast].bytes == bh * p.Dqk * p.Dv * 4);
          CHECK(plan[Region::StatesN].offset < plan[Region::CLast].offset);
        }
      } else {  // the walk reads the three gate rows of a chunk through one tensor map
        CHECK(plan[Region::GateU].offset - plan[Region::GateB].offset ==
              plan[Region::GatePm].offset - plan[Region::GateU].offset);
        CHECK(plan[Region::GateB].bytes == plan[Region::GateU].bytes);
      }
      // a split walk's regions are always the workspace, never part of a saved buffer
      CHECK((plan[Region::SegC].buffer == Buffer::Workspace) == (plan.walk.nseg > 1));
      if (saved && !c.parallel() && !c.fused) {  // the workspace holds the split's regions alone
        const ops::Place& last = plan[Region::SegMloc];
        CHECK(plan.workspace_bytes == (plan.walk.nseg > 1 ? last.offset + last.bytes : 0));
      }
    } else {
      const auto c = typed<ops::BwdConfig>(r.config);
      CHECK(names == expected_bwd(c, plan, saved && !c.parallel()));
      n.parallel += c.parallel();
      n.split += plan.dwalk.nseg > 1;
      n.sm90 += c.engine == ops::Engine::Sm90;
      n.dkv += c.tl_dkv;
      CHECK(mlstm_backward_workspace_size(p, r.config, saved) == plan.workspace_bytes);
      if (!c.parallel() && saved) {
        // the backward reads exactly what a forward of its chunk left in the saved buffer
        ops::FwdConfig f = ops::chunkwise_fwd_config(p, dev, c.chunk);
        const Plan fp = ops::fwd_plan(p, f, dev, true);
        CHECK(plan.saved_bytes == fp.saved_bytes);
        CHECK(plan.saved_bytes == ops::saved_size(p, c.chunk));
        for (Region reg : kSavedShared) {
          INFO(ops::to_string(reg));
          CHECK(plan[reg].buffer == Buffer::Saved);
          CHECK(fp[reg].buffer == Buffer::Saved);
          CHECK(plan[reg].offset == fp[reg].offset);
        }
        CHECK(plan.walk.nseg == 1);
      }
    }
  }
}

// The pinned configs each problem is planned for besides its default: both forms, both engines,
// the fused forward on and off, split walks; those that do not resolve or are rejected are
// skipped.
const std::vector<Config>& pins(ops::Op op) {
  static const std::vector<Config> fwd{{},
                                       {{"parallel", 1}},
                                       {{"parallel", 1}, {"engine", 0}},
                                       {{"parallel", 1}, {"engine", 1}},
                                       {{"parallel", 1}, {"engine", 1}, {"siz_b_v", 64}},
                                       {{"parallel", 0}},
                                       {{"engine", 0}},
                                       {{"engine", 1}},
                                       {{"engine", 1}, {"fused", 0}},
                                       {{"engine", 1}, {"fused", 1}},
                                       {{"engine", 1}, {"fused", 1}, {"st_seg", 4}},
                                       {{"engine", 1}, {"fused", 0}, {"st_sm90", 0}},
                                       {{"engine", 1}, {"fused", 0}, {"st_seg", 4}},
                                       {{"engine", 0}, {"st_seg", 4}},
                                       {{"chunk", 64}}};
  static const std::vector<Config> bwd{{},
                                       {{"parallel", 1}},
                                       {{"parallel", 1}, {"engine", 0}},
                                       {{"parallel", 1}, {"engine", 1}},
                                       {{"parallel", 1}, {"engine", 1}, {"tl_dkv", 0}},
                                       {{"parallel", 0}},
                                       {{"engine", 0}},
                                       {{"engine", 1}},
                                       {{"engine", 1}, {"ds_sm90", 1}},
                                       {{"engine", 1}, {"tl_sm90", 0}, {"st_sm90", 0}},
                                       {{"engine", 0}, {"st_seg", 4}, {"ds_seg", 4}},
                                       {{"engine", 1}, {"st_seg", 2}, {"ds_seg", 4}},
                                       {{"chunk", 64}}};
  return op == ops::Op::Forward ? fwd : bwd;
}

bool accepted(ops::Op op, const MlstmProblem& p, const Config& pinned, ops::Resolved& r) {
  try {
    r = ops::resolve(op, p, ref(), pinned);
  } catch (const Error&) {
    return false;
  }
  return r.family->serves(p, ref()).empty() && r.family->reject(r.config, p, ref()).empty();
}

}  // namespace

TEST_CASE("every family's plan for a grid of problems keeps its invariants", "[plan]") {
  Counts n;
  for (const MlstmProblem& p :
       problem_grid({1, 8}, {2, 8}, {1, 100, 1000, 8192}, {{64, 64}, {128, 256}, {256, 512}, {96, 160}})) {
    INFO(describe(p));
    for (ops::Op op : {ops::Op::Forward, ops::Op::Backward})
      for (const Config& pinned : pins(op)) {
        ops::Resolved r;
        if (accepted(op, p, pinned, r)) check_config(op, p, r, n);
      }
  }
  // few heads on a long sequence: the defaults split their walks
  for (Variant var : {Variant::Exp, Variant::Sig}) {
    MlstmProblem p = make_problem(1, 8, 65536, 256, 512);
    p.variant = var;
    for (ops::Op op : {ops::Op::Forward, ops::Op::Backward}) {
      ops::Resolved r;
      REQUIRE(accepted(op, p, {}, r));
      check_config(op, p, r, n);
    }
  }
  INFO(n.plans << " plans");
  CHECK(n.plans > 500);
  CHECK(n.fused > 0);
  CHECK(n.parallel > 0);
  CHECK(n.split > 0);
  CHECK(n.sm90 > 0);
  CHECK(n.dkv > 0);
}

TEST_CASE("the tuner's candidates plan their own kernels", "[plan]") {
  Counts n;
  for (auto [S, dqk, dv] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1000, 64, 64}, {4096, 256, 512}, {4096, 128, 256}}) {
    const MlstmProblem p = make_problem(2, 4, S, dqk, dv);
    INFO("S=" << S << " " << dqk << "x" << dv);
    // the forward's candidates as the tuner enumerates them
    const tuner::Enumerated e = tuner::enumerate(ops::Op::Forward, p, ref(), 64);
    REQUIRE(!e.kept.empty());
    for (const tuner::Candidate& c : e.kept) {
      ops::Resolved r;
      REQUIRE(accepted(ops::Op::Forward, p, c.config, r));
      check_config(ops::Op::Forward, p, r, n);
    }
    // the backward's space is too large to walk here: every point of each family's axes over its
    // default, one axis at a time
    for (const ops::Family* f : ops::families_of(ops::Op::Backward)) {
      if (!f->serves(p, ref()).empty()) continue;
      const Config def = f->default_config(p, ref());
      for (const ops::Axis& axis : f->axes(p))
        for (const Config& point : axis) {
          Config c = def;
          for (const auto& [key, value] : point) c[key] = value;
          c = f->complete(p, ref(), c);
          if (!f->reject(c, p, ref()).empty()) continue;
          check_config(ops::Op::Backward, p, {f, c}, n);
        }
    }
  }
  CHECK(n.plans > 100);
}

TEST_CASE("dispatch's selections carry the family's plans", "[plan]") {
  const MlstmProblem p = make_problem(8, 8, 8192, 256, 512);
  const ops::FwdSelection& f = ops::select_fwd(p, {}, false);
  REQUIRE(f.rejected.empty());
  const Plan direct = f.family->plan(p, f.cfg.to_config(), ops::current_limits(), false);
  CHECK(f.plans[0].count == direct.count);
  CHECK(f.plans[0].workspace_bytes == direct.workspace_bytes);
  CHECK(mlstm_forward_workspace_size(p) == f.plans[0].workspace_bytes);
  // a call with states needs the chunkwise form: short sequences leave the parallel default
  const MlstmProblem s = make_problem(1, 2, 100, 64, 64);
  CHECK(ops::select_fwd(s, {}, false).cfg.parallel());
  const ops::FwdSelection& cw = ops::select_fwd(s, {}, true);
  CHECK(!cw.cfg.parallel());
  CHECK(cw.plans[0].workspace_bytes > 0);
  CHECK(cw.plans[1].saved_bytes == mlstm_saved_size(s, cw.cfg.to_config()));
  // with a saved buffer a fused config that does not split fills it itself (no workspace); one
  // that splits too, with its segments' states in the workspace
  if (f.cfg.fused) {
    CHECK(f.plans[1].saved_bytes == mlstm_saved_size(p));
    CHECK(f.plans[1].workspace_bytes == 0);
    CHECK(mlstm_forward_workspace_size(p, {}, true) == 0);
  }
  const MlstmProblem lng = make_problem(1, 8, 65536, 256, 512);
  const ops::FwdSelection& fl = ops::select_fwd(lng, {}, false);
  if (fl.cfg.fused && ops::fused_segments(lng, ops::current_limits(), fl.cfg.st_seg).nseg > 1) {
    CHECK(fl.plans[1].saved_bytes == mlstm_saved_size(lng));
    CHECK(fl.plans[1].workspace_bytes == mlstm_forward_workspace_size(lng, {}, true));
    CHECK(fl.plans[1].walk.nseg > 1);
  }
  const ops::BwdSelection& b = ops::select_bwd(p, {}, true);
  CHECK(b.plans[1].saved_bytes == ops::saved_size(p, b.cfg.chunk));
  CHECK(mlstm_backward_workspace_size(p, {}, true) == b.plans[1].workspace_bytes);
  // the step: the fused kernel over (slices, heads), in clusters of a head's slices, or followed
  // by the n, m kernel per head as its dependent, or preceded by it (records)
  for (int64_t dv : {64, 512}) {
    const MlstmProblem q = make_problem(4, 8, 1, 256, dv);
    const ops::StepSelection& st = ops::select_step(q, {});
    CHECK_FALSE(st.records);  // one token
    for (int mode : {STEP_NM_APART, STEP_NM_CLUSTER, STEP_NM_DEPENDENT, STEP_NM_RECORDS}) {
      INFO("nm_mode " << mode);
      const Plan& pl = st.plans[mode];
      const bool two = mode == STEP_NM_DEPENDENT || mode == STEP_NM_RECORDS;
      REQUIRE(pl.count == (two ? 2 : 1));
      const ops::Launch& fused = pl.launches[mode == STEP_NM_RECORDS ? 1 : 0];
      const ops::Launch* nm = !two ? nullptr : &pl.launches[mode == STEP_NM_RECORDS ? 0 : 1];
      CHECK(fused.block == (mode == STEP_NM_CLUSTER   ? Block::StepCluster
                            : mode == STEP_NM_RECORDS ? Block::StepDependent
                                                      : Block::Step));
      CHECK(fused.kernel == 0);
      CHECK(int64_t{fused.grid.x} * st.cfg.siz_b_v == dv);
      CHECK(fused.grid.y == 32u);
      if (nm) {
        CHECK(nm->block == (mode == STEP_NM_RECORDS ? Block::Step : Block::StepDependent));
        CHECK(nm->kernel == 1);
        CHECK(nm->grid.x == 32u);
      }
      CHECK(pl.workspace_bytes == 0);
    }
  }
  // records: several tokens over more than 8 waves of two CTAs a SM (the reference device: 132)
  const auto records = [](int64_t B, int64_t T) {
    return ops::select_step(make_problem(B, 8, T, 256, 512), {}).records;  // 8 slices a head
  };
  CHECK_FALSE(records(256, 1));
  CHECK_FALSE(records(16, 4));  // 1024 CTAs
  CHECK(records(64, 4));        // 4096 CTAs
  CHECK(records(64, 2));
}

// The size queries answer for the call that runs: where the default is the parallel form (short
// sequences), a call with states, or with a saved buffer, runs the chunkwise default instead, so
// the queries with an unpinned form cover that selection's plan too.
TEST_CASE("the size queries cover the chunkwise fallback of an unpinned parallel default", "[plan]") {
  int parallel_defaults = 0;
  for (const MlstmProblem& p :
       problem_grid({1, 8}, {2, 8}, {1, 64, 100, 256, 700}, {{64, 64}, {128, 256}, {256, 512}})) {
    INFO(describe(p));
    const ops::FwdSelection& f0 = ops::select_fwd(p, {}, false);
    const ops::FwdSelection& f1 = ops::select_fwd(p, {}, true);
    REQUIRE(f0.rejected.empty());
    REQUIRE(f1.rejected.empty());
    parallel_defaults += f0.cfg.parallel();
    CHECK(mlstm_forward_workspace_size(p) >= f0.plans[0].workspace_bytes);
    CHECK(mlstm_forward_workspace_size(p) >= f1.plans[0].workspace_bytes);
    CHECK(mlstm_forward_workspace_size(p, {}, true) == f1.plans[1].workspace_bytes);
    CHECK(mlstm_saved_size(p) == f1.plans[1].saved_bytes);
    const ops::BwdSelection& b0 = ops::select_bwd(p, {}, false);
    const ops::BwdSelection& b1 = ops::select_bwd(p, {}, true);
    REQUIRE(b0.rejected.empty());
    REQUIRE(b1.rejected.empty());
    CHECK(mlstm_backward_workspace_size(p) >= b0.plans[0].workspace_bytes);
    CHECK(mlstm_backward_workspace_size(p) >= b1.plans[0].workspace_bytes);
  }
  CHECK(parallel_defaults > 0);
}

// A packed call's selection runs kernels compiled for packed sequences (TFLA_PACKED=1), apart
// from the plain call's of the same launch problem; the plain kernels never read the offsets.
TEST_CASE("packed selections carry their own kernels", "[plan][varlen]") {
  MlstmProblem p = make_problem(1, 8, 20000, 256, 512);
  p.num_seqs = 20;
  p.max_seqlen = 1500;
  const MlstmProblem lp = ops::launch_problem(p);
  Config fs, bs;
  const ops::FwdSelection& pf = ops::select_fwd(lp, ops::packed_pins(p, {}, ops::Op::Forward, fs), false, true);
  const ops::BwdSelection& pb = ops::select_bwd(lp, ops::packed_pins(p, {}, ops::Op::Backward, bs), true, true);
  REQUIRE(pf.rejected.empty());
  REQUIRE(pb.rejected.empty());
  CHECK(pf.packed);
  CHECK(pb.packed);
  const ops::FwdSelection plain = ops::selection_of(lp, pf.cfg);
  CHECK(!plain.packed);
  CHECK(plain.kernel_key != pf.kernel_key);
  for (const rt::KernelSpec& s : ops::launch_kernels(*pf.family, lp, pf.cfg.to_config(), true)) {
    CHECK(s.packed);
    CHECK(s.key.find("|packed") != std::string::npos);
    CHECK(s.source().rfind("// tfla kernel " + s.key + "\n#define TFLA_PACKED 1\n", 0) == 0);
  }
  for (const rt::KernelSpec& s : ops::launch_kernels(*pb.family, lp, pb.cfg.to_config(), false)) {
    CHECK(!s.packed);
    CHECK(s.source().find("TFLA_PACKED") == std::string::npos);
  }
  // `tfla compile --packed 20:1500 --heads 8` compiles every kernel this call loads
  ops::SpaceFilter f;
  f.dtypes = {p.dtype};
  f.dims = {{256, 512}};
  f.packed = {{20, 1500}};
  f.packed_heads = 8;
  std::set<std::string> compiled;
  for (const rt::KernelSpec& s : ops::default_space_kernels(f)) compiled.insert(s.key);
  for (const auto& specs : {ops::launch_kernels(*pf.family, lp, pf.cfg.to_config(), true),
                            ops::launch_kernels(*pb.family, lp, pb.cfg.to_config(), true)})
    for (const rt::KernelSpec& s : specs) CHECK(compiled.count(s.key) == 1);
}

// Each kernel of a forward or backward is launched as a programmatic dependent of the one before
// it (plan.cpp's run), so its entry must wait for that kernel before anything else: the wait is
// the entry's first statement, and no early trigger follows it. The step's kernels order their
// own launches (mlstm_step.cuh) and get no wait.
TEST_CASE("a forward's and a backward's kernels wait on the kernel before them; the step's do not", "[plan]") {
  const MlstmProblem p = make_problem(2, 8, 4096, 256, 512);
  const Config none;
  std::vector<rt::KernelSpec> chunkwise;
  for (bool states : {false, true}) {
    const ops::FwdSelection& fw = ops::select_fwd(p, none, states);
    REQUIRE(fw.rejected.empty());
    for (rt::KernelSpec& s : ops::launch_kernels(*fw.family, p, fw.cfg.to_config(), false)) chunkwise.push_back(s);
    const ops::BwdSelection& bw = ops::select_bwd(p, none, states);
    REQUIRE(bw.rejected.empty());
    for (rt::KernelSpec& s : ops::launch_kernels(*bw.family, p, bw.cfg.to_config(), false)) chunkwise.push_back(s);
  }
  REQUIRE(chunkwise.size() >= 4);
  for (const rt::KernelSpec& s : chunkwise) {
    INFO(s.key);
    CHECK(s.grid_dependent);
    CHECK(s.key.find("|dep") != std::string::npos);
    const std::string src = s.source();
    const size_t open = src.find(s.entry() + "(");
    const size_t wait = src.find("griddepcontrol.wait;"), call = src.find(s.function + "<");
    REQUIRE(open != std::string::npos);
    REQUIRE(call != std::string::npos);
    CHECK(open < wait);
    CHECK(wait < call);
    CHECK(src.find("griddepcontrol.launch_dependents") == std::string::npos);
    CHECK(src.find("__CUDA_ARCH__ >= 900") < wait);  // griddepcontrol is sm_90+ PTX
    const rt::KernelSpec again = rt::with_grid_dependent(s);
    CHECK(again.key == s.key);  // once
  }
  MlstmProblem q = p;
  q.S = 1;
  const ops::StepSelection& st = ops::select_step(q, none);
  const ops::Resolved r = ops::resolve(ops::Op::Step, q, ops::current_limits(), st.cfg.to_config());
  for (const rt::KernelSpec& s : ops::launch_kernels(*r.family, q, st.cfg.to_config(), false)) {
    INFO(s.key);
    CHECK(!s.grid_dependent);
    CHECK(s.source().find("asm volatile(\"griddepcontrol.wait;") == std::string::npos);
  }
}

// `tfla compile` prepares a deployment: its default set is exactly the kernels that the default
// calls of its problems load (forward and backward with and without states, the backward of a
// saved buffer, the step), nothing they would compile at run time and nothing they never load.
TEST_CASE("tfla compile's default set is the kernels the default calls load", "[plan]") {
  ops::SpaceFilter f;
  std::set<std::string> compiled;
  for (const rt::KernelSpec& s : ops::default_space_kernels(f))
    if (s.key.rfind("mlstm_", 0) == 0) CHECK(compiled.insert(s.key).second);
  std::set<std::string> loaded;
  auto add = [&](const ops::Family* fam, const MlstmProblem& p, const Config& cfg) {
    for (const rt::KernelSpec& s : ops::launch_kernels(*fam, p, cfg, false)) {
      INFO(fam->name() << " B=" << p.B << " NH=" << p.NH << " S=" << p.S << ": " << s.key);
      CHECK(compiled.count(s.key) == 1);
      loaded.insert(s.key);
    }
  };
  const Config none;
  int sm90 = 0;
  for (const MlstmProblem& p : ops::default_space_problems(f)) {
    for (bool states : {false, true}) {
      const ops::FwdSelection& fw = ops::select_fwd(p, none, states);
      REQUIRE(fw.rejected.empty());
      add(fw.family, p, fw.cfg.to_config());
      sm90 += fw.cfg.engine == ops::Engine::Sm90;
    }
    if (p.variant == Variant::Sig && !p.normalize) continue;  // its backward is sig's
    for (bool states : {false, true}) {
      const ops::BwdSelection& bw = ops::select_bwd(p, none, states);
      REQUIRE(bw.rejected.empty());
      add(bw.family, p, bw.cfg.to_config());
    }
    const size_t bytes = ops::saved_size(p, ops::select_fwd(p, none, true).cfg.chunk);
    const ops::BwdSelection& bs = ops::select_bwd_for_saved(p, none, none, nullptr, bytes);
    REQUIRE(bs.rejected.empty());
    add(bs.family, p, bs.cfg.to_config());
  }
  for (const MlstmProblem& p0 : ops::default_space_problems(f))
    for (int64_t heads : {8, 512}) {
      MlstmProblem p = p0;
      p.B = heads / 8;
      p.NH = 8;
      p.S = 1;
      const ops::StepSelection& st = ops::select_step(p, none);
      const ops::Resolved r = ops::resolve(ops::Op::Step, p, ops::current_limits(), st.cfg.to_config());
      add(r.family, p, st.cfg.to_config());
    }
  CHECK(sm90 > 0);  // the reference device is an sm_90a: the engine's kernels are in the set
  CHECK(loaded == compiled);
}

// The set follows the target arch: without the sm90 engine, the mma.sync families serve.
TEST_CASE("tfla compile's default set for an sm_80 has no sm90 kernels", "[plan]") {
  ops::SpaceFilter f;
  f.dims = {{256, 512}, {64, 64}};
  f.arch = "sm_80";
  size_t n = 0;
  for (const rt::KernelSpec& s : ops::default_space_kernels(f)) {
    CHECK(s.key.find("sm90") == std::string::npos);
    n += s.key.rfind("mlstm_", 0) == 0;
  }
  CHECK(n > 10);
  f.arch = "sm_90a";
  size_t engine = 0;
  for (const rt::KernelSpec& s : ops::default_space_kernels(f)) engine += s.key.find("sm90") != std::string::npos;
  CHECK(engine > 0);
  CHECK_THROWS_AS(ops::space_limits("sm_9"), Error);
  CHECK_THROWS_AS(ops::space_limits("gfx90a"), Error);
  CHECK(ops::space_limits("sm_80").smem_optin_bytes == 163 * 1024);
  CHECK(ops::space_limits("sm_100a").cc_major == 10);
}
