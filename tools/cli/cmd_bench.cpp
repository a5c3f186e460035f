// tfla bench: times the kernels on the GPU over the paper's constant-token sweep and prints
// ms, TFLOP/s, GB/s and the extra device memory of each shape (table, --csv, --json).
#include <chrono>
#include <cstdio>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>

#include "args.hpp"
#include "commands.hpp"
#include "gpu.hpp"
#include "ops/fwd_config.hpp"
#include "runtime/device.hpp"
#include "tfla/tfla.hpp"

namespace tfla::cli {
namespace {

struct Row {
  std::string op, variant;
  int64_t B, S, NH, Dqk, Dv;
  std::string dtype, config;
  double ms, tflops, gbps, extra_mb;
};

Config parse_config(const std::string& s) {
  Config c;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    const std::string item = s.substr(pos, end - pos);
    const size_t eq = item.find('=');
    if (eq == std::string::npos) throw UsageError("--config expects key=value,..., got '" + s + "'");
    try {
      c[item.substr(0, eq)] = std::stoll(item.substr(eq + 1));
    } catch (const std::exception&) {
      throw UsageError("--config value in '" + item + "' is not an integer");
    }
    pos = end + 1;
  }
  return c;
}

DType dtype_of(const std::string& s) {
  if (s == "bf16") return DType::BF16;
  if (s == "fp16") return DType::FP16;
  if (s == "fp32") return DType::FP32;
  throw UsageError("unknown dtype '" + s + "'");
}

// op: "fwd", "bwd" or "fwbw". FLOPs: forward ~ 4 Dqk Dv + L (Dqk + Dv) per token and head;
// the backward does about twice the forward's matrix work (dC, dQ, dK, dV), counted as 2x.
Row bench_op(const std::string& op, const MlstmProblem& p, const Config& pinned, int warmup, int reps,
             bool keep_states) {
  const size_t eb = dtype_bytes(p.dtype);
  const int64_t n_qk = p.B * p.NH * p.S * p.Dqk, n_v = p.B * p.NH * p.S * p.Dv, n_g = p.B * p.NH * p.S;
  DeviceBuffer q(n_qk * eb), k(n_qk * eb), v(n_v * eb), h(n_v * eb);
  DeviceBuffer ig(n_g * dtype_bytes(p.gate_dtype)), fg(n_g * dtype_bytes(p.gate_dtype));
  fill_random(q.get(), p.dtype, n_qk, 1, 0.f, 1.f);
  fill_random(k.get(), p.dtype, n_qk, 2, 0.f, 1.f);
  fill_random(v.get(), p.dtype, n_v, 3, 0.f, 1.f);
  fill_random(ig.get(), p.gate_dtype, n_g, 4, 0.f, 1.f);
  fill_random(fg.get(), p.gate_dtype, n_g, 5, 3.f, 1.f);
  // --config pins the timed op's config (for fwbw: the forward's; the backward shares the chunk)
  Config fcfg = pinned, bcfg;
  if (pinned.count("chunk")) bcfg["chunk"] = pinned.at("chunk");
  if (op == "bwd") {
    fcfg = bcfg;
    bcfg = pinned;
  }
  fcfg = mlstm_forward_config(p, fcfg);
  bcfg = mlstm_backward_config(p, bcfg);
  const bool saved = keep_states && op != "fwd";
  // with saved states the forward works inside the saved buffer
  const size_t fws_bytes = saved ? 0 : mlstm_forward_workspace_size(p, fcfg);
  const size_t bws_bytes = op == "fwd" ? 0 : mlstm_backward_workspace_size(p, bcfg, saved);
  const size_t saved_bytes = saved ? mlstm_saved_size(p, fcfg) : 0;
  DeviceBuffer fws(fws_bytes), bws(bws_bytes), norm(n_g * 4), keep(saved_bytes);
  ForwardTensors t;
  t.q = q.get(); t.k = k.get(); t.v = v.get(); t.i = ig.get(); t.f = fg.get(); t.h = h.get();
  t.norm = norm.as<float>();
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
  const int64_t L = (op == "bwd" ? bcfg : fcfg).at("chunk");
  const double tokens = static_cast<double>(p.B * p.NH * p.S);
  const double fwd_flops = tokens * (4.0 * p.Dqk * p.Dv + L * (p.Dqk + p.Dv));
  const double flops = op == "fwd" ? fwd_flops : op == "bwd" ? 2 * fwd_flops : 3 * fwd_flops;
  const double nc = static_cast<double>((p.S + L - 1) / L);
  const double io = tokens * ((2.0 * p.Dqk + 2.0 * p.Dv) * eb + 2.0 * dtype_bytes(p.gate_dtype));
  const double states = 2.0 * p.B * p.NH * nc * p.Dqk * p.Dv * eb;
  const double bytes = op == "fwd" ? io + states : op == "bwd" ? 2 * io + 2 * states : 3 * io + 3 * states;
  const double extra = (fws_bytes + bws_bytes + saved_bytes + (op == "fwd" ? 0 : n_g * 4.0)) / 1048576.0;
  Row r{op, to_string(p.variant), p.B, p.S, p.NH, p.Dqk, p.Dv, to_string(p.dtype),
        to_string(op == "bwd" ? bcfg : fcfg), ms, flops / (ms * 1e9), bytes / (ms * 1e6), extra};
  return r;
}

// Host time per mlstm_forward call on a warm process (kernels loaded, caller workspace): the
// library's dispatch (argument checks, config, memo lookup) plus the three launches.
int bench_overhead(bool json) {
  MlstmProblem p;
  p.B = 1; p.NH = 1; p.S = 64; p.Dqk = 64; p.Dv = 64;
  const int64_t n_qk = p.S * p.Dqk, n_g = p.S;
  DeviceBuffer q(n_qk * 2), k(n_qk * 2), v(n_qk * 2), h(n_qk * 2), ig(n_g * 4), fg(n_g * 4);
  fill_random(q.get(), p.dtype, n_qk, 1, 0.f, 1.f);
  fill_random(k.get(), p.dtype, n_qk, 2, 0.f, 1.f);
  fill_random(v.get(), p.dtype, n_qk, 3, 0.f, 1.f);
  fill_random(ig.get(), DType::FP32, n_g, 4, 0.f, 1.f);
  fill_random(fg.get(), DType::FP32, n_g, 5, 3.f, 1.f);
  const size_t ws_bytes = mlstm_forward_workspace_size(p);
  DeviceBuffer ws(ws_bytes);
  ForwardTensors t;
  t.q = q.get(); t.k = k.get(); t.v = v.get(); t.i = ig.get(); t.f = fg.get(); t.h = h.get();
  LaunchOptions o;
  o.workspace = ws.get();
  o.workspace_bytes = ws_bytes;
  synchronize();
  // the first call loads its kernels: from the cubin cache when warm, else through NVRTC
  const auto f0 = std::chrono::steady_clock::now();
  mlstm_forward(p, t, o);
  synchronize();
  const double first_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - f0).count();
  std::vector<double> per_call_us;
  for (int rep = 0; rep < 5; ++rep) {
    const int calls = 200;
    const auto t0 = std::chrono::steady_clock::now();
    for (int c = 0; c < calls; ++c) mlstm_forward(p, t, o);
    const auto t1 = std::chrono::steady_clock::now();
    synchronize();
    per_call_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / calls);
  }
  const double med = median(per_call_us);
  if (json)
    std::printf("{\"op\": \"overhead\", \"first_call_ms\": %.3f, \"host_us_per_forward_call\": %.3f, "
                "\"launches_per_call\": 3}\n", first_ms, med);
  else
    std::printf("first mlstm_forward call (kernel load, context already current): %.2f ms\n"
                "host time per mlstm_forward call (3 kernel launches, warm process): %.2f us "
                "(median of 5 x 200 calls)\n", first_ms, med);
  return kOk;
}

}  // namespace

