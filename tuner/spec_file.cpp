#include "tuner/spec_file.hpp"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "ops/problem_check.hpp"
#include "tfla_util/config_text.hpp"
#include "tfla_util/dtype_name.hpp"

namespace tfla::tuner {
namespace {
[[noreturn]] void bad(const std::string& msg) { throw Error(ErrorCode::InvalidArgument, msg); }

// A spec file is a short text: a model's shapes, one a line.
constexpr size_t kMaxFileBytes = size_t{1} << 20;
constexpr size_t kMaxLineChars = 4096;

void check_no_nul(const std::string& line) {
  if (const size_t at = line.find('\0'); at != std::string::npos)
    bad("a NUL byte at column " + std::to_string(at + 1) + " (a spec file is text)");
}

int64_t positive(const std::string& key, const std::string& v) {
  const std::optional<int64_t> x = util::parse_int64(v);
  if (!x || *x <= 0) bad(key + "=" + v + ": expected a positive integer (64-bit)");
  return *x;
}
}  // namespace

DType parse_dtype(const std::string& s) {
  if (std::optional<DType> d = util::parse_dtype(s)) return *d;
  bad("unknown dtype '" + s + "' (" + util::dtype_names() + ")");
}
Variant parse_variant(const std::string& s) {
  if (s == "exp") return Variant::Exp;
  if (s == "sig") return Variant::Sig;
  bad("unknown variant '" + s + "' (exp, sig)");
}

MlstmProblem TuneProblem::problem() const {
  MlstmProblem p;
  p.B = bh;
  p.NH = 1;
  p.S = seq;
  p.Dqk = dqk;
  p.Dv = dv;
  p.dtype = dtype;
  p.gate_dtype = DType::FP32;
  p.variant = variant;
  p.normalize = normalize;
  return p;
}

std::string TuneProblem::to_string() const {
  std::ostringstream o;
  o << "op=" << op << " variant=" << tfla::to_string(variant) << " dtype=" << tfla::to_string(dtype)
    << " dqk=" << dqk << " dv=" << dv << " bh=" << bh << " seq=" << seq;
  if (!normalize) o << " normalize=0";
  return o.str();
}

TuneProblem parse_spec_line(const std::string& line, const TuneProblem& defaults) {
  check_no_nul(line);
  TuneProblem t = defaults;
  std::istringstream in(line.substr(0, line.find('#')));
  std::string item;
  std::set<std::string> seen;
  while (in >> item) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0) bad("'" + item + "': expected key=value");
    const std::string key = item.substr(0, eq), v = item.substr(eq + 1);
    if (!seen.insert(key).second) bad("'" + key + "' is given twice on one line");
    if (key == "op") {
      if (v != "fwd" && v != "bwd" && v != "fwbw" && v != "step")
        bad("op=" + v + ": expected fwd, bwd, fwbw or step");
      t.op = v;
    } else if (key == "variant") t.variant = parse_variant(v);
    else if (key == "dtype") t.dtype = parse_dtype(v);
    else if (key == "dqk") t.dqk = positive(key, v);
    else if (key == "dv") t.dv = positive(key, v);
    else if (key == "bh") t.bh = positive(key, v);
    else if (key == "seq") t.seq = positive(key, v);
    else if (key == "normalize") {
      if (v != "0" && v != "1") bad("normalize=" + v + ": expected 0 or 1");
      t.normalize = v == "1";
    } else if (key == "layout") {
      if (v != "bhsd") bad("layout=" + v + ": only bhsd is tuned");
    } else
      bad("unknown key '" + key + "' (op, variant, dtype, dqk, dv, bh, seq, normalize, layout)");
  }
  ops::check_problem(t.problem());  // the library's limits (head dims, B * NH, S), by name
  return t;
}

std::vector<TuneProblem> parse_spec(const std::string& text) {
  std::vector<TuneProblem> out;
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.size() > kMaxLineChars)
      bad("line " + std::to_string(n) + ": longer than " + std::to_string(kMaxLineChars) + " characters");
    try {
      check_no_nul(line);
    } catch (const Error& e) {
      bad("line " + std::to_string(n) + ": " + e.what());
    }
    const std::string body = line.substr(0, line.find('#'));
    if (body.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      out.push_back(parse_spec_line(body));
    } catch (const Error& e) {
      bad("line " + std::to_string(n) + ": " + e.what());
    }
  }
  return out;
}

std::vector<TuneProblem> read_spec_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) bad("cannot read spec file '" + path + "': it is a directory");
  std::ifstream f(path, std::ios::binary);
  if (!f) bad("cannot read spec file '" + path + "'");
  // at most one byte past the limit is read (the path may be a device that never ends)
  std::string text(kMaxFileBytes + 1, '\0');
  f.read(&text[0], static_cast<std::streamsize>(text.size()));
  if (f.bad()) bad("cannot read spec file '" + path + "'");
  text.resize(static_cast<size_t>(f.gcount()));
  if (text.size() > kMaxFileBytes)
    bad(path + ": larger than " + std::to_string(kMaxFileBytes >> 20) + " MiB (a spec file holds one shape a line)");
  std::vector<TuneProblem> out;
  try {
    out = parse_spec(text);
  } catch (const Error& e) {
    bad(path + ": " + e.what());
  }
  if (out.empty()) bad(path + ": no shapes (one per line: op=fwbw variant=exp dtype=bf16 dqk=256 dv=512 bh=64 seq=8192)");
  return out;
}

std::vector<TuneProblem> problems_from_recorded(const std::vector<cache::RecordedShape>& rows) {
  std::vector<TuneProblem> out;
  for (const cache::RecordedShape& r : rows) {
    const cache::ProblemKey& k = r.problem;
    TuneProblem t;
    try {
      t.variant = parse_variant(k.variant);
      t.dtype = parse_dtype(k.dtype);
    } catch (const Error&) {
      continue;
    }
    if (k.op != "fwd" && k.op != "bwd" && k.op != "step") continue;
    t.op = k.op;
    t.normalize = k.normalize;
    t.dqk = k.dqk;
    t.dv = k.dv;
    t.bh = k.batch_heads;
    t.seq = k.seq_len;
    // the same shape seen by the other half of a training step: tune the pair as fwbw
    auto same_shape = [&](const TuneProblem& o) {
      return o.variant == t.variant && o.dtype == t.dtype && o.normalize == t.normalize &&
             o.dqk == t.dqk && o.dv == t.dv && o.bh == t.bh && o.seq == t.seq;
    };
    bool merged = false;
    if (t.op != "step")
      for (TuneProblem& o : out)
        if (o.op != "step" && same_shape(o)) {
          if (o.op != t.op) o.op = "fwbw";
          merged = true;
          break;
        }
    if (!merged) out.push_back(t);
  }
  return out;
}

}  // namespace tfla::tuner
