// Filling the kernels' parameter blocks from the public tensor blocks. Every op's parameter
// block (MlstmFwdParams, MlstmBwdParams, MlstmStepParams) names its inputs and their strides the
// same way (q, q_sb, q_sh, q_ss, ...), as do the tensor blocks (ForwardTensors, BackwardTensors,
// StepTensors): one function fills them for all.
#pragma once
#include "ops/problem_check.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

// Writes resolved strides of one tensor into its three parameter fields.
template <class I>
void put_strides(I& sb, I& sh, I& ss, const Strides& s) {
  sb = s.b;
  sh = s.h;
  ss = s.s;
}

// q, k, v, i, f and their strides (all-zero strides resolved to contiguous).
template <class Params, class Tensors>
void fill_inputs(Params& prm, const Tensors& t, const MlstmProblem& p) {
  prm.q = t.q; prm.k = t.k; prm.v = t.v; prm.i = t.i; prm.f = t.f;
  put_strides(prm.q_sb, prm.q_sh, prm.q_ss, resolve(t.q_strides, p, p.Dqk));
  put_strides(prm.k_sb, prm.k_sh, prm.k_ss, resolve(t.k_strides, p, p.Dqk));
  put_strides(prm.v_sb, prm.v_sh, prm.v_ss, resolve(t.v_strides, p, p.Dv));
  put_strides(prm.i_sb, prm.i_sh, prm.i_ss, resolve_gate(t.i_strides, p));
  put_strides(prm.f_sb, prm.f_sh, prm.f_ss, resolve_gate(t.f_strides, p));
}

}  // namespace tfla::ops
