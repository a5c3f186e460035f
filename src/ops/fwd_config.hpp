// Launch configuration of the forward's kernels and their validity rules, shared by the two
// forward families (ops/families/fwd_chunkwise.cpp: three kernels; fwd_parallel.cpp: the output
// kernel alone over one chunk spanning the sequence, gates scanned inside it, the keys chunk,
// siz_b_kc's inter part and st_* unused). The named-parameter form (tfla::Config) is what the
// tuner and the cache store; its keys are the table in fwd_config.cpp.
#pragma once
#include <string>
#include <vector>

#include "ops/family.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

struct FwdConfig {
  int chunk = 128;  // chunk length L
  // output kernel
  int siz_b_q = 64;   // query rows per CTA
  int siz_b_kv = 64;  // key rows per intra-chunk tile
  int siz_b_v = 128;  // Dv columns per CTA
  int siz_b_kc = 64;  // Dqk rows of the chunk state per staged block
  int warps_m = 4, warps_n = 2;
  // state kernel
  int st_siz_b_k = 128;  // Dqk rows of C per CTA
  int st_siz_b_v = 128;  // Dv columns of C per CTA
  int st_sub = 64;       // chunk rows per streamed sub-block
  int st_warps_m = 4, st_warps_n = 2;
  // 1: the state kernel on the sm90 engine (fwd.chunkwise.sm90 only; all Dqk rows per CTA,
  // st_siz_b_v columns); 0: mma.sync with the st_* tiles above
  int st_sm90 = 0;
  // The state recurrence walked as this many segments of the sequence in parallel, then made
  // exact by the fix kernel (mlstm_fwd_state_fix.cuh); 1: one walk per head. Fewer where the
  // sequence has fewer chunks (see state_segments). With fused = 1 the fused walk's segments
  // (fused_segments: whole where Dqk is not 128 or 256).
  int st_seg = 1;
  // 1: the fused forward (fwd.chunkwise.sm90 only; mlstm_fwd_fused_sm90.cuh): one kernel walks
  // chunks of 64 of its own with the state on chip, after the gate kernel at that chunk (and,
  // split, a walk that leaves the segments' summaries and their fold). With a saved-states buffer
  // the walk fills it at `chunk` (the backward's chunk), the gate kernel running at that chunk
  // too.
  int fused = 0;
  // The fused walk's columns of Dv per CTA: 128, or 256 where Dqk <= 128 (each consumer
  // warpgroup then holds 128 columns of the state), half the walks of twice the width.
  int fused_bv = 128;
  // the parallel form keeps no chunk states: no initial or last states, no saved buffer
  Form form = Form::Chunkwise;
  Engine engine = Engine::MmaSync;

  bool parallel() const noexcept { return form == Form::Parallel; }
  // Every key, plus the form selector ("parallel" = 0 or 1).
  Config to_config() const;
  // Reads the keys present in c over this config; throws InvalidArgument on unknown keys and
  // values out of range.
  void apply(const Config& c);
  static const std::vector<KeyDef>& key_defs();
};

// The longest sequence the parallel form accepts (see kParallelMaxS in fwd_config.cpp).
int parallel_max_seq();
// "" when the parallel form takes a sequence of p.S tokens, else why not (both ops' rule).
std::string parallel_seq_limit(const MlstmProblem& p);
// Whether the parallel form is the forward's default for p (short sequences, see fwd_config.cpp).
bool parallel_by_default(const MlstmProblem& p);
// The same on dev, where from S = 256 the fused sm90 forward, where it is the default, wins.
bool parallel_by_default(const MlstmProblem& p, const DeviceLimits& dev);
// The chunk length of the chunkwise default: 64, 128 or 256, the shortest covering S.
int default_chunk(const MlstmProblem& p);

// The chunkwise form's analytic default for p on dev; chunk > 0 fixes the chunk length and
// derives the rest from it.
FwdConfig chunkwise_fwd_config(const MlstmProblem& p, const DeviceLimits& dev, int chunk = 0);
// The parallel form's default for p on dev: output tiles sized for the sequence; the chunkwise
// keys keep chunkwise_fwd_config's values.
FwdConfig parallel_fwd_config(const MlstmProblem& p, const DeviceLimits& dev);
// The acceptance rule of both forward families: empty when cfg runs p on dev, else the first
// violated rule (tiles and threads, shared memory against dev, the register estimate).
std::string check_fwd_config(const FwdConfig& cfg, const MlstmProblem& p, const DeviceLimits& dev);
// The state kernel's part of the rule (tiles and threads; shared memory and registers on dev),
// which the sm90 family shares.
std::string check_fwd_state_tiles(const FwdConfig& cfg, const MlstmProblem& p);
std::string check_fwd_state_limits(const FwdConfig& cfg, const MlstmProblem& p, const DeviceLimits& dev);

