// Kernel families: the seam every op, the dispatch, the tuner, `tfla cache explain` and
// `tfla compile --all` go through. A family is the set of kernels that runs one op in one form
// on one engine (the chunkwise forward on mma.sync, the parallel backward, the step, ...). Each
// is declared once, in its own file under ops/families/: its config keys as data, a
// device-aware default, one acceptance rule that returns a reason, its tuner axes and the kernel
// specs (typed template arguments) of a config and its launch plan (ops/plan.hpp: the workspace
// layout and the ordered launches). Nothing outside ops/families/ names a family:
// callers iterate families() or ask resolve() for the one that serves a request.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/kernel.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

enum class Op { Forward, Backward, Step };
// The algorithm: chunkwise (states per chunk, linear in S), parallel (quadratic, one chunk
// spanning the sequence), recurrent (the step, one token at a time).
enum class Form { Chunkwise, Parallel, Recurrent };
// The instruction set the kernels are written for: mma.sync (sm_80 and later) or the sm_90a
// engine (TMA, wgmma, warp specialization).
enum class Engine { MmaSync, Sm90 };
using tfla::to_string;                  // Config, DType, Variant, ErrorCode
const char* to_string(Op) noexcept;      // "fwd", "bwd", "step": the cache's op names
const char* to_string(Form) noexcept;    // "chunkwise", "parallel", "recurrent"
const char* to_string(Engine) noexcept;  // "mma", "sm90"
std::optional<Op> op_from_string(std::string_view name) noexcept;

// What defaults and acceptance rules know of the device. of() reads it off a device;
// reference() is the deviceless target (an H100/H200: what `tfla compile --arch sm_90a` and the
// CPU tests plan for).
struct DeviceLimits {
  std::string arch = "sm_90a";
  int cc_major = 9, cc_minor = 0;
  int sm_count = 132;
  int64_t smem_optin_bytes = 227 * 1024;  // dynamic shared memory per block after opt-in
  int64_t smem_per_sm_bytes = 228 * 1024; // shared memory of one SM (all resident CTAs)
  int max_acc_per_thread = 160;           // fp32 accumulators per thread before spills
  static DeviceLimits of(const DeviceInfo& d);
  static const DeviceLimits& reference();
};
// The limits of the current context's device (memoized per ordinal), or reference() when no
// device is usable. Never throws.
const DeviceLimits& current_limits();

// One config key: its name, the legal range of its value, what it sets.
struct KeyDef {
  const char* name;
  int64_t lo, hi;
  const char* doc;
};

// One tuner axis: the partial configs it can take (one key, or keys tied together such as a
// warp grid). A point of a family's space is one choice per axis over the family's default.
using Axis = std::vector<Config>;

struct Plan;  // ops/plan.hpp

class Family {
 public:
  virtual ~Family() = default;
  virtual const char* name() const noexcept = 0;  // "fwd.chunkwise.mma", ...
  virtual Op op() const noexcept = 0;
  virtual Form form() const noexcept = 0;
  virtual Engine engine() const noexcept = 0;
  // The keys of a full config of this family (what default_config returns and reject reads).
  virtual const std::vector<KeyDef>& keys() const noexcept = 0;
  // "" when the family can run p on a device with dev at all (whatever its tiles); else why not.
  virtual std::string serves(const MlstmProblem& p, const DeviceLimits& dev) const = 0;
  // Whether the family is the op's default for p on dev (checked in registry order; the first
  // family that serves and prefers p wins, the op's chunkwise family otherwise).
  virtual bool preferred(const MlstmProblem& p, const DeviceLimits& dev) const = 0;
  // The analytic default for p on dev (a full config); chunk > 0 fixes the chunk length where
  // the family has one. Its comment in the family's file says why it is what it is.
  virtual Config default_config(const MlstmProblem& p, const DeviceLimits& dev, int chunk = 0) const = 0;
  // The full config for the pinned keys (tile keys only: no form or engine selector): the
  // default (for the pinned chunk, if any) with the pinned keys over it. A family whose default
  // derives keys from others overrides this.
  virtual Config complete(const MlstmProblem& p, const DeviceLimits& dev, const Config& pinned) const;
  // The one acceptance rule: "" when the full config cfg runs p on dev, else the first violated
  // rule in words (divisibility and thread rules, shared memory against the device, the
  // register estimate). Dispatch, the tuner, the cache lookup and `tfla cache explain` all ask
  // this and nothing else.
  virtual std::string reject(const Config& cfg, const MlstmProblem& p, const DeviceLimits& dev) const = 0;
  // The tuner's axes for p, walked over default_config.
  virtual std::vector<Axis> axes(const MlstmProblem& p) const = 0;
  // The kernels a full config launches, in launch order (specs with typed template arguments).
  virtual std::vector<rt::KernelSpec> kernels(const MlstmProblem& p, const Config& cfg,
                                              const DeviceLimits& dev) const = 0;
  // The launch plan of a full config (ops/plan.hpp): its buffers' regions, their sizes and the
  // ordered launches, each naming one of kernels(p, cfg, dev) by index. saved: the call fills
  // (forward) or reads (backward) a saved-states buffer. Dispatch asks once per selection.
  virtual Plan plan(const MlstmProblem& p, const Config& cfg, const DeviceLimits& dev, bool saved) const = 0;
};

// The device-limit parts of every family's acceptance rule: "" when a kernel's shared memory
// fits dev's opt-in limit / its fp32 accumulators per thread fit the register estimate.
std::string over_smem(int64_t bytes, const char* kernel, const DeviceLimits& dev);
std::string over_registers(int64_t accumulators, int64_t threads, const char* kernel, const DeviceLimits& dev);

// Every family, in preference order within an op.
const std::vector<const Family*>& families();
// The families of one op.
std::vector<const Family*> families_of(Op op);
// The family of (op, form, engine), or null.
const Family* find_family(Op op, Form form, Engine engine = Engine::MmaSync);

// The keys of a config text that choose the family rather than set tiles: "parallel" (0 = the
// chunkwise form, 1 = the parallel form) and "engine" (0 = mma.sync, 1 = sm90).
inline constexpr const char* kFormKey = "parallel";
inline constexpr const char* kEngineKey = "engine";

// A request resolved to one family and its full config.
struct Resolved {
  const Family* family = nullptr;
  Config config;  // full: every key of family->keys(), plus the form/engine selectors
};
// The family and full config for `pinned` (a caller's or a tuned config; empty = the default):
// the form and engine keys narrow the families (a pinned chunk alone means the chunkwise form);
// of those, the first that serves and prefers p, else (a pinned form or engine) the first that
// serves it; the pinned tile keys go over that family's default.
// Throws InvalidArgument for unknown keys (naming the known ones), out-of-range values, or a
// pinned family that does not exist. The config is not checked: ask family->reject.
Resolved resolve(Op op, const MlstmProblem& p, const DeviceLimits& dev, const Config& pinned);
// resolve() then reject(): "" when the library would run `stored` for p on dev, else why not.
// What the tuned-config lookup and `tfla cache explain` use to accept or skip a stored config.
std::string acceptance(Op op, const MlstmProblem& p, const DeviceLimits& dev, const Config& stored);

}  // namespace tfla::ops
