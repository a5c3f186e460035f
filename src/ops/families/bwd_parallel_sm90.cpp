// The parallel (quadratic) backward on the sm_90a engine: the chunkwise gate kernel, the sm90
// gradient tiles (dQ, and dK and dV apart or in the dK/dV kernel; kernel_templates/tfla/
// mlstm_bwd_{tile,dkv}_sm90.cuh) and the gate gradients over one chunk spanning the sequence
// (parallel_sm90_chunk), with no state or dC walk: the chunk has no state and no dC, so the tiles
// skip their inter parts. No initial states, dC_last, dC0 or saved buffer (a call with them runs
// chunkwise). It serves where the engine's backward does (Dqk 128 or 256, Dv a multiple of 64)
// with S up to 1024; where it is the default: parallel_sm90_bwd_by_default in ops/bwd_config.cpp.
#include "ops/bwd_config.hpp"
#include "ops/families/families.hpp"

namespace tfla::ops {
namespace {

class BwdParallelSm90 final
    : public TypedFamily<BwdConfig, &check_bwd_parallel_sm90_config, &bwd_kernels, &bwd_plan> {
 public:
  const char* name() const noexcept override { return "bwd.parallel.sm90"; }
  Op op() const noexcept override { return Op::Backward; }
  Form form() const noexcept override { return Form::Parallel; }
  Engine engine() const noexcept override { return Engine::Sm90; }
  std::string serves(const MlstmProblem& p, const DeviceLimits& dev) const override {
    return sm90_parallel_bwd_serves(p, dev);
  }
  bool preferred(const MlstmProblem& p, const DeviceLimits& dev) const override {
    return parallel_sm90_bwd_by_default(p, dev);
  }
  Config default_config(const MlstmProblem& p, const DeviceLimits& dev, int) const override {
    return parallel_sm90_bwd_config(p, dev).to_config();
  }
  // The gradient tiles' column tiles, dK and dV apart or in one kernel; the chunk is the sequence's.
  std::vector<Axis> axes(const MlstmProblem&) const override {
    Axis tl;
    for (int64_t nqk : {256, 128, 64}) {
      for (int64_t nv : {256, 128, 64}) tl.push_back({{"tl_dkv", 0}, {"siz_b_nqk", nqk}, {"siz_b_nv", nv}});
      tl.push_back({{"tl_dkv", 1}, {"siz_b_nqk", nqk}, {"siz_b_nv", 64}});
    }
    return {std::move(tl)};
  }
};

}  // namespace

const Family& bwd_parallel_sm90_family() {
  static const BwdParallelSm90 f;
  return f;
}

}  // namespace tfla::ops
