// The environment key of the tuned-config cache (DESIGN.md section 5), filled from the device,
// the driver, NVRTC and this build: everything that may change which config is fastest.
//
// Two keys, two purposes:
// - EnvKey (this file) labels tuned entries. A mismatch is a miss, never an error.
// - The cubin key (cubin_store.hpp) labels compiled cubins. It holds only what determines the
//   cubin's bytes (source, templates, options, arch, NVRTC version) and no device field, so
//   that a cubin compiled ahead of time (`tfla compile --arch sm_90a`, no GPU) is found later by
//   a process running on a real GPU of that arch.
#pragma once
#include <string>

#include "tfla/tfla.hpp"
#include "tfla_cache/types.hpp"

namespace tfla::store {

// Hash of the embedded templates (kTemplatesHash) and the compile options for `arch`, as
// stored in EnvKey::templates_hash. Never throws (beyond bad_alloc).
std::string templates_hash(const std::string& arch);

// The key of this process on device `dev`: its name, compute capability, SM count, L2 size,
// shared-memory opt-in limit, the driver version, NVRTC version, tfla version and
// templates_hash(dev.arch). Throws Error(NoDriver) without a driver.
cache::EnvKey current_env_key(const DeviceInfo& dev);

// current_env_key(dev).id(), computed once per device ordinal (the label of the cubins that
// get_kernel stores). Thread-safe. Throws like current_env_key.
const std::string& current_env_id(const DeviceInfo& dev);

// The key of a deviceless compilation for `arch` (e.g. "sm_90a"): the device fields
// (gpu_name, sm_count, l2_bytes, smem_optin_bytes) and driver_version are empty/zero; the arch
// is recorded as cc_major/cc_minor (parsed from "sm_XY[a]") and, exactly, in templates_hash
// (whose compile options name it). Needs no driver. Throws Error(InvalidArgument) on an arch
// that is not "sm_<digits>[a-z]".
cache::EnvKey deviceless_env_key(const std::string& arch);

// True when `env` was made by deviceless_env_key (no GPU name, no SM count, no driver).
bool is_deviceless(const cache::EnvKey& env) noexcept;

}  // namespace tfla::store
