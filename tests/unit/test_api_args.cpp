// Argument checks of the public API (tfla.hpp and the C ABI tfla.h): bad input gets
// ErrorCode::InvalidArgument (TFLA_ERROR_INVALID_ARGUMENT) with a message that names the bad
// argument. These checks run before any driver call, so this test needs no GPU: the device
// pointers below are fake (aligned, non-null, never dereferenced).
#include "tfla_catch.hpp"
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ops/packed.hpp"
#include "tfla/tfla.h"
#include "tfla/tfla.hpp"

namespace {

using tfla::Config;
using tfla::DType;
using tfla::ErrorCode;
using tfla::ForwardTensors;
using tfla::LaunchOptions;
using tfla::MlstmProblem;

// A fake device address: 256 MiB apart per tensor, so 256-byte aligned, non-null, and no two
// tensors of the shapes these tests use share a byte (the output checks would refuse that).
void* fake_ptr(int slot) {
  return reinterpret_cast<void*>((uintptr_t(1) << 28) * uintptr_t(slot + 1));
}

MlstmProblem good_problem() {
  MlstmProblem p;
  p.B = 2;
  p.NH = 4;
  p.S = 256;
  p.Dqk = 64;
  p.Dv = 128;
  p.dtype = DType::BF16;
  p.gate_dtype = DType::FP32;
  return p;
}

ForwardTensors good_tensors() {
  ForwardTensors t;
  t.q = fake_ptr(0);  // (B, NH, S, Dqk) bf16
  t.k = fake_ptr(1);  // (B, NH, S, Dqk) bf16
  t.v = fake_ptr(2);  // (B, NH, S, Dv)  bf16
  t.i = fake_ptr(3);  // (B, NH, S)      fp32
  t.f = fake_ptr(4);  // (B, NH, S)      fp32
  t.h = fake_ptr(5);  // (B, NH, S, Dv)  bf16, out
  return t;
}

// Runs mlstm_forward and returns the tfla::Error it throws; fails the test if it throws nothing
// or something else.
tfla::Error forward_error(const MlstmProblem& p, const ForwardTensors& t,
                          const LaunchOptions& o = {}) {
  try {
    tfla::mlstm_forward(p, t, o);
  } catch (const tfla::Error& e) {
    return e;
  }
  FAIL("mlstm_forward accepted bad input");
  return tfla::Error(ErrorCode::Internal, "unreachable");
}

// The message and details together: what a user sees.
std::string full_text(const tfla::Error& e) { return std::string(e.what()) + "\n" + e.details(); }

void check_invalid(const tfla::Error& e, const std::string& names) {
  INFO("message: " << full_text(e));
  CHECK(e.code() == ErrorCode::InvalidArgument);
  CHECK_THAT(full_text(e), Catch::Contains(names));
}

// Runs Backend::forward and returns the tfla::Error it throws; fails the test if it throws nothing.
tfla::Error backend_forward_error(const tfla::Backend& backend, const MlstmProblem& p, const ForwardTensors& t) {
  try {
    backend.forward(p.B, p.NH, p.S, p.Dqk, p.Dv, t);
  } catch (const tfla::Error& e) {
    return e;
  }
  FAIL("Backend::forward accepted bad input");
  return tfla::Error(ErrorCode::Internal, "unreachable");
}

tfla_problem c_problem() {
  tfla_problem p{};
  p.B = 2;
  p.NH = 4;
  p.S = 256;
  p.Dqk = 64;
  p.Dv = 128;
  p.dtype = TFLA_BF16;
  p.gate_dtype = TFLA_FP32;
  p.variant = TFLA_VARIANT_EXP;
  p.normalize = 1;
  p.eps = 1e-6f;
  p.scale = 0.f;
  return p;
}

tfla_forward_tensors c_tensors() {
  tfla_forward_tensors t{};
  t.q = fake_ptr(0);
  t.k = fake_ptr(1);
  t.v = fake_ptr(2);
  t.i = fake_ptr(3);
  t.f = fake_ptr(4);
  t.h = fake_ptr(5);
  return t;
}

}  // namespace

TEST_CASE("mlstm_forward rejects bad shapes with a message naming the dimension", "[api][args]") {
  const ForwardTensors t = good_tensors();
  SECTION("S = 0") {
    MlstmProblem p = good_problem();
    p.S = 0;
    check_invalid(forward_error(p, t), "S = 0");
  }
  SECTION("negative B") {
    MlstmProblem p = good_problem();
    p.B = -1;
    check_invalid(forward_error(p, t), "B=-1");
  }
  SECTION("Dqk = 17") {
    MlstmProblem p = good_problem();
    p.Dqk = 17;
    check_invalid(forward_error(p, t), "Dqk = 17");
  }
  SECTION("Dv = 1024") {
    MlstmProblem p = good_problem();
    p.Dv = 1024;
    check_invalid(forward_error(p, t), "Dv = 1024");
  }
  SECTION("B * NH too large") {
    MlstmProblem p = good_problem();
    p.B = 1024;
    p.NH = 128;
    check_invalid(forward_error(p, t), "B * NH");
  }
  SECTION("negative eps") {
    MlstmProblem p = good_problem();
    p.eps = -1.f;
    check_invalid(forward_error(p, t), "eps");
  }
}

TEST_CASE("mlstm_forward rejects a gate dtype that is neither fp32 nor the input dtype",
          "[api][args]") {
  MlstmProblem p = good_problem();
  p.dtype = DType::BF16;
  p.gate_dtype = DType::FP16;
  const tfla::Error e = forward_error(p, good_tensors());
  check_invalid(e, "gate dtype");
  CHECK_THAT(e.what(), Catch::Contains("fp16") && Catch::Contains("bf16"));
}

