// The parallel (quadratic) backward on mma.sync: the dQ, dK and dV tiles in one launch over one
// chunk spanning the sequence (gates scanned inside), then the gate gradients. No states: no
// initial states, dC_last, dC0 or saved buffer. The default for short sequences
// (parallel_bwd_by_default in ops/bwd_config.cpp says why and up to where).
#include "ops/bwd_config.hpp"
#include "ops/families/families.hpp"
#include "ops/fwd_config.hpp"

namespace tfla::ops {
namespace {

class BwdParallel final : public Family {
 public:
  const char* name() const noexcept override { return "bwd.parallel.mma"; }
  Op op() const noexcept override { return Op::Backward; }
  Form form() const noexcept override { return Form::Parallel; }
  Engine engine() const noexcept override { return Engine::MmaSync; }
  const std::vector<KeyDef>& keys() const noexcept override { return BwdConfig::key_defs(); }
  std::string serves(const MlstmProblem& p, const DeviceLimits&) const override {
    if (p.S > parallel_max_seq())
      return "parallel=1 supports S up to " + std::to_string(parallel_max_seq()) + " (got S = " +
             std::to_string(p.S) + "); use the chunkwise form (parallel=0)";
    return {};
  }
  bool preferred(const MlstmProblem& p, const DeviceLimits&) const override { return parallel_bwd_by_default(p); }
  Config default_config(const MlstmProblem& p, const DeviceLimits& dev, int) const override {
    return parallel_bwd_config(p, dev).to_config();
  }
  std::string reject(const Config& cfg, const MlstmProblem& p, const DeviceLimits& dev) const override {
    return check_typed<BwdConfig>(cfg, Form::Parallel, [&](const BwdConfig& c) { return check_bwd_config(c, p, dev); });
  }
  std::vector<Axis> axes(const MlstmProblem&) const override {
    return {values("siz_b_r", {32, 64, 128}), values("siz_b_t", {32, 64}), values("siz_b_nqk", {64, 128, 256}),
            values("siz_b_nv", {64, 128, 256}), warp_grids("")};
  }
  std::vector<rt::KernelSpec> kernels(const MlstmProblem& p, const Config& cfg,
                                      const DeviceLimits& dev) const override {
    BwdConfig c;
    c.apply(cfg);
    return bwd_kernels(p, c, dev);
  }
};

}  // namespace

const Family& bwd_parallel_family() {
  static const BwdParallel f;
  return f;
}

}  // namespace tfla::ops
