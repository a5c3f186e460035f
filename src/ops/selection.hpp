// Dispatch's memo: the family and typed config a call runs, resolved once per (op, problem,
// device, pinned config, whether the call needs the chunkwise form) and kept for the process.
// A hot call looks its selection up here (one hash of a few integers, no heuristic, no string
// work when nothing is pinned) and its kernels up in a KernelMemo under the selection's
// precomputed kernel key.
#pragma once
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "ops/family.hpp"
#include "ops/kernel_memo.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

// What a selection is looked up by: the problem's words, the device ordinal, the pinned config.
struct SelectionKey {
  MemoKey words{};
  Config pinned;
  bool operator==(const SelectionKey& o) const { return words == o.words && pinned == o.pinned; }
};
struct SelectionKeyHash {
  size_t operator()(const SelectionKey& k) const noexcept {
    size_t h = MemoKeyHash{}(k.words);
    for (const auto& [key, value] : k.pinned)
      h = (h ^ std::hash<std::string>{}(key) ^ (static_cast<size_t>(value) * 1099511628211ull)) * 1469598103934665603ull;
    return h;
  }
};

// The problem's words of a selection key (op, dtypes, variant, normalize, shape, ordinal, and the
// call's kind: the forward and backward pass needs_chunkwise + 2 * packed, so each of the four
// kinds keys its own selection).
inline MemoKey selection_words(Op op, const MlstmProblem& p, int ordinal, int64_t kind) {
  return {static_cast<int64_t>(op),        static_cast<int64_t>(p.dtype), static_cast<int64_t>(p.gate_dtype),
          static_cast<int64_t>(p.variant), p.normalize,                   p.B,
          p.NH,                            p.S,                           p.Dqk,
          p.Dv,                            ordinal,                       kind};
}

// Selections of one typed config kind, never erased (references stay valid). Thread-safe.
template <class Selection> class SelectionMemo {
 public:
  template <class Make> const Selection& get(SelectionKey key, Make&& make) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = map_.find(key);
      if (it != map_.end()) return it->second;
    }
    Selection s = make();  // may throw: nothing is stored then
    std::lock_guard<std::mutex> lock(mu_);
    return map_.emplace(std::move(key), std::move(s)).first->second;
  }

 private:
  std::mutex mu_;
  std::unordered_map<SelectionKey, Selection, SelectionKeyHash> map_;
};

// The device ordinal selections are keyed by: the current context's, -1 without a usable device
// (the reference limits then apply).
int selection_ordinal();

}  // namespace tfla::ops