TEST_CASE("mlstm_forward rejects null and misaligned tensors by name", "[api][args]") {
  const MlstmProblem p = good_problem();
  SECTION("null q") {
    ForwardTensors t = good_tensors();
    t.q = nullptr;
    check_invalid(forward_error(p, t), "q is null");
  }
  SECTION("null output h") {
    ForwardTensors t = good_tensors();
    t.h = nullptr;
    check_invalid(forward_error(p, t), "h is null");
  }
  SECTION("null gate f") {
    ForwardTensors t = good_tensors();
    t.f = nullptr;
    check_invalid(forward_error(p, t), "f is null");
  }
  SECTION("misaligned k") {
    ForwardTensors t = good_tensors();
    t.k = static_cast<const char*>(t.k) + 2;
    check_invalid(forward_error(p, t), "k is not 16-byte aligned");
  }
  SECTION("misaligned optional C_last") {
    ForwardTensors t = good_tensors();
    t.C_last = reinterpret_cast<float*>(static_cast<char*>(fake_ptr(6)) + 2);
    check_invalid(forward_error(p, t), "C_last");
  }
  SECTION("states read and written as float pairs must be 8-byte aligned") {
    ForwardTensors t = good_tensors();
    t.C0 = reinterpret_cast<const float*>(static_cast<char*>(fake_ptr(6)) + 4);
    check_invalid(forward_error(p, t), "C0 is not 8-byte aligned");
    t = good_tensors();
    t.C_last = reinterpret_cast<float*>(static_cast<char*>(fake_ptr(6)) + 4);
    check_invalid(forward_error(p, t), "C_last is not 8-byte aligned");
    if (!tfla::runtime_info().driver_loaded) {  // n and m are read one float at a time: past the checks
      t = good_tensors();
      t.C0 = static_cast<const float*>(fake_ptr(6));
      t.n0 = reinterpret_cast<const float*>(static_cast<char*>(fake_ptr(7)) + 4);
      t.m_last = reinterpret_cast<float*>(static_cast<char*>(fake_ptr(8)) + 4);
      CHECK(forward_error(p, t).code() == ErrorCode::NoDriver);
    }
  }
  SECTION("v strides not a multiple of 16 bytes") {
    ForwardTensors t = good_tensors();
    t.v_strides = tfla::Strides{p.NH * p.S * p.Dv, p.S * p.Dv, p.Dv + 3};
    check_invalid(forward_error(p, t), "v strides");
  }
  SECTION("n0 without C0") {
    ForwardTensors t = good_tensors();
    t.n0 = static_cast<const float*>(fake_ptr(7));
    check_invalid(forward_error(p, t), "C0");
  }
}

TEST_CASE("a forward with a saved buffer names a workspace too small for its split state walk", "[api][args]") {
  MlstmProblem p = good_problem();  // one long sequence on few heads: the state walk splits
  p.B = 1;
  p.NH = 2;
  p.S = 65536;
  const size_t need = tfla::mlstm_forward_workspace_size(p, {}, /*with_saved=*/true);
  REQUIRE(need > 0);
  CHECK(tfla::mlstm_forward_workspace_size(p, {{"st_seg", 1}}, true) == 0);
  ForwardTensors t = good_tensors();  // q, k, v and h of 16 MiB and more, 256 MiB apart
  t.saved = fake_ptr(40);
  t.saved_bytes = tfla::mlstm_saved_size(p);
  LaunchOptions o;
  o.workspace = fake_ptr(60);
  o.workspace_bytes = need - 256;
  check_invalid(forward_error(p, t, o), "with_saved");
  // the C query agrees
  tfla_problem c = c_problem();
  c.B = 1;
  c.NH = 2;
  c.S = 65536;
  size_t bytes = 0;
  REQUIRE(tfla_mlstm_forward_saved_workspace_size(&c, nullptr, &bytes) == TFLA_OK);
  CHECK(bytes == need);
  CHECK(tfla_mlstm_forward_saved_workspace_size(&c, "st_seg=1", &bytes) == TFLA_OK);
  CHECK(bytes == 0);
  CHECK(tfla_mlstm_forward_saved_workspace_size(&c, nullptr, nullptr) == TFLA_ERROR_INVALID_ARGUMENT);
}

TEST_CASE("mlstm_forward rejects a bad pinned config by key", "[api][args]") {
  const MlstmProblem p = good_problem();
  const ForwardTensors t = good_tensors();
  SECTION("chunk = 24 is not a multiple of 16") {
    LaunchOptions o;
    o.config = Config{{"chunk", 24}};
    check_invalid(forward_error(p, t, o), "chunk");
  }
  SECTION("unknown key") {
    LaunchOptions o;
    o.config = Config{{"no_such_key", 64}};
    check_invalid(forward_error(p, t, o), "no_such_key");
  }
  SECTION("the config query and the workspace size agree") {
    CHECK_THROWS_AS(tfla::mlstm_forward_config(p, Config{{"chunk", 24}}), tfla::Error);
    CHECK_THROWS_AS(tfla::mlstm_forward_workspace_size(p, Config{{"no_such_key", 1}}), tfla::Error);
  }
}

TEST_CASE("valid arguments pass the checks and then need a driver", "[api][args]") {
  // Without a driver, a well-formed call gets past every argument check and fails with
  // NoDriver, naming what is missing (never InvalidArgument, never a crash).
  const tfla::RuntimeInfo info = tfla::runtime_info();
  if (info.driver_loaded) {
    WARN("a CUDA driver is loaded here: skipping the no-driver check");
    return;
  }
  try {
    tfla::mlstm_forward(good_problem(), good_tensors());
    FAIL("mlstm_forward succeeded without a driver");
  } catch (const tfla::Error& e) {
    INFO("message: " << full_text(e));
    CHECK(e.code() == ErrorCode::NoDriver);
    CHECK_THAT(e.what(), Catch::Contains("driver"));
  }
  // The size query needs no driver at all.
  CHECK(tfla::mlstm_forward_workspace_size(good_problem()) > 0);
}

TEST_CASE("C ABI: the library reports the ABI version of the header it was built from", "[api][c]") {
  CHECK(tfla_abi_version() == TFLA_ABI_VERSION);
  CHECK(TFLA_ABI_VERSION >= 1);
}

