// Deviceless NVRTC compilation of the sm_90a kernels (the GEMM and the primitive probes) with
// ptxas's verbose report: fails on any ptxas warning (C75xx: wgmma serialized, an injected
// warpgroup.wait, setmaxnreg ignored, ...) and on any stack frame or spill, the local-memory use
// that ptxas reports per kernel. Also checks that the same sources compile for sm_90 and sm_80,
// where the primitives turn into __trap().
#include <atomic>
#include "tfla_catch.hpp"
#include <cstdlib>
#include <iterator>
#include <regex>
#include <thread>

#include "ops/bwd_config.hpp"
#include "ops/fwd_config.hpp"
#include "ops/sm90_kernels.hpp"
#include "ops/step_config.hpp"
#include "runtime/kernel.hpp"
#include "tfla/tfla.hpp"

using namespace tfla;

namespace {

struct Compiled {
  std::string log, error;
  size_t cubin_bytes = 0;
};

std::vector<Compiled> compile_all(const std::vector<rt::KernelSpec>& specs,
                                  const std::string& arch) {
  std::vector<Compiled> out(specs.size());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next++; i < specs.size(); i = next++) {
      try {
        const rt::CompiledKernel c = rt::compile(specs[i], arch);
        out[i].log = c.log;
        out[i].cubin_bytes = c.cubin.size();
      } catch (const Error& e) {
        out[i].error = std::string(e.what()) + "\n" + e.details();
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < std::max(2u, std::thread::hardware_concurrency()); ++t)
    pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  return out;
}

// Sets an environment variable for the scope of one test.
struct ScopedEnv {
  std::string name;
  ScopedEnv(const char* n, const char* v) : name(n) { setenv(n, v, 1); }
  ~ScopedEnv() { unsetenv(name.c_str()); }
};

// Every dtype and variant (mLSTMsig, mLSTMsig without the normalizer, mLSTMexp) at the paper's
// and the seed's head sizes and the smallest.
std::vector<MlstmProblem> sm90_problems() {
  std::vector<MlstmProblem> out;
  for (DType dt : {DType::BF16, DType::FP16})
    for (int v = 0; v < 3; ++v)
      for (auto [dqk, dv] : {std::pair{256, 512}, std::pair{128, 256}, std::pair{64, 64}}) {
        MlstmProblem p;
        p.B = 1;
        p.NH = 2;
        p.S = 1000;
        p.Dqk = dqk;
        p.Dv = dv;
        p.dtype = dt;
        p.variant = v == 2 ? Variant::Exp : Variant::Sig;
        p.normalize = v != 1;
        out.push_back(p);
      }
  return out;
}

// bf16 mLSTMsig (normalized) is compiled in every tile width; the other dtypes and variants in one.
bool every_tile(const MlstmProblem& p) {
  return p.dtype == DType::BF16 && p.variant == Variant::Sig && p.normalize;
}

// The mLSTM kernels of the sm90 engine (output, state and dC kernels): every dtype and variant, the
// Dv tiles the defaults and the tuner use, at the head sizes of sm90_problems.
std::vector<rt::KernelSpec> mlstm_sm90_kernels() {
  std::vector<rt::KernelSpec> out;
  const ops::DeviceLimits& dev = ops::DeviceLimits::reference();
  for (const MlstmProblem& p : sm90_problems())
    for (int bv : {64, 128, 256}) {
      if (p.Dv % bv) continue;
      ops::FwdConfig c = ops::sm90_fwd_config(p, dev);
      c.siz_b_v = bv;
      if (!ops::check_fwd_sm90_config(c, p, dev).empty()) continue;
      const auto ks = ops::fwd_kernels(p, c, dev);
      out.push_back(ks.back());
      if (bv == 64)  // the chunk-state walks (forward states, backward dC) in both Dv tiles
        for (int sbv : {64, 128})
          if (ops::check_state_walk_sm90(p, dev, c.chunk, static_cast<int>(p.Dqk), sbv, "st").empty()) {
            out.push_back(ops::fwd_states_sm90_kernel(p, c.chunk, sbv));
            out.push_back(ops::bwd_dstates_sm90_kernel(p, c.chunk, sbv));
          }
      if (!every_tile(p)) break;  // all Dv tiles once, in bf16 mLSTMsig
    }
  return out;
}

// The sm90 gradient tile kernels (dQ, dK, dV): every dtype and variant in the default column
// tiles, and every column tile in bf16 mLSTMsig, at the head sizes of sm90_problems.
std::vector<rt::KernelSpec> bwd_tile_sm90_kernels() {
  std::vector<rt::KernelSpec> out;
  const ops::DeviceLimits& dev = ops::DeviceLimits::reference();
  for (const MlstmProblem& p : sm90_problems()) {
    ops::BwdConfig c = ops::sm90_bwd_config(p, dev);
    c.tl_sm90 = 1;
    c.siz_b_r = 128;
    c.siz_b_t = 64;
    c.chunk = 256;
    for (int mode = 0; mode < 3; ++mode)
      for (int bn : {256, 128, 64}) {
        (mode == 2 ? c.siz_b_nv : c.siz_b_nqk) = bn;
        if (!ops::check_bwd_tiles_sm90(c, p, dev).empty()) continue;
        out.push_back(ops::bwd_tile_sm90_kernel(p, c, mode, dev));
        if (!every_tile(p)) break;
      }
  }
  return out;
}

// The checks every sm90 kernel passes: compiled, no ptxas warning (C75xx: wgmma serialized), no
// stack frame, no spills. One exception, bounded: the fused walk in 256-column CTAs, whose state
// (128 registers per consumer thread) leaves ptxas at the 240-register cap; it spills up to four
// loop-invariant words (addresses), stored before the chunk loop and reloaded a few times per
// chunk of 64 tokens (nvdisasm of the bf16 cubins), and it is allowed a 16-byte frame, 16 bytes
// of spill stores and 24 of loads (the packed form's 20).
bool wide_fused_walk(const std::string& key) {
  static const std::regex wide(R"(^mlstm_fwd_fused_sm90<[^,]+,\d+,\d+,256,)");
  return std::regex_search(key, wide);
}

void check_clean(const std::vector<rt::KernelSpec>& specs) {
  const auto results = compile_all(specs, "sm_90a");
  const std::regex frame(
      R"((\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads)");
  for (size_t i = 0; i < specs.size(); ++i) {
    const Compiled& r = results[i];
    INFO(specs[i].key << "\n" << r.error << "\nNVRTC log:\n" << r.log);
    REQUIRE(r.error.empty());
    CHECK(r.cubin_bytes > 1000);
    CHECK(r.log.find("warning") == std::string::npos);
    CHECK(r.log.find("C75") == std::string::npos);
    // The verbose report must be there, or the checks below would pass vacuously.
    std::smatch m;
    REQUIRE(std::regex_search(r.log, m, frame));
    const bool wide = wide_fused_walk(specs[i].key);
    CHECK(std::stoi(m[1]) <= (wide ? 16 : 0));
    CHECK(std::stoi(m[2]) <= (wide ? 16 : 0));
    CHECK(std::stoi(m[3]) <= (wide ? 24 : 0));
  }
}

}  // namespace

