#include "log.hpp"

#include "tfla_util/logger.hpp"

namespace tfla {

std::shared_ptr<spdlog::logger> cache_log() { return util::logger(); }

}  // namespace tfla
