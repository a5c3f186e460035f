// libtfla_jax's handlers called directly with hand-made XLA FFI buffers (no XLA, no GPU): every
// malformed call is refused before the library is reached, with a message naming the buffer.
// Built where libtfla_jax is (jaxlib's FFI headers found; CI: tools/check_jax.sh).
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "tfla/tfla.h"
#include "tfla_catch.hpp"
#include "tfla_jax.hpp"

namespace {

namespace ffi = xla::ffi;

size_t elem_bytes(XLA_FFI_DataType t) {
  switch (t) {
    case XLA_FFI_DataType_F32: return 4;
    case XLA_FFI_DataType_U8: return 1;
    default: return 2;
  }
}

// A host buffer as XLA describes a device buffer to a handler.
struct Buf {
  std::vector<int64_t> dims;
  std::vector<char> data;
  XLA_FFI_Buffer b{};
  Buf(std::vector<int64_t> d, XLA_FFI_DataType t) : dims(std::move(d)) {
    size_t n = elem_bytes(t);
    for (int64_t x : dims) n *= static_cast<size_t>(x);
    data.assign(n + 256, 0);
    // 256-byte aligned, as XLA's device buffers are
    char* p = data.data() + (256 - reinterpret_cast<uintptr_t>(data.data()) % 256) % 256;
    b = XLA_FFI_Buffer{XLA_FFI_Buffer_STRUCT_SIZE,        nullptr,    t, p,
                       static_cast<int64_t>(dims.size()), dims.data()};
  }
  ffi::AnyBuffer any() const { return ffi::AnyBuffer(&b); }
  ffi::Result<ffi::AnyBuffer> res() const { return ffi::Result<ffi::AnyBuffer>(any()); }
};
using BufPtr = std::unique_ptr<Buf>;
BufPtr buf(std::vector<int64_t> d, XLA_FFI_DataType t) {
  return std::make_unique<Buf>(std::move(d), t);
}

// Variadic arguments or results (the handlers' RemainingArgs / RemainingRets).
struct Rest {
  std::vector<void*> ptrs;
  std::vector<XLA_FFI_ArgType> arg_types;
  std::vector<XLA_FFI_RetType> ret_types;
  XLA_FFI_Args args{};
  XLA_FFI_Rets rets{};
  explicit Rest(const std::vector<const Buf*>& bufs) {
    for (const Buf* x : bufs) {
      ptrs.push_back(const_cast<XLA_FFI_Buffer*>(&x->b));
      arg_types.push_back(XLA_FFI_ArgType_BUFFER);
      ret_types.push_back(XLA_FFI_RetType_BUFFER);
    }
    const auto n = static_cast<int64_t>(ptrs.size());
    args = XLA_FFI_Args{XLA_FFI_Args_STRUCT_SIZE, nullptr, n, arg_types.data(), ptrs.data()};
    rets = XLA_FFI_Rets{XLA_FFI_Rets_STRUCT_SIZE, nullptr, n, ret_types.data(), ptrs.data()};
  }
  ffi::RemainingArgs as_args() const { return ffi::RemainingArgs(&args, 0); }
  ffi::RemainingRets as_rets() const { return ffi::RemainingRets(&rets, 0); }
};

constexpr auto BF = XLA_FFI_DataType_BF16, F16 = XLA_FFI_DataType_F16, F32 = XLA_FFI_DataType_F32,
               U8 = XLA_FFI_DataType_U8;
constexpr int64_t B = 1, NH = 2, S = 8, DQK = 64, DV = 128;

// A well-formed forward; each test breaks one thing.
struct Fwd {
  BufPtr q = buf({B, NH, S, DQK}, BF), k = buf({B, NH, S, DQK}, BF), v = buf({B, NH, S, DV}, BF);
  BufPtr i = buf({B, NH, S}, F32), f = buf({B, NH, S}, F32);
  BufPtr h = buf({B, NH, S, DV}, BF), norm = buf({B, NH, S}, F32), m = buf({B, NH, S}, F32);
  BufPtr C0 = buf({B, NH, DQK, DV}, F32), n0 = buf({B, NH, DQK}, F32), m0 = buf({B, NH, 1}, F32);
  BufPtr Cl = buf({B, NH, DQK, DV}, F32), nl = buf({B, NH, DQK}, F32), ml = buf({B, NH, 1}, F32);
  BufPtr saved = buf({4096}, U8), ws = buf({256}, U8);
  std::vector<const Buf*> states{C0.get(), n0.get(), m0.get()};
  std::vector<const Buf*> more{Cl.get(), nl.get(), ml.get(), saved.get(), ws.get()};
  int64_t has_initial = 1, want_last = 1, keep = 1, layout = tfla::jax_ffi::kBHSD;

