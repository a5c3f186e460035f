#include "ops/kernel_space.hpp"

#include <array>
#include <set>

#include "ops/family.hpp"
#include "ops/mlstm_backward.hpp"
#include "ops/mlstm_forward.hpp"
#include "ops/packed.hpp"

namespace tfla::ops {
namespace {
const char* type_name(DType d) {
  return d == DType::BF16 ? "tfla::bf16" : d == DType::FP16 ? "tfla::fp16" : "float";
}
}  // namespace

rt::KernelSpec smoke_kernel(DType dtype) {
  return rt::render("smoke_axpy", "tfla/smoke.cuh", "tfla::smoke_axpy", "tfla::SmokeParams",
                    {{"T", type_name(dtype)}}, 256, 0, false);
}
rt::KernelSpec fill_kernel(DType dtype) {
  return rt::render("fill_random", "tfla/fill.cuh", "tfla::fill_random", "tfla::FillParams",
                    {{"T", type_name(dtype)}}, 256, 0, false);
}

std::vector<MlstmProblem> default_space_problems(const SpaceFilter& f) {
  std::vector<MlstmProblem> out;
  std::vector<std::array<int64_t, 5>> shapes;  // B, NH, S, num_seqs, max_seqlen
  if (f.packed.empty()) {
    for (int64_t s : f.seq_lens)
      for (auto [batch, heads] : f.batch_heads) shapes.push_back({batch, heads, s, 0, 0});
  } else {
    for (auto [n, maxlen] : f.packed) shapes.push_back({1, f.packed_heads, maxlen, n, maxlen});
  }
  for (DType dt : f.dtypes)
    for (auto [dqk, dv] : f.dims)
      for (const auto& [batch, heads, s, n, maxlen] : shapes)
          for (int var = 0; var < 3; ++var) {
            MlstmProblem p;
            p.B = batch;
            p.NH = heads;
            p.S = s;
            p.num_seqs = n;
            p.max_seqlen = maxlen;
            p.Dqk = dqk;
            p.Dv = dv;
            p.dtype = dt;
            p.gate_dtype = DType::FP32;
            p.variant = var == 0 ? Variant::Exp : Variant::Sig;
            p.normalize = var != 2;
            out.push_back(p);
          }
  return out;
}

std::vector<rt::KernelSpec> default_space_kernels(const SpaceFilter& f) {
  std::vector<rt::KernelSpec> out;
  std::set<std::string> seen;
  auto add = [&](rt::KernelSpec s) {
    if (seen.insert(s.key).second) out.push_back(std::move(s));
  };
  for (DType dt : f.dtypes) {
    add(smoke_kernel(dt));
    add(fill_kernel(dt));
  }
  add(fill_kernel(DType::FP32));  // fp32 gates are filled whatever the input dtype
  // Every family's default for every problem of the space (the step at one batch row of 8
  // heads and at 512 heads, one token).
  if (!f.packed.empty()) {
    // what a packed call selects: its pins, its config problem, the saved path's forward chunk
    for (const MlstmProblem& p : default_space_problems(f)) {
      const MlstmProblem lp = launch_problem(p);
      Config fs, bs;
      const FwdSelection& fwd = select_fwd(lp, packed_pins(p, {}, Op::Forward, fs), false, true);
      std::vector<const Family*> fams;
      std::vector<Config> cfgs;
      if (fwd.rejected.empty()) {
        fams.push_back(fwd.family);
        cfgs.push_back(fwd.cfg.to_config());
      }
      if (!(p.variant == Variant::Sig && !p.normalize)) {  // the backward's = sig's
        const Config& pins = packed_pins(p, {}, Op::Backward, bs);
        Config saved = pins;
        saved["chunk"] = fwd.cfg.chunk;
        for (const Config* c : {&pins, static_cast<const Config*>(&saved)}) {
          const BwdSelection& bwd = select_bwd(lp, *c, true, true);
          if (!bwd.rejected.empty()) continue;
          fams.push_back(bwd.family);
          cfgs.push_back(bwd.cfg.to_config());
        }
      }
      for (size_t i = 0; i < fams.size(); ++i)
        for (rt::KernelSpec& s : launch_kernels(*fams[i], lp, cfgs[i], true)) add(std::move(s));
    }
    return out;
  }
  const DeviceLimits& dev = DeviceLimits::reference();
  for (const MlstmProblem& p : default_space_problems(f))
    for (const Family* fam : families()) {
      if (fam->op() == Op::Backward && p.variant == Variant::Sig && !p.normalize) continue;  // = sig's
      std::vector<MlstmProblem> problems{p};
      if (fam->op() == Op::Step) {
        problems.clear();
        for (int64_t heads : {8, 512}) {
          MlstmProblem ps = p;
          ps.B = heads / 8;
          ps.NH = 8;
          ps.S = 1;
          problems.push_back(ps);
        }
      }
      for (const MlstmProblem& q : problems) {
        if (!fam->serves(q, dev).empty()) continue;
        for (rt::KernelSpec& s : fam->kernels(q, fam->default_config(q, dev), dev)) add(std::move(s));
      }
    }
  return out;
}

}  // namespace tfla::ops
