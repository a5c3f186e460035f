// The plan's carving and the executor: each Block kind's parameter block, made from the op's
// blocks (the sm90 kinds wrap them with tensor maps, memoized per address and shape by
// rt::tensor_map), then launched.
#include "ops/plan.hpp"

#include <algorithm>
#include <cstdint>

#include "ops/sm90_maps.hpp"
#include "runtime/tensor_map.hpp"
#include "tfla/mlstm_sm90_params.cuh"

namespace tfla::ops {

const char* to_string(Region r) noexcept {
  static constexpr const char* names[kRegions] = {
      "gate_b",    "gate_u",     "gate_pm", "chunk_g", "chunk_umax", "chunk_m", "states_C",
      "states_n",  "C_last",     "dstates_C", "dclast_dot", "xpart", "row_x", "chunk_x",
      "seg_C",     "seg_n",      "seg_m",   "seg_mloc", "seg_dC"};
  const size_t i = static_cast<size_t>(r);
  return i < kRegions ? names[i] : "?";
}

const char* to_string(Block b) noexcept {
  switch (b) {
    case Block::Fwd: return "fwd";
    case Block::FwdWalk: return "fwd_walk";
    case Block::FwdWalkSm90: return "fwd_walk_sm90";
    case Block::FwdOutputSm90: return "fwd_output_sm90";
    case Block::FwdFusedSm90: return "fwd_fused_sm90";
    case Block::Bwd: return "bwd";
    case Block::BwdWalkSm90: return "bwd_walk_sm90";
    case Block::BwdTileSm90: return "bwd_tile_sm90";
    case Block::BwdDkvSm90: return "bwd_dkv_sm90";
    case Block::Step: return "step";
    case Block::StepDependent: return "step_dependent";
    case Block::StepCluster: return "step_cluster";
  }
  return "?";
}

void Plan::take(Region r, Buffer b, size_t bytes) {
  size_t& end = b == Buffer::Saved ? saved_bytes : workspace_bytes;
  size_t rounded = 0, next = 0;
  if (__builtin_add_overflow(bytes, size_t{255}, &rounded) || __builtin_add_overflow(end, rounded / 256 * 256, &next))
    throw Error(ErrorCode::InvalidArgument,
                std::string("the ") + (b == Buffer::Saved ? "saved-states buffer" : "workspace") +
                    " of this problem and config exceeds the address space (chunk states scale with B * NH * S / "
                    "chunk * Dqk * Dv): a shorter S, a larger chunk or fewer heads per call");
  rounded = rounded / 256 * 256;
  regions[static_cast<size_t>(r)] = {b, end, rounded};
  end = next;
}

void Plan::add(int kernel, Block block, rt::Grid3 grid, int tile, int mode) {
  if (count >= kMaxLaunches) throw Error(ErrorCode::Internal, "a launch plan holds at most 12 launches");
  launches[static_cast<size_t>(count++)] = {static_cast<uint8_t>(kernel), block, static_cast<uint8_t>(mode), tile, grid};
}

namespace {

// The sm90 output kernel's block: tensor maps over q, k, v and the chunk states, and its tiles.
MlstmFwdSm90Params fwd_output_sm90_params(const MlstmProblem& p, const MlstmFwdParams& prm, int siz_b_v) {
  using Shape = FwdOutputSm90Shape;
  MlstmFwdSm90Params P{};
  P.p = prm;
  const long long T = prm.packed.cu_seqlens ? prm.packed.T : 0;  // packed sequences: (D, T, NH, 1)
  P.q = rt::tensor_map(bshd_map(prm.q, p.dtype, p.Dqk, p, prm.q_sb, prm.q_sh, prm.q_ss, Shape::kBQ, T));
  P.k = rt::tensor_map(bshd_map(prm.k, p.dtype, p.Dqk, p, prm.k_sb, prm.k_sh, prm.k_ss, Shape::kBKV, T));
  P.v = rt::tensor_map(bshd_map(prm.v, p.dtype, p.Dv, p, prm.v_sb, prm.v_sh, prm.v_ss, Shape::kBKV, T));
  P.c = states_desc(prm.states_C, p, prm.NC);
  P.q_tiles = static_cast<int>((p.S + Shape::kBQ - 1) / Shape::kBQ);
  P.v_tiles = static_cast<int>(p.Dv / siz_b_v);
  const int64_t tiles = int64_t{P.q_tiles} * P.v_tiles * p.B * p.NH;
  if (tiles > INT32_MAX) throw Error(ErrorCode::InvalidArgument, "problem too large for the sm90 forward");
  P.tiles = static_cast<int>(tiles);
  return P;
}

// The fused forward's block: tensor maps of 64-row boxes over q, k, v, and one map over the three
// gate rows of a chunk (fwd_plan puts gate_b, gate_u and gate_pm one after another, each
// (BH, S_pad) fp32).
// gate_chunk: the gate kernel's chunk (64, or a saved layout's), whose rows the walk reads. A
// split's segments (set in prm by the summary walk's launch) count chunks of gate_chunk; the
// walk's count its chunks of 64.
MlstmFwdFusedSm90Params fwd_fused_sm90_params(const MlstmProblem& p, const MlstmFwdParams& prm, int gate_chunk) {
  constexpr unsigned rows = FwdFusedSm90Shape::kChunk;
  MlstmFwdFusedSm90Params P{};
  P.p = prm;
  P.p.NC = static_cast<int>((p.S + rows - 1) / rows);
  if (gate_chunk <= 0 || gate_chunk % static_cast<int>(rows))
    throw Error(ErrorCode::Internal, "fused forward: its gate rows' chunk must be a multiple of 64");
  P.gate_sub = gate_chunk / static_cast<int>(rows);
  if (P.p.nseg > 1) P.p.seg_chunks *= P.gate_sub;
  const int64_t gate_nc = (p.S + gate_chunk - 1) / gate_chunk;
  const long long T = prm.packed.cu_seqlens ? prm.packed.T : 0;  // packed sequences: (D, T, NH, 1)
  P.q = rt::tensor_map(bshd_map(prm.q, p.dtype, p.Dqk, p, prm.q_sb, prm.q_sh, prm.q_ss, rows, T));
  P.k = rt::tensor_map(bshd_map(prm.k, p.dtype, p.Dqk, p, prm.k_sb, prm.k_sh, prm.k_ss, rows, T));
  P.v = rt::tensor_map(bshd_map(prm.v, p.dtype, p.Dv, p, prm.v_sb, prm.v_sh, prm.v_ss, rows, T));
  rt::TensorMapSpec g;
  g.base = prm.gate_b;
  g.dtype = DType::FP32;
  g.rank = 3;
  g.dims[0] = static_cast<uint64_t>(gate_nc * gate_chunk);
  g.dims[1] = static_cast<uint64_t>(p.B * p.NH);
  g.dims[2] = 3;
  g.strides[1] = g.dims[0] * 4;
  const auto addr = [](const float* x) { return reinterpret_cast<uintptr_t>(x); };
  g.strides[2] = addr(prm.gate_u) - addr(prm.gate_b);
  if (addr(prm.gate_pm) - addr(prm.gate_u) != g.strides[2])
    throw Error(ErrorCode::Internal, "fused forward: the gate rows are not evenly spaced in the workspace");
  g.box[0] = rows;
  g.box[1] = 1;
  g.box[2] = 3;
  P.gates = rt::tensor_map(g);
  return P;
}

// The state walk's split in f: its segments, and where a split walk leaves their ends.
void set_walk(const Plan& plan, const PlanBases& bases, MlstmFwdParams& f) {
  f.nseg = plan.walk.nseg;
  f.seg_chunks = plan.walk.seg_chunks;
  f.seg_pieces = plan.walk.pieces;
  if (plan.walk.nseg > 1) {
    f.seg_C = bases.at<float>(plan, Region::SegC);
    f.seg_n = bases.at<float>(plan, Region::SegN);
    f.seg_m = bases.at<float>(plan, Region::SegM);
    f.seg_mloc = bases.at<float>(plan, Region::SegMloc);
  }
}

// A grid-dependent kernel (every chunkwise one: launch_kernels) is launched as a programmatic
// dependent of the stream's previous kernel: it is scheduled as that kernel's last CTAs exit,
// not after its completion is seen by the stream, and its entry waits for that completion
// before anything else.
template <class P> void run(const rt::LoadedKernel& k, rt::Grid3 grid, CUstream stream, const P& prm) {
  if (k.grid_dependent()) k.launch_dependent(grid, stream, &prm, sizeof(prm));
  else k.launch(grid, stream, &prm, sizeof(prm));
}

}  // namespace

void bind_regions(const Plan& plan, const PlanBases& bases, MlstmFwdParams& f) {
  f.gate_b = bases.at<float>(plan, Region::GateB);
  f.gate_u = bases.at<float>(plan, Region::GateU);
  f.gate_pm = bases.at<float>(plan, Region::GatePm);
  f.chunk_g = bases.at<float>(plan, Region::ChunkG);
  f.chunk_umax = bases.at<float>(plan, Region::ChunkUmax);
  f.chunk_m = bases.at<float>(plan, Region::ChunkM);
  f.states_C = bases.at(plan, Region::StatesC);
  f.states_n = bases.at<float>(plan, Region::StatesN);
  f.NC = plan.nc;
}

void execute(const Plan& plan, const rt::LoadedKernel* const* kernels, const MlstmProblem& p, const PlanBases& bases,
             const ParamBlocks& b, CUstream stream) {
  for (int i = 0; i < plan.count; ++i) {
    const Launch& l = plan.launches[static_cast<size_t>(i)];
    const rt::LoadedKernel& k = *kernels[l.kernel];
    switch (l.block) {
      case Block::Fwd: run(k, l.grid, stream, *b.f); break;
      case Block::FwdWalk:
        set_walk(plan, bases, *b.f);
        run(k, l.grid, stream, *b.f);
        break;
      case Block::FwdWalkSm90: {
        set_walk(plan, bases, *b.f);
        run(k, l.grid, stream, fwd_states_sm90_params(p, *b.f));
        break;
      }
      case Block::FwdOutputSm90: run(k, l.grid, stream, fwd_output_sm90_params(p, *b.f, l.tile)); break;
      case Block::FwdFusedSm90: run(k, l.grid, stream, fwd_fused_sm90_params(p, *b.f, l.tile)); break;
      case Block::Bwd: run(k, l.grid, stream, *b.g); break;
      case Block::BwdWalkSm90: run(k, l.grid, stream, bwd_dstates_sm90_params(p, *b.g)); break;
      case Block::BwdTileSm90: run(k, l.grid, stream, bwd_tile_sm90_params(p, *b.g, l.mode, l.tile)); break;
      case Block::BwdDkvSm90: run(k, l.grid, stream, bwd_dkv_sm90_params(p, *b.g)); break;
      case Block::Step: run(k, l.grid, stream, *b.s); break;
      case Block::StepDependent: k.launch_dependent(l.grid, stream, b.s, sizeof(*b.s)); break;
      case Block::StepCluster: k.launch_cluster(l.grid, l.grid.x, stream, b.s); break;
    }
  }
}

}  // namespace tfla::ops