TEST_CASE("C ABI: bad input returns TFLA_ERROR_INVALID_ARGUMENT and names it", "[api][c]") {
  const tfla_problem p = c_problem();
  SECTION("null q") {
    tfla_forward_tensors t = c_tensors();
    t.q = nullptr;
    CHECK(tfla_mlstm_forward(&p, &t, nullptr, nullptr, 0, nullptr) == TFLA_ERROR_INVALID_ARGUMENT);
    CHECK_THAT(tfla_last_error(), Catch::Contains("q is null"));
  }
  SECTION("Dqk = 17") {
    tfla_problem bad = p;
    bad.Dqk = 17;
    const tfla_forward_tensors t = c_tensors();
    CHECK(tfla_mlstm_forward(&bad, &t, nullptr, nullptr, 0, nullptr) ==
          TFLA_ERROR_INVALID_ARGUMENT);
    CHECK_THAT(tfla_last_error(), Catch::Contains("Dqk = 17"));
  }
  SECTION("unknown dtype") {
    tfla_problem bad = p;
    bad.dtype = 42;
    const tfla_forward_tensors t = c_tensors();
    CHECK(tfla_mlstm_forward(&bad, &t, nullptr, nullptr, 0, nullptr) ==
          TFLA_ERROR_INVALID_ARGUMENT);
    CHECK_THAT(tfla_last_error(), Catch::Contains("dtype"));
  }
  SECTION("null problem and tensors") {
    const tfla_forward_tensors t = c_tensors();
    CHECK(tfla_mlstm_forward(nullptr, &t, nullptr, nullptr, 0, nullptr) ==
          TFLA_ERROR_INVALID_ARGUMENT);
    CHECK_THAT(tfla_last_error(), Catch::Contains("problem"));
    CHECK(tfla_mlstm_forward(&p, nullptr, nullptr, nullptr, 0, nullptr) ==
          TFLA_ERROR_INVALID_ARGUMENT);
    CHECK_THAT(tfla_last_error(), Catch::Contains("tensors"));
  }
  SECTION("config text with a non-integer value") {
    const tfla_forward_tensors t = c_tensors();
    CHECK(tfla_mlstm_forward(&p, &t, nullptr, nullptr, 0, "chunk=abc") ==
          TFLA_ERROR_INVALID_ARGUMENT);
    CHECK_THAT(tfla_last_error(), Catch::Contains("chunk=abc"));
    size_t bytes = 0;
    CHECK(tfla_mlstm_forward_workspace_size(&p, "chunk=abc", &bytes) ==
          TFLA_ERROR_INVALID_ARGUMENT);
    CHECK_THAT(tfla_last_error(), Catch::Contains("chunk=abc"));
  }
  SECTION("config text without '='") {
    size_t bytes = 0;
    CHECK(tfla_mlstm_forward_workspace_size(&p, "chunk", &bytes) == TFLA_ERROR_INVALID_ARGUMENT);
    CHECK_THAT(tfla_last_error(), Catch::Contains("chunk"));
  }
  SECTION("a good call clears the last error") {
    size_t bytes = 0;
    REQUIRE(tfla_mlstm_forward_workspace_size(&p, "chunk=abc", &bytes) != TFLA_OK);
    REQUIRE(tfla_mlstm_forward_workspace_size(&p, "chunk=128", &bytes) == TFLA_OK);
    CHECK(bytes > 0);
    CHECK(std::string(tfla_last_error()).empty());
  }
}

// ---- the recurrent step (tfla::mlstm_step, tfla_mlstm_step) ------------------------------------
namespace {

tfla::StepTensors good_step_tensors() {
  tfla::StepTensors t;
  t.q = fake_ptr(0);                          // (B, NH, T, Dqk) bf16
  t.k = fake_ptr(1);                          // (B, NH, T, Dqk) bf16
  t.v = fake_ptr(2);                          // (B, NH, T, Dv)  bf16
  t.i = fake_ptr(3);                          // (B, NH, T)      fp32
  t.f = fake_ptr(4);                          // (B, NH, T)      fp32
  t.h = fake_ptr(5);                          // (B, NH, T, Dv)  bf16, out
  t.C = static_cast<float*>(fake_ptr(6));     // (B, NH, Dqk, Dv) fp32, in/out (no C_src)
  t.n = static_cast<float*>(fake_ptr(7));     // (B, NH, Dqk) fp32, in/out (no n_src)
  t.m = static_cast<float*>(fake_ptr(8));     // (B, NH) fp32, in/out (no m_src)
  return t;
}

MlstmProblem good_step_problem() {
  MlstmProblem p = good_problem();
  p.S = 1;  // T = 1 token
  return p;
}

tfla::Error step_error(const MlstmProblem& p, const tfla::StepTensors& t, const LaunchOptions& o = {}) {
  try {
    tfla::mlstm_step(p, t, o);
  } catch (const tfla::Error& e) {
    return e;
  }
  FAIL("mlstm_step accepted bad input");
  return tfla::Error(ErrorCode::Internal, "unreachable");
}

}  // namespace

TEST_CASE("mlstm_step rejects bad shapes and dtypes by name", "[api][args][step]") {
  const tfla::StepTensors t = good_step_tensors();
  SECTION("S = 0 tokens") {
    MlstmProblem p = good_step_problem();
    p.S = 0;
    check_invalid(step_error(p, t), "S = 0");
  }
  SECTION("Dqk = 40") {
    MlstmProblem p = good_step_problem();
    p.Dqk = 40;
    check_invalid(step_error(p, t), "Dqk = 40");
  }
  SECTION("Dv = 528") {
    MlstmProblem p = good_step_problem();
    p.Dv = 528;
    check_invalid(step_error(p, t), "Dv = 528");
  }
  SECTION("gate dtype fp16 with bf16 inputs") {
    MlstmProblem p = good_step_problem();
    p.gate_dtype = DType::FP16;
    check_invalid(step_error(p, t), "gate dtype");
  }
}

