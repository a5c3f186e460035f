// The named logger "tfla" (never spdlog's default logger). Level from TFLA_LOG_LEVEL
// (trace, debug, info, warn, err, critical, off); default warn.
#pragma once

#include <spdlog/logger.h>

#include <memory>

namespace tfla {

// The library's one "tfla" logger (tfla_util/logger.hpp). Thread-safe; never null.
std::shared_ptr<spdlog::logger> cache_log();

}  // namespace tfla