  std::string run() const {
    const Rest st(states), mr(more);
    const ffi::Error e =
        tfla::jax_ffi::Forward(nullptr, q->any(), k->any(), v->any(), i->any(), f->any(),
                               st.as_args(), h->res(), norm->res(), m->res(), mr.as_rets(), 0, 1,
                               1e-6f, 0.f, "", has_initial, want_last, keep, layout);
    return e.failure() ? e.message() : std::string();
  }
};

// Whether libtfla has a CUDA driver here (then host buffers must not reach it).
bool driver_loaded() {
  char info[4096];
  size_t needed = 0;
  if (tfla_runtime_info(info, sizeof(info), &needed) != TFLA_OK) return true;
  const std::string s(info);
  return s.find("\"driver_loaded\":true") != std::string::npos ||
         s.find("\"driver_loaded\": true") != std::string::npos;
}

}  // namespace

TEST_CASE("the forward handler refuses malformed buffers by name", "[jax]") {
  SECTION("h of the wrong shape") {
    Fwd c;
    c.h = buf({B, NH, S, 64}, BF);
    CHECK_THAT(c.run(),
               Catch::Contains("h is (1, 2, 8, 64) bfloat16; expected (1, 2, 8, 128) bfloat16"));
  }
  SECTION("norm empty but of another shape, m (0,) of the wrong dtype") {
    Fwd c;
    c.norm = buf({0, 1}, F32);
    CHECK_THAT(c.run(), Catch::Contains("norm is (0, 1) float32; expected (1, 2, 8) float32"));
    c.norm = buf({0}, F32);
    c.m = buf({0}, BF);
    CHECK_THAT(c.run(), Catch::Contains("m is (0) bfloat16"));
  }
  SECTION("norm of the wrong dtype") {
    Fwd c;
    c.norm = buf({B, NH, S}, BF);
    CHECK_THAT(c.run(), Catch::Contains("norm is (1, 2, 8) bfloat16; expected (1, 2, 8) float32"));
  }
  SECTION("q not 4-D") {
    Fwd c;
    c.q = buf({NH, S, DQK}, BF);
    CHECK_THAT(c.run(), Catch::Contains("q, k, v must be 4-D"));
  }
  SECTION("k and q disagree") {
    Fwd c;
    c.k = buf({B, NH, S, 128}, BF);
    CHECK_THAT(c.run(), Catch::Contains("must have q's shape"));
  }
  SECTION("v of another dtype") {
    Fwd c;
    c.v = buf({B, NH, S, DV}, F16);
    CHECK_THAT(c.run(), Catch::Contains("q, k, v must share one dtype"));
  }
  SECTION("fp16 gates with bf16 inputs") {
    Fwd c;
    c.i = buf({B, NH, S}, F16);
    c.f = buf({B, NH, S}, F16);
    CHECK_THAT(c.run(), Catch::Contains("float32 or the inputs' dtype"));
  }
  SECTION("gates of another length") {
    Fwd c;
    c.i = buf({B, NH, S + 1}, F32);
    CHECK_THAT(c.run(), Catch::Contains("v, i, f must share q's (B, NH, S)"));
  }
  SECTION("initial states announced but missing") {
    Fwd c;
    c.states = {c.C0.get()};
    CHECK_THAT(c.run(), Catch::Contains("missing argument n0"));
  }
  SECTION("C0 of the wrong shape") {
    Fwd c;
    c.C0 = buf({B, NH, DV, DQK}, F32);
    c.states[0] = c.C0.get();
    CHECK_THAT(c.run(),
               Catch::Contains("C0 is (1, 2, 128, 64) float32; expected (1, 2, 64, 128) float32"));
  }
  SECTION("m0 as (B, NH) is accepted, as (B, NH, 2) not") {
    Fwd c;
    c.m0 = buf({B, NH, 2}, F32);
    c.states[2] = c.m0.get();
    CHECK_THAT(c.run(), Catch::Contains("m0 is (1, 2, 2) float32"));
  }
  SECTION("last states announced but missing") {
    Fwd c;
    c.more = {c.Cl.get()};
    CHECK_THAT(c.run(), Catch::Contains("missing result n_last"));
  }
  SECTION("n_last of the wrong dtype") {
    Fwd c;
    c.nl = buf({B, NH, DQK}, BF);
    c.more[1] = c.nl.get();
    CHECK_THAT(c.run(), Catch::Contains("n_last is (1, 2, 64) bfloat16"));
  }
  SECTION("a saved buffer that is not bytes") {
    Fwd c;
    c.saved = buf({1024}, F32);
    c.more[3] = c.saved.get();
    CHECK_THAT(c.run(), Catch::Contains("saved must be a 1-D uint8 buffer"));
  }
  SECTION("no workspace result") {
    Fwd c;
    c.more.pop_back();
    CHECK_THAT(c.run(), Catch::Contains("missing result workspace"));
  }
  SECTION(
      "without states, last states or a saved buffer the results are h, norm, m and the "
      "workspace") {
    Fwd c;
    c.has_initial = c.want_last = c.keep = 0;
    c.states.clear();
    c.more = {c.ws.get()};
    c.h = buf({B, NH, S + 1, DV}, BF);
    CHECK_THAT(c.run(), Catch::Contains("h is (1, 2, 9, 128)"));
  }
}

