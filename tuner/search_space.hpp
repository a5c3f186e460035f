// The tuning spaces of the two kernel families (chunkwise forward, chunkwise backward), declared
// here in one place each: a list of values per parameter. Candidates are the cartesian product,
// walked lazily and pruned before anything is compiled: divisibility and thread rules
// (check_fwd_config / check_bwd_config), shared memory against the device's opt-in limit and a
// register estimate (fp32 accumulators per thread). The defaults themselves are the analytic
// heuristics in src/ops/{fwd,bwd}_config.cpp (their comments say why); the tuner's baseline is
// that default, always the first candidate. The step family (the recurrent step kernel,
// ops/step_config) has its own small space, declared in search_space.cpp beside the others.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tfla/tfla.hpp"

namespace tfla::tuner {

enum class Family { Fwd, Bwd, Step };
const char* to_string(Family f) noexcept;  // "fwd", "bwd", "step"

// One point of a space. reason is empty for a kept candidate, else why it was pruned.
struct Candidate {
  Family family = Family::Fwd;
  Config config;       // every key of FwdConfig / BwdConfig
  std::string reason;  // "" = kept; else the violated rule (recorded as over_limits)
};

struct SpaceLimits {
  int64_t smem_optin_bytes = 227 * 1024;  // the device's per-block opt-in limit, bytes
  int max_acc_per_thread = 160;           // fp32 accumulators per thread (register estimate)
};

struct Enumerated {
  std::vector<Candidate> kept;    // default first, then the defaults of the other chunk
                                  // lengths, then by distance from the default; capped
  std::vector<Candidate> pruned;  // the nearest pruned points (at most `budget`), with reasons
  int64_t total = 0;              // size of the cartesian product walked
  int64_t pruned_count = 0;       // how many of them were pruned
};

// Why cfg cannot run on a device with `lim` for p ("" when it can): the family's check
// function, then shared memory, then the register estimate.
std::string prune_reason(Family f, const Config& cfg, const MlstmProblem& p, const SpaceLimits& lim);

// Walks the family's space for p. budget > 0 caps kept (0 = no cap); chunk > 0 keeps only that
// chunk length. Never throws (beyond bad_alloc).
Enumerated enumerate(Family f, const MlstmProblem& p, const SpaceLimits& lim, int budget,
                     int chunk = 0);

// The heuristic default of the family for p (chunk > 0 fixes the chunk), as a full Config.
Config default_config(Family f, const MlstmProblem& p, int chunk = 0);

}  // namespace tfla::tuner
