// The parallel (quadratic) backward on mma.sync: the dQ, dK and dV tiles in one launch over one
// chunk spanning the sequence (gates scanned inside), then the gate gradients. No states: no
// initial states, dC_last, dC0 or saved buffer. The default for short sequences
// (parallel_bwd_by_default in ops/bwd_config.cpp says why and up to where).
#include "ops/bwd_config.hpp"
#include "ops/families/families.hpp"
#include "ops/fwd_config.hpp"

namespace tfla::ops {
namespace {

class BwdParallel final : public TypedFamily<BwdConfig, &check_bwd_config, &bwd_kernels, &bwd_plan> {
 public:
  const char* name() const noexcept override { return "bwd.parallel.mma"; }
  Op op() const noexcept override { return Op::Backward; }
  Form form() const noexcept override { return Form::Parallel; }
  Engine engine() const noexcept override { return Engine::MmaSync; }
  std::string serves(const MlstmProblem& p, const DeviceLimits&) const override { return parallel_seq_limit(p); }
  bool preferred(const MlstmProblem& p, const DeviceLimits&) const override { return parallel_bwd_by_default(p); }
  Config default_config(const MlstmProblem& p, const DeviceLimits& dev, int) const override {
    return parallel_bwd_config(p, dev).to_config();
  }
  std::vector<Axis> axes(const MlstmProblem&) const override {
    return {values("siz_b_r", {32, 64, 128}), values("siz_b_t", {32, 64}), values("siz_b_nqk", {64, 128, 256}),
            values("siz_b_nv", {64, 128, 256}), warp_grids("")};
  }
};

}  // namespace

const Family& bwd_parallel_family() {
  static const BwdParallel f;
  return f;
}

}  // namespace tfla::ops
