// The one factory of the library's logger: spdlog's named logger "tfla" (never the default
// logger), on stderr, level from $TFLA_LOG_LEVEL (trace, debug, info, warn, err, critical, off;
// default warn). The runtime (src/runtime/log.hpp) and the cache (cache/src/log.hpp) both take
// theirs from here. If the application registered a logger named "tfla" first, that one is used
// as it is.
#pragma once
#include <spdlog/logger.h>

#include <memory>

namespace tfla::util {

// Never null; thread-safe; made once per process.
std::shared_ptr<spdlog::logger> logger();

}  // namespace tfla::util
