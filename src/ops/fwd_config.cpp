#include "ops/fwd_config.hpp"

#include <algorithm>

#include "tfla/mlstm_params.cuh"

namespace tfla::ops {

Config FwdConfig::to_config() const {
  return {{"chunk", chunk},           {"siz_b_q", siz_b_q},       {"siz_b_kv", siz_b_kv},
          {"siz_b_v", siz_b_v},       {"siz_b_kc", siz_b_kc},     {"warps_m", warps_m},
          {"warps_n", warps_n},       {"st_siz_b_k", st_siz_b_k}, {"st_siz_b_v", st_siz_b_v},
          {"st_sub", st_sub},         {"st_warps_m", st_warps_m}, {"st_warps_n", st_warps_n}};
}

void FwdConfig::apply(const Config& c) {
  for (const auto& [key, value] : c) {
    const int v = static_cast<int>(value);
    if (key == "chunk") chunk = v;
    else if (key == "siz_b_q") siz_b_q = v;
    else if (key == "siz_b_kv") siz_b_kv = v;
    else if (key == "siz_b_v") siz_b_v = v;
    else if (key == "siz_b_kc") siz_b_kc = v;
    else if (key == "warps_m") warps_m = v;
    else if (key == "warps_n") warps_n = v;
    else if (key == "st_siz_b_k") st_siz_b_k = v;
    else if (key == "st_siz_b_v") st_siz_b_v = v;
    else if (key == "st_sub") st_sub = v;
    else if (key == "st_warps_m") st_warps_m = v;
    else if (key == "st_warps_n") st_warps_n = v;
    else
      throw Error(ErrorCode::InvalidArgument, "unknown forward config key '" + key + "'",
                  "known keys: " + to_string(FwdConfig{}.to_config()));
  }
}

namespace {
constexpr int kSmemBudgetBytes = 227 * 1024;  // Hopper's per-block opt-in limit
constexpr int kTargetCtas = 2 * 132;            // two CTAs per SM of an H100/H200
int largest_divisor(int d, std::initializer_list<int> options) {
  for (int o : options)
    if (d % o == 0) return o;
  return 16;
}
}  // namespace

// Why this default (measured on H200 at B*S = 65536, NH = 8, Dqk = 256, Dv = 512, bf16):
// chunk 256 halves the chunk-state traffic (Dqk x Dv per chunk, written by the state kernel and
// read by the output kernel) against chunk 128 while the tiled intra-chunk part stays cheap;
// Dv tiles of 256 halve how often Q K^T is recomputed per Dv tile; warps 2 x 4 give each warp a
// 32 x 64 accumulator block (fewer fragment loads per mma than 16-row blocks). The state kernel's
// 128 x 128 C block in 8 warps amortizes each streamed K/V sub-block over 128 columns.
FwdConfig default_fwd_config(const MlstmProblem& p, int chunk) {
  FwdConfig c;
  const int dqk = static_cast<int>(p.Dqk), dv = static_cast<int>(p.Dv);
  int auto_chunk = 64;
  while (auto_chunk < 256 && auto_chunk < p.S) auto_chunk *= 2;
  c.chunk = chunk > 0 ? chunk : auto_chunk;
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
    if (fwd_output_smem(big, p) <= kSmemBudgetBytes) c = big;
  }
  c.st_siz_b_k = largest_divisor(dqk, {128, 64, 32, 16});
  c.st_siz_b_v = largest_divisor(dv, {128, 64, 32, 16});
  c.st_warps_m = std::min(4, c.st_siz_b_k / 16);
  c.st_warps_n = std::min(2, c.st_siz_b_v / 16);
  // The state kernel walks the chunks in order, so its parallelism is B*NH times its C blocks:
  // with few heads (long sequences at constant tokens), shrink the blocks to fill the SMs.
  auto state_ctas = [&] { return p.B * p.NH * (dqk / c.st_siz_b_k) * (dv / c.st_siz_b_v); };
  while (state_ctas() < kTargetCtas && c.st_siz_b_k > 64) c.st_siz_b_k /= 2;
  while (state_ctas() < kTargetCtas && c.st_siz_b_v > 64) c.st_siz_b_v /= 2;
  c.st_warps_m = std::min(4, c.st_siz_b_k / 16);
  c.st_warps_n = std::min(2, c.st_siz_b_v / 16);
  c.st_sub = std::min({64, c.chunk, c.st_warps_m * c.st_warps_n * 32});
  // Large fp32 heads: shrink the query/key tiles until the output kernel fits in shared memory.
  while (fwd_output_smem(c, p) > kSmemBudgetBytes && c.siz_b_kv > 16) {
    c.siz_b_kv /= 2;
    c.siz_b_q = c.siz_b_kv;
    c.warps_m = c.siz_b_q / 16;
    c.warps_n = (c.siz_b_v % 32 == 0 && c.siz_b_kv % 32 == 0) ? 2 : 1;
    if (c.siz_b_v > 128 && c.siz_b_v % 128 == 0) c.siz_b_v = 128;
  }
  while (fwd_states_smem(c, p) > kSmemBudgetBytes && c.st_sub > 16) c.st_sub /= 2;
  return c;
}

FwdConfig resolve_fwd_config(const MlstmProblem& p, const Config& pinned) {
  auto it = pinned.find("chunk");
  FwdConfig c = default_fwd_config(p, it == pinned.end() ? 0 : static_cast<int>(it->second));
  c.apply(pinned);
  return c;
}

int fwd_states_smem(const FwdConfig& c, const MlstmProblem& p) {
  return fwd_states_smem_bytes(static_cast<int>(dtype_bytes(p.dtype)), c.st_sub, c.st_siz_b_k,
                               c.st_siz_b_v, c.st_warps_m * c.st_warps_n);
}
int fwd_output_smem(const FwdConfig& c, const MlstmProblem& p) {
  return fwd_output_smem_bytes(static_cast<int>(dtype_bytes(p.dtype)), static_cast<int>(p.Dqk),
                               c.siz_b_q, c.siz_b_kv, c.siz_b_v, c.siz_b_kc, c.warps_n);
}

std::string check_fwd_config(const FwdConfig& c, const MlstmProblem& p) {
  auto bad = [](const std::string& s) { return s; };
  const int dqk = static_cast<int>(p.Dqk), dv = static_cast<int>(p.Dv);
  if (c.chunk < 16 || c.chunk % 16) return bad("chunk must be a positive multiple of 16");
  if (c.siz_b_q < 16 || c.chunk % c.siz_b_q) return bad("siz_b_q must divide chunk");
  if (c.siz_b_kv < 16 || c.chunk % c.siz_b_kv) return bad("siz_b_kv must divide chunk");
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

}  // namespace tfla::ops
