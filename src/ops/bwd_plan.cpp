// The backward families' plans (bwd.parallel.sm90, bwd.parallel.mma, bwd.chunkwise.mma,
// bwd.chunkwise.sm90), their kernel indices in bwd_kernels' order: the sm90 parallel form's gate
// kernel, gradient tiles and gate gradients; the mma.sync parallel form's tile and gate-gradient
// kernels; the chunkwise form's recompute (gate and state kernels), dC recurrence, dQ / dK / dV
// tiles and gate gradients, then the split walks' fixes (the recompute's where st_seg > 1, then
// the dC walk's).
#include <algorithm>

#include "ops/plan.hpp"
#include "tfla/mlstm_sm90_params.cuh"

namespace tfla::ops {
namespace {
unsigned u(int64_t x) { return static_cast<unsigned>(x); }

// The sm90 gradient tiles from kernel index `first`: dQ, then dK and dV, or the dK/dV kernel.
// Persistent: one CTA per SM, or per tile where there are fewer.
void add_gradient_tiles(Plan& plan, const MlstmProblem& p, const BwdConfig& c, const DeviceLimits& dev, int first) {
  const int64_t row_tiles = (p.S + BwdTileSm90Shape::kBR - 1) / BwdTileSm90Shape::kBR;
  for (int mode = 0; mode < (c.tl_dkv ? 1 : 3); ++mode) {
    const int bn = mode == 2 ? c.siz_b_nv : c.siz_b_nqk;
    const int64_t tiles = row_tiles * ((mode == 2 ? p.Dv : p.Dqk) / bn) * p.B * p.NH;
    plan.add(first + mode, Block::BwdTileSm90, {u(std::min<int64_t>(tiles, dev.sm_count)), 1, 1}, bn, mode);
  }
  if (c.tl_dkv) {
    const int64_t tiles = (p.S + BwdDkvSm90Shape::kBR - 1) / BwdDkvSm90Shape::kBR * p.B * p.NH;
    plan.add(first + 1, Block::BwdDkvSm90, {u(std::min<int64_t>(tiles, dev.sm_count)), 1, 1});
  }
}
}  // namespace

Plan bwd_plan(const MlstmProblem& p, const BwdConfig& c, const DeviceLimits& dev, bool saved) {
  Plan plan;
  const size_t bh = static_cast<size_t>(p.B * p.NH);
  const unsigned ubh = u(p.B * p.NH);
  // The sm90 parallel form: the gate kernel, the gradient tiles and the gate gradients at its one
  // chunk (kernel indices: gates 0, dQ 1, then dK and dV 2 and 3 or the dK/dV kernel 2, then the
  // local gate gradients and df); no chunk states, no dC.
  if (c.parallel() && c.engine == Engine::Sm90) {
    plan.nc = 1;
    plan.xparts = static_cast<int>(p.Dqk / c.siz_b_nqk);
    const size_t s_pad = static_cast<size_t>(c.chunk);
    plan.take(Region::GateB, Buffer::Workspace, bh * s_pad * 4);
    plan.take(Region::GateU, Buffer::Workspace, bh * s_pad * 4);
    plan.take(Region::GatePm, Buffer::Workspace, bh * s_pad * 4);
    plan.take(Region::ChunkG, Buffer::Workspace, bh * 4);
    plan.take(Region::ChunkUmax, Buffer::Workspace, bh * 4);
    plan.take(Region::Xpart, Buffer::Workspace, bh * s_pad * 2 * plan.xparts * 4);
    plan.take(Region::RowX, Buffer::Workspace, bh * s_pad * 4);
    plan.take(Region::ChunkX, Buffer::Workspace, bh * 4);
    plan.add(0, Block::Fwd, {1, ubh, 1});
    add_gradient_tiles(plan, p, c, dev, 1);
    const int gates = c.tl_dkv ? 3 : 4;
    plan.add(gates, Block::Bwd, {1, ubh, 1});
    plan.add(gates + 1, Block::Bwd, {1, ubh, 1});
    return plan;
  }
  if (c.parallel()) {  // the three tile modes in one launch, then the gate gradients; xpart alone
    plan.xparts = static_cast<int>(p.Dqk / c.siz_b_nqk);
    plan.take(Region::Xpart, Buffer::Workspace, bh * static_cast<size_t>(p.S) * 2 * plan.xparts * 4);
    const unsigned rows = u((p.S + c.siz_b_r - 1) / c.siz_b_r);
    plan.add(0, Block::Bwd, {u(2 * (p.Dqk / c.siz_b_nqk) + p.Dv / c.siz_b_nv), rows, ubh});
    plan.add(1, Block::Bwd, {1, ubh, 1});
    return plan;
  }
  const int64_t nc = (p.S + c.chunk - 1) / c.chunk;
  const size_t s_pad = static_cast<size_t>(nc) * c.chunk;
  const size_t eb = dtype_bytes(p.dtype);
  plan.nc = static_cast<int>(nc);
  plan.dclast_parts = static_cast<int>((p.Dqk / c.ds_siz_b_k) * (p.Dv / c.ds_siz_b_v));
  plan.xparts = static_cast<int>(p.Dqk / c.siz_b_nqk);
  // gate data and chunk states: the forward's saved buffer, or recomputed into the workspace
  if (saved) {
    take_chunkwise(plan, Buffer::Saved, p, c.chunk, true);
    plan.regions[static_cast<size_t>(Region::StatesN)] = {};  // in the buffer, but the backward reads no n
  } else {
    const size_t unc = static_cast<size_t>(nc);
    plan.take(Region::GateB, Buffer::Workspace, bh * s_pad * 4);
    plan.take(Region::GateU, Buffer::Workspace, bh * s_pad * 4);
    plan.take(Region::GatePm, Buffer::Workspace, bh * s_pad * 4);
    plan.take(Region::ChunkG, Buffer::Workspace, bh * unc * 4);
    plan.take(Region::ChunkUmax, Buffer::Workspace, bh * unc * 4);
    plan.take(Region::ChunkM, Buffer::Workspace, bh * (unc + 1) * 4);
    plan.take(Region::StatesC, Buffer::Workspace, bh * unc * p.Dqk * p.Dv * eb);
    plan.take(Region::CLast, Buffer::Workspace, bh * p.Dqk * p.Dv * 4);
  }
  plan.take(Region::DstatesC, Buffer::Workspace, bh * static_cast<size_t>(nc) * p.Dqk * p.Dv * eb);
  plan.take(Region::DclastDot, Buffer::Workspace, bh * plan.dclast_parts * 4);
  plan.take(Region::Xpart, Buffer::Workspace, bh * s_pad * 2 * plan.xparts * 4);
  plan.take(Region::RowX, Buffer::Workspace, bh * s_pad * 4);
  plan.take(Region::ChunkX, Buffer::Workspace, bh * static_cast<size_t>(nc) * 4);
  take_split_walk(plan, p, nc, saved ? SegmentPlan{} : state_segments(c.st_seg, nc, p.B * p.NH));
  plan.dwalk = state_segments(c.ds_seg, nc, p.B * p.NH);
  if (plan.dwalk.nseg > 1)
    plan.take(Region::SegDC, Buffer::Workspace, bh * static_cast<size_t>(plan.dwalk.nseg) * p.Dqk * p.Dv * 4);

  // the kernels after the tiles: one index earlier where dK and dV are one kernel (tl_dkv)
  const int tiles_end = c.tl_dkv ? 5 : 6;
  const int st_fix = tiles_end + 2, ds_fix = c.st_seg > 1 ? st_fix + 1 : st_fix;
  if (!saved) {  // the recompute: the forward's gate and state kernels
    plan.add(0, Block::Fwd, {u(nc), ubh, 1});
    add_state_walk(plan, p, c.st_sm90 != 0, c.st_siz_b_k, c.st_siz_b_v, 1, st_fix);
  }
  // the dC walk, split into segments of the sequence where the config asks (then its fix kernel)
  const unsigned ds_rows = ubh * u(plan.dwalk.nseg);  // heads x segments
  if (c.ds_sm90)
    plan.add(2, Block::BwdWalkSm90, {u(p.Dv / c.ds_siz_b_v), ds_rows, 1});
  else
    plan.add(2, Block::Bwd, {u(p.Dv / c.ds_siz_b_v), u(p.Dqk / c.ds_siz_b_k), ds_rows});
  if (plan.dwalk.nseg > 1) plan.add(ds_fix, Block::Bwd, {u((p.Dqk * p.Dv / 8 + 255) / 256), ubh, 1});
  if (c.tl_sm90) {
    add_gradient_tiles(plan, p, c, dev, 3);
  } else {
    const unsigned rows = u((p.S + c.siz_b_r - 1) / c.siz_b_r);
    plan.add(3, Block::Bwd, {u(p.Dqk / c.siz_b_nqk), rows, ubh});
    plan.add(4, Block::Bwd, {u(p.Dqk / c.siz_b_nqk), rows, ubh});
    plan.add(5, Block::Bwd, {u(p.Dv / c.siz_b_nv), rows, ubh});
  }
  plan.add(tiles_end, Block::Bwd, {u(nc), ubh, 1});
  plan.add(tiles_end + 1, Block::Bwd, {u(nc), ubh, 1});
  return plan;
}

}  // namespace tfla::ops
