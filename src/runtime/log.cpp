#include "runtime/log.hpp"

#include "tfla_util/logger.hpp"

namespace tfla {

std::shared_ptr<spdlog::logger> logger() { return util::logger(); }

}  // namespace tfla