TEST_CASE("the backward and step handlers refuse malformed buffers by name", "[jax]") {
  BufPtr q = buf({B, NH, S, DQK}, BF), k = buf({B, NH, S, DQK}, BF), v = buf({B, NH, S, DV}, BF);
  BufPtr i = buf({B, NH, S}, F32), f = buf({B, NH, S}, F32), norm = buf({B, NH, S}, F32);
  BufPtr dh = buf({B, NH, S, DV}, BF), dq = buf({B, NH, S, DQK}, BF), dk = buf({B, NH, S, DQK}, BF);
  BufPtr dv = buf({B, NH, S, DV}, BF), di = buf({B, NH, S}, F32), df = buf({B, NH, S}, F32);
  BufPtr ws = buf({256}, U8);
  auto backward = [&](const Buf& dq_, const Buf& di_, std::vector<const Buf*> rest,
                      std::vector<const Buf*> more, int64_t has_dc_last, int64_t has_saved) {
    const Rest r(rest), m(more);
    const ffi::Error e = tfla::jax_ffi::Backward(
        nullptr, q->any(), k->any(), v->any(), i->any(), f->any(), norm->any(), dh->any(),
        r.as_args(), dq_.res(), dk->res(), dv->res(), di_.res(), df->res(), m.as_rets(), 0, 1,
        1e-6f, 0.f, "", 0, has_dc_last, has_saved, tfla::jax_ffi::kBHSD);
    return e.failure() ? e.message() : std::string();
  };
  CHECK_THAT(backward(*buf({B, NH, S, DQK}, F32), *di, {}, {ws.get()}, 0, 0),
             Catch::Contains("dq is (1, 2, 8, 64) float32; expected (1, 2, 8, 64) bfloat16"));
  CHECK_THAT(backward(*dq, *buf({B, NH, S}, BF), {}, {ws.get()}, 0, 0),
             Catch::Contains("di is (1, 2, 8) bfloat16; expected (1, 2, 8) float32"));
  CHECK_THAT(backward(*dq, *di, {}, {ws.get()}, 1, 0), Catch::Contains("missing argument dC_last"));
  CHECK_THAT(backward(*dq, *di, {buf({B, NH, DQK, 64}, F32).get()}, {ws.get()}, 1, 0),
             Catch::Contains("dC_last is (1, 2, 64, 64) float32"));
  CHECK_THAT(backward(*dq, *di, {}, {ws.get()}, 0, 1), Catch::Contains("missing argument saved"));
  CHECK_THAT(backward(*dq, *di, {}, {}, 0, 0), Catch::Contains("missing result workspace"));

  BufPtr C = buf({B, NH, DQK, DV}, F32), n = buf({B, NH, DQK}, F32), m = buf({B, NH, 1}, F32);
  BufPtr h1 = buf({B, NH, 1, DV}, BF);
  BufPtr q1 = buf({B, NH, 1, DQK}, BF), k1 = buf({B, NH, 1, DQK}, BF), v1 = buf({B, NH, 1, DV}, BF);
  BufPtr i1 = buf({B, NH, 1}, F32), f1 = buf({B, NH, 1}, F32);
  auto step = [&](const Buf& h_, const Buf& m_new) {
    const ffi::Error e = tfla::jax_ffi::Step(nullptr, q1->any(), k1->any(), v1->any(), i1->any(),
                                             f1->any(), C->any(), n->any(), m->any(), h_.res(),
                                             C->res(), n->res(), m_new.res(), 0, 1, 1e-6f, 0.f, "");
    return e.failure() ? e.message() : std::string();
  };
  CHECK_THAT(step(*buf({B, NH, 1, DQK}, BF), *m), Catch::Contains("h is (1, 2, 1, 64) bfloat16"));
  CHECK_THAT(step(*h1, *buf({B, NH, 3}, F32)), Catch::Contains("m (new) is (1, 2, 3) float32"));
}

