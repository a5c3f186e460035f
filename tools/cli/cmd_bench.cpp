// tfla bench: times the kernels on the GPU over the paper's constant-token sweep and prints
// ms, TFLOP/s, GB/s and the extra device memory of each shape (table, --csv, --json).
#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>
#include <tuple>

#include "args.hpp"
#include "commands.hpp"
#include "output.hpp"
#include "gpu.hpp"
#include "ops/fwd_config.hpp"
#include "ops/mlstm_backward.hpp"
#include "ops/mlstm_forward.hpp"
#include "ops/problem_check.hpp"
#include "runtime/device.hpp"
#include "runtime/driver.hpp"
#include "tfla/tfla.hpp"
#include "tfla_util/config_text.hpp"
#include "tfla_util/dtype_name.hpp"

namespace tfla::cli {
namespace {

struct Row {
  std::string op, variant;
  int64_t B, S, NH, Dqk, Dv;
  std::string dtype, config;
  double ms, tflops, gbps, extra_mb;
};

Config parse_config(const std::string& s) {
  try {
    return util::parse_config_text(s);
  } catch (const util::ConfigTextError& e) {
    throw UsageError(std::string("--config: ") + e.what());
  }
}

// A shape the library refuses is a usage error (exit 2), found before any GPU work.
void check_shape(const MlstmProblem& p) {
  try {
    ops::check_problem(p);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
}

// A --config the library refuses for p (an unknown key, a value out of range or unfit for the
// shape) is a usage error too, found without a GPU.
template <class F>
void check_config_for(const std::string& text, F&& resolve) {
  try {
    resolve();
  } catch (const Error& e) {
    if (e.code() != ErrorCode::InvalidArgument) throw;
    throw UsageError("--config " + text + ": " + e.what());
  }
}

// --normalize 0 or 1 (mLSTMsig's normalizer; mLSTMexp always normalizes).
bool normalize_flag(const Args& args) {
  const int64_t v = args.get_int("normalize", 1);
  if (v != 0 && v != 1) throw UsageError("--normalize takes 0 or 1, got " + std::to_string(v));
  return v == 1;
}

// --variant: a comma-separated list of exp and sig, each at most once.
std::vector<Variant> variants_of(const Args& args) {
  const std::string vs = args.get("variant", "exp,sig");
  std::vector<Variant> out;
  size_t pos = 0;
  while (pos <= vs.size()) {
    const size_t end = std::min(vs.find(',', pos), vs.size());
    const std::string item = vs.substr(pos, end - pos);
    const Variant v = item == "exp" ? Variant::Exp : Variant::Sig;
    if (item != "exp" && item != "sig")
      throw UsageError("--variant expects exp, sig or exp,sig; got '" + item + "' in '" + vs + "'");
    if (std::find(out.begin(), out.end(), v) != out.end())
      throw UsageError("--variant lists '" + item + "' twice in '" + vs + "'");
    out.push_back(v);
    pos = end + 1;
  }
  return out;
}

// --warmup and --reps: launches before and timed runs after, in ints.
int warmup_of(const Args& args, int def) { return static_cast<int>(args.get_int_in("warmup", def, 0, INT_MAX)); }
int reps_of(const Args& args, int def) { return static_cast<int>(args.get_int_in("reps", def, 1, INT_MAX)); }

DType dtype_of(const std::string& s) {
  if (std::optional<DType> d = util::parse_dtype(s)) return *d;
  throw UsageError("unknown dtype '" + s + "' (" + util::dtype_names() + ")");
}

// The forward and backward configs bench_op runs op with: --config pins the timed op's config
// (for fwbw: the forward's; the backward shares the chunk, the form and the engine), resolved
// by the library. Throws Error(InvalidArgument) for a config the library refuses for p.
std::pair<Config, Config> bench_configs(const std::string& op, const MlstmProblem& p, const Config& pinned,
                                        bool keep_states) {
  Config fcfg = pinned, bcfg;
  if (pinned.count("chunk")) bcfg["chunk"] = pinned.at("chunk");
  if (pinned.count("parallel")) bcfg["parallel"] = pinned.at("parallel");  // the form too
  if (pinned.count("engine")) bcfg["engine"] = pinned.at("engine");        // and the engine
  if (op == "bwd") {
    fcfg = bcfg;
    bcfg = pinned;
  }
  if (keep_states && op != "fwd") {  // saved states exist in the chunkwise form only
    fcfg.emplace("parallel", 0);
    bcfg.emplace("parallel", 0);
  }
  return {mlstm_forward_config(p, fcfg), mlstm_backward_config(p, bcfg)};
}

// op: "fwd", "bwd" or "fwbw". FLOPs: forward ~ 4 Dqk Dv + L (Dqk + Dv) per token and head
// (parallel form: S (Dqk + Dv)); the backward does about twice the forward's matrix work (dC,
// dQ, dK, dV), counted as 2x.
// lens: packed sequences of these lengths (p is then B = 1, S = T, num_seqs, max_seqlen), else
// null.
Row bench_op(const std::string& op, const MlstmProblem& p, const Config& pinned, int warmup, int reps,
             bool keep_states, float forget_mean, const std::vector<int64_t>* lens = nullptr) {
  const size_t eb = dtype_bytes(p.dtype);
  const int64_t n_qk = p.B * p.NH * p.S * p.Dqk, n_v = p.B * p.NH * p.S * p.Dv, n_g = p.B * p.NH * p.S;
  DeviceBuffer q(n_qk * eb), k(n_qk * eb), v(n_v * eb), h(n_v * eb);
  DeviceBuffer ig(n_g * dtype_bytes(p.gate_dtype)), fg(n_g * dtype_bytes(p.gate_dtype));
  fill_random(q.get(), p.dtype, n_qk, 1, 0.f, 1.f);
  fill_random(k.get(), p.dtype, n_qk, 2, 0.f, 1.f);
  fill_random(v.get(), p.dtype, n_v, 3, 0.f, 1.f);
  fill_random(ig.get(), p.gate_dtype, n_g, 4, 0.f, 1.f);
  fill_random(fg.get(), p.gate_dtype, n_g, 5, forget_mean, 1.f);
  Config fcfg, bcfg;
  std::tie(fcfg, bcfg) = bench_configs(op, p, pinned, keep_states);
  const bool saved = keep_states && op != "fwd";
  // with saved states the forward works inside the saved buffer, beside the scratch of a split
  // walk (as the Python binding passes it: without it the library allocates that per call)
  const size_t fws_bytes = mlstm_forward_workspace_size(p, fcfg, /*with_saved=*/saved);
  const size_t bws_bytes = op == "fwd" ? 0 : mlstm_backward_workspace_size(p, bcfg, saved);
  const size_t saved_bytes = saved ? mlstm_saved_size(p, fcfg) : 0;
  DeviceBuffer fws(fws_bytes), bws(bws_bytes), norm(n_g * 4), keep(saved_bytes);
  ForwardTensors t;
  t.q = q.get(); t.k = k.get(); t.v = v.get(); t.i = ig.get(); t.f = fg.get(); t.h = h.get();
  t.norm = norm.as<float>();
  DeviceBuffer cu;
  if (lens) {
    std::vector<int32_t> offsets{0};
    for (int64_t l : *lens) offsets.push_back(offsets.back() + static_cast<int32_t>(l));
    cu = DeviceBuffer(offsets.size() * 4);
    cu.upload(offsets.data(), offsets.size() * 4);
    t.cu_seqlens = cu.get();
  }
  if (saved) {
    t.saved = keep.get();
    t.saved_bytes = saved_bytes;
  }
  LaunchOptions fo;
  fo.workspace = fws.get();
  fo.workspace_bytes = fws_bytes;
  fo.config = fcfg;
  DeviceBuffer dh, dq, dk, dv, di, df;
  BackwardTensors bt;
  LaunchOptions bo;
  if (op != "fwd") {
    dh = DeviceBuffer(n_v * eb);
    fill_random(dh.get(), p.dtype, n_v, 6, 0.f, 1.f);
    dq = DeviceBuffer(n_qk * eb); dk = DeviceBuffer(n_qk * eb); dv = DeviceBuffer(n_v * eb);
    di = DeviceBuffer(n_g * dtype_bytes(p.gate_dtype)); df = DeviceBuffer(n_g * dtype_bytes(p.gate_dtype));
    bt.q = q.get(); bt.k = k.get(); bt.v = v.get(); bt.i = ig.get(); bt.f = fg.get(); bt.dh = dh.get();
    bt.norm = norm.as<float>();
    bt.dq = dq.get(); bt.dk = dk.get(); bt.dv = dv.get(); bt.di = di.get(); bt.df = df.get();
    bt.cu_seqlens = t.cu_seqlens;
    if (saved) {
      bt.saved = keep.get();
      bt.saved_bytes = saved_bytes;
    }
    bo.workspace = bws.get();
    bo.workspace_bytes = bws_bytes;
    bo.config = bcfg;
    mlstm_forward(p, t, fo);  // the normalizer the backward reads
  }
  std::function<void()> body;
  if (op == "fwd") body = [&] { mlstm_forward(p, t, fo); };
  else if (op == "bwd") body = [&] { mlstm_backward(p, bt, bo); };
  else body = [&] { mlstm_forward(p, t, fo); mlstm_backward(p, bt, bo); };
  const double ms = median(time_ms(body, warmup, reps));
  // the parallel form (parallel=1): one chunk of length S, no state products or traffic
  const bool par = (op == "bwd" ? bcfg : fcfg).at("parallel") == 1;
  const int64_t L = par ? p.S : (op == "bwd" ? bcfg : fcfg).at("chunk");
  const double tokens = static_cast<double>(p.B * p.NH * p.S);
  const double fwd_flops = tokens * ((par ? 0.0 : 4.0 * p.Dqk * p.Dv) + L * (p.Dqk + p.Dv));
  const double flops = op == "fwd" ? fwd_flops : op == "bwd" ? 2 * fwd_flops : 3 * fwd_flops;
  double chunks = static_cast<double>(p.B * ((p.S + L - 1) / L));  // chunk states per head
  if (lens) {
    chunks = 0;
    for (int64_t l : *lens) chunks += static_cast<double>((l + L - 1) / L);
  }
  const double io = tokens * ((2.0 * p.Dqk + 2.0 * p.Dv) * eb + 2.0 * dtype_bytes(p.gate_dtype));
  const double states = par ? 0.0 : 2.0 * p.NH * chunks * p.Dqk * p.Dv * eb;
  const double bytes = op == "fwd" ? io + states : op == "bwd" ? 2 * io + 2 * states : 3 * io + 3 * states;
  const double extra = (fws_bytes + bws_bytes + saved_bytes + (op == "fwd" ? 0 : n_g * 4.0)) / 1048576.0;
  Row r{op, to_string(p.variant), lens ? p.num_seqs : p.B, lens ? p.max_seqlen : p.S, p.NH, p.Dqk, p.Dv,
        to_string(p.dtype),
        to_string(op == "bwd" ? bcfg : fcfg), ms, flops / (ms * 1e9), bytes / (ms * 1e6), extra};
  return r;
}

// Host time per call on a warm process (kernels loaded, caller workspaces) of the inference
// forward (h only), the training forward (h and the normalizer the backward reads) and the
// backward: the library's dispatch (argument checks, config, memo lookup) plus the launches.
// Each: the median over 5 samples of 200 calls, timed on the host before the GPU catches up.
double host_us_per_call(const std::function<void()>& call) {
  std::vector<double> per_call_us;
  for (int rep = 0; rep < 5; ++rep) {
    const int calls = 200;
    const auto t0 = std::chrono::steady_clock::now();
    for (int c = 0; c < calls; ++c) call();
    const auto t1 = std::chrono::steady_clock::now();
    synchronize();
    per_call_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / calls);
  }
  return median(per_call_us);
}

int bench_overhead(bool json) {
  MlstmProblem p;
  p.B = 1; p.NH = 1; p.S = 64; p.Dqk = 64; p.Dv = 64;
  const int64_t n_qk = p.S * p.Dqk, n_g = p.S;
  DeviceBuffer q(n_qk * 2), k(n_qk * 2), v(n_qk * 2), h(n_qk * 2), ig(n_g * 4), fg(n_g * 4), norm(n_g * 4);
  DeviceBuffer dh(n_qk * 2), dq(n_qk * 2), dk(n_qk * 2), dv(n_qk * 2), di(n_g * 4), df(n_g * 4);
  fill_random(q.get(), p.dtype, n_qk, 1, 0.f, 1.f);
  fill_random(k.get(), p.dtype, n_qk, 2, 0.f, 1.f);
  fill_random(v.get(), p.dtype, n_qk, 3, 0.f, 1.f);
  fill_random(ig.get(), DType::FP32, n_g, 4, 0.f, 1.f);
  fill_random(fg.get(), DType::FP32, n_g, 5, 3.f, 1.f);
  fill_random(dh.get(), p.dtype, n_qk, 6, 0.f, 1.f);
  const size_t fws_bytes = mlstm_forward_workspace_size(p), bws_bytes = mlstm_backward_workspace_size(p);
  DeviceBuffer fws(fws_bytes), bws(bws_bytes);
  ForwardTensors t;
  t.q = q.get(); t.k = k.get(); t.v = v.get(); t.i = ig.get(); t.f = fg.get(); t.h = h.get();
  ForwardTensors tn = t;
  tn.norm = norm.as<float>();
  BackwardTensors bt;
  bt.q = q.get(); bt.k = k.get(); bt.v = v.get(); bt.i = ig.get(); bt.f = fg.get();
  bt.dh = dh.get(); bt.norm = norm.as<float>();
  bt.dq = dq.get(); bt.dk = dk.get(); bt.dv = dv.get(); bt.di = di.get(); bt.df = df.get();
  LaunchOptions fo, bo;
  fo.workspace = fws.get();
  fo.workspace_bytes = fws_bytes;
  bo.workspace = bws.get();
  bo.workspace_bytes = bws_bytes;
  synchronize();
  // the first call loads its kernels: from the cubin cache when warm, else through NVRTC
  const auto f0 = std::chrono::steady_clock::now();
  mlstm_forward(p, t, fo);
  synchronize();
  const double first_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - f0).count();
  mlstm_forward(p, tn, fo);
  mlstm_backward(p, bt, bo);
  synchronize();
  const double fwd_us = host_us_per_call([&] { mlstm_forward(p, t, fo); });
  const double train_us = host_us_per_call([&] { mlstm_forward(p, tn, fo); });
  const double bwd_us = host_us_per_call([&] { mlstm_backward(p, bt, bo); });
  const int fwd_launches = ops::select_fwd(p, {}, false).plans[0].count;
  const int bwd_launches = ops::select_bwd(p, {}, false).plans[0].count;
  if (json)
    std::printf("{\"op\": \"overhead\", \"B\": 1, \"NH\": 1, \"S\": 64, \"Dqk\": 64, \"Dv\": 64, "
                "\"first_call_ms\": %.3f, \"host_us_per_forward_call\": %.3f, "
                "\"host_us_per_training_forward_call\": %.3f, \"host_us_per_backward_call\": %.3f, "
                "\"forward_launches\": %d, \"backward_launches\": %d}\n",
                first_ms, fwd_us, train_us, bwd_us, fwd_launches, bwd_launches);
  else
    std::printf("B 1, NH 1, S 64, Dqk 64, Dv 64, bf16; host us per call on a warm process (median of 5 x 200)\n"
                "first mlstm_forward call (kernel load, context already current): %.2f ms\n"
                "mlstm_forward, h only:              %7.2f us (%d launches)\n"
                "mlstm_forward, h and normalizer:    %7.2f us\n"
                "mlstm_backward:                     %7.2f us (%d launches)\n",
                first_ms, fwd_us, fwd_launches, train_us, bwd_us, bwd_launches);
  return kOk;
}

// ---- bench step ----------------------------------------------------------------------------
// Times are GPU time per call of back-to-back launches with the host's enqueueing hidden
// (time_us_per_call: a blocker keeps the GPU busy while the host enqueues), so a small-B time
// is the kernel's plus the launch gaps a decode loop in a CUDA graph also has.

// Device-to-device copy bandwidth (read + write bytes per second, GB/s) of a buffer of `bytes`.
double copy_gbps(size_t bytes, int reps, const DeviceBuffer& blocker) {
  DeviceBuffer src(bytes), dst(bytes);
  src.fill_byte(1);
  const CallTime t = time_us_per_call(
      [&] {
        TFLA_CU(cuMemcpyDtoDAsync(reinterpret_cast<CUdeviceptr>(dst.get()),
                                  reinterpret_cast<CUdeviceptr>(src.get()), bytes, nullptr));
      },
      20, 3, reps, blocker);
  return 2.0 * static_cast<double>(bytes) / (t.us * 1e3);
}

struct StepRow {
  std::string variant;
  int64_t B, T, NH, Dqk, Dv;
  std::string dtype, config;
  double us_call, us_token, gbps, copy_gbps, host_us;
};

// One step problem: T tokens per call, states updated in place call after call (a decode loop).
// Bytes per call: the state read and written once (C, n, m, fp32), q, k, v, i, f read, h written.
StepRow bench_step_one(const MlstmProblem& p, const Config& pinned, int warmup, int reps,
                       const DeviceBuffer& blocker) {
  const size_t eb = dtype_bytes(p.dtype), gb = dtype_bytes(p.gate_dtype);
  const int64_t bh = p.B * p.NH, n_qk = bh * p.S * p.Dqk, n_v = bh * p.S * p.Dv, n_g = bh * p.S;
  DeviceBuffer q(n_qk * eb), k(n_qk * eb), v(n_v * eb), h(n_v * eb), ig(n_g * gb), fg(n_g * gb);
  DeviceBuffer C(bh * p.Dqk * p.Dv * 4), n(bh * p.Dqk * 4), m(bh * 4);
  fill_random(q.get(), p.dtype, n_qk, 1, 0.f, 1.f);
  fill_random(k.get(), p.dtype, n_qk, 2, 0.f, 1.f);
  fill_random(v.get(), p.dtype, n_v, 3, 0.f, 1.f);
  fill_random(ig.get(), p.gate_dtype, n_g, 4, 0.f, 1.f);
  fill_random(fg.get(), p.gate_dtype, n_g, 5, 3.f, 1.f);
  fill_random(C.get(), DType::FP32, bh * p.Dqk * p.Dv, 6, 0.f, 0.1f);
  fill_random(n.get(), DType::FP32, bh * p.Dqk, 7, 0.f, 0.1f);
  fill_random(m.get(), DType::FP32, bh, 8, 0.f, 1.f);
  StepTensors t;
  t.q = q.get(); t.k = k.get(); t.v = v.get(); t.i = ig.get(); t.f = fg.get(); t.h = h.get();
  t.C = C.as<float>(); t.n = n.as<float>(); t.m = m.as<float>();
  LaunchOptions o;
  o.config = mlstm_step_config(p, pinned);
  const CallTime gt = time_us_per_call([&] { mlstm_step(p, t, o); }, 20, warmup, reps, blocker);
  const double state = 2.0 * bh * (p.Dqk * p.Dv + p.Dqk + 1) * 4.0;
  const double io = static_cast<double>(n_g) * ((2 * p.Dqk + 2 * p.Dv) * eb + 2 * gb);
  return {to_string(p.variant), p.B, p.S, p.NH, p.Dqk, p.Dv, to_string(p.dtype), to_string(o.config),
          gt.us, gt.us / p.S, (state + io) / (gt.us * 1e3), 0.0, gt.host_us};
}

int bench_step(const std::vector<std::string>& argv) {
  Args args(argv, {"json"},
            {"variant", "batch", "tokens", "nh", "dqk", "dv", "dtype", "gate-dtype", "config", "csv",
             "warmup", "reps", "normalize"});
  if (args.positionals().size() != 1 || args.positionals()[0] != "step")
    throw UsageError("usage: tfla bench step [--batch 1,4,16,64,256] [--tokens 1,4] [options]");
  (void)runtime_info();
  MlstmProblem base;
  base.NH = args.get_int("nh", 8);
  base.Dqk = args.get_int("dqk", 256);
  base.Dv = args.get_int("dv", 512);
  base.dtype = dtype_of(args.get("dtype", "bf16"));
  base.gate_dtype = args.has("gate-dtype") ? dtype_of(args.get("gate-dtype")) : DType::FP32;
  base.normalize = normalize_flag(args);
  const auto batches = args.get_ints("batch", {1, 4, 16, 64, 256});
  const auto tokens = args.get_ints("tokens", {1, 4});
  const Config pinned = args.has("config") ? parse_config(args.get("config")) : Config{};
  const int warmup = warmup_of(args, 3);
  const int reps = reps_of(args, 10);
  const std::vector<Variant> variants = variants_of(args);
  for (int64_t B : batches)
    if (B < 1) throw UsageError("--batch values must be >= 1");
  for (int64_t T : tokens)
    if (T < 1) throw UsageError("--tokens values must be >= 1");
  for (int64_t B : batches)
    for (int64_t T : tokens)
      for (Variant var : variants) {
        MlstmProblem p = base;
        p.variant = var;
        p.B = B;
        p.S = T;
        check_shape(p);
        if (args.has("config"))
          check_config_for(args.get("config"), [&] { (void)mlstm_step_config(p, pinned); });
      }
  const bool json = args.flag("json");
  const int ord = rt::ensure_context();
  const DeviceInfo& dev = rt::device_info(ord);
  DeviceBuffer blocker(size_t{256} << 20);
  const size_t large_bytes = size_t{1} << 30;
  const double large_gbps = copy_gbps(large_bytes, reps, blocker);
  if (!json) {
    std::printf("tfla bench step on %s: NH = %lld, Dqk = %lld, Dv = %lld, %s, fp32 state in place\n"
                "copy bandwidth (device-to-device, read + write) of a 1 GiB buffer: %.0f GB/s\n",
                dev.name.c_str(), (long long)base.NH, (long long)base.Dqk, (long long)base.Dv,
                to_string(base.dtype), large_gbps);
    std::printf("%-7s %5s %3s %10s %10s %8s %10s %7s %8s  %s\n", "variant", "B", "T", "us/call", "us/token",
                "GB/s", "copy GB/s", "% copy", "host us", "config");
  }
  std::vector<StepRow> rows;
  for (int64_t B : batches) {
    // The copy of a buffer of this B's state size, measured right here (it is L2-resident for
    // small B, like the state of a step loop).
    const double state_copy = copy_gbps(static_cast<size_t>(B * base.NH * base.Dqk * base.Dv * 4), reps, blocker);
    for (Variant var : variants)
      for (int64_t T : tokens) {
        MlstmProblem p = base;
        p.variant = var;
        p.B = B;
        p.S = T;
        StepRow r = bench_step_one(p, pinned, warmup, reps, blocker);
        r.copy_gbps = state_copy;
        rows.push_back(r);
        if (!json)
          std::printf("%-7s %5lld %3lld %10.2f %10.2f %8.0f %10.0f %6.0f%% %8.2f  %s\n", r.variant.c_str(),
                      (long long)r.B, (long long)r.T, r.us_call, r.us_token, r.gbps, r.copy_gbps,
                      100.0 * r.gbps / r.copy_gbps, r.host_us, r.config.c_str());
        std::fflush(stdout);
      }
  }
  if (args.has("csv")) {
    std::ofstream csv(args.get("csv"));
    if (!csv) throw Error(ErrorCode::InvalidArgument, "cannot write --csv file " + args.get("csv"));
    csv << "op,variant,B,T,NH,Dqk,Dv,dtype,us_per_call,us_per_token,gbps,copy_gbps,copy_pct,"
           "large_copy_gbps,host_us,config\n";
    for (const StepRow& r : rows)
      csv << "step," << r.variant << "," << r.B << "," << r.T << "," << r.NH << "," << r.Dqk << "," << r.Dv
          << "," << r.dtype << "," << r.us_call << "," << r.us_token << "," << r.gbps << "," << r.copy_gbps
          << "," << 100.0 * r.gbps / r.copy_gbps << "," << large_gbps << "," << r.host_us << ",\""
          << r.config << "\"\n";
  }
  if (json) {
    nlohmann::json j = nlohmann::json::array();
    for (const StepRow& r : rows)
      j.push_back({{"op", "step"}, {"variant", r.variant}, {"B", r.B}, {"T", r.T}, {"NH", r.NH},
                   {"Dqk", r.Dqk}, {"Dv", r.Dv}, {"dtype", r.dtype}, {"us_per_call", r.us_call},
                   {"us_per_token", r.us_token}, {"gbps", r.gbps}, {"copy_gbps", r.copy_gbps},
                   {"copy_pct", 100.0 * r.gbps / r.copy_gbps}, {"large_copy_gbps", large_gbps},
                   {"host_us", r.host_us}, {"config", r.config}, {"device", dev.name}});
    print_json(j);
  }
  return kOk;
}

// The op of a bench command line: its first positional argument (the options of every op are
// skipped with their values), or "" when there is none; *at: its index in argv.
std::string bench_op_name(const std::vector<std::string>& argv, size_t* at) {
  static const std::set<std::string> valued{
      "variant", "seqs", "tokens", "nh", "dqk", "dv", "dtype", "gate-dtype", "config", "csv", "warmup",
      "reps", "normalize", "varlen", "forget-mean", "batch", "m", "n", "k", "samples", "mib"};
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a.rfind("--", 0) != 0) {
      *at = i;
      return a;
    }
    if (a.find('=') == std::string::npos && valued.count(a.substr(2))) ++i;
  }
  return "";
}

}  // namespace

