#include "store/env_key.hpp"

#include <cctype>
#include <map>
#include <mutex>

#include "runtime/driver.hpp"
#include "runtime/embedded.hpp"
#include "runtime/kernel.hpp"
#include "tfla_cache/hash.hpp"

namespace tfla::store {
namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : " ") + s;
  return out;
}

// Software fields shared by both keys: NVRTC, tfla version, templates hash.
cache::EnvKey software_key(const std::string& arch) {
  cache::EnvKey k;
  rt::nvrtc_version(&k.nvrtc_major, &k.nvrtc_minor);
  k.tfla_version = version();
  k.templates_hash = templates_hash(arch);
  return k;
}

}  // namespace

std::string templates_hash(const std::string& arch) {
  return cache::content_hash_parts({rt::kTemplatesHash, join(rt::compile_options(arch))});
}

cache::EnvKey current_env_key(const DeviceInfo& dev) {
  cache::EnvKey k = software_key(dev.arch);
  k.gpu_name = dev.name;
  k.cc_major = dev.cc_major;
  k.cc_minor = dev.cc_minor;
  k.sm_count = dev.sm_count;
  k.l2_bytes = dev.l2_bytes;
  k.smem_optin_bytes = dev.smem_optin_bytes;
  k.driver_version = rt::driver().version;
  return k;
}

const std::string& current_env_id(const DeviceInfo& dev) {
  static std::mutex mu;
  static std::map<int, std::string> ids;  // by ordinal; node-based, so references stay valid
  std::lock_guard<std::mutex> lock(mu);
  auto it = ids.find(dev.ordinal);
  if (it == ids.end()) it = ids.emplace(dev.ordinal, current_env_key(dev).id()).first;
  return it->second;
}

cache::EnvKey deviceless_env_key(const std::string& arch) {
  // "sm_" then at least two digits (the last is the minor version), then an optional suffix.
  size_t i = 3;
  while (i < arch.size() && std::isdigit(static_cast<unsigned char>(arch[i]))) ++i;
  const bool ok = arch.rfind("sm_", 0) == 0 && i >= 5 &&
                  (i == arch.size() ||
                   (i + 1 == arch.size() && std::islower(static_cast<unsigned char>(arch[i]))));
  if (!ok)
    throw Error(ErrorCode::InvalidArgument,
                "arch '" + arch + "' is not of the form sm_<major><minor>[suffix], e.g. sm_90a");
  cache::EnvKey k = software_key(arch);
  k.cc_major = std::stoi(arch.substr(3, i - 4));
  k.cc_minor = arch[i - 1] - '0';
  return k;
}

bool is_deviceless(const cache::EnvKey& env) noexcept {
  return env.gpu_name.empty() && env.sm_count == 0 && env.driver_version == 0;
}

}  // namespace tfla::store
