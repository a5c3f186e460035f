// The backend object: configured once, picks the step, parallel or chunkwise kernels per call.
// Nothing here tunes or touches SQLite after the first call of a shape (the forward's config
// lookup is memoized by the ops), so it is safe on the hot path.
#include <string>

#include "ops/bwd_config.hpp"
#include "ops/fwd_config.hpp"
#include "ops/mlstm_forward.hpp"
#include "ops/mlstm_step.hpp"
#include "ops/step_config.hpp"
#include "ops/problem_check.hpp"
#include "runtime/device.hpp"
#include "runtime/driver.hpp"
#include "runtime/log.hpp"
#include "tfla/tfla.hpp"

namespace tfla {

const char* to_string(Mode m) { return m == Mode::Train ? "train" : "inference"; }
const char* to_string(KernelKind k) {
  switch (k) {
    case KernelKind::Chunkwise: return "chunkwise";
    case KernelKind::Parallel: return "parallel";
    case KernelKind::Step: return "step";
  }
  return "?";
}

namespace {

// The pinned forward/backward config without the parallel choice (for calls with states,
// which only the chunkwise kernels carry).
Config chunkwise_only(Config c) {
  if (auto it = c.find("parallel"); it != c.end()) it->second = 0;
  return c;
}

// Checks every option at creation, so that a bad one fails here, by name, and not at the first
// call: the enums, eps and scale (as check_problem judges them, on a shape every kernel takes),
// the pinned configs' names and ranges, and that the ops know every pinned key (the forward's,
// and in train mode the backward's too, since both get options.config).
void check_backend_options(const BackendOptions& o) {
  auto invalid = [](const std::string& msg) { throw Error(ErrorCode::InvalidArgument, "backend options: " + msg); };
  if (o.mode != Mode::Train && o.mode != Mode::Inference)
    invalid("mode " + std::to_string(static_cast<int>(o.mode)) + " is not a Mode (Train, Inference)");
  if (o.max_step_tokens < 0)
    invalid("max_step_tokens must be >= 0 (0 turns the step path off), got " + std::to_string(o.max_step_tokens));
  MlstmProblem p;
  p.B = p.NH = p.S = 1;
  p.Dqk = p.Dv = 64;
  p.dtype = o.dtype;
  p.gate_dtype = o.gate_dtype;
  p.variant = o.variant;
  p.normalize = o.normalize;
  p.eps = o.eps;
  p.scale = o.scale;
  try {
    ops::check_problem(p);
    ops::check_config(o.config, "config");
    ops::check_config(o.step_config, "step_config");
    ops::FwdConfig{}.apply(o.config);
    if (o.mode == Mode::Train) ops::BwdConfig{}.apply(o.config);
    ops::StepConfig{}.apply(o.step_config);
  } catch (const Error& e) {
    throw Error(e.code(), std::string("backend options: ") + e.what(), e.details());
  }
}

}  // namespace

Backend::Backend(BackendOptions options)
    : options_(std::move(options)), chunkwise_config_(chunkwise_only(options_.config)) {
  check_backend_options(options_);
}


MlstmProblem Backend::problem(int64_t B, int64_t NH, int64_t S, int64_t Dqk, int64_t Dv) const {
  MlstmProblem p;
  p.B = B; p.NH = NH; p.S = S; p.Dqk = Dqk; p.Dv = Dv;
  p.dtype = options_.dtype;
  p.gate_dtype = options_.gate_dtype;
  p.variant = options_.variant;
  p.normalize = options_.normalize;
  p.eps = options_.eps;
  p.scale = options_.scale;
  return p;
}

KernelKind Backend::choose(int64_t B, int64_t NH, int64_t S, int64_t Dqk, int64_t Dv,
                           bool initial_states, bool last_states) const {
  const MlstmProblem p = problem(B, NH, S, Dqk, Dv);
  ops::check_problem(p);
  if (options_.mode == Mode::Inference && last_states && S <= options_.max_step_tokens)
    return KernelKind::Step;
  if (initial_states || last_states) return KernelKind::Chunkwise;
  // what mlstm_forward will select for a call without states (memoized lookups, no allocation)
  return ops::select_fwd(p, options_.config, false).cfg.parallel() ? KernelKind::Parallel
                                                                                : KernelKind::Chunkwise;
}

namespace {
// A backend's calls take their configs from BackendOptions (config, step_config): one in the
// call's LaunchOptions would go unused, so it is refused by name.
void check_call_config(const LaunchOptions& o, const char* call) {
  if (!o.config.empty())
    throw Error(ErrorCode::InvalidArgument,
                std::string("Backend::") + call + ": LaunchOptions::config is not used by a Backend, whose kernels' "
                "configs come from BackendOptions::config and BackendOptions::step_config; leave it empty",
                to_string(o.config));
}
}  // namespace

KernelKind Backend::forward(int64_t B, int64_t NH, int64_t S, int64_t Dqk, int64_t Dv,
                            const ForwardTensors& t, const LaunchOptions& o) const {
  check_call_config(o, "forward");
  const MlstmProblem p = problem(B, NH, S, Dqk, Dv);
  const bool initial = t.C0 || t.n0 || t.m0;
  // The step path updates whole states in place and produces no per-token norm or m, and no
  // saved buffer: it runs only when every last state is asked for and none of those are.
  const bool all_last = t.C_last && t.n_last && (t.m_last || p.variant == Variant::Sig);
  const bool per_token_outputs = t.norm || t.m || t.saved;
  const bool last = t.C_last || t.n_last || t.m_last;
  // choose() selects the forward's kernels (which may create the context and open the
  // tuned-config cache) for a call without states only: its tensors are checked first. A call
  // with states (the decode step among them) is checked once, by the path it takes.
  if (!initial && !last) ops::check_forward_io(p, t);
  KernelKind kind = choose(B, NH, S, Dqk, Dv, initial, last);
  // The step kernel also writes C in 16-byte vectors; the forward takes an 8-byte aligned C_last.
  const bool c_last_16 = reinterpret_cast<uintptr_t>(t.C_last) % 16 == 0;
  if (kind == KernelKind::Step && (!all_last || per_token_outputs || !c_last_16)) kind = KernelKind::Chunkwise;

  LaunchOptions lo;
  lo.stream = o.stream;
  lo.workspace = o.workspace;
  lo.workspace_bytes = o.workspace_bytes;
  if (kind != KernelKind::Step) {
    lo.config = (initial || last || t.saved) ? chunkwise_config_ : options_.config;
    mlstm_forward(p, t, lo);
    return kind;
  }

  // Step path: the step kernel reads the initial states where given (zeros are set into the last
  // states where not) and writes the last states. Every argument is checked before any of that
  // is queued, so a refused call leaves the last states as they were.
  ops::check_problem(p);
  ops::check_cu_seqlens(p, t.cu_seqlens, t.cu_seqlens_int64);  // a backend's problem is never packed
  ops::check_optional_f32("C0", t.C0);
  ops::check_optional_f32("n0", t.n0);
  ops::check_optional_f32("m0", t.m0);
  if ((t.n0 || t.m0) && !t.C0)
    throw Error(ErrorCode::InvalidArgument, "n0/m0 given without C0: pass all initial states or none");
  const int64_t c_count = B * NH * Dqk * Dv;
  // The step kernel reads C in 16-byte vectors: a C0 off that alignment is copied into C_last
  // (16-byte aligned: see above), which the step then updates in place.
  const bool copy_c0 = t.C0 && reinterpret_cast<uintptr_t>(t.C0) % 16;
  if (copy_c0) {
    const auto c0 = reinterpret_cast<uintptr_t>(t.C0), cl = reinterpret_cast<uintptr_t>(t.C_last);
    const auto bytes = static_cast<uintptr_t>(c_count) * 4;
    if (c0 < cl + bytes && cl < c0 + bytes)
      throw Error(ErrorCode::InvalidArgument,
                  "C0 overlaps C_last without being the same buffer: C0 is not 16-byte aligned, so the step "
                  "copies it into C_last first, which needs the two apart");
  }
  StepTensors st;
  st.q = t.q; st.k = t.k; st.v = t.v; st.i = t.i; st.f = t.f; st.h = t.h;
  st.q_strides = t.q_strides; st.k_strides = t.k_strides; st.v_strides = t.v_strides;
  st.i_strides = t.i_strides; st.f_strides = t.f_strides; st.h_strides = t.h_strides;
  st.C = t.C_last; st.n = t.n_last; st.m = t.m_last;
  st.C_src = copy_c0 ? nullptr : t.C0; st.n_src = t.n0; st.m_src = t.m0;
  ops::check_config(options_.step_config, "step config");
  const ops::StepSelection& sel = ops::select_step(p, options_.step_config);
  ops::check_step_call(p, st, sel);

  rt::ensure_context();
  CUstream stream = static_cast<CUstream>(o.stream);
  if (copy_c0)
    TFLA_CU(cuMemcpyDtoDAsync(reinterpret_cast<CUdeviceptr>(t.C_last), reinterpret_cast<CUdeviceptr>(t.C0),
                              static_cast<size_t>(c_count) * 4, stream));
  auto zero = [&](float* dst, const float* src, int64_t count) {
    if (dst && !src) TFLA_CU(cuMemsetD32Async(reinterpret_cast<CUdeviceptr>(dst), 0u, static_cast<size_t>(count), stream));
  };
  zero(t.C_last, t.C0, c_count);
  zero(t.n_last, t.n0, B * NH * Dqk);
  if (p.variant == Variant::Exp) zero(t.m_last, t.m0, B * NH);  // mLSTMsig: the kernel writes m = 0
  LaunchOptions so;
  so.stream = o.stream;
  ops::launch_step(p, st, so, sel);
  return kind;
}

void Backend::backward(int64_t B, int64_t NH, int64_t S, int64_t Dqk, int64_t Dv,
                       const BackwardTensors& t, const LaunchOptions& o) const {
  check_call_config(o, "backward");
  if (options_.mode != Mode::Train)
    throw Error(ErrorCode::InvalidArgument, "backward() needs a backend in train mode (this one is in inference mode)");
  const MlstmProblem p = problem(B, NH, S, Dqk, Dv);
  LaunchOptions lo;
  lo.stream = o.stream;
  lo.workspace = o.workspace;
  lo.workspace_bytes = o.workspace_bytes;
  const bool states = t.C0 || t.n0 || t.m0 || t.dC_last || t.dC0 || t.saved;
  lo.config = states ? chunkwise_config_ : options_.config;
  mlstm_backward(p, t, lo);
}

void Backend::step(int64_t B, int64_t NH, int64_t T, int64_t Dqk, int64_t Dv, const StepTensors& t,
                   const LaunchOptions& o) const {
  check_call_config(o, "step");
  LaunchOptions so;
  so.stream = o.stream;
  so.config = options_.step_config;
  mlstm_step(problem(B, NH, T, Dqk, Dv), t, so);
}

}  // namespace tfla