// The sm90 engine (fwd.chunkwise.sm90: the gate and state kernels above, the output kernel on
// TMA and wgmma). Its ring depth, fixed: four 32 KB slots beside the 64 KB Q tile.
inline constexpr int kFwdSm90Stages = 4;
// "" when the engine can run p on dev (sm_90a, 16-bit inputs, Dqk a multiple of 64 up to 256, Dv
// a multiple of 64), else why not.
std::string sm90_fwd_serves(const MlstmProblem& p, const DeviceLimits& dev);
// The engine's default for p (chunk > 0 fixes the chunk length, a multiple of 128).
FwdConfig sm90_fwd_config(const MlstmProblem& p, const DeviceLimits& dev, int chunk = 0);
// Its acceptance rule; the output kernel reads chunk and siz_b_v (siz_b_q = 128, siz_b_kv = 64
// fixed), the state kernel the st_* keys; siz_b_kc and the warp grid are unused.
std::string check_fwd_sm90_config(const FwdConfig& cfg, const MlstmProblem& p, const DeviceLimits& dev);
int fwd_output_sm90_smem(const FwdConfig& cfg, const MlstmProblem& p);
// The fused forward (FwdConfig::fused): "" when it runs p on dev (the engine serves p, Dqk 64, 128
// or 256, Dv a multiple of 128, shared memory), else why not; its kernel and chunk length.
std::string check_fwd_fused_sm90(const MlstmProblem& p, const DeviceLimits& dev, int bv = 128);
rt::KernelSpec fwd_fused_sm90_kernel(const MlstmProblem& p, int bv = 128);
inline constexpr int kFusedChunk = 64;
// Whether the sm90 default runs the fused forward (bf16, where it serves and its walks fill
// their waves; see fwd_config.cpp).
bool fused_by_default(const MlstmProblem& p, const DeviceLimits& dev);
// The fused walk's default columns per CTA (FwdConfig::fused_bv) for an unsplit walk of p on dev.
int fused_bv_by_default(const MlstmProblem& p, const DeviceLimits& dev);
// The sm90 chunk-state walks for p (kernel_templates/tfla/sm90_state_walk.cuh): the forward's
// state kernel and the backward's dC kernel, BV columns of the state per CTA.
int state_walk_sm90_smem(const MlstmProblem& p, int bv);
rt::KernelSpec fwd_states_sm90_kernel(const MlstmProblem& p, int chunk, int bv);
rt::KernelSpec bwd_dstates_sm90_kernel(const MlstmProblem& p, int chunk, int bv);
// The fused walk's split: the segment summaries (mlstm_fwd_summary_sm90.cuh, 128 columns of the
// state per CTA, Dqk 128 or 256) at the gate rows' chunk.
rt::KernelSpec fwd_summary_sm90_kernel(const MlstmProblem& p, int chunk);
// The Dv tile of the state walks' default: 128 columns, 64 where 128 would leave SMs idle.
int state_walk_sm90_bv(const MlstmProblem& p, const DeviceLimits& dev);
// The default columns and sequence split of an sm90 chunk-state walk (the forward's states, the
// backward's dC) at chunk: where its walks are too few to fill the SMs and Dv is a multiple of
// 128, 128-column CTAs over default_state_segments' segments; else state_walk_sm90_bv's columns,
// whole.
struct StateWalkSm90Split {
  int bv = 128, seg = 1;
};
StateWalkSm90Split state_walk_sm90_split(const MlstmProblem& p, const DeviceLimits& dev, int chunk);
// "" when a state walk of bv columns runs p (Dqk 128 or 256, bv 64 or 128 dividing Dv, the
// chunk a multiple of 64, shared memory); `what` names the keys in the reason.
std::string check_state_walk_sm90(const MlstmProblem& p, const DeviceLimits& dev, int chunk, int siz_b_k, int bv,
                                  const char* what);
// The ring depth of the chunk-state walks (the forward's state kernel, the backward's dC):
// four slots of a 64-row sub-block of both operands.
inline constexpr int kStateWalkSm90Stages = 4;

