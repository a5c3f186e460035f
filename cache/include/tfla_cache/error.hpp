// The one exception type of tfla_cache. The cache reports problems with a code and a message
// that names the file and what is wrong; the runtime maps it onto tfla::Error at its boundary.
#pragma once

#include <stdexcept>
#include <string>

namespace tfla::cache {

enum class ErrorCode {
  InvalidArgument,  // a malformed key, config text or status name
  Io,               // the file or its directory cannot be created, opened or renamed
  ReadOnly,         // a write on a cache opened (or forced) read-only
  Corrupt,          // SQLite reports a malformed database, or a stored value fails its check
  Foreign,          // the file is not a tfla cache (another SQLite schema, or not SQLite)
  SchemaTooNew,     // the file was written by a newer tfla (user_version above ours)
  Busy,             // the busy timeout ran out while other processes held the write lock
  Sqlite,           // any other SQLite failure (the message carries SQLite's text)
};

// Short lower-case name of `code`, e.g. "read_only". Never throws.
const char* to_string(ErrorCode code) noexcept;

class CacheError : public std::runtime_error {
 public:
  CacheError(ErrorCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace tfla::cache