TEST_CASE("the sm_90a kernels compile with no ptxas warning, stack frame or spill",
          "[nvrtc][sm90]") {
  ScopedEnv verbose("TFLA_PTXAS_VERBOSE", "1");  // adds --ptxas-options=-v (kernel.cpp)
  auto specs = ops::sm90_kernels();
  REQUIRE(specs.size() >= 30);
  const auto mlstm = mlstm_sm90_kernels();
  REQUIRE(mlstm.size() >= 30);
  specs.insert(specs.end(), mlstm.begin(), mlstm.end());
  check_clean(specs);
}

TEST_CASE("the sm_90a gradient tile kernels compile with no ptxas warning, stack frame or spill",
          "[nvrtc][sm90][bwd_tile]") {
  ScopedEnv verbose("TFLA_PTXAS_VERBOSE", "1");
  const auto specs = bwd_tile_sm90_kernels();
  REQUIRE(specs.size() >= 40);
  check_clean(specs);
}

// The dK/dV kernel: every dtype and variant at the head sizes it takes (Dqk and Dv of 64, 128 or
// 256: the seed's and the smallest of sm90_problems, and 256 x 256), chunk 256; bf16 mLSTMsig
// also at chunk 128 and with every xpart partition (dQ's column tiles).
TEST_CASE("the sm_90a dK/dV kernel compiles with no ptxas warning, stack frame or spill",
          "[nvrtc][sm90][bwd_tile][dkv]") {
  ScopedEnv verbose("TFLA_PTXAS_VERBOSE", "1");
  const ops::DeviceLimits& dev = ops::DeviceLimits::reference();
  std::vector<rt::KernelSpec> specs;
  std::vector<MlstmProblem> problems = sm90_problems();
  for (DType dt : {DType::BF16, DType::FP16}) {
    MlstmProblem p = problems.front();
    p.dtype = dt;
    p.Dqk = p.Dv = 256;
    problems.push_back(p);
  }
  for (const MlstmProblem& p : problems) {
    if (p.Dv > 256) continue;
    ops::BwdConfig c = ops::sm90_bwd_config(p, dev);
    c.tl_sm90 = 1;
    c.tl_dkv = 1;
    c.siz_b_r = 128;
    c.siz_b_t = 64;
    c.chunk = 256;
    c.siz_b_nqk = 64;
    c.siz_b_nv = 64;
    INFO(p.Dqk << "x" << p.Dv);
    REQUIRE(ops::check_bwd_dkv_sm90(c, p, dev).empty());
    specs.push_back(ops::bwd_dkv_sm90_kernel(p, c, dev));
    if (every_tile(p)) {
      for (int nqk : {128, 256})
        if (p.Dqk % nqk == 0) {
          c.siz_b_nqk = nqk;
          specs.push_back(ops::bwd_dkv_sm90_kernel(p, c, dev));
        }
      c.chunk = 128;
      specs.push_back(ops::bwd_dkv_sm90_kernel(p, c, dev));
    }
  }
  REQUIRE(specs.size() >= 14);
  check_clean(specs);
}

