#include "ops/bwd_config.hpp"

#include <algorithm>

#include "ops/config_keys.hpp"
#include "ops/render_args.hpp"
#include "tfla/mlstm_params.cuh"
#include "tfla/mlstm_sm90_params.cuh"

namespace tfla::ops {
namespace {
// How much more FLOP work the parallel backward may do than the chunkwise one and still win
// (measured: see parallel_bwd_by_default).
constexpr double kBwdParallelAdvantage = 0.62;
int largest_divisor(int d, std::initializer_list<int> options) {
  for (int o : options)
    if (d % o == 0) return o;
  return 16;
}
// Why: the dC recurrence walks the chunks backwards, one CTA per head and dC block, so with few
// heads the default's blocks shrink with the forward's state blocks (B = 1 at the paper's heads:
// 256 walks of 64 x 64, each reading q and dh of the whole sequence). Where the heads are that
// few, the dC walk keeps the 128 x 128 blocks of a full batch and splits the sequence into
// segments instead (default_state_segments: one wave at the CTAs per SM of its launch bounds).
void split_dc_walk(BwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev);

// The tile kernels' warp grid for their tile sizes: 32-row x 4 warps where the tiles allow.
void set_tile_warps(BwdConfig& c) {
  const int bn_min = std::min(c.siz_b_nqk, c.siz_b_nv);
  if (c.siz_b_r % 32 == 0 && c.siz_b_t % 64 == 0 && bn_min % 64 == 0) {
    c.warps_m = c.siz_b_r / 32;
    c.warps_n = 4;
  } else if (c.siz_b_t % 32 == 0 && bn_min % 32 == 0) {
    c.warps_m = c.siz_b_r / 16;
    c.warps_n = 2;
  } else {
    c.warps_m = c.siz_b_r / 16;
    c.warps_n = 1;
  }
}
}  // namespace

namespace {
const KeyTable<BwdConfig>& table() {
  static const KeyTable<BwdConfig> t({
      {{"chunk", 16, 65536, "chunk length L (a multiple of 16)"}, &BwdConfig::chunk},
      {{"st_siz_b_k", 16, 512, "Dqk rows of C per recompute state CTA"}, &BwdConfig::st_siz_b_k},
      {{"st_siz_b_v", 16, 512, "Dv columns of C per recompute state CTA"}, &BwdConfig::st_siz_b_v},
      {{"st_sub", 16, 65536, "chunk rows per streamed state sub-block"}, &BwdConfig::st_sub},
      {{"st_warps_m", 1, 16, "state kernel warps along Dqk"}, &BwdConfig::st_warps_m},
      {{"st_warps_n", 1, 16, "state kernel warps along Dv"}, &BwdConfig::st_warps_n},
      {{"ds_siz_b_k", 16, 512, "Dqk rows of dC per dC CTA"}, &BwdConfig::ds_siz_b_k},
      {{"ds_siz_b_v", 16, 512, "Dv columns of dC per dC CTA"}, &BwdConfig::ds_siz_b_v},
      {{"ds_sub", 16, 65536, "chunk rows per streamed dC sub-block"}, &BwdConfig::ds_sub},
      {{"ds_warps_m", 1, 16, "dC kernel warps along Dqk"}, &BwdConfig::ds_warps_m},
      {{"ds_warps_n", 1, 16, "dC kernel warps along Dv"}, &BwdConfig::ds_warps_n},
      {{"siz_b_r", 16, 512, "gradient rows per tile CTA"}, &BwdConfig::siz_b_r},
      {{"siz_b_t", 16, 512, "rows of the other side per intra-chunk tile"}, &BwdConfig::siz_b_t},
      {{"siz_b_nqk", 16, 512, "dQ/dK columns per CTA (a Dqk tile)"}, &BwdConfig::siz_b_nqk},
      {{"siz_b_nv", 16, 512, "dV columns per CTA (a Dv tile)"}, &BwdConfig::siz_b_nv},
      {{"siz_b_kc", 16, 512, "contraction rows per staged state block"}, &BwdConfig::siz_b_kc},
      {{"warps_m", 1, 16, "tile kernel warps along the rows"}, &BwdConfig::warps_m},
      {{"warps_n", 1, 16, "tile kernel warps along the columns"}, &BwdConfig::warps_n},
      {{"st_sm90", 0, 1, "recompute state kernel on the sm90 engine (1) or mma.sync (0)"}, &BwdConfig::st_sm90},
      {{"ds_sm90", 0, 1, "dC kernel on the sm90 engine (1) or mma.sync (0)"}, &BwdConfig::ds_sm90},
      {{"tl_sm90", 0, 1, "dQ/dK/dV tile kernels on the sm90 engine (1) or mma.sync (0)"}, &BwdConfig::tl_sm90},
      {{"tl_dkv", 0, 1, "dK and dV in one sm90 kernel (1, with tl_sm90=1) or one kernel each (0)"}, &BwdConfig::tl_dkv},
      {{"st_seg", 1, 4096, "segments of the sequence the recompute's state walk runs in parallel"}, &BwdConfig::st_seg},
      {{"ds_seg", 1, 4096, "segments of the sequence the dC walk runs in parallel"}, &BwdConfig::ds_seg},
  });
  return t;
}
}  // namespace

const std::vector<KeyDef>& BwdConfig::key_defs() { return table().defs(); }

Config BwdConfig::to_config() const {
  Config c = table().to_config(*this);
  c[kFormKey] = parallel() ? 1 : 0;
  c[kEngineKey] = static_cast<int64_t>(engine);
  return c;
}

void BwdConfig::apply(const Config& c) {
  table().apply(*this, c, "backward config", {kFormKey, kEngineKey});
  if (auto it = c.find(kFormKey); it != c.end()) {
    if (it->second != 0 && it->second != 1)
      throw Error(ErrorCode::InvalidArgument, "backward config key parallel=" + std::to_string(it->second) +
                                                  " must be 0 (chunkwise) or 1 (parallel)");
    form = it->second ? Form::Parallel : Form::Chunkwise;
  }
  if (auto it = c.find(kEngineKey); it != c.end()) {
    if (it->second != 0 && it->second != 1)
      throw Error(ErrorCode::InvalidArgument, "backward config key engine=" + std::to_string(it->second) +
                                                  " must be 0 (mma.sync) or 1 (sm90)");
    engine = it->second ? Engine::Sm90 : Engine::MmaSync;
  }
}

FwdConfig BwdConfig::recompute_config() const {
  FwdConfig f;
  f.chunk = chunk;
  f.st_siz_b_k = st_siz_b_k;
  f.st_siz_b_v = st_siz_b_v;
  f.st_sub = st_sub;
  f.st_warps_m = st_warps_m;
  f.st_warps_n = st_warps_n;
  f.st_sm90 = st_sm90;
  f.st_seg = st_seg;
  return f;
}

int bwd_dstates_smem(const BwdConfig& c, const MlstmProblem& p) {
  return bwd_dstates_smem_bytes(static_cast<int>(dtype_bytes(p.dtype)), c.ds_sub, c.ds_siz_b_k,
                                c.ds_siz_b_v, c.ds_warps_m * c.ds_warps_n);
}

namespace {
// Why: the gradient tile kernels hold 146-173 registers, so one 256-thread CTA ran per SM (12.4%
// occupancy, ncu, H100, paper shape); two per SM (registers capped at 128, ptxas: 28-68 bytes of
// spills) took the chunkwise backward from 7.85 to 7.30 ms (mLSTMsig, S = 8192).
int two_ctas_if_they_fit(int threads, int smem, const DeviceLimits& dev) {
  constexpr int kPerBlockReserve = 1024;  // the SM's shared memory reserved per resident CTA
  return threads <= 256 && 2 * (smem + kPerBlockReserve) <= dev.smem_per_sm_bytes ? 2 : 0;
}
}  // namespace

int bwd_tile_min_blocks(const BwdConfig& c, const MlstmProblem& p, int mode, const DeviceLimits& dev) {
  return two_ctas_if_they_fit(32 * c.warps_m * c.warps_n, bwd_tile_smem(c, p, mode), dev);
}
// Why: left to itself ptxas gave the 128 x 128 dC kernel 128 registers in one build and 146 in
// another (one CTA per SM): 0.85 against 1.25 ms at the paper shape (H200, ncu). The cap keeps
// two CTAs per SM whatever the code around the walk (ptxas: 0-8 bytes of spills).
int bwd_dstates_min_blocks(const BwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev) {
  const int threads = 32 * c.ds_warps_m * c.ds_warps_n;
  if (int64_t{c.ds_siz_b_k} * c.ds_siz_b_v > 64 * int64_t{threads}) return 0;
  return two_ctas_if_they_fit(threads, bwd_dstates_smem(c, p), dev);
}
int bwd_parallel_min_blocks(const BwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev) {
  return two_ctas_if_they_fit(32 * c.warps_m * c.warps_n, bwd_parallel_smem(c, p), dev);
}

int bwd_tile_smem(const BwdConfig& c, const MlstmProblem& p, int mode) {
  const int dx = static_cast<int>(mode == 2 ? p.Dqk : p.Dv);
  const int bn = mode == 2 ? c.siz_b_nv : c.siz_b_nqk;
  return bwd_tile_smem_bytes(static_cast<int>(dtype_bytes(p.dtype)), dx, c.siz_b_r, c.siz_b_t, bn,
                             c.siz_b_kc, mode != 2) +
         (c.parallel() ? gate_scan_smem_bytes(c.siz_b_r, c.warps_m * c.warps_n) : 0);
}

int bwd_parallel_smem(const BwdConfig& c, const MlstmProblem& p) {
  return std::max({bwd_tile_smem(c, p, 0), bwd_tile_smem(c, p, 1), bwd_tile_smem(c, p, 2)});
}

// Why this default: the same chunk rule as the forward (256 once the sequence is long enough)
// so the recomputed and gradient chunk states stay small; gradient tiles 256 columns wide (the
// whole Dqk = 256 head) because every column tile recomputes its own score tiles: measured on
// H200 at the paper shape, 256-wide tiles ran the backward in 8.2 ms against 11.5 ms at 128;
// 64-row tiles with warps 2 x 4; the state and dC kernels use the forward's blocks. fp32 with
// wide heads shrinks the row tiles to fit shared memory.
namespace {
void split_dc_walk(BwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev) {
  const int dqk = static_cast<int>(p.Dqk), dv = static_cast<int>(p.Dv);
  BwdConfig s = c;
  s.ds_siz_b_k = largest_divisor(dqk, {128, 64, 32, 16});
  s.ds_siz_b_v = largest_divisor(dv, {128, 64, 32, 16});
  s.ds_warps_m = std::min(4, s.ds_siz_b_k / 16);
  s.ds_warps_n = std::min(2, s.ds_siz_b_v / 16);
  s.ds_sub = std::min({64, s.chunk, 32 * s.ds_warps_m * s.ds_warps_n});
  while (bwd_dstates_smem(s, p) > dev.smem_optin_bytes && s.ds_sub > 16) s.ds_sub /= 2;
  const int64_t walks = p.B * p.NH * (dqk / s.ds_siz_b_k) * (dv / s.ds_siz_b_v);
  s.ds_seg = default_state_segments(p, dev, s.chunk, walks, std::max(1, bwd_dstates_min_blocks(s, p, dev)));
  if (s.ds_seg > 1 && check_bwd_config(s, p, dev).empty()) c = s;
}
}  // namespace

BwdConfig chunkwise_bwd_config(const MlstmProblem& p, const DeviceLimits& dev, int chunk) {
  const int64_t smem_budget = dev.smem_optin_bytes;
  BwdConfig c;
  const int dqk = static_cast<int>(p.Dqk), dv = static_cast<int>(p.Dv);
  c.chunk = chunk > 0 ? chunk : default_chunk(p);
  const FwdConfig f = chunkwise_fwd_config(p, dev, c.chunk);
  c.st_siz_b_k = f.st_siz_b_k;
  c.st_siz_b_v = f.st_siz_b_v;
  c.st_sub = f.st_sub;
  c.st_warps_m = f.st_warps_m;
  c.st_warps_n = f.st_warps_n;
  c.st_seg = f.st_seg;
  c.ds_siz_b_k = f.st_siz_b_k;
  c.ds_siz_b_v = f.st_siz_b_v;
  c.ds_sub = f.st_sub;
  c.ds_warps_m = f.st_warps_m;
  c.ds_warps_n = f.st_warps_n;
  c.siz_b_r = std::min(64, c.chunk);
  c.siz_b_t = std::min(64, c.chunk);
  c.siz_b_nqk = largest_divisor(dqk, {256, 128, 64, 32, 16});
  c.siz_b_nv = largest_divisor(dv, {256, 128, 64, 32, 16});
  c.siz_b_kc = 64;
  while ((dqk % c.siz_b_kc) || (dv % c.siz_b_kc)) c.siz_b_kc /= 2;  // >= 16: both are multiples of 16
  auto set_warps = [&] { set_tile_warps(c); };
  set_warps();
  while (std::max({bwd_tile_smem(c, p, 0), bwd_tile_smem(c, p, 1), bwd_tile_smem(c, p, 2)}) >
             smem_budget &&
         c.siz_b_r > 16) {
    c.siz_b_r /= 2;
    c.siz_b_t = c.siz_b_r;
    set_warps();
  }
  while (bwd_dstates_smem(c, p) > smem_budget && c.ds_sub > 16) c.ds_sub /= 2;
  split_dc_walk(c, p, dev);
  return c;
}

// Why the parallel form is the default for short sequences: per token and head its three tile
// modes each compute their scores and products over the whole prefix, 3 S (Dqk + Dv) FLOPs, in
// two launches with no states; the chunkwise form recomputes the chunk states, runs the dC
// recurrence and the three modes' inter parts (about 10 Dqk Dv) plus the intra-chunk part
// 3 L (Dqk + Dv), in eight launches with states written and read. The parallel form is allowed
// kBwdParallelAdvantage = 0.62 of the chunkwise FLOPs. H100, 2026-11-22, `tfla bench backward
// --variant exp --tokens 53760 --config parallel=0|1`, bf16, NH = 8, chunkwise vs parallel, ms:
//   Dqk 256, Dv 512: S=256 6.004 vs 3.946, 384 6.181 vs 4.949, 512 5.991 vs 5.994, 640 6.062 vs
//                    6.993 (rule: parallel to S=511)
//   Dqk = Dv = 128:  S=256 1.602 vs 1.238, 384 1.584 vs 1.581, 512 1.628 vs 1.911 (rule: to S=291)
// Both crossovers sit where the rule puts them to within a tie. (Measured before the gradient
// tile kernels ran two CTAs per SM, the forms crossed at FLOP parity.)
bool parallel_bwd_by_default(const MlstmProblem& p) {
  if (p.S > parallel_max_seq()) return false;
  const double dqk = static_cast<double>(p.Dqk), dv = static_cast<double>(p.Dv);
  const double chunkwise = 10.0 * dqk * dv + 3.0 * default_chunk(p) * (dqk + dv);
  return 3.0 * static_cast<double>(p.S) * (dqk + dv) <= kBwdParallelAdvantage * chunkwise;
}


// The parallel form's tiles: the chunkwise default's gradient tiles (64 rows; BT = BR, so the
// column tiles divide the row tile as the outward walk needs), shrunk if the gate scan tips the
// largest mode over the shared-memory budget.
BwdConfig parallel_bwd_config(const MlstmProblem& p, const DeviceLimits& dev) {
  const int64_t smem_budget = dev.smem_optin_bytes;
  BwdConfig c = chunkwise_bwd_config(p, dev);
  c.form = Form::Parallel;
  while (bwd_parallel_smem(c, p) > smem_budget && c.siz_b_r > 16) {
    c.siz_b_r /= 2;
    c.siz_b_t = c.siz_b_r;
    set_tile_warps(c);
  }
  // The chunk and the walks' splits are those of the chunkwise default a call with states falls
  // back to (the sm90 engine's where it is preferred), so a parallel config's workspace size
  // covers that fallback.
  if (sm90_bwd_preferred(p, dev)) {
    const BwdConfig f = sm90_bwd_config(p, dev);
    c.chunk = f.chunk;
    c.st_seg = f.st_seg;
    c.ds_seg = f.ds_seg;
  }
  return c;
}

namespace {
// The tile and thread rules of the backward's kernels (the recompute's through the forward's
// full rule, with its device limits).
std::string check_bwd_tiles(const BwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev) {
  const int dqk = static_cast<int>(p.Dqk), dv = static_cast<int>(p.Dv);
  if (c.engine != Engine::MmaSync) return "an sm90 config given to the mma.sync engine";
  if (c.st_sm90 || c.ds_sm90 || c.tl_sm90 || c.tl_dkv)
    return "st_sm90=1, ds_sm90=1, tl_sm90=1 and tl_dkv=1 need the sm90 engine (engine=1)";
  if (c.parallel()) {
    if (c.chunk < 16 || c.chunk % 16) return "chunk must be a positive multiple of 16";
    if (std::string why = parallel_seq_limit(p); !why.empty()) return why;
    if (c.siz_b_r < 16) return "siz_b_r must be at least 16";
    if (c.siz_b_t < 16 || c.siz_b_r % c.siz_b_t) return "parallel=1: siz_b_t must divide siz_b_r";
  } else if (std::string f = check_fwd_config([&] {
        FwdConfig x = chunkwise_fwd_config(p, dev, c.chunk);
        x.st_siz_b_k = c.st_siz_b_k; x.st_siz_b_v = c.st_siz_b_v; x.st_sub = c.st_sub;
        x.st_warps_m = c.st_warps_m; x.st_warps_n = c.st_warps_n;
        return x;
      }(), p, dev);
      !f.empty())
    return f;
  if (!c.parallel()) {  // the dC kernel and the chunk's tiling
    if (c.ds_siz_b_k < 16 || dqk % c.ds_siz_b_k) return "ds_siz_b_k must divide Dqk";
    if (c.ds_siz_b_v < 16 || dv % c.ds_siz_b_v) return "ds_siz_b_v must divide Dv";
    if (c.ds_warps_m < 1 || c.ds_warps_n < 1 || c.ds_warps_m * c.ds_warps_n > 16) return "ds_warps_m * ds_warps_n must be 1..16";
    if (c.ds_siz_b_k % (16 * c.ds_warps_m)) return "ds_siz_b_k must be a multiple of 16 * ds_warps_m";
    if (c.ds_siz_b_v % (16 * c.ds_warps_n)) return "ds_siz_b_v must be a multiple of 16 * ds_warps_n";
    if (c.ds_sub < 16 || c.ds_sub % 16 || c.chunk % c.ds_sub) return "ds_sub must be a multiple of 16 dividing chunk";
    if (32 * c.ds_warps_m * c.ds_warps_n < c.ds_sub) return "dC kernel needs a thread per sub-block row";
    if (c.siz_b_r < 16 || c.chunk % c.siz_b_r) return "siz_b_r must divide chunk";
    if (c.siz_b_t < 16 || c.chunk % c.siz_b_t) return "siz_b_t must divide chunk";
  }
  if (c.warps_m < 1 || c.warps_n < 1 || c.warps_n > 4 || c.warps_m * c.warps_n > 16) return "warps_n must be 1..4 and warps_m * warps_n at most 16";
  if (c.siz_b_r % (16 * c.warps_m)) return "siz_b_r must be a multiple of 16 * warps_m";
  if (c.siz_b_t % (16 * c.warps_n)) return "siz_b_t must be a multiple of 16 * warps_n";
  if (c.siz_b_nqk < 16 || dqk % c.siz_b_nqk || c.siz_b_nqk % (16 * c.warps_n)) return "siz_b_nqk must divide Dqk and be a multiple of 16 * warps_n";
  if (c.siz_b_nv < 16 || dv % c.siz_b_nv || c.siz_b_nv % (16 * c.warps_n)) return "siz_b_nv must divide Dv and be a multiple of 16 * warps_n";
  if (c.siz_b_kc < 16 || c.siz_b_kc % 16 || dqk % c.siz_b_kc || dv % c.siz_b_kc) return "siz_b_kc must be a multiple of 16 dividing Dqk and Dv";
  const int nt = 32 * c.warps_m * c.warps_n;
  if (nt < c.siz_b_r || nt < c.siz_b_t) return "tile kernels need a thread per row";
  return {};
}

}  // namespace

std::string check_bwd_config(const BwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev) {
  if (std::string r = check_bwd_tiles(c, p, dev); !r.empty()) return r;
  static const char* const kTileNames[3] = {"dQ kernel", "dK kernel", "dV kernel"};
  for (int mode = 0; mode < 3; ++mode)
    if (std::string r = over_smem(bwd_tile_smem(c, p, mode), kTileNames[mode], dev); !r.empty()) return r;
  const int64_t nt = 32 * c.warps_m * c.warps_n;
  const int64_t bn = std::max(c.siz_b_nqk, c.siz_b_nv);
  if (std::string r = over_registers(int64_t{c.siz_b_r} * (bn + c.siz_b_t), nt, "gradient tile kernels", dev);
      !r.empty())
    return r;
  if (c.parallel()) return {};  // no state or dC kernel in the parallel backward
  if (std::string r = over_smem(bwd_dstates_smem(c, p), "dC kernel", dev); !r.empty()) return r;
  if (std::string r = over_smem(fwd_states_smem(c.recompute_config(), p), "state kernel", dev); !r.empty())
    return r;
  if (std::string r = over_registers(int64_t{c.st_siz_b_k} * c.st_siz_b_v, 32 * c.st_warps_m * c.st_warps_n,
                                     "state kernel", dev);
      !r.empty())
    return r;
  return over_registers(int64_t{c.ds_siz_b_k} * c.ds_siz_b_v, 32 * c.ds_warps_m * c.ds_warps_n, "dC kernel", dev);
}

std::vector<rt::KernelSpec> bwd_kernels(const MlstmProblem& p, const BwdConfig& c, const DeviceLimits& dev) {
  const std::string T = device_type(p.dtype), G = device_type(p.gate_dtype);
  const bool exp = p.variant == Variant::Exp;
  // the mma.sync parallel form: the tile modes in one launch, then the gate gradients over one chunk (0)
  if (c.parallel() && c.engine == Engine::MmaSync) {
    return {rt::with_min_blocks(
                rt::render("mlstm_bwd_parallel", "tfla/mlstm_bwd_tile.cuh", "tfla::mlstm_bwd_parallel",
                           "tfla::MlstmBwdParams",
                           {{"T", T}, {"DQK", arg(p.Dqk)}, {"DV", arg(p.Dv)}, {"BR", arg(c.siz_b_r)},
                            {"BT", arg(c.siz_b_t)}, {"BNQK", arg(c.siz_b_nqk)}, {"BNV", arg(c.siz_b_nv)},
                            {"BKC", arg(c.siz_b_kc)}, {"WM", arg(c.warps_m)}, {"WN", arg(c.warps_n)},
                            {"EXP", arg(exp)}, {"G", G}},
                           32 * c.warps_m * c.warps_n, bwd_parallel_smem(c, p)),
                bwd_parallel_min_blocks(c, p, dev)),
            rt::render("mlstm_bwd_gates_local", "tfla/mlstm_bwd_gates.cuh", "tfla::mlstm_bwd_gates_local",
                       "tfla::MlstmBwdParams",
                       {{"T", T}, {"G", G}, {"DQK", arg(p.Dqk)}, {"CHUNK", "0"}, {"NT", "256"}, {"EXP", arg(exp)}},
                       256, 0, false)};
  }
  auto tile = [&](int mode) {
    if (c.tl_sm90) return bwd_tile_sm90_kernel(p, c, mode, dev);
    const int bn = mode == 2 ? c.siz_b_nv : c.siz_b_nqk;
    return rt::with_min_blocks(
        rt::render("mlstm_bwd_tile", "tfla/mlstm_bwd_tile.cuh", "tfla::mlstm_bwd_tile", "tfla::MlstmBwdParams",
                   {{"T", T}, {"TS", T}, {"DQK", arg(p.Dqk)}, {"DV", arg(p.Dv)}, {"CHUNK", arg(c.chunk)},
                    {"BR", arg(c.siz_b_r)}, {"BT", arg(c.siz_b_t)}, {"BN", arg(bn)}, {"BKC", arg(c.siz_b_kc)},
                    {"WM", arg(c.warps_m)}, {"WN", arg(c.warps_n)}, {"EXP", arg(exp)}, {"MODE", arg(mode)}},
                   32 * c.warps_m * c.warps_n, bwd_tile_smem(c, p, mode)),
        bwd_tile_min_blocks(c, p, mode, dev));
  };
  auto gate_gradients = [&](std::vector<rt::KernelSpec>& specs) {
    specs.push_back(rt::render("mlstm_bwd_gates_local", "tfla/mlstm_bwd_gates.cuh", "tfla::mlstm_bwd_gates_local",
                               "tfla::MlstmBwdParams",
                               {{"T", T}, {"G", G}, {"DQK", arg(p.Dqk)}, {"CHUNK", arg(c.chunk)}, {"NT", "256"},
                                {"EXP", arg(exp)}},
                               256, 0, false));
    specs.push_back(rt::render("mlstm_bwd_gates_df", "tfla/mlstm_bwd_gates.cuh", "tfla::mlstm_bwd_gates_df",
                               "tfla::MlstmBwdParams", {{"G", G}, {"CHUNK", arg(c.chunk)}, {"NT", "256"}}, 256, 0,
                               false));
  };
  auto gradient_tiles = [&](std::vector<rt::KernelSpec>& specs) {
    specs.push_back(tile(0));
    if (c.tl_dkv) {
      specs.push_back(bwd_dkv_sm90_kernel(p, c, dev));
    } else {
      specs.push_back(tile(1));
      specs.push_back(tile(2));
    }
  };
  if (c.parallel()) {  // the sm90 engine's: gates, the gradient tiles, the gate gradients at the one chunk
    std::vector<rt::KernelSpec> specs = {fwd_gates_kernel(p, c.chunk)};
    gradient_tiles(specs);
    gate_gradients(specs);
    return specs;
  }
  const FwdConfig rc = c.recompute_config();
  std::vector<rt::KernelSpec> specs = {fwd_gates_kernel(p, c.chunk),
                                       fwd_states_kernel(p, rc, /*need_n=*/false, dev)};
  if (c.ds_sm90)
    specs.push_back(bwd_dstates_sm90_kernel(p, c.chunk, c.ds_siz_b_v));
  else
    specs.push_back(rt::with_min_blocks(
        rt::render("mlstm_bwd_dstates", "tfla/mlstm_bwd_dstates.cuh", "tfla::mlstm_bwd_dstates", "tfla::MlstmBwdParams",
                   {{"T", T}, {"TS", T}, {"DQK", arg(p.Dqk)}, {"DV", arg(p.Dv)}, {"CHUNK", arg(c.chunk)},
                    {"BK", arg(c.ds_siz_b_k)}, {"BV", arg(c.ds_siz_b_v)}, {"SUB", arg(c.ds_sub)},
                    {"WM", arg(c.ds_warps_m)}, {"WN", arg(c.ds_warps_n)}, {"EXP", arg(exp)},
                    {"SPLIT", arg(c.ds_seg > 1)}},
                   32 * c.ds_warps_m * c.ds_warps_n, bwd_dstates_smem(c, p)),
        bwd_dstates_min_blocks(c, p, dev)));
  gradient_tiles(specs);
  gate_gradients(specs);
  if (c.st_seg > 1) specs.push_back(fwd_state_fix_kernel(p, false));  // the recompute's split walk
  if (c.ds_seg > 1) specs.push_back(bwd_dstate_fix_kernel(p));  // the split dC walk
  return specs;
}

rt::KernelSpec bwd_dstate_fix_kernel(const MlstmProblem& p) {
  return state_fix_kernel("mlstm_bwd_dstate_fix", "tfla::MlstmBwdParams", p);
}

}  // namespace tfla::ops