TEST_CASE("mlstm_step rejects null and misaligned tensors and states by name", "[api][args][step]") {
  const MlstmProblem p = good_step_problem();
  SECTION("null q") {
    tfla::StepTensors t = good_step_tensors();
    t.q = nullptr;
    check_invalid(step_error(p, t), "q is null");
  }
  SECTION("null h") {
    tfla::StepTensors t = good_step_tensors();
    t.h = nullptr;
    check_invalid(step_error(p, t), "h is null");
  }
  SECTION("null gate i") {
    tfla::StepTensors t = good_step_tensors();
    t.i = nullptr;
    check_invalid(step_error(p, t), "i is null");
  }
  SECTION("misaligned v") {
    tfla::StepTensors t = good_step_tensors();
    t.v = static_cast<const char*>(t.v) + 8;
    check_invalid(step_error(p, t), "v is not 16-byte aligned");
  }
  SECTION("null state C") {
    tfla::StepTensors t = good_step_tensors();
    t.C = nullptr;
    check_invalid(step_error(p, t), "C is null");
  }
  SECTION("C not 16-byte aligned (the kernel reads it as 16-byte vectors)") {
    tfla::StepTensors t = good_step_tensors();
    t.C = reinterpret_cast<float*>(static_cast<char*>(fake_ptr(6)) + 4);
    check_invalid(step_error(p, t), "C is not 16-byte aligned");
  }
  SECTION("null state n") {
    tfla::StepTensors t = good_step_tensors();
    t.n = nullptr;
    check_invalid(step_error(p, t), "n is null");
  }
  SECTION("null m for mLSTMexp") {
    tfla::StepTensors t = good_step_tensors();
    t.m = nullptr;
    check_invalid(step_error(p, t), "m is null");
  }
  SECTION("misaligned m") {
    tfla::StepTensors t = good_step_tensors();
    t.m = reinterpret_cast<float*>(static_cast<char*>(fake_ptr(8)) + 2);
    check_invalid(step_error(p, t), "m is not 4-byte aligned");
  }
  SECTION("q token strides not a multiple of 16 bytes") {
    tfla::StepTensors t = good_step_tensors();
    t.q_strides = tfla::Strides{p.NH * p.Dqk, p.Dqk, p.Dqk + 4};
    check_invalid(step_error(p, t), "q strides");
  }  SECTION("h overlapping an input or the state (the step keeps scratch in h)") {
    tfla::StepTensors t = good_step_tensors();
    t.h = const_cast<void*>(t.v);
    check_invalid(step_error(p, t), "h overlaps v");
    t = good_step_tensors();
    t.h = static_cast<char*>(const_cast<void*>(t.q)) + 16;  // inside q's bytes
    check_invalid(step_error(p, t), "h overlaps q");
    t = good_step_tensors();
    t.h = t.n;
    check_invalid(step_error(p, t), "h overlaps n");
  }
}

TEST_CASE("mlstm_step checks its source states: alignment, and each one in place or apart", "[api][args][step]") {
  const MlstmProblem p = good_step_problem();  // B 2, NH 4, Dqk 64, Dv 128: C 256 KiB, slots 1 MiB apart
  auto at = [](int slot, size_t bytes) {
    return reinterpret_cast<float*>(static_cast<char*>(fake_ptr(slot)) + bytes);
  };
  SECTION("C_src not 16-byte aligned") {
    tfla::StepTensors t = good_step_tensors();
    t.C_src = at(9, 8);
    check_invalid(step_error(p, t), "C_src is not 16-byte aligned");
  }
  SECTION("n_src, m_src not 4-byte aligned") {
    tfla::StepTensors t = good_step_tensors();
    t.n_src = at(9, 2);
    check_invalid(step_error(p, t), "n_src is not 4-byte aligned");
    t = good_step_tensors();
    t.m_src = at(9, 1);
    check_invalid(step_error(p, t), "m_src is not 4-byte aligned");
  }
  SECTION("a source that shares part of its bytes with a destination") {
    tfla::StepTensors t = good_step_tensors();
    t.C_src = t.C + 4;  // aligned, one row of 4 floats off its destination
    check_invalid(step_error(p, t), "C_src overlaps C without being the same buffer");
    t = good_step_tensors();
    t.n_src = t.C;  // n read from C's bytes while the update kernel writes C
    check_invalid(step_error(p, t), "n_src overlaps C");
    t = good_step_tensors();
    t.m_src = t.n + 3;
    check_invalid(step_error(p, t), "m_src overlaps n");
    t = good_step_tensors();
    t.C_src = at(8, 0);  // starts at m and runs over it
    check_invalid(step_error(p, t), "C_src overlaps m");
  }
  SECTION("a source inside h (h holds the records before the update kernel reads C_src)") {
    tfla::StepTensors t = good_step_tensors();
    t.C_src = at(5, 0);
    check_invalid(step_error(p, t), "C_src overlaps h");
  }
  SECTION("destinations that share bytes") {
    tfla::StepTensors t = good_step_tensors();
    t.n = t.C + 64;
    check_invalid(step_error(p, t), "C overlaps n");
    t = good_step_tensors();
    t.m = t.n + 8;
    check_invalid(step_error(p, t), "n overlaps m");
  }
  SECTION("sources equal to their destinations or apart from them pass the checks") {
    if (tfla::runtime_info().driver_loaded) {
      WARN("a CUDA driver is loaded here: skipping the no-driver check");
      return;
    }
    tfla::StepTensors t = good_step_tensors();
    t.C_src = t.C;  // in place
    t.n_src = at(9, 0);
    t.m_src = at(10, 0);
    CHECK(step_error(p, t).code() == ErrorCode::NoDriver);
    MlstmProblem sig = p;  // mLSTMsig reads no m: an m_src anywhere is ignored
    sig.variant = tfla::Variant::Sig;
    t.m_src = t.n;
    CHECK(step_error(sig, t).code() == ErrorCode::NoDriver);
  }
}

// The backend's inference step copies a C0 off 16-byte alignment into C_last and zeroes the last
// states that have no initial state before it launches the step: every argument is checked
// before that is queued, so a refused call leaves C_last, n_last and m_last untouched (here: no
// driver is reached, and the error names the argument, not the missing driver).
TEST_CASE("Backend::forward's step path checks every argument before it copies or zeroes a state",
          "[api][args][step][backend]") {
  tfla::BackendOptions bo;
  bo.mode = tfla::Mode::Inference;
  const tfla::Backend backend(bo);
  const MlstmProblem p = good_step_problem();  // B 2, NH 4, S 1, Dqk 64, Dv 128: C 256 KiB
  auto at = [](int slot, size_t bytes) {
    return reinterpret_cast<float*>(static_cast<char*>(fake_ptr(slot)) + bytes);
  };
  auto good = [&] {
    ForwardTensors t = good_tensors();
    t.C_last = at(6, 0);
    t.n_last = at(7, 0);
    t.m_last = at(8, 0);
    t.C0 = at(9, 4);  // 4-byte aligned only: copied into C_last first
    t.n0 = at(10, 0);
    t.m0 = at(11, 0);
    return t;
  };
  auto error = [&](const ForwardTensors& t) { return backend_forward_error(backend, p, t); };
  REQUIRE(backend.choose(p.B, p.NH, p.S, p.Dqk, p.Dv, true, true) == tfla::KernelKind::Step);
  SECTION("a null or misaligned input with a C0 to copy") {
    ForwardTensors t = good();
    t.q = nullptr;
    check_invalid(error(t), "q is null");
    t = good();
    t.h = static_cast<char*>(fake_ptr(5)) + 2;
    check_invalid(error(t), "h is not 16-byte aligned");
  }
  SECTION("a bad state with no initial state (the last states would be zeroed)") {
    ForwardTensors t = good();
    t.C0 = nullptr;
    t.n0 = nullptr;
    t.m0 = nullptr;
    t.n_last = t.C_last + 64;
    check_invalid(error(t), "C overlaps n");
  }
  SECTION("a C0 to copy that overlaps C_last") {
    ForwardTensors t = good();
    t.C0 = t.C_last + 1;
    check_invalid(error(t), "C0 overlaps C_last");
  }
  SECTION("an n0 that overlaps a last state") {
    ForwardTensors t = good();
    t.n0 = t.C_last + 8;
    check_invalid(error(t), "n_src overlaps C");
  }
  SECTION("a valid call reaches the driver") {
    if (tfla::runtime_info().driver_loaded) {
      WARN("a CUDA driver is loaded here: skipping the no-driver check");
      return;
    }
    CHECK(error(good()).code() == ErrorCode::NoDriver);
  }
}