// The fused forward: every dtype and variant at the head sizes of sm90_problems that it takes
// (Dv a multiple of 128) and at Dqk 64; where Dqk is 128 or 256, its split's summary walk (the
// state walk at chunk 64) and fold.
TEST_CASE("the sm_90a fused forward compiles with no ptxas warning, stack frame or spill",
          "[nvrtc][sm90][fused]") {
  ScopedEnv verbose("TFLA_PTXAS_VERBOSE", "1");
  const ops::DeviceLimits& dev = ops::DeviceLimits::reference();
  std::vector<rt::KernelSpec> specs;
  size_t wide = 0;
  for (MlstmProblem p : sm90_problems()) {
    if (p.Dv == 64) {
      p.Dv = 128;
      if (!every_tile(p)) continue;
    }
    INFO(p.Dqk << "x" << p.Dv);
    REQUIRE(ops::check_fwd_fused_sm90(p, dev).empty());
    specs.push_back(ops::fwd_fused_sm90_kernel(p));
    if (ops::check_fwd_fused_sm90(p, dev, 256).empty()) {  // the 256-column walk (Dqk <= 128)
      specs.push_back(ops::fwd_fused_sm90_kernel(p, 256));
      ++wide;
    }
    if (p.Dqk % 128 == 0) {
      specs.push_back(ops::fwd_summary_sm90_kernel(p, ops::kFusedChunk));
      specs.push_back(ops::fwd_state_fix_kernel(p, true));
    }
  }
  CHECK(wide == 6);
  CHECK(wide_fused_walk(ops::fwd_fused_sm90_kernel(sm90_problems()[1], 256).key));
  CHECK(!wide_fused_walk(ops::fwd_fused_sm90_kernel(sm90_problems()[1], 128).key));
  REQUIRE(specs.size() == 13 + 2 * 12 + wide);
  check_clean(specs);
}

// The split's summary walk at one, three and eight Dv tiles, and at the saved buffer's chunk.
TEST_CASE("the sm_90a summary walk compiles with no ptxas warning, stack frame or spill at every Dv",
          "[nvrtc][sm90][fused]") {
  ScopedEnv verbose("TFLA_PTXAS_VERBOSE", "1");
  std::vector<rt::KernelSpec> specs;
  for (MlstmProblem p : sm90_problems()) {
    if (p.Dqk % 128) continue;
    for (int dv : {128, 384, 1024}) {
      p.Dv = dv;
      INFO(p.Dqk << "x" << p.Dv);
      specs.push_back(ops::fwd_summary_sm90_kernel(p, ops::kFusedChunk));
    }
    if (p.Dqk == 256) specs.push_back(ops::fwd_summary_sm90_kernel(p, 256));
  }
  check_clean(specs);
}

