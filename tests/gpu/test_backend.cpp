// GPU tests of tfla::Backend against the float64 reference (fresh random inputs rounded to the
// kernel dtype, poisoned outputs): the kernels it picks per mode, sequence length and states,
// and that every path computes the reference. Train: forward without states (parallel or
// chunkwise, as choose() says, and each when pinned) and backward; inference: the step path
// for short calls that ask for last states (from given initial states, from zeros, in place),
// the chunkwise path beyond max_step_tokens, and generation continued with Backend::step.
#include "tfla_catch.hpp"
#include <algorithm>
#include <cstdio>
#include <string>

#include "gpu_test_util.hpp"
#include "reference/reference.hpp"

using namespace tfla;
namespace ref = tfla::reference;

namespace {

constexpr int64_t B = 2, NH = 3, DQK = 64, DV = 128;

ref::Options ref_options(const BackendOptions& o) {
  ref::Options r;
  r.variant = o.variant == Variant::Exp ? ref::Variant::Exp : ref::Variant::Sig;
  r.normalize = o.normalize;
  return r;
}

// Inputs of S tokens rounded to the backend's dtypes, uploaded.
struct Data {
  ref::Shape shape;
  ref::Inputs in;
  cli::DeviceBuffer q, k, v, i, f;
  Data(const BackendOptions& o, int64_t S, uint64_t seed) : shape{B, NH, S, DQK, DV} {
    in = ref::random_inputs(shape, seed);
    q = test::upload(in.q, o.dtype);
    k = test::upload(in.k, o.dtype);
    v = test::upload(in.v, o.dtype);
    i = test::upload(in.i, o.gate_dtype);
    f = test::upload(in.f, o.gate_dtype);
  }
  ForwardTensors tensors() const {
    ForwardTensors t;
    t.q = q.get(); t.k = k.get(); t.v = v.get(); t.i = i.get(); t.f = f.get();
    return t;
  }
};

double tol_of(DType dt) { return dt == DType::FP32 ? 1e-4 : 2e-2; }

// Train mode: forward (kind as choose() says; pinned parallel = 0 / 1 when given) then backward.
void train_case(const BackendOptions& o, int64_t S, uint64_t seed) {
  const Backend be(o);
  const std::string pin = o.config.empty() ? "" : " config " + to_string(o.config);
  INFO(to_string(o.variant) << " " << to_string(o.dtype) << " S=" << S << pin);
  Data d(o, S, seed);
  const size_t eb = dtype_bytes(o.dtype), gb = dtype_bytes(o.gate_dtype);
  auto h = test::poisoned(B * NH * S * DV * eb);
  auto norm = test::poisoned(B * NH * S * 4);
  ForwardTensors t = d.tensors();
  t.h = h.get();
  t.norm = norm.as<float>();
  const KernelKind expect = be.choose(B, NH, S, DQK, DV);
  const KernelKind got = be.forward(B, NH, S, DQK, DV, t);
  CHECK(got == expect);
  if (o.config.count("parallel"))
    CHECK(got == (o.config.at("parallel") ? KernelKind::Parallel : KernelKind::Chunkwise));
  cli::synchronize();
  const ref::Options ro = ref_options(o);
  const ref::ForwardResult want = ref::forward_recurrent(d.shape, ro, d.in, nullptr);
  const double e_h = ref::relative_error(test::download(h, o.dtype), want.h);

  std::vector<double> dh_host = ref::random_inputs(d.shape, seed + 1).v;  // (B, NH, S, Dv)
  auto dh = test::upload(dh_host, o.dtype);
  auto dq = test::poisoned(B * NH * S * DQK * eb), dk = test::poisoned(B * NH * S * DQK * eb);
  auto dv = test::poisoned(B * NH * S * DV * eb);
  auto di = test::poisoned(B * NH * S * gb), df = test::poisoned(B * NH * S * gb);
  BackwardTensors bt;
  bt.q = d.q.get(); bt.k = d.k.get(); bt.v = d.v.get(); bt.i = d.i.get(); bt.f = d.f.get();
  bt.dh = dh.get();
  bt.norm = norm.as<float>();
  bt.dq = dq.get(); bt.dk = dk.get(); bt.dv = dv.get(); bt.di = di.get(); bt.df = df.get();
  be.backward(B, NH, S, DQK, DV, bt);
  cli::synchronize();
  const ref::BackwardResult g = ref::backward(d.shape, ro, d.in, nullptr, dh_host, nullptr);
  const double e_q = ref::relative_error(test::download(dq, o.dtype), g.dq);
  const double e_k = ref::relative_error(test::download(dk, o.dtype), g.dk);
  const double e_v = ref::relative_error(test::download(dv, o.dtype), g.dv);
  const double e_i = ref::relative_error(test::download(di, o.gate_dtype), g.di);
  const double e_f = ref::df_conditioned_error(d.shape, d.in, test::download(df, o.gate_dtype), g);
  std::printf("backend train %s %s S=%lld%s: %s, h %.2e dq %.2e dk %.2e dv %.2e di %.2e df(cond) %.2e\n",
              to_string(o.variant), to_string(o.dtype), (long long)S, pin.c_str(), to_string(got), e_h, e_q,
              e_k, e_v, e_i, e_f);
  const double tol = tol_of(o.dtype);
  CHECK(e_h < tol);
  CHECK(e_q < tol);
  CHECK(e_k < tol);
  CHECK(e_v < tol);
  CHECK(e_i < tol);
  CHECK(e_f < tol);
}

// Inference mode with last states: kind and results (h, C, n, m) from random initial states
// (separate outputs, which leave the initial states as they were; in place; C0 8 bytes off
// 16-byte alignment, which the step path copies first) or from zeros.
enum class Init { Separate, InPlace, Zero, C0Off16 };
void inference_case(const BackendOptions& o, int64_t S, Init init, KernelKind expect, uint64_t seed) {
  const Backend be(o);
  const char* how = init == Init::Separate  ? "initial states"
                    : init == Init::InPlace ? "in place"
                    : init == Init::Zero    ? "zero states"
                                            : "C0 8 bytes off 16-byte alignment";
  INFO(to_string(o.variant) << " " << to_string(o.dtype) << " S=" << S << " " << how);
  Data d(o, S, seed);
  const ref::Options ro = ref_options(o);
  ref::States st = ref::random_states(d.shape, ro.variant, seed + 3);
  if (st.m.empty()) st.m.assign(B * NH, 0.0);
  auto C0 = test::upload(st.C, DType::FP32), n0 = test::upload(st.n, DType::FP32),
       m0 = test::upload(st.m, DType::FP32);
  // C0 at an 8-byte offset: the same values in a buffer 8 bytes longer.
  std::vector<double> C_off(st.C.size() + 2, 0.0);
  std::copy(st.C.begin(), st.C.end(), C_off.begin() + 2);
  auto C0_off = test::upload(C_off, DType::FP32);
  auto Cl = test::poisoned(B * NH * DQK * DV * 4), nl = test::poisoned(B * NH * DQK * 4),
       ml = test::poisoned(B * NH * 4);
  auto h = test::poisoned(B * NH * S * DV * dtype_bytes(o.dtype));
  ForwardTensors t = d.tensors();
  t.h = h.get();
  cli::DeviceBuffer *C = &Cl, *n = &nl, *m = &ml;
  if (init == Init::Separate) {
    t.C0 = C0.as<float>(); t.n0 = n0.as<float>(); t.m0 = m0.as<float>();
  } else if (init == Init::C0Off16) {
    t.C0 = C0_off.as<float>() + 2; t.n0 = n0.as<float>(); t.m0 = m0.as<float>();
  } else if (init == Init::InPlace) {
    t.C0 = C0.as<float>(); t.n0 = n0.as<float>(); t.m0 = m0.as<float>();
    C = &C0; n = &n0; m = &m0;
  }
  t.C_last = C->as<float>(); t.n_last = n->as<float>(); t.m_last = m->as<float>();
  const std::vector<uint8_t> C0_bytes = test::raw_bytes(C0), n0_bytes = test::raw_bytes(n0),
                             m0_bytes = test::raw_bytes(m0), C0_off_bytes = test::raw_bytes(C0_off);
  const KernelKind got = be.forward(B, NH, S, DQK, DV, t);
  CHECK(got == expect);
  CHECK(be.choose(B, NH, S, DQK, DV, init != Init::Zero, true) == expect);
  cli::synchronize();
  const ref::ForwardResult want = ref::forward_recurrent(d.shape, ro, d.in, init == Init::Zero ? nullptr : &st);
  const double e_h = ref::relative_error(test::download(h, o.dtype), want.h);
  const double e_C = ref::relative_error(test::download(*C, DType::FP32), want.last.C);
  const double e_n = ref::relative_error(test::download(*n, DType::FP32), want.last.n);
  std::vector<double> m_want = want.last.m;
  if (m_want.empty()) m_want.assign(B * NH, 0.0);
  const double e_m = ref::relative_error(test::download(*m, DType::FP32), m_want);
  std::printf("backend inference %s %s S=%lld %s: %s, h %.2e C %.2e n %.2e m %.2e\n", to_string(o.variant),
              to_string(o.dtype), (long long)S, how, to_string(got), e_h, e_C, e_n, e_m);
  // The step path keeps the fp32 state exact; the chunkwise kernels' C goes through the tensor
  // cores in the input dtype.
  const double tol_state = got == KernelKind::Step ? 1e-5 : tol_of(o.dtype);
  CHECK(e_h < tol_of(o.dtype));
  CHECK(e_C < tol_state);
  CHECK(e_n < tol_state);
  CHECK(e_m < 1e-5);
  if (init == Init::Separate || init == Init::C0Off16) {
    INFO("the initial states are left as they were");
    CHECK(test::raw_bytes(C0) == C0_bytes);
    CHECK(test::raw_bytes(n0) == n0_bytes);
    CHECK(test::raw_bytes(m0) == m0_bytes);
    CHECK(test::raw_bytes(C0_off) == C0_off_bytes);
  }
}

}  // namespace