TEST_CASE("mlstm_step rejects a bad pinned config by key", "[api][args][step]") {
  MlstmProblem p = good_step_problem();  // Dv = 128
  const tfla::StepTensors t = good_step_tensors();
  SECTION("siz_b_v not dividing Dv") {
    LaunchOptions o;
    o.config = Config{{"siz_b_v", 48}, {"threads", 96}};
    check_invalid(step_error(p, t, o), "siz_b_v");
  }
  SECTION("more state values per thread than registers hold") {
    LaunchOptions o;
    o.config = Config{{"siz_b_v", 128}, {"threads", 32}};  // Dqk * 128 / 32 values per thread
    check_invalid(step_error(p, t, o), "at most 128");
  }
  SECTION("threads not splitting into whole rows") {
    LaunchOptions o;
    o.config = Config{{"siz_b_v", 128}, {"threads", 48}};
    check_invalid(step_error(p, t, o), "threads");
  }
  SECTION("unknown key") {
    LaunchOptions o;
    o.config = Config{{"chunk", 64}};
    check_invalid(step_error(p, t, o), "chunk");
  }
  SECTION("cluster outside 0 and 1") {
    LaunchOptions o;
    o.config = Config{{"cluster", 2}};
    check_invalid(step_error(p, t, o), "cluster");
  }
  SECTION("the config query agrees") {
    CHECK_THROWS_AS(tfla::mlstm_step_config(p, Config{{"siz_b_v", 48}}), tfla::Error);
    const Config c = tfla::mlstm_step_config(p);
    REQUIRE(c.count("siz_b_v") == 1);
    REQUIRE(c.count("threads") == 1);
    CHECK(p.Dv % c.at("siz_b_v") == 0);
    CHECK(c.at("siz_b_v") % 16 == 0);
    CHECK(tfla::mlstm_step_config(p, Config{{"siz_b_v", 64}}).at("siz_b_v") == 64);
    CHECK(tfla::mlstm_step_config(p, Config{{"siz_b_v", 16}}).at("siz_b_v") == 16);  // Dv / 16 CTAs per head
    CHECK(c.at("cluster") == 1);  // in place: one cluster launch where the clusters fit
    CHECK(tfla::mlstm_step_config(p, Config{{"cluster", 0}}).at("cluster") == 0);
  }
}

TEST_CASE("mlstm_step: mLSTMsig may leave m null; valid calls then need a driver", "[api][args][step]") {
  MlstmProblem p = good_step_problem();
  p.variant = tfla::Variant::Sig;
  tfla::StepTensors t = good_step_tensors();
  t.m = nullptr;
  if (tfla::runtime_info().driver_loaded) {
    WARN("a CUDA driver is loaded here: skipping the no-driver check");
    return;
  }
  try {
    tfla::mlstm_step(p, t);
    FAIL("mlstm_step succeeded without a driver");
  } catch (const tfla::Error& e) {
    INFO("message: " << full_text(e));
    CHECK(e.code() == ErrorCode::NoDriver);
  }
}

TEST_CASE("C ABI: tfla_mlstm_step names bad input", "[api][c][step]") {
  tfla_problem p = c_problem();
  p.S = 1;
  tfla_step_tensors t{};
  t.q = fake_ptr(0); t.k = fake_ptr(1); t.v = fake_ptr(2); t.i = fake_ptr(3); t.f = fake_ptr(4);
  t.h = fake_ptr(5);
  t.C = static_cast<float*>(fake_ptr(6));
  t.n = static_cast<float*>(fake_ptr(7));
  t.m = static_cast<float*>(fake_ptr(8));
  SECTION("null n") {
    tfla_step_tensors bad = t;
    bad.n = nullptr;
    CHECK(tfla_mlstm_step(&p, &bad, nullptr, nullptr) == TFLA_ERROR_INVALID_ARGUMENT);
    CHECK_THAT(tfla_last_error(), Catch::Contains("n is null"));
  }
  SECTION("S = 0") {
    tfla_problem bad = p;
    bad.S = 0;
    CHECK(tfla_mlstm_step(&bad, &t, nullptr, nullptr) == TFLA_ERROR_INVALID_ARGUMENT);
    CHECK_THAT(tfla_last_error(), Catch::Contains("S = 0"));
  }
  SECTION("a source state overlapping a destination") {
    tfla_step_tensors bad = t;
    bad.n_src = t.C;
    CHECK(tfla_mlstm_step(&p, &bad, nullptr, nullptr) == TFLA_ERROR_INVALID_ARGUMENT);
    CHECK_THAT(tfla_last_error(), Catch::Contains("n_src overlaps C"));
  }
  SECTION("bad config text") {
    CHECK(tfla_mlstm_step(&p, &t, nullptr, "siz_b_v=abc") == TFLA_ERROR_INVALID_ARGUMENT);
    CHECK_THAT(tfla_last_error(), Catch::Contains("siz_b_v=abc"));
  }
  SECTION("the step config through tfla_mlstm_config") {
    char buf[128];
    size_t needed = 0;
    REQUIRE(tfla_mlstm_config(&p, "step", nullptr, buf, sizeof(buf), &needed) == TFLA_OK);
    CHECK_THAT(std::string(buf), Catch::Contains("siz_b_v=") && Catch::Contains("threads="));
  }
}

