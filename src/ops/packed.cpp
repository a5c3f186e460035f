#include "ops/packed.hpp"

#include "runtime/log.hpp"

#include <string>

namespace tfla::ops {

int64_t packed_length_bucket(int64_t max_seqlen) {
  if (max_seqlen > 1024) return (max_seqlen + 1023) / 1024 * 1024;
  int64_t b = 64;
  while (b < max_seqlen) b *= 2;
  return b;
}

MlstmProblem launch_problem(const MlstmProblem& p) {
  if (!is_packed(p)) return p;
  MlstmProblem lp = p;
  lp.B = p.num_seqs;
  lp.S = packed_length_bucket(p.max_seqlen);
  lp.num_seqs = 0;
  lp.max_seqlen = 0;
  return lp;
}

MlstmProblem packed_config_problem(const MlstmProblem& lp) {
  MlstmProblem cp = lp;
  int64_t b = 1;
  while (b < lp.B) b *= 2;
  cp.B = b;
  return cp;
}

const Config& packed_pins(const MlstmProblem& p, const Config& caller, Op op, Config& storage) {
  if (!is_packed(p)) return caller;
  Config& pins = storage;
  pins = caller;
  auto force = [&](const char* key, int64_t value, const char* why) {
    auto it = pins.find(key);
    if (it != pins.end() && it->second != value)
      throw Error(ErrorCode::InvalidArgument, std::string("packed sequences (cu_seqlens) ") + why + ": config key " +
                                                  key + "=" + std::to_string(it->second) + " is not available with them");
    pins[key] = value;
  };
  force(kFormKey, 0, "run the chunkwise form");
  force("st_seg", 1, "walk each sequence's states whole");
  if (op == Op::Backward) {
    force("ds_seg", 1, "walk each sequence's state gradients whole");
  }
  return pins;
}

void check_cu_seqlens(const MlstmProblem& p, const void* cu_seqlens, bool int64) {
  if (!is_packed(p)) {
    if (cu_seqlens)
      throw Error(ErrorCode::InvalidArgument,
                  "cu_seqlens is set but problem.num_seqs = 0: set num_seqs and max_seqlen for packed sequences");
    return;
  }
  if (!cu_seqlens)
    throw Error(ErrorCode::InvalidArgument, "cu_seqlens is null: a packed problem (num_seqs = " +
                                                std::to_string(p.num_seqs) + ") needs its N + 1 offsets on the device");
  if (reinterpret_cast<uintptr_t>(cu_seqlens) % (int64 ? 8 : 4))
    throw Error(ErrorCode::InvalidArgument,
                std::string("cu_seqlens is not aligned to its element size (") + (int64 ? "int64" : "int32") + ")");
}

void check_selection_packed(bool selection_packed, const MlstmProblem& p, const char* op) {
  if (selection_packed != is_packed(p))
    throw Error(ErrorCode::Internal, std::string("a ") + op + " selection for " +
                                         (selection_packed ? "packed" : "plain") + " sequences launched for " +
                                         (is_packed(p) ? "packed" : "plain") + " ones");
}

std::vector<rt::KernelSpec> launch_kernels(const Family& f, const MlstmProblem& lp, const Config& cfg, bool packed,
                                           const DeviceLimits& dev) {
  std::vector<rt::KernelSpec> specs = f.kernels(lp, cfg, dev);
  for (rt::KernelSpec& s : specs) {
    if (packed) s = rt::with_packed(std::move(s));
    // each kernel of a forward or backward waits on the one before it (plan.cpp's run)
    if (f.op() != Op::Step) s = rt::with_grid_dependent(std::move(s));
  }
  return specs;
}

Resolved resolve_call(Op op, const MlstmProblem& lp, const DeviceLimits& dev, const Config& pinned,
                      const Config& caller, bool needs_chunkwise, bool packed) {
  const MlstmProblem& cp = packed ? packed_config_problem(lp) : lp;
  Resolved r = resolve(op, cp, dev, pinned);
  if (needs_chunkwise && r.family->form() == Form::Parallel && !caller.count(kFormKey)) {
    log_debug("{} S={}: the parallel form keeps no states; using the chunkwise form", to_string(op), lp.S);
    Config chunkwise = caller;  // the caller's pins hold for the chunkwise form too
    chunkwise[kFormKey] = 0;
    r = resolve(op, cp, dev, chunkwise);
  }
  return r;
}

PackedSeqs packed_params(const MlstmProblem& p, const void* cu_seqlens, bool int64, int chunk) {
  PackedSeqs s{};
  if (!is_packed(p)) return s;
  s.cu_seqlens = cu_seqlens;
  s.cu_int64 = int64 ? 1 : 0;
  s.T = p.S;
  s.chunk = chunk;
  return s;
}

}  // namespace tfla::ops