// The kernels of a packed call (TFLA_PACKED=1: sequences from cu_seqlens) on the sm90 engine,
// every dtype and variant at the head sizes of sm90_problems: the output kernel in its default
// Dv tile, the gradient tiles in their defaults, the dK/dV kernel, the state and dC walks and the
// fused forward where they serve.
TEST_CASE("the sm_90a kernels of packed calls compile with no ptxas warning, stack frame or spill",
          "[nvrtc][sm90][packed]") {
  ScopedEnv verbose("TFLA_PTXAS_VERBOSE", "1");
  const ops::DeviceLimits& dev = ops::DeviceLimits::reference();
  std::vector<rt::KernelSpec> specs;
  int dkv = 0, dc = 0, st = 0;
  for (const MlstmProblem& p : sm90_problems()) {
    INFO(p.Dqk << "x" << p.Dv);
    const ops::FwdConfig f = ops::sm90_fwd_config(p, dev);
    REQUIRE(ops::check_fwd_sm90_config(f, p, dev).empty());
    specs.push_back(rt::with_packed(ops::fwd_kernels(p, f, dev).back()));
    if (f.st_sm90) {
      specs.push_back(rt::with_packed(ops::fwd_states_sm90_kernel(p, f.chunk, f.st_siz_b_v)));
      ++st;
    }
    ops::BwdConfig b = ops::sm90_bwd_config(p, dev);
    b.tl_sm90 = 1;
    b.siz_b_r = 128;
    b.siz_b_t = 64;
    b.chunk = 256;
    if (ops::check_bwd_tiles_sm90(b, p, dev).empty())
      for (int mode = 0; mode < 3; ++mode) specs.push_back(rt::with_packed(ops::bwd_tile_sm90_kernel(p, b, mode, dev)));
    b.tl_dkv = 1;
    if (ops::check_bwd_dkv_sm90(b, p, dev).empty()) {
      specs.push_back(rt::with_packed(ops::bwd_dkv_sm90_kernel(p, b, dev)));
      ++dkv;
    }
    if (ops::check_fwd_fused_sm90(p, dev).empty()) specs.push_back(rt::with_packed(ops::fwd_fused_sm90_kernel(p)));
    if (ops::check_fwd_fused_sm90(p, dev, 256).empty())
      specs.push_back(rt::with_packed(ops::fwd_fused_sm90_kernel(p, 256)));
    if (b.ds_sm90) {
      specs.push_back(rt::with_packed(ops::bwd_dstates_sm90_kernel(p, b.chunk, b.ds_siz_b_v)));
      ++dc;
    }
  }
  REQUIRE(dkv > 0);
  REQUIRE(dc > 0);
  REQUIRE(st > 0);
  for (const rt::KernelSpec& s : specs) {
    REQUIRE(s.packed);
    REQUIRE(s.source().find("#define TFLA_PACKED 1") != std::string::npos);
  }
  REQUIRE(specs.size() >= 30);
  check_clean(specs);
}

// The recurrent step's two kernels in their default configs (one token and a fused four), every
// dtype and variant: the fused kernel keeps its whole C slice in registers (up to 128 values a
// thread), so a spill there is local-memory traffic on every call.
TEST_CASE("the step kernels compile with no ptxas warning, stack frame or spill", "[nvrtc][step]") {
  ScopedEnv verbose("TFLA_PTXAS_VERBOSE", "1");
  std::vector<rt::KernelSpec> specs;
  for (MlstmProblem p : sm90_problems())
    for (int64_t T : {1, 4}) {
      p.B = 1;
      p.S = T;
      for (const rt::KernelSpec& k : ops::step_kernels(p, ops::default_step_config(p))) specs.push_back(k);
    }
  REQUIRE(specs.size() == 18 * 2 * 2);
  check_clean(specs);
}

size_t count_matches(const std::string& text, const std::regex& re) {
  return static_cast<size_t>(std::distance(std::sregex_iterator(text.begin(), text.end(), re), std::sregex_iterator()));
}

// The fused kernel stores each C row of a thread as one 16-byte store (st.global.v4.f32), and h
// as 16-byte stores too. Written as a float4 (or uint4) assignment the front end once split these
// into four 4-byte stores, and the step ran at 62% of the copy bandwidth instead of 95% (B = 64);
// the PTX shows it before any GPU does. The only 4-byte stores are n's values (Dqk / threads per
// thread, rounded up) and m (mLSTMsig stores its 0 as an integer).
TEST_CASE("the step's fused kernel stores its state and h in 16-byte vectors", "[nvrtc][step]") {
  for (MlstmProblem p : sm90_problems()) {
    p.B = 1;
    p.S = 1;
    const ops::StepConfig cfg = ops::default_step_config(p);
    const std::vector<rt::KernelSpec> ks = ops::step_kernels(p, cfg);
    REQUIRE(ks.size() == 2);
    INFO(ks[0].key);
    const std::string ptx = rt::compile_ptx(ks[0], "compute_90a");
    REQUIRE(ptx.find(".entry") != std::string::npos);
    const size_t n_stores = static_cast<size_t>((p.Dqk + cfg.threads - 1) / cfg.threads);
    CHECK(count_matches(ptx, std::regex(R"(st\.global(\.wb)?\.(f32|u32|b32)\s)")) <= n_stores + 1);
    CHECK(count_matches(ptx, std::regex(R"(st\.global(\.wb)?\.(u16|b16|f16|bf16)\s)")) == 0);
    CHECK(std::regex_search(ptx, std::regex(R"(st\.global(\.wb)?\.v4\.f32)")));
  }
}

