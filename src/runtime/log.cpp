#include "runtime/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <mutex>

namespace tfla {

std::shared_ptr<spdlog::logger> logger() {
  static std::once_flag once;
  static std::shared_ptr<spdlog::logger> log;
  std::call_once(once, [] {
    log = spdlog::get("tfla");
    if (log) return;
    try {
      log = spdlog::stderr_color_mt("tfla");
    } catch (const spdlog::spdlog_ex&) {
      // Registered between our get and create (by tfla_cache's logger, or the application):
      // use that one as it is.
      log = spdlog::get("tfla");
      if (!log) log = std::make_shared<spdlog::logger>("tfla");  // sinkless; never null
      return;
    }
    log->set_pattern("[%H:%M:%S.%e] [tfla] [%^%l%$] %v");
    const char* lvl = std::getenv("TFLA_LOG_LEVEL");
    log->set_level(lvl && *lvl ? spdlog::level::from_str(lvl) : spdlog::level::warn);
  });
  return log;
}

}  // namespace tfla
