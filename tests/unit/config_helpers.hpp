// Shorthands for the unit tests of the kernel families' configs: the reference device's limits
// (the deviceless H100/H200 target) and the resolution paths of dispatch, typed.
#pragma once
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "ops/bwd_config.hpp"
#include "ops/family.hpp"
#include "ops/fwd_config.hpp"
#include "ops/mlstm_backward.hpp"
#include "ops/mlstm_forward.hpp"
#include "ops/step_config.hpp"

namespace tfla::test {

inline const ops::DeviceLimits& ref() { return ops::DeviceLimits::reference(); }

template <class Cfg> Cfg typed(const Config& c) {
  Cfg t;
  t.apply(c);
  return t;
}
// What dispatch resolves for a pinned config (empty: the op's default).
inline ops::FwdConfig fwd_resolve(const MlstmProblem& p, const Config& pinned) {
  return typed<ops::FwdConfig>(ops::resolve(ops::Op::Forward, p, ref(), pinned).config);
}
inline ops::BwdConfig bwd_resolve(const MlstmProblem& p, const Config& pinned) {
  return typed<ops::BwdConfig>(ops::resolve(ops::Op::Backward, p, ref(), pinned).config);
}
inline ops::StepConfig step_resolve(const MlstmProblem& p, const Config& pinned) {
  return typed<ops::StepConfig>(ops::resolve(ops::Op::Step, p, ref(), pinned).config);
}
// The op's default; chunk > 0: the chunkwise default of that chunk.
inline ops::FwdConfig fwd_default(const MlstmProblem& p, int chunk = 0) {
  return chunk > 0 ? ops::chunkwise_fwd_config(p, ref(), chunk) : fwd_resolve(p, {});
}
inline ops::BwdConfig bwd_default(const MlstmProblem& p, int chunk = 0) {
  return chunk > 0 ? ops::chunkwise_bwd_config(p, ref(), chunk) : bwd_resolve(p, {});
}
// The chunkwise default: the sm90 engine's where it serves the problem, else mma.sync's.
// A bf16-by-default problem with fp32 gates (the unit tests' shapes).
inline MlstmProblem make_problem(int64_t B, int64_t NH, int64_t S, int64_t dqk, int64_t dv, DType dt = DType::BF16) {
  MlstmProblem p;
  p.B = B;
  p.NH = NH;
  p.S = S;
  p.Dqk = dqk;
  p.Dv = dv;
  p.dtype = dt;
  p.gate_dtype = DType::FP32;
  return p;
}
// The problems of a test grid: every B x NH x S x (Dqk, Dv) x dtype (bf16, fp32) x variant (exp,
// sig), with fp32 gates; describe() names one for INFO.
inline std::vector<MlstmProblem> problem_grid(std::initializer_list<int64_t> Bs, std::initializer_list<int64_t> NHs,
                                              std::initializer_list<int64_t> Ss,
                                              std::initializer_list<std::pair<int64_t, int64_t>> heads) {
  std::vector<MlstmProblem> out;
  for (int64_t B : Bs)
    for (int64_t NH : NHs)
      for (int64_t S : Ss)
        for (auto [dqk, dv] : heads)
          for (DType dt : {DType::BF16, DType::FP32})
            for (Variant var : {Variant::Exp, Variant::Sig}) {
              out.push_back(make_problem(B, NH, S, dqk, dv, dt));
              out.back().variant = var;
            }
  return out;
}
inline std::string describe(const MlstmProblem& p) {
  return "B=" + std::to_string(p.B) + " NH=" + std::to_string(p.NH) + " S=" + std::to_string(p.S) + " " +
         std::to_string(p.Dqk) + "x" + std::to_string(p.Dv) + " " + to_string(p.dtype) + " " + to_string(p.variant);
}
inline ops::FwdConfig cw_fwd(const MlstmProblem& p) {
  return ops::sm90_fwd_serves(p, ref()).empty() ? ops::sm90_fwd_config(p, ref()) : ops::chunkwise_fwd_config(p, ref());
}
inline ops::BwdConfig cw_bwd(const MlstmProblem& p) {
  return ops::sm90_bwd_preferred(p, ref()) ? ops::sm90_bwd_config(p, ref()) : ops::chunkwise_bwd_config(p, ref());
}
inline ops::FwdConfig par_fwd(const MlstmProblem& p) { return ops::parallel_fwd_config(p, ref()); }
inline ops::BwdConfig par_bwd(const MlstmProblem& p) { return ops::parallel_bwd_config(p, ref()); }
// The rule of the config's own family (form and engine).
inline std::string check_fwd(const ops::FwdConfig& c, const MlstmProblem& p) {
  return ops::find_family(ops::Op::Forward, c.form, c.engine)->reject(c.to_config(), p, ref());
}
inline std::string check_bwd(const ops::BwdConfig& c, const MlstmProblem& p) {
  return ops::find_family(ops::Op::Backward, c.form, c.engine)->reject(c.to_config(), p, ref());
}
// What a call with these tensors selects.
inline ops::FwdConfig sel_fwd(const MlstmProblem& p, const ForwardTensors& t, const Config& caller) {
  return ops::select_fwd(p, caller, !ops::parallel_conflict(t).empty()).cfg;
}
inline ops::BwdConfig sel_bwd(const MlstmProblem& p, const BackwardTensors& t, const Config& caller) {
  return ops::select_bwd(p, caller, !ops::parallel_conflict(t).empty()).cfg;
}

}  // namespace tfla::test
