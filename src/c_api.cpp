// The C ABI over the C++ API: exceptions become a tfla_status plus a per-thread message.
#include <cstdio>
#include <cstring>
#include <string>

#include "tfla/tfla.h"
#include "tfla/tfla.hpp"
#include "tfla_util/config_text.hpp"

namespace {

thread_local std::string g_last_error;

template <class F> tfla_status guarded(F&& f) {
  try {
    g_last_error.clear();
    f();
    return TFLA_OK;
  } catch (const tfla::Error& e) {
    g_last_error = e.what();
    if (!e.details().empty()) g_last_error += "\n" + e.details();
    return static_cast<tfla_status>(static_cast<int>(e.code()));
  } catch (const std::exception& e) {
    g_last_error = std::string("internal error: ") + e.what();
    return TFLA_ERROR_INTERNAL;
  } catch (...) {
    g_last_error = "internal error: unknown exception";
    return TFLA_ERROR_INTERNAL;
  }
}

tfla::DType dtype_of(int d) {
  switch (d) {
    case TFLA_BF16: return tfla::DType::BF16;
    case TFLA_FP16: return tfla::DType::FP16;
    case TFLA_FP32: return tfla::DType::FP32;
  }
  throw tfla::Error(tfla::ErrorCode::InvalidArgument, "unknown dtype " + std::to_string(d));
}

tfla::MlstmProblem problem_of(const tfla_problem* p) {
  if (!p) throw tfla::Error(tfla::ErrorCode::InvalidArgument, "problem is null");
  tfla::MlstmProblem q;
  q.B = p->B; q.NH = p->NH; q.S = p->S; q.Dqk = p->Dqk; q.Dv = p->Dv;
  q.dtype = dtype_of(p->dtype);
  q.gate_dtype = dtype_of(p->gate_dtype);
  if (p->variant != TFLA_VARIANT_EXP && p->variant != TFLA_VARIANT_SIG)
    throw tfla::Error(tfla::ErrorCode::InvalidArgument, "unknown variant " + std::to_string(p->variant));
  q.variant = p->variant == TFLA_VARIANT_EXP ? tfla::Variant::Exp : tfla::Variant::Sig;
  q.normalize = p->normalize != 0;
  q.eps = p->eps;
  q.scale = p->scale;
  q.num_seqs = p->num_seqs;
  q.max_seqlen = p->max_seqlen;
  return q;
}

// NULL and "" are the empty config (the library's choice).
tfla::Config config_of(const char* text) {
  if (!text) return {};
  try {
    return tfla::util::parse_config_text(text);
  } catch (const tfla::util::ConfigTextError& e) {
    throw tfla::Error(tfla::ErrorCode::InvalidArgument, e.what());
  }
}

tfla::Strides strides_of(const tfla_strides& s) { return tfla::Strides{s.b, s.h, s.s}; }

tfla::LaunchOptions launch_options(void* stream, void* workspace, size_t workspace_bytes,
                                   const char* config) {
  tfla::LaunchOptions o;
  o.stream = stream;
  o.workspace = workspace;
  o.workspace_bytes = workspace_bytes;
  o.config = config_of(config);
  return o;
}

// q, k, v, i, f and their strides: the inputs every op's tensor block starts with.
template <class X, class T> void copy_inputs(X& x, const T* t) {
  x.q = t->q; x.k = t->k; x.v = t->v; x.i = t->i; x.f = t->f;
  x.q_strides = strides_of(t->q_strides);
  x.k_strides = strides_of(t->k_strides);
  x.v_strides = strides_of(t->v_strides);
  x.i_strides = strides_of(t->i_strides);
  x.f_strides = strides_of(t->f_strides);
}

tfla::ForwardTensors forward_tensors_of(const tfla_forward_tensors* t) {
  if (!t) throw tfla::Error(tfla::ErrorCode::InvalidArgument, "tensors is null");
  tfla::ForwardTensors x;
  copy_inputs(x, t);
  x.h = t->h;
  x.h_strides = strides_of(t->h_strides);
  x.norm = t->norm; x.m = t->m;
  x.C0 = t->C0; x.n0 = t->n0; x.m0 = t->m0;
  x.C_last = t->C_last; x.n_last = t->n_last; x.m_last = t->m_last;
  x.saved = t->saved; x.saved_bytes = t->saved_bytes;
  x.cu_seqlens = t->cu_seqlens; x.cu_seqlens_int64 = t->cu_seqlens_int64 != 0;
  return x;
}

tfla::BackwardTensors backward_tensors_of(const tfla_backward_tensors* t) {
  if (!t) throw tfla::Error(tfla::ErrorCode::InvalidArgument, "tensors is null");
  tfla::BackwardTensors x;
  copy_inputs(x, t);
  x.dh = t->dh;
  x.dh_strides = strides_of(t->dh_strides);
  x.norm = t->norm; x.C0 = t->C0; x.n0 = t->n0; x.m0 = t->m0; x.dC_last = t->dC_last;
  x.dq = t->dq; x.dk = t->dk; x.dv = t->dv; x.di = t->di; x.df = t->df;
  x.dq_strides = strides_of(t->dq_strides);
  x.dk_strides = strides_of(t->dk_strides);
  x.dv_strides = strides_of(t->dv_strides);
  x.di_strides = strides_of(t->di_strides);
  x.df_strides = strides_of(t->df_strides);
  x.dC0 = t->dC0;
  x.saved = t->saved; x.saved_bytes = t->saved_bytes;
  x.cu_seqlens = t->cu_seqlens; x.cu_seqlens_int64 = t->cu_seqlens_int64 != 0;
  return x;
}

tfla::StepTensors step_tensors_of(const tfla_step_tensors* t) {
  if (!t) throw tfla::Error(tfla::ErrorCode::InvalidArgument, "tensors is null");
  tfla::StepTensors x;
  copy_inputs(x, t);
  x.h = t->h;
  x.h_strides = strides_of(t->h_strides);
  x.C = t->C; x.n = t->n; x.m = t->m;
  x.C_src = t->C_src; x.n_src = t->n_src; x.m_src = t->m_src;
  return x;
}

}  // namespace

