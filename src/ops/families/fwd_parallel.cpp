// The parallel (quadratic) forward on mma.sync: the chunkwise output kernel alone over one chunk
// spanning the sequence, its gates scanned inside it (kernel_templates/tfla/mlstm_fwd_output.cuh
// with CHUNK = 0). No chunk states, so no initial or last states and no saved buffer. It is the
// default for short sequences (parallel_by_default in ops/fwd_config.cpp says why and up to
// where); its tiles: parallel_fwd_config there.
#include "ops/families/families.hpp"
#include "ops/fwd_config.hpp"

namespace tfla::ops {
namespace {

class FwdParallel final : public Family {
 public:
  const char* name() const noexcept override { return "fwd.parallel.mma"; }
  Op op() const noexcept override { return Op::Forward; }
  Form form() const noexcept override { return Form::Parallel; }
  Engine engine() const noexcept override { return Engine::MmaSync; }
  const std::vector<KeyDef>& keys() const noexcept override { return FwdConfig::key_defs(); }
  std::string serves(const MlstmProblem& p, const DeviceLimits&) const override {
    if (p.S > parallel_max_seq())
      return "parallel=1 supports S up to " + std::to_string(parallel_max_seq()) + " (got S = " +
             std::to_string(p.S) + "); use the chunkwise form (parallel=0)";
    return {};
  }
  bool preferred(const MlstmProblem& p, const DeviceLimits&) const override { return parallel_by_default(p); }
  Config default_config(const MlstmProblem& p, const DeviceLimits& dev, int) const override {
    return parallel_fwd_config(p, dev).to_config();
  }
  std::string reject(const Config& cfg, const MlstmProblem& p, const DeviceLimits& dev) const override {
    return check_typed<FwdConfig>(cfg, Form::Parallel, [&](const FwdConfig& c) { return check_fwd_config(c, p, dev); });
  }
  // Only the tile kernel's keys; key tiles must divide query tiles (the acceptance rule).
  std::vector<Axis> axes(const MlstmProblem&) const override {
    return {values("siz_b_q", {64, 128}), values("siz_b_kv", {32, 64}), values("siz_b_v", {64, 128, 256}),
            values("siz_b_kc", {32, 64}), warp_grids("")};
  }
  std::vector<rt::KernelSpec> kernels(const MlstmProblem& p, const Config& cfg,
                                      const DeviceLimits& dev) const override {
    FwdConfig c;
    c.apply(cfg);
    return fwd_kernels(p, c, dev);
  }
};

}  // namespace

const Family& fwd_parallel_family() {
  static const FwdParallel f;
  return f;
}

}  // namespace tfla::ops
