// libtfla_jax: the mLSTM forward, backward and step as XLA FFI handlers (the typed FFI API whose
// headers jaxlib ships), for tfla.jax (tools/python/tfla/jax.py). Each handler takes XLA's CUDA
// stream and device buffers and makes one call of libtfla's C ABI. The library's workspace is
// the call's last result, a uint8 buffer that tfla.jax sizes when it traces the call (the
// workspace size queries) and drops after it: XLA allocates it like any temporary. Layout:
// JAX's row-major (B, NH, S, D) arrays, gates (B, NH, S), fp32 states (B, NH, Dqk, Dv),
// (B, NH, Dqk), (B, NH, 1).
//
// Handlers (their Python targets: tfla_mlstm_forward, tfla_mlstm_backward, tfla_mlstm_step):
//   forward  args q, k, v, i, f [, C0, n0, m0 when has_initial]
//            rets h, norm, m [, C_last, n_last, m_last when want_last] [, saved when keep],
//                 workspace; norm and m (B, NH, S), or (0,) where no backward reads them
//                 (the library then writes neither)
//   backward args q, k, v, i, f, norm, dh [, C0, n0, m0 when has_initial] [, dC_last when
//            has_dc_last] [, saved when has_saved]
//            rets dq, dk, dv, di, df [, dC0 when has_initial], workspace
//   step     args q, k, v, i, f (T tokens), C, n, m
//            rets h, C, n, m (new states)
// Attributes: variant (0 exp, 1 sig), normalize, eps, scale (0 = 1/sqrt(Dqk)), config
// ("key=value,..." or ""), the flags above (int64, 0 or 1) and, for the forward and backward,
// layout: kBHSD (q, k, v, h and their gradients (B, NH, S, D), gates (B, NH, S)) or kBSHD
// ((B, S, NH, D) and (B, S, NH), JAX's attention layout, read and written in place through
// strides). norm, m and the states are (B, NH, ...) either way.
#include "tfla_jax.hpp"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "tfla/tfla.h"

namespace ffi = xla::ffi;

namespace {

ffi::Error invalid(const std::string& what) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, "tfla: " + what);
}

// The status of a libtfla call as an FFI error carrying the library's message.
ffi::Error from_status(tfla_status st, const char* call) {
  if (st == TFLA_OK) return ffi::Error::Success();
  const ffi::ErrorCode code = st == TFLA_ERROR_INVALID_ARGUMENT || st == TFLA_ERROR_UNSUPPORTED
                                  ? ffi::ErrorCode::kInvalidArgument
                                  : ffi::ErrorCode::kInternal;
  return ffi::Error(code, std::string("tfla: ") + call + ": " + tfla_last_error());
}

// tfla_dtype of an XLA element type, or -1.
int dtype_code(ffi::DataType t) {
  switch (t) {
    case ffi::DataType::BF16: return TFLA_BF16;
    case ffi::DataType::F16: return TFLA_FP16;
    case ffi::DataType::F32: return TFLA_FP32;
    default: return -1;
  }
}

const char* config_or_null(std::string_view config, std::string& holder) {
  if (config.empty()) return nullptr;
  holder.assign(config.data(), config.size());
  return holder.c_str();
}

// A buffer's dimensions, as text for messages.
std::string dims_text(const ffi::AnyBuffer& b) {
  std::string s = "(";
  const auto d = b.dimensions();
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + ")";
}

const char* type_name(ffi::DataType t) {
  switch (t) {
    case ffi::DataType::BF16: return "bfloat16";
    case ffi::DataType::F16: return "float16";
    case ffi::DataType::F32: return "float32";
    case ffi::DataType::U8: return "uint8";
    default: return "another element type";
  }
}

// Up to four dimensions (a buffer's expected shape).
struct Dims {
  int64_t d[4] = {0, 0, 0, 0};
  size_t n = 0;
  Dims() = default;
  Dims(std::initializer_list<int64_t> l) {
    for (int64_t x : l) d[n++] = x;
  }
  const int64_t* begin() const { return d; }
  const int64_t* end() const { return d + n; }
};

// A (B, NH, S, D) tensor's and a (B, NH, S) gate's dimensions in the layout.
Dims seq_dims(int64_t layout, int64_t B, int64_t NH, int64_t S, int64_t D) {
  return layout == tfla::jax_ffi::kBSHD ? Dims{B, S, NH, D} : Dims{B, NH, S, D};
}
Dims gate_dims(int64_t layout, int64_t B, int64_t NH, int64_t S) {
  return layout == tfla::jax_ffi::kBSHD ? Dims{B, S, NH} : Dims{B, NH, S};
}

