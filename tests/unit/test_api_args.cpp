// Argument checks of the public API (tfla.hpp and the C ABI tfla.h): bad input gets
// ErrorCode::InvalidArgument (TFLA_ERROR_INVALID_ARGUMENT) with a message that names the bad
// argument. These checks run before any driver call, so this test needs no GPU: the device
// pointers below are fake (aligned, non-null, never dereferenced).
#include <catch2/catch.hpp>
#include <cstdint>
#include <string>

#include "tfla/tfla.h"
#include "tfla/tfla.hpp"

namespace {

using tfla::Config;
using tfla::DType;
using tfla::ErrorCode;
using tfla::ForwardTensors;
using tfla::LaunchOptions;
using tfla::MlstmProblem;

// A fake device address: 1 MiB apart per tensor, so 256-byte aligned and non-null.
void* fake_ptr(int slot) {
  return reinterpret_cast<void*>((uintptr_t(1) << 20) * uintptr_t(slot + 1));
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