TEST_CASE("the sm_90a kernels compile for sm_90 and sm_80 (primitives trap there)",
          "[nvrtc][sm90]") {
  const std::vector<rt::KernelSpec> specs = {
      ops::gemm_sm90_kernel(DType::BF16), ops::tma_roundtrip_kernel(4),
      ops::wgmma_probe_kernel(DType::BF16, 64, 2, 1), ops::mbar_ring_kernel(2)};
  for (const char* arch : {"sm_90", "sm_80"}) {
    const auto results = compile_all(specs, arch);
    for (size_t i = 0; i < specs.size(); ++i) {
      INFO(arch << " " << specs[i].key << "\n" << results[i].error);
      CHECK(results[i].error.empty());
    }
  }
}

// The epilogues that write 16-bit tiles (the sm90 state and dC walks, the mma.sync dC walk, the
// fused walk's h and saved states, the output kernel, the gradient tiles and the dK/dV kernel)
// store 16 bytes per lane (the fused walk's saved states: 8) as one vector store. A uint4
// assignment there may compile to four 4-byte stores (NVVM did so in the state walk and in a
// quarter of the dK/dV kernel's), as a pair per lane is one: up to four times the store
// instructions and partial L2 sector writes, which cost the state walk 8% at the paper shape.
// The scalar stores left are fp32 stabilizers and normalizers and mLSTMsig's zeros.
TEST_CASE("the 16-bit tile epilogues store vectors, not 4-byte pieces", "[nvrtc][stores]") {
  const ops::DeviceLimits& dev = ops::DeviceLimits::reference();
  const std::regex narrow(R"(st\.global(\.wb)?\.(u32|b32|u16|b16)\s)"), wide(R"(st\.global(\.wb)?\.v[24]\.(u32|b32))");
  for (MlstmProblem p : sm90_problems()) {
    if (p.Dqk < 128 || !p.normalize) continue;
    p.S = 8192;
    std::vector<rt::KernelSpec> specs = {ops::fwd_states_sm90_kernel(p, 256, 128),
                                         ops::bwd_dstates_sm90_kernel(p, 256, 128)};
    const ops::BwdConfig b = ops::chunkwise_bwd_config(p, dev, 256);
    for (const rt::KernelSpec& k : ops::bwd_kernels(p, b, dev))
      if (k.key.find("mlstm_bwd_dstates<") != std::string::npos) specs.push_back(k);
    specs.push_back(ops::fwd_fused_sm90_kernel(p));
    REQUIRE(specs.size() == 4);
    ops::FwdConfig f = ops::sm90_fwd_config(p, dev);
    f.fused = 0;
    for (const rt::KernelSpec& k : ops::fwd_kernels(p, f, dev))
      if (k.key.find("mlstm_fwd_output_sm90<") != std::string::npos) specs.push_back(k);
    REQUIRE(specs.size() == 5);
    ops::BwdConfig t = ops::sm90_bwd_config(p, dev);
    t.tl_sm90 = 1;
    t.tl_dkv = 0;
    for (int mode = 0; mode < 3; ++mode) specs.push_back(ops::bwd_tile_sm90_kernel(p, t, mode, dev));
    if (p.Dv <= 256) {
      t.tl_dkv = 1;
      REQUIRE(ops::check_bwd_dkv_sm90(t, p, dev).empty());
      specs.push_back(ops::bwd_dkv_sm90_kernel(p, t, dev));
    }
    for (const rt::KernelSpec& k : specs) {
      INFO(k.key);
      const std::string ptx = rt::compile_ptx(k, "compute_90a");
      const auto n_narrow = std::distance(std::sregex_iterator(ptx.begin(), ptx.end(), narrow), std::sregex_iterator());
      const auto n_wide = std::distance(std::sregex_iterator(ptx.begin(), ptx.end(), wide), std::sregex_iterator());
      CHECK(n_narrow <= 8);
      CHECK(n_wide >= 4);
    }
  }
}