TEST_CASE("Backend train mode: forward picks the kernels choose() names, and forward/backward match the reference",
          "[gpu][backend]") {
  uint64_t seed = static_cast<uint64_t>(Catch::rngSeed()) * 1000 + 11;
  for (Variant v : {Variant::Exp, Variant::Sig}) {
    BackendOptions o;
    o.variant = v;
    for (int64_t S : {48, 300}) train_case(o, S, seed++);
    for (int64_t par : {0, 1}) {
      BackendOptions p = o;
      p.config = {{"parallel", par}};
      train_case(p, 100, seed++);
    }
  }
  BackendOptions f32;
  f32.dtype = DType::FP32;
  train_case(f32, 70, seed++);
}

TEST_CASE("Backend inference mode: step path up to max_step_tokens, chunkwise beyond, states exact",
          "[gpu][backend]") {
  uint64_t seed = static_cast<uint64_t>(Catch::rngSeed()) * 1000 + 23;
  for (Variant v : {Variant::Exp, Variant::Sig}) {
    BackendOptions o;
    o.mode = Mode::Inference;
    o.variant = v;
    for (Init init : {Init::Separate, Init::InPlace, Init::Zero, Init::C0Off16}) {
      inference_case(o, 1, init, KernelKind::Step, seed++);
      inference_case(o, 16, init, KernelKind::Step, seed++);
      inference_case(o, 17, init, KernelKind::Chunkwise, seed++);
    }
    BackendOptions pinned = o;
    pinned.step_config = {{"siz_b_v", 64}, {"threads", 128}};
    inference_case(pinned, 5, Init::Separate, KernelKind::Step, seed++);
    BackendOptions no_step = o;
    no_step.max_step_tokens = 0;
    inference_case(no_step, 3, Init::Separate, KernelKind::Chunkwise, seed++);
  }
  // Without last states there is nothing to step: parallel or chunkwise, as for training.
  BackendOptions o;
  o.mode = Mode::Inference;
  const Backend be(o);
  CHECK(be.choose(B, NH, 4, DQK, DV) != KernelKind::Step);
}

