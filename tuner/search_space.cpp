#include "tuner/search_space.hpp"

#include <algorithm>
#include <cmath>

#include "ops/bwd_config.hpp"
#include "ops/fwd_config.hpp"
#include "ops/step_config.hpp"

namespace tfla::tuner {
namespace {

// One axis of a space: the partial configs it can take (a single key, or keys tied together
// such as a warp grid). A point of the space is one choice per axis, merged.
using Axis = std::vector<Config>;

Axis values(const std::string& key, std::initializer_list<int64_t> vs) {
  Axis a;
  for (int64_t v : vs) a.push_back({{key, v}});
  return a;
}
Axis warp_grids(const std::string& prefix) {
  Axis a;
  for (auto [m, n] : {std::pair{2, 4}, {4, 4}, {4, 2}, {2, 2}, {1, 4}})
    a.push_back({{prefix + "warps_m", m}, {prefix + "warps_n", n}});
  return a;
}
// A state-style block (Dqk x Dv per CTA) with the warp grid the defaults derive from it.
Axis state_blocks(const std::string& prefix) {
  Axis a;
  for (auto [k, v] : {std::pair{128, 128}, {64, 128}, {128, 64}, {64, 64}})
    a.push_back({{prefix + "siz_b_k", k}, {prefix + "siz_b_v", v},
                 {prefix + "warps_m", std::min(4, k / 16)}, {prefix + "warps_n", std::min(2, v / 16)}});
  return a;
}

// The forward space. Chunk lengths beyond 512 make the intra-chunk part dominate; tiles below
// 64 rows underfill the tensor cores at these head sizes.
std::vector<Axis> fwd_axes() {
  return {values("chunk", {64, 128, 256, 512}), values("siz_b_q", {64, 128}),
          values("siz_b_kv", {64, 128}),        values("siz_b_v", {64, 128, 256}),
          values("siz_b_kc", {32, 64}),         warp_grids(""),
          state_blocks("st_"),                  values("st_sub", {32, 64})};
}
// The backward space: the forward's state recompute, the dC recurrence and the gradient tiles.
std::vector<Axis> bwd_axes() {
  return {values("chunk", {64, 128, 256, 512}), values("siz_b_r", {32, 64, 128}),
          values("siz_b_t", {32, 64, 128}),     values("siz_b_nqk", {64, 128, 256}),
          values("siz_b_nv", {64, 128, 256}),   values("siz_b_kc", {32, 64}),
          warp_grids(""),                       state_blocks("st_"),
          values("st_sub", {32, 64}),           state_blocks("ds_"),
          values("ds_sub", {32, 64})};
}

// The parallel form's spaces (FwdConfig / BwdConfig parallel = 1, for S up to
// ops::parallel_max_seq()): only the tile kernel's keys, walked over the parallel default (its
// chunkwise keys are unused). Key tiles must divide query tiles (checked by the config rules).
std::vector<Axis> fwd_parallel_axes() {
  return {values("siz_b_q", {64, 128}), values("siz_b_kv", {32, 64}), values("siz_b_v", {64, 128, 256}),
          values("siz_b_kc", {32, 64}), warp_grids("")};
}
std::vector<Axis> bwd_parallel_axes() {
  return {values("siz_b_r", {32, 64, 128}), values("siz_b_t", {32, 64}), values("siz_b_nqk", {64, 128, 256}),
          values("siz_b_nv", {64, 128, 256}), warp_grids("")};
}
Config parallel_default(Family f, const MlstmProblem& p) {
  return f == Family::Fwd ? ops::parallel_fwd_config(p).to_config() : ops::parallel_bwd_config(p).to_config();
}
Config chunkwise_default(Family f, const MlstmProblem& p, int chunk) {
  if (chunk > 0) return default_config(f, p, chunk);
  return f == Family::Fwd ? ops::chunkwise_fwd_config(p).to_config() : ops::chunkwise_bwd_config(p).to_config();
}

int distance(const Config& a, const Config& b) {
  int d = 0;
  for (const auto& [k, v] : a) {
    auto it = b.find(k);
    if (it == b.end() || it->second != v) ++d;
  }
  return d;
}

}  // namespace

// ---- the step family (kernel_templates/tfla/mlstm_step.cuh) --------------------------------
// Two keys of the update kernel: siz_b_v (Dv columns of C per CTA; Dv / siz_b_v CTAs per head)
// and threads (each keeps Dqk * siz_b_v / threads fp32 state values in registers, all loaded
// before use). The kernel is memory-bound, so these decide the CTAs per head and the bytes in
// flight per SM. The space: every slice width the kernel takes (multiples of 16 dividing Dv)
// times the thread counts that leave 16, 32, 64 or 128 state values per thread, and 128, 256
// and 512 threads; the rules of ops::check_step_config prune it.
namespace {

std::vector<Config> step_points(const MlstmProblem& p) {
  std::vector<Config> out;
  for (int64_t bv = 16; bv <= p.Dv; bv += 16) {
    if (p.Dv % bv) continue;
    std::vector<int64_t> threads{128, 256, 512};
    for (int64_t regs : {16, 32, 64, 128})
      if ((p.Dqk * bv) % regs == 0) threads.push_back(p.Dqk * bv / regs);
    std::sort(threads.begin(), threads.end());
    threads.erase(std::unique(threads.begin(), threads.end()), threads.end());
    for (int64_t nt : threads) out.push_back({{"siz_b_v", bv}, {"threads", nt}});
  }
  return out;
}

// Distance in powers of two (slice width and threads): the walk goes outward from the default.
double step_distance(const Config& a, const Config& b) {
  double d = 0;
  for (const char* k : {"siz_b_v", "threads"})
    d += std::fabs(std::log2(static_cast<double>(a.at(k)) / static_cast<double>(b.at(k))));
  return d;
}

Enumerated enumerate_step(const MlstmProblem& p, const SpaceLimits& lim, int budget) {
  Enumerated out;
  const Config def = ops::default_step_config(p).to_config();
  std::vector<std::pair<double, Candidate>> kept, pruned;
  kept.push_back({-1.0, Candidate{Family::Step, def, {}}});  // the baseline: always kept, first
  for (const Config& cfg : step_points(p)) {
    ++out.total;
    if (cfg == def) continue;
    Candidate c{Family::Step, cfg, prune_reason(Family::Step, cfg, p, lim)};
    (c.reason.empty() ? kept : pruned).push_back({step_distance(cfg, def), std::move(c)});
  }
  out.pruned_count = static_cast<int64_t>(pruned.size());
  auto by_distance = [](const auto& x, const auto& y) { return x.first < y.first; };
  std::stable_sort(kept.begin(), kept.end(), by_distance);
  std::stable_sort(pruned.begin(), pruned.end(), by_distance);
  const size_t cap = budget > 0 ? static_cast<size_t>(budget) : kept.size();
  for (size_t i = 0; i < kept.size() && i < cap; ++i) out.kept.push_back(std::move(kept[i].second));
  const size_t pcap = budget > 0 ? static_cast<size_t>(budget) : pruned.size();
  for (size_t i = 0; i < pruned.size() && i < pcap; ++i) out.pruned.push_back(std::move(pruned[i].second));
  return out;
}

}  // namespace

const char* to_string(Family f) noexcept {
  return f == Family::Fwd ? "fwd" : f == Family::Bwd ? "bwd" : "step";
}

Config default_config(Family f, const MlstmProblem& p, int chunk) {
  if (f == Family::Step) return ops::default_step_config(p).to_config();
  return f == Family::Fwd ? ops::default_fwd_config(p, chunk).to_config()
                          : ops::default_bwd_config(p, chunk).to_config();
}

std::string prune_reason(Family f, const Config& cfg, const MlstmProblem& p, const SpaceLimits& lim) {
  auto over = [&](int bytes, const char* kernel) -> std::string {
    if (bytes <= lim.smem_optin_bytes) return {};
    return std::string(kernel) + " needs " + std::to_string(bytes) + " B of shared memory, limit " +
           std::to_string(lim.smem_optin_bytes);
  };
  auto regs = [&](int64_t acc, int64_t threads, const char* kernel) -> std::string {
    if (threads <= 0 || acc / threads <= lim.max_acc_per_thread) return {};
    return std::string(kernel) + " holds ~" + std::to_string(acc / threads) +
           " fp32 accumulators per thread, limit " + std::to_string(lim.max_acc_per_thread);
  };
  try {
    if (f == Family::Step) {
      ops::StepConfig c;
      c.apply(cfg);
      if (std::string r = ops::check_step_config(c, p); !r.empty()) return r;
      return regs(int64_t{p.Dqk} * c.siz_b_v, c.threads, "step kernel");
    }
    if (f == Family::Fwd) {
      ops::FwdConfig c;
      c.apply(cfg);
      if (std::string r = ops::check_fwd_config(c, p); !r.empty()) return r;
      if (std::string r = over(ops::fwd_output_smem(c, p), "output kernel"); !r.empty()) return r;
      const int64_t nt = 32 * c.warps_m * c.warps_n, snt = 32 * c.st_warps_m * c.st_warps_n;
      if (std::string r = regs(int64_t{c.siz_b_q} * (c.siz_b_v + c.siz_b_kv), nt, "output kernel"); !r.empty())
        return r;
      if (c.parallel) return {};  // the output kernel is the whole parallel forward
      if (std::string r = over(ops::fwd_states_smem(c, p), "state kernel"); !r.empty()) return r;
      return regs(int64_t{c.st_siz_b_k} * c.st_siz_b_v, snt, "state kernel");
    }
    ops::BwdConfig c;
    c.apply(cfg);
    if (std::string r = ops::check_bwd_config(c, p); !r.empty()) return r;
    for (int mode = 0; mode < 3; ++mode)
      if (std::string r = over(ops::bwd_tile_smem(c, p, mode), mode == 0 ? "dQ kernel" : mode == 1 ? "dK kernel" : "dV kernel");
          !r.empty())
        return r;
    const int64_t nt = 32 * c.warps_m * c.warps_n;
    const int64_t bn = std::max(c.siz_b_nqk, c.siz_b_nv);
    if (std::string r = regs(int64_t{c.siz_b_r} * (bn + c.siz_b_t), nt, "gradient tile kernels"); !r.empty())
      return r;
    if (c.parallel) return {};  // no state or dC kernel in the parallel backward
    if (std::string r = over(ops::bwd_dstates_smem(c, p), "dC kernel"); !r.empty()) return r;
    if (std::string r = over(ops::fwd_states_smem(c.recompute_config(), p), "state kernel"); !r.empty()) return r;
    if (std::string r = regs(int64_t{c.st_siz_b_k} * c.st_siz_b_v, 32 * c.st_warps_m * c.st_warps_n, "state kernel");
        !r.empty())
      return r;
    return regs(int64_t{c.ds_siz_b_k} * c.ds_siz_b_v, 32 * c.ds_warps_m * c.ds_warps_n, "dC kernel");
  } catch (const Error& e) {
    return e.what();
  }
}

Enumerated enumerate(Family f, const MlstmProblem& p, const SpaceLimits& lim, int budget, int chunk) {
  if (f == Family::Step) return enumerate_step(p, lim, budget);
  Enumerated out;
  const Config def = default_config(f, p, chunk);
  const bool parallel_ok = p.S <= ops::parallel_max_seq();
  // The heads of the list: the default, then the defaults of the other chunk lengths (so that a
  // fwbw run can compare chunk lengths at equal budgets) and of the other form (parallel or
  // chunkwise), then the walk by distance.
  std::vector<Config> heads{def};
  auto add_head = [&](const Config& c) {
    if (std::find(heads.begin(), heads.end(), c) == heads.end()) heads.push_back(c);
  };
  if (chunk <= 0)
    for (int64_t L : {64, 128, 256, 512}) add_head(default_config(f, p, static_cast<int>(L)));
  if (parallel_ok) add_head(parallel_default(f, p));
  add_head(chunkwise_default(f, p, chunk));
  struct Ranked {
    int dist;
    int64_t order;
    Candidate c;
  };
  std::vector<Ranked> kept, pruned;
  auto consider = [&](const Config& cfg, int64_t order, int dist) {
    if (chunk > 0 && cfg.at("chunk") != chunk) return;
    // The default is the baseline and the reference of validation: always kept.
    Candidate c{f, cfg, order == 0 && dist < 0 ? std::string() : prune_reason(f, cfg, p, lim)};
    (c.reason.empty() ? kept : pruned).push_back({dist, order, std::move(c)});
  };
  for (size_t i = 0; i < heads.size(); ++i) consider(heads[i], static_cast<int64_t>(i), -1);
  // The odometer over the axes of one form: lazily, one point at a time; keys outside the space
  // keep the base's value.
  int64_t order = 0;
  auto walk = [&](const std::vector<Axis>& axes, const Config& base) {
    std::vector<size_t> idx(axes.size(), 0);
    for (;; ++order) {
      Config cfg = base;
      for (size_t a = 0; a < axes.size(); ++a)
        for (const auto& [k, v] : axes[a][idx[a]]) cfg[k] = v;
      ++out.total;
      bool head = false;
      for (const Config& h : heads) head = head || h == cfg;
      if (!head) consider(cfg, order, distance(cfg, def));
      size_t a = 0;
      while (a < axes.size() && ++idx[a] == axes[a].size()) idx[a++] = 0;
      if (a == axes.size()) break;
    }
    ++order;
  };
  walk(f == Family::Fwd ? fwd_axes() : bwd_axes(), chunkwise_default(f, p, chunk));
  if (parallel_ok) walk(f == Family::Fwd ? fwd_parallel_axes() : bwd_parallel_axes(), parallel_default(f, p));
  out.pruned_count = static_cast<int64_t>(pruned.size());
  auto by_rank = [](const Ranked& x, const Ranked& y) {
    return x.dist != y.dist ? x.dist < y.dist : x.order < y.order;
  };
  std::stable_sort(kept.begin(), kept.end(), by_rank);
  std::stable_sort(pruned.begin(), pruned.end(), by_rank);
  const size_t cap = budget > 0 ? static_cast<size_t>(budget) : kept.size();
  for (size_t i = 0; i < kept.size() && i < cap; ++i) out.kept.push_back(std::move(kept[i].c));
  const size_t pcap = budget > 0 ? static_cast<size_t>(budget) : pruned.size();
  for (size_t i = 0; i < pruned.size() && i < pcap; ++i) out.pruned.push_back(std::move(pruned[i].c));
  return out;
}

}  // namespace tfla::tuner