namespace tfla::ops {

std::string sm90_bwd_serves(const MlstmProblem& p, const DeviceLimits& dev) {
  if (dev.arch != "sm_90a") return "the sm90 engine needs an sm_90a device (this one is " + dev.arch + ")";
  if (p.dtype != DType::BF16 && p.dtype != DType::FP16) return "the sm90 engine takes bf16 or fp16 inputs";
  if (p.Dqk % 128 || p.Dqk > 256) return "the sm90 engine's backward needs Dqk 128 or 256";
  if (p.Dv % 64) return "the sm90 engine's backward needs Dv a multiple of 64";
  if (const int smem = state_walk_sm90_smem(p, 64); smem > dev.smem_optin_bytes)
    return "the sm90 engine's state kernels need " + std::to_string(smem) +
           " bytes of shared memory per block; the device allows " + std::to_string(dev.smem_optin_bytes);
  return {};
}

// Why: the chunk of the sm90 forward's default; the gradient tiles on the engine (128 rows, the
// widest column tiles whose ring fits); the recompute's state kernel as the forward's default
// has it (the walk where it serves); the dC recurrence on the engine too (the measurements at
// the dC walk's block below). Measured on an H200 (2026-11-30, `tfla bench backward --variant
// sig`, paper heads): at S = 8192, in one call, the engine's tiles with the mma.sync dC kernel
// and the state walk 5.96 ms, with both mma.sync kernels 6.19, the mma.sync family 7.27; the
// state walk against the mma.sync state kernel (dC on mma.sync) 7.83 vs 7.76 ms at S = 65536
// (B = 1) and 6.52 vs 6.51 at S = 16384.
// Why a ring of three slots or more: with two (Dqk + Dv > 384, e.g. 256 x 256) one query tile
// loads while the other is read and the kernel waits on L2; with three it wins. H200,
// 2026-12-01, one call, `tfla bench backward --variant sig --seqs 8192 --tokens 65536`, two runs
// each, ms, the default then against tl_dkv=1: NH 16, 128 x 256 (3 slots) 4.109 / 4.169 -> 3.848 /
// 3.844 (mLSTMexp 4.165 / 4.198 -> 3.865 / 3.889; B = 1, S = 65536: 4.270 / 4.258 -> 3.995 /
// 3.996); NH 8, 256 x 256 (2 slots) 2.902 / 2.916 -> 2.956 / 2.957. Where Dv < 256 the default was
// the mma.sync family, against which the engine with the dK/dV kernel ran: NH 16, 128 x 128
// (4 slots) 3.933 / 3.935 -> 3.014 / 3.010; NH 16, 128 x 64 3.213 / 3.234 -> 2.583 / 2.582; NH 8,
// 256 x 128 (3 slots) 2.942 / 2.936 -> 2.182 / 2.191.
bool sm90_dkv_by_default(const BwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev) {
  return check_bwd_dkv_sm90(c, p, dev).empty() && bwd_dkv_sm90_stages(p, dev) >= 3;
}

BwdConfig sm90_bwd_config(const MlstmProblem& p, const DeviceLimits& dev, int chunk) {
  const int ch = chunk > 0 ? chunk : sm90_fwd_config(p, dev).chunk;
  BwdConfig c = chunkwise_bwd_config(p, dev, ch);
  c.engine = Engine::Sm90;
  if (const FwdConfig f = sm90_fwd_config(p, dev, c.chunk); f.st_sm90) {
    c.st_sm90 = 1;
    c.st_siz_b_k = f.st_siz_b_k;
    c.st_siz_b_v = f.st_siz_b_v;
    c.st_seg = f.st_seg;
  }
  // The dC walk on the engine wherever it serves (Dqk 128 or 256), in the forward state walk's
  // columns and sequence split. Its row factors and chunk decays are loaded a sub-block / chunk
  // ahead; before they were (a division waited on each sub-block's loads) it ran 1294 us against
  // the mma.sync walk's 800 at the paper shape (ncu). H200, 2026-12-01, one call, `tfla bench
  // backward --saved --variant sig --reps 10`, two runs, against the mma.sync walk: paper heads
  // S = 8192 3.637 / 3.659 ms against 3.815 / 3.807, the seed's heads (chunk 128) 2.374 / 2.381
  // against 2.556, paper heads B = 1, S = 65536 (ds_seg 4) 3.886 / 3.907 against 4.011; ncu
  // (unlocked clocks) the walk itself 644 us (paper) and 529 us (the seed's heads). Where Dv is
  // not a multiple of 128 and the mma.sync walk splits the sequence (few heads), that walk stays:
  // the engine's split is measured in 128-column CTAs only.
  if (p.Dv % 128 == 0 || c.ds_seg <= 1) {
    BwdConfig s = c;
    s.ds_sm90 = 1;
    s.ds_siz_b_k = static_cast<int>(p.Dqk);
    const StateWalkSm90Split w = state_walk_sm90_split(p, dev, s.chunk);
    s.ds_siz_b_v = w.bv;
    s.ds_seg = w.seg;
    if (check_state_walk_sm90(p, dev, s.chunk, s.ds_siz_b_k, s.ds_siz_b_v, "ds").empty()) c = s;
  }
  BwdConfig t = c;
  t.tl_sm90 = 1;
  t.siz_b_r = BwdTileSm90Shape::kBR;
  t.siz_b_t = BwdTileSm90Shape::kBT;
  auto widest = [&](int64_t d, int mode) {
    for (int bn : {256, 128, 64})
      if (d % bn == 0 && bwd_tile_sm90_stages(p, mode, bn, dev) >= 2) return bn;
    return 64;
  };
  t.siz_b_nqk = widest(p.Dqk, 0);
  t.siz_b_nv = widest(p.Dv, 2);
  if (check_bwd_tiles_sm90(t, p, dev).empty()) {
    c = t;
    c.tl_dkv = sm90_dkv_by_default(c, p, dev);
  }
  return c;
}

// Why Dv >= 256, or the dK/dV kernel (sm90_dkv_by_default, measured against the mma.sync family
// there): dQ's and dK's score tiles contract over Dv, and the engine's tiles win where that
// contraction is long. H200, 2026-11-30, `tfla bench backward --variant sig`, against the
// mma.sync family: paper shape (Dqk 256, Dv 512) 4.61 vs 7.31 ms at S = 8192; the seed's
// headline shape (Dqk 128, Dv 256, NH 16) 4.24 vs 5.37 (the engine's tiles in snake order; the
// mma.sync times from earlier calls of the same day). Narrower heads were not measured.
bool sm90_bwd_preferred(const MlstmProblem& p, const DeviceLimits& dev) {
  if (!sm90_bwd_serves(p, dev).empty()) return false;
  const BwdConfig c = sm90_bwd_config(p, dev);
  return c.tl_sm90 == 1 && (p.Dv >= 256 || c.tl_dkv == 1);
}

int bwd_tile_sm90_stages(const MlstmProblem& p, int mode, int bn, const DeviceLimits& dev) {
  const int dx = static_cast<int>(mode == 2 ? p.Dqk : p.Dv);
  for (int stages = 4; stages >= 2; --stages)
    if (bwd_tile_sm90_smem_bytes(dx, bn, stages) <= dev.smem_optin_bytes) return stages;
  return 0;
}

std::string check_bwd_tiles_sm90(const BwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev) {
  using Shape = BwdTileSm90Shape;
  const std::string k = "tl_sm90=1: ";
  if (c.chunk % Shape::kBR) return k + "chunk must be a multiple of 128";
  if (c.siz_b_r != Shape::kBR) return k + "siz_b_r must be 128";
  if (c.siz_b_t != Shape::kBT) return k + "siz_b_t must be 64";
  if (p.Dqk % 64 || p.Dqk > 512 || p.Dv % 64 || p.Dv > 512)
    return k + "the sm90 tile kernels need Dqk and Dv multiples of 64 up to 512";
  auto bad_bn = [](int bn, int64_t d) { return (bn != 64 && bn != 128 && bn != 256) || d % bn; };
  if (bad_bn(c.siz_b_nqk, p.Dqk)) return k + "siz_b_nqk must be 64, 128 or 256 and divide Dqk";
  if (bad_bn(c.siz_b_nv, p.Dv)) return k + "siz_b_nv must be 64, 128 or 256 and divide Dv";
  static const char* const kNames[3] = {"dQ kernel", "dK kernel", "dV kernel"};
  for (int mode = 0; mode < 3; ++mode) {
    const int bn = mode == 2 ? c.siz_b_nv : c.siz_b_nqk;
    if (bwd_tile_sm90_stages(p, mode, bn, dev) < 2)
      return over_smem(bwd_tile_sm90_smem_bytes(static_cast<int>(mode == 2 ? p.Dqk : p.Dv), bn, 2), kNames[mode],
                       dev);
  }
  return {};
}

// __launch_bounds__(384, 1) as the forward's output kernel: setmaxnreg moves the producer's
// registers to the consumers (40 / 232).
rt::KernelSpec bwd_tile_sm90_kernel(const MlstmProblem& p, const BwdConfig& c, int mode, const DeviceLimits& dev) {
  const int bn = mode == 2 ? c.siz_b_nv : c.siz_b_nqk;
  const int stages = bwd_tile_sm90_stages(p, mode, bn, dev);
  const int dx = static_cast<int>(mode == 2 ? p.Dqk : p.Dv);
  return rt::with_min_blocks(
      rt::render("mlstm_bwd_tile_sm90", "tfla/mlstm_bwd_tile_sm90.cuh", "tfla::mlstm_bwd_tile_sm90",
                 "tfla::MlstmBwdTileSm90Params",
                 {{"T", device_type(p.dtype)}, {"DQK", arg(p.Dqk)}, {"DV", arg(p.Dv)}, {"CHUNK", arg(c.chunk)},
                  {"BN", arg(bn)}, {"STAGES", arg(stages)}, {"EXP", arg(p.variant == Variant::Exp)},
                  {"MODE", arg(mode)}, {"PARALLEL", arg(c.parallel())}},
                 BwdTileSm90Shape::kThreads, bwd_tile_sm90_smem_bytes(dx, bn, stages)),
      1);
}

int bwd_dkv_sm90_stages(const MlstmProblem& p, const DeviceLimits& dev) {
  for (int stages = 4; stages >= 2; --stages)
    if (bwd_dkv_sm90_smem_bytes(static_cast<int>(p.Dqk), static_cast<int>(p.Dv), stages) <= dev.smem_optin_bytes)
      return stages;
  return 0;
}

std::string check_bwd_dkv_sm90(const BwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev) {
  const std::string k = "tl_dkv=1: ";
  if (!c.tl_sm90) return k + "needs the sm90 tile kernels (tl_sm90=1)";
  auto one_n = [](int64_t d) { return d == 64 || d == 128 || d == 256; };
  if (!one_n(p.Dqk) || !one_n(p.Dv)) return k + "the dK/dV kernel needs Dqk and Dv of 64, 128 or 256";
  if (c.chunk % BwdDkvSm90Shape::kBR) return k + "chunk must be a multiple of 64";
  if (bwd_dkv_sm90_stages(p, dev) < 2)
    return over_smem(bwd_dkv_sm90_smem_bytes(static_cast<int>(p.Dqk), static_cast<int>(p.Dv), 2), "dK/dV kernel",
                     dev);
  return {};
}

// __launch_bounds__(384, 1) as the tile kernels; XCOLS: dQ's column tile, the partition of the
// row dots k . dk (xpart) the gate gradients sum.
rt::KernelSpec bwd_dkv_sm90_kernel(const MlstmProblem& p, const BwdConfig& c, const DeviceLimits& dev) {
  const int stages = bwd_dkv_sm90_stages(p, dev);
  return rt::with_min_blocks(
      rt::render("mlstm_bwd_dkv_sm90", "tfla/mlstm_bwd_dkv_sm90.cuh", "tfla::mlstm_bwd_dkv_sm90",
                 "tfla::MlstmBwdDkvSm90Params",
                 {{"T", device_type(p.dtype)}, {"DQK", arg(p.Dqk)}, {"DV", arg(p.Dv)}, {"CHUNK", arg(c.chunk)},
                  {"STAGES", arg(stages)}, {"EXP", arg(p.variant == Variant::Exp)}, {"XCOLS", arg(c.siz_b_nqk)},
                  {"PARALLEL", arg(c.parallel())}},
                 BwdDkvSm90Shape::kThreads,
                 bwd_dkv_sm90_smem_bytes(static_cast<int>(p.Dqk), static_cast<int>(p.Dv), stages)),
      1);
}

std::string sm90_parallel_bwd_serves(const MlstmProblem& p, const DeviceLimits& dev) {
  if (std::string why = sm90_bwd_serves(p, dev); !why.empty()) return why;
  return parallel_sm90_seq_limit(p);
}

// Why up to S = 512: measured faster than every other backward there (no recompute of the chunk
// states, no dC walk, the gradient tiles only), slower than the chunkwise form at 1024. H200,
// 2026-12-02, one call, `tfla bench backward --variant sig --tokens 65536 --reps 20`, ms, the
// mma.sync parallel form / this one / the sm90 chunkwise default / the default before it: paper
// heads S = 64 2.325 / 2.251 / 6.982 / 2.344, 128 2.878 / 1.899 / 4.374 / 2.888, 256 3.994 /
// 2.149 / 3.698 / 3.979, 512 6.218 / 3.006 / 3.563 / 3.589, 1024 10.746 / 5.125 / 3.509 / 3.531;
// the seed's heads (NH 16, 128 x 256) 64 1.880 / 1.497 / 3.810 / 1.886, 128 2.297 / 1.274 / 2.548
// / 2.290, 256 3.160 / 1.419 / 2.427 / 3.160, 512 4.861 / 1.854 / 2.338 / 2.310, 1024 8.290 /
// 2.853 / 2.310 / 2.265.
bool parallel_sm90_bwd_by_default(const MlstmProblem& p, const DeviceLimits& dev) {
  constexpr int64_t kDefaultMaxS = 512;
  if (p.S > kDefaultMaxS || !sm90_parallel_bwd_serves(p, dev).empty()) return false;
  return check_bwd_parallel_sm90_config(parallel_sm90_bwd_config(p, dev), p, dev).empty();
}

BwdConfig parallel_sm90_bwd_config(const MlstmProblem& p, const DeviceLimits& dev) {
  BwdConfig c = sm90_bwd_config(p, dev, parallel_sm90_chunk(p));
  c.form = Form::Parallel;
  c.st_seg = 1;
  c.ds_seg = 1;
  return c;
}

std::string check_bwd_parallel_sm90_config(const BwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev) {
  if (c.engine != Engine::Sm90) return "an mma.sync config given to the sm90 engine";
  if (std::string why = sm90_parallel_bwd_serves(p, dev); !why.empty()) return why;
  if (std::string why = check_parallel_sm90_chunk(p, c.chunk); !why.empty()) return why;
  if (!c.tl_sm90) return "parallel=1 on the sm90 engine: tl_sm90 must be 1 (its gradient tiles are the form)";
  if (std::string r = check_bwd_tiles_sm90(c, p, dev); !r.empty()) return r;
  if (c.tl_dkv)
    if (std::string r = check_bwd_dkv_sm90(c, p, dev); !r.empty()) return r;
  return {};
}

std::string check_bwd_sm90_config(const BwdConfig& c, const MlstmProblem& p, const DeviceLimits& dev) {
  if (c.engine != Engine::Sm90) return "an mma.sync config given to the sm90 engine";
  if (c.parallel()) return "a parallel config given to bwd.chunkwise.sm90 (bwd.parallel.sm90 runs it)";
  if (std::string why = sm90_bwd_serves(p, dev); !why.empty()) return why;
  if (c.chunk < 128 || c.chunk % 128) return "engine=1 (sm90): chunk must be a multiple of 128";
  if (c.st_sm90)
    if (std::string r = check_state_walk_sm90(p, dev, c.chunk, c.st_siz_b_k, c.st_siz_b_v, "st"); !r.empty()) return r;
  if (c.ds_sm90)
    if (std::string r = check_state_walk_sm90(p, dev, c.chunk, c.ds_siz_b_k, c.ds_siz_b_v, "ds"); !r.empty()) return r;
  if (c.tl_sm90)
    if (std::string r = check_bwd_tiles_sm90(c, p, dev); !r.empty()) return r;
  if (c.tl_dkv)
    if (std::string r = check_bwd_dkv_sm90(c, p, dev); !r.empty()) return r;
  // The rest is the mma.sync family's: its rule over the config with the engine's kernels
  // swapped for the mma.sync default's.
  BwdConfig m = c;
  m.engine = Engine::MmaSync;
  m.st_sm90 = m.ds_sm90 = m.tl_sm90 = m.tl_dkv = 0;
  const BwdConfig d = chunkwise_bwd_config(p, dev, c.chunk);
  if (c.st_sm90) {
    m.st_siz_b_k = d.st_siz_b_k; m.st_siz_b_v = d.st_siz_b_v; m.st_sub = d.st_sub;
    m.st_warps_m = d.st_warps_m; m.st_warps_n = d.st_warps_n;
  }
  if (c.ds_sm90) {
    m.ds_siz_b_k = d.ds_siz_b_k; m.ds_siz_b_v = d.ds_siz_b_v; m.ds_sub = d.ds_sub;
    m.ds_warps_m = d.ds_warps_m; m.ds_warps_n = d.ds_warps_n;
  }
  if (c.tl_sm90) {
    m.siz_b_r = d.siz_b_r; m.siz_b_t = d.siz_b_t; m.siz_b_nqk = d.siz_b_nqk; m.siz_b_nv = d.siz_b_nv;
    m.siz_b_kc = d.siz_b_kc; m.warps_m = d.warps_m; m.warps_n = d.warps_n;
  }
  return check_bwd_config(m, p, dev);
}

}  // namespace tfla::ops
