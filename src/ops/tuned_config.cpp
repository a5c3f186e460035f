#include "ops/tuned_config.hpp"

#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "ops/family.hpp"
#include "store/cubin_store.hpp"
#include "runtime/device.hpp"
#include "runtime/driver.hpp"
#include "store/env_key.hpp"
#include "runtime/log.hpp"
#include "tfla_cache/cache.hpp"
#include "tfla_util/env_flag.hpp"

namespace tfla::ops {
namespace {

bool lookups_enabled() {
  static const bool on = [] {
    try {
      return util::env_flag("TFLA_TUNED", true);
    } catch (const std::invalid_argument& e) {
      throw Error(ErrorCode::InvalidArgument, e.what());
    }
  }();
  return on;
}

// TFLA_RECORD_SHAPES=1: shapes without an exact tuned entry are recorded in the cache.
bool recording_enabled() {
  static const bool on = [] {
    try {
      return util::env_flag("TFLA_RECORD_SHAPES", false);
    } catch (const std::invalid_argument& e) {
      throw Error(ErrorCode::InvalidArgument, e.what());
    }
  }();
  return on;
}

std::atomic<uint64_t> g_lookups{0};

Config lookup(const MlstmProblem& p, const char* op, int ordinal) {
  cache::Cache* db = store::CubinStore::process().cache();
  if (!db) return {};
  g_lookups.fetch_add(1);
  const DeviceInfo& dev = rt::device_info(ordinal);
  cache::ProblemKey key;
  key.op = op;
  key.variant = to_string(p.variant);
  key.normalize = p.normalize;
  key.dtype = to_string(p.dtype);
  key.dqk = static_cast<int>(p.Dqk);
  key.dv = static_cast<int>(p.Dv);
  key.layout = "bhsd";  // the tuner times contiguous (B, NH, S, D); strides do not change tiles
  key.batch_heads = p.B * p.NH;
  key.seq_len = p.S;
  const std::optional<Op> kind = op_from_string(op);
  if (!kind) return {};
  const DeviceLimits limits = DeviceLimits::of(dev);
  auto valid = [&](const cache::Config& c) {
    return acceptance(*kind, p, limits, Config(c.values.begin(), c.values.end())).empty();
  };
  const cache::EnvKey env = store::current_env_key(dev);
  const cache::LookupResult r = db->lookup(env, key, valid);
  log_debug("tuned config for {} {}: {} ({})", op, key.to_string(), cache::to_string(r.kind), r.why);
  if (r.kind != cache::LookupKind::Exact && recording_enabled() && !db->read_only()) {
    // Once per shape per process (the caller memoizes): `tfla tune --from-recorded` tunes it.
    try {
      db->record_shape(env, key);
    } catch (const std::exception& e) {
      log_debug("could not record shape {}: {}", key.to_string(), e.what());
    }
  }
  if (!r.entry) return {};
  return Config(r.entry->winner.values.begin(), r.entry->winner.values.end());
}

}  // namespace

uint64_t tuned_lookup_count() noexcept { return g_lookups.load(); }

const Config& tuned_config(const MlstmProblem& p, const char* op) {
  static const Config kNone;
  // Without a usable device there is nothing to look up; the op's own checks then report bad
  // arguments (or the missing driver) in their usual order.
  if (!lookups_enabled() || !rt::driver_available()) return kNone;
  int ordinal = 0;
  try {
    ordinal = rt::ensure_context();
  } catch (const Error&) {
    return kNone;
  }
  using Key = std::array<int64_t, 11>;
  static std::mutex mu;
  static std::map<Key, Config> memo;
  const Key key{op[0], static_cast<int64_t>(p.dtype), static_cast<int64_t>(p.gate_dtype),
                static_cast<int64_t>(p.variant), p.normalize, p.Dqk, p.Dv, p.B * p.NH, p.S,
                ordinal, 0};
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = memo.find(key);
    if (it != memo.end()) return it->second;
  }
  Config c;
  try {
    c = lookup(p, op, ordinal);
  } catch (const std::exception& e) {
    static std::once_flag once;
    std::call_once(once, [&] { log_warn("tuned-config lookup failed, using defaults: {}", e.what()); });
  }
  std::lock_guard<std::mutex> lock(mu);
  return memo.emplace(key, std::move(c)).first->second;
}

}  // namespace tfla::ops
