// Dispatch from the tuned-config cache: the configuration an op uses when the caller pins none.
// Looked up once per (op, problem, shape) per process: exact shape, then the same bucket, then
// the nearest tuned neighbour whose config is valid for this shape (Cache::lookup); none found
// means the analytic default. The hot path sees only an in-process memo (no SQLite).
#pragma once
#include "tfla/tfla.hpp"

namespace tfla::ops {

// op: "fwd", "bwd" or "step". Returns the tuned config's keys, or an empty config for the heuristic
// default. The reference stays valid for the process (memo entries are never erased), so a hot
// call copies nothing. Never throws for cache problems (logged once); TFLA_TUNED=0 turns the
// lookup off.
const Config& tuned_config(const MlstmProblem& p, const char* op);
// How many tuned-config cache queries this process has made (tuned_config's misses of its memo
// that reached the cache; tests count what a warm call does).
uint64_t tuned_lookup_count() noexcept;

}  // namespace tfla::ops
