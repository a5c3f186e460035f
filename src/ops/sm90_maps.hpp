// Tensor maps of the ops' inputs for the sm90 engine's kernels.
#pragma once
#include "runtime/tensor_map.hpp"
#include "tfla/mlstm_sm90_params.cuh"
#include "tfla/tfla.hpp"

namespace tfla::ops {

// A 16-bit (D, S, NH, B) tensor (strides sb, sh, ss in elements) as TMA sees it: boxes of 64
// features by `rows` positions, 128B-swizzled. The ops' tensor checks guarantee what tensor maps
// need (and the sm90 kernels' 16-byte stores): 16-byte aligned addresses and strides.
inline rt::TensorMapSpec bshd_map(const void* base, DType dt, int64_t d, const MlstmProblem& p, long long sb,
                           long long sh, long long ss, unsigned rows) {
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
  return s;
}


// The parameter blocks of the chunk-state walks: the forward's state kernel (A = K, B = V) and
// the backward's dC kernel (A = Q, B = dH), 64-row boxes.
inline MlstmFwdStatesSm90Params fwd_states_sm90_params(const MlstmProblem& p, const MlstmFwdParams& prm) {
  MlstmFwdStatesSm90Params sp{};
  constexpr unsigned rows = StateWalkSm90Shape::kSub;
  sp.k = rt::tensor_map(bshd_map(prm.k, p.dtype, p.Dqk, p, prm.k_sb, prm.k_sh, prm.k_ss, rows));
  sp.v = rt::tensor_map(bshd_map(prm.v, p.dtype, p.Dv, p, prm.v_sb, prm.v_sh, prm.v_ss, rows));
  sp.p = prm;
  return sp;
}
inline MlstmBwdDstatesSm90Params bwd_dstates_sm90_params(const MlstmProblem& p, const MlstmBwdParams& g) {
  MlstmBwdDstatesSm90Params sp{};
  constexpr unsigned rows = StateWalkSm90Shape::kSub;
  sp.q = rt::tensor_map(bshd_map(g.q, p.dtype, p.Dqk, p, g.q_sb, g.q_sh, g.q_ss, rows));
  sp.dh = rt::tensor_map(bshd_map(g.dh, p.dtype, p.Dv, p, g.dh_sb, g.dh_sh, g.dh_ss, rows));
  sp.p = g;
  return sp;
}

}  // namespace tfla::ops