namespace {
MlstmProblem packed_problem() {
  MlstmProblem p = good_problem();
  p.B = 1;
  p.S = 500;  // T
  p.num_seqs = 7;
  p.max_seqlen = 200;
  return p;
}
tfla::Error backward_error(const MlstmProblem& p, const tfla::BackwardTensors& t, const LaunchOptions& o = {}) {
  try {
    tfla::mlstm_backward(p, t, o);
  } catch (const tfla::Error& e) {
    return e;
  }
  FAIL("mlstm_backward accepted bad input");
  return tfla::Error(ErrorCode::Internal, "unreachable");
}
}  // namespace

TEST_CASE("packed sequences: bad sizes, offsets and configs are named", "[api][args][varlen]") {
  ForwardTensors t = good_tensors();
  t.cu_seqlens = fake_ptr(9);
  {
    MlstmProblem p = packed_problem();
    p.B = 2;
    check_invalid(forward_error(p, t), "packed sequences take B = 1");
  }
  {
    MlstmProblem p = packed_problem();
    p.max_seqlen = 0;
    check_invalid(forward_error(p, t), "max_seqlen = 0");
    p.max_seqlen = 501;
    check_invalid(forward_error(p, t), "max_seqlen = 501");
  }
  {
    MlstmProblem p = good_problem();
    p.max_seqlen = 10;
    check_invalid(forward_error(p, t), "max_seqlen = 10 without num_seqs");
    p.max_seqlen = 0;
    check_invalid(forward_error(p, t), "cu_seqlens is set but problem.num_seqs = 0");
  }
  {
    MlstmProblem p = packed_problem();
    p.num_seqs = -1;
    check_invalid(forward_error(p, t), "num_seqs = -1");
    p.num_seqs = 20000;
    check_invalid(forward_error(p, t), "num_seqs * NH");
  }
  {
    ForwardTensors u = t;
    u.cu_seqlens = nullptr;
    check_invalid(forward_error(packed_problem(), u), "cu_seqlens is null");
    u.cu_seqlens = static_cast<char*>(fake_ptr(9)) + 2;
    check_invalid(forward_error(packed_problem(), u), "cu_seqlens is not aligned");
    u.cu_seqlens = static_cast<char*>(fake_ptr(9)) + 4;
    u.cu_seqlens_int64 = true;
    check_invalid(forward_error(packed_problem(), u), "cu_seqlens is not aligned to its element size (int64)");
  }
  for (const auto& [key, value] : std::vector<std::pair<std::string, int64_t>>{
           {"parallel", 1}, {"st_seg", 4}}) {
    LaunchOptions o;
    o.config = {{key, value}};
    check_invalid(forward_error(packed_problem(), t, o), "config key " + key + "=" + std::to_string(value));
  }
  {
    tfla::BackwardTensors bt;
    bt.q = fake_ptr(0); bt.k = fake_ptr(1); bt.v = fake_ptr(2); bt.i = fake_ptr(3); bt.f = fake_ptr(4);
    bt.dh = fake_ptr(5); bt.dq = fake_ptr(6); bt.dk = fake_ptr(7); bt.dv = fake_ptr(8);
    bt.di = fake_ptr(10); bt.df = fake_ptr(11); bt.norm = static_cast<float*>(fake_ptr(12));
    check_invalid(backward_error(packed_problem(), bt), "cu_seqlens is null");
    LaunchOptions o;
    bt.cu_seqlens = fake_ptr(9);
    o.config = {{"ds_seg", 2}};
    check_invalid(backward_error(packed_problem(), bt, o), "config key ds_seg=2");
  }
  {
    tfla::StepTensors st;
    st.q = fake_ptr(0); st.k = fake_ptr(1); st.v = fake_ptr(2); st.i = fake_ptr(3); st.f = fake_ptr(4);
    st.h = fake_ptr(5); st.C = static_cast<float*>(fake_ptr(6)); st.n = static_cast<float*>(fake_ptr(7));
    st.m = static_cast<float*>(fake_ptr(8));
    try {
      tfla::mlstm_step(packed_problem(), st);
      FAIL("mlstm_step took a packed problem");
    } catch (const tfla::Error& e) {
      check_invalid(e, "the step takes no packed sequences");
    }
  }
}

TEST_CASE("packed sequences: the kernels' batch is the sequences, sized by a bucket of max_seqlen",
          "[api][args][varlen]") {
  const MlstmProblem p = packed_problem();  // 7 sequences of at most 200 tokens: a bound of 256
  const Config cfg = tfla::mlstm_forward_config(p);
  CHECK(cfg.at("parallel") == 0);
  CHECK(cfg.at("st_sm90") == 0);  // Dqk 64: the engine's walk takes Dqk 128 or 256
  CHECK(cfg.at("st_seg") == 1);
  MlstmProblem batch = good_problem();
  batch.B = 7;
  batch.S = 256;
  CHECK(tfla::mlstm_forward_workspace_size(p) == tfla::mlstm_forward_workspace_size(batch, cfg));
  CHECK(tfla::mlstm_saved_size(p) == tfla::mlstm_saved_size(batch, cfg));
  const Config bcfg = tfla::mlstm_backward_config(p);
  CHECK(bcfg.at("ds_seg") == 1);
  CHECK(tfla::mlstm_backward_workspace_size(p) == tfla::mlstm_backward_workspace_size(batch, bcfg));
  // dK and dV in one sm90 kernel serve packed calls too (at the seed's heads they are the default)
  MlstmProblem seed_heads = p;
  seed_heads.Dqk = 128;
  seed_heads.Dv = 256;
  if (tfla::mlstm_backward_config(seed_heads).at("engine") == 1)
    CHECK(tfla::mlstm_backward_config(seed_heads).at("tl_dkv") == 1);
  const Config dkv = tfla::mlstm_backward_config(seed_heads, {{"engine", 1}, {"tl_dkv", 1}});
  CHECK(dkv.at("tl_dkv") == 1);
  // the dC walk and the state walks on the engine too (one walk per sequence), or on mma.sync in
  // that kernel's tiles
  CHECK(dkv.at("ds_sm90") == 1);
  CHECK(dkv.at("st_sm90") == 1);
  CHECK(tfla::mlstm_forward_config(seed_heads, {{"engine", 1}, {"fused", 0}}).at("st_sm90") == 1);
  CHECK(dkv.at("ds_siz_b_k") == 128);
  const Config dc_mma = tfla::mlstm_backward_config(seed_heads, {{"engine", 1}, {"ds_sm90", 0}});
  const Config mma_family = tfla::mlstm_backward_config(seed_heads, {{"engine", 0}, {"chunk", dc_mma.at("chunk")}});
  CHECK(dc_mma.at("ds_sm90") == 0);
  for (const char* key : {"ds_siz_b_k", "ds_siz_b_v", "ds_sub", "ds_warps_m", "ds_warps_n"}) {
    INFO(key);
    CHECK(dc_mma.at(key) == mma_family.at(key));
  }
  // another packing with the same number of sequences and a bound in the same bucket: the same config
  MlstmProblem q = p;
  q.S = 900;
  q.max_seqlen = 129;
  CHECK(tfla::mlstm_forward_config(q) == cfg);
  // tokens past the bound: one more bucket
  q.max_seqlen = 257;
  CHECK(tfla::mlstm_forward_workspace_size(q) > tfla::mlstm_forward_workspace_size(p));
}

