// The hot-path memo of the ops: (current context, problem and config as plain integers) ->
// the loaded kernels of one launch sequence. A hit renders nothing, hashes no source text and
// allocates nothing; a miss renders the specs and goes through rt::get_kernel (compile or cubin
// cache). Thread-safe.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "runtime/driver.hpp"
#include "runtime/kernel.hpp"

namespace tfla::ops {

using MemoKey = std::array<int64_t, 32>;

struct MemoKeyHash {
  size_t operator()(const MemoKey& k) const noexcept {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the words
    for (int64_t x : k) h = (h ^ static_cast<uint64_t>(x)) * 1099511628211ull;
    return static_cast<size_t>(h);
  }
};

// The memo key of a selection's kernel list: the op and two independent 64-bit hashes of its
// specs' keys in order (a spec's key names its kernel exactly), so two configs share loaded
// kernels only where they load the same ones, whatever keys their configs carry.
inline MemoKey kernel_list_key(int64_t op, const std::vector<rt::KernelSpec>& specs) {
  uint64_t a = 1469598103934665603ull, b = 0x9e3779b97f4a7c15ull;
  for (const rt::KernelSpec& s : specs) {
    for (unsigned char ch : s.key) {
      a = (a ^ ch) * 1099511628211ull;                        // FNV-1a
      b = (b ^ ch) * 0xff51afd7ed558ccdull + (b >> 29);        // a second, unrelated mix
    }
    a = (a ^ 0x1f) * 1099511628211ull;  // a separator: ("ab", "c") is not ("a", "bc")
    b = (b ^ 0x1f) * 0xff51afd7ed558ccdull + (b >> 29);
  }
  MemoKey k{};
  k[0] = op;
  k[1] = static_cast<int64_t>(specs.size());
  k[2] = static_cast<int64_t>(a);
  k[3] = static_cast<int64_t>(b);
  return k;
}

template <size_t N> class KernelMemo {
 public:
  using Kernels = std::array<const rt::LoadedKernel*, N>;
  // key: the problem and config words (the current context is added here); render: builds the
  // N specs on a miss.
  Kernels get(MemoKey key, const std::function<std::vector<rt::KernelSpec>()>& render) {
    CUcontext ctx = nullptr;
    rt::check(rt::driver().cuCtxGetCurrent(&ctx), "cuCtxGetCurrent");
    key[31] = reinterpret_cast<int64_t>(ctx);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = map_.find(key);
      if (it != map_.end()) return it->second;
    }
    const std::vector<rt::KernelSpec> specs = render();
    Kernels out{};
    for (size_t i = 0; i < N; ++i) out[i] = &rt::get_kernel(specs[i]);
    // get_kernel may have made a context current: key by the context the kernels live in
    rt::check(rt::driver().cuCtxGetCurrent(&ctx), "cuCtxGetCurrent");
    key[31] = reinterpret_cast<int64_t>(ctx);
    std::lock_guard<std::mutex> lock(mu_);
    map_.emplace(key, out);
    return out;
  }

 private:
  std::mutex mu_;
  std::unordered_map<MemoKey, Kernels, MemoKeyHash> map_;
};

}  // namespace tfla::ops
