// The chunkwise backward on mma.sync: the forward's gate and state kernels (a recompute, skipped
// with saved states), the reverse dC recurrence, the dQ / dK / dV tile kernels and the gate
// gradients (kernel_templates/tfla/mlstm_bwd_*.cuh). The default: chunkwise_bwd_config in
// ops/bwd_config.cpp (why it is what it is). The tuner walks chunk lengths, the gradient tiles
// and the state and dC blocks.
#include "ops/bwd_config.hpp"
#include "ops/families/families.hpp"

namespace tfla::ops {
namespace {

class BwdChunkwise final : public TypedFamily<BwdConfig, &check_bwd_config, &bwd_kernels, &bwd_plan> {
 public:
  const char* name() const noexcept override { return "bwd.chunkwise.mma"; }
  Op op() const noexcept override { return Op::Backward; }
  Form form() const noexcept override { return Form::Chunkwise; }
  Engine engine() const noexcept override { return Engine::MmaSync; }
  std::string serves(const MlstmProblem&, const DeviceLimits&) const override { return {}; }
  bool preferred(const MlstmProblem&, const DeviceLimits&) const override { return true; }
  Config default_config(const MlstmProblem& p, const DeviceLimits& dev, int chunk) const override {
    return chunkwise_bwd_config(p, dev, chunk).to_config();
  }
  std::vector<Axis> axes(const MlstmProblem&) const override {
    return {values("chunk", {64, 128, 256, 512}), values("siz_b_r", {32, 64, 128}),
            values("siz_b_t", {32, 64, 128}),     values("siz_b_nqk", {64, 128, 256}),
            values("siz_b_nv", {64, 128, 256}),   values("siz_b_kc", {32, 64}),
            warp_grids(""),                       state_blocks("st_"),
            values("st_sub", {32, 64}),           state_blocks("ds_"),
            values("ds_sub", {32, 64})};
  }
};

}  // namespace

const Family& bwd_chunkwise_family() {
  static const BwdChunkwise f;
  return f;
}

}  // namespace tfla::ops