// Whether b has element type t and dimensions want (or, where alt is not empty, alt); else an
// error naming the buffer.
ffi::Error check_buffer(const ffi::AnyBuffer& b, const char* name, ffi::DataType t, Dims want,
                        Dims alt = Dims()) {
  const auto d = b.dimensions();
  auto same = [&](const Dims& w) {
    return w.n == d.size() && std::equal(w.begin(), w.end(), d.begin());
  };
  if (b.element_type() != t || !(same(want) || (alt.n && same(alt)))) {
    std::string w = "(";
    for (int64_t x : want) w += (w.size() > 1 ? ", " : "") + std::to_string(x);
    return invalid(std::string(name) + " is " + dims_text(b) + " " + type_name(b.element_type()) +
                   "; expected " + w + ") " + type_name(t));
  }
  return ffi::Error::Success();
}
// A uint8 buffer (the saved states, the workspace).
ffi::Error check_bytes(const ffi::AnyBuffer& b, const char* name) {
  if (b.element_type() != ffi::DataType::U8 || b.dimensions().size() != 1)
    return invalid(std::string(name) + " must be a 1-D uint8 buffer; got " + dims_text(b));
  return ffi::Error::Success();
}

// Checks q, k, v, i, f and fills the problem: ranks, matching dims, dtypes. The library checks
// the rest (head dimensions, alignment) and reports it through from_status.
ffi::Error make_problem(const ffi::AnyBuffer& q, const ffi::AnyBuffer& k, const ffi::AnyBuffer& v,
                        const ffi::AnyBuffer& i, const ffi::AnyBuffer& f, int64_t layout,
                        int64_t variant, int64_t normalize, float eps, float scale,
                        tfla_problem* p) {
  if (layout != tfla::jax_ffi::kBHSD && layout != tfla::jax_ffi::kBSHD)
    return invalid("layout must be 0 (B, NH, S, D) or 1 (B, S, NH, D); got " +
                   std::to_string(layout));
  const bool bshd = layout == tfla::jax_ffi::kBSHD;
  const char* seq = bshd ? "(B, S, NH, D)" : "(B, NH, S, D)";
  const char* gate = bshd ? "(B, S, NH)" : "(B, NH, S)";
  if (q.dimensions().size() != 4 || k.dimensions().size() != 4 || v.dimensions().size() != 4)
    return invalid(std::string("q, k, v must be 4-D ") + seq + "; got q " + dims_text(q) + ", k " +
                   dims_text(k) + ", v " + dims_text(v));
  if (i.dimensions().size() != 3 || f.dimensions().size() != 3)
    return invalid(std::string("the gates i, f must be 3-D ") + gate + "; got i " + dims_text(i) +
                   ", f " + dims_text(f));
  const auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  for (int a = 0; a < 4; ++a)
    if (kd[a] != qd[a])
      return invalid("k " + dims_text(k) + " must have q's shape " + dims_text(q));
  for (int a = 0; a < 3; ++a)
    if (vd[a] != qd[a] || i.dimensions()[a] != qd[a] || f.dimensions()[a] != qd[a])
      return invalid(std::string("v, i, f must share q's ") + gate + "; got q " + dims_text(q) +
                     ", v " + dims_text(v) + ", i " + dims_text(i) + ", f " + dims_text(f));
  const int dt = dtype_code(q.element_type()), gt = dtype_code(i.element_type());
  if (dt < 0 || k.element_type() != q.element_type() || v.element_type() != q.element_type())
    return invalid("q, k, v must share one dtype of bfloat16, float16 or float32");
  if (gt < 0 || f.element_type() != i.element_type() || (gt != TFLA_FP32 && gt != dt))
    return invalid("the gates i, f must share one dtype: float32 or the inputs' dtype");
  *p = tfla_problem{};
  p->B = qd[0];
  p->NH = qd[bshd ? 2 : 1];
  p->S = qd[bshd ? 1 : 2];
  p->Dqk = qd[3];
  p->Dv = vd[3];
  p->dtype = dt;
  p->gate_dtype = gt;
  p->variant = static_cast<int>(variant);
  p->normalize = static_cast<int>(normalize);
  p->eps = eps;
  p->scale = scale;
  return ffi::Error::Success();
}

