// Tensor maps of the ops' inputs for the sm90 engine's kernels.
#pragma once
#include <algorithm>
#include "runtime/tensor_map.hpp"
#include "tfla/mlstm_sm90_params.cuh"
#include "tfla/tfla.hpp"

namespace tfla::ops {

// The R-row tiles a persistent kernel numbers per head for a packed call (packed_tile_seq in
// seq_span.cuh): (U / R) floor((T + (U - 1) N) / U) for N sequences of T tokens in U-row chunks.
inline int64_t packed_row_tiles(const PackedSeqs& s, int64_t N, int64_t R) {
  const int64_t U = s.chunk;
  if (U <= 0 || U % R) throw Error(ErrorCode::Internal, "packed tiles: the chunk must be a multiple of the row tile");
  return (U / R) * ((s.T + (U - 1) * N) / U);
}

// A 16-bit (D, S, NH, B) tensor (strides sb, sh, ss in elements) as TMA sees it: boxes of 64
// features by `rows` positions, 128B-swizzled. The ops' tensor checks guarantee what tensor maps
// need (and the sm90 kernels' 16-byte stores): 16-byte aligned addresses and strides. packed_T >
// 0: packed sequences (PackedSeqs), the tensor (D, T, NH, 1) whose tokens the kernels address
// from each sequence's offset.
inline rt::TensorMapSpec bshd_map(const void* base, DType dt, int64_t d, const MlstmProblem& p, long long sb,
                           long long sh, long long ss, unsigned rows, long long packed_T = 0) {
  rt::TensorMapSpec s;
  s.base = base;
  s.dtype = dt;
  s.rank = 4;
  s.dims[0] = static_cast<uint64_t>(d);
  s.dims[1] = static_cast<uint64_t>(p.S);
  s.dims[2] = static_cast<uint64_t>(p.NH);
  s.dims[3] = static_cast<uint64_t>(p.B);
  s.strides[1] = static_cast<uint64_t>(ss) * 2;
  s.strides[2] = static_cast<uint64_t>(sh) * 2;
  s.strides[3] = static_cast<uint64_t>(sb) * 2;
  s.box[0] = 64;
  s.box[1] = rows;
  s.box[2] = 1;
  s.box[3] = 1;
  s.swizzle = 128;
  if (packed_T > 0) {  // one batch entry spanning the tensor (its stride is never stepped)
    s.dims[1] = static_cast<uint64_t>(packed_T);
    s.dims[3] = 1;
    const uint64_t extent = std::max(s.strides[1] * s.dims[1], s.strides[2] * s.dims[2]);
    s.strides[3] = (extent + 15) / 16 * 16;
  }
  return s;
}

// Chunk states (BH * NC, Dqk, Dv) of a 16-bit dtype as TMA sees them: boxes of 64 Dv columns by
// 64 Dqk rows of one chunk, 128B-swizzled.
inline rt::TensorMapSpec states_map(const void* base, const MlstmProblem& p, int nc) {
  rt::TensorMapSpec c;
  c.base = base;
  c.dtype = p.dtype;
  c.rank = 3;
  c.dims[0] = static_cast<uint64_t>(p.Dv);
  c.dims[1] = static_cast<uint64_t>(p.Dqk);
  c.dims[2] = static_cast<uint64_t>(p.B * p.NH) * static_cast<uint64_t>(nc);
  c.strides[1] = static_cast<uint64_t>(p.Dv) * 2;
  c.strides[2] = static_cast<uint64_t>(p.Dqk * p.Dv) * 2;
  c.box[0] = 64;
  c.box[1] = 64;
  c.box[2] = 1;
  c.swizzle = 128;
  return c;
}

// The tensor map of chunk states, or a zeroed one where the plan binds none (the parallel form,
// whose kernels then read no states).
inline TmaDesc states_desc(const void* base, const MlstmProblem& p, int nc) {
  return base ? rt::tensor_map(states_map(base, p, nc)) : TmaDesc{};
}

// The parameter blocks of the chunk-state walks: the forward's state kernel (A = K, B = V) and
// the backward's dC kernel (A = Q, B = dH), 64-row boxes.
inline MlstmFwdStatesSm90Params fwd_states_sm90_params(const MlstmProblem& p, const MlstmFwdParams& prm) {
  MlstmFwdStatesSm90Params sp{};
  constexpr unsigned rows = StateWalkSm90Shape::kSub;
  const long long packed_T = prm.packed.cu_seqlens ? prm.packed.T : 0;
  sp.k = rt::tensor_map(bshd_map(prm.k, p.dtype, p.Dqk, p, prm.k_sb, prm.k_sh, prm.k_ss, rows, packed_T));
  sp.v = rt::tensor_map(bshd_map(prm.v, p.dtype, p.Dv, p, prm.v_sb, prm.v_sh, prm.v_ss, rows, packed_T));
  sp.p = prm;
  return sp;
}
inline MlstmBwdDstatesSm90Params bwd_dstates_sm90_params(const MlstmProblem& p, const MlstmBwdParams& g) {
  MlstmBwdDstatesSm90Params sp{};
  constexpr unsigned rows = StateWalkSm90Shape::kSub;
  const long long packed_T = g.packed.cu_seqlens ? g.packed.T : 0;
  sp.q = rt::tensor_map(bshd_map(g.q, p.dtype, p.Dqk, p, g.q_sb, g.q_sh, g.q_ss, rows, packed_T));
  sp.dh = rt::tensor_map(bshd_map(g.dh, p.dtype, p.Dv, p, g.dh_sb, g.dh_sh, g.dh_ss, rows, packed_T));
  sp.p = g;
  return sp;
}

// The parameter block of a gradient tile kernel (mode 0 dQ, 1 dK, 2 dV; bn its column tile):
// the roles X, Z, W, Y of mlstm_bwd_tile_sm90.cuh as tensor maps, and its tiles.
inline MlstmBwdTileSm90Params bwd_tile_sm90_params(const MlstmProblem& p, const MlstmBwdParams& g, int mode,
                                                   int bn) {
  using Shape = BwdTileSm90Shape;
  struct In {
    const void* base;
    int64_t d;
    long long sb, sh, ss;
  };
  const In q{g.q, p.Dqk, g.q_sb, g.q_sh, g.q_ss}, k{g.k, p.Dqk, g.k_sb, g.k_sh, g.k_ss};
  const In v{g.v, p.Dv, g.v_sb, g.v_sh, g.v_ss}, dh{g.dh, p.Dv, g.dh_sb, g.dh_sh, g.dh_ss};
  const In& x = mode == 0 ? dh : mode == 1 ? v : k;
  const In& z = mode == 0 ? v : mode == 1 ? dh : q;
  const In& w = mode == 0 ? k : mode == 1 ? q : dh;
  auto map = [&](const In& t, unsigned rows) {
    return rt::tensor_map(bshd_map(t.base, p.dtype, t.d, p, t.sb, t.sh, t.ss, rows,
                                   g.packed.cu_seqlens ? g.packed.T : 0));
  };
  MlstmBwdTileSm90Params P{};
  P.x = map(x, Shape::kBR);
  P.z = map(z, Shape::kBT);
  P.w = map(w, Shape::kBT);
  P.y = states_desc(mode == 0 ? g.states_C : g.dstates_C, p, g.NC);
  P.p = g;
  const bool packed = g.packed.cu_seqlens != nullptr;
  const int64_t row_tiles = packed ? packed_row_tiles(g.packed, p.B, Shape::kBR) : (p.S + Shape::kBR - 1) / Shape::kBR;
  P.n_tiles = static_cast<int>((mode == 2 ? p.Dv : p.Dqk) / bn);
  const int64_t tiles = row_tiles * P.n_tiles * (packed ? 1 : p.B) * p.NH;
  if (tiles > INT32_MAX) throw Error(ErrorCode::InvalidArgument, "problem too large for the sm90 backward");
  P.row_tiles = static_cast<int>(row_tiles);
  P.tiles = static_cast<int>(tiles);
  return P;
}

// The parameter block of the dK/dV kernel (mlstm_bwd_dkv_sm90.cuh): q, k, v, dh in 64-row boxes,
// dC, and its tiles (a packed call's numbered as the gradient tile kernels' are).
inline MlstmBwdDkvSm90Params bwd_dkv_sm90_params(const MlstmProblem& p, const MlstmBwdParams& g) {
  constexpr unsigned rows = BwdDkvSm90Shape::kBR;
  const bool packed = g.packed.cu_seqlens != nullptr;
  const long long packed_T = packed ? g.packed.T : 0;
  MlstmBwdDkvSm90Params P{};
  P.q = rt::tensor_map(bshd_map(g.q, p.dtype, p.Dqk, p, g.q_sb, g.q_sh, g.q_ss, rows, packed_T));
  P.k = rt::tensor_map(bshd_map(g.k, p.dtype, p.Dqk, p, g.k_sb, g.k_sh, g.k_ss, rows, packed_T));
  P.v = rt::tensor_map(bshd_map(g.v, p.dtype, p.Dv, p, g.v_sb, g.v_sh, g.v_ss, rows, packed_T));
  P.dh = rt::tensor_map(bshd_map(g.dh, p.dtype, p.Dv, p, g.dh_sb, g.dh_sh, g.dh_ss, rows, packed_T));
  P.y = states_desc(g.dstates_C, p, g.NC);
  P.p = g;
  const int64_t row_tiles = packed ? packed_row_tiles(g.packed, p.B, BwdDkvSm90Shape::kBR)
                                   : (p.S + BwdDkvSm90Shape::kBR - 1) / BwdDkvSm90Shape::kBR;
  const int64_t tiles = row_tiles * (packed ? 1 : p.B) * p.NH;
  if (tiles > INT32_MAX) throw Error(ErrorCode::InvalidArgument, "problem too large for the sm90 backward");
  P.row_tiles = static_cast<int>(row_tiles);
  P.tiles = static_cast<int>(tiles);
  return P;
}

}  // namespace tfla::ops
