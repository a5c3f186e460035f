// The recurrent step on plain CUDA cores (memory-bound): one fused kernel, Dv / siz_b_v CTAs per
// head, updates C, n and m and writes h (kernel_templates/tfla/mlstm_step.cuh). Where n and m
// are updated in place it runs in clusters of a head's CTAs, or is followed by the per-head n, m
// kernel as its programmatic dependent; several tokens on many CTAs run the n, m kernel first,
// which leaves per-token records for the fused kernel (step_plan's modes; ops/mlstm_step.cpp
// picks one per call). Default: default_step_config in ops/step_config.cpp (why). The tuner's
// space: every slice width the kernel takes (multiples of 16 dividing Dv) times the thread counts
// that leave 16, 32, 64 or 128 state values per thread, and 128, 256 and 512 threads.
#include <algorithm>

#include "ops/families/families.hpp"
#include "ops/step_config.hpp"

namespace tfla::ops {
namespace {

class Step final : public Family {
 public:
  const char* name() const noexcept override { return "step.recurrent.mma"; }
  Op op() const noexcept override { return Op::Step; }
  Form form() const noexcept override { return Form::Recurrent; }
  Engine engine() const noexcept override { return Engine::MmaSync; }
  const std::vector<KeyDef>& keys() const noexcept override { return StepConfig::key_defs(); }
  std::string serves(const MlstmProblem&, const DeviceLimits&) const override { return {}; }
  bool preferred(const MlstmProblem&, const DeviceLimits&) const override { return true; }
  Config default_config(const MlstmProblem& p, const DeviceLimits&, int) const override {
    return default_step_config(p).to_config();
  }
  // A pinned slice width without threads gets the default's thread rule for that width.
  Config complete(const MlstmProblem& p, const DeviceLimits&, const Config& pinned) const override {
    return resolve_step_config(p, pinned).to_config();
  }
  std::string reject(const Config& cfg, const MlstmProblem& p, const DeviceLimits& dev) const override {
    StepConfig c;
    try {
      c.apply(cfg);
    } catch (const Error& e) {
      return e.what();
    }
    if (const char* why = step_config_error(c, p)) return why;
    return over_registers(int64_t{p.Dqk} * c.siz_b_v, c.threads, "step kernel", dev);
  }
  std::vector<Axis> axes(const MlstmProblem& p) const override {
    Axis points;
    for (int64_t bv = 16; bv <= p.Dv; bv += 16) {
      if (p.Dv % bv) continue;
      std::vector<int64_t> threads{128, 256, 512};
      for (int64_t regs : {16, 32, 64, 128})
        if ((p.Dqk * bv) % regs == 0) threads.push_back(p.Dqk * bv / regs);
      std::sort(threads.begin(), threads.end());
      threads.erase(std::unique(threads.begin(), threads.end()), threads.end());
      for (int64_t nt : threads) points.push_back({{"siz_b_v", bv}, {"threads", nt}});
    }
    return {points};
  }
  std::vector<rt::KernelSpec> kernels(const MlstmProblem& p, const Config& cfg, const DeviceLimits&) const override {
    StepConfig c;
    c.apply(cfg);
    return step_kernels(p, c);
  }
  Plan plan(const MlstmProblem& p, const Config& cfg, const DeviceLimits&, bool) const override {
    StepConfig c;
    c.apply(cfg);
    return step_plan(p, c, STEP_NM_APART);
  }
};

}  // namespace

Plan step_plan(const MlstmProblem& p, const StepConfig& c, int nm_mode) {
  Plan plan;
  const unsigned heads = static_cast<unsigned>(p.B * p.NH);
  const rt::Grid3 grid{static_cast<unsigned>(c.slices(p.Dv)), heads, 1};
  if (nm_mode == STEP_NM_RECORDS) {  // the n, m kernel with the records first, the fused kernel its dependent
    plan.add(1, Block::Step, {heads, 1, 1});
    plan.add(0, Block::StepDependent, grid);
    return plan;
  }
  plan.add(0, nm_mode == STEP_NM_CLUSTER ? Block::StepCluster : Block::Step, grid);
  if (nm_mode == STEP_NM_DEPENDENT) plan.add(1, Block::StepDependent, {heads, 1, 1});
  return plan;
}

const Family& step_family() {
  static const Step f;
  return f;
}

}  // namespace tfla::ops