template <class T>
ffi::ErrorOr<T> arg(const ffi::RemainingArgs& rest, size_t idx, const char* name) {
  ffi::ErrorOr<T> a = rest.get<T>(idx);
  if (a.has_error()) return ffi::Unexpected(invalid(std::string("missing argument ") + name));
  return a;
}
ffi::ErrorOr<ffi::Result<ffi::AnyBuffer>> ret(const ffi::RemainingRets& rest, size_t idx,
                                              const char* name) {
  ffi::ErrorOr<ffi::Result<ffi::AnyBuffer>> r = rest.get<ffi::AnyBuffer>(idx);
  if (r.has_error()) return ffi::Unexpected(invalid(std::string("missing result ") + name));
  return r;
}

// A uint8 argument or result (the saved states, the workspace), present and checked.
ffi::ErrorOr<ffi::AnyBuffer> bytes_arg(const ffi::RemainingArgs& rest, size_t idx,
                                       const char* name) {
  ffi::ErrorOr<ffi::AnyBuffer> b = arg<ffi::AnyBuffer>(rest, idx, name);
  if (b.has_error()) return b;
  if (ffi::Error e = check_bytes(*b, name); e.failure()) return ffi::Unexpected(std::move(e));
  return b;
}
ffi::ErrorOr<ffi::AnyBuffer> bytes_ret(const ffi::RemainingRets& rest, size_t idx,
                                       const char* name) {
  auto r = ret(rest, idx, name);
  if (r.has_error()) return ffi::Unexpected(std::move(r.error()));
  if (ffi::Error e = check_bytes(**r, name); e.failure()) return ffi::Unexpected(std::move(e));
  return **r;
}

// Calls the library op `call` (tfla_mlstm_forward or tfla_mlstm_backward) with the workspace, the
// uint8 result at index r of `rest`, and the config; its status as the handler's error.
template <class Tensors>
ffi::Error with_workspace(tfla_status (*call)(const tfla_problem*, const Tensors*, void*, void*, size_t,
                                              const char*),
                          const tfla_problem& p, const Tensors& t, void* stream, const ffi::RemainingRets& rest,
                          size_t r, std::string_view config, const char* what) {
  auto ws = bytes_ret(rest, r, "workspace");
  if (ws.has_error()) return ws.error();
  std::string holder;
  return from_status(call(&p, &t, stream, ws->untyped_data(), ws->size_bytes(), config_or_null(config, holder)),
                     what);
}

// q, k, v, i, f into the C ABI's tensors struct (forward, backward or step), with their strides
// in the layout.
template <class Tensors>
void set_inputs(Tensors& t, const tfla_problem& p, int64_t layout, const ffi::AnyBuffer& q,
                const ffi::AnyBuffer& k, const ffi::AnyBuffer& v, const ffi::AnyBuffer& i,
                const ffi::AnyBuffer& f) {
  using tfla::jax_ffi::gate_strides;
  using tfla::jax_ffi::seq_strides;
  t.q = q.untyped_data();
  t.k = k.untyped_data();
  t.v = v.untyped_data();
  t.i = i.untyped_data();
  t.f = f.untyped_data();
  t.q_strides = t.k_strides = seq_strides(layout, p.NH, p.S, p.Dqk);
  t.v_strides = seq_strides(layout, p.NH, p.S, p.Dv);
  t.i_strides = t.f_strides = gate_strides(layout, p.NH, p.S);
}

// fp32 pointer of an optional state buffer
float* f32(const ffi::AnyBuffer& b) { return static_cast<float*>(b.untyped_data()); }

}  // namespace

