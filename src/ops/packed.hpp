// Packed sequences of variable lengths (cu_seqlens, MlstmProblem::num_seqs): how a packed call
// maps onto the kernels. The kernels see a batch of N sequences (PackedSeqs in
// tfla/mlstm_params.cuh) whose lengths are bounded by a bucket of max_seqlen; grids and workspace
// are sized by that bucket, so a new packing of the same model reuses the selection, the config
// and the compiled kernels of every packing with the same N and bucket.
#pragma once
#include <cstdint>
#include <vector>

#include "ops/bwd_config.hpp"
#include "ops/family.hpp"
#include "ops/fwd_config.hpp"
#include "tfla/mlstm_params.cuh"
#include "tfla/tfla.hpp"

namespace tfla::ops {

inline bool is_packed(const MlstmProblem& p) { return p.num_seqs > 0; }

// The length bound the kernels are sized by: max_seqlen rounded up to a power of two from 64 to
// 1024, then to a multiple of 1024.
int64_t packed_length_bucket(int64_t max_seqlen);

// The problem the kernels run: for a packed problem B = num_seqs and S = the length bucket, else
// p itself.
MlstmProblem launch_problem(const MlstmProblem& p);

// The problem a packed call's config is resolved for: its launch problem lp with B (the
// sequence count) rounded up to a power of two, so the config (and the kernels) of a call
// depend on the model's dims and the buckets alone.
MlstmProblem packed_config_problem(const MlstmProblem& lp);

// The config a packed call resolves: the caller's keys with the kernels that take packed
// sequences, the chunkwise form with one state walk per sequence, never split (parallel=0,
// st_seg=1; the backward ds_seg=1); every engine's kernels take them. A caller key that
// contradicts them throws InvalidArgument naming it. Packed: built in `storage` and returned;
// not packed: `caller` itself (no copy on a plain call's path).
const Config& packed_pins(const MlstmProblem& p, const Config& caller, Op op, Config& storage);

// cu_seqlens of a packed call: non-null and aligned to its element size (int32 or int64). The
// offsets themselves are on the device and not read here; the kernels clamp them into [0, T] and
// every length to the bucket (see seq_span.cuh).
void check_cu_seqlens(const MlstmProblem& p, const void* cu_seqlens, bool int64);

// A selection made for packed (or plain) sequences launched for p: Internal where they differ
// (the kernels read the offsets only when compiled for packed sequences).
void check_selection_packed(bool selection_packed, const MlstmProblem& p, const char* op);

// A family's kernels as they are launched, for the launch problem lp and a config on dev: packed:
// compiled for packed sequences (rt::with_packed), which only they read; a forward's or
// backward's each grid-dependent (rt::with_grid_dependent: plan.cpp launches each as a
// programmatic dependent of the one before it).
std::vector<rt::KernelSpec> launch_kernels(const Family& f, const MlstmProblem& lp, const Config& cfg, bool packed,
                                           const DeviceLimits& dev = current_limits());

// The family and config a forward or backward call of the launch problem lp resolves on dev:
// `pinned` (the caller's, a tuned or an empty config) for lp, or for a packed call for its config
// problem (packed_config_problem); where that is the parallel form but the call needs the
// chunkwise form (needs_chunkwise: it carries states) and the caller did not pin the form, the
// chunkwise form with the caller's own pins (caller: what the call pinned, packed calls' forced
// keys included; pinned is caller or, where that is empty, the tuned config, which is left out
// then as it was tuned for the other form). What select_fwd and select_bwd run, and what `tfla
// compile` prepares (ops/kernel_space.cpp).
Resolved resolve_call(Op op, const MlstmProblem& lp, const DeviceLimits& dev, const Config& pinned,
                      const Config& caller, bool needs_chunkwise, bool packed);

// The kernels' view of a packed call (zero for a plain one) at the config's chunk length.
PackedSeqs packed_params(const MlstmProblem& p, const void* cu_seqlens, bool int64, int chunk);

}  // namespace tfla::ops
