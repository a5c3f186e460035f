#include "log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <mutex>

namespace tfla {
namespace {

std::shared_ptr<spdlog::logger> get_or_create() {
  if (auto existing = spdlog::get("tfla")) return existing;
  std::shared_ptr<spdlog::logger> log;
  try {
    log = spdlog::stderr_color_mt("tfla");
  } catch (const spdlog::spdlog_ex&) {  // another component registered it meanwhile
    if (auto existing = spdlog::get("tfla")) return existing;
    return std::make_shared<spdlog::logger>("tfla");  // unregistered, sinkless; never null
  }
  // Same pattern as the runtime's logger (src/runtime/log.cpp), whichever is made first.
  log->set_pattern("[%H:%M:%S.%e] [tfla] [%^%l%$] %v");
  const char* level = std::getenv("TFLA_LOG_LEVEL");
  log->set_level(level && *level ? spdlog::level::from_str(level) : spdlog::level::warn);
  return log;
}

}  // namespace

std::shared_ptr<spdlog::logger> cache_log() {
  static std::once_flag once;
  static std::shared_ptr<spdlog::logger> log;
  std::call_once(once, [] { log = get_or_create(); });
  return log;
}

}  // namespace tfla
