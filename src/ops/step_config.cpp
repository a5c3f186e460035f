#include "ops/step_config.hpp"

#include <vector>

#include "ops/config_keys.hpp"
#include "ops/render_args.hpp"
#include "tfla/mlstm_step_params.cuh"

namespace tfla::ops {

namespace {
const KeyTable<StepConfig>& table() {
  static const KeyTable<StepConfig> t({
      {{"siz_b_v", 16, 512, "Dv columns of C per CTA"}, &StepConfig::siz_b_v},
      {{"threads", 32, 1024, "threads per CTA"}, &StepConfig::threads},
      {{"cluster", 0, 1, "in place: one cluster launch where a wave holds the clusters (0: two launches)"},
       &StepConfig::cluster},
  });
  return t;
}
}  // namespace

const std::vector<KeyDef>& StepConfig::key_defs() { return table().defs(); }
Config StepConfig::to_config() const { return table().to_config(*this); }
void StepConfig::apply(const Config& c) { table().apply(*this, c, "step config"); }

namespace {
constexpr int kMaxStateRegs = 128;      // fp32 state values per thread (registers)
constexpr int kDefaultStateRegs = 64;   // the default's target
constexpr int kMaxThreads = 1024;
constexpr int kStaticSmemBytes = 48 * 1024;
constexpr int kRegisterFile = 65536;  // 32-bit registers per SM
// The fused kernel's registers a thread (held by min_blocks): at most 128 in CTAs of 256 threads
// or more (two such CTAs on an SM), at most 168 in smaller ones (three CTAs of 128 threads).
constexpr int kMaxThreadRegs = 128;
constexpr int kMaxThreadRegsSmall = 168;

// The fewest threads (so the most state values per thread, up to regs) that make a valid
// config of slice width bv for p, or 0 when none within 512 threads is valid.
int threads_for(const MlstmProblem& p, int bv, int regs) {
  for (int nt = 32; nt <= 512; nt += 32) {
    StepConfig c;
    c.siz_b_v = bv;
    c.threads = nt;
    if (step_state_regs(static_cast<int>(p.Dqk), bv, nt) <= regs && !step_config_error(c, p))
      return nt;
  }
  return 0;
}
}  // namespace

// Why this default: the step is memory-bound (it reads and writes the fp32 C once per call), so
// the config only has to keep enough bytes in flight on every SM and waste little.
// - Slice: 64 Dv columns per CTA (the legal width nearest 64, wider on a tie): Dv / 64 CTAs per
//   head, each re-reading only q and k (1 KiB at Dqk = 256, bf16) per 64 KiB of state; up to 8
//   CTAs a head (Dv <= 512), so an in-place call can be one cluster launch.
// - Threads: each thread keeps Dqk * 64 / threads state values in registers, all loaded before
//   use; 64 values (256 threads at Dqk = 256: 16 16-byte loads in flight per thread).
// Measured on H100 (Dqk = 256, Dv = 512, bf16, mLSTMexp, T = 1, `tfla bench step --config`), us
// per call at B*NH = 8 / 32 / 128 / 512: 64 columns x 256 threads 5.98 / 11.08 / 52.22 / 187.66;
// x 128 threads 6.16 / 11.26 / 52.37 / 187.15; 32 x 128: 6.17 / 12.36 / 53.84 / 191.63; 32 x 256:
// 6.10 / 11.40 / 52.28 / 188.79; 128 x 256: 7.26 / 11.14 / 52.80 / 186.92; 16 x 64: 6.20 / 12.14
// / 57.29 / 203.57. The default is the best or within 0.4% of it at every size. (That was the
// two-kernel step. With the fused kernel on an H200, `tfla tune --op step --bh 8 --seq 1` timed 32
// columns at 6.2 us of GPU time against 6.8 for the default, mLSTMexp; but 16 CTAs a head make an
// in-place call two launches instead of one cluster launch.)
StepConfig default_step_config(const MlstmProblem& p) {
  const int dv = static_cast<int>(p.Dv);
  StepConfig best{};
  int best_dist = -1;
  for (int bv = dv; bv >= 16; bv -= 16) {  // widest first: ties keep the wider slice
    if (dv % bv) continue;
    int nt = threads_for(p, bv, kDefaultStateRegs);
    if (!nt) nt = threads_for(p, bv, kMaxStateRegs);
    if (!nt) continue;
    const int dist = bv > 64 ? bv - 64 : 64 - bv;
    if (best_dist < 0 || dist < best_dist) {
      best.siz_b_v = bv;
      best.threads = nt;
      best_dist = dist;
    }
  }
  if (best_dist < 0) {  // unreachable for valid problems (Dqk, Dv multiples of 16 up to 512)
    best.siz_b_v = 16;
    best.threads = 128;
  }
  return best;
}

StepConfig resolve_step_config(const MlstmProblem& p, const Config& pinned) {
  StepConfig c = default_step_config(p);
  // A pinned slice width without threads: derive the threads for it as the default would.
  if (pinned.count("siz_b_v") && !pinned.count("threads")) {
    const int bv = static_cast<int>(pinned.at("siz_b_v"));
    const int nt = threads_for(p, bv, kDefaultStateRegs);
    const int nt_max = threads_for(p, bv, kMaxStateRegs);
    if (nt || nt_max) c.threads = nt ? nt : nt_max;
  }
  c.apply(pinned);
  return c;
}

int step_smem(const StepConfig& c, const MlstmProblem& p, int pf) {
  return step_smem_bytes(static_cast<int>(dtype_bytes(p.dtype)), static_cast<int>(p.Dqk), c.siz_b_v,
                         c.threads, pf);
}

int step_prefetch_tokens(const StepConfig& c, const MlstmProblem& p) {
  int pf = 1;
  while (pf < 8 && pf < p.S) pf *= 2;
  while (pf > 1 && step_smem(c, p, pf) > kStaticSmemBytes) pf /= 2;
  return pf;
}

// The first violated rule, or null. Allocation-free: the dispatch's default search calls it.
const char* step_config_error(const StepConfig& c, const MlstmProblem& p) {
  const int dqk = static_cast<int>(p.Dqk), dv = static_cast<int>(p.Dv);
  if (c.siz_b_v < 16 || c.siz_b_v % 16 || dv % c.siz_b_v) return "siz_b_v must be a multiple of 16 dividing Dv";
  if (c.threads < 32 || c.threads > kMaxThreads || c.threads % 32)
    return "threads must be a multiple of 32 in [32, 1024]";
  if (c.threads % step_threads_per_row(c.siz_b_v))
    return "threads must be a multiple of siz_b_v / 4 (the threads of one C row)";
  if (dqk % step_rows_per_pass(c.siz_b_v, c.threads))
    return "Dqk must be a multiple of threads / (siz_b_v / 4) (the C rows of one pass)";
  if (step_state_regs(dqk, c.siz_b_v, c.threads) > kMaxStateRegs)
    return "Dqk * siz_b_v / threads (state values per thread, in registers) must be at most 128";
  // The register file (64K per SM) must hold one CTA: the state plus ~32 registers per thread
  // (more would spill: at 1024 threads a thread gets 64 registers, at 512 threads 128).
  if ((step_state_regs(dqk, c.siz_b_v, c.threads) + 32) * c.threads > kRegisterFile)
    return "(Dqk * siz_b_v / threads + 32) * threads (registers of a CTA) must be at most 65536";
  if (step_smem(c, p) > kStaticSmemBytes) return "the kernel's static shared memory exceeds 48 KiB";
  return nullptr;
}

std::string check_step_config(const StepConfig& c, const MlstmProblem& p) {
  const char* why = step_config_error(c, p);
  return why ? why : std::string();
}

std::vector<rt::KernelSpec> step_kernels(const MlstmProblem& p, const StepConfig& c) {
  const bool exp = p.variant == Variant::Exp;
  return {
      // mLSTMexp always normalizes: one kernel whatever p.normalize says. Registers are capped
      // (kMaxThreadRegs): left alone, ptxas took 170 for mLSTMexp at one token and 256 threads,
      // one CTA per SM; the smaller CTAs spill at 128 but not at 168.
      rt::with_min_blocks(
          rt::render("mlstm_step_fused", "tfla/mlstm_step.cuh", "tfla::mlstm_step_fused", "tfla::MlstmStepParams",
                     {{"T", device_type(p.dtype)}, {"G", device_type(p.gate_dtype)}, {"DQK", arg(p.Dqk)},
                      {"DV", arg(p.Dv)}, {"BV", arg(c.siz_b_v)}, {"NT", arg(c.threads)},
                      {"PF", arg(step_prefetch_tokens(c, p))}, {"EXP", arg(exp)},
                      {"NORMALIZE", arg(exp || p.normalize)}},
                     c.threads, 0, /*uses_smem_arg=*/false),
          kRegisterFile / (c.threads * (c.threads >= 256 ? kMaxThreadRegs : kMaxThreadRegsSmall))),
      rt::render("mlstm_step_nm", "tfla/mlstm_step.cuh", "tfla::mlstm_step_nm", "tfla::MlstmStepParams",
                 {{"T", device_type(p.dtype)}, {"G", device_type(p.gate_dtype)}, {"DQK", arg(p.Dqk)},
                  {"DV", arg(p.Dv)}, {"BV", arg(c.siz_b_v)}, {"NA", arg(STEP_NM_THREADS)}, {"EXP", arg(exp)},
                  {"NORMALIZE", arg(exp || p.normalize)}},
                 STEP_NM_THREADS, 0, /*uses_smem_arg=*/false),
  };
}

}  // namespace tfla::ops