extern "C" {

const char* tfla_last_error(void) { return g_last_error.c_str(); }

int tfla_abi_version(void) { return TFLA_ABI_VERSION; }

const char* tfla_version(void) {
  static const std::string v = tfla::version();
  return v.c_str();
}

tfla_status tfla_mlstm_forward_workspace_size(const tfla_problem* problem, const char* config,
                                              size_t* bytes) {
  return guarded([&] {
    if (!bytes) throw tfla::Error(tfla::ErrorCode::InvalidArgument, "bytes is null");
    *bytes = tfla::mlstm_forward_workspace_size(problem_of(problem), config_of(config));
  });
}

tfla_status tfla_mlstm_forward_saved_workspace_size(const tfla_problem* problem, const char* config,
                                                    size_t* bytes) {
  return guarded([&] {
    if (!bytes) throw tfla::Error(tfla::ErrorCode::InvalidArgument, "bytes is null");
    *bytes = tfla::mlstm_forward_workspace_size(problem_of(problem), config_of(config), /*with_saved=*/true);
  });
}

tfla_status tfla_mlstm_forward(const tfla_problem* problem, const tfla_forward_tensors* t,
                               void* stream, void* workspace, size_t workspace_bytes,
                               const char* config) {
  return guarded([&] {
    tfla::mlstm_forward(problem_of(problem), forward_tensors_of(t), launch_options(stream, workspace, workspace_bytes, config));
  });
}

tfla_status tfla_mlstm_backward_workspace_size(const tfla_problem* problem, const char* config,
                                               size_t* bytes) {
  return guarded([&] {
    if (!bytes) throw tfla::Error(tfla::ErrorCode::InvalidArgument, "bytes is null");
    *bytes = tfla::mlstm_backward_workspace_size(problem_of(problem), config_of(config));
  });
}

tfla_status tfla_mlstm_backward_saved_workspace_size(const tfla_problem* problem, const char* config,
                                                     size_t* bytes) {
  return guarded([&] {
    if (!bytes) throw tfla::Error(tfla::ErrorCode::InvalidArgument, "bytes is null");
    *bytes = tfla::mlstm_backward_workspace_size(problem_of(problem), config_of(config), /*with_saved=*/true);
  });
}

tfla_status tfla_mlstm_saved_size(const tfla_problem* problem, const char* config, size_t* bytes) {
  return guarded([&] {
    if (!bytes) throw tfla::Error(tfla::ErrorCode::InvalidArgument, "bytes is null");
    *bytes = tfla::mlstm_saved_size(problem_of(problem), config_of(config));
  });
}

tfla_status tfla_mlstm_backward(const tfla_problem* problem, const tfla_backward_tensors* t,
                                void* stream, void* workspace, size_t workspace_bytes,
                                const char* config) {
  return guarded([&] {
    tfla::mlstm_backward(problem_of(problem), backward_tensors_of(t), launch_options(stream, workspace, workspace_bytes, config));
  });
}

tfla_status tfla_mlstm_step(const tfla_problem* problem, const tfla_step_tensors* t,
                            void* stream, const char* config) {
  return guarded([&] {
    tfla::mlstm_step(problem_of(problem), step_tensors_of(t), launch_options(stream, nullptr, 0, config));
  });
}

tfla_status tfla_mlstm_config(const tfla_problem* problem, const char* op, const char* pinned,
                              char* buf, size_t buf_bytes, size_t* needed) {
  return guarded([&] {
    if (!op) throw tfla::Error(tfla::ErrorCode::InvalidArgument, "op is null");
    const tfla::MlstmProblem p = problem_of(problem);
    const tfla::Config pin = config_of(pinned);
    const std::string o(op);
    tfla::Config c;
    if (o == "fwd") c = tfla::mlstm_forward_config(p, pin);
    else if (o == "bwd") c = tfla::mlstm_backward_config(p, pin);
    else if (o == "step") c = tfla::mlstm_step_config(p, pin);
    else throw tfla::Error(tfla::ErrorCode::InvalidArgument, "unknown op '" + o + "': expected fwd, bwd or step");
    const std::string text = tfla::to_string(c);
    if (needed) *needed = text.size() + 1;
    if (buf && buf_bytes > 0) {
      if (buf_bytes < text.size() + 1)
        throw tfla::Error(tfla::ErrorCode::InvalidArgument,
                          "buffer of " + std::to_string(buf_bytes) + " bytes is too small: the config needs " +
                              std::to_string(text.size() + 1));
      std::memcpy(buf, text.c_str(), text.size() + 1);
    }
  });
}

struct tfla_backend {
  tfla::Backend backend;
};

tfla_status tfla_backend_create(const tfla_backend_options* options, tfla_backend** backend) {
  return guarded([&] {
    if (!options) throw tfla::Error(tfla::ErrorCode::InvalidArgument, "options is null");
    if (!backend) throw tfla::Error(tfla::ErrorCode::InvalidArgument, "backend is null");
    *backend = nullptr;
    tfla::BackendOptions o;
    if (options->mode != TFLA_MODE_TRAIN && options->mode != TFLA_MODE_INFERENCE)
      throw tfla::Error(tfla::ErrorCode::InvalidArgument, "unknown mode " + std::to_string(options->mode));
    o.mode = options->mode == TFLA_MODE_TRAIN ? tfla::Mode::Train : tfla::Mode::Inference;
    if (options->variant != TFLA_VARIANT_EXP && options->variant != TFLA_VARIANT_SIG)
      throw tfla::Error(tfla::ErrorCode::InvalidArgument, "unknown variant " + std::to_string(options->variant));
    o.variant = options->variant == TFLA_VARIANT_EXP ? tfla::Variant::Exp : tfla::Variant::Sig;
    o.normalize = options->normalize != 0;
    o.dtype = dtype_of(options->dtype);
    o.gate_dtype = dtype_of(options->gate_dtype);
    o.eps = options->eps;
    o.scale = options->scale;
    o.config = config_of(options->config);
    o.step_config = config_of(options->step_config);
    if (options->max_step_tokens > 0) o.max_step_tokens = options->max_step_tokens;
    *backend = new tfla_backend{tfla::Backend(std::move(o))};
  });
}

void tfla_backend_destroy(tfla_backend* backend) { delete backend; }

namespace {
const tfla::Backend& backend_of(const tfla_backend* b) {
  if (!b) throw tfla::Error(tfla::ErrorCode::InvalidArgument, "backend is null");
  return b->backend;
}
}  // namespace

tfla_status tfla_backend_choose(const tfla_backend* backend, int64_t B, int64_t NH, int64_t S,
                                int64_t Dqk, int64_t Dv, int initial_states, int last_states,
                                int* kind) {
  return guarded([&] {
    if (!kind) throw tfla::Error(tfla::ErrorCode::InvalidArgument, "kind is null");
    *kind = static_cast<int>(
        backend_of(backend).choose(B, NH, S, Dqk, Dv, initial_states != 0, last_states != 0));
  });
}

tfla_status tfla_backend_forward(const tfla_backend* backend, int64_t B, int64_t NH, int64_t S,
                                 int64_t Dqk, int64_t Dv, const tfla_forward_tensors* t,
                                 void* stream, int* kind) {
  return guarded([&] {
    tfla::LaunchOptions o;
    o.stream = stream;
    const tfla::KernelKind k = backend_of(backend).forward(B, NH, S, Dqk, Dv, forward_tensors_of(t), o);
    if (kind) *kind = static_cast<int>(k);
  });
}

tfla_status tfla_backend_backward(const tfla_backend* backend, int64_t B, int64_t NH, int64_t S,
                                  int64_t Dqk, int64_t Dv, const tfla_backward_tensors* t,
                                  void* stream) {
  return guarded([&] {
    tfla::LaunchOptions o;
    o.stream = stream;
    backend_of(backend).backward(B, NH, S, Dqk, Dv, backward_tensors_of(t), o);
  });
}

tfla_status tfla_backend_step(const tfla_backend* backend, int64_t B, int64_t NH, int64_t T,
                              int64_t Dqk, int64_t Dv, const tfla_step_tensors* t, void* stream) {
  return guarded([&] {
    tfla::LaunchOptions o;
    o.stream = stream;
    backend_of(backend).step(B, NH, T, Dqk, Dv, step_tensors_of(t), o);
  });
}

}  // extern "C"

