#include "ops/fwd_config.hpp"

#include <algorithm>
#include <numeric>

#include "ops/config_keys.hpp"
#include "ops/render_args.hpp"
#include "tfla/mlstm_params.cuh"
#include "tfla/mlstm_sm90_params.cuh"

namespace tfla::ops {

namespace {
const KeyTable<FwdConfig>& table() {
  static const KeyTable<FwdConfig> t({
      {{"chunk", 16, 65536, "chunk length L (a multiple of 16)"}, &FwdConfig::chunk},
      {{"siz_b_q", 16, 512, "query rows per output CTA"}, &FwdConfig::siz_b_q},
      {{"siz_b_kv", 16, 512, "key rows per intra-chunk tile"}, &FwdConfig::siz_b_kv},
      {{"siz_b_v", 16, 512, "Dv columns per output CTA"}, &FwdConfig::siz_b_v},
      {{"siz_b_kc", 16, 512, "Dqk rows of the chunk state per staged block"}, &FwdConfig::siz_b_kc},
      {{"warps_m", 1, 16, "output kernel warps along the query rows"}, &FwdConfig::warps_m},
      {{"warps_n", 1, 16, "output kernel warps along the columns"}, &FwdConfig::warps_n},
      {{"st_siz_b_k", 16, 512, "Dqk rows of C per state CTA"}, &FwdConfig::st_siz_b_k},
      {{"st_siz_b_v", 16, 512, "Dv columns of C per state CTA"}, &FwdConfig::st_siz_b_v},
      {{"st_sub", 16, 65536, "chunk rows per streamed state sub-block"}, &FwdConfig::st_sub},
      {{"st_warps_m", 1, 16, "state kernel warps along Dqk"}, &FwdConfig::st_warps_m},
      {{"st_warps_n", 1, 16, "state kernel warps along Dv"}, &FwdConfig::st_warps_n},
      {{"st_sm90", 0, 1, "state kernel on the sm90 engine (1) or mma.sync (0)"}, &FwdConfig::st_sm90},
      {{"st_seg", 1, 4096, "segments of the sequence the state recurrence walks in parallel (fused=1: the fused walk's)"}, &FwdConfig::st_seg},
      {{"fused", 0, 1, "the fused forward (sm90; 1) or the three kernels (0)"}, &FwdConfig::fused},
      {{"fused_bv", 128, 256, "Dv columns per fused-walk CTA: 128, or 256 where Dqk <= 128"}, &FwdConfig::fused_bv},
  });
  return t;
}
}  // namespace

const std::vector<KeyDef>& FwdConfig::key_defs() { return table().defs(); }

Config FwdConfig::to_config() const {
  Config c = table().to_config(*this);
  c[kFormKey] = parallel() ? 1 : 0;
  c[kEngineKey] = static_cast<int64_t>(engine);
  return c;
}

void FwdConfig::apply(const Config& c) {
  table().apply(*this, c, "forward config", {kFormKey, kEngineKey});
  if (auto it = c.find(kFormKey); it != c.end()) {
    if (it->second != 0 && it->second != 1)
      throw Error(ErrorCode::InvalidArgument, "forward config key parallel=" + std::to_string(it->second) +
                                                  " must be 0 (chunkwise) or 1 (parallel)");
    form = it->second ? Form::Parallel : Form::Chunkwise;
  }
  if (auto it = c.find(kEngineKey); it != c.end()) {
    if (it->second != 0 && it->second != 1)
      throw Error(ErrorCode::InvalidArgument, "forward config key engine=" + std::to_string(it->second) +
                                                  " must be 0 (mma.sync) or 1 (sm90)");
    engine = it->second ? Engine::Sm90 : Engine::MmaSync;
  }
}

namespace {
int largest_divisor(int d, std::initializer_list<int> options) {
  for (int o : options)
    if (d % o == 0) return o;
  return 16;
}
// The parallel form's limit. Any S is exact (its gate sums run outwards from each tile, see
// mlstm_gate_scan.cuh), but its work grows as S^2 against the chunkwise form's S, which wins
// long before this length (see parallel_by_default's measurements).
constexpr int kParallelMaxS = 16384;
// How much more FLOP work the parallel forward may do than the chunkwise one and still win
// (measured: see parallel_by_default).
constexpr double kFwdParallelAdvantage = 0.75;
}  // namespace

int parallel_max_seq() { return kParallelMaxS; }

std::string parallel_seq_limit(const MlstmProblem& p) {
  if (p.S <= kParallelMaxS) return {};
  return "parallel=1 supports S up to " + std::to_string(kParallelMaxS) + " (got S = " + std::to_string(p.S) +
         "); use the chunkwise form (parallel=0)";
}

int default_chunk(const MlstmProblem& p) {
  int chunk = 64;
  while (chunk < 256 && chunk < p.S) chunk *= 2;
  return chunk;
}

// Why this default (measured on H200 at B*S = 65536, NH = 8, Dqk = 256, Dv = 512, bf16):
// chunk 256 halves the chunk-state traffic (Dqk x Dv per chunk, written by the state kernel and
// read by the output kernel) against chunk 128 while the tiled intra-chunk part stays cheap;
// Dv tiles of 256 halve how often Q K^T is recomputed per Dv tile; warps 2 x 4 give each warp a
// 32 x 64 accumulator block (fewer fragment loads per mma than 16-row blocks). The state kernel's
// 128 x 128 C block in 8 warps amortizes each streamed K/V sub-block over 128 columns.
namespace {
// The chunkwise default's tiles for a chunk length; whole_head: one Dv tile per query tile where
// it fits (the chunkwise form; the parallel form keeps the tiles its crossover was measured with).
FwdConfig chunkwise_tiles(const MlstmProblem& p, const DeviceLimits& dev, int chunk, bool whole_head) {
  const int64_t smem_budget = dev.smem_optin_bytes;
  FwdConfig c;
  const int dqk = static_cast<int>(p.Dqk), dv = static_cast<int>(p.Dv);
  c.chunk = chunk > 0 ? chunk : default_chunk(p);
  c.siz_b_q = std::min(64, c.chunk);
  c.siz_b_kv = std::min(64, c.chunk);
  c.siz_b_v = largest_divisor(dv, {256, 128, 96, 64, 160, 32, 16});
  if (c.siz_b_v % 64 == 0 && c.siz_b_kv % 64 == 0 && c.siz_b_q % 32 == 0) {
    c.warps_m = c.siz_b_q / 32;
    c.warps_n = 4;
  } else {
    c.warps_m = c.siz_b_q / 16;
    c.warps_n = (c.siz_b_v % 32 == 0 && c.siz_b_kv % 32 == 0) ? 2 : 1;
  }
  c.siz_b_kc = largest_divisor(dqk, {64, 32, 16});
  // 128-row query tiles in 16 warps (4 x 4) where they fit: each staged C block and key tile
  // then serves twice the rows (measured on H200 at the paper shape: 3.35 ms against 3.83 ms).
  if (c.chunk >= 128 && c.warps_n == 4) {
    FwdConfig big = c;
    big.siz_b_q = 128;
    big.warps_m = 4;
    if (fwd_output_smem(big, p) <= smem_budget) c = big;
  }
  // The whole head's Dv in one tile where the tile so far is narrower (up to Dv = 512): 64-row
  // query tiles in 16 warps (4 x 4, 64 accumulators per thread), so no Dv tile recomputes Q K^T
  // and rereads Q and K. H100, B*S = 65536, NH = 8, Dqk 256, Dv 512, bf16, mLSTMsig: S = 1024
  // 2.61 ms vs 2.87 with 128 x 256 tiles, S = 8192 2.84 vs 3.09 (`tfla bench forward --config`).
  if (whole_head && c.chunk >= 128 && c.siz_b_kv == 64 && c.siz_b_v < dv && dv <= 512) {
    FwdConfig whole = c;
    whole.siz_b_q = 64;
    whole.siz_b_v = dv;
    whole.warps_m = 4;
    whole.warps_n = 4;
    if (check_fwd_config(whole, p, dev).empty()) c = whole;
  }
  c.st_siz_b_k = largest_divisor(dqk, {128, 64, 32, 16});
  c.st_siz_b_v = largest_divisor(dv, {128, 64, 32, 16});
  c.st_warps_m = std::min(4, c.st_siz_b_k / 16);
  c.st_warps_n = std::min(2, c.st_siz_b_v / 16);
  // The state kernel walks the chunks in order, so its parallelism is B*NH times its C blocks:
  // with few heads (long sequences at constant tokens), shrink the blocks to fill the SMs.
  const int64_t target_ctas = 2 * int64_t{dev.sm_count};  // two CTAs per SM
  auto state_ctas = [&] { return p.B * p.NH * (dqk / c.st_siz_b_k) * (dv / c.st_siz_b_v); };
  while (state_ctas() < target_ctas && c.st_siz_b_k > 64) c.st_siz_b_k /= 2;
  while (state_ctas() < target_ctas && c.st_siz_b_v > 64) c.st_siz_b_v /= 2;
  c.st_warps_m = std::min(4, c.st_siz_b_k / 16);
  c.st_warps_n = std::min(2, c.st_siz_b_v / 16);
  c.st_sub = std::min({64, c.chunk, c.st_warps_m * c.st_warps_n * 32});
  // Large fp32 heads: shrink the query/key tiles until the output kernel fits in shared memory.
  while (fwd_output_smem(c, p) > smem_budget && c.siz_b_kv > 16) {
    c.siz_b_kv /= 2;
    c.siz_b_q = c.siz_b_kv;
    c.warps_m = c.siz_b_q / 16;
    c.warps_n = (c.siz_b_v % 32 == 0 && c.siz_b_kv % 32 == 0) ? 2 : 1;
    if (c.siz_b_v > 128 && c.siz_b_v % 128 == 0) c.siz_b_v = 128;
  }
  while (fwd_states_smem(c, p) > smem_budget && c.st_sub > 16) c.st_sub /= 2;
  c.st_seg = default_state_segments(p, dev, c.chunk, state_ctas(), fwd_states_min_blocks(c, p, dev));
  return c;
}
}  // namespace

FwdConfig chunkwise_fwd_config(const MlstmProblem& p, const DeviceLimits& dev, int chunk) {
  return chunkwise_tiles(p, dev, chunk, /*whole_head=*/true);
}

// Why the parallel form is the default for short sequences: its work per token and head is the
// causal score and output products over the whole prefix, S (Dqk + Dv) FLOPs, in one launch with
// no state traffic; the chunkwise form's is 4 Dqk Dv (state update and inter part) + L (Dqk + Dv)
// with L the chunk, in three launches with chunk states written and read. The rule compares the
// two FLOP counts, the parallel form allowed kFwdParallelAdvantage = 0.75 of the chunkwise one:
// the chunkwise kernels run at higher TFLOP/s. H100, 2026-11-22, `tfla bench forward --variant
// exp --tokens 53760 --config parallel=0|1`, bf16, NH = 8, chunkwise vs parallel, ms:
//   Dqk 256, Dv 512: S=256 1.773 vs 1.352, 384 2.085 vs 1.671, 512 2.032 vs 1.971, 640 2.173 vs
//                    2.283, 768 2.105 vs 2.600 (rule: parallel to S=704)
//   Dqk = Dv = 128:  S=256 0.569 vs 0.438, 384 0.602 vs 0.539, 512 0.609 vs 0.641, 640 0.624 vs
//                    0.743 (rule: parallel to S=384)
// The factor that matches both crossovers (~560 and ~470) differs (0.60 and 0.92); 0.75 loses at
// most 5% at the measured points (S = 640 at 256 x 512). An earlier measurement, before the
// chunkwise forward's whole-head tiles and two state CTAs per SM, crossed at FLOP parity.
bool parallel_by_default(const MlstmProblem& p) {
  if (p.S > kParallelMaxS) return false;
  const double dqk = static_cast<double>(p.Dqk), dv = static_cast<double>(p.Dv);
  const double chunkwise = 4.0 * dqk * dv + default_chunk(p) * (dqk + dv);
  return static_cast<double>(p.S) * (dqk + dv) <= kFwdParallelAdvantage * chunkwise;
}

// From S = 256 the fused forward beats the parallel form wherever it is the chunkwise default.
// H200, `tfla bench forward --variant sig --tokens 65536`, parallel (the default then) against
// `--config parallel=0,fused=1`, ms: paper heads S = 256 1.659 vs 1.404, S = 512 2.438 vs 1.369;
// the seed's heads (16 x 128 x 256) S = 256 1.370 vs 1.105. Shorter sequences were not measured.
bool parallel_by_default(const MlstmProblem& p, const DeviceLimits& dev) {
  constexpr int64_t kFusedOverParallelS = 256;
  if (p.S >= kFusedOverParallelS && fused_by_default(p, dev)) return false;
  return parallel_by_default(p);
}

// ---- the sm_90a engine's parallel form ------------------------------------------------------

namespace {
// Beyond 1024 tokens the chunkwise forms win by far (the parallel form's work grows as S^2).
constexpr int64_t kParallelSm90MaxS = 1024;
}  // namespace

int parallel_sm90_chunk(const MlstmProblem& p) {
  int ch = FwdOutputSm90Shape::kBQ;
  while (ch < p.S) ch *= 2;
  return ch;
}

std::string parallel_sm90_seq_limit(const MlstmProblem& p) {
  if (p.S <= kParallelSm90MaxS) return {};
  return "the sm90 engine's parallel form takes S up to " + std::to_string(kParallelSm90MaxS) + " (got S = " +
         std::to_string(p.S) + "); use the chunkwise form (parallel=0)";
}

std::string check_parallel_sm90_chunk(const MlstmProblem& p, int chunk) {
  if (chunk == parallel_sm90_chunk(p)) return {};
  return "parallel=1 on the sm90 engine: chunk must be " + std::to_string(parallel_sm90_chunk(p)) +
         " (the one chunk spanning S = " + std::to_string(p.S) + ")";
}

std::string sm90_parallel_fwd_serves(const MlstmProblem& p, const DeviceLimits& dev) {
  if (std::string why = sm90_fwd_serves(p, dev); !why.empty()) return why;
  return parallel_sm90_seq_limit(p);
}

// Why up to S = 512: measured faster than every other forward there (no chunk states written or
// read, one launch of causal tiles at the sm90 output kernel's rate), slower than the fused walk
// at 1024. H200, 2026-12-02, one call, `tfla bench forward --variant sig --tokens 65536 --reps
// 20`, ms, the mma.sync parallel form / this one / the fused walk / the default before it: paper
// heads S = 64 0.610 / 0.616 / 1.451 / 0.613, 128 1.117 / 0.425 / 1.191 / 1.120, 256 1.449 /
// 0.479 / 1.068 / 1.070, 512 2.186 / 0.665 / 1.013 / 1.015, 1024 3.674 / 1.038 / 0.990 / 0.982;
// the seed's heads (NH 16, 128 x 256) 64 0.854 / 0.616 / 0.847 / 0.855, 128 0.877 / 0.437 /
// 0.733 / 0.864, 256 1.154 / 0.465 / 0.687 / 0.681, 512 1.751 / 0.613 / 0.666 / 0.674, 1024
// 2.957 / 0.958 / 0.652 / 0.654.
bool parallel_sm90_by_default(const MlstmProblem& p, const DeviceLimits& dev) {
  constexpr int64_t kDefaultMaxS = 512;
  return p.S <= kDefaultMaxS && sm90_parallel_fwd_serves(p, dev).empty();
}

FwdConfig parallel_sm90_fwd_config(const MlstmProblem& p, const DeviceLimits& dev) {
  FwdConfig c = sm90_fwd_config(p, dev, parallel_sm90_chunk(p));
  c.form = Form::Parallel;
  c.fused = 0;
  c.st_seg = 1;
  return c;
}

namespace {
// The sm90 output kernel's part of both sm90 forward rules: its tiles and shared memory.
std::string check_fwd_output_sm90_tiles(const FwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev) {
  if (c.siz_b_q != FwdOutputSm90Shape::kBQ) return "engine=1 (sm90): siz_b_q must be 128";
  if (c.siz_b_kv != FwdOutputSm90Shape::kBKV) return "engine=1 (sm90): siz_b_kv must be 64";
  if ((c.siz_b_v != 64 && c.siz_b_v != 128 && c.siz_b_v != 256) || p.Dv % c.siz_b_v)
    return "engine=1 (sm90): siz_b_v must be 64, 128 or 256 and divide Dv";
  return over_smem(fwd_output_sm90_smem(c, p), "output kernel", dev);
}
}  // namespace

std::string check_fwd_parallel_sm90_config(const FwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev) {
  if (c.engine != Engine::Sm90) return "an mma.sync config given to the sm90 engine";
  if (std::string why = sm90_parallel_fwd_serves(p, dev); !why.empty()) return why;
  if (std::string why = check_parallel_sm90_chunk(p, c.chunk); !why.empty()) return why;
  if (c.fused) return "parallel=1 on the sm90 engine: fused must be 0 (the fused walk is a chunkwise form)";
  return check_fwd_output_sm90_tiles(c, p, dev);
}

// The parallel form runs the chunkwise output kernel over one chunk of length S, so its tiles are
// the ones the chunkwise default picks for a chunk of about the sequence's length (64-row query
// tiles up to S = 64, 128-row ones in 4 x 4 warps beyond, where they fit). The kernel walks its
// key tiles outwards from the query tile, so they must divide it (they do: 64 | 64, 128).
// Up to S = 64 a sequence is one 64-row query tile and every Dv tile recomputes its Q K^T and
// rereads Q and K: there the Dv tile is the whole head where it fits (H100, Dqk 256, Dv 512,
// B*S = 65536, bf16, S = 64: 0.76 ms against 1.11 with 256-wide tiles). Not with the 128-row
// tiles of longer sequences: 16 warps holding 128 x 512 accumulators ran 4x slower (S = 128).
FwdConfig parallel_fwd_config(const MlstmProblem& p, const DeviceLimits& dev) {
  const int64_t smem_budget = dev.smem_optin_bytes;
  FwdConfig c = chunkwise_tiles(p, dev, default_chunk(p), /*whole_head=*/false);
  c.form = Form::Parallel;
  if (p.S <= c.siz_b_q && c.siz_b_q <= 64 && c.siz_b_v < p.Dv) {
    FwdConfig whole = c;
    whole.siz_b_v = static_cast<int>(p.Dv);
    const int w = whole.siz_b_v, kv = whole.siz_b_kv;
    whole.warps_n = (w % 64 == 0 && kv % 64 == 0) ? 4 : (w % 32 == 0 && kv % 32 == 0) ? 2 : 1;
    whole.warps_m = whole.siz_b_q / (whole.warps_n == 4 ? 32 : 16);
    if (check_fwd_config(whole, p, dev).empty()) c = whole;
  }
  // the gate scan's few hundred bytes may tip a tile that just fit: shrink as the default does
  while (fwd_output_smem(c, p) > smem_budget && c.siz_b_kv > 16) {
    if (c.siz_b_q == c.siz_b_kv) c.siz_b_kv /= 2;
    c.siz_b_q = c.siz_b_kv;
    c.warps_m = c.siz_b_q / 16;
    c.warps_n = (c.siz_b_v % 32 == 0 && c.siz_b_kv % 32 == 0) ? 2 : 1;
  }
  // The chunkwise keys are those of the chunkwise default a call with states falls back to (the
  // sm90 engine's where it serves), so a parallel config's workspace size covers that fallback.
  const FwdConfig cw = sm90_fwd_serves(p, dev).empty() ? sm90_fwd_config(p, dev) : chunkwise_fwd_config(p, dev);
  c.chunk = cw.chunk;
  c.st_siz_b_k = cw.st_siz_b_k;
  c.st_siz_b_v = cw.st_siz_b_v;
  c.st_sub = cw.st_sub;
  c.st_warps_m = cw.st_warps_m;
  c.st_warps_n = cw.st_warps_n;
  c.st_seg = cw.st_seg;
  c.fused = cw.fused;
  c.fused_bv = cw.fused_bv;
  return c;
}

int fwd_states_smem(const FwdConfig& c, const MlstmProblem& p) {
  return fwd_states_smem_bytes(static_cast<int>(dtype_bytes(p.dtype)), c.st_sub, c.st_siz_b_k,
                               c.st_siz_b_v, c.st_warps_m * c.st_warps_n);
}
// Why: the state kernel walks the chunks in order, one sub-block at a time behind a barrier, so
// it is latency-bound; at 132+ registers only one 256-thread CTA fit per SM (12.5% occupancy,
// ncu, H100, paper shape: 1.27 ms of the forward's 3.4). Two CTAs per SM let one CTA's loads and
// barriers hide behind the other's MMAs.
int fwd_states_min_blocks(const FwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev) {
  constexpr int kPerBlockReserve = 1024;  // the SM's shared memory reserved per resident CTA
  const int threads = 32 * c.st_warps_m * c.st_warps_n;
  if (threads > 256 || 2 * (fwd_states_smem(c, p) + kPerBlockReserve) > dev.smem_per_sm_bytes) return 0;
  return 2;
}

int fwd_output_smem(const FwdConfig& c, const MlstmProblem& p) {
  return fwd_output_smem_bytes(static_cast<int>(dtype_bytes(p.dtype)), static_cast<int>(p.Dqk),
                               c.siz_b_q, c.siz_b_kv, c.siz_b_v, c.siz_b_kc, c.warps_n) +
         (c.parallel() ? gate_scan_smem_bytes(c.siz_b_q, c.warps_m * c.warps_n) : 0);
}

namespace {
// The tile and thread rules of the two tiled kernels (no device limits).
std::string check_fwd_tiles(const FwdConfig& c, const MlstmProblem& p) {
  auto bad = [](const std::string& s) { return s; };
  const int dqk = static_cast<int>(p.Dqk), dv = static_cast<int>(p.Dv);
  if (c.engine != Engine::MmaSync) return bad("an sm90 config given to the mma.sync engine");
  if (c.st_sm90) return bad("st_sm90=1 needs the sm90 engine (engine=1)");
  if (c.fused && !c.parallel()) return bad("fused=1 needs the sm90 engine (engine=1)");
  if (c.fused_bv != 128 && c.fused_bv != 256) return bad("fused_bv must be 128 or 256");
  if (c.chunk < 16 || c.chunk % 16) return bad("chunk must be a positive multiple of 16");
  if (c.parallel()) {
    if (std::string why = parallel_seq_limit(p); !why.empty()) return why;
    if (c.siz_b_kv < 16 || c.siz_b_q % c.siz_b_kv) return bad("parallel=1: siz_b_kv must divide siz_b_q");
  } else {
    if (c.siz_b_q < 16 || c.chunk % c.siz_b_q) return bad("siz_b_q must divide chunk");
    if (c.siz_b_kv < 16 || c.chunk % c.siz_b_kv) return bad("siz_b_kv must divide chunk");
  }
  if (c.warps_m < 1 || c.warps_n < 1 || c.warps_m * c.warps_n > 16)
    return bad("warps_m * warps_n must be 1..16");
  if (c.siz_b_q % (16 * c.warps_m)) return bad("siz_b_q must be a multiple of 16 * warps_m");
  if (c.siz_b_kv % (16 * c.warps_n)) return bad("siz_b_kv must be a multiple of 16 * warps_n");
  if (c.siz_b_v < 16 || dv % c.siz_b_v) return bad("siz_b_v must divide Dv");
  if (c.siz_b_v % (16 * c.warps_n)) return bad("siz_b_v must be a multiple of 16 * warps_n");
  if (c.siz_b_kc < 16 || dqk % c.siz_b_kc || c.siz_b_kc % 16)
    return bad("siz_b_kc must be a multiple of 16 dividing Dqk");
  const int nt = 32 * c.warps_m * c.warps_n;
  if (nt < c.siz_b_q || nt < c.siz_b_kv) return bad("need at least one thread per query/key row");
  if (c.parallel()) return {};  // the state kernel does not run
  return check_fwd_state_tiles(c, p);
}

}  // namespace

std::string check_fwd_state_tiles(const FwdConfig& c, const MlstmProblem& p) {
  auto bad = [](const std::string& s) { return s; };
  const int dqk = static_cast<int>(p.Dqk), dv = static_cast<int>(p.Dv);
  if (c.st_siz_b_k < 16 || dqk % c.st_siz_b_k) return bad("st_siz_b_k must divide Dqk");
  if (c.st_siz_b_v < 16 || dv % c.st_siz_b_v) return bad("st_siz_b_v must divide Dv");
  if (c.st_warps_m < 1 || c.st_warps_n < 1 || c.st_warps_m * c.st_warps_n > 16)
    return bad("st_warps_m * st_warps_n must be 1..16");
  if (c.st_siz_b_k % (16 * c.st_warps_m)) return bad("st_siz_b_k must be a multiple of 16 * st_warps_m");
  if (c.st_siz_b_v % (16 * c.st_warps_n)) return bad("st_siz_b_v must be a multiple of 16 * st_warps_n");
  const int snt = 32 * c.st_warps_m * c.st_warps_n;
  if (c.st_sub < 16 || c.st_sub % 16 || c.chunk % c.st_sub) return bad("st_sub must be a multiple of 16 dividing chunk");
  if (snt < c.st_sub || snt < c.st_siz_b_k) return bad("state kernel needs a thread per sub-block row and per Dqk row");
  return {};
}

std::string check_fwd_config(const FwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev) {
  if (std::string r = check_fwd_tiles(c, p); !r.empty()) return r;
  if (std::string r = over_smem(fwd_output_smem(c, p), "output kernel", dev); !r.empty()) return r;
  const int64_t nt = 32 * c.warps_m * c.warps_n;
  if (std::string r = over_registers(int64_t{c.siz_b_q} * (c.siz_b_v + c.siz_b_kv), nt, "output kernel", dev);
      !r.empty())
    return r;
  if (c.parallel()) return {};  // the output kernel is the whole parallel forward
  return check_fwd_state_limits(c, p, dev);
}

std::string check_fwd_state_limits(const FwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev) {
  if (std::string r = over_smem(fwd_states_smem(c, p), "state kernel", dev); !r.empty()) return r;
  return over_registers(int64_t{c.st_siz_b_k} * c.st_siz_b_v, 32 * c.st_warps_m * c.st_warps_n, "state kernel", dev);
}

// ---- the sm_90a engine's output kernel (mlstm_fwd_output_sm90.cuh) --------------------------

std::string sm90_fwd_serves(const MlstmProblem& p, const DeviceLimits& dev) {
  if (dev.arch != "sm_90a") return "the sm90 engine needs an sm_90a device (this one is " + dev.arch + ")";
  if (p.dtype != DType::BF16 && p.dtype != DType::FP16) return "the sm90 engine takes bf16 or fp16 inputs";
  if (p.Dqk % 64 || p.Dqk > 256) return "the sm90 engine's forward needs Dqk a multiple of 64 up to 256";
  if (p.Dv % 64) return "the sm90 engine's forward needs Dv a multiple of 64";
  const int smem = fwd_output_sm90_smem_bytes(static_cast<int>(p.Dqk), 64, kFwdSm90Stages);
  if (smem > dev.smem_optin_bytes)
    return "the sm90 engine's forward needs " + std::to_string(smem) +
           " bytes of shared memory per block; the device allows " + std::to_string(dev.smem_optin_bytes);
  return {};
}

int fwd_output_sm90_smem(const FwdConfig& c, const MlstmProblem& p) {
  return fwd_output_sm90_smem_bytes(static_cast<int>(p.Dqk), c.siz_b_v, kFwdSm90Stages);
}

// Why these tiles: 128 query rows (two consumer warpgroups of 64 rows) by a Dv tile of up to 256
// columns keeps each warpgroup's fp32 accumulator at 64 x 256 (128 registers), the most that
// leaves room for the 64 x 64 score tile and its 16-bit fragments under 232 registers. Chunks
// are multiples of the 128-row query tile; 256 halves the chunk-state traffic against 128.
FwdConfig sm90_fwd_config(const MlstmProblem& p, const DeviceLimits& dev, int chunk) {
  // Chunk 256 at every length: the state traffic of long sequences halves against 128, and a
  // sequence shorter than one chunk still runs only its own 128-row query tiles (the grid counts
  // tiles up to S), so short sequences need no second set of kernels. Where the whole fused walk
  // is the forward (its time does not depend on the chunk), the chunk is the backward's: that of
  // its saved states and its recompute, 128 for Dqk <= 128. H200, one call, `tfla bench backward
  // --variant sig --config chunk=128|256` (B * S = 65536, S = 8192, ms, with saved states /
  // recomputing / fwbw with saved states): NH 16, 128 x 256 3.11 / 3.67 / 4.16 against 3.46 /
  // 3.86 / 4.42; 128 x 128 2.49 / 2.85 / 3.07 against 2.80 / 3.01 / 3.26; 64 x 128 2.32 / 2.57 /
  // 2.80 against 2.91 / 3.13 / 3.32; NH 32, 64 x 64 3.74 / 4.01 / 4.91 against 4.77 / 4.96 /
  // 6.10; at S = 1024 (128 x 256) 2.95 / 3.55 / 4.04 against 3.28 / 3.67 / 4.27. Dqk 256 keeps
  // 256: 256 x 256 (NH 8) 2.57 / 3.09 / 3.43 against 2.49 / 2.90 / 3.22, the paper's heads 3.93 /
  // 4.84 / 5.68 against 3.79 / 4.45 / 5.29. With few heads on a long sequence (128 x 256, B = 1,
  // S = 65536, where the fused walk splits and a saved buffer then ran the three kernels) 256
  // stayed (fwbw 4.99 against 4.90).
  const int ch = chunk > 0 ? chunk : p.Dqk <= 128 && fused_by_default(p, dev) ? 128 : 256;
  FwdConfig c = chunkwise_fwd_config(p, dev, ch);
  c.engine = Engine::Sm90;
  c.siz_b_q = FwdOutputSm90Shape::kBQ;
  c.siz_b_kv = FwdOutputSm90Shape::kBKV;
  // The state kernel on the engine wherever it serves (Dqk 128 or 256): 128-column CTAs, 64-column
  // ones when those would leave SMs idle. H200, `tfla bench forward --variant sig`, paper heads:
  // S = 8192 (B = 8) 1.98 ms with it against 2.10 with the mma.sync state kernel (two calls of one
  // session); S = 65536 (B = 1, 64 walks for 132 SMs) 2.93 against 3.14 and S = 16384 (B = 4)
  // 2.09 against 2.09, each pair in one call.
  // Where the heads are too few to fill the SMs (long sequences at small batch) the walk is
  // split into segments of the sequence instead (default_state_segments) with 128-column CTAs.
  {
    FwdConfig s = c;
    s.st_sm90 = 1;
    s.st_siz_b_k = static_cast<int>(p.Dqk);
    const StateWalkSm90Split w = state_walk_sm90_split(p, dev, s.chunk);
    s.st_siz_b_v = w.bv;
    s.st_seg = w.seg;
    if (check_state_walk_sm90(p, dev, s.chunk, s.st_siz_b_k, s.st_siz_b_v, "st").empty()) c = s;
  }
  c.siz_b_v = 64;
  for (int bv : {256, 128}) {
    if (p.Dv % bv || fwd_output_sm90_smem_bytes(static_cast<int>(p.Dqk), bv, kFwdSm90Stages) > dev.smem_optin_bytes)
      continue;
    c.siz_b_v = bv;
    break;
  }
  const bool split = fused_split_by_default(p, dev, c.st_seg);
  c.fused = fused_by_default(p, dev) || split ? 1 : 0;
  if (c.fused && !split) c.fused_bv = fused_bv_by_default(p, dev);
  return c;
}

// Why: with few heads the fused walks leave SMs idle, and the split's segments fill them while
// its extra pass (the summary walk reads k and v once more) costs less than the three kernels'
// chunk states. H200, `tfla bench forward`, ms, two runs in one call (three kernels split in
// st_seg segments / fused split in st_seg segments): paper heads B = 1, S = 65536 (32 walks)
// mLSTMsig 1.860 1.841 / 1.627 1.596 at st_seg 4 (2: 3.18, 8: 1.70, 16: 1.86), mLSTMexp 1.874
// 1.853 / 1.669 1.630; S = 32768 0.955 0.942 / 0.833 0.837; B = 2, S = 16384 (64 walks) 0.916
// 0.906 / 0.844 0.836 at st_seg 2; the seed's heads (NH 16, 128 x 256) B = 1, S = 65536 1.453
// 1.438 / 1.249 1.247; shorter (one call, default / fused split): paper heads B = 1, S = 8192
// 0.272 / 0.246 at st_seg 4 (segments of 32 chunks; 2: 0.416, 3: 0.310), S = 16384 0.498 / 0.446;
// the seed's heads B = 1, S = 16384 0.392 / 0.336, B = 2, S = 8192 (64 walks) 0.374 / 0.336 at
// st_seg 2. The best split fills one wave of walks (st_seg = SMs / walks, which is the three
// kernels' st_seg there), with segments of 32 chunks or more in every measured case; the default
// keeps to those.
bool fused_split_by_default(const MlstmProblem& p, const DeviceLimits& dev, int st_seg) {
  constexpr int kMinChunksPerSegment = 32;
  if (st_seg <= 1 || p.dtype != DType::BF16 || !check_fwd_fused_sm90(p, dev).empty()) return false;
  const SegmentPlan s = fused_segments(p, dev, st_seg);
  if (s.nseg <= 1 || s.seg_chunks < kMinChunksPerSegment) return false;
  const int64_t ctas = p.B * p.NH * (p.Dv / FwdFusedSm90Shape::kBV) * s.nseg;
  const int64_t sms = std::max<int64_t>(1, dev.sm_count);
  return ctas <= sms && ctas * 10 >= sms * 8;
}

// Why: the fused walk runs one CTA per head and 128 columns of Dv through all chunks, so its time
// is whole waves of walks, while the three kernels' time follows the work. H200, `tfla bench
// forward --variant sig`, S = 8192, ms (three kernels / fused): paper heads B = 1 0.27 / 0.74,
// B = 2 0.49 / 0.72, B = 4 (128 walks) 0.94 / 0.73, B = 8 1.62 / 1.44, B = 16 5.69 / 5.34 and
// 5.68 / 2.85 (two runs); the seed's heads (NH 16, 128 x 256) B = 2 0.37 / 0.59, B = 4 0.75 /
// 0.60, B = 8 1.32 / 1.17; mLSTMexp B = 8 1.65 / 1.48; S = 2048, B = 32 1.61 / 1.44. A wave of
// walks takes about as long as the three kernels' B = 3 to 4, so the fused forward is the
// default where its walks fill their waves to 80% or more. In fp16 it computes q . n on the CUDA
// cores (n's range does not fit fp16 operands) and gained nothing (B = 8: 1.64 / 1.66), so bf16
// only.
bool fused_by_default(const MlstmProblem& p, const DeviceLimits& dev) {
  if (p.dtype != DType::BF16 || !check_fwd_fused_sm90(p, dev).empty()) return false;
  const int64_t walks = p.B * p.NH * (p.Dv / FwdFusedSm90Shape::kBV);
  const int64_t sms = std::max<int64_t>(1, dev.sm_count);
  const int64_t waves = (walks + sms - 1) / sms;
  return walks * 10 >= waves * sms * 8;
}

// Why: a walk's time is its chunks times the time per chunk, whatever the column width, and a
// 256-column walk does the work of two 128-column walks of the same head in less than twice the
// time (Q K^T, the loads of Q and K and the gate rows once for both), so where the 128-column
// walks take more waves than the 256-column ones by more than that ratio, the wide walk wins.
// H200, 2026-12-02, one call, `tfla bench forward --variant sig --reps 20 --config
// fused=1,fused_bv=128|256`, S = 8192, ms: NH 16, 128 x 256, B = 4 (one wave either way) 0.365
// against 0.637 (the ratio, 1.75); B = 8 0.718 / 0.718 against 0.685 / 0.684; B = 16 1.428
// against 1.344; NH 16, 64 x 256, B = 8 0.637 against 0.549; NH 8, 128 x 512, B = 8 0.703
// against 0.641. That wide walk still stored h in 4-byte pieces; with 16-byte stores, in a later
// call, B = 8 ran 0.651 / 0.645 (so the ratio is now lower, not measured again).
int fused_bv_by_default(const MlstmProblem& p, const DeviceLimits& dev) {
  constexpr double kWideWalkCost = 1.75;  // a 256-column walk's time over a 128-column one's
  if (!check_fwd_fused_sm90(p, dev, 256).empty()) return 128;
  const int64_t sms = std::max<int64_t>(1, dev.sm_count);
  const int64_t narrow = p.B * p.NH * (p.Dv / 128), wide = narrow / 2;
  const int64_t waves_narrow = (narrow + sms - 1) / sms, waves_wide = (wide + sms - 1) / sms;
  return static_cast<double>(waves_wide) * kWideWalkCost < static_cast<double>(waves_narrow) ? 256 : 128;
}

std::string check_fwd_sm90_config(const FwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev) {
  if (c.engine != Engine::Sm90) return "an mma.sync config given to the sm90 engine";
  if (c.parallel()) return "a parallel config given to fwd.chunkwise.sm90 (fwd.parallel.sm90 runs it)";
  if (std::string why = sm90_fwd_serves(p, dev); !why.empty()) return why;
  if (c.chunk < 128 || c.chunk % 128) return "engine=1 (sm90): chunk must be a multiple of 128";
  if (std::string r = check_fwd_output_sm90_tiles(c, p, dev); !r.empty()) return r;
  // A fused config's three-kernel keys are held valid too, so that the same config with fused = 0
  // (a pin, or the tuner's neighbouring point) runs.
  if (c.fused_bv != 128 && c.fused_bv != 256) return "fused_bv must be 128 or 256";
  if (c.fused)
    if (std::string r = check_fwd_fused_sm90(p, dev, c.fused_bv); !r.empty()) return r;
  if (c.st_sm90) return check_state_walk_sm90(p, dev, c.chunk, c.st_siz_b_k, c.st_siz_b_v, "st");
  if (std::string r = check_fwd_state_tiles(c, p); !r.empty()) return r;
  return check_fwd_state_limits(c, p, dev);
}


std::string check_fwd_fused_sm90(const MlstmProblem& p, const DeviceLimits& dev, int bv) {
  if (std::string why = sm90_fwd_serves(p, dev); !why.empty()) return "fused=1: " + why;
  if (p.Dqk != 64 && p.Dqk != 128 && p.Dqk != 256) return "fused=1: the fused forward needs Dqk 64, 128 or 256";
  if (p.Dv % FwdFusedSm90Shape::kBV) return "fused=1: the fused forward needs Dv a multiple of 128";
  if (bv != 128 && bv != 256) return "fused_bv must be 128 or 256";
  if (bv == 256 && (p.Dqk > 128 || p.Dv % 256))
    return "fused_bv=256: the fused forward's 256-column walk needs Dqk 64 or 128 and Dv a multiple of 256";
  return over_smem(fwd_fused_sm90_smem_bytes(static_cast<int>(p.Dqk), bv), "fused forward kernel", dev);
}

// __launch_bounds__(384, 1) as the output kernel: setmaxnreg moves the producer's registers to
// the consumers (24 / 240), whose state slice alone takes Dqk / 2.
rt::KernelSpec fwd_fused_sm90_kernel(const MlstmProblem& p, int bv) {
  return rt::with_min_blocks(
      rt::render("mlstm_fwd_fused_sm90", "tfla/mlstm_fwd_fused_sm90.cuh", "tfla::mlstm_fwd_fused_sm90",
                 "tfla::MlstmFwdFusedSm90Params",
                 {{"T", device_type(p.dtype)}, {"DQK", arg(p.Dqk)}, {"DV", arg(p.Dv)}, {"BV", arg(bv)},
                  {"EXP", arg(p.variant == Variant::Exp)}, {"NORMALIZE", arg(p.normalize)}},
                 FwdFusedSm90Shape::kThreads, fwd_fused_sm90_smem_bytes(static_cast<int>(p.Dqk), bv)),
      1);
}

SegmentPlan state_segments(int want, int64_t nc, int64_t bh) {
  SegmentPlan s;
  const int64_t most = std::max<int64_t>(1, std::min<int64_t>({int64_t{want}, nc, 65535 / std::max<int64_t>(bh, 1)}));
  if (most <= 1) return s;
  s.seg_chunks = static_cast<int>((nc + most - 1) / most);
  s.nseg = static_cast<int>((nc + s.seg_chunks - 1) / s.seg_chunks);
  if (s.nseg <= 1) s = SegmentPlan{};
  return s;
}

// Why: the summary walks are the split's critical path before the fused walks can start. Whole
// segments give (Dv / 128) B NH (nseg - 1) walks, 96 at B = 1, S = 65536 with the paper's heads,
// which leave 36 of 132 SMs idle for a quarter of the sequence each; the summary is a sum over
// tokens, so pieces of a segment walk apart and the fold adds them: 4 pieces are 384 walks of a
// sixteenth of the sequence in 3 waves, 192 sub-blocks of 64 rows on the longest SM against 256.
int summary_pieces(const MlstmProblem& p, const DeviceLimits& dev, const SegmentPlan& s, int chunk) {
  constexpr int64_t kMinPieceTokens = 1024;
  if (s.nseg <= 1 || s.seg_chunks <= 0 || chunk <= 0) return 1;
  const int64_t walks = std::max<int64_t>(1, p.Dv / FwdFusedSm90Shape::kBV) * p.B * p.NH * (s.nseg - 1);
  const int64_t rows = p.B * p.NH * (s.nseg - 1), sms = std::max(1, dev.sm_count);
  auto length = [&](int k) { return (walks * k + sms - 1) / sms * (s.seg_chunks / k); };
  int best = 1;
  for (int k : {2, 4, 8, 16}) {
    if (s.seg_chunks % k || int64_t{s.seg_chunks / k} * chunk < kMinPieceTokens || rows * k > 65535) break;
    if (length(k) < length(best)) best = k;
  }
  return best;
}

bool fused_split_serves(const MlstmProblem& p, const DeviceLimits& dev) {
  return check_state_walk_sm90(p, dev, kFusedChunk, p.Dqk, FwdFusedSm90Shape::kBV, "st").empty();
}

SegmentPlan fused_segments(const MlstmProblem& p, const DeviceLimits& dev, int want, int gate_chunk) {
  if (!fused_split_serves(p, dev)) return {};
  const int64_t nc = (p.S + kFusedChunk - 1) / kFusedChunk;
  SegmentPlan s = state_segments(want, nc, p.B * p.NH);
  if (s.nseg <= 1) return s;
  // the ring's slot and phase and Q's phase repeat every 2 STAGES chunks; a segment of a walk
  // that fills a saved buffer starts at one of its chunks
  const int kUnit = std::lcm(2 * FwdFusedSm90Shape::kStages, std::max(1, gate_chunk / kFusedChunk));
  s.seg_chunks = (s.seg_chunks + kUnit - 1) / kUnit * kUnit;
  s.nseg = static_cast<int>((nc + s.seg_chunks - 1) / s.seg_chunks);
  if (s.nseg <= 1) s = SegmentPlan{};
  return s;
}

// Why: a walk is one CTA per head and state tile stepping through the chunks in order, so with
// few heads (B = 1 at S = 65536: 32 walks of 128 columns for 132 SMs) most SMs idle while each
// walk is latency-bound. Splitting the sequence gives each segment's walk the same work as a
// head of a short sequence; the fix kernel then reads and rewrites the later segments' states
// once (about the state traffic of one more pass), which the idle SMs more than pay for. Eight
// chunks per segment at the least keep that pass and the fold over segments small. The CTAs of
// a split walk fill one wave (slots / walks segments, rounded down): the walks are equal work, so
// a partial second wave would cost as much as a full one.
int default_state_segments(const MlstmProblem& p, const DeviceLimits& dev, int chunk, int64_t walks,
                           int ctas_per_sm) {
  constexpr int64_t kMinChunksPerSegment = 8;
  const int64_t nc = (p.S + chunk - 1) / chunk;
  const int64_t slots = int64_t{dev.sm_count} * std::max(1, ctas_per_sm);
  if (walks <= 0 || 2 * walks > slots) return 1;
  const int64_t want = std::min(slots / walks, nc / kMinChunksPerSegment);
  return static_cast<int>(std::max<int64_t>(1, want));
}

rt::KernelSpec fwd_gates_kernel(const MlstmProblem& p, int chunk) {
  return rt::render("mlstm_fwd_gates", "tfla/mlstm_fwd_gates.cuh", "tfla::mlstm_fwd_gates", "tfla::MlstmFwdParams",
                    {{"CHUNK", arg(chunk)}, {"NT", "256"}, {"EXP", arg(p.variant == Variant::Exp)},
                     {"G", device_type(p.gate_dtype)}},
                    256, 0, false);
}

rt::KernelSpec fwd_states_kernel(const MlstmProblem& p, const FwdConfig& c, bool need_n, const DeviceLimits& dev) {
  if (c.st_sm90) return fwd_states_sm90_kernel(p, c.chunk, c.st_siz_b_v);
  const std::string T = device_type(p.dtype);
  return rt::with_min_blocks(
      rt::render("mlstm_fwd_states", "tfla/mlstm_fwd_states.cuh", "tfla::mlstm_fwd_states", "tfla::MlstmFwdParams",
                 {{"T", T}, {"TS", T}, {"DQK", arg(p.Dqk)}, {"DV", arg(p.Dv)}, {"CHUNK", arg(c.chunk)},
                  {"BK", arg(c.st_siz_b_k)}, {"BV", arg(c.st_siz_b_v)}, {"SUB", arg(c.st_sub)},
                  {"WM", arg(c.st_warps_m)}, {"WN", arg(c.st_warps_n)}, {"EXP", arg(p.variant == Variant::Exp)},
                  {"NEED_N", arg(need_n)}, {"SPLIT", arg(c.st_seg > 1)}},
                 32 * c.st_warps_m * c.st_warps_n, fwd_states_smem(c, p)),
      fwd_states_min_blocks(c, p, dev));
}

rt::KernelSpec state_fix_kernel(const std::string& name, const std::string& params, const MlstmProblem& p,
                                std::vector<rt::TemplateArg> more) {
  std::vector<rt::TemplateArg> args = {{"TS", device_type(p.dtype)}, {"DQK", arg(p.Dqk)}, {"DV", arg(p.Dv)},
                                       {"EXP", arg(p.variant == Variant::Exp)}};
  for (rt::TemplateArg& a : more) args.push_back(std::move(a));
  return rt::render(name, "tfla/" + name + ".cuh", "tfla::" + name, params, std::move(args), 256, 0, false);
}
rt::KernelSpec fwd_state_fix_kernel(const MlstmProblem& p, bool starts) {
  return state_fix_kernel("mlstm_fwd_state_fix", "tfla::MlstmFwdParams", p, {{"STARTS", arg(starts)}});
}

int state_walk_sm90_smem(const MlstmProblem& p, int bv) {
  return state_walk_sm90_smem_bytes(static_cast<int>(p.Dqk), bv, kStateWalkSm90Stages);
}

int state_walk_sm90_bv(const MlstmProblem& p, const DeviceLimits& dev) {
  return p.Dv % 128 == 0 && p.B * p.NH * (p.Dv / 128) >= dev.sm_count ? 128 : 64;
}

StateWalkSm90Split state_walk_sm90_split(const MlstmProblem& p, const DeviceLimits& dev, int chunk) {
  if (p.Dv % 128 == 0)
    if (const int seg = default_state_segments(p, dev, chunk, p.B * p.NH * (p.Dv / 128), 1); seg > 1) return {128, seg};
  return {state_walk_sm90_bv(p, dev), 1};
}

std::string check_state_walk_sm90(const MlstmProblem& p, const DeviceLimits& dev, int chunk, int siz_b_k, int bv,
                                  const char* what) {
  const std::string k = std::string(what) + "_sm90=1: ";
  if (dev.arch != "sm_90a") return k + "the sm90 engine needs an sm_90a device (this one is " + dev.arch + ")";
  if (p.dtype != DType::BF16 && p.dtype != DType::FP16) return k + "the sm90 engine takes bf16 or fp16 inputs";
  if (p.Dqk % 128 || p.Dqk > 256) return k + "the sm90 state kernels need Dqk 128 or 256";
  if (siz_b_k != p.Dqk) return k + what + "_siz_b_k must be Dqk (one CTA holds every Dqk row)";
  if ((bv != 64 && bv != 128) || p.Dv % bv) return k + what + "_siz_b_v must be 64 or 128 and divide Dv";
  if (chunk % StateWalkSm90Shape::kSub) return k + "chunk must be a multiple of 64";
  return over_smem(state_walk_sm90_smem(p, bv), "state kernel", dev);
}

namespace {
// A chunk-state walk kernel (`name` is its template and header, params its parameter block), with
// __launch_bounds__(384, 1) as the output kernel: setmaxnreg moves registers to the consumers.
rt::KernelSpec state_walk_kernel(const std::string& name, const std::string& params, const MlstmProblem& p,
                                 int chunk, int bv) {
  return rt::with_min_blocks(
      rt::render(name, "tfla/" + name + ".cuh", "tfla::" + name, params,
                 {{"T", device_type(p.dtype)}, {"DQK", arg(p.Dqk)}, {"DV", arg(p.Dv)}, {"CHUNK", arg(chunk)},
                  {"BV", arg(bv)}, {"STAGES", arg(kStateWalkSm90Stages)}, {"EXP", arg(p.variant == Variant::Exp)}},
                 StateWalkSm90Shape::kThreads, state_walk_sm90_smem(p, bv)),
      1);
}
}  // namespace

rt::KernelSpec fwd_states_sm90_kernel(const MlstmProblem& p, int chunk, int bv) {
  return state_walk_kernel("mlstm_fwd_states_sm90", "tfla::MlstmFwdStatesSm90Params", p, chunk, bv);
}
rt::KernelSpec bwd_dstates_sm90_kernel(const MlstmProblem& p, int chunk, int bv) {
  return state_walk_kernel("mlstm_bwd_dstates_sm90", "tfla::MlstmBwdDstatesSm90Params", p, chunk, bv);
}
rt::KernelSpec fwd_summary_sm90_kernel(const MlstmProblem& p, int chunk) {
  constexpr int bv = FwdFusedSm90Shape::kBV;
  return rt::with_min_blocks(
      rt::render("mlstm_fwd_summary_sm90", "tfla/mlstm_fwd_summary_sm90.cuh", "tfla::mlstm_fwd_summary_sm90",
                 "tfla::MlstmFwdStatesSm90Params",
                 {{"T", device_type(p.dtype)}, {"DQK", arg(p.Dqk)}, {"DV", arg(p.Dv)}, {"CHUNK", arg(chunk)},
                  {"BV", arg(bv)}, {"STAGES", arg(kStateWalkSm90Stages)}, {"EXP", arg(p.variant == Variant::Exp)}},
                 StateWalkSm90Shape::kThreads, state_walk_sm90_smem(p, bv)),
      1);
}

std::vector<rt::KernelSpec> fwd_kernels(const MlstmProblem& p, const FwdConfig& c, const DeviceLimits& dev) {
  const std::string T = device_type(p.dtype);
  const bool exp = p.variant == Variant::Exp;
  // The sm90 engine's output kernel: __launch_bounds__(384, 1) caps registers at 168 so that
  // setmaxnreg can move the producer's to the consumers (40 / 232).
  const auto output_sm90 = [&] {
    return rt::with_min_blocks(
        rt::render("mlstm_fwd_output_sm90", "tfla/mlstm_fwd_output_sm90.cuh", "tfla::mlstm_fwd_output_sm90",
                   "tfla::MlstmFwdSm90Params",
                   {{"T", T}, {"DQK", arg(p.Dqk)}, {"DV", arg(p.Dv)}, {"CHUNK", arg(c.chunk)},
                    {"BV", arg(c.siz_b_v)}, {"STAGES", arg(kFwdSm90Stages)}, {"EXP", arg(exp)},
                    {"NORMALIZE", arg(p.normalize)}},
                   FwdOutputSm90Shape::kThreads, fwd_output_sm90_smem(c, p)),
        1);
  };
  if (c.parallel() && c.engine == Engine::Sm90)  // the gate and output kernels at the one chunk
    return {fwd_gates_kernel(p, c.chunk), output_sm90()};
  if (c.parallel()) {  // the output kernel with CHUNK = 0, reading the raw gates of dtype G
    return {rt::render(
        "mlstm_fwd_output", "tfla/mlstm_fwd_output.cuh", "tfla::mlstm_fwd_output", "tfla::MlstmFwdParams",
        {{"T", T}, {"TS", T}, {"DQK", arg(p.Dqk)}, {"DV", arg(p.Dv)}, {"CHUNK", "0"}, {"BQ", arg(c.siz_b_q)},
         {"BKV", arg(c.siz_b_kv)}, {"BV", arg(c.siz_b_v)}, {"BKC", arg(c.siz_b_kc)}, {"WM", arg(c.warps_m)},
         {"WN", arg(c.warps_n)}, {"EXP", arg(exp)}, {"NORMALIZE", arg(p.normalize)},
         {"G", device_type(p.gate_dtype)}},
        32 * c.warps_m * c.warps_n, fwd_output_smem(c, p))};
  }
  if (c.fused) {
    // the gate kernel at the config's chunk fills a saved-states buffer's gate rows
    std::vector<rt::KernelSpec> specs = {fwd_gates_kernel(p, kFusedChunk), fwd_fused_sm90_kernel(p, c.fused_bv),
                                         fwd_gates_kernel(p, c.chunk)};
    // the summary walk and the fold to the segments' starts, by the config and the head sizes
    // alone (a loaded selection's kernels are keyed so; the plan launches them where it splits)
    if (c.st_seg > 1 && fused_split_serves(p, dev)) {
      specs.push_back(fwd_summary_sm90_kernel(p, kFusedChunk));
      specs.push_back(fwd_state_fix_kernel(p, true));
      // with a saved buffer, the summary walk at the config's chunk reads the buffer's gate rows
      specs.push_back(fwd_summary_sm90_kernel(p, c.chunk));
    }
    return specs;
  }
  // The state kernel always carries n: the output needs it unless mLSTMsig runs without the
  // normalizer, but the returned last state (n_S) is part of the op's contract either way.
  const bool need_n = true;
  std::vector<rt::KernelSpec> specs = {fwd_gates_kernel(p, c.chunk), fwd_states_kernel(p, c, need_n, dev)};
  if (c.engine == Engine::Sm90)
    specs.push_back(output_sm90());
  else
    specs.push_back(rt::render("mlstm_fwd_output", "tfla/mlstm_fwd_output.cuh", "tfla::mlstm_fwd_output",
                               "tfla::MlstmFwdParams",
                               {{"T", T}, {"TS", T}, {"DQK", arg(p.Dqk)}, {"DV", arg(p.Dv)}, {"CHUNK", arg(c.chunk)},
                                {"BQ", arg(c.siz_b_q)}, {"BKV", arg(c.siz_b_kv)}, {"BV", arg(c.siz_b_v)},
                                {"BKC", arg(c.siz_b_kc)}, {"WM", arg(c.warps_m)}, {"WN", arg(c.warps_n)},
                                {"EXP", arg(exp)}, {"NORMALIZE", arg(p.normalize)}},
                               32 * c.warps_m * c.warps_n, fwd_output_smem(c, p)));
  if (c.st_seg > 1) specs.push_back(fwd_state_fix_kernel(p, false));
  return specs;
}

}  // namespace tfla::ops
