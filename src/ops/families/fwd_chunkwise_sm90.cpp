// The chunkwise forward on the sm_90a engine: the gate kernel of fwd.chunkwise.mma, the state
// kernel on TMA and wgmma where Dqk is 128 or 256 (st_sm90=1; else the mma.sync one), then the
// output kernel on TMA, mbarrier rings and wgmma in warp-specialized warpgroups
// (kernel_templates/tfla/mlstm_{fwd_states,fwd_output}_sm90.cuh). It serves sm_90a devices with 16-bit inputs,
// Dqk a multiple of 64 up to 256 and Dv a multiple of 64; elsewhere the mma.sync family serves.
// The default's tiles and why: sm90_fwd_config in ops/fwd_config.cpp.
#include "ops/families/families.hpp"
#include "ops/fwd_config.hpp"

namespace tfla::ops {
namespace {

class FwdChunkwiseSm90 final : public TypedFamily<FwdConfig, &check_fwd_sm90_config, &fwd_kernels> {
 public:
  const char* name() const noexcept override { return "fwd.chunkwise.sm90"; }
  Op op() const noexcept override { return Op::Forward; }
  Form form() const noexcept override { return Form::Chunkwise; }
  Engine engine() const noexcept override { return Engine::Sm90; }
  std::string serves(const MlstmProblem& p, const DeviceLimits& dev) const override {
    return sm90_fwd_serves(p, dev);
  }
  bool preferred(const MlstmProblem&, const DeviceLimits&) const override { return true; }
  Config default_config(const MlstmProblem& p, const DeviceLimits& dev, int chunk) const override {
    return sm90_fwd_config(p, dev, chunk).to_config();
  }
  std::vector<Axis> axes(const MlstmProblem&) const override {
    return {values("chunk", {128, 256, 512}), values("siz_b_v", {64, 128, 256}), values("st_sm90", {1, 0}),
            state_blocks("st_"), values("st_sub", {32, 64})};
  }
};

}  // namespace

const Family& fwd_chunkwise_sm90_family() {
  static const FwdChunkwiseSm90 f;
  return f;
}

}  // namespace tfla::ops
