// Deviceless NVRTC compilation of the kernel templates for sm_90a: no GPU needed. Compiles a
// covering subset of the default space (every kernel family x every dtype x each variant, two
// head-dim pairs, short and long sequences); `tfla compile --all` covers the whole space.
#include "tfla_catch.hpp"
#include <thread>
#include <atomic>
#include <mutex>

#include "ops/bwd_config.hpp"
#include "ops/fwd_config.hpp"
#include "ops/kernel_space.hpp"
#include "ops/mlstm_forward.hpp"
#include "runtime/kernel.hpp"
#include "tfla/tfla.hpp"
#include "../unit/config_helpers.hpp"

using namespace tfla;
using namespace tfla::test;

namespace {
// Compiles every spec for arch on all cores; checks each compiled (with its log where not) to a
// cubin of a plausible size.
void compile_all_for(const std::vector<rt::KernelSpec>& specs, const char* arch) {
  std::vector<std::string> failures(specs.size());
  std::vector<size_t> sizes(specs.size(), 0);
  std::vector<char> named(specs.size(), 0);  // the cubin's symbols hold the entry's name
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next++; i < specs.size(); i = next++) {
      try {
        const rt::CompiledKernel k = rt::compile(specs[i], arch);
        sizes[i] = k.cubin.size();
        named[i] = k.cubin.find(specs[i].entry() + '\0') != std::string::npos;
      } catch (const Error& e) {
        failures[i] = std::string(e.what()) + "\n" + e.details();
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < std::max(2u, std::thread::hardware_concurrency()); ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  for (size_t i = 0; i < specs.size(); ++i) {
    INFO(arch << ": " << specs[i].key << "\n" << failures[i]);
    CHECK(failures[i].empty());
    CHECK(sizes[i] > 1000);
    CHECK((named[i] || !failures[i].empty()));
  }
}
}  // namespace

TEST_CASE("every kernel family compiles for sm_90a in every dtype and variant", "[nvrtc]") {
  ops::SpaceFilter f;
  f.dims = {{64, 64}, {96, 160}};
  f.every_family = true;
  const auto specs = ops::default_space_kernels(f);
  REQUIRE(specs.size() >= 20);
  compile_all_for(specs, "sm_90a");
}

// The mma.sync kernels use nothing past sm_80 (packed bf16 products as fmas there), so the
// library's kernels build for Ampere and Ada too; the sm_90a engine's compile to traps there.
TEST_CASE("every kernel family compiles for sm_80 in every dtype and variant", "[nvrtc][sm80]") {
  ops::SpaceFilter f;
  f.dims = {{64, 64}};
  f.every_family = true;
  const auto specs = ops::default_space_kernels(f);
  REQUIRE(specs.size() >= 20);
  compile_all_for(specs, "sm_80");
}

TEST_CASE("a compile error carries the NVRTC log and the kernel's name", "[nvrtc]") {
  rt::KernelSpec bad = rt::render("mlstm_fwd_output", "tfla/mlstm_fwd_output.cuh", "tfla::mlstm_fwd_output",
                                  "tfla::MlstmFwdParams", {{"T", "float"}, {"TS", "float"}, {"DQK", "64"}}, 128, 0);
  try {
    rt::compile(bad, "sm_90a");
    FAIL("compile should have thrown");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::Compile);
    CHECK(std::string(e.what()).find("mlstm_fwd_output") != std::string::npos);
    CHECK(e.details().find("NVRTC log") != std::string::npos);
    CHECK(e.details().find("error") != std::string::npos);
  }
}

TEST_CASE("the default forward config is valid for every supported head dim", "[nvrtc]") {
  for (int dqk = 16; dqk <= 512; dqk += 16)
    for (int dv = 16; dv <= 512; dv += 16)
      for (int64_t s : {1, 64, 65, 5000})
      for (DType dt : {DType::BF16, DType::FP32}) {
        MlstmProblem p;
        p.dtype = dt;
        p.B = 1; p.NH = 1; p.S = s; p.Dqk = dqk; p.Dv = dv;
        const ops::FwdConfig c = fwd_default(p);
        INFO(to_string(dt) << " Dqk=" << dqk << " Dv=" << dv << " S=" << s);
        CHECK(check_fwd(c, p).empty());
        CHECK(ops::fwd_output_smem(c, p) <= 227 * 1024);
        CHECK(ops::fwd_states_smem(c, p) <= 227 * 1024);
      }
}

TEST_CASE("the default backward config is valid for every supported head dim", "[nvrtc]") {
  for (int dqk = 16; dqk <= 512; dqk += 16)
    for (int dv = 16; dv <= 512; dv += 16)
      for (int64_t s : {1, 64, 65, 5000})
        for (DType dt : {DType::BF16, DType::FP32}) {
          MlstmProblem p;
          p.dtype = dt;
          p.B = 1; p.NH = 1; p.S = s; p.Dqk = dqk; p.Dv = dv;
          const ops::BwdConfig c = bwd_default(p);
          INFO(to_string(dt) << " Dqk=" << dqk << " Dv=" << dv << " S=" << s);
          CHECK(check_bwd(c, p).empty());
          for (int mode = 0; mode < 3; ++mode) {
            if (c.tl_sm90)  // the sm90 tiles: a ring of at least two slots fits
              CHECK(ops::bwd_tile_sm90_stages(p, mode, mode == 2 ? c.siz_b_nv : c.siz_b_nqk, ref()) >= 2);
            else
              CHECK(ops::bwd_tile_smem(c, p, mode) <= 227 * 1024);
          }
          if (!c.ds_sm90) CHECK(ops::bwd_dstates_smem(c, p) <= 227 * 1024);
        }
}