namespace {

void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char u[8];
          std::snprintf(u, sizeof u, "\\u%04x", c);
          out += u;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

// runtime_info() as one JSON object (the keys of `tfla info --json`'s library part).
std::string runtime_info_json(const tfla::RuntimeInfo& info) {
  std::string j = "{";
  auto key = [&](const char* k) {
    if (j.size() > 1 && j.back() != '{') j += ',';
    json_string(j, k);
    j += ':';
  };
  auto str = [&](const char* k, const std::string& v) { key(k); json_string(j, v); };
  auto num = [&](const char* k, long long v) { key(k); j += std::to_string(v); };
  str("tfla_version", info.tfla_version);
  num("abi_version", TFLA_ABI_VERSION);
  key("nvrtc_loaded");
  j += info.nvrtc_error.empty() ? "true" : "false";
  str("nvrtc_version", std::to_string(info.nvrtc_major) + "." + std::to_string(info.nvrtc_minor));
  str("nvrtc_path", info.nvrtc_path);
  str("nvrtc_found_by", info.nvrtc_found_by);
  str("nvrtc_builtins_path", info.nvrtc_builtins_path);
  str("nvrtc_error", info.nvrtc_error);
  key("driver_loaded");
  j += info.driver_loaded ? "true" : "false";
  num("driver_version", info.driver_version);
  str("driver_error", info.driver_error);
  key("devices");
  j += '[';
  for (size_t i = 0; i < info.devices.size(); ++i) {
    const tfla::DeviceInfo& d = info.devices[i];
    if (i) j += ',';
    j += '{';
    num("ordinal", d.ordinal);
    str("name", d.name);
    str("compute_capability", std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor));
    str("arch", d.arch);
    num("sm_count", d.sm_count);
    num("l2_bytes", d.l2_bytes);
    num("smem_optin_bytes", d.smem_optin_bytes);
    num("total_memory_bytes", d.total_memory_bytes);
    j += '}';
  }
  j += "]}";
  return j;
}

}  // namespace

extern "C" {

tfla_status tfla_runtime_info(char* buf, size_t buf_bytes, size_t* needed) {
  return guarded([&] {
    const std::string text = runtime_info_json(tfla::runtime_info());
    if (needed) *needed = text.size() + 1;
    if (buf && buf_bytes > 0) {
      if (buf_bytes < text.size() + 1)
        throw tfla::Error(tfla::ErrorCode::InvalidArgument,
                          "buffer of " + std::to_string(buf_bytes) +
                              " bytes is too small: the runtime info needs " +
                              std::to_string(text.size() + 1));
      std::memcpy(buf, text.c_str(), text.size() + 1);
    }
  });
}

}  // extern "C"
