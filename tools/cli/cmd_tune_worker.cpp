// tfla tune-worker (hidden): the GPU side of `tfla tune`. Reads run requests (JSON lines,
// tuner/worker.hpp) on stdin and answers each with a result line: times the candidate with CUDA
// events (warm-up, median of repeats, inputs rotated over sets larger than twice the L2, random
// data) after two checks: the candidate's outputs on a small problem of the same family against
// the float64 reference (src/reference: forward and backward; the step against the default),
// and its outputs on input set 0 of the real problem against the default config's. A sticky
// CUDA error is reported as "faulted" and ends the process: the parent starts a fresh worker.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>

#include "commands.hpp"
#include "gpu.hpp"
#include "ops/mlstm_backward.hpp"
#include "ops/mlstm_forward.hpp"
#include "ops/mlstm_step.hpp"
#include "runtime/device.hpp"
#include "runtime/driver.hpp"
#include "reference/reference.hpp"
#include "store/env_key.hpp"
#include "tuner/validation.hpp"
#include "tuner/worker.hpp"

namespace tfla::cli {
namespace {
using tuner::Family;
using cache::CandidateResult;
using cache::CandidateStatus;

// One input set: everything a forward and a backward read (the step: q, k, v, i, f and its
// states C, n, m, updated in place by every launch).
struct InputSet {
  DeviceBuffer q, k, v, i, f, dh, norm;
  DeviceBuffer C, n, m;
};

struct SmallCheck;

// Inputs and outputs of one problem, kept while requests for it keep coming.
struct ProblemData {
  MlstmProblem p;
  std::vector<std::unique_ptr<InputSet>> sets;
  DeviceBuffer h, dq, dk, dv, di, df;
  std::map<std::string, std::vector<std::vector<float>>> reference;  // family|config -> outputs
  std::map<std::string, std::vector<double>> df_scale;  // backward: the scale of df's error (validation.hpp)
  std::map<Family, std::shared_ptr<SmallCheck>> small;  // the float64 checks, per family
  DeviceBuffer C0, n0, m0;  // step: set 0's initial states, restored before each validation
};

float half_to_float(uint16_t h) {
  const uint32_t s = (h >> 15) & 1, e = (h >> 10) & 31, m = h & 1023;
  const float v = e == 0 ? std::ldexp(static_cast<float>(m), -24)
                 : e == 31 ? (m ? NAN : INFINITY)
                           : std::ldexp(static_cast<float>(m | 1024), static_cast<int>(e) - 25);
  return s ? -v : v;
}
std::vector<float> download(const DeviceBuffer& b, DType dt, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  if (dt == DType::FP32) {
    b.download(out.data(), n * 4);
    return out;
  }
  std::vector<uint16_t> raw(static_cast<size_t>(n));
  b.download(raw.data(), n * 2);
  for (int64_t x = 0; x < n; ++x) {
    if (dt == DType::BF16) {
      const uint32_t bits = static_cast<uint32_t>(raw[x]) << 16;
      std::memcpy(&out[x], &bits, 4);
    } else {
      out[x] = half_to_float(raw[x]);
    }
  }
  return out;
}
double rel_error(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t x = 0; x < a.size(); ++x) {
    const double d = static_cast<double>(a[x]) - ref[x];
    num += d * d;
    den += static_cast<double>(ref[x]) * ref[x];
  }
  if (std::isnan(num) || std::isnan(den)) return NAN;
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// The float64 check of candidates: a small problem with the request's head dims, dtypes and
// variant (B*NH = 2; S spans two chunks of the longest chunk the spaces walk plus a tail, or the
// request's S if shorter), random inputs as the device holds them, and the reference outputs.
struct SmallCheck {
  MlstmProblem p;
  DeviceBuffer q, k, v, i, f, dh, h, norm, dq, dk, dv, di, df;
  reference::Inputs in;                               // what the reference ran on
  std::vector<double> ref_h;                          // (2, S, Dv)
  reference::BackwardResult ref_grads;                // dq, dk, dv, di, df
};

std::vector<double> widen(const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); }

double rel_error_to(const std::vector<float>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t x = 0; x < got.size(); ++x) {
    const double d = static_cast<double>(got[x]) - ref[x];
    num += d * d;
    den += ref[x] * ref[x];
  }
  if (!std::isfinite(num) || !std::isfinite(den)) return NAN;
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

std::shared_ptr<SmallCheck> make_small_check(const MlstmProblem& big, Family fam) {
  auto c = std::make_shared<SmallCheck>();
  MlstmProblem& p = c->p;
  p = big;
  p.B = 1;
  p.NH = 2;
  p.S = std::min<int64_t>(big.S, 2 * 512 + 37);
  const size_t eb = dtype_bytes(p.dtype);
  const int64_t n_qk = p.NH * p.S * p.Dqk, n_v = p.NH * p.S * p.Dv, n_g = p.NH * p.S;
  const size_t gb = dtype_bytes(p.gate_dtype);
  c->q = DeviceBuffer(n_qk * eb); c->k = DeviceBuffer(n_qk * eb); c->v = DeviceBuffer(n_v * eb);
  c->dh = DeviceBuffer(n_v * eb); c->i = DeviceBuffer(n_g * gb); c->f = DeviceBuffer(n_g * gb);
  c->h = DeviceBuffer(n_v * eb); c->norm = DeviceBuffer(n_g * 4);
  fill_random(c->q.get(), p.dtype, n_qk, 71, 0.f, 1.f);
  fill_random(c->k.get(), p.dtype, n_qk, 72, 0.f, 1.f);
  fill_random(c->v.get(), p.dtype, n_v, 73, 0.f, 1.f);
  fill_random(c->dh.get(), p.dtype, n_v, 74, 0.f, 1.f);
  fill_random(c->i.get(), p.gate_dtype, n_g, 75, 0.f, 1.f);
  fill_random(c->f.get(), p.gate_dtype, n_g, 76, 3.f, 1.f);
  synchronize();
  reference::Inputs& in = c->in;
  in.q = widen(download(c->q, p.dtype, n_qk));
  in.k = widen(download(c->k, p.dtype, n_qk));
  in.v = widen(download(c->v, p.dtype, n_v));
  in.i = widen(download(c->i, p.gate_dtype, n_g));
  in.f = widen(download(c->f, p.gate_dtype, n_g));
  const reference::Shape shape{p.B, p.NH, p.S, p.Dqk, p.Dv};
  reference::Options opt;
  opt.variant = p.variant == Variant::Exp ? reference::Variant::Exp : reference::Variant::Sig;
  opt.normalize = p.normalize;
  opt.eps = p.eps;
  opt.scale = p.scale;
  if (fam == Family::Forward) {
    c->ref_h = reference::forward_recurrent(shape, opt, in, nullptr).h;
    return c;
  }
  c->dq = DeviceBuffer(n_qk * eb); c->dk = DeviceBuffer(n_qk * eb); c->dv = DeviceBuffer(n_v * eb);
  c->di = DeviceBuffer(n_g * gb); c->df = DeviceBuffer(n_g * gb);
  c->ref_grads = reference::backward(shape, opt, in, nullptr, widen(download(c->dh, p.dtype, n_v)), nullptr);
  // The backward reads the forward's normalizer: one default forward.
  ops::FwdConfig def;
  def.apply(ops::resolve(ops::Op::Forward, p, ops::current_limits(), {}).config);
  ForwardTensors t;
  t.q = c->q.get(); t.k = c->k.get(); t.v = c->v.get(); t.i = c->i.get(); t.f = c->f.get();
  t.h = c->h.get(); t.norm = c->norm.as<float>();
  ops::forward_with_config(p, t, {}, def);
  synchronize();
  return c;
}

// "" when the candidate's outputs on the small problem are within tolerance of the float64
// reference, else the first output past its limit, its error and the limit. Every output by its
// relative error (limit 1e-2, fp32 1e-4) but df, which is judged as the float64 tests judge it:
// against the size of its summed terms (reference::df_conditioned_error), limit 2e-2 (fp32 1e-4).
std::string check_small(Family fam, const Config& cfg, SmallCheck& c) {
  const MlstmProblem& p = c.p;
  const double tol = p.dtype == DType::FP32 ? 1e-4 : 1e-2, df_tol = p.dtype == DType::FP32 ? 1e-4 : 2e-2;
  const int64_t n_qk = p.NH * p.S * p.Dqk, n_v = p.NH * p.S * p.Dv, n_g = p.NH * p.S;
  struct Judged {
    const char* what;  // the output and its measure
    double error, limit;
  };
  std::vector<Judged> errors;
  if (fam == Family::Forward) {
    ops::FwdConfig f;
    f.apply(cfg);
    c.h.fill_byte(0xFF);
    ForwardTensors t;
    t.q = c.q.get(); t.k = c.k.get(); t.v = c.v.get(); t.i = c.i.get(); t.f = c.f.get(); t.h = c.h.get();
    ops::forward_with_config(p, t, {}, f);
    synchronize();
    errors.push_back({"relative error of h", rel_error_to(download(c.h, p.dtype, n_v), c.ref_h), tol});
  } else {
    ops::BwdConfig b;
    b.apply(cfg);
    for (DeviceBuffer* out : {&c.dq, &c.dk, &c.dv, &c.di, &c.df}) out->fill_byte(0xFF);
    BackwardTensors t;
    t.q = c.q.get(); t.k = c.k.get(); t.v = c.v.get(); t.i = c.i.get(); t.f = c.f.get();
    t.dh = c.dh.get(); t.norm = c.norm.as<float>();
    t.dq = c.dq.get(); t.dk = c.dk.get(); t.dv = c.dv.get(); t.di = c.di.get(); t.df = c.df.get();
    ops::backward_with_config(p, t, {}, b);
    synchronize();
    const reference::BackwardResult& g = c.ref_grads;
    errors.push_back({"relative error of dq", rel_error_to(download(c.dq, p.dtype, n_qk), g.dq), tol});
    errors.push_back({"relative error of dk", rel_error_to(download(c.dk, p.dtype, n_qk), g.dk), tol});
    errors.push_back({"relative error of dv", rel_error_to(download(c.dv, p.dtype, n_v), g.dv), tol});
    errors.push_back({"relative error of di", rel_error_to(download(c.di, p.gate_dtype, n_g), g.di), tol});
    const reference::Shape shape{p.B, p.NH, p.S, p.Dqk, p.Dv};
    const std::vector<double> df = widen(download(c.df, p.gate_dtype, n_g));
    bool finite = true;
    for (double x : df) finite = finite && std::isfinite(x);
    errors.push_back({"error of df (against its summed terms)",
                      finite ? reference::df_conditioned_error(shape, c.in, df, g) : NAN, df_tol});
  }
  for (const Judged& j : errors)
    if (!(j.error <= j.limit))  // (a NaN fails too)
      return std::string(j.what) + " " + std::to_string(j.error) +
             " against the float64 reference on B*NH = 2, S = " + std::to_string(p.S) + ", limit " +
             std::to_string(j.limit);
  return {};
}

std::unique_ptr<ProblemData> make_data(const MlstmProblem& p, int64_t l2_bytes) {
  auto d = std::make_unique<ProblemData>();
  d->p = p;
  const size_t eb = dtype_bytes(p.dtype);
  const int64_t n_qk = p.B * p.NH * p.S * p.Dqk, n_v = p.B * p.NH * p.S * p.Dv, n_g = p.B * p.NH * p.S;
  const int64_t set_bytes = static_cast<int64_t>((2 * n_qk + 2 * n_v) * eb + n_g * 12);
  int n_sets = static_cast<int>(std::max<int64_t>(2, (2 * l2_bytes + set_bytes - 1) / std::max<int64_t>(set_bytes, 1)));
  n_sets = std::min(n_sets, 8);
  for (int s = 0; s < n_sets; ++s) {
    auto in = std::make_unique<InputSet>();
    const uint64_t seed = 1000 * (s + 1);
    in->q = DeviceBuffer(n_qk * eb); in->k = DeviceBuffer(n_qk * eb); in->v = DeviceBuffer(n_v * eb);
    in->dh = DeviceBuffer(n_v * eb); in->i = DeviceBuffer(n_g * 4); in->f = DeviceBuffer(n_g * 4);
    in->norm = DeviceBuffer(n_g * 4);
    fill_random(in->q.get(), p.dtype, n_qk, seed + 1, 0.f, 1.f);
    fill_random(in->k.get(), p.dtype, n_qk, seed + 2, 0.f, 1.f);
    fill_random(in->v.get(), p.dtype, n_v, seed + 3, 0.f, 1.f);
    fill_random(in->dh.get(), p.dtype, n_v, seed + 4, 0.f, 1.f);
    fill_random(in->i.get(), DType::FP32, n_g, seed + 5, 0.f, 1.f);
    fill_random(in->f.get(), DType::FP32, n_g, seed + 6, 3.f, 1.f);
    d->sets.push_back(std::move(in));
  }
  d->h = DeviceBuffer(n_v * eb);
  d->dq = DeviceBuffer(n_qk * eb); d->dk = DeviceBuffer(n_qk * eb); d->dv = DeviceBuffer(n_v * eb);
  d->di = DeviceBuffer(n_g * 4); d->df = DeviceBuffer(n_g * 4);
  // The backward reads the forward's normalizer: one default forward per set.
  ops::FwdConfig def;
  def.apply(ops::resolve(ops::Op::Forward, p, ops::current_limits(), {}).config);
  DeviceBuffer ws(ops::fwd_workspace_size(p, def, false, false));
  for (auto& in : d->sets) {
    ForwardTensors t;
    t.q = in->q.get(); t.k = in->k.get(); t.v = in->v.get(); t.i = in->i.get(); t.f = in->f.get();
    t.h = d->h.get(); t.norm = in->norm.as<float>();
    LaunchOptions o;
    o.workspace = ws.get();
    o.workspace_bytes = ws.bytes();
    ops::forward_with_config(p, t, o, def);
  }
  synchronize();
  return d;
}

// The step's inputs: sets of q, k, v, i, f (T tokens) and states, rotated over more than twice
// the L2 (at most 8 sets), random (states small, forget gates mostly open).
std::unique_ptr<ProblemData> make_step_data(const MlstmProblem& p, int64_t l2_bytes) {
  auto d = std::make_unique<ProblemData>();
  d->p = p;
  const size_t eb = dtype_bytes(p.dtype);
  const int64_t bh = p.B * p.NH, n_qk = bh * p.S * p.Dqk, n_v = bh * p.S * p.Dv, n_g = bh * p.S;
  const int64_t n_C = bh * p.Dqk * p.Dv, n_n = bh * p.Dqk;
  const int64_t set_bytes = static_cast<int64_t>((2 * n_qk + n_v) * eb + n_g * 8 + (n_C + n_n + bh) * 4);
  int n_sets = static_cast<int>(std::max<int64_t>(2, (2 * l2_bytes + set_bytes - 1) / std::max<int64_t>(set_bytes, 1)));
  n_sets = std::min(n_sets, 8);
  for (int s = 0; s < n_sets; ++s) {
    auto in = std::make_unique<InputSet>();
    const uint64_t seed = 1000 * (s + 1);
    in->q = DeviceBuffer(n_qk * eb); in->k = DeviceBuffer(n_qk * eb); in->v = DeviceBuffer(n_v * eb);
    in->i = DeviceBuffer(n_g * 4); in->f = DeviceBuffer(n_g * 4);
    in->C = DeviceBuffer(n_C * 4); in->n = DeviceBuffer(n_n * 4); in->m = DeviceBuffer(bh * 4);
    fill_random(in->q.get(), p.dtype, n_qk, seed + 1, 0.f, 1.f);
    fill_random(in->k.get(), p.dtype, n_qk, seed + 2, 0.f, 1.f);
    fill_random(in->v.get(), p.dtype, n_v, seed + 3, 0.f, 1.f);
    fill_random(in->i.get(), DType::FP32, n_g, seed + 5, 0.f, 1.f);
    fill_random(in->f.get(), DType::FP32, n_g, seed + 6, 3.f, 1.f);
    fill_random(in->C.get(), DType::FP32, n_C, seed + 7, 0.f, 0.1f);
    fill_random(in->n.get(), DType::FP32, n_n, seed + 8, 0.f, 0.1f);
    fill_random(in->m.get(), DType::FP32, bh, seed + 9, 0.f, 1.f);
    d->sets.push_back(std::move(in));
  }
  d->h = DeviceBuffer(n_v * eb);
  d->C0 = DeviceBuffer(n_C * 4); d->n0 = DeviceBuffer(n_n * 4); d->m0 = DeviceBuffer(bh * 4);
  auto copy = [](DeviceBuffer& dst, const DeviceBuffer& src) {
    TFLA_CU(cuMemcpyDtoDAsync(reinterpret_cast<CUdeviceptr>(dst.get()), reinterpret_cast<CUdeviceptr>(src.get()),
                              src.bytes(), nullptr));
  };
  copy(d->C0, d->sets[0]->C);
  copy(d->n0, d->sets[0]->n);
  copy(d->m0, d->sets[0]->m);
  synchronize();
  return d;
}

// Step validation runs from the same states: set 0's states back to their initial values.
void restore_state(Family fam, ProblemData& d) {
  if (fam != Family::Step) return;
  InputSet& in = *d.sets[0];
  for (auto [dst, src] : {std::pair{&in.C, &d.C0}, std::pair{&in.n, &d.n0}, std::pair{&in.m, &d.m0}})
    TFLA_CU(cuMemcpyDtoDAsync(reinterpret_cast<CUdeviceptr>(dst->get()), reinterpret_cast<CUdeviceptr>(src->get()),
                              src->bytes(), nullptr));
}

// Launches the family with config c on input set s (workspace ws).
void launch(Family fam, ProblemData& d, const Config& c, int s, const DeviceBuffer& ws) {
  const InputSet& in = *d.sets[static_cast<size_t>(s)];
  if (fam == Family::Step) {
    ops::StepConfig cfg;
    cfg.apply(c);
    StepTensors t;
    t.q = in.q.get(); t.k = in.k.get(); t.v = in.v.get(); t.i = in.i.get(); t.f = in.f.get();
    t.h = d.h.get();
    t.C = in.C.as<float>(); t.n = in.n.as<float>(); t.m = in.m.as<float>();
    ops::step_with_config(d.p, t, LaunchOptions{}, cfg);
    return;
  }
  LaunchOptions o;
  o.workspace = ws.get();
  o.workspace_bytes = ws.bytes();
  if (fam == Family::Forward) {
    ops::FwdConfig cfg;
    cfg.apply(c);
    ForwardTensors t;
    t.q = in.q.get(); t.k = in.k.get(); t.v = in.v.get(); t.i = in.i.get(); t.f = in.f.get();
    t.h = d.h.get();
    ops::forward_with_config(d.p, t, o, cfg);
    return;
  }
  ops::BwdConfig cfg;
  cfg.apply(c);
  BackwardTensors t;
  t.q = in.q.get(); t.k = in.k.get(); t.v = in.v.get(); t.i = in.i.get(); t.f = in.f.get();
  t.dh = in.dh.get(); t.norm = in.norm.as<float>();
  t.dq = d.dq.get(); t.dk = d.dk.get(); t.dv = d.dv.get(); t.di = d.di.get(); t.df = d.df.get();
  ops::backward_with_config(d.p, t, o, cfg);
}

size_t workspace_bytes(Family fam, const MlstmProblem& p, const Config& c) {
  if (fam == Family::Step) return 0;  // the step uses no workspace
  if (fam == Family::Forward) {
    ops::FwdConfig cfg;
    cfg.apply(c);
    return ops::fwd_workspace_size(p, cfg, false, false);
  }
  ops::BwdConfig cfg;
  cfg.apply(c);
  return ops::bwd_workspace_size(p, cfg, false, false);
}

std::vector<std::vector<float>> outputs(Family fam, const ProblemData& d) {
  const MlstmProblem& p = d.p;
  const int64_t n_qk = p.B * p.NH * p.S * p.Dqk, n_v = p.B * p.NH * p.S * p.Dv, n_g = p.B * p.NH * p.S;
  if (fam == Family::Forward) return {download(d.h, p.dtype, n_v)};
  if (fam == Family::Step) {
    const InputSet& s0 = *d.sets[0];
    return {download(d.h, p.dtype, n_v), download(s0.C, DType::FP32, p.B * p.NH * p.Dqk * p.Dv),
            download(s0.n, DType::FP32, p.B * p.NH * p.Dqk), download(s0.m, DType::FP32, p.B * p.NH)};
  }
  return {download(d.dq, p.dtype, n_qk), download(d.dk, p.dtype, n_qk), download(d.dv, p.dtype, n_v),
          download(d.di, DType::FP32, n_g), download(d.df, DType::FP32, n_g)};
}

// The scale df's error is measured in (tuner/validation.hpp), from set 0's q, k and f (what the
// reference ran on) and the reference's dq and dk (ref: outputs() of the default config).
std::vector<double> df_scale(const ProblemData& d, const std::vector<std::vector<float>>& ref) {
  const MlstmProblem& p = d.p;
  const InputSet& s0 = *d.sets[0];
  const int64_t heads = p.B * p.NH, rows = heads * p.S;
  const std::vector<double> qdq = tuner::abs_row_dots(download(s0.q, p.dtype, rows * p.Dqk), ref[0], rows, p.Dqk);
  const std::vector<double> kdk = tuner::abs_row_dots(download(s0.k, p.dtype, rows * p.Dqk), ref[1], rows, p.Dqk);
  return tuner::df_error_scale(qdq, kdk, download(s0.f, DType::FP32, rows), heads, p.S);
}

// A sticky error leaves the context unusable: report and let the parent restart us.
bool sticky_fault(std::string* why) {
  const CUresult r = rt::driver().cuCtxSynchronize();
  if (r == CUDA_SUCCESS) return false;
  const char* name = nullptr;
  rt::driver().cuGetErrorName(r, &name);
  *why = std::string("CUDA error after launch: ") + (name ? name : "unknown");
  return true;
}

CandidateResult run_candidate(const tuner::RunRequest& req, ProblemData& d) {
  CandidateResult r;
  const MlstmProblem& p = d.p;
  try {
    // The reference outputs (the default config on set 0), once per problem and family.
    const std::string ref_key = std::string(to_string(req.family)) + "|" + tuner::config_text(req.reference);
    if (!d.reference.count(ref_key)) {
      DeviceBuffer ws(workspace_bytes(req.family, p, req.reference));
      restore_state(req.family, d);
      launch(req.family, d, req.reference, 0, ws);
      synchronize();
      d.reference[ref_key] = outputs(req.family, d);
      if (req.family == Family::Backward) d.df_scale[ref_key] = df_scale(d, d.reference[ref_key]);
    }
    if (req.family != Family::Step) {
      auto& small = d.small[req.family];
      if (!small) small = make_small_check(p, req.family);
      if (std::string why = check_small(req.family, req.config, *small); !why.empty()) {
        r.status = CandidateStatus::WrongResult;
        r.message = why;
        return r;
      }
    }
    DeviceBuffer ws(workspace_bytes(req.family, p, req.config));
    restore_state(req.family, d);
    launch(req.family, d, req.config, 0, ws);
    synchronize();
    const auto got = outputs(req.family, d);
    const auto& ref = d.reference[ref_key];
    const double tol = p.dtype == DType::FP32 ? 1e-4 : 2e-2;
    for (size_t o = 0; o < got.size(); ++o) {
      const bool df = req.family == Family::Backward && o == 4;  // outputs(): dq, dk, dv, di, df
      const double e = df ? tuner::df_scaled_error(got[o], ref[o], d.df_scale.at(ref_key)) : rel_error(got[o], ref[o]);
      r.max_rel_error = std::isnan(e) || std::isnan(r.max_rel_error) ? NAN : std::max(r.max_rel_error, e);
    }
    if (!(r.max_rel_error <= tol)) {
      r.status = CandidateStatus::WrongResult;
      r.message = "relative error " + std::to_string(r.max_rel_error) + " against the default, limit " + std::to_string(tol);
      return r;
    }
    int s = 0;
    const int n_sets = static_cast<int>(d.sets.size());
    std::vector<double> ms;
    if (req.family == Family::Step) {
      // A step is a few microseconds: time 10 back-to-back launches per repeat with the host's
      // enqueueing hidden behind a blocker, and rank candidates by what a decode loop sees, the
      // larger of the GPU and the host time per call: at small batches the host's launches are
      // the longer part (a config whose in-place call takes two launches pays for the second).
      static DeviceBuffer blocker(size_t{256} << 20);
      for (double us : time_us_per_call([&] { launch(req.family, d, req.config, s++ % n_sets, ws); }, 10,
                                        req.warmup, std::max(1, req.reps), blocker)
                           .loop_all)
        ms.push_back(us * 1e-3);
    } else {
      ms = time_ms([&] { launch(req.family, d, req.config, s++ % n_sets, ws); }, req.warmup, std::max(1, req.reps));
    }
    r.status = CandidateStatus::Ok;
    r.time_median_us = median(ms) * 1e3;
    r.time_spread_us = (ms.back() - ms.front()) * 1e3;
  } catch (const Error& e) {
    r.status = CandidateStatus::LaunchFailed;
    r.message = e.what();
  }
  std::string why;
  if (sticky_fault(&why)) {
    r.status = CandidateStatus::Faulted;
    r.message = why + (r.message.empty() ? "" : " (" + r.message + ")");
  }
  return r;
}

}  // namespace

