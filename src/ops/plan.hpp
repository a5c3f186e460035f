// Launch plans: what a family runs for one problem and config. A plan names the regions of the
// buffers the op's kernels pass data through (where each lives: the workspace or the
// saved-states buffer, at which offset), the sizes the op checks and the size queries answer,
// and the ordered launches (which of the family's kernels(), its grid, and how its parameter
// block is made from the op's blocks). Dispatch makes the plans once per memoized selection
// (ops/selection.hpp); a call then fills the op's parameter blocks from its tensors and the
// plan's regions and runs execute(): no layout arithmetic, heap or string work.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>

#include "ops/bwd_config.hpp"
#include "ops/fwd_config.hpp"
#include "ops/step_config.hpp"
#include "runtime/driver.hpp"
#include "runtime/kernel.hpp"
#include "tfla/mlstm_params.cuh"
#include "tfla/mlstm_step_params.cuh"
#include "tfla/tfla.hpp"

namespace tfla::ops {

// The regions of the chunkwise forms' buffers (BH = B * NH, NC chunks, S_pad = NC * chunk; fp32
// unless said otherwise). Each is named by the parameter field it binds to.
enum class Region : uint8_t {
  GateB, GateU, GatePm,  // (BH, S_pad) each: the gate kernel's per-position factors
  ChunkG, ChunkUmax,     // (BH, NC)
  ChunkM,                // (BH, NC + 1)
  StatesC,               // (BH, NC, Dqk, Dv) dtype: the state entering each chunk
  StatesN,               // (BH, NC, Dqk)
  CLast,                 // (BH, Dqk, Dv): C_S (the saved layout's; the backward's recompute)
  DstatesC,              // (BH, NC, Dqk, Dv) dtype: the dC recurrence's states
  DclastDot,             // (BH, dclast_parts)
  Xpart,                 // (BH, S_pad, 2, xparts); the parallel form: (BH, S, 2, xparts)
  RowX,                  // (BH, S_pad)
  ChunkX,                // (BH, NC)
  SegC, SegN, SegM,      // a split state walk's segment ends: (BH, nseg, Dqk, Dv), (BH, nseg, Dqk), (BH, nseg)
  SegMloc,               // (BH, NC + 1)
  SegDC,                 // a split dC walk's segment values: (BH, dC nseg, Dqk, Dv)
  Count
};
inline constexpr size_t kRegions = static_cast<size_t>(Region::Count);
const char* to_string(Region r) noexcept;

// Where a region lives.
enum class Buffer : uint8_t { None, Workspace, Saved };
struct Place {
  Buffer buffer = Buffer::None;
  size_t offset = 0, bytes = 0;  // bytes as carved: a multiple of 256
};

// How a launch's parameter block is made from the op's blocks (MlstmFwdParams f, MlstmBwdParams
// g, MlstmStepParams s).
enum class Block : uint8_t {
  Fwd,            // f as it is
  FwdWalk,        // f, after the plan's state-walk split (nseg, seg_chunks, seg_*) is set in it
  FwdWalkSm90,    // the same, in MlstmFwdStatesSm90Params (tensor maps of k and v)
  FwdOutputSm90,  // MlstmFwdSm90Params over f (tensor maps of q, k, v and the chunk states)
  FwdFusedSm90,   // MlstmFwdFusedSm90Params over f (tensor maps of q, k, v and the gate rows)
  Bwd,            // g as it is
  BwdWalkSm90,    // MlstmBwdDstatesSm90Params over g (tensor maps of q and dh)
  BwdTileSm90,    // MlstmBwdTileSm90Params over g for gradient Launch::mode (0 dQ, 1 dK, 2 dV)
  BwdDkvSm90,     // MlstmBwdDkvSm90Params over g (tensor maps of q, k, v, dh and dC)
  Step,           // s as it is
  StepDependent,  // s, as a programmatic dependent of the previous launch
  StepCluster,    // s, in clusters of grid.x CTAs (one cluster per grid row)
};
const char* to_string(Block b) noexcept;

// Launch::mode of a FwdWalkSm90 launch that is a split fused walk's summary walk
// (mlstm_fwd_summary_sm90.cuh: grid y heads x pieces, no chunk states stored).
inline constexpr int kWalkSummary = 1;

struct Launch {
  uint8_t kernel = 0;  // index into the family's kernels() for the plan's config
  Block block = Block::Fwd;
  uint8_t mode = 0;    // BwdTileSm90: the gradient; FwdWalkSm90: 0, or kWalkSummary
  int tile = 0;        // FwdOutputSm90, BwdTileSm90: the column tile (siz_b_v, siz_b_nqk or siz_b_nv);
                       // FwdFusedSm90: the chunk of the gate rows it reads
  rt::Grid3 grid;
};

struct Plan {
  static constexpr int kMaxLaunches = 12;
  std::array<Place, kRegions> regions{};
  size_t workspace_bytes = 0;  // LaunchOptions::workspace's size (what the size query answers)
  size_t saved_bytes = 0;      // the saved-states buffer's size; 0 where the plan reads none
  int nc = 1;                  // chunks (the parameter blocks' NC)
  SegmentPlan walk;            // the state walk's split (Block::FwdWalk*)
  SegmentPlan dwalk;           // the dC walk's split (set in g)
  int xparts = 0, dclast_parts = 0;
  std::array<Launch, kMaxLaunches> launches{};
  int count = 0;

