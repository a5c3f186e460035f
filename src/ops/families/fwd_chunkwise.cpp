// The chunkwise forward on mma.sync: gate preprocessing, the inter-chunk state recurrence and
// the tiled intra-chunk output, three kernels (kernel_templates/tfla/mlstm_fwd_{gates,states,
// output}.cuh). The default's tiles and why they are what they are: chunkwise_fwd_config in
// ops/fwd_config.cpp. The tuner walks chunk lengths 64..512 and the tiles of both tiled kernels.
#include "ops/families/families.hpp"
#include "ops/fwd_config.hpp"

namespace tfla::ops {
namespace {

class FwdChunkwise final : public TypedFamily<FwdConfig, &check_fwd_config, &fwd_kernels, &fwd_plan> {
 public:
  const char* name() const noexcept override { return "fwd.chunkwise.mma"; }
  Op op() const noexcept override { return Op::Forward; }
  Form form() const noexcept override { return Form::Chunkwise; }
  Engine engine() const noexcept override { return Engine::MmaSync; }
  std::string serves(const MlstmProblem&, const DeviceLimits&) const override { return {}; }
  bool preferred(const MlstmProblem&, const DeviceLimits&) const override { return true; }
  Config default_config(const MlstmProblem& p, const DeviceLimits& dev, int chunk) const override {
    return chunkwise_fwd_config(p, dev, chunk).to_config();
  }
  // Chunk lengths beyond 512 make the intra-chunk part dominate; tiles below 64 rows underfill
  // the tensor cores at these head sizes.
  std::vector<Axis> axes(const MlstmProblem&) const override {
    return {values("chunk", {64, 128, 256, 512}), values("siz_b_q", {64, 128}),
            values("siz_b_kv", {64, 128}),        values("siz_b_v", {64, 128, 256}),
            values("siz_b_kc", {32, 64}),         warp_grids(""),
            state_blocks("st_"),                  values("st_sub", {32, 64})};
  }
};

}  // namespace

const Family& fwd_chunkwise_family() {
  static const FwdChunkwise f;
  return f;
}

}  // namespace tfla::ops
