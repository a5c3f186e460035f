// The tuner's view of the kernel families (src/ops/family.hpp): per op, the candidates are the
// defaults of every family that serves the problem (and of each chunk length), then each
// family's axes walked over its default, nearest first. Each point is judged by the one
// acceptance rule (ops::acceptance) before anything is compiled; the pruned ones keep its reason.
// The op's default (what dispatch runs untuned) is always the first candidate: the baseline.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ops/family.hpp"
#include "tfla/tfla.hpp"

namespace tfla::tuner {

// What the tuner tunes: one op (its families compete).
using Family = ops::Op;
using ops::to_string;
// The device limits candidates are pruned against (smem_optin_bytes, max_acc_per_thread, ...).
using SpaceLimits = ops::DeviceLimits;

// One point of a space. reason is empty for a kept candidate, else why it was pruned.
struct Candidate {
  Family family = Family::Forward;
  Config config;       // a full config of one of the op's families (with its form selector)
  std::string reason;  // "" = kept; else the violated rule (recorded as over_limits)
};

struct Enumerated {
  std::vector<Candidate> kept;    // default first, then the defaults of the other chunk
                                  // lengths and families, then by distance from the default; capped
  std::vector<Candidate> pruned;  // the nearest pruned points (at most `budget`), with reasons
  int64_t total = 0;              // size of the cartesian products walked
  int64_t pruned_count = 0;       // how many of them were pruned
};

// Why cfg cannot run p on a device with `lim` ("" when it can): ops::acceptance.
std::string prune_reason(Family f, const Config& cfg, const MlstmProblem& p, const SpaceLimits& lim);

// Walks the op's spaces for p. budget > 0 caps kept (0 = no cap); chunk > 0 keeps only that
// chunk length (the chunkwise families). Never throws (beyond bad_alloc).
Enumerated enumerate(Family f, const MlstmProblem& p, const SpaceLimits& lim, int budget, int chunk = 0);

// The op's default for p (what dispatch runs untuned; chunk > 0: the chunkwise default of that
// chunk), as a full Config.
Config default_config(Family f, const MlstmProblem& p, int chunk = 0, const SpaceLimits& lim = SpaceLimits{});

}  // namespace tfla::tuner
