// The kernel instantiations of the default configuration space: the problems a user is
// expected to run (dtypes x variants x common head dims x short/long sequences x one head or a
// full batch). By default the kernels the library's default selections run for them on a device
// of the filter's arch (what `tfla compile` prepares for deployment); with every_family, each
// kernel family's default wherever the family serves (what the NVRTC tests compile, so every
// family's template is built).
#pragma once
#include <vector>

#include <string>

#include "ops/family.hpp"
#include "runtime/kernel.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

struct SpaceFilter {
  std::vector<DType> dtypes{DType::BF16, DType::FP16, DType::FP32};
  std::vector<std::pair<int, int>> dims{{64, 64}, {128, 128}, {128, 256}, {256, 256},
                                        {256, 512}, {96, 160}, {16, 16},  {512, 512}};
  // short sequences (the parallel forms; on the sm90 engine one kernel set per chunk covering S:
  // 128, 256 and 512 where it is the default) and a long one
  std::vector<int64_t> seq_lens{64, 256, 512, 8192};
  // (B, NH): one head, whose long walks the defaults split into sequence segments; a batch of 64
  // heads, which fills the GPU (unsplit walks, the fused forward where it serves); and of 128,
  // where the fused forward walks 256 columns a CTA (Dqk <= 128, Dv 256: two waves of 128-column
  // walks become one)
  std::vector<std::pair<int64_t, int64_t>> batch_heads{{1, 1}, {8, 8}, {8, 16}};
  // (N, max_seqlen) of packed calls (cu_seqlens) at packed_heads heads: when given, the space is
  // the kernels those calls' forward and backward select (compiled for packed sequences) for
  // every dtype, head-dim pair and variant above, instead of the plain problems' defaults
  std::vector<std::pair<int64_t, int64_t>> packed;
  int64_t packed_heads = 8;
  // the target: which families serve and what they default to (its shared memory, the engine)
  std::string arch = "sm_90a";
  // each family's default where it serves, not only the selected ones (plain problems only)
  bool every_family = false;
};
// The limits the space's selections are made for: the reference device with the arch's compute
// capability and shared memory. Throws InvalidArgument unless arch is sm_XY[suffix] (e.g. sm_90a).
DeviceLimits space_limits(const std::string& arch);
// Problems of the space (variants exp, sig, sig without normalizer); with filter.packed, the
// packed problems (B = 1, S = T = max_seqlen, num_seqs = N).
std::vector<MlstmProblem> default_space_problems(const SpaceFilter& filter);
// Distinct rendered kernels (by key) of those problems' default configs, plus utility kernels.
std::vector<rt::KernelSpec> default_space_kernels(const SpaceFilter& filter);
// Utility kernels: the smoke kernel and the random fill, one per dtype.
rt::KernelSpec smoke_kernel(DType dtype);
rt::KernelSpec fill_kernel(DType dtype);

}  // namespace tfla::ops