TEST_CASE("C ABI: packed sequences pass through the C structs", "[api][c][varlen]") {
  tfla_problem p = c_problem();
  p.B = 1;
  p.S = 500;
  p.num_seqs = 7;
  p.max_seqlen = 600;
  tfla_forward_tensors t = c_tensors();
  t.cu_seqlens = fake_ptr(9);
  CHECK(tfla_mlstm_forward(&p, &t, nullptr, nullptr, 0, nullptr) == TFLA_ERROR_INVALID_ARGUMENT);
  CHECK_THAT(tfla_last_error(), Catch::Contains("max_seqlen = 600"));
  p.max_seqlen = 200;
  t.cu_seqlens = nullptr;
  CHECK(tfla_mlstm_forward(&p, &t, nullptr, nullptr, 0, nullptr) == TFLA_ERROR_INVALID_ARGUMENT);
  CHECK_THAT(tfla_last_error(), Catch::Contains("cu_seqlens is null"));
  size_t bytes = 0;
  CHECK(tfla_mlstm_forward_workspace_size(&p, nullptr, &bytes) == TFLA_OK);
  CHECK(bytes > 0);
}

// ---- calls whose arguments pass the checks: what they select, and outputs apart from inputs ----
namespace {

tfla::BackwardTensors good_backward_tensors() {
  tfla::BackwardTensors t;
  t.q = fake_ptr(0);
  t.k = fake_ptr(1);
  t.v = fake_ptr(2);
  t.i = fake_ptr(3);
  t.f = fake_ptr(4);
  t.dh = fake_ptr(5);
  t.norm = static_cast<const float*>(fake_ptr(6));
  t.dq = fake_ptr(7);
  t.dk = fake_ptr(8);
  t.dv = fake_ptr(9);
  t.di = fake_ptr(10);
  t.df = fake_ptr(11);
  return t;
}

bool no_driver() {
  if (!tfla::runtime_info().driver_loaded) return true;
  WARN("a CUDA driver is loaded here: skipping the calls that pass every check");
  return false;
}

}  // namespace

TEST_CASE("a packed call and a plain call of one launch shape and pins keep their own selections",
          "[api][args][varlen]") {
  if (!no_driver()) return;
  MlstmProblem pk = good_problem();  // 7 packed sequences of at most 200 tokens in T = 500
  pk.B = 1;
  pk.S = 500;
  pk.num_seqs = 7;
  pk.max_seqlen = 200;
  const MlstmProblem pl = tfla::ops::launch_problem(pk);  // the same kernels' shape, plain
  Config storage;
  const Config pins = tfla::ops::packed_pins(pk, Config{}, tfla::ops::Op::Forward, storage);
  Config bstorage;
  const Config bpins = tfla::ops::packed_pins(pk, Config{}, tfla::ops::Op::Backward, bstorage);
  ForwardTensors packed = good_tensors();
  packed.cu_seqlens = fake_ptr(12);
  ForwardTensors plain = good_tensors();
  plain.C0 = static_cast<const float*>(fake_ptr(13));  // states: the chunkwise form, as packed calls run
  LaunchOptions o;
  o.config = pins;
  for (int round = 0; round < 2; ++round) {  // the second round finds both in the memo
    CHECK(forward_error(pk, packed).code() == ErrorCode::NoDriver);
    CHECK(forward_error(pl, plain, o).code() == ErrorCode::NoDriver);
  }
  tfla::BackwardTensors bpacked = good_backward_tensors();
  bpacked.cu_seqlens = fake_ptr(12);
  tfla::BackwardTensors bplain = good_backward_tensors();
  bplain.C0 = static_cast<const float*>(fake_ptr(13));
  LaunchOptions bo;
  bo.config = bpins;
  for (int round = 0; round < 2; ++round) {
    CHECK(backward_error(pk, bpacked).code() == ErrorCode::NoDriver);
    CHECK(backward_error(pl, bplain, bo).code() == ErrorCode::NoDriver);
  }
}

TEST_CASE("a call with states keeps the caller's pins where the library would choose the parallel form",
          "[api][args]") {
  const MlstmProblem p = good_problem();  // S = 256: the parallel form without states
  REQUIRE(tfla::mlstm_forward_config(p).at("parallel") == 1);
  const Config bad{{"siz_b_v", 48}};  // 48 does not divide Dv = 128
  CHECK_THROWS_AS(tfla::mlstm_forward_config(p, bad), tfla::Error);
  ForwardTensors t = good_tensors();
  t.C_last = static_cast<float*>(fake_ptr(6));
  LaunchOptions o;
  o.config = bad;
  check_invalid(forward_error(p, t, o), "siz_b_v");
  try {
    (void)tfla::mlstm_saved_size(p, bad);  // the buffer of a forward with states, sized with the pins
    FAIL("mlstm_saved_size accepted siz_b_v = 48");
  } catch (const tfla::Error& e) {
    check_invalid(e, "siz_b_v");
  }
  MlstmProblem short_p = p;
  short_p.S = 64;
  tfla::BackwardTensors bt = good_backward_tensors();
  bt.dC0 = static_cast<float*>(fake_ptr(12));
  LaunchOptions bo;
  bo.config = Config{{"siz_b_nv", 48}};
  check_invalid(backward_error(short_p, bt, bo), "siz_b_nv");
}