int cmd_tune_worker(const std::vector<std::string>&) {
  tuner::Hello hello;
  int ord = 0;
  try {
    ord = rt::ensure_context();
    const DeviceInfo& dev = rt::device_info(ord);
    hello.ok = true;
    hello.device_name = dev.name;
    hello.arch = dev.arch;
    hello.smem_optin_bytes = dev.smem_optin_bytes;
    hello.l2_bytes = dev.l2_bytes;
    hello.env = store::current_env_key(dev);
  } catch (const Error& e) {
    hello = {};
    hello.no_gpu = e.code() == ErrorCode::NoDriver;
    hello.error = e.what();
  }
  std::printf("%s\n", tuner::to_line(hello).c_str());
  std::fflush(stdout);
  if (!hello.ok) return hello.no_gpu ? kNoGpu : kFailed;
  std::map<std::string, std::unique_ptr<ProblemData>> data;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    const tuner::RunRequest req = tuner::parse_request(line);
    CandidateResult r;
    try {
      const std::string pk = req.problem.to_string();
      if (!data.count(pk)) {
        data.clear();  // one problem's inputs at a time
        data[pk] = req.family == Family::Step ? make_step_data(req.problem.problem(), hello.l2_bytes)
                                              : make_data(req.problem.problem(), hello.l2_bytes);
      }
      r = run_candidate(req, *data[pk]);
    } catch (const Error& e) {  // inputs could not be made (memory): not the candidate's fault
      r.status = CandidateStatus::LaunchFailed;
      r.message = e.what();
      std::string why;
      if (sticky_fault(&why)) {
        r.status = CandidateStatus::Faulted;
        r.message = why;
      }
    }
    std::printf("%s\n", tuner::to_line(r).c_str());
    std::fflush(stdout);
    if (r.status == CandidateStatus::Faulted) return kFailed;
  }
  return kOk;
}

}  // namespace tfla::cli
