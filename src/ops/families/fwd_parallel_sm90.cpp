// The parallel (quadratic) forward on the sm_90a engine: the chunkwise gate kernel and the sm90
// output kernel (TMA, mbarrier rings, wgmma; kernel_templates/tfla/mlstm_fwd_output_sm90.cuh)
// over one chunk spanning the sequence (parallel_sm90_chunk: 128, 256, 512 or 1024), with no state
// kernel: the chunk has no state, so the output kernel runs only its causal tiles. No initial or
// last states and no saved buffer (a call with them runs chunkwise). It serves sm_90a devices with
// 16-bit inputs, Dqk a multiple of 64 up to 256, Dv a multiple of 64 and S up to 1024; where it is
// the default: parallel_sm90_by_default in ops/fwd_config.cpp.
#include "ops/families/families.hpp"
#include "ops/fwd_config.hpp"

namespace tfla::ops {
namespace {

class FwdParallelSm90 final
    : public TypedFamily<FwdConfig, &check_fwd_parallel_sm90_config, &fwd_kernels, &fwd_plan> {
 public:
  const char* name() const noexcept override { return "fwd.parallel.sm90"; }
  Op op() const noexcept override { return Op::Forward; }
  Form form() const noexcept override { return Form::Parallel; }
  Engine engine() const noexcept override { return Engine::Sm90; }
  std::string serves(const MlstmProblem& p, const DeviceLimits& dev) const override {
    return sm90_parallel_fwd_serves(p, dev);
  }
  bool preferred(const MlstmProblem& p, const DeviceLimits& dev) const override {
    return parallel_sm90_by_default(p, dev);
  }
  Config default_config(const MlstmProblem& p, const DeviceLimits& dev, int) const override {
    return parallel_sm90_fwd_config(p, dev).to_config();
  }
  // The output kernel's column tile; the chunk is the sequence's.
  std::vector<Axis> axes(const MlstmProblem&) const override { return {values("siz_b_v", {64, 128, 256})}; }
};

}  // namespace

const Family& fwd_parallel_sm90_family() {
  static const FwdParallelSm90 f;
  return f;
}

}  // namespace tfla::ops