namespace tfla::jax_ffi {

tfla_strides seq_strides(int64_t layout, int64_t NH, int64_t S, int64_t D) {
  if (layout != kBSHD) return tfla_strides{0, 0, 0};  // contiguous (B, NH, S, D)
  return tfla_strides{S * NH * D, D, NH * D};
}
tfla_strides gate_strides(int64_t layout, int64_t NH, int64_t S) {
  if (layout != kBSHD) return tfla_strides{0, 0, 0};
  return tfla_strides{S * NH, 1, NH};
}

ffi::Error Forward(void* stream, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                   ffi::AnyBuffer i, ffi::AnyBuffer f, ffi::RemainingArgs states,
                   ffi::Result<ffi::AnyBuffer> h, ffi::Result<ffi::AnyBuffer> norm,
                   ffi::Result<ffi::AnyBuffer> m, ffi::RemainingRets more, int64_t variant,
                   int64_t normalize, float eps, float scale, std::string_view config,
                   int64_t has_initial, int64_t want_last, int64_t keep, int64_t layout) {
  tfla_problem p;
  if (ffi::Error e = make_problem(q, k, v, i, f, layout, variant, normalize, eps, scale, &p);
      e.failure())
    return e;
  const int64_t B = p.B, NH = p.NH, S = p.S, Dqk = p.Dqk, Dv = p.Dv;
  const auto F32 = ffi::DataType::F32;
  for (ffi::Error e :
       {check_buffer(*h, "h", q.element_type(), seq_dims(layout, B, NH, S, Dv)),
        check_buffer(*norm, "norm", F32, {B, NH, S}, {0}), check_buffer(*m, "m", F32, {B, NH, S}, {0})})
    if (e.failure()) return e;
  tfla_forward_tensors t{};
  set_inputs(t, p, layout, q, k, v, i, f);
  t.h = h->untyped_data();
  t.h_strides = t.v_strides;
  t.norm = norm->size_bytes() ? f32(*norm) : nullptr;  // (0,): not wanted (no backward follows)
  t.m = m->size_bytes() ? f32(*m) : nullptr;
  if (has_initial) {
    auto C0 = arg<ffi::AnyBuffer>(states, 0, "C0"), n0 = arg<ffi::AnyBuffer>(states, 1, "n0"),
         m0 = arg<ffi::AnyBuffer>(states, 2, "m0");
    if (C0.has_error()) return C0.error();
    if (n0.has_error()) return n0.error();
    if (m0.has_error()) return m0.error();
    for (ffi::Error e : {check_buffer(*C0, "C0", F32, {B, NH, Dqk, Dv}),
                         check_buffer(*n0, "n0", F32, {B, NH, Dqk}),
                         check_buffer(*m0, "m0", F32, {B, NH, 1}, {B, NH})})
      if (e.failure()) return e;
    t.C0 = f32(*C0);
    t.n0 = f32(*n0);
    t.m0 = f32(*m0);
  }
  size_t r = 0;
  if (want_last) {
    auto Cl = ret(more, r, "C_last"), nl = ret(more, r + 1, "n_last"),
         ml = ret(more, r + 2, "m_last");
    if (Cl.has_error()) return Cl.error();
    if (nl.has_error()) return nl.error();
    if (ml.has_error()) return ml.error();
    for (ffi::Error e : {check_buffer(**Cl, "C_last", F32, {B, NH, Dqk, Dv}),
                         check_buffer(**nl, "n_last", F32, {B, NH, Dqk}),
                         check_buffer(**ml, "m_last", F32, {B, NH, 1}, {B, NH})})
      if (e.failure()) return e;
    t.C_last = f32(**Cl);
    t.n_last = f32(**nl);
    t.m_last = f32(**ml);
    r += 3;
  }
  if (keep) {
    auto saved = bytes_ret(more, r++, "saved");
    if (saved.has_error()) return saved.error();
    t.saved = saved->untyped_data();
    t.saved_bytes = saved->size_bytes();
  }
  return with_workspace(tfla_mlstm_forward, p, t, stream, more, r, config, "forward");
}

ffi::Error Backward(void* stream, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                    ffi::AnyBuffer i, ffi::AnyBuffer f, ffi::AnyBuffer norm, ffi::AnyBuffer dh,
                    ffi::RemainingArgs rest, ffi::Result<ffi::AnyBuffer> dq,
                    ffi::Result<ffi::AnyBuffer> dk, ffi::Result<ffi::AnyBuffer> dv,
                    ffi::Result<ffi::AnyBuffer> di, ffi::Result<ffi::AnyBuffer> df,
                    ffi::RemainingRets more, int64_t variant, int64_t normalize, float eps,
                    float scale, std::string_view config, int64_t has_initial, int64_t has_dc_last,
                    int64_t has_saved, int64_t layout) {
  tfla_problem p;
  if (ffi::Error e = make_problem(q, k, v, i, f, layout, variant, normalize, eps, scale, &p);
      e.failure())
    return e;
  const int64_t B = p.B, NH = p.NH, S = p.S, Dqk = p.Dqk, Dv = p.Dv;
  const auto F32 = ffi::DataType::F32;
  const ffi::DataType T = q.element_type(), G = i.element_type();
  for (ffi::Error e : {check_buffer(norm, "norm", F32, {B, NH, S}),
                       check_buffer(dh, "dh", T, seq_dims(layout, B, NH, S, Dv)),
                       check_buffer(*dq, "dq", T, seq_dims(layout, B, NH, S, Dqk)),
                       check_buffer(*dk, "dk", T, seq_dims(layout, B, NH, S, Dqk)),
                       check_buffer(*dv, "dv", T, seq_dims(layout, B, NH, S, Dv)),
                       check_buffer(*di, "di", G, gate_dims(layout, B, NH, S)),
                       check_buffer(*df, "df", G, gate_dims(layout, B, NH, S))})
    if (e.failure()) return e;
  tfla_backward_tensors t{};
  set_inputs(t, p, layout, q, k, v, i, f);
  t.norm = f32(norm);
  t.dh = dh.untyped_data();
  t.dq = dq->untyped_data();
  t.dk = dk->untyped_data();
  t.dv = dv->untyped_data();
  t.di = di->untyped_data();
  t.df = df->untyped_data();
  t.dh_strides = t.dv_strides = t.v_strides;
  t.dq_strides = t.dk_strides = t.q_strides;
  t.di_strides = t.df_strides = t.i_strides;
  size_t a = 0, r = 0;
  if (has_initial) {
    auto C0 = arg<ffi::AnyBuffer>(rest, 0, "C0"), n0 = arg<ffi::AnyBuffer>(rest, 1, "n0"),
         m0 = arg<ffi::AnyBuffer>(rest, 2, "m0");
    auto dC0 = ret(more, r++, "dC0");
    if (C0.has_error()) return C0.error();
    if (n0.has_error()) return n0.error();
    if (m0.has_error()) return m0.error();
    if (dC0.has_error()) return dC0.error();
    for (ffi::Error e : {check_buffer(*C0, "C0", F32, {B, NH, Dqk, Dv}),
                         check_buffer(*n0, "n0", F32, {B, NH, Dqk}),
                         check_buffer(*m0, "m0", F32, {B, NH, 1}, {B, NH}),
                         check_buffer(**dC0, "dC0", F32, {B, NH, Dqk, Dv})})
      if (e.failure()) return e;
    t.C0 = f32(*C0);
    t.n0 = f32(*n0);
    t.m0 = f32(*m0);
    t.dC0 = f32(**dC0);
    a = 3;
  }
  if (has_dc_last) {
    auto dCl = arg<ffi::AnyBuffer>(rest, a++, "dC_last");
    if (dCl.has_error()) return dCl.error();
    if (ffi::Error e = check_buffer(*dCl, "dC_last", F32, {B, NH, Dqk, Dv}); e.failure()) return e;
    t.dC_last = f32(*dCl);
  }
  if (has_saved) {
    auto saved = bytes_arg(rest, a++, "saved");
    if (saved.has_error()) return saved.error();
    t.saved = saved->untyped_data();
    t.saved_bytes = saved->size_bytes();
  }
  return with_workspace(tfla_mlstm_backward, p, t, stream, more, r, config, "backward");
}

ffi::Error Step(void* stream, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                ffi::AnyBuffer i, ffi::AnyBuffer f, ffi::AnyBuffer C, ffi::AnyBuffer n,
                ffi::AnyBuffer m, ffi::Result<ffi::AnyBuffer> h, ffi::Result<ffi::AnyBuffer> C_new,
                ffi::Result<ffi::AnyBuffer> n_new, ffi::Result<ffi::AnyBuffer> m_new,
                int64_t variant, int64_t normalize, float eps, float scale,
                std::string_view config) {
  tfla_problem p;
  if (ffi::Error e =
          make_problem(q, k, v, i, f, tfla::jax_ffi::kBHSD, variant, normalize, eps, scale, &p);
      e.failure())
    return e;
  const int64_t B = p.B, NH = p.NH, T = p.S, Dqk = p.Dqk, Dv = p.Dv;
  const auto F32 = ffi::DataType::F32;
  for (ffi::Error e :
       {check_buffer(C, "C", F32, {B, NH, Dqk, Dv}), check_buffer(n, "n", F32, {B, NH, Dqk}),
        check_buffer(m, "m", F32, {B, NH, 1}, {B, NH}),
        check_buffer(*h, "h", q.element_type(), {B, NH, T, Dv}),
        check_buffer(*C_new, "C (new)", F32, {B, NH, Dqk, Dv}),
        check_buffer(*n_new, "n (new)", F32, {B, NH, Dqk}),
        check_buffer(*m_new, "m (new)", F32, {B, NH, 1}, {B, NH})})
    if (e.failure()) return e;
  tfla_step_tensors t{};
  set_inputs(t, p, tfla::jax_ffi::kBHSD, q, k, v, i, f);
  t.h = h->untyped_data();
  t.C = f32(*C_new);
  t.n = f32(*n_new);
  t.m = f32(*m_new);
  // XLA may give a result the buffer of its operand (input_output_aliases): in place then
  t.C_src = f32(C) == t.C ? nullptr : f32(C);
  t.n_src = f32(n) == t.n ? nullptr : f32(n);
  t.m_src = f32(m) == t.m ? nullptr : f32(m);
  std::string cfg_holder;
  return from_status(tfla_mlstm_step(&p, &t, stream, config_or_null(config, cfg_holder)), "step");
}

}  // namespace tfla::jax_ffi

