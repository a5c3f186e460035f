// What the family files share: the accessors the registry lists (one per family) and the small
// helpers that declare tuner axes and run a typed acceptance rule over a Config.
#pragma once
#include <initializer_list>
#include <string>
#include <vector>

#include "ops/family.hpp"
#include "ops/plan.hpp"

namespace tfla::ops {

// One per family file; the registry (ops/family.cpp) lists them in preference order.
const Family& fwd_parallel_sm90_family();
const Family& fwd_parallel_family();
const Family& fwd_chunkwise_sm90_family();
const Family& fwd_chunkwise_family();
const Family& bwd_parallel_sm90_family();
const Family& bwd_parallel_family();
const Family& bwd_chunkwise_sm90_family();
const Family& bwd_chunkwise_family();
const Family& step_family();

// An axis of one key's values.
Axis values(const std::string& key, std::initializer_list<int64_t> vs);
// The warp grids (warps_m x warps_n) the tile kernels take, prefixed ("" or "st_").
Axis warp_grids(const std::string& prefix);
// A state-style block (Dqk x Dv per CTA) with the warp grid the defaults derive from it.
Axis state_blocks(const std::string& prefix);

// A chunk-state walk pinned to mma.sync (`<walk>_sm90=0`, walk "st" or "ds") in a config that an
// sm90 family completed from its default takes the tiles of the mma.sync default mma, except the
// keys pinned: the sm90 walk's (every Dqk row in one CTA) are not what the mma.sync kernel is
// sized and measured for.
void take_mma_walk_tiles(Config& full, const Config& mma, const Config& pinned, const std::string& walk);

// Reads cfg into the typed config Cfg and runs its rule; a config of another form, unknown keys
// or values out of range are reasons too.
template <class Cfg, class Rule>
std::string check_typed(const Config& cfg, Form form, Rule rule) {
  Cfg c;
  try {
    c.apply(cfg);
  } catch (const Error& e) {
    return e.what();
  }
  if (c.form != form)
    return std::string("a ") + to_string(c.form) + " config given to the " + to_string(form) + " form";
  return rule(c);
}

// The parts the families of one typed config share (the chunkwise and parallel forms of the
// forward, of the backward): the keys of Cfg, the acceptance rule Check for this family's
// form, the kernels Render and their launch plan Planner.
template <class Cfg, std::string (*Check)(const Cfg&, const MlstmProblem&, const DeviceLimits&),
          std::vector<rt::KernelSpec> (*Render)(const MlstmProblem&, const Cfg&, const DeviceLimits&),
          Plan (*Planner)(const MlstmProblem&, const Cfg&, const DeviceLimits&, bool)>
class TypedFamily : public Family {
 public:
  const std::vector<KeyDef>& keys() const noexcept override { return Cfg::key_defs(); }
  std::string reject(const Config& cfg, const MlstmProblem& p, const DeviceLimits& dev) const override {
    return check_typed<Cfg>(cfg, form(), [&](const Cfg& c) { return Check(c, p, dev); });
  }
  std::vector<rt::KernelSpec> kernels(const MlstmProblem& p, const Config& cfg,
                                      const DeviceLimits& dev) const override {
    Cfg c;
    c.apply(cfg);
    return Render(p, c, dev);
  }
  Plan plan(const MlstmProblem& p, const Config& cfg, const DeviceLimits& dev, bool saved) const override {
    Cfg c;
    c.apply(cfg);
    return Planner(p, c, dev, saved);
  }
};

}  // namespace tfla::ops