int cmd_bench(const std::vector<std::string>& argv) {
  Args args(argv, {"json", "saved"},
            {"variant", "seqs", "tokens", "nh", "dqk", "dv", "dtype", "gate-dtype", "config", "csv",
             "warmup", "reps", "normalize"});
  if (args.positionals().size() != 1) throw UsageError("bench needs one op: forward, backward, fwbw or overhead");
  const std::string op_name = args.positionals()[0];
  if (op_name == "overhead") {
    rt::ensure_context();
    return bench_overhead(args.flag("json"));
  }
  const std::string op = op_name == "forward" ? "fwd" : op_name == "backward" ? "bwd" : op_name == "fwbw" ? "fwbw" : "";
  if (op.empty()) throw UsageError("unknown bench op '" + op_name + "' (forward, backward, fwbw)");
  std::string why;
  (void)runtime_info();
  MlstmProblem base;
  base.NH = args.get_int("nh", 8);
  base.Dqk = args.get_int("dqk", 256);
  base.Dv = args.get_int("dv", 512);
  base.dtype = dtype_of(args.get("dtype", "bf16"));
  base.gate_dtype = args.has("gate-dtype") ? dtype_of(args.get("gate-dtype")) : DType::FP32;
  base.normalize = args.get_int("normalize", 1) != 0;
  const int64_t tokens = args.get_int("tokens", 65536);
  const auto seqs = args.get_ints("seqs", {512, 1024, 2048, 4096, 8192, 16384, 32768, 65536});
  const Config pinned = args.has("config") ? parse_config(args.get("config")) : Config{};
  const int warmup = static_cast<int>(args.get_int("warmup", 3));
  const int reps = static_cast<int>(args.get_int("reps", 10));
  std::vector<Variant> variants;
  {
    const std::string vs = args.get("variant", "exp,sig");
    if (vs.find("exp") != std::string::npos) variants.push_back(Variant::Exp);
    if (vs.find("sig") != std::string::npos) variants.push_back(Variant::Sig);
    if (variants.empty()) throw UsageError("--variant expects exp, sig or exp,sig");
  }
  const int ord = rt::ensure_context();
  const DeviceInfo& dev = rt::device_info(ord);
  std::vector<Row> rows;
  if (!args.flag("json"))
    std::printf("tfla bench %s on %s: B*S = %lld, NH = %lld, Dqk = %lld, Dv = %lld, %s\n",
                op_name.c_str(), dev.name.c_str(), (long long)tokens, (long long)base.NH,
                (long long)base.Dqk, (long long)base.Dv, to_string(base.dtype));
  if (!args.flag("json"))
    std::printf("%-8s %6s %7s %10s %9s %9s %10s  %s\n", "variant", "B", "S", "ms", "TFLOP/s",
                "GB/s", "extra MiB", "config");
  for (Variant var : variants)
    for (int64_t S : seqs) {
      if (S < 1 || tokens % S) throw UsageError("every S must divide --tokens");
      MlstmProblem p = base;
      p.variant = var;
      p.S = S;
      p.B = tokens / S;
      Row r = bench_op(op, p, pinned, warmup, reps, args.flag("saved"));
      rows.push_back(r);
      if (!args.flag("json"))
        std::printf("%-8s %6lld %7lld %10.3f %9.1f %9.1f %10.1f  %s\n", r.variant.c_str(),
                    (long long)r.B, (long long)r.S, r.ms, r.tflops, r.gbps, r.extra_mb, r.config.c_str());
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
                   {"config", r.config}, {"device", dev.name}});
    std::printf("%s\n", j.dump(2).c_str());
  }
  return kOk;
}

}  // namespace tfla::cli
