// A small command-line parser for the tfla CLI: --flag, --key value, --key=value, positionals.
// Unknown flags are errors that name the flag (exit code 2).
#pragma once
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace tfla::cli {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Args {
 public:
  // known_flags: boolean flags; known_options: flags that take a value.
  Args(const std::vector<std::string>& argv, std::set<std::string> known_flags,
       std::set<std::string> known_options);
  bool flag(const std::string& name) const { return flags_.count(name) > 0; }
  bool has(const std::string& name) const { return options_.count(name) > 0; }
  std::string get(const std::string& name, const std::string& def = "") const;
  int64_t get_int(const std::string& name, int64_t def) const;
  // get_int, and a given value must lie in [lo, hi] (UsageError naming the option otherwise).
  int64_t get_int_in(const std::string& name, int64_t def, int64_t lo, int64_t hi) const;
  double get_double(const std::string& name, double def) const;
  // Comma-separated integers, e.g. "512,1024,2048".
  std::vector<int64_t> get_ints(const std::string& name, const std::vector<int64_t>& def) const;
  const std::vector<std::string>& positionals() const { return positionals_; }

 private:
  std::set<std::string> flags_;
  std::map<std::string, std::string> options_;
  std::vector<std::string> positionals_;
};

}  // namespace tfla::cli
