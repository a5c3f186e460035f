#include "args.hpp"

#include <sstream>

namespace tfla::cli {

Args::Args(const std::vector<std::string>& argv, std::set<std::string> known_flags,
           std::set<std::string> known_options) {
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a.rfind("--", 0) != 0) {
      positionals_.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (known_flags.count(name)) {
      if (has_value) throw UsageError("--" + name + " takes no value");
      flags_.insert(name);
    } else if (known_options.count(name)) {
      if (!has_value) {
        // the next argument is the value unless it is another option (a negative number such as
        // -5 has a single dash and is a value)
        if (i + 1 >= argv.size() || argv[i + 1].rfind("--", 0) == 0)
          throw UsageError("--" + name + " needs a value");
        value = argv[++i];
      }
      options_[name] = value;
    } else {
      throw UsageError("unknown option --" + name);
    }
  }
}

std::string Args::get(const std::string& name, const std::string& def) const {
  auto it = options_.find(name);
  return it == options_.end() ? def : it->second;
}

int64_t Args::get_int(const std::string& name, int64_t def) const {
  if (!has(name)) return def;
  const std::string v = get(name);
  try {
    size_t used = 0;
    const long long x = std::stoll(v, &used);
    if (used != v.size()) throw std::invalid_argument(v);
    return x;
  } catch (const std::exception&) {
    throw UsageError("--" + name + " expects an integer, got '" + v + "'");
  }
}

int64_t Args::get_int_in(const std::string& name, int64_t def, int64_t lo, int64_t hi) const {
  const int64_t x = get_int(name, def);
  if (has(name) && (x < lo || x > hi))
    throw UsageError("--" + name + " must be an integer in [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "], got '" + get(name) + "'");
  return x;
}

double Args::get_double(const std::string& name, double def) const {
  if (!has(name)) return def;
  const std::string v = get(name);
  try {
    size_t used = 0;
    const double x = std::stod(v, &used);
    if (used != v.size()) throw std::invalid_argument(v);
    return x;
  } catch (const std::exception&) {
    throw UsageError("--" + name + " expects a number, got '" + v + "'");
  }
}

std::vector<int64_t> Args::get_ints(const std::string& name, const std::vector<int64_t>& def) const {
  if (!has(name)) return def;
  std::vector<int64_t> out;
  const std::string v = get(name);
  if (!v.empty() && v.back() == ',')  // getline yields no item for a trailing comma
    throw UsageError("--" + name + " expects comma-separated integers, got '" + v + "'");
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      out.push_back(std::stoll(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw UsageError("--" + name + " expects comma-separated integers, got '" + get(name) + "'");
    }
  }
  if (out.empty()) throw UsageError("--" + name + " is empty");
  return out;
}

}  // namespace tfla::cli
