// The library's logger: spdlog's named logger "tfla" (never the default logger). Level from
// $TFLA_LOG_LEVEL (trace, debug, info, warn, error, off); default warn.
#pragma once
#include <spdlog/spdlog.h>

#include <memory>

namespace tfla {

std::shared_ptr<spdlog::logger> logger();

template <class... A> void log_debug(spdlog::format_string_t<A...> fmt, A&&... a) {
  logger()->debug(fmt, std::forward<A>(a)...);
}
template <class... A> void log_info(spdlog::format_string_t<A...> fmt, A&&... a) {
  logger()->info(fmt, std::forward<A>(a)...);
}
template <class... A> void log_warn(spdlog::format_string_t<A...> fmt, A&&... a) {
  logger()->warn(fmt, std::forward<A>(a)...);
}

}  // namespace tfla
