// The C++ API's entry points: errors, enums, runtime info, and the op front doors.
#include <algorithm>
#include <string>

#include "ops/bwd_config.hpp"
#include "ops/fwd_config.hpp"
#include "ops/mlstm_backward.hpp"
#include "ops/mlstm_forward.hpp"
#include "ops/packed.hpp"
#include "ops/problem_check.hpp"
#include "runtime/device.hpp"
#include "runtime/driver.hpp"
#include "runtime/kernel.hpp"
#include "runtime/nvrtc.hpp"
#include "tfla/tfla.hpp"

#ifndef TFLA_VERSION_STRING
#define TFLA_VERSION_STRING "0.0.0"
#endif

namespace tfla {

Error::Error(ErrorCode code, const std::string& message, std::string details)
    : std::runtime_error(message), code_(code), details_(std::move(details)) {}

const char* to_string(ErrorCode c) {
  switch (c) {
    case ErrorCode::InvalidArgument: return "invalid argument";
    case ErrorCode::Unsupported: return "unsupported";
    case ErrorCode::NoDriver: return "no CUDA driver or device";
    case ErrorCode::Cuda: return "CUDA error";
    case ErrorCode::Compile: return "kernel compilation failed";
    case ErrorCode::Cache: return "cache error";
    case ErrorCode::Internal: return "internal error";
  }
  return "unknown error";
}
const char* to_string(DType d) {
  switch (d) {
    case DType::BF16: return "bf16";
    case DType::FP16: return "fp16";
    case DType::FP32: return "fp32";
  }
  return "?";
}
const char* to_string(Variant v) { return v == Variant::Exp ? "exp" : "sig"; }
size_t dtype_bytes(DType d) { return d == DType::FP32 ? 4 : 2; }

std::string to_string(const Config& c) {
  std::string s;
  for (const auto& [k, v] : c) s += (s.empty() ? "" : ",") + k + "=" + std::to_string(v);
  return s;
}

std::string version() { return TFLA_VERSION_STRING; }

RuntimeInfo runtime_info() {
  RuntimeInfo info;
  info.tfla_version = version();
  const rt::NvrtcStatus& nv = rt::nvrtc_status();
  if (nv.loaded) {
    info.nvrtc_major = nv.nvrtc.major;
    info.nvrtc_minor = nv.nvrtc.minor;
    info.nvrtc_path = nv.nvrtc.path;
    info.nvrtc_found_by = nv.nvrtc.found_by;
    info.nvrtc_builtins_path = nv.nvrtc.builtins_path;
  } else {
    info.nvrtc_error = nv.error;
  }
  std::string why;
  info.driver_loaded = rt::driver_available(&why);
  info.driver_error = why;
  if (!info.driver_loaded) return info;
  try {
    const rt::Driver& d = rt::driver();
    info.driver_version = d.version;
    int count = 0;
    rt::check(d.cuDeviceGetCount(&count), "cuDeviceGetCount");
    for (int i = 0; i < count; ++i) info.devices.push_back(rt::device_info(i));
  } catch (const Error& e) {
    info.driver_error = e.what();
  }
  return info;
}

Config mlstm_forward_config(const MlstmProblem& problem, const Config& pinned) {
  ops::check_problem(problem);
  ops::check_config(pinned, "forward config");
  Config pins;
  const ops::FwdSelection& sel = ops::select_fwd(ops::launch_problem(problem),
                                                 ops::packed_pins(problem, pinned, ops::Op::Forward, pins), false,
                                                 ops::is_packed(problem));
  if (!sel.rejected.empty())
    throw Error(ErrorCode::InvalidArgument, "invalid forward config: " + sel.rejected, to_string(sel.cfg.to_config()));
  return sel.cfg.to_config();
}

namespace {
// What a size query answers from the selections of a call without states (`plain`) and with
// states or a saved buffer (`states`: the chunkwise form with the same pins where `plain` is the
// parallel one). Where the chunkwise form refuses the pins, or they pin the parallel form, only
// calls without states run.
template <class Selection>
size_t workspace_of(const Selection& plain, const Selection& states, bool with_saved) {
  if (!states.rejected.empty() || states.cfg.parallel()) return plain.plans[with_saved].workspace_bytes;
  if (with_saved) return states.plans[1].workspace_bytes;
  return std::max(plain.plans[0].workspace_bytes, states.plans[0].workspace_bytes);
}
}  // namespace

size_t mlstm_forward_workspace_size(const MlstmProblem& problem, const Config& config, bool with_saved) {
  (void)mlstm_forward_config(problem, config);  // the problem and the config, refused as a call refuses them
  const MlstmProblem lp = ops::launch_problem(problem);
  const bool packed = ops::is_packed(problem);
  Config storage;
  const Config& pins = ops::packed_pins(problem, config, ops::Op::Forward, storage);
  return workspace_of(ops::select_fwd(lp, pins, false, packed), ops::select_fwd(lp, pins, true, packed), with_saved);
}

void mlstm_forward(const MlstmProblem& problem, const ForwardTensors& tensors,
                   const LaunchOptions& options) {
  ops::check_problem(problem);
  ops::check_config(options.config, "forward config");
  ops::check_forward_tensors(problem, tensors);  // before the selection, which may create the context
  const bool needs_chunkwise = !ops::parallel_conflict(tensors).empty();
  Config pins;
  ops::launch_forward(problem, tensors, options,
                   ops::select_fwd(ops::launch_problem(problem),
                                   ops::packed_pins(problem, options.config, ops::Op::Forward, pins), needs_chunkwise,
                                   ops::is_packed(problem)));
}

Config mlstm_backward_config(const MlstmProblem& problem, const Config& pinned) {
  ops::check_problem(problem);
  ops::check_config(pinned, "backward config");
  Config pins;
  const ops::BwdSelection& sel = ops::select_bwd(ops::launch_problem(problem),
                                                 ops::packed_pins(problem, pinned, ops::Op::Backward, pins), false,
                                                 ops::is_packed(problem));
  if (!sel.rejected.empty())
    throw Error(ErrorCode::InvalidArgument, "invalid backward config: " + sel.rejected, to_string(sel.cfg.to_config()));
  return sel.cfg.to_config();
}

namespace {
// The selection mlstm_backward runs on a saved buffer: the chunkwise form at the chunk the forward
// recorded for (saved, saved_bytes), else at the forward's own chunk for the problem (a null
// saved: the buffer a forward with the default config fills).
const ops::BwdSelection& saved_backward(const MlstmProblem& problem, const Config& config, const void* saved,
                                        size_t saved_bytes) {
  const MlstmProblem lp = ops::launch_problem(problem);
  const bool packed = ops::is_packed(problem);
  const Config none;
  Config pins, fwd_pins;
  const Config& fwd = ops::packed_pins(problem, none, ops::Op::Forward, fwd_pins);
  if (!saved) saved_bytes = ops::saved_size(lp, ops::select_fwd(lp, fwd, true, packed).cfg.chunk);
  return ops::select_bwd_for_saved(lp, ops::packed_pins(problem, config, ops::Op::Backward, pins), fwd, saved,
                                   saved_bytes, packed);
}
}  // namespace

size_t mlstm_backward_workspace_size(const MlstmProblem& problem, const Config& config,
                                     bool with_saved) {
  if (!with_saved) {
    (void)mlstm_backward_config(problem, config);  // the problem and the config, refused as a call refuses them
    const MlstmProblem lp = ops::launch_problem(problem);
    const bool packed = ops::is_packed(problem);
    Config storage;
    const Config& pins = ops::packed_pins(problem, config, ops::Op::Backward, storage);
    return workspace_of(ops::select_bwd(lp, pins, false, packed), ops::select_bwd(lp, pins, true, packed), false);
  }
  // What mlstm_backward runs on a saved buffer, for a buffer of the forward's own chunk
  // (saved_backward) unless config names one.
  ops::check_problem(problem);
  ops::check_config(config, "backward config");
  const ops::BwdSelection& sel = saved_backward(problem, config, nullptr, 0);
  if (!sel.rejected.empty())
    throw Error(ErrorCode::InvalidArgument, "invalid backward config: " + sel.rejected, to_string(sel.cfg.to_config()));
  return sel.plans[true].workspace_bytes;
}

size_t mlstm_saved_size(const MlstmProblem& problem, const Config& config) {
  // The buffer of what mlstm_forward runs with one (the chunkwise form where the library chose
  // the parallel one: the chunkwise default); a pinned parallel=1, which refuses a buffer, sizes
  // the chunkwise form with the other pins.
  ops::check_problem(problem);
  ops::check_config(config, "forward config");
  const MlstmProblem lp = ops::launch_problem(problem);
  const bool packed = ops::is_packed(problem);
  Config storage;
  const ops::FwdSelection* sel = &ops::select_fwd(lp, ops::packed_pins(problem, config, ops::Op::Forward, storage),
                                                  true, packed);
  if (sel->cfg.parallel()) {
    Config chunkwise = config;
    chunkwise[ops::kFormKey] = 0;
    sel = &ops::select_fwd(lp, ops::packed_pins(problem, chunkwise, ops::Op::Forward, storage), true, packed);
  }
  if (!sel->rejected.empty())
    throw Error(ErrorCode::InvalidArgument, "invalid forward config: " + sel->rejected, to_string(sel->cfg.to_config()));
  return sel->plans[1].saved_bytes;
}

void mlstm_backward(const MlstmProblem& problem, const BackwardTensors& tensors,
                    const LaunchOptions& options) {
  ops::check_problem(problem);
  ops::check_config(options.config, "backward config");
  ops::check_backward_tensors(problem, tensors);  // before the selection, which may create the context
  if (tensors.saved) {
    ops::launch_backward(problem, tensors, options,
                         saved_backward(problem, options.config, tensors.saved, tensors.saved_bytes));
    return;
  }
  const MlstmProblem lp = ops::launch_problem(problem);
  Config storage;
  const Config& pins = ops::packed_pins(problem, options.config, ops::Op::Backward, storage);
  const bool needs_chunkwise = !ops::parallel_conflict(tensors).empty();
  ops::launch_backward(problem, tensors, options,
                       ops::select_bwd(lp, pins, needs_chunkwise, ops::is_packed(problem)));
}

}  // namespace tfla
