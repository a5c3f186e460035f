// Uses an installed libtfla through both public headers. Everything here works without a GPU:
// the version, the runtime info (which reports a missing driver instead of throwing), and the
// workspace-size query of the C ABI. Prints key=value lines that run_consumer.cmake checks.
#include <cstdio>
#include <string>

#include "tfla/tfla.h"
#include "tfla/tfla.hpp"

int main() {
  std::printf("version=%s\n", tfla::version().c_str());
  std::printf("c_version=%s\n", tfla_version());

  const tfla::RuntimeInfo info = tfla::runtime_info();
  std::printf("nvrtc=%d.%d\n", info.nvrtc_major, info.nvrtc_minor);
  std::printf("driver_loaded=%d\n", info.driver_loaded ? 1 : 0);
  std::printf("devices=%zu\n", info.devices.size());

  tfla_problem p{};
  p.B = 2;
  p.NH = 8;
  p.S = 1024;
  p.Dqk = 256;
  p.Dv = 512;
  p.dtype = TFLA_BF16;
  p.gate_dtype = TFLA_FP32;
  p.variant = TFLA_VARIANT_EXP;
  p.normalize = 1;
  p.eps = 1e-6f;
  size_t bytes = 0;
  const tfla_status st = tfla_mlstm_forward_workspace_size(&p, "chunk=128", &bytes);
  std::printf("workspace_status=%d\n", static_cast<int>(st));
  std::printf("workspace_bytes=%zu\n", bytes);

  // A bad config must come back as a status and a message, not a crash.
  const tfla_status bad = tfla_mlstm_forward_workspace_size(&p, "chunk=abc", &bytes);
  std::printf("bad_config_status=%d\n", static_cast<int>(bad));
  std::printf("bad_config_error=%s\n", tfla_last_error());

  // The C++ API must agree with the C ABI.
  tfla::MlstmProblem q;
  q.B = p.B;
  q.NH = p.NH;
  q.S = p.S;
  q.Dqk = p.Dqk;
  q.Dv = p.Dv;
  const size_t cpp_bytes = tfla::mlstm_forward_workspace_size(q, {{"chunk", 128}});
  std::printf("cpp_workspace_bytes=%zu\n", cpp_bytes);
  return st == TFLA_OK && bytes > 0 && bytes == cpp_bytes ? 0 : 1;
}
