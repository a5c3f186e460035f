#include "ops/kernel_space.hpp"

#include <algorithm>
#include <array>
#include <functional>
#include <set>
#include <string>

#include "ops/family.hpp"
#include "ops/mlstm_backward.hpp"
#include "ops/mlstm_forward.hpp"
#include "ops/packed.hpp"
#include "store/env_key.hpp"

namespace tfla::ops {
namespace {
const char* type_name(DType d) {
  return d == DType::BF16 ? "tfla::bf16" : d == DType::FP16 ? "tfla::fp16" : "float";
}
// The step's problems of the space: one token at one batch row of 8 heads, and at 512 heads.
std::vector<MlstmProblem> step_problems(const MlstmProblem& p) {
  std::vector<MlstmProblem> out;
  for (int64_t heads : {8, 512}) {
    MlstmProblem ps = p;
    ps.B = heads / 8;
    ps.NH = 8;
    ps.S = 1;
    ps.num_seqs = ps.max_seqlen = 0;
    out.push_back(ps);
  }
  return out;
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

DeviceLimits space_limits(const std::string& arch) {
  const cache::EnvKey key = store::deviceless_env_key(arch);  // throws InvalidArgument for a bad form
  const int cc = 10 * key.cc_major + key.cc_minor;
  DeviceLimits l = DeviceLimits::reference();
  l.arch = arch;
  l.cc_major = key.cc_major;
  l.cc_minor = key.cc_minor;
  // the opt-in shared memory per block and the shared memory of an SM (CUDA's tables)
  if (cc == 80 || cc == 87) {
    l.smem_optin_bytes = 163 * 1024;
    l.smem_per_sm_bytes = 164 * 1024;
  } else if (cc == 86 || cc == 89 || cc >= 120) {
    l.smem_optin_bytes = 99 * 1024;
    l.smem_per_sm_bytes = 100 * 1024;
  } else if (cc < 80) {
    l.smem_optin_bytes = 96 * 1024;
    l.smem_per_sm_bytes = 96 * 1024;
  }
  return l;
}

namespace {

// The forward and backward selections a call of p makes on dev with no caller or tuned config:
// the default, the chunkwise default where the default is the parallel form and the call carries
// states, and the backward of a saved-states buffer (the forward's chunk). What select_fwd,
// select_bwd and select_bwd_for_saved choose, without their memo or the tuned configs.
void add_selected(const MlstmProblem& p, const DeviceLimits& dev, bool with_backward,
                  const std::function<void(std::vector<rt::KernelSpec>)>& add) {
  const bool packed = is_packed(p);
  const MlstmProblem lp = launch_problem(p);
  auto kernels = [&](const Family* fam, const Config& cfg) {
    if (fam && fam->reject(cfg, lp, dev).empty()) add(launch_kernels(*fam, lp, cfg, packed, dev));
  };
  const Config none;  // packed_pins returns it itself for a plain call
  Config fs, bs;
  const Config& fpins = packed_pins(p, none, Op::Forward, fs);
  int saved_chunk = 0;
  for (bool states : {false, true}) {
    FwdConfig c;
    c.apply(resolve_call(Op::Forward, lp, dev, fpins, fpins, states, packed).config);
    kernels(find_family(Op::Forward, c.form, c.engine), c.to_config());
    if (states) saved_chunk = c.chunk;
  }
  if (!with_backward) return;
  const Config& bpins = packed_pins(p, none, Op::Backward, bs);
  auto backward = [&](const Config& pins, bool states) {
    BwdConfig c;
    c.apply(resolve_call(Op::Backward, lp, dev, pins, pins, states, packed).config);
    kernels(find_family(Op::Backward, c.form, c.engine), c.to_config());
    return c;
  };
  backward(bpins, false);
  const BwdConfig with_states = backward(bpins, true);
  // a saved buffer's backward runs at the forward's chunk (select_bwd_for_saved)
  if (!with_states.parallel() && with_states.chunk != saved_chunk) {
    Config pins = bpins;
    pins["chunk"] = saved_chunk;
    backward(pins, true);
  }
}

}  // namespace

std::vector<rt::KernelSpec> default_space_kernels(const SpaceFilter& f) {
  std::vector<rt::KernelSpec> out;
  std::set<std::string> seen;
  auto add = [&](std::vector<rt::KernelSpec> specs) {
    for (rt::KernelSpec& s : specs)
      if (seen.insert(s.key).second) out.push_back(std::move(s));
  };
  for (DType dt : f.dtypes) add({smoke_kernel(dt), fill_kernel(dt)});
  add({fill_kernel(DType::FP32)});  // fp32 gates are filled whatever the input dtype
  const DeviceLimits dev = space_limits(f.arch);
  for (const MlstmProblem& p : default_space_problems(f)) {
    if (f.every_family && f.packed.empty()) {
      // each family's default wherever it serves (the step: one batch row of 8 heads, and 512)
      for (const Family* fam : families()) {
        if (fam->op() == Op::Backward && p.variant == Variant::Sig && !p.normalize) continue;  // = sig's
        std::vector<MlstmProblem> problems{p};
        if (fam->op() == Op::Step) problems = step_problems(p);
        for (const MlstmProblem& q : problems)
          if (fam->serves(q, dev).empty()) add(launch_kernels(*fam, q, fam->default_config(q, dev), false, dev));
      }
      continue;
    }
    // the backward of sig without the normalizer is sig's
    add_selected(p, dev, !(p.variant == Variant::Sig && !p.normalize), add);
    if (!f.packed.empty()) continue;
    for (const MlstmProblem& q : step_problems(p)) {
      const Resolved r = resolve(Op::Step, q, dev, {});
      add(launch_kernels(*r.family, q, r.config, false, dev));
    }
  }
  return out;
}

}  // namespace tfla::ops
