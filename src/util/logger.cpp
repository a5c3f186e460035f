#include "tfla_util/logger.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <mutex>
#include <string>

namespace tfla::util {

std::shared_ptr<spdlog::logger> logger() {
  static std::once_flag once;
  static std::shared_ptr<spdlog::logger> log;
  std::call_once(once, [] {
    log = spdlog::get("tfla");
    if (log) return;
    try {
      log = spdlog::stderr_color_mt("tfla");
    } catch (const spdlog::spdlog_ex&) {  // registered between our get and create
      log = spdlog::get("tfla");
      if (!log) log = std::make_shared<spdlog::logger>("tfla");  // sinkless; never null
      return;
    }
    log->set_pattern("[%H:%M:%S.%e] [tfla] [%^%l%$] %v");
    const char* level = std::getenv("TFLA_LOG_LEVEL");
    log->set_level(spdlog::level::warn);
    if (level && *level) {
      // spdlog reads an unknown name as "off"; a typo must not silence the logger
      const std::string name(level);
      static const char* const known[] = {"trace", "debug", "info", "warn", "warning",
                                          "err", "error", "critical", "off"};
      if (std::find(std::begin(known), std::end(known), name) != std::end(known))
        log->set_level(spdlog::level::from_str(name));
      else
        log->warn("TFLA_LOG_LEVEL='{}' is not a level (trace, debug, info, warn, error, critical, off); "
                  "logging at warn",
                  name);
    }
  });
  return log;
}

}  // namespace tfla::util
