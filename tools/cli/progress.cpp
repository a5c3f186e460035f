#include <unistd.h>

#include <cstdio>

#include "commands.hpp"

namespace tfla::cli {

Progress::Progress(std::string what, size_t total)
    : what_(std::move(what)), total_(total), tty_(isatty(STDERR_FILENO) != 0) {}

void Progress::step(const std::string& item) {
  ++n_;
  if (!tty_) return;
  const int width = 30;
  const int filled = total_ ? static_cast<int>(width * n_ / total_) : width;
  std::string bar(filled, '#');
  bar.resize(width, '.');
  std::string shown = item.size() > 60 ? item.substr(0, 57) + "..." : item;
  std::fprintf(stderr, "\r\033[K%s [%s] %zu/%zu %s", what_.c_str(), bar.c_str(), n_, total_, shown.c_str());
  std::fflush(stderr);
}

void Progress::done() {
  if (tty_) std::fprintf(stderr, "\r\033[K");
}

}  // namespace tfla::cli
