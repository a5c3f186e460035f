// The parameter blocks the ops hand to the kernels get each input's pointer and strides from
// the right tensor (no GPU: the fill is host code; a swapped stride would only show as wrong
// numbers on a GPU otherwise).
#include "tfla_catch.hpp"

#include "ops/params_fill.hpp"
#include "tfla/mlstm_params.cuh"
#include "tfla/mlstm_step_params.cuh"

using namespace tfla;

namespace {

template <class Params, class Tensors>
void check_fill() {
  MlstmProblem p;
  p.B = 2; p.NH = 3; p.S = 5; p.Dqk = 16; p.Dv = 32;
  Tensors t;
  int x[5];
  t.q = &x[0]; t.k = &x[1]; t.v = &x[2]; t.i = &x[3]; t.f = &x[4];
  t.q_strides = {1001, 1002, 1003};
  t.k_strides = {2001, 2002, 2003};
  t.v_strides = {3001, 3002, 3003};
  t.i_strides = {4001, 4002, 4003};
  t.f_strides = {};  // contiguous (B, NH, S)
  Params prm{};
  ops::fill_inputs(prm, t, p);
  CHECK(prm.q == &x[0]);
  CHECK(prm.k == &x[1]);
  CHECK(prm.v == &x[2]);
  CHECK(prm.i == &x[3]);
  CHECK(prm.f == &x[4]);
  CHECK((prm.q_sb == 1001 && prm.q_sh == 1002 && prm.q_ss == 1003));
  CHECK((prm.k_sb == 2001 && prm.k_sh == 2002 && prm.k_ss == 2003));
  CHECK((prm.v_sb == 3001 && prm.v_sh == 3002 && prm.v_ss == 3003));
  CHECK((prm.i_sb == 4001 && prm.i_sh == 4002 && prm.i_ss == 4003));
  CHECK((prm.f_sb == 3 * 5 && prm.f_sh == 5 && prm.f_ss == 1));
}

}  // namespace

TEST_CASE("fill_inputs maps every input and its strides, for every op's parameter block", "[ops]") {
  check_fill<MlstmFwdParams, ForwardTensors>();
  check_fill<MlstmFwdParams, BackwardTensors>();  // the backward's recompute of the forward
  check_fill<MlstmBwdParams, BackwardTensors>();
  check_fill<MlstmStepParams, StepTensors>();
}

TEST_CASE("contiguous feature strides resolve to (NH*S*D, S*D, D)", "[ops]") {
  MlstmProblem p;
  p.B = 2; p.NH = 3; p.S = 5; p.Dqk = 16; p.Dv = 32;
  StepTensors t;
  MlstmStepParams prm{};
  ops::fill_inputs(prm, t, p);
  CHECK((prm.q_sb == 3 * 5 * 16 && prm.q_sh == 5 * 16 && prm.q_ss == 16));
  CHECK((prm.v_sb == 3 * 5 * 32 && prm.v_sh == 5 * 32 && prm.v_ss == 32));
}