int cmd_bench(const std::vector<std::string>& argv) {
  const char* const ops = "forward, backward, fwbw, step, overhead, gemm, tma-copy";
  size_t at = 0;
  const std::string op_name = bench_op_name(argv, &at);
  if (op_name.empty()) throw UsageError(std::string("bench needs one op: ") + ops);
  std::vector<std::string> rest = argv;  // the arguments without the op
  rest.erase(rest.begin() + static_cast<std::ptrdiff_t>(at));
  // `bench step`, gemm and tma-copy have their own options
  if (op_name == "step") return bench_step(argv);
  if (op_name == "gemm") return bench_gemm(rest);
  if (op_name == "tma-copy") return bench_tma_copy(rest);
  if (op_name == "overhead") {
    const Args args(rest, {"json"}, {});
    if (!args.positionals().empty())
      throw UsageError("bench overhead: unexpected argument '" + args.positionals()[0] + "'");
    rt::ensure_context();
    return bench_overhead(args.flag("json"));
  }
  Args args(argv, {"json", "saved"},
            {"variant", "seqs", "tokens", "nh", "dqk", "dv", "dtype", "gate-dtype", "config", "csv",
             "warmup", "reps", "normalize", "varlen", "forget-mean"});
  if (args.positionals().size() != 1)
    throw UsageError("bench " + op_name + ": unexpected argument '" + args.positionals()[1] + "'");
  const std::string op = op_name == "forward" ? "fwd" : op_name == "backward" ? "bwd" : op_name == "fwbw" ? "fwbw" : "";
  if (op.empty()) throw UsageError("unknown bench op '" + op_name + "' (" + ops + ")");
  std::string why;
  (void)runtime_info();
  MlstmProblem base;
  base.NH = args.get_int("nh", 8);
  base.Dqk = args.get_int("dqk", 256);
  base.Dv = args.get_int("dv", 512);
  base.dtype = dtype_of(args.get("dtype", "bf16"));
  base.gate_dtype = args.has("gate-dtype") ? dtype_of(args.get("gate-dtype")) : DType::FP32;
  base.normalize = normalize_flag(args);
  const int64_t tokens = args.get_int("tokens", 65536);
  const auto seqs = args.get_ints("seqs", {512, 1024, 2048, 4096, 8192, 16384, 32768, 65536});
  const Config pinned = args.has("config") ? parse_config(args.get("config")) : Config{};
  const int warmup = warmup_of(args, 3);
  const int reps = reps_of(args, 10);
  const std::vector<Variant> variants = variants_of(args);
  // Every argument is judged before the driver is touched: a usage error is exit 2 on any
  // machine.
  if (tokens < 1) throw UsageError("--tokens must be >= 1");
  // --forget-mean M: forget-gate preactivations from N(M, 1); the default 3 decays a state by
  // about 5 in log per 64 tokens, M = 1 by about 26, M = 0 by about 52
  const double forget_mean = args.get_double("forget-mean", 3.0);
  if (!std::isfinite(forget_mean) || std::fabs(forget_mean) > 100)
    throw UsageError("--forget-mean must be a finite number in [-100, 100]");
  // --varlen N: N packed sequences of random lengths (mean tokens / N) beside N equal ones
  const int64_t varlen = args.has("varlen") ? args.get_int("varlen", 0) : 0;
  if (args.has("varlen")) {
    if (varlen < 1 || tokens % varlen)
      throw UsageError("--varlen N needs N >= 1 dividing --tokens (the equal-length row is B = N, S = tokens / N)");
    if (args.has("seqs")) throw UsageError("--varlen sets the sequences: leave out --seqs");
    if (args.flag("saved") && op == "fwd") throw UsageError("--saved applies to backward and fwbw");
  }
  std::vector<int64_t> lens;
  if (varlen) {  // uniform in [1, 2 mean - 1], then the last one adjusted so they sum to tokens
    const int64_t mean = tokens / varlen;
    uint64_t state = 0x2545F4914F6CDD1Dull;
    int64_t sum = 0;
    for (int64_t j = 0; j < varlen; ++j) {
      state ^= state << 13; state ^= state >> 7; state ^= state << 17;
      const int64_t l = mean > 1 ? 1 + static_cast<int64_t>(state % static_cast<uint64_t>(2 * mean - 1)) : 1;
      lens.push_back(l);
      sum += l;
    }
    for (int64_t j = 0; sum != tokens; j = (j + 1) % varlen) {  // the difference spread one by one
      const int64_t step = sum < tokens ? 1 : -1;
      if (lens[j] + step < 1 || lens[j] + step > 2 * mean - 1) continue;
      lens[j] += step;
      sum += step;
    }
  }
  const std::vector<int64_t> seqs_run = varlen ? std::vector<int64_t>{tokens / varlen} : seqs;
  for (int64_t S : seqs_run) {
    if (S < 1 || tokens % S) throw UsageError("every S must divide --tokens");
    for (Variant var : variants) {
      MlstmProblem p = base;
      p.variant = var;
      p.S = S;
      p.B = tokens / S;
      check_shape(p);
      if (args.has("config"))
        check_config_for(args.get("config"), [&] { (void)bench_configs(op, p, pinned, args.flag("saved")); });
      if (!varlen) continue;
      MlstmProblem pk = p;  // the packed row's problem (as in the loop below)
      pk.B = 1;
      pk.S = tokens;
      pk.num_seqs = varlen;
      pk.max_seqlen = *std::max_element(lens.begin(), lens.end());
      check_shape(pk);
      if (args.has("config"))
        check_config_for(args.get("config"), [&] { (void)bench_configs(op, pk, pinned, args.flag("saved")); });
    }
  }
  const int ord = rt::ensure_context();
  const DeviceInfo& dev = rt::device_info(ord);
  std::vector<Row> rows;
  if (!args.flag("json"))
    std::printf("tfla bench %s on %s: B*S = %lld, NH = %lld, Dqk = %lld, Dv = %lld, %s, forget gates N(%g, 1)\n",
                op_name.c_str(), dev.name.c_str(), (long long)tokens, (long long)base.NH,
                (long long)base.Dqk, (long long)base.Dv, to_string(base.dtype), forget_mean);
  if (!args.flag("json"))
    std::printf("%-8s %6s %7s %10s %9s %9s %10s  %s\n", "variant", "B", "S", "ms", "TFLOP/s",
                "GB/s", "extra MiB", "config");
  if (varlen && !args.flag("json"))
    std::printf("packed: %lld sequences of %lld to %lld tokens (B is the sequence count, S the longest)\n",
                (long long)varlen, (long long)*std::min_element(lens.begin(), lens.end()),
                (long long)*std::max_element(lens.begin(), lens.end()));
  for (Variant var : variants)
    for (int64_t S : seqs_run) {
      if (S < 1 || tokens % S) throw UsageError("every S must divide --tokens");
      MlstmProblem p = base;
      p.variant = var;
      p.S = S;
      p.B = tokens / S;
      Row r = bench_op(op, p, pinned, warmup, reps, args.flag("saved"), static_cast<float>(forget_mean));
      rows.push_back(r);
      if (!args.flag("json"))
        std::printf("%-8s %6lld %7lld %10.3f %9.1f %9.1f %10.1f  %s\n", r.variant.c_str(),
                    (long long)r.B, (long long)r.S, r.ms, r.tflops, r.gbps, r.extra_mb, r.config.c_str());
      std::fflush(stdout);
      if (!varlen) continue;
      MlstmProblem pk = base;
      pk.variant = var;
      pk.B = 1;
      pk.S = tokens;
      pk.num_seqs = varlen;
      pk.max_seqlen = *std::max_element(lens.begin(), lens.end());
      Row rp = bench_op(op, pk, pinned, warmup, reps, args.flag("saved"), static_cast<float>(forget_mean), &lens);
      rp.op += ".packed";
      rows.push_back(rp);
      if (!args.flag("json"))
        std::printf("%-8s %6lld %7lld %10.3f %9.1f %9.1f %10.1f  %s  (packed; %.3fx the equal-length time)\n",
                    rp.variant.c_str(), (long long)rp.B, (long long)rp.S, rp.ms, rp.tflops, rp.gbps, rp.extra_mb,
                    rp.config.c_str(), rp.ms / r.ms);
      std::fflush(stdout);
    }
  if (args.has("csv")) {
    std::ofstream csv(args.get("csv"));
    if (!csv) throw Error(ErrorCode::InvalidArgument, "cannot write --csv file " + args.get("csv"));
    csv << "op,variant,B,S,NH,Dqk,Dv,dtype,ms,tflops,gbps,extra_mib,config\n";
    for (const Row& r : rows)
      csv << r.op << "," << r.variant << "," << r.B << "," << r.S << "," << r.NH << "," << r.Dqk << ","
          << r.Dv << "," << r.dtype << "," << r.ms << "," << r.tflops << "," << r.gbps << ","
          << r.extra_mb << ",\"" << r.config << "\"\n";
  }
  if (args.flag("json")) {
    nlohmann::json j = nlohmann::json::array();
    for (const Row& r : rows)
      j.push_back({{"op", r.op}, {"variant", r.variant}, {"B", r.B}, {"S", r.S}, {"NH", r.NH},
                   {"Dqk", r.Dqk}, {"Dv", r.Dv}, {"dtype", r.dtype}, {"ms", r.ms},
                   {"tflops", r.tflops}, {"gbps", r.gbps}, {"extra_mib", r.extra_mb},
                   {"config", r.config}, {"forget_mean", forget_mean}, {"device", dev.name}});
    print_json(j);
  }
  return kOk;
}

}  // namespace tfla::cli
