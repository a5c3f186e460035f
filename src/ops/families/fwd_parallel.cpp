// The parallel (quadratic) forward on mma.sync: the chunkwise output kernel alone over one chunk
// spanning the sequence, its gates scanned inside it (kernel_templates/tfla/mlstm_fwd_output.cuh
// with CHUNK = 0). No chunk states, so no initial or last states and no saved buffer. It is the
// default for short sequences (parallel_by_default in ops/fwd_config.cpp says why and up to
// where); its tiles: parallel_fwd_config there.
#include "ops/families/families.hpp"
#include "ops/fwd_config.hpp"

namespace tfla::ops {
namespace {

class FwdParallel final : public TypedFamily<FwdConfig, &check_fwd_config, &fwd_kernels, &fwd_plan> {
 public:
  const char* name() const noexcept override { return "fwd.parallel.mma"; }
  Op op() const noexcept override { return Op::Forward; }
  Form form() const noexcept override { return Form::Parallel; }
  Engine engine() const noexcept override { return Engine::MmaSync; }
  std::string serves(const MlstmProblem& p, const DeviceLimits&) const override { return parallel_seq_limit(p); }
  bool preferred(const MlstmProblem& p, const DeviceLimits& dev) const override { return parallel_by_default(p, dev); }
  Config default_config(const MlstmProblem& p, const DeviceLimits& dev, int) const override {
    return parallel_fwd_config(p, dev).to_config();
  }
  // Only the tile kernel's keys; key tiles must divide query tiles (the acceptance rule).
  std::vector<Axis> axes(const MlstmProblem&) const override {
    return {values("siz_b_q", {64, 128}), values("siz_b_kv", {32, 64}), values("siz_b_v", {64, 128, 256}),
            values("siz_b_kc", {32, 64}), warp_grids("")};
  }
};

}  // namespace

const Family& fwd_parallel_family() {
  static const FwdParallel f;
  return f;
}

}  // namespace tfla::ops
