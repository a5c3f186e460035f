// Every kernel the library renders against the device function it names: the host builds each
// KernelSpec's template arguments as a positional list, and this test holds that list to the
// template parameter list in the embedded header (count, each place's name as the host gives it,
// and kind: a type, an integer or a bool), the params type to the function's first parameter
// and the shared-memory argument to its second. Specs come from every family's default over the kernel space, the
// tuner's candidates for a few problems, and the sm90 primitives' kernels, so a template that
// gains, loses, renames or reorders a parameter fails here before NVRTC or a GPU sees it.
#include <algorithm>
#include <cctype>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "ops/family.hpp"
#include "ops/kernel_space.hpp"
#include "ops/sm90_kernels.hpp"
#include "runtime/embedded.hpp"
#include "runtime/kernel.hpp"
#include "tuner/search_space.hpp"
#include "config_helpers.hpp"
#include "tfla_catch.hpp"

using namespace tfla;

namespace {

enum class Kind { Type, Int, Bool };

struct Param {
  Kind kind;
  std::string name;
  bool has_default;
};

struct Signature {
  std::vector<Param> params;
  std::string first_param;  // the first function parameter's type, unqualified (e.g. MlstmFwdParams)
  bool smem_arg = false;    // a second parameter of type char*
};

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\n"), b = s.find_last_not_of(" \t\n");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

// Splits at commas outside <> and ().
std::vector<std::string> split_top(const std::string& s) {
  std::vector<std::string> out;
  int depth = 0;
  std::string cur;
  for (char c : s) {
    if (c == '<' || c == '(') ++depth;
    if (c == '>' || c == ')') --depth;
    if (c == ',' && depth == 0) {
      out.push_back(trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!trim(cur).empty()) out.push_back(trim(cur));
  return out;
}

const char* header_text(const std::string& name) {
  for (size_t i = 0; i < rt::kNumEmbeddedTemplates; ++i)
    if (name == rt::kEmbeddedTemplates[i].name) return rt::kEmbeddedTemplates[i].text;
  return nullptr;
}

// The template <...> declaration and parameter list of `__device__ void fn(` in text; empty
// params and first_param when there is none.
Signature signature(const std::string& text, const std::string& fn) {
  Signature sig;
  const std::regex decl("template\\s*<([^{;]*?)>\\s*__device__\\s+void\\s+" + fn + "\\s*\\(([^)]*)\\)");
  std::smatch m;
  if (!std::regex_search(text, m, decl)) return sig;
  for (const std::string& p : split_top(m[1].str())) {
    Param q;
    const size_t eq = p.find('=');
    q.has_default = eq != std::string::npos;
    const std::string head = trim(p.substr(0, eq));
    const size_t sp = head.find_last_of(" \t\n");
    const std::string kind = trim(head.substr(0, sp));
    q.name = trim(head.substr(sp + 1));
    q.kind = kind == "class" || kind == "typename" ? Kind::Type : kind == "bool" ? Kind::Bool : Kind::Int;
    sig.params.push_back(q);
  }
  const std::vector<std::string> args = split_top(m[2].str());
  if (!args.empty()) {
    std::string t = args[0];
    for (const char* drop : {"const", "&", "*"}) {
      for (size_t at; (at = t.find(drop)) != std::string::npos;) t.erase(at, std::string(drop).size());
    }
    t = trim(t);
    sig.first_param = trim(t.substr(0, t.find_first_of(" \t\n")));
  }
  sig.smem_arg = args.size() >= 2 && args[1].find("char*") != std::string::npos;
  return sig;
}

bool is_int_literal(const std::string& v) {
  const size_t start = !v.empty() && v[0] == '-' ? 1 : 0;
  return v.size() > start && std::all_of(v.begin() + static_cast<long>(start), v.end(),
                                         [](unsigned char c) { return std::isdigit(c) != 0; });
}

// signature() once per header and function (the regex over a header is the slow part).
const Signature& cached_signature(const std::string& header, const char* text, const std::string& fn) {
  static std::map<std::string, Signature> memo;
  const std::string key = header + "|" + fn;
  auto it = memo.find(key);
  if (it == memo.end()) it = memo.emplace(key, signature(text, fn)).first;
  return it->second;
}

std::string unqualified(const std::string& s) {
  const size_t at = s.rfind("::");
  return at == std::string::npos ? s : s.substr(at + 2);
}

// "" when spec matches its header's declaration, else what does not.
std::string mismatch(const rt::KernelSpec& spec) {
  const char* text = header_text(spec.header);
  if (!text) return "header " + spec.header + " is not embedded";
  const std::string fn = unqualified(spec.function);
  const Signature& sig = cached_signature(spec.header, text, fn);
  if (sig.params.empty() && sig.first_param.empty())
    return "no 'template <...> __device__ void " + fn + "(' in " + spec.header;
  size_t required = 0;
  for (const Param& p : sig.params) required += p.has_default ? 0 : 1;
  if (spec.template_args.size() < required || spec.template_args.size() > sig.params.size())
    return fn + " takes " + std::to_string(required) + ".." + std::to_string(sig.params.size()) +
           " template arguments, the spec gives " + std::to_string(spec.template_args.size());
  for (size_t i = 0; i < spec.template_args.size(); ++i) {
    const std::string& v = spec.template_args[i];
    const Param& p = sig.params[i];
    const bool ok = p.kind == Kind::Bool ? (v == "true" || v == "false")
                    : p.kind == Kind::Int ? is_int_literal(v)
                                          : (!is_int_literal(v) && v != "true" && v != "false" && !v.empty());
    if (!ok) return fn + " template parameter " + std::to_string(i) + " (" + p.name + ") given '" + v + "'";
    const std::string named = i < spec.template_arg_names.size() ? spec.template_arg_names[i] : "";
    if (named != p.name)
      return fn + " template parameter " + std::to_string(i) + " is " + p.name + ", the spec names it '" + named + "'";
  }
  if (spec.template_arg_names.size() != spec.template_args.size())
    return fn + ": " + std::to_string(spec.template_arg_names.size()) + " names for " +
           std::to_string(spec.template_args.size()) + " template arguments";
  if (unqualified(spec.params_type) != sig.first_param)
    return fn + " takes " + sig.first_param + ", the spec launches it with " + spec.params_type;
  if (spec.uses_smem_arg != sig.smem_arg)
    return fn + (sig.smem_arg ? " takes" : " does not take") + " a shared-memory argument, the spec says otherwise";
  return "";
}

// A problem of the test's grid: B = 2, NH = 4, bf16; variant 0 mLSTMexp, 1 mLSTMsig.
MlstmProblem problem(int64_t S, int64_t dqk, int64_t dv, int var) {
  MlstmProblem p = test::make_problem(2, 4, S, dqk, dv);
  p.variant = var == 0 ? Variant::Exp : Variant::Sig;
  return p;
}

}  // namespace

TEST_CASE("the signature reader reads the headers' declarations", "[signature]") {
  const Signature s = signature(header_text("tfla/mlstm_fwd_output.cuh"), "mlstm_fwd_output");
  REQUIRE(!s.params.empty());
  CHECK(s.params.front().kind == Kind::Type);
  CHECK(s.params.back().has_default);  // class G = float
  CHECK(s.first_param == "MlstmFwdParams");
  CHECK(s.smem_arg);
  const Signature g = signature(header_text("tfla/mlstm_fwd_gates.cuh"), "mlstm_fwd_gates");
  REQUIRE(g.params.size() == 4);
  CHECK(g.params[0].kind == Kind::Int);
  CHECK(g.params[2].kind == Kind::Bool);
  CHECK_FALSE(g.smem_arg);
  // a spec that drifts from its header is named
  rt::KernelSpec bad = ops::smoke_kernel(DType::BF16);
  CHECK(mismatch(bad).empty());
  bad.template_args.push_back("4");
  CHECK(mismatch(bad).find("template arguments") != std::string::npos);
  bad = ops::smoke_kernel(DType::BF16);
  bad.template_args[0] = "64";
  CHECK(mismatch(bad).find("(T) given '64'") != std::string::npos);
  bad = rt::render("mlstm_fwd_gates", "tfla/mlstm_fwd_gates.cuh", "tfla::mlstm_fwd_gates", "tfla::MlstmFwdParams",
                   {{"NT", "256"}, {"CHUNK", "64"}, {"EXP", "true"}, {"G", "float"}}, 256, 0, false);
  CHECK(mismatch(bad).find("parameter 0 is CHUNK, the spec names it 'NT'") != std::string::npos);
  bad = ops::smoke_kernel(DType::BF16);
  bad.params_type = "tfla::FillParams";
  CHECK(mismatch(bad).find("SmokeParams") != std::string::npos);
}

TEST_CASE("every rendered kernel matches its header's template and parameter lists", "[signature]") {
  std::map<std::string, rt::KernelSpec> specs;  // by key
  auto add = [&](const std::vector<rt::KernelSpec>& v) {
    for (const rt::KernelSpec& s : v) specs.emplace(s.key, s);
  };
  add(ops::default_space_kernels(ops::SpaceFilter{}));
  ops::SpaceFilter every;
  every.every_family = true;
  add(ops::default_space_kernels(every));
  add(ops::sm90_kernels());
  const ops::DeviceLimits& dev = ops::DeviceLimits::reference();
  // The tuner's candidates (each enumeration walks its whole space: a few problems only).
  std::vector<MlstmProblem> tuned{problem(200, 256, 512, 0)};
  for (auto [dqk, dv] : std::vector<std::pair<int64_t, int64_t>>{{128, 256}, {256, 512}})
    for (int var = 0; var < 2; ++var) tuned.push_back(problem(4096, dqk, dv, var));
  for (const MlstmProblem& p : tuned)
    for (ops::Op op : {ops::Op::Forward, ops::Op::Backward}) {
      const tuner::Enumerated e = tuner::enumerate(op, p, dev, 8);
      for (const tuner::Candidate& c : e.kept) {
        const ops::Resolved r = ops::resolve(op, p, dev, c.config);
        if (!r.family || !r.family->reject(r.config, p, dev).empty()) continue;
        add(r.family->kernels(p, r.config, dev));
      }
    }
  // defaults that split the state walk (one long sequence: the fix kernel too)
  for (int var = 0; var < 2; ++var) {
    MlstmProblem p = test::make_problem(1, 8, 65536, 256, 512);
    p.variant = var == 0 ? Variant::Exp : Variant::Sig;
    for (ops::Op op : {ops::Op::Forward, ops::Op::Backward}) {
      const ops::Resolved r = ops::resolve(op, p, dev, {});
      add(r.family->kernels(p, r.config, dev));
    }
  }
  INFO(specs.size() << " distinct kernels");
  CHECK(specs.size() > 100);
  // each entry is named after its family (profilers tell the kernels apart by it)
  for (const auto& [key, s] : specs) {
    INFO(key);
    CHECK(s.entry() == "tfla_" + s.family);
    CHECK(s.source().find(" " + s.entry() + "(const __grid_constant__ ") != std::string::npos);
    CHECK(rt::family_of_key(s.key) == s.family);  // what `tfla cache verify` names a stored cubin's entry by
  }
  std::set<std::string> functions;
  for (const auto& [key, spec] : specs) {
    INFO(key);
    CHECK(mismatch(spec) == "");
    functions.insert(spec.function);
  }
  // every kernel family of the library is among them
  for (const char* fn : {"tfla::mlstm_fwd_gates", "tfla::mlstm_fwd_states", "tfla::mlstm_fwd_output",
                         "tfla::mlstm_fwd_output_sm90", "tfla::mlstm_fwd_states_sm90", "tfla::mlstm_fwd_summary_sm90",
                         "tfla::mlstm_bwd_tile",
                         "tfla::mlstm_bwd_parallel", "tfla::mlstm_bwd_tile_sm90", "tfla::mlstm_bwd_dstates",
                         "tfla::mlstm_bwd_gates_local", "tfla::mlstm_bwd_gates_df", "tfla::mlstm_step_fused",
                         "tfla::mlstm_step_nm", "tfla::gemm_sm90", "tfla::sm90_wgmma_probe",
                         "tfla::mlstm_fwd_state_fix", "tfla::mlstm_bwd_dstate_fix"})
    CHECK(functions.count(fn) == 1);
}
