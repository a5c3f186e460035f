// A config struct's keys as data: one table row per key (name, legal range, what it sets, the
// member it fills). The table reads a tfla::Config into the struct (unknown keys and values out
// of range are named in the error) and writes the struct back as a Config, so the key list, the
// range checks and the spelling live in one place per family.
#pragma once
#include <string>
#include <vector>

#include "ops/family.hpp"
#include "tfla/tfla.hpp"

namespace tfla::ops {

template <class Cfg> struct KeyField {
  KeyDef def;
  int Cfg::*member;
};

template <class Cfg> class KeyTable {
 public:
  explicit KeyTable(std::vector<KeyField<Cfg>> fields) : fields_(std::move(fields)) {
    for (const auto& f : fields_) defs_.push_back(f.def);
  }
  const std::vector<KeyDef>& defs() const noexcept { return defs_; }
  Config to_config(const Cfg& c) const {
    Config out;
    for (const auto& f : fields_) out[f.def.name] = c.*(f.member);
    return out;
  }
  // Whether name is a key of the table.
  bool has(const std::string& name) const noexcept {
    for (const auto& f : fields_)
      if (name == f.def.name) return true;
    return false;
  }
  // Sets the members named in c; `what` names the config in errors ("forward config"). Keys in
  // `ignored` (the form and engine selectors) are skipped. Throws InvalidArgument on an unknown
  // key or a value outside the key's range.
  void apply(Cfg& c, const Config& in, const char* what,
             std::initializer_list<const char*> ignored = {}) const {
    for (const auto& [key, value] : in) {
      bool skip = false;
      for (const char* i : ignored) skip = skip || key == i;
      if (skip) continue;
      const KeyField<Cfg>* f = find(key);
      if (!f) throw Error(ErrorCode::InvalidArgument, std::string("unknown ") + what + " key '" + key + "'",
                          "known keys: " + known());
      if (value < f->def.lo || value > f->def.hi)
        throw Error(ErrorCode::InvalidArgument,
                    std::string(what) + " key " + key + "=" + std::to_string(value) + " is out of range [" +
                        std::to_string(f->def.lo) + ", " + std::to_string(f->def.hi) + "]: " + f->def.doc);
      c.*(f->member) = static_cast<int>(value);
    }
  }
  std::string known() const {
    std::string s;
    for (const auto& f : fields_) s += (s.empty() ? "" : ", ") + std::string(f.def.name);
    return s;
  }

 private:
  const KeyField<Cfg>* find(const std::string& key) const noexcept {
    for (const auto& f : fields_)
      if (key == f.def.name) return &f;
    return nullptr;
  }
  std::vector<KeyField<Cfg>> fields_;
  std::vector<KeyDef> defs_;
};

}  // namespace tfla::ops
