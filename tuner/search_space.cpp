#include "tuner/search_space.hpp"

#include <algorithm>
#include <cmath>
#include <set>

namespace tfla::tuner {
namespace {

// Distance between configs: keys that differ, or for one-axis spaces (the step) the distance in
// powers of two, so the walk goes outward from the default.
double distance(const Config& a, const Config& b) {
  double d = 0;
  for (const auto& [k, v] : a) {
    auto it = b.find(k);
    if (it == b.end()) d += 1;
    else if (it->second != v) {
      if (v > 0 && it->second > 0 && a.size() <= 2)
        d += std::fabs(std::log2(static_cast<double>(v) / static_cast<double>(it->second)));
      else
        d += 1;
    }
  }
  return d;
}

const ops::Family* chunkwise_family(Family op) {
  for (const ops::Family* f : ops::families_of(op))
    if (f->form() != ops::Form::Parallel) return f;
  return nullptr;
}

}  // namespace

Config default_config(Family f, const MlstmProblem& p, int chunk, const SpaceLimits& lim) {
  if (chunk > 0) {
    const ops::Family* fam = chunkwise_family(f);
    return fam->default_config(p, lim, chunk);
  }
  return ops::resolve(f, p, lim, {}).config;
}

std::string prune_reason(Family f, const Config& cfg, const MlstmProblem& p, const SpaceLimits& lim) {
  return ops::acceptance(f, p, lim, cfg);
}

Enumerated enumerate(Family f, const MlstmProblem& p, const SpaceLimits& lim, int budget, int chunk) {
  Enumerated out;
  const Config def = default_config(f, p, chunk, lim);
  // The heads of the list: the default, then the defaults of the other chunk lengths (so that a
  // fwbw run can compare chunk lengths at equal budgets) and of the other families.
  std::vector<Config> heads{def};
  auto add_head = [&](const Config& c) {
    if (std::find(heads.begin(), heads.end(), c) == heads.end()) heads.push_back(c);
  };
  const ops::Family* chunked = chunkwise_family(f);
  if (chunk <= 0 && chunked && chunked->keys().size() > 2)
    for (int L : {64, 128, 256, 512}) add_head(chunked->default_config(p, lim, L));
  std::vector<const ops::Family*> walked;
  for (const ops::Family* fam : ops::families_of(f)) {
    if (!fam->serves(p, lim).empty()) continue;
    if (chunk > 0 && fam->form() == ops::Form::Parallel) continue;
    add_head(fam->default_config(p, lim, chunk));
    walked.push_back(fam);
  }
  struct Ranked {
    double dist;
    int64_t order;
    Candidate c;
  };
  std::vector<Ranked> kept, pruned;
  auto consider = [&](const Config& cfg, int64_t order, double dist) {
    auto it = cfg.find("chunk");
    if (chunk > 0 && it != cfg.end() && it->second != chunk) return;
    // The default is the baseline and the reference of validation: always kept.
    Candidate c{f, cfg, order == 0 && dist < 0 ? std::string() : prune_reason(f, cfg, p, lim)};
    (c.reason.empty() ? kept : pruned).push_back({dist, order, std::move(c)});
  };
  for (size_t i = 0; i < heads.size(); ++i) consider(heads[i], static_cast<int64_t>(i), -1);
  // The odometer over one family's axes: lazily, one point at a time; keys outside the axes
  // keep the base's value. Points that two choices of axes lead to alike are considered once.
  int64_t order = 0;
  std::set<Config> seen;
  auto walk = [&](const std::vector<ops::Axis>& axes, const Config& base) {
    std::vector<size_t> idx(axes.size(), 0);
    for (const auto& a : axes)
      if (a.empty()) return;
    for (;; ++order) {
      Config cfg = base;
      for (size_t a = 0; a < axes.size(); ++a)
        for (const auto& [k, v] : axes[a][idx[a]]) cfg[k] = v;
      ++out.total;
      if (std::find(heads.begin(), heads.end(), cfg) == heads.end() && seen.insert(cfg).second)
        consider(cfg, order, distance(cfg, def));
      size_t a = 0;
      while (a < axes.size() && ++idx[a] == axes[a].size()) idx[a++] = 0;
      if (a == axes.size()) break;
    }
    ++order;
  };
  for (const ops::Family* fam : walked) walk(fam->axes(p), fam->default_config(p, lim, chunk));
  out.pruned_count = static_cast<int64_t>(pruned.size());
  auto by_rank = [](const Ranked& x, const Ranked& y) { return x.dist != y.dist ? x.dist < y.dist : x.order < y.order; };
  std::stable_sort(kept.begin(), kept.end(), by_rank);
  std::stable_sort(pruned.begin(), pruned.end(), by_rank);
  const size_t cap = budget > 0 ? static_cast<size_t>(budget) : kept.size();
  for (size_t i = 0; i < kept.size() && i < cap; ++i) out.kept.push_back(std::move(kept[i].c));
  const size_t pcap = budget > 0 ? static_cast<size_t>(budget) : pruned.size();
  for (size_t i = 0; i < pruned.size() && i < pcap; ++i) out.pruned.push_back(std::move(pruned[i].c));
  return out;
}

}  // namespace tfla::tuner
