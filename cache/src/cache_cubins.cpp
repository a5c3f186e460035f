// Compiled cubins keyed by the hash of (rendered source, options, arch, NVRTC version), each
// stored with a SHA-256 checksum so that a damaged blob is a miss, never a loaded kernel, and a
// verified flag so that an imported blob is a miss until a local compile of its key matches it
// (the checksum sits in the same row as the bytes: it detects damage, not forgery).
#include <fmt/format.h>

#include "cache_impl.hpp"
#include "log.hpp"
#include "tfla_cache/hash.hpp"

namespace tfla::cache {
using detail::Stmt;
using detail::Txn;

void Cache::put_cubin(const std::string& hash, const std::string& arch,
                      const std::string& kernel_name, const std::string& bytes,
                      const std::string& env_id) {
  if (hash.empty()) throw CacheError(ErrorCode::InvalidArgument, "put_cubin: empty hash");
  if (bytes.empty())
    throw CacheError(ErrorCode::InvalidArgument, "put_cubin: empty cubin for " + kernel_name);
  const std::string checksum = content_hash(bytes);  // outside the lock: may take a millisecond
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->require_writable("store a cubin");
  Txn txn(*impl_->db, Txn::Write);
  {  // an unverified (imported) cubin of this key: the fresh compile is the check
    Stmt old = impl_->db->prepare("SELECT checksum FROM cubins WHERE hash = ? AND verified = 0");
    old.bind(1, hash);
    if (old.step()) {
      if (old.text(0) == checksum)
        tfla::cache_log()->info("tfla cache {}: imported cubin {} ({}) matches the local compile",
                                impl_->path, hash, kernel_name);
      else
        tfla::cache_log()->warn(
            "tfla cache {}: imported cubin {} ({}) differs from the local compile of its key; "
            "replaced by the local one",
            impl_->path, hash, kernel_name);
    }
  }
  Stmt s = impl_->db->prepare(
      "INSERT OR REPLACE INTO cubins(hash, arch, kernel_name, env_id, size_bytes, checksum, "
      "created_unix, bytes, verified) VALUES(?,?,?,?,?,?,?,?,1)");
  s.bind(1, hash).bind(2, arch).bind(3, kernel_name).bind(4, env_id);
  s.bind(5, static_cast<int64_t>(bytes.size())).bind(6, checksum).bind(7, detail::now_unix());
  s.bind_blob(8, bytes);
  s.run();
  txn.commit();
}

std::optional<std::string> Cache::get_cubin(const std::string& hash) const {
  std::string bytes, checksum, kernel_name;
  int64_t size_bytes = 0;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->refresh();
    Stmt s = impl_->db->prepare(
        "SELECT bytes, checksum, size_bytes, kernel_name, verified FROM cubins WHERE hash = ?");
    s.bind(1, hash);
    if (!s.step()) return std::nullopt;
    if (s.i64(4) == 0) {
      tfla::cache_log()->debug(
          "tfla cache {}: cubin {} ({}) was imported and is not verified; treating it as a miss "
          "(the recompile checks it)",
          impl_->path, hash, s.text(3));
      return std::nullopt;
    }
    bytes = s.blob(0);
    checksum = s.text(1);
    size_bytes = s.i64(2);
    kernel_name = s.text(3);
  }
  if (static_cast<int64_t>(bytes.size()) != size_bytes || content_hash(bytes) != checksum) {
    tfla::cache_log()->warn(
        "tfla cache {}: cubin {} ({}) fails its checksum; treating it as a miss "
        "(run `tfla cache verify`)",
        impl_->path, hash, kernel_name);
    return std::nullopt;
  }
  return bytes;
}

std::vector<CubinInfo> Cache::list_cubins() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->refresh();
  Stmt s = impl_->db->prepare(
      "SELECT hash, arch, kernel_name, env_id, size_bytes, created_unix, verified FROM cubins "
      "ORDER BY kernel_name, hash");
  std::vector<CubinInfo> out;
  while (s.step()) {
    out.push_back(CubinInfo{s.text(0), s.text(1), s.text(2), s.text(3), s.i64(4), s.i64(5),
                            s.i64(6) != 0});
  }
  return out;
}

}  // namespace tfla::cache