TEST_CASE("outputs must have a layout of their own and stay apart from the inputs", "[api][args]") {
  const MlstmProblem p = good_problem();
  SECTION("forward: h on q, h with zero strides, strides past the address space") {
    ForwardTensors t = good_tensors();
    t.h = const_cast<void*>(t.q);
    check_invalid(forward_error(p, t), "h overlaps q");
    t = good_tensors();
    t.h = const_cast<void*>(t.v);
    check_invalid(forward_error(p, t), "h overlaps v");
    t = good_tensors();
    t.h_strides = tfla::Strides{0, 0, p.Dv};
    check_invalid(forward_error(p, t), "h strides");
    t = good_tensors();
    t.h_strides = tfla::Strides{p.S * p.Dv, p.S * p.Dv, p.Dv};  // heads on top of each other
    check_invalid(forward_error(p, t), "h strides");
    t = good_tensors();
    t.q_strides = tfla::Strides{INT64_MAX - 7, int64_t(1) << 40, p.Dqk};
    check_invalid(forward_error(p, t), "q strides");
    t = good_tensors();
    t.h = static_cast<char*>(const_cast<void*>(t.v)) + 4096;  // dense h inside dense v
    check_invalid(forward_error(p, t), "h overlaps v");
  }
  SECTION("backward: gradients on inputs or on each other") {
    tfla::BackwardTensors t = good_backward_tensors();
    t.dq = const_cast<void*>(t.q);
    check_invalid(backward_error(p, t), "dq overlaps q");
    t = good_backward_tensors();
    t.dv = t.dk;
    check_invalid(backward_error(p, t), "dk overlaps dv");
    t = good_backward_tensors();
    t.df = t.di;
    check_invalid(backward_error(p, t), "di overlaps df");
    t = good_backward_tensors();
    t.dq_strides = tfla::Strides{0, 0, p.Dqk};
    check_invalid(backward_error(p, t), "dq strides");
    t = good_backward_tensors();
    t.di_strides = tfla::Strides{p.S, 0, 1};
    check_invalid(backward_error(p, t), "di strides");
  }
  SECTION("the step: strides past the address space") {
    tfla::StepTensors t = good_step_tensors();
    t.v_strides = tfla::Strides{INT64_MAX - 7, int64_t(1) << 40, p.Dv};
    check_invalid(step_error(good_step_problem(), t), "v strides");
  }
  SECTION("interleaved views of one buffer that share no element pass the checks") {
    if (!no_driver()) return;
    // v and h as the two halves of each row of one (B, NH, S, 2 Dv) buffer
    ForwardTensors t = good_tensors();
    const tfla::Strides rows{p.NH * p.S * 2 * p.Dv, p.S * 2 * p.Dv, 2 * p.Dv};
    t.v_strides = rows;
    t.h = static_cast<char*>(const_cast<void*>(t.v)) + p.Dv * 2;  // bf16
    t.h_strides = rows;
    CHECK(forward_error(p, t).code() == ErrorCode::NoDriver);
    // bshd outputs: heads interleaved along the sequence
    t = good_tensors();
    t.h_strides = tfla::Strides{p.S * p.NH * p.Dv, p.Dv, p.NH * p.Dv};
    CHECK(forward_error(p, t).code() == ErrorCode::NoDriver);
  }
}

// Choosing the path (parallel or chunkwise) selects the forward's kernels, which on a machine
// with a GPU creates the device's context and opens the tuned-config cache: a bad tensor is
// refused before that, by name. (Without a driver the selection touches neither, so here the
// test holds the messages and their order: the tensor's name, never the driver.)
TEST_CASE("Backend::forward checks its tensors before it chooses a path", "[api][args][backend]") {
  const tfla::Backend backend{tfla::BackendOptions{}};
  const MlstmProblem p = good_problem();
  auto error = [&](const ForwardTensors& t) { return backend_forward_error(backend, p, t); };
  ForwardTensors t = good_tensors();
  t.q = nullptr;
  check_invalid(error(t), "q is null");
  t = good_tensors();
  t.f = static_cast<char*>(fake_ptr(4)) + 2;
  check_invalid(error(t), "f is not aligned to its element size");
  t = good_tensors();
  t.h = const_cast<void*>(t.v);
  check_invalid(error(t), "h overlaps v");
  SECTION("S = 0 is named before any selection") {
    try {
      backend.forward(p.B, p.NH, 0, p.Dqk, p.Dv, good_tensors());
      FAIL("Backend::forward accepted S = 0");
    } catch (const tfla::Error& e) {
      check_invalid(e, "S");
    }
  }
}

TEST_CASE("Backend calls refuse what they would ignore", "[api][args][backend]") {
  SECTION("a config in the call's LaunchOptions") {
    const tfla::Backend backend{tfla::BackendOptions{}};
    LaunchOptions o;
    o.config = Config{{"no_such_key", 1}};
    const MlstmProblem p = good_problem();
    try {
      backend.forward(p.B, p.NH, p.S, p.Dqk, p.Dv, good_tensors(), o);
      FAIL("Backend::forward accepted a LaunchOptions config");
    } catch (const tfla::Error& e) {
      check_invalid(e, "LaunchOptions::config");
    }
    try {
      backend.backward(p.B, p.NH, p.S, p.Dqk, p.Dv, good_backward_tensors(), o);
      FAIL("Backend::backward accepted a LaunchOptions config");
    } catch (const tfla::Error& e) {
      check_invalid(e, "LaunchOptions::config");
    }
  }
  SECTION("cu_seqlens on the inference step path") {
    tfla::BackendOptions bo;
    bo.mode = tfla::Mode::Inference;
    const tfla::Backend backend(bo);
    ForwardTensors t = good_tensors();
    t.C_last = static_cast<float*>(fake_ptr(6));
    t.n_last = static_cast<float*>(fake_ptr(7));
    t.m_last = static_cast<float*>(fake_ptr(8));
    t.cu_seqlens = fake_ptr(9);
    try {
      backend.forward(2, 4, 1, 64, 128, t);
      FAIL("Backend::forward's step path accepted cu_seqlens");
    } catch (const tfla::Error& e) {
      check_invalid(e, "cu_seqlens");
    }
  }
}