TEST_CASE("well-formed calls pass the handlers' checks and reach the library", "[jax]") {
  // Without a driver the library refuses the call itself (its message behind the handler's
  // "tfla: forward: "); with one, host buffers must not reach it, so the case stops there.
  if (driver_loaded()) {
    WARN("a CUDA driver is loaded: host buffers are not passed to the library");
    return;
  }
  Fwd full;
  const std::string m1 = full.run();
  INFO(m1);
  CHECK(m1.rfind("tfla: forward: ", 0) == 0);
  Fwd plain;
  plain.has_initial = plain.want_last = plain.keep = 0;
  plain.states.clear();
  plain.more = {plain.ws.get()};
  plain.m0 = buf({B, NH}, F32);  // (B, NH) stabilizers are accepted too (unused here)
  const std::string m2 = plain.run();
  INFO(m2);
  CHECK(m2.rfind("tfla: forward: ", 0) == 0);
  plain.norm = buf({0}, F32);  // a forward no backward reads: norm and m not written
  plain.m = buf({0}, F32);
  const std::string m3 = plain.run();
  INFO(m3);
  CHECK(m3.rfind("tfla: forward: ", 0) == 0);
}

TEST_CASE("the (B, S, NH, D) layout: strides, shapes and refusals", "[jax]") {
  using tfla::jax_ffi::gate_strides;
  using tfla::jax_ffi::kBHSD;
  using tfla::jax_ffi::kBSHD;
  using tfla::jax_ffi::seq_strides;
  // row-major (B, S, NH, D) = (1, 8, 2, 64): b = S NH D, h = D, s = NH D; gates (B, S, NH)
  const tfla_strides s = seq_strides(kBSHD, NH, S, DQK), g = gate_strides(kBSHD, NH, S);
  CHECK((s.b == S * NH * DQK && s.h == DQK && s.s == NH * DQK));
  CHECK((g.b == S * NH && g.h == 1 && g.s == NH));
  const tfla_strides cs = seq_strides(kBHSD, NH, S, DQK), cg = gate_strides(kBHSD, NH, S);
  CHECK((cs.b == 0 && cs.h == 0 && cs.s == 0 && cg.b == 0 && cg.h == 0 && cg.s == 0));

  auto bshd = [] {
    Fwd c;
    c.layout = kBSHD;
    c.q = buf({B, S, NH, DQK}, BF);
    c.k = buf({B, S, NH, DQK}, BF);
    c.v = buf({B, S, NH, DV}, BF);
    c.i = buf({B, S, NH}, F32);
    c.f = buf({B, S, NH}, F32);
    c.h = buf({B, S, NH, DV}, BF);
    return c;
  };
  {
    Fwd c = bshd();
    c.h = buf({B, NH, S, DV}, BF);
    CHECK_THAT(c.run(), Catch::Contains("h is (1, 2, 8, 128) bfloat16; expected (1, 8, 2, 128)"));
  }
  {
    Fwd c = bshd();
    c.i = buf({B, NH, S}, F32);
    CHECK_THAT(c.run(), Catch::Contains("v, i, f must share q's (B, S, NH)"));
  }
  {
    Fwd c = bshd();
    c.layout = 2;
    CHECK_THAT(c.run(),
               Catch::Contains("layout must be 0 (B, NH, S, D) or 1 (B, S, NH, D); got 2"));
  }
  if (!driver_loaded()) {
    // well-formed: past the handler's checks, and the library takes the strides (without a saved
    // buffer its next word is that there is no driver)
    Fwd c = bshd();
    c.keep = 0;
    c.ws = buf({1 << 20}, U8);
    c.more = {c.Cl.get(), c.nl.get(), c.ml.get(), c.ws.get()};  // no saved buffer
    const std::string m = c.run();
    INFO(m);
    CHECK(m.rfind("tfla: forward: ", 0) == 0);
    CHECK_THAT(m, Catch::Contains("driver"));
  }
}