namespace {
// XLA's stream and q, k, v, i, f: what every handler takes first.
auto stream_and_inputs() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::PlatformStream<void*>>()
      .Arg<ffi::AnyBuffer>()   // q
      .Arg<ffi::AnyBuffer>()   // k
      .Arg<ffi::AnyBuffer>()   // v
      .Arg<ffi::AnyBuffer>()   // i
      .Arg<ffi::AnyBuffer>();  // f
}
// The attributes every handler takes after its buffers: the problem's options and the config.
template <class Binding> auto with_options(Binding b) {
  return std::move(b)
      .template Attr<int64_t>("variant")
      .template Attr<int64_t>("normalize")
      .template Attr<float>("eps")
      .template Attr<float>("scale")
      .template Attr<std::string_view>("config");
}
}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    tfla_jax_forward, tfla::jax_ffi::Forward,
    with_options(stream_and_inputs()
                     .RemainingArgs()        // C0, n0, m0
                     .Ret<ffi::AnyBuffer>()  // h
                     .Ret<ffi::AnyBuffer>()  // norm
                     .Ret<ffi::AnyBuffer>()  // m
                     .RemainingRets())       // C_last, n_last, m_last; saved; workspace
        .Attr<int64_t>("has_initial")
        .Attr<int64_t>("want_last")
        .Attr<int64_t>("keep")
        .Attr<int64_t>("layout"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(tfla_jax_backward, tfla::jax_ffi::Backward,
                              with_options(stream_and_inputs()
                                               .Arg<ffi::AnyBuffer>()  // norm
                                               .Arg<ffi::AnyBuffer>()  // dh
                                               .RemainingArgs()        // C0, n0, m0; dC_last; saved
                                               .Ret<ffi::AnyBuffer>()  // dq
                                               .Ret<ffi::AnyBuffer>()  // dk
                                               .Ret<ffi::AnyBuffer>()  // dv
                                               .Ret<ffi::AnyBuffer>()  // di
                                               .Ret<ffi::AnyBuffer>()  // df
                                               .RemainingRets())       // dC0; workspace
                                  .Attr<int64_t>("has_initial")
                                  .Attr<int64_t>("has_dc_last")
                                  .Attr<int64_t>("has_saved")
                                  .Attr<int64_t>("layout"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(tfla_jax_step, tfla::jax_ffi::Step,
                              with_options(stream_and_inputs()
                                               .Arg<ffi::AnyBuffer>()     // C
                                               .Arg<ffi::AnyBuffer>()     // n
                                               .Arg<ffi::AnyBuffer>()     // m
                                               .Ret<ffi::AnyBuffer>()     // h
                                               .Ret<ffi::AnyBuffer>()     // C new
                                               .Ret<ffi::AnyBuffer>()     // n new
                                               .Ret<ffi::AnyBuffer>()));  // m new

// The C ABI version this library was built against (tfla.jax refuses a mismatch).
extern "C" __attribute__((visibility("default"))) int tfla_jax_abi_version(void) {
  return TFLA_ABI_VERSION;
}
