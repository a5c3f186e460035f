// The chunkwise backward on the sm_90a engine: the recompute's state kernel and the reverse dC
// recurrence as chunk-state walks (st_sm90 / ds_sm90; kernel_templates/tfla/
// mlstm_{fwd_states,bwd_dstates}_sm90.cuh) and the dQ / dK / dV tile kernels (tl_sm90;
// mlstm_bwd_tile_sm90.cuh) on TMA and wgmma, the gate kernels of bwd.chunkwise.mma; each of the
// three parts can also run bwd.chunkwise.mma's kernels. It serves sm_90a devices with 16-bit
// inputs, Dqk 128 or 256 and Dv a multiple of 64. Its default and why: sm90_bwd_config in
// ops/bwd_config.cpp.
#include "ops/bwd_config.hpp"
#include "ops/families/families.hpp"

namespace tfla::ops {
namespace {

class BwdChunkwiseSm90 final : public TypedFamily<BwdConfig, &check_bwd_sm90_config, &bwd_kernels, &bwd_plan> {
 public:
  const char* name() const noexcept override { return "bwd.chunkwise.sm90"; }
  Op op() const noexcept override { return Op::Backward; }
  Form form() const noexcept override { return Form::Chunkwise; }
  Engine engine() const noexcept override { return Engine::Sm90; }
  std::string serves(const MlstmProblem& p, const DeviceLimits& dev) const override {
    return sm90_bwd_serves(p, dev);
  }
  // The default where its gradient tiles run and win (sm90_bwd_preferred says where and why).
  bool preferred(const MlstmProblem& p, const DeviceLimits& dev) const override { return sm90_bwd_preferred(p, dev); }
  Config default_config(const MlstmProblem& p, const DeviceLimits& dev, int chunk) const override {
    return sm90_bwd_config(p, dev, chunk).to_config();
  }
  Config complete(const MlstmProblem& p, const DeviceLimits& dev, const Config& pinned) const override {
    Config full = Family::complete(p, dev, pinned);
    if (full.at("st_sm90") != 0 && full.at("ds_sm90") != 0) return full;  // both walks on the engine
    const Config mma = chunkwise_bwd_config(p, dev, static_cast<int>(full.at("chunk"))).to_config();
    take_mma_walk_tiles(full, mma, pinned, "st");
    take_mma_walk_tiles(full, mma, pinned, "ds");
    // the dC walk's split goes with its tiles (split_dc_walk chose them together); the
    // recompute's st_seg is the forward's, whichever kernel walks
    if (full.at("ds_sm90") == 0 && !pinned.count("ds_seg")) full["ds_seg"] = mma.at("ds_seg");
    return full;
  }
  // The state kernels as one axis each: the sm90 walk in its two Dv tiles or the mma.sync
  // kernel's default blocks. The gradient tiles as one axis: the sm90 tile kernels in their
  // column tiles (dK and dV apart, or in one kernel: tl_dkv), or the mma.sync kernels in 64-row
  // tiles (the mma.sync family walks the rest).
  std::vector<Axis> axes(const MlstmProblem& p) const override {
    Axis st, ds, tl;
    for (int64_t bv : {128, 64}) {
      st.push_back({{"st_sm90", 1}, {"st_siz_b_k", p.Dqk}, {"st_siz_b_v", bv}});
      ds.push_back({{"ds_sm90", 1}, {"ds_siz_b_k", p.Dqk}, {"ds_siz_b_v", bv}});
    }
    st.push_back({{"st_sm90", 0}, {"st_siz_b_k", 128}, {"st_siz_b_v", 128}, {"st_warps_m", 4}, {"st_warps_n", 2}});
    ds.push_back({{"ds_sm90", 0}, {"ds_siz_b_k", 128}, {"ds_siz_b_v", 128}, {"ds_warps_m", 4}, {"ds_warps_n", 2}});
    for (int64_t nqk : {256, 128, 64}) {
      for (int64_t nv : {256, 128, 64})
        tl.push_back({{"tl_sm90", 1}, {"tl_dkv", 0}, {"siz_b_r", 128}, {"siz_b_t", 64}, {"siz_b_nqk", nqk},
                      {"siz_b_nv", nv}});
      tl.push_back({{"tl_sm90", 1}, {"tl_dkv", 1}, {"siz_b_r", 128}, {"siz_b_t", 64}, {"siz_b_nqk", nqk},
                    {"siz_b_nv", 64}});
    }
    for (int64_t nqk : {256, 128})
      for (int64_t nv : {256, 128})
        tl.push_back({{"tl_sm90", 0}, {"tl_dkv", 0}, {"siz_b_r", 64}, {"siz_b_t", 64}, {"siz_b_nqk", nqk},
                      {"siz_b_nv", nv}, {"siz_b_kc", 64}, {"warps_m", 2}, {"warps_n", 4}});
    std::vector<Axis> axes = {values("chunk", {128, 256, 512}), std::move(tl), std::move(st), std::move(ds)};
    // few heads on a long sequence: both walks' sequence splits (st_seg, ds_seg) as one axis
    if (p.B * p.NH <= 32 && p.S >= 8192) {
      Axis seg;
      for (int64_t n : {1, 2, 4, 8}) seg.push_back({{"st_seg", n}, {"ds_seg", n}});
      axes.push_back(std::move(seg));
    }
    return axes;
  }
};

}  // namespace

const Family& bwd_chunkwise_sm90_family() {
  static const BwdChunkwiseSm90 f;
  return f;
}

}  // namespace tfla::ops