TEST_CASE("Backend: prefill with forward, then generation with step, equals the reference", "[gpu][backend]") {
  const uint64_t seed = static_cast<uint64_t>(Catch::rngSeed()) * 1000 + 41;
  for (Variant v : {Variant::Exp, Variant::Sig}) {
    BackendOptions o;
    o.mode = Mode::Inference;
    o.variant = v;
    const Backend be(o);
    const int64_t S1 = 75, S2 = 3, S = S1 + S2, BH = B * NH;
    INFO(to_string(v));
    Data d(o, S, seed + static_cast<uint64_t>(v == Variant::Sig));
    const size_t eb = dtype_bytes(o.dtype);
    auto C = test::poisoned(BH * DQK * DV * 4), n = test::poisoned(BH * DQK * 4), m = test::poisoned(BH * 4);
    auto h = test::poisoned(BH * S * DV * eb);
    // (B, NH, S, D) tensors addressed token range by token range through their strides.
    const Strides sqk{NH * S * DQK, S * DQK, DQK}, sv{NH * S * DV, S * DV, DV}, sg{NH * S, S, 1};
    ForwardTensors t = d.tensors();
    t.q_strides = t.k_strides = sqk;
    t.v_strides = t.h_strides = sv;
    t.i_strides = t.f_strides = sg;
    t.h = h.get();
    t.C_last = C.as<float>(); t.n_last = n.as<float>(); t.m_last = m.as<float>();
    CHECK(be.forward(B, NH, S1, DQK, DV, t) == KernelKind::Chunkwise);
    for (int64_t s = S1; s < S; ++s) {
      StepTensors st;
      const size_t gb = dtype_bytes(o.gate_dtype);
      st.q = static_cast<const char*>(d.q.get()) + s * DQK * eb;
      st.k = static_cast<const char*>(d.k.get()) + s * DQK * eb;
      st.v = static_cast<const char*>(d.v.get()) + s * DV * eb;
      st.i = static_cast<const char*>(d.i.get()) + s * gb;
      st.f = static_cast<const char*>(d.f.get()) + s * gb;
      st.h = static_cast<char*>(h.get()) + s * DV * eb;
      st.q_strides = st.k_strides = sqk;
      st.v_strides = st.h_strides = sv;
      st.i_strides = st.f_strides = sg;
      st.C = C.as<float>(); st.n = n.as<float>(); st.m = m.as<float>();
      be.step(B, NH, 1, DQK, DV, st);
    }
    cli::synchronize();
    const ref::ForwardResult want = ref::forward_recurrent(d.shape, ref_options(o), d.in, nullptr);
    const double e_h = ref::relative_error(test::download(h, o.dtype), want.h);
    const double e_C = ref::relative_error(test::download(C, DType::FP32), want.last.C);
    std::printf("backend prefill %lld + %lld steps %s: h %.2e C %.2e\n", (long long)S1, (long long)S2,
                to_string(v), e_h, e_C);
    CHECK(e_h < 2e-2);
    CHECK(e_C < 1e-2);  // the prefill's C from the chunkwise kernels
  }
}

TEST_CASE("Backend: bad use is named", "[gpu][backend]") {
  BackendOptions o;
  o.max_step_tokens = -1;
  try {
    Backend be(o);
    FAIL("a negative max_step_tokens was accepted");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("max_step_tokens"));
  }
  BackendOptions inf;
  inf.mode = Mode::Inference;
  const Backend be(inf);
  try {
    be.backward(B, NH, 8, DQK, DV, BackwardTensors{});
    FAIL("backward in inference mode was accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK_THAT(e.what(), Catch::Contains("train mode"));
  }
}