  const Place& operator[](Region r) const noexcept { return regions[static_cast<size_t>(r)]; }
  // Carves bytes (rounded up to 256) for r at the end of buffer b.
  void take(Region r, Buffer b, size_t bytes);
  // Appends a launch; throws Internal past kMaxLaunches.
  void add(int kernel, Block block, rt::Grid3 grid, int tile = 0, int mode = 0);
};

// The device addresses a call binds a plan to.
struct PlanBases {
  CUdeviceptr workspace = 0, saved = 0;
  // The region's address, or null where the plan has none.
  template <class T = void> T* at(const Plan& plan, Region r) const {
    const Place& pl = plan[r];
    if (pl.buffer == Buffer::None) return nullptr;
    return reinterpret_cast<T*>((pl.buffer == Buffer::Saved ? saved : workspace) + pl.offset);
  }
};

// The op's parameter blocks the launches read (null where the op has none).
struct ParamBlocks {
  MlstmFwdParams* f = nullptr;
  MlstmBwdParams* g = nullptr;
  const MlstmStepParams* s = nullptr;
};

// Binds the forward block's workspace fields (gate_b ... states_n; null where the plan has no
// such region) and its chunk count to the plan's regions at bases.
void bind_regions(const Plan& plan, const PlanBases& bases, MlstmFwdParams& f);

// Runs plan's launches in order on stream; kernels[i] is the loaded kernels()[i]. FwdWalk*
// launches set the split in *f first (the launches before them see f without it). Throws what a
// launch or a tensor map throws (InvalidArgument for a problem too large for an sm90 kernel's
// tile count); the launches before it stay queued.
void execute(const Plan& plan, const rt::LoadedKernel* const* kernels, const MlstmProblem& p, const PlanBases& bases,
             const ParamBlocks& blocks, CUstream stream);

// The forward's plans (the three forward families): parallel, fused or chunkwise by cfg. saved:
// the call fills a saved-states buffer (the chunkwise layout with C_S, every region but the
// split's in it; the split's regions are the workspace).
Plan fwd_plan(const MlstmProblem& p, const FwdConfig& cfg, const DeviceLimits& dev, bool saved);
// The saved-states buffer's size for a chunk length (the saved plan's saved_bytes).
size_t saved_size(const MlstmProblem& p, int chunk);
// The parts of a chunkwise plan the forward and the backward's recompute share: the split walk's
// regions at the workspace's end (none unless split.nseg > 1; sets plan.walk), and the launch of
// the state walk (kernel index `walk`, on the sm90 engine or mma.sync with siz_b_k x siz_b_v
// blocks, one row of CTAs per head and segment) with, for a split walk, its fix kernel (`fix`).
// The chunkwise forward's layout at chunk in buffer b: the gate kernel's regions, the chunk
// states and, where with_last, C_S (the saved-states buffer is this layout with it).
void take_chunkwise(Plan& plan, Buffer b, const MlstmProblem& p, int chunk, bool with_last);
// local_m: the walk stores chunk states, whose segment-local stabilizers need seg_mloc.
void take_split_walk(Plan& plan, const MlstmProblem& p, int64_t nc, SegmentPlan split, bool local_m = true);
void add_state_walk(Plan& plan, const MlstmProblem& p, bool sm90, int siz_b_k, int siz_b_v, int walk, int fix);
// The backward's plans (the three backward families): parallel or chunkwise by cfg. saved: the
// call reads the forward's saved-states buffer (the gate data, chunk states and C_S in it, no
// recompute launches).
Plan bwd_plan(const MlstmProblem& p, const BwdConfig& cfg, const DeviceLimits& dev, bool saved);
// The step's plan for one way of writing n and m (nm_mode, mlstm_step_params.cuh): the fused
// kernel over (Dv / siz_b_v, B * NH) CTAs, in clusters of a head's CTAs for STEP_NM_CLUSTER, and
// for STEP_NM_DEPENDENT then the n, m kernel over the heads as its programmatic dependent; for
// STEP_NM_RECORDS the n, m kernel first and the fused kernel as its dependent.
Plan step_plan(const MlstmProblem& p, const StepConfig& cfg, int nm_mode);

}  // namespace tfla::ops
