// The registry of kernel families and the resolution of a request to one of them. The list in
// families() is the one place that names every family; everything else iterates it.
#include "ops/family.hpp"

#include <map>
#include <mutex>

#include "ops/families/families.hpp"
#include "runtime/device.hpp"
#include "runtime/driver.hpp"

namespace tfla::ops {

const char* to_string(Op op) noexcept {
  switch (op) {
    case Op::Forward: return "fwd";
    case Op::Backward: return "bwd";
    case Op::Step: return "step";
  }
  return "?";
}
const char* to_string(Form f) noexcept {
  switch (f) {
    case Form::Chunkwise: return "chunkwise";
    case Form::Parallel: return "parallel";
    case Form::Recurrent: return "recurrent";
  }
  return "?";
}
const char* to_string(Engine e) noexcept { return e == Engine::MmaSync ? "mma" : "sm90"; }

std::optional<Op> op_from_string(std::string_view name) noexcept {
  for (Op op : {Op::Forward, Op::Backward, Op::Step})
    if (name == to_string(op)) return op;
  return std::nullopt;
}

DeviceLimits DeviceLimits::of(const DeviceInfo& d) {
  DeviceLimits l;
  l.arch = d.arch;
  l.cc_major = d.cc_major;
  l.cc_minor = d.cc_minor;
  if (d.sm_count > 0) l.sm_count = d.sm_count;
  if (d.smem_optin_bytes > 0) l.smem_optin_bytes = d.smem_optin_bytes;
  if (d.smem_per_sm_bytes > 0) l.smem_per_sm_bytes = d.smem_per_sm_bytes;
  return l;
}

const DeviceLimits& DeviceLimits::reference() {
  static const DeviceLimits l;
  return l;
}

const DeviceLimits& current_limits() {
  if (!rt::driver_available()) return DeviceLimits::reference();
  int ordinal = 0;
  try {
    ordinal = rt::ensure_context();
  } catch (const Error&) {
    return DeviceLimits::reference();
  }
  static std::mutex mu;
  static std::map<int, DeviceLimits> memo;  // never erased: references stay valid
  std::lock_guard<std::mutex> lock(mu);
  auto it = memo.find(ordinal);
  if (it != memo.end()) return it->second;
  try {
    return memo.emplace(ordinal, DeviceLimits::of(rt::device_info(ordinal))).first->second;
  } catch (const Error&) {
    return DeviceLimits::reference();
  }
}

std::string over_smem(int64_t bytes, const char* kernel, const DeviceLimits& dev) {
  if (bytes <= dev.smem_optin_bytes) return {};
  return std::string(kernel) + " needs " + std::to_string(bytes) + " B of shared memory, the device allows " +
         std::to_string(dev.smem_optin_bytes);
}

std::string over_registers(int64_t accumulators, int64_t threads, const char* kernel, const DeviceLimits& dev) {
  if (threads <= 0 || accumulators / threads <= dev.max_acc_per_thread) return {};
  return std::string(kernel) + " holds ~" + std::to_string(accumulators / threads) +
         " fp32 accumulators per thread, limit " + std::to_string(dev.max_acc_per_thread);
}

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
void take_mma_walk_tiles(Config& full, const Config& mma, const Config& pinned, const std::string& walk) {
  if (full.at(walk + "_sm90") != 0) return;
  for (const char* k : {"_siz_b_k", "_siz_b_v", "_sub", "_warps_m", "_warps_n"})
    if (const std::string key = walk + k; !pinned.count(key)) full[key] = mma.at(key);
}
Axis state_blocks(const std::string& prefix) {
  Axis a;
  for (auto [k, v] : {std::pair{128, 128}, {64, 128}, {128, 64}, {64, 64}})
    a.push_back({{prefix + "siz_b_k", k}, {prefix + "siz_b_v", v},
                 {prefix + "warps_m", std::min(4, k / 16)}, {prefix + "warps_n", std::min(2, v / 16)}});
  return a;
}

Config Family::complete(const MlstmProblem& p, const DeviceLimits& dev, const Config& pinned) const {
  auto chunk = pinned.find("chunk");
  Config full = default_config(p, dev, chunk != pinned.end() ? static_cast<int>(chunk->second) : 0);
  for (const auto& [key, value] : pinned) {
    if (!full.count(key)) {
      std::string known;
      for (const KeyDef& k : keys()) known += (known.empty() ? "" : ", ") + std::string(k.name);
      const char* what = op() == Op::Forward ? "forward" : op() == Op::Backward ? "backward" : "step";
      throw Error(ErrorCode::InvalidArgument, std::string("unknown ") + what + " config key '" + key + "'",
                  "known keys: " + known);
    }
    full[key] = value;
  }
  return full;
}

const std::vector<const Family*>& families() {
  static const std::vector<const Family*> all{
      // forward: the parallel form where preferred (the sm90 engine's first), then the device's
      // chunkwise engine
      &fwd_parallel_sm90_family(), &fwd_parallel_family(), &fwd_chunkwise_sm90_family(), &fwd_chunkwise_family(),
      // backward: likewise
      &bwd_parallel_sm90_family(), &bwd_parallel_family(), &bwd_chunkwise_sm90_family(), &bwd_chunkwise_family(),
      &step_family(),
  };
  return all;
}

std::vector<const Family*> families_of(Op op) {
  std::vector<const Family*> out;
  for (const Family* f : families())
    if (f->op() == op) out.push_back(f);
  return out;
}

const Family* find_family(Op op, Form form, Engine engine) {
  for (const Family* f : families())
    if (f->op() == op && f->form() == form && f->engine() == engine) return f;
  return nullptr;
}

namespace {
// A selector's value (0 or 1), or -1 when absent.
int selector(const Config& c, const char* key, Op op) {
  auto it = c.find(key);
  if (it == c.end()) return -1;
  if (op == Op::Step)
    throw Error(ErrorCode::InvalidArgument, std::string("unknown step config key '") + key + "'",
                "the step has one form and one engine");
  if (it->second != 0 && it->second != 1)
    throw Error(ErrorCode::InvalidArgument, std::string(to_string(op)) + " config key " + key + "=" +
                                                std::to_string(it->second) + " must be 0 or 1");
  return static_cast<int>(it->second);
}
}  // namespace

Resolved resolve(Op op, const MlstmProblem& p, const DeviceLimits& dev, const Config& pinned) {
  const int form_sel = selector(pinned, kFormKey, op);
  const int engine_sel = selector(pinned, kEngineKey, op);
  const bool chunk_pinned = pinned.count("chunk") > 0;
  Config tiles = pinned;
  tiles.erase(kFormKey);
  tiles.erase(kEngineKey);
  const Family* chosen = nullptr;
  const Family* serving = nullptr;
  const Family* fallback = nullptr;
  for (const Family* f : families_of(op)) {
    if (form_sel >= 0 && (f->form() == Form::Parallel) != (form_sel == 1)) continue;
    if (form_sel < 0 && chunk_pinned && f->form() == Form::Parallel) continue;
    if (engine_sel >= 0 && (f->engine() == Engine::Sm90) != (engine_sel == 1)) continue;
    if (!fallback) fallback = f;
    if (!f->serves(p, dev).empty()) continue;
    // Without a pinned engine, a family that would reject the pinned tiles (a chunk the sm90
    // engine does not take) gives way to the next.
    if (engine_sel < 0 && !tiles.empty() && f->engine() != Engine::MmaSync &&
        !f->reject(f->complete(p, dev, tiles), p, dev).empty())
      continue;
    // The first family that serves and prefers p; with a pinned form or engine, else the first of
    // those that serves it (the parallel form for long sequences, a non-default engine).
    if (f->preferred(p, dev)) {
      chosen = f;
      break;
    }
    if ((form_sel >= 0 || engine_sel >= 0) && !serving) serving = f;
  }
  if (!chosen) chosen = serving ? serving : fallback;
  if (!chosen)
    throw Error(ErrorCode::InvalidArgument,
                std::string("no ") + to_string(op) + " kernels for " + (engine_sel == 1 ? "engine=1 (sm90)" : "this request") +
                    " in this build");
  Resolved r;
  r.family = chosen;
  r.config = chosen->complete(p, dev, tiles);
  return r;
}

std::string acceptance(Op op, const MlstmProblem& p, const DeviceLimits& dev, const Config& stored) {
  try {
    const Resolved r = resolve(op, p, dev, stored);
    if (std::string why = r.family->serves(p, dev); !why.empty()) return why;
    return r.family->reject(r.config, p, dev);
  } catch (const Error& e) {
    return e.what();
  }
}

}  // namespace tfla::ops
