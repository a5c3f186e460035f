// The named logger "tfla" (never spdlog's default logger). Level from TFLA_LOG_LEVEL
// (trace, debug, info, warn, err, critical, off); default warn.
#pragma once

#include <spdlog/logger.h>

#include <memory>

namespace tfla {

// spdlog::get("tfla"), or a new stderr color logger registered under that name. Safe to call
// from several threads and alongside other tfla components creating the same logger.
std::shared_ptr<spdlog::logger> cache_log();

}  // namespace tfla
