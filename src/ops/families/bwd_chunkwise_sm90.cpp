// The chunkwise backward on the sm_90a engine: the recompute's state kernel and the reverse dC
// recurrence as chunk-state walks on TMA and wgmma (st_sm90 / ds_sm90; kernel_templates/tfla/
// mlstm_{fwd_states,bwd_dstates}_sm90.cuh), the gate kernels and the dQ / dK / dV tile kernels of
// bwd.chunkwise.mma. It serves sm_90a devices with 16-bit inputs, Dqk 128 or 256 and Dv a
// multiple of 64. Not the backward's default (slower as measured); the tuner times it beside the
// mma.sync family. Its default and why: sm90_bwd_config in ops/bwd_config.cpp.
#include "ops/bwd_config.hpp"
#include "ops/families/families.hpp"

namespace tfla::ops {
namespace {

class BwdChunkwiseSm90 final : public TypedFamily<BwdConfig, &check_bwd_sm90_config, &bwd_kernels> {
 public:
  const char* name() const noexcept override { return "bwd.chunkwise.sm90"; }
  Op op() const noexcept override { return Op::Backward; }
  Form form() const noexcept override { return Form::Chunkwise; }
  Engine engine() const noexcept override { return Engine::Sm90; }
  std::string serves(const MlstmProblem& p, const DeviceLimits& dev) const override {
    return sm90_bwd_serves(p, dev);
  }
  // Slower than the mma.sync family as measured (sm90_bwd_config says by how much): pinned
  // (engine=1) or tuned only.
  bool preferred(const MlstmProblem&, const DeviceLimits&) const override { return false; }
  Config default_config(const MlstmProblem& p, const DeviceLimits& dev, int chunk) const override {
    return sm90_bwd_config(p, dev, chunk).to_config();
  }
  // The state kernels as one axis each: the sm90 walk in its two Dv tiles or the mma.sync
  // kernel's default blocks; the gradient tiles as the mma.sync family walks them.
  std::vector<Axis> axes(const MlstmProblem& p) const override {
    Axis st, ds;
    for (int64_t bv : {128, 64}) {
      st.push_back({{"st_sm90", 1}, {"st_siz_b_k", p.Dqk}, {"st_siz_b_v", bv}});
      ds.push_back({{"ds_sm90", 1}, {"ds_siz_b_k", p.Dqk}, {"ds_siz_b_v", bv}});
    }
    st.push_back({{"st_sm90", 0}, {"st_siz_b_k", 128}, {"st_siz_b_v", 128}, {"st_warps_m", 4}, {"st_warps_n", 2}});
    ds.push_back({{"ds_sm90", 0}, {"ds_siz_b_k", 128}, {"ds_siz_b_v", 128}, {"ds_warps_m", 4}, {"ds_warps_n", 2}});
    return {values("chunk", {128, 256, 64, 512}), values("siz_b_r", {32, 64, 128}),
            values("siz_b_t", {32, 64, 128}),     values("siz_b_nqk", {64, 128, 256}),
            values("siz_b_nv", {64, 128, 256}),   values("siz_b_kc", {32, 64}),
            warp_grids(""),                       std::move(st),
            std::move(ds)};
  }
};

}  // namespace

const Family& bwd_chunkwise_sm90_family() {
  static const BwdChunkwiseSm90 f;
  return f;
}

}  // namespace tfla::ops
