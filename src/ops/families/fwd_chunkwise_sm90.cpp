// The chunkwise forward on the sm_90a engine: the gate kernel of fwd.chunkwise.mma, the state
// kernel on TMA and wgmma where Dqk is 128 or 256 (st_sm90=1; else the mma.sync one), then the
// output kernel on TMA, mbarrier rings and wgmma in warp-specialized warpgroups
// (kernel_templates/tfla/mlstm_{fwd_states,fwd_output}_sm90.cuh); or, with fused=1, the gate
// kernel at chunk 64 and the fused walk (mlstm_fwd_fused_sm90.cuh), which keeps the state on chip
// (with st_seg > 1 split into segments of the sequence, after a walk that leaves only the
// segments' summaries and the fold to their start states).
// It serves sm_90a devices with 16-bit inputs, Dqk a multiple of 64 up to 256 and Dv a multiple
// of 64 (the fused walk: Dqk 64, 128 or 256, Dv a multiple of 128); elsewhere the mma.sync family
// serves.
// The default's tiles and why: sm90_fwd_config in ops/fwd_config.cpp.
#include "ops/families/families.hpp"
#include "ops/fwd_config.hpp"

namespace tfla::ops {
namespace {

class FwdChunkwiseSm90 final : public TypedFamily<FwdConfig, &check_fwd_sm90_config, &fwd_kernels, &fwd_plan> {
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
  Config complete(const MlstmProblem& p, const DeviceLimits& dev, const Config& pinned) const override {
    Config full = Family::complete(p, dev, pinned);
    if (full.at("st_sm90") == 0)
      take_mma_walk_tiles(full, chunkwise_fwd_config(p, dev, static_cast<int>(full.at("chunk"))).to_config(), pinned,
                          "st");
    return full;
  }
  // The state kernel is one axis: the sm90 kernel in its two Dv tiles (where Dqk is 128 or 256)
  // or the mma.sync kernel in its blocks and sub-block lengths, each with the three kernels
  // (fused = 0); or the fused forward, which reads no other key but st_seg and fused_bv: its
  // point sets them all to the reference device's default (what a call with a saved buffer then
  // runs), so it is one candidate whatever the other axes chose (two where the 256-column walk
  // serves), or one per st_seg where that axis is walked.
  std::vector<Axis> axes(const MlstmProblem& p) const override {
    Axis states;
    Config fused = sm90_fwd_config(p, DeviceLimits::reference()).to_config();
    fused["fused"] = 1;
    const bool split = p.B * p.NH <= 32 && p.S >= 8192;  // few heads on a long sequence
    if (split) fused.erase("st_seg");  // the fused walk's split is the st_seg axis too
    fused["fused_bv"] = 128;
    states.push_back(fused);
    if (!split && check_fwd_fused_sm90(p, DeviceLimits::reference(), 256).empty()) {
      fused["fused_bv"] = 256;  // the walk in 256-column CTAs (Dqk <= 128): half the walks
      states.push_back(fused);
    }
    if (p.Dqk % 128 == 0)
      for (int64_t bv : {128, 64})
        states.push_back({{"fused", 0}, {"st_sm90", 1}, {"st_siz_b_k", p.Dqk}, {"st_siz_b_v", bv}});
    for (Config c : state_blocks("st_"))
      for (int64_t sub : {64, 32}) {
        c["fused"] = 0;
        c["st_sm90"] = 0;
        c["st_sub"] = sub;
        states.push_back(c);
      }
    std::vector<Axis> axes = {values("chunk", {128, 256, 512}), values("siz_b_v", {64, 128, 256})};
    // the state walk's sequence split (st_seg; with fused=1 the fused walk's)
    if (split) axes.push_back(values("st_seg", {1, 2, 4, 8}));
    axes.push_back(std::move(states));  // last: the fused point overrides every other choice
    return axes;
  }
};

}  // namespace

const Family& fwd_chunkwise_sm90_family() {
  static const FwdChunkwiseSm90 f;
  return f;
}

}  // namespace tfla::ops
