#include "tfla_util/logger.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <mutex>

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
    log->set_level(level && *level ? spdlog::level::from_str(level) : spdlog::level::warn);
  });
  return log;
}

}  // namespace tfla::util