// The sequence split of a state walk: nseg segments of seg_chunks chunks each (the last may be
// shorter; none is empty). pieces (the fused walk's split): its summary walk takes each segment
// before the last in pieces of seg_chunks / pieces chunks (summary_pieces).
struct SegmentPlan {
  int nseg = 1, seg_chunks = 0, pieces = 1;
};
// The plan for `want` segments (a config's st_seg) over nc chunks of bh heads: at most one
// segment per chunk, and no more than the launch grid's 65535 rows of heads x segments.
SegmentPlan state_segments(int want, int64_t nc, int64_t bh);
// The fused walk's split (fused=1, st_seg = want): state_segments over its chunks of 64 with
// segments of a multiple of 2 x the ring's stages (4) chunks, since the walk takes its ring slot
// and barrier phases from the chunk's index, and of the chunks of 64 in a gate chunk (the
// segments of a walk that fills a saved buffer start at its chunks); none where the summary walk
// (the sm90 state walk in 128-column CTAs) does not serve p (Dqk other than 128 or 256): there
// the fused walk runs whole. A walk that fills a saved buffer splits at gate_chunk = the config's
// chunk (a multiple of 64, which the summary walk serves wherever it serves chunk 64).
SegmentPlan fused_segments(const MlstmProblem& p, const DeviceLimits& dev, int want, int gate_chunk = kFusedChunk);
// The pieces the fused split s's summary walk takes each segment in (s's chunks of `chunk`
// tokens): the count, dividing seg_chunks into pieces of 1024 tokens or more, whose pieces' walks
// (128 Dv columns, head, piece; one CTA per SM) end soonest by waves of SMs x piece length, the
// fewest where several tie; 1 without a split.
int summary_pieces(const MlstmProblem& p, const DeviceLimits& dev, const SegmentPlan& s, int chunk);
// Whether the fused walk's split can run for p's dtype and head sizes (its summary walk serves).
bool fused_split_serves(const MlstmProblem& p, const DeviceLimits& dev);
// Whether the default runs the fused walk split into the three kernels' st_seg segments (few
// heads on a long sequence; the reasons and measurements are in fwd_config.cpp).
bool fused_split_by_default(const MlstmProblem& p, const DeviceLimits& dev, int st_seg);
// How many segments a default splits the state walk into: `walks` CTAs (one per head and state
// tile, ctas_per_sm of them resident per SM) times the segments fill one wave, each segment at
// least 8 chunks long; 1 where the walks alone fill half the SMs' slots or more.
int default_state_segments(const MlstmProblem& p, const DeviceLimits& dev, int chunk, int64_t walks,
                           int ctas_per_sm);
// The gate kernel and the chunk-state kernel of the chunkwise forward (the sm90 walk where
// c.st_sm90, else mma.sync with the st_* tiles); the backward's recompute renders the same ones
// (need_n: whether the walk keeps n, which the backward does not read).
rt::KernelSpec fwd_gates_kernel(const MlstmProblem& p, int chunk);
rt::KernelSpec fwd_states_kernel(const MlstmProblem& p, const FwdConfig& c, bool need_n, const DeviceLimits& dev);
// The fix kernel of a split walk (kernel_templates/tfla/mlstm_fwd_state_fix.cuh; starts: the fused
// forward's fold to the segments' start states); state_fix_kernel renders either fix kernel
// (template `name`, parameter block `params`: TS, DQK, DV, EXP, then `more`; 256 threads).
rt::KernelSpec fwd_state_fix_kernel(const MlstmProblem& p, bool starts);
rt::KernelSpec state_fix_kernel(const std::string& name, const std::string& params, const MlstmProblem& p,
                                std::vector<rt::TemplateArg> more = {});

// Shared memory of the two tiled kernels, bytes.
int fwd_states_smem(const FwdConfig& cfg, const MlstmProblem& p);
// CTAs per SM the state kernel's launch bounds ask for: 2 where two fit the SM's shared memory
// and, with registers capped at 128, the register file (<= 256 threads), else 0 (no request).
int fwd_states_min_blocks(const FwdConfig& cfg, const MlstmProblem& p, const DeviceLimits& dev);
int fwd_output_smem(const FwdConfig& cfg, const MlstmProblem& p);

// ---- the sm_90a engine's parallel form (fwd.parallel.sm90) ------------------------------------
// Its chunkwise kernels over one chunk spanning the sequence, with no state kernel: the gate
// kernel and the sm90 output kernel at chunk parallel_sm90_chunk(p).
// The chunk: the shortest power of two from 128 (the output kernel's query tile) covering S.
int parallel_sm90_chunk(const MlstmProblem& p);
// "" when the engine's parallel forward serves p on dev (sm90_fwd_serves, S up to 1024), else
// why not.
std::string sm90_parallel_fwd_serves(const MlstmProblem& p, const DeviceLimits& dev);
// Both ops' parts of it: "" when S is at most 1024, else why; "" when chunk is
// the one chunk spanning S, else why.
std::string parallel_sm90_seq_limit(const MlstmProblem& p);
std::string check_parallel_sm90_chunk(const MlstmProblem& p, int chunk);
// Whether it is the forward's default for p on dev (measured: see fwd_config.cpp).
bool parallel_sm90_by_default(const MlstmProblem& p, const DeviceLimits& dev);
// Its default: the sm90 chunkwise default's output tiles at its chunk.
FwdConfig parallel_sm90_fwd_config(const MlstmProblem& p, const DeviceLimits& dev);
// Its acceptance rule.
std::string check_fwd_parallel_sm90_config(const FwdConfig& cfg, const MlstmProblem& p, const DeviceLimits& dev);

// The forward's kernels for a config, in launch order (the parallel form: the output kernel).
std::vector<rt::KernelSpec> fwd_kernels(const MlstmProblem& p, const FwdConfig& cfg, const DeviceLimits& dev);

}  // namespace tfla::ops
