// The forward families' plans (fwd.parallel.sm90, fwd.parallel.mma, fwd.chunkwise.mma,
// fwd.chunkwise.sm90), their kernel indices in fwd_kernels' order: the sm90 parallel form's gate
// and output kernels at its one chunk; the mma.sync parallel form's output kernel alone; the fused
// forward's gate kernels (chunk 64, and the config's chunk for a saved-states buffer), walk,
// summary walks (at chunk 64, and at the config's chunk for a saved-states buffer) and fold; the chunkwise form's gate, state and output kernels and the split
// walk's fix.
#include <algorithm>

#include "ops/plan.hpp"
#include "tfla/mlstm_sm90_params.cuh"

namespace tfla::ops {
namespace {

unsigned u(int64_t x) { return static_cast<unsigned>(x); }

// The gate kernel's regions at chunk over nc chunks, in b.
void take_gates(Plan& plan, Buffer b, const MlstmProblem& p, int chunk, size_t nc) {
  const size_t bh = static_cast<size_t>(p.B * p.NH), s_pad = nc * chunk;
  plan.take(Region::GateB, b, bh * s_pad * 4);
  plan.take(Region::GateU, b, bh * s_pad * 4);
  plan.take(Region::GatePm, b, bh * s_pad * 4);
  plan.take(Region::ChunkG, b, bh * nc * 4);
  plan.take(Region::ChunkUmax, b, bh * nc * 4);
}

// The summary walk of a split fused walk (kernel index `walk`): the pieces of the segments
// before the last, one CTA per 128 columns of Dv, head and piece; it stores no chunk states.
void add_summary_walk(Plan& plan, const MlstmProblem& p, const SegmentPlan& split, int walk) {
  const unsigned rows = u(p.B * p.NH) * u(split.nseg - 1) * u(split.pieces);
  plan.add(walk, Block::FwdWalkSm90, {u(p.Dv / FwdFusedSm90Shape::kBV), rows, 1}, 0, kWalkSummary);
}

// The fold of a split fused walk's segment summaries to the segments' starts (STARTS), one CTA
// row per head.
void add_starts_fold(Plan& plan, const MlstmProblem& p, int fold) {
  const int64_t groups = (p.Dqk * p.Dv + p.Dqk) / 8;  // 8 elements of C or n per thread
  plan.add(fold, Block::Fwd, {u((groups + 255) / 256), u(p.B * p.NH), 1});
}

}  // namespace

void take_chunkwise(Plan& plan, Buffer b, const MlstmProblem& p, int chunk, bool with_last) {
  const size_t bh = static_cast<size_t>(p.B * p.NH);
  const size_t nc = static_cast<size_t>((p.S + chunk - 1) / chunk);
  take_gates(plan, b, p, chunk, nc);
  plan.take(Region::ChunkM, b, bh * (nc + 1) * 4);
  plan.take(Region::StatesC, b, bh * nc * p.Dqk * p.Dv * dtype_bytes(p.dtype));
  plan.take(Region::StatesN, b, bh * nc * p.Dqk * 4);
  if (with_last) plan.take(Region::CLast, b, bh * p.Dqk * p.Dv * 4);
}

void take_split_walk(Plan& plan, const MlstmProblem& p, int64_t nc, SegmentPlan split, bool local_m) {
  plan.walk = split;
  if (split.nseg <= 1) return;
  const size_t bh = static_cast<size_t>(p.B * p.NH), ns = static_cast<size_t>(split.nseg) * split.pieces;
  plan.take(Region::SegC, Buffer::Workspace, bh * ns * p.Dqk * p.Dv * 4);
  plan.take(Region::SegN, Buffer::Workspace, bh * ns * p.Dqk * 4);
  plan.take(Region::SegM, Buffer::Workspace, bh * ns * 4);
  if (local_m) plan.take(Region::SegMloc, Buffer::Workspace, bh * static_cast<size_t>(nc + 1) * 4);
}

void add_state_walk(Plan& plan, const MlstmProblem& p, bool sm90, int siz_b_k, int siz_b_v, int walk, int fix) {
  const unsigned bh = u(p.B * p.NH);
  const unsigned rows = bh * u(plan.walk.nseg);  // heads x segments
  if (sm90)
    plan.add(walk, Block::FwdWalkSm90, {u(p.Dv / siz_b_v), rows, 1});
  else
    plan.add(walk, Block::FwdWalk, {u(p.Dv / siz_b_v), u(p.Dqk / siz_b_k), rows});
  if (plan.walk.nseg > 1) {
    const int64_t groups = (p.Dqk * p.Dv + p.Dqk) / 8;  // 8 elements of C or n per thread
    plan.add(fix, Block::Fwd, {u((groups + 255) / 256), bh, 1});
  }
}

size_t saved_size(const MlstmProblem& p, int chunk) {
  Plan plan;
  take_chunkwise(plan, Buffer::Saved, p, chunk, true);
  return plan.saved_bytes;
}

// A fused config with a saved buffer: the gate kernel at the config's chunk writes the saved
// layout's gate regions and the fused walk, reading those gate rows, the rest of it (chunk
// states, n, stabilizers, C_S), all in the buffer; no workspace. Where the walk splits, the
// summary walk at the config's chunk (reading the buffer's gate rows, storing no chunk states)
// and the fold to the segments' starts run between them, with the segments' states in the
// workspace; the segments start at chunks of the buffer, whose starting stabilizers the fold
// leaves in its chunk_m.
Plan fwd_plan(const MlstmProblem& p, const FwdConfig& c, const DeviceLimits& dev, bool saved) {
  Plan plan;
  const unsigned bh = u(p.B * p.NH);
  if (c.parallel() && c.engine == Engine::Sm90) {  // the gate kernel, the output kernel: no states
    plan.nc = 1;
    take_gates(plan, Buffer::Workspace, p, c.chunk, 1);
    plan.add(0, Block::Fwd, {1, bh, 1});
    using Shape = FwdOutputSm90Shape;
    const int64_t tiles = (p.S + Shape::kBQ - 1) / Shape::kBQ * (p.Dv / c.siz_b_v) * p.B * p.NH;
    plan.add(1, Block::FwdOutputSm90, {u(std::min<int64_t>(tiles, dev.sm_count)), 1, 1}, c.siz_b_v);
    return plan;
  }
  if (c.parallel()) {  // no workspace: the output kernel over one chunk spanning the sequence
    plan.add(0, Block::Fwd, {u(p.Dv / c.siz_b_v), u((p.S + c.siz_b_q - 1) / c.siz_b_q), bh});
    return plan;
  }
  if (c.fused) {  // the gate kernel at chunk 64, then one CTA per fused_bv columns of Dv, head and segment
    if (saved) {
      const int64_t nc = (p.S + c.chunk - 1) / c.chunk;
      plan.nc = static_cast<int>(nc);
      take_chunkwise(plan, Buffer::Saved, p, c.chunk, true);
      plan.add(2, Block::Fwd, {u(nc), bh, 1});
      SegmentPlan split = fused_segments(p, dev, c.st_seg, c.chunk);  // in chunks of 64
      if (split.nseg > 1) {
        split.seg_chunks /= c.chunk / kFusedChunk;  // the walk's and the fold's: the buffer's chunks
        split.pieces = summary_pieces(p, dev, split, c.chunk);
        take_split_walk(plan, p, nc, split, /*local_m=*/false);
        add_summary_walk(plan, p, split, 5);
        add_starts_fold(plan, p, 4);
      }
      plan.add(1, Block::FwdFusedSm90, {u(p.Dv / c.fused_bv), bh, u(std::max(1, split.nseg))}, c.chunk);
      return plan;
    }
    const int64_t nc = (p.S + kFusedChunk - 1) / kFusedChunk;
    plan.nc = static_cast<int>(nc);
    take_gates(plan, Buffer::Workspace, p, kFusedChunk, static_cast<size_t>(nc));
    plan.add(0, Block::Fwd, {u(nc), bh, 1});
    SegmentPlan split = fused_segments(p, dev, c.st_seg);
    if (split.nseg > 1) {  // the segments' summaries (no chunk states), then their start states
      split.pieces = summary_pieces(p, dev, split, kFusedChunk);
      plan.take(Region::ChunkM, Buffer::Workspace, bh * static_cast<size_t>(nc + 1) * 4);
      take_split_walk(plan, p, nc, split, /*local_m=*/false);  // no chunk states, no local stabilizers
      add_summary_walk(plan, p, split, 3);
      add_starts_fold(plan, p, 4);
    }
    plan.add(1, Block::FwdFusedSm90, {u(p.Dv / c.fused_bv), bh, u(std::max(1, split.nseg))}, kFusedChunk);
    return plan;
  }
  const int64_t nc = (p.S + c.chunk - 1) / c.chunk;
  plan.nc = static_cast<int>(nc);
  // with a saved buffer, every region but the split's lives in it; the split's are the workspace
  take_chunkwise(plan, saved ? Buffer::Saved : Buffer::Workspace, p, c.chunk, saved);
  take_split_walk(plan, p, nc, state_segments(c.st_seg, nc, p.B * p.NH));
  plan.add(0, Block::Fwd, {u(nc), bh, 1});
  add_state_walk(plan, p, c.st_sm90 != 0, c.st_siz_b_k, c.st_siz_b_v, 1, 3);
  if (c.engine == Engine::Sm90) {  // persistent: one CTA per SM, or per tile where there are fewer
    using Shape = FwdOutputSm90Shape;
    const int64_t tiles = (p.S + Shape::kBQ - 1) / Shape::kBQ * (p.Dv / c.siz_b_v) * p.B * p.NH;
    plan.add(2, Block::FwdOutputSm90, {u(std::min<int64_t>(tiles, dev.sm_count)), 1, 1}, c.siz_b_v);
  } else {
    plan.add(2, Block::Fwd, {u(p.Dv / c.siz_b_v), u((p.S + c.siz_b_q - 1) / c.siz_b_q), bh});
  }
  return plan;
}

}  // namespace tfla::ops
