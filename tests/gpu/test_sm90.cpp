// The sm_90a primitives on the GPU, before any mLSTM kernel relies on them (HOPPER.md stage 0):
//  - TMA round trips: box loads into shared memory compared byte for byte with the swizzle
//    predicted by sm90_layout.cuh (out-of-bounds parts zero), and TMA stores of the sign-flipped
//    box compared bit for bit (nothing written outside the view but the rest of a row's last
//    16-byte chunk, which TMA stores write whole); 2D..5D, tails, padded
//    rows, (B, S, NH, D) strides, every swizzle;
//  - wgmma: one warpgroup's D = A * B against a float64 GEMM for A from shared memory (K- and
//    MN-major) and from registers, K- and MN-major B, N in {32, 64, 128, 256}, bf16 and fp16;
//  - an mbarrier ring (depths 1-4, 1e5 slots, generic and bulk-copy producers) checked by exact
//    sums;
//  - a TMA copy (loads and stores through a ring), bit for bit;
//  - elect.sync, a producer/consumer named barrier and stmatrix (plain and .trans);
//  - the GEMM built from them against a float64 GEMM, tails included, and bitwise repeatable.
// Every case needs an sm_90a device and is skipped with a warning on others.
#include "tfla_catch.hpp"
#include <cstring>
#include <random>

#include "gpu_test_util.hpp"
#include "ops/sm90_kernels.hpp"
#include "runtime/device.hpp"
#include "runtime/kernel.hpp"
#include "runtime/tensor_map.hpp"
#include "tfla/sm90_params.cuh"

using namespace tfla;

namespace {

bool have_sm90a() {
  const DeviceInfo& d = rt::device_info(rt::ensure_context());
  if (d.arch == "sm_90a") return true;
  WARN("skipped: needs an sm_90a device, found " << d.name << " (" << d.arch << ")");
  return false;
}

std::mt19937& rng() {
  static std::mt19937 g{std::random_device{}()};
  return g;
}

// n random 16-bit values of dtype, uniform in +-[0.25, 2) (never zero); values gets them as
// doubles.
std::vector<uint16_t> random16(size_t n, DType dt, std::vector<double>* values = nullptr) {
  std::uniform_real_distribution<double> mag(0.25, 2.0);
  std::vector<uint16_t> out(n);
  if (values) values->resize(n);
  for (size_t i = 0; i < n; ++i) {
    const double v = (rng()() & 1 ? -1 : 1) * mag(rng());
    out[i] = dt == DType::BF16 ? test::to_bf16(static_cast<float>(v))
                               : test::to_fp16(static_cast<float>(v));
    if (values)
      (*values)[i] = dt == DType::BF16 ? test::from_bf16(out[i]) : test::from_fp16(out[i]);
  }
  return out;
}

template <class T> cli::DeviceBuffer upload_vec(const std::vector<T>& v) {
  cli::DeviceBuffer b(v.size() * sizeof(T));
  b.upload(v.data(), b.bytes());
  return b;
}
template <class T> std::vector<T> download_vec(const cli::DeviceBuffer& b) {
  std::vector<T> v(b.bytes() / sizeof(T));
  b.download(v.data(), b.bytes());
  return v;
}

// The wgmma descriptor's LBO and SBO fields, in bytes.
unsigned desc_lbo(unsigned long long d) { return static_cast<unsigned>((d >> 16) & 0x3FFF) << 4; }
unsigned desc_sbo(unsigned long long d) { return static_cast<unsigned>((d >> 32) & 0x3FFF) << 4; }

// ---- TMA round trip ---------------------------------------------------------------------------

struct TmaCase {
  const char* name;
  DType dtype;
  int rank;
  std::vector<uint64_t> dims;     // elements, innermost first
  std::vector<uint64_t> strides;  // bytes of dims 1.., empty = packed
  std::vector<uint32_t> box;
  int swizzle;
};

void run_tma_case(const TmaCase& c) {
  INFO(c.name);
  const size_t eb = dtype_bytes(c.dtype);
  std::vector<uint64_t> strides(5, 0);  // bytes, strides[0] = element size
  strides[0] = eb;
  for (int i = 1; i < c.rank; ++i)
    strides[i] = c.strides.empty() ? strides[i - 1] * c.dims[i - 1] : c.strides[i - 1];
  size_t bytes = 0;  // span of the view in memory
  for (int i = 0; i < c.rank; ++i) bytes = std::max<size_t>(bytes, strides[i] * c.dims[i]);
  bytes = (bytes + 15) / 16 * 16;
  std::vector<uint8_t> in(bytes);
  for (auto& b : in) b = static_cast<uint8_t>(rng()() | 1);  // random, no zero bytes
  const cli::DeviceBuffer din = upload_vec(in);
  const cli::DeviceBuffer dout = test::poisoned(bytes);

  rt::TensorMapSpec s;
  s.dtype = c.dtype;
  s.rank = c.rank;
  s.swizzle = c.swizzle;
  TmaRoundtripParams p{};
  int box_elems = 1, nboxes = 1;
  for (int i = 0; i < 5; ++i) {
    p.box[i] = 1;
    p.boxes[i] = 1;
  }
  for (int i = 0; i < c.rank; ++i) {
    s.dims[i] = c.dims[i];
    s.strides[i] = i ? strides[i] : 0;
    s.box[i] = c.box[i];
    p.box[i] = static_cast<int>(c.box[i]);
    p.boxes[i] = static_cast<int>((c.dims[i] + c.box[i] - 1) / c.box[i]);
    box_elems *= p.box[i];
    nboxes *= p.boxes[i];
  }
  p.box_bytes = box_elems * static_cast<int>(eb);
  p.elem_bytes = static_cast<int>(eb);
  REQUIRE(p.box_bytes <= 65536);
  s.base = din.get();
  p.in = rt::tensor_map(s);
  s.base = dout.get();
  p.out = rt::tensor_map(s);
  const cli::DeviceBuffer raw = test::poisoned(static_cast<size_t>(nboxes) * p.box_bytes);
  p.raw = raw.get();
  const rt::LoadedKernel& k = rt::get_kernel(ops::tma_roundtrip_kernel(c.rank));
  k.launch({static_cast<unsigned>(nboxes), 1, 1}, nullptr, &p, sizeof(p));
  cli::synchronize();
  const auto out = download_vec<uint8_t>(dout);
  const auto got_raw = download_vec<uint8_t>(raw);

  // Predicted shared-memory image of every box, and the set of bytes the view covers.
  std::vector<uint8_t> in_view(bytes, 0);
  size_t raw_bad = 0, first_bad = SIZE_MAX;
  for (int b = 0; b < nboxes; ++b) {
    int rest = b;
    int origin[5];
    for (int i = 0; i < c.rank; ++i) {
      origin[i] = (rest % p.boxes[i]) * p.box[i];
      rest /= p.boxes[i];
    }
    for (int e = 0; e < box_elems; ++e) {
      int r2 = e;
      bool inside = true;
      size_t addr = 0;
      for (int i = 0; i < c.rank; ++i) {
        const uint64_t x = static_cast<uint64_t>(origin[i] + r2 % p.box[i]);
        r2 /= p.box[i];
        inside = inside && x < c.dims[i];
        addr += x * strides[i];
      }
      const unsigned at = sm90::swizzled_offset(static_cast<unsigned>(e * eb), c.swizzle);
      for (size_t j = 0; j < eb; ++j) {
        const uint8_t want = inside ? in[addr + j] : 0;
        if (inside) in_view[addr + j] = 1;
        if (got_raw[static_cast<size_t>(b) * p.box_bytes + at + j] != want) {
          ++raw_bad;
          first_bad = std::min(first_bad, static_cast<size_t>(b) * p.box_bytes + at + j);
        }
      }
    }
  }
  INFO("shared-memory bytes that differ from the predicted swizzled box: "
       << raw_bad << " (first at " << first_bad << ")");
  CHECK(raw_bad == 0);
  // Stored: the sign-flipped view; everything else untouched (0xFF), except that a store writes
  // whole 16-byte chunks: when a row's end is not 16-byte aligned, the rest of its last chunk
  // may get the box's zero fill, sign-flipped.
  const size_t row_bytes = c.dims[0] * eb;
  size_t out_bad = 0;
  for (size_t a = 0; a < bytes; ++a) {
    const bool sign_byte = (a % eb) == eb - 1;  // little-endian: the sign bit is in the last byte
    if (in_view[a]) {
      out_bad += out[a] != (sign_byte ? static_cast<uint8_t>(in[a] ^ 0x80) : in[a]);
      continue;
    }
    const size_t in_row = a % strides[1];  // offset past the start of its dim-1 row
    const bool chunk_tail = in_row >= row_bytes && in_row < (row_bytes + 15) / 16 * 16;
    const uint8_t fill = sign_byte ? 0x80 : 0x00;
    out_bad += !(out[a] == 0xFF || (chunk_tail && out[a] == fill));
  }
  INFO("stored bytes that differ: " << out_bad);
  CHECK(out_bad == 0);
}

const std::vector<TmaCase>& tma_cases() {
  using D = DType;
  static const std::vector<TmaCase> cases = {
      {"2D exact multiple, 128B swizzle", D::BF16, 2, {128, 96}, {}, {64, 32}, 128},
      {"2D tails in both dims, 128B", D::BF16, 2, {200, 75}, {}, {64, 64}, 128},
      {"2D padded rows (stride 256 B), 64B swizzle", D::BF16, 2, {96, 37}, {256}, {32, 16}, 64},
      {"2D rows of 200 B (not 16-byte multiples), padded to 256 B",
       D::BF16,
       2,
       {100, 37},
       {256},
       {32, 16},
       64},
      {"2D 32B swizzle", D::BF16, 2, {72, 40}, {}, {16, 8}, 32},
      {"2D no swizzle, 48-byte box rows", D::BF16, 2, {56, 33}, {}, {24, 10}, 0},
      {"2D fp32, 128B swizzle", D::FP32, 2, {40, 50}, {}, {32, 16}, 128},
      {"2D box 64 x 256 (GEMM B tile)", D::BF16, 2, {64, 300}, {}, {64, 256}, 128},
      {"3D (D, S, B*NH), S tail per head", D::BF16, 3, {64, 100, 6}, {}, {64, 64, 1}, 128},
      // (B, S, NH, D) memory seen as (D, S, NH, B): B = 2, S = 100, NH = 3, D = 64.
      {"4D bshd, S tail per head",
       D::BF16,
       4,
       {64, 100, 3, 2},
       {3 * 64 * 2, 64 * 2, 100 * 3 * 64 * 2},
       {64, 64, 1, 1},
       128},
      {"4D bshd D = 128 in two boxes",
       D::BF16,
       4,
       {128, 50, 2, 3},
       {2 * 128 * 2, 128 * 2, 50 * 2 * 128 * 2},
       {64, 32, 1, 1},
       128},
      {"5D, boxes over every dim", D::BF16, 5, {16, 5, 4, 3, 2}, {}, {16, 4, 2, 2, 1}, 0},
  };
  return cases;
}

// ---- wgmma ----------------------------------------------------------------------------------

struct WgmmaResult {
  double rel_err = 0;
  size_t nonfinite = 0;
};

// D = A (64 x 64) * B (64 x N) by the probe. swap_mn: exchange LBO and SBO of MN-major
// operands (a diagnostic of the descriptor encoding when the case fails).
WgmmaResult run_wgmma(DType dt, int n, int amode, int bmajor, bool swap_mn = false) {
  std::vector<double> a, b;  // A (64, 64) row-major, B (64, n) row-major (k, n)
  const auto a16 = random16(64 * 64, dt, &a);
  const auto b16 = random16(static_cast<size_t>(64) * n, dt, &b);
  // Device layouts: A K-major = a16; A MN-major = A^T (k, m); B K-major = B^T (n, k); MN = b16.
  std::vector<uint16_t> at(64 * 64), bt(static_cast<size_t>(64) * n);
  for (int i = 0; i < 64; ++i)
    for (int j = 0; j < 64; ++j) at[j * 64 + i] = a16[i * 64 + j];
  for (int k = 0; k < 64; ++k)
    for (int j = 0; j < n; ++j)
      bt[static_cast<size_t>(j) * 64 + k] = b16[static_cast<size_t>(k) * n + j];
  const cli::DeviceBuffer da = upload_vec(amode == 1 ? at : a16);
  const cli::DeviceBuffer db = upload_vec(bmajor == 1 ? b16 : bt);
  const cli::DeviceBuffer dd = test::poisoned(static_cast<size_t>(64) * n * 4);

  WgmmaProbeParams p{};
  rt::TensorMapSpec s;
  s.dtype = dt;
  s.rank = 2;
  s.base = da.get();
  s.dims[0] = 64;
  s.dims[1] = 64;
  s.strides[1] = 128;
  s.box[0] = 64;
  s.box[1] = 64;
  s.swizzle = 128;
  p.a = rt::tensor_map(s);
  p.a_rm = da.get();
  const unsigned long long a_desc =
      amode == 1 ? sm90::wgmma_desc_mnmajor(0, 128, 8192) : sm90::wgmma_desc_kmajor(0, 128);
  p.a_lbo = desc_lbo(a_desc);
  p.a_sbo = desc_sbo(a_desc);
  p.a_step = sm90::k16_step_bytes(amode == 1, 128);
  s.base = db.get();
  const int swz_b = bmajor == 1 && n < 64 ? 2 * n : 128;
  if (bmajor == 0) {
    s.dims[0] = 64;
    s.dims[1] = static_cast<uint64_t>(n);
    s.strides[1] = 128;
    s.box[0] = 64;
    s.box[1] = static_cast<uint32_t>(n);
    p.b_panels = 1;
  } else {
    p.b_panel_cols = std::min(n, 64);
    p.b_panels = n / p.b_panel_cols;
    p.b_panel_bytes = 64 * swz_b;
    s.dims[0] = static_cast<uint64_t>(n);
    s.dims[1] = 64;
    s.strides[1] = static_cast<uint64_t>(n) * 2;
    s.box[0] = static_cast<uint32_t>(p.b_panel_cols);
    s.box[1] = 64;
  }
  s.swizzle = swz_b;
  p.b = rt::tensor_map(s);
  const unsigned long long b_desc = bmajor == 1
                                        ? sm90::wgmma_desc_mnmajor(0, swz_b, p.b_panel_bytes)
                                        : sm90::wgmma_desc_kmajor(0, 128);
  p.b_lbo = desc_lbo(b_desc);
  p.b_sbo = desc_sbo(b_desc);
  p.b_step = sm90::k16_step_bytes(bmajor == 1, swz_b);
  if (swap_mn && amode == 1) std::swap(p.a_lbo, p.a_sbo);
  if (swap_mn && bmajor == 1) std::swap(p.b_lbo, p.b_sbo);
  p.d = dd.as<float>();
  const rt::LoadedKernel& k = rt::get_kernel(ops::wgmma_probe_kernel(dt, n, amode, bmajor));
  k.launch({1, 1, 1}, nullptr, &p, sizeof(p));
  cli::synchronize();
  const auto d = download_vec<float>(dd);
  WgmmaResult r;
  double err = 0, nrm = 0;
  for (int i = 0; i < 64; ++i)
    for (int j = 0; j < n; ++j) {
      double want = 0;
      for (int k2 = 0; k2 < 64; ++k2) want += a[i * 64 + k2] * b[static_cast<size_t>(k2) * n + j];
      const double got = d[static_cast<size_t>(i) * n + j];
      if (!std::isfinite(got)) ++r.nonfinite;
      err += (got - want) * (got - want);
      nrm += want * want;
    }
  r.rel_err = std::sqrt(err / nrm);
  return r;
}

void check_wgmma(DType dt, int n, int amode, int bmajor) {
  const char* amodes[] = {"SS A K-major", "SS A MN-major", "RS A registers"};
  INFO(to_string(dt) << " m64n" << n << "k16 x4, " << amodes[amode] << ", B "
                     << (bmajor ? "MN" : "K") << "-major");
  const WgmmaResult r = run_wgmma(dt, n, amode, bmajor);
  if (r.rel_err > 1e-4 && (amode == 1 || bmajor == 1)) {
    const WgmmaResult s = run_wgmma(dt, n, amode, bmajor, true);
    WARN("failed (rel err " << r.rel_err << "); with LBO and SBO of the MN-major operand swapped: "
                            << s.rel_err);
  }
  CHECK(r.nonfinite == 0);
  CHECK(r.rel_err < 1e-4);
}

// ---- mbarrier ring --------------------------------------------------------------------------

void check_ring(int depth, int mode, int iters, int ctas) {
  INFO("depth " << depth << ", mode " << (mode ? "bulk copy + expect_tx" : "generic stores") << ", "
                << iters << " slots, " << ctas << " CTAs");
  std::vector<uint32_t> src(static_cast<size_t>(iters) * 64);
  for (auto& w : src) w = static_cast<uint32_t>(rng()());
  const cli::DeviceBuffer dsrc = upload_vec(src);
  const cli::DeviceBuffer dsums = test::poisoned(static_cast<size_t>(ctas) * 128 * 8);
  MbarRingParams p{dsrc.as<const unsigned>(), dsums.as<unsigned long long>(), iters, mode};
  const rt::LoadedKernel& k = rt::get_kernel(ops::mbar_ring_kernel(depth));
  k.launch({static_cast<unsigned>(ctas), 1, 1}, nullptr, &p, sizeof(p));
  cli::synchronize();
  const auto sums = download_vec<uint64_t>(dsums);
  size_t bad = 0;
  for (int b = 0; b < ctas; ++b)
    for (int t = 0; t < 128; ++t) {
      uint64_t want = 0;
      for (int i = 0; i < iters; ++i) {
        auto word = [&](int j) -> uint32_t {
          if (mode == 1) return src[static_cast<size_t>(i) * 64 + j];
          return static_cast<uint32_t>(i) * 2654435761u ^ static_cast<uint32_t>(j) * 40503u ^
                 static_cast<uint32_t>(b);
        };
        const uint32_t w = word(t % 64) + word((t * 7 + 3) % 64);
        want += static_cast<uint64_t>(w) * static_cast<uint64_t>(i % 7 + 1);
      }
      bad += sums[static_cast<size_t>(b) * 128 + t] != want;
    }
  CHECK(bad == 0);
}

// ---- GEMM -----------------------------------------------------------------------------------

struct Gemm {
  int M, N, K;
  DType dt;
  std::vector<double> a, b;  // (M, K), (N, K)
  cli::DeviceBuffer da, db, dc;
  Gemm(int m, int n, int k, DType t) : M(m), N(n), K(k), dt(t) {
    da = upload_vec(random16(static_cast<size_t>(M) * K, dt, &a));
    db = upload_vec(random16(static_cast<size_t>(N) * K, dt, &b));
    dc = test::poisoned(static_cast<size_t>(M) * N * 2);
  }
  void run() {
    ops::gemm_sm90(da.get(), db.get(), dc.get(), M, N, K, dt, nullptr);
    cli::synchronize();
  }
  double ref(int i, int j) const {
    double s = 0;
    for (int k = 0; k < K; ++k)
      s += a[static_cast<size_t>(i) * K + k] * b[static_cast<size_t>(j) * K + k];
    return s;
  }
};

// Relative Frobenius error of C against float64 over every entry (stride 1) or a sample.
void check_gemm(int M, int N, int K, DType dt, int sample_stride) {
  INFO(to_string(dt) << " M=" << M << " N=" << N << " K=" << K);
  Gemm g(M, N, K, dt);
  g.run();
  const auto c = test::download(g.dc, dt);
  CHECK(test::count_nonfinite(c) == 0);
  double err = 0, nrm = 0;
  for (size_t idx = 0; idx < c.size(); idx += static_cast<size_t>(sample_stride)) {
    const int i = static_cast<int>(idx / N), j = static_cast<int>(idx % N);
    const double want = g.ref(i, j);
    err += (c[idx] - want) * (c[idx] - want);
    nrm += want * want;
  }
  const double rel = std::sqrt(err / nrm);
  INFO("relative error " << rel);
  CHECK(rel < (dt == DType::BF16 ? 4e-3 : 1e-3));
}

}  // namespace

TEST_CASE("TMA round trips are bit-exact and zero-fill outside the tensor",
          "[gpu][sm90][sanitize]") {
  if (!have_sm90a()) return;
  for (const TmaCase& c : tma_cases()) run_tma_case(c);
}

TEST_CASE("the tensor-map memo returns the stored map for a repeated spec", "[gpu][sm90]") {
  if (!have_sm90a()) return;
  cli::DeviceBuffer buf(1 << 16);
  rt::TensorMapSpec s;
  s.base = buf.get();
  s.rank = 2;
  s.dims[0] = 64;
  s.dims[1] = 100;
  s.strides[1] = 128;
  s.box[0] = 64;
  s.box[1] = 64;
  s.swizzle = 128;
  const TmaDesc a = rt::tensor_map(s);
  const size_t n = rt::tensor_map_memo_size();
  const TmaDesc b = rt::tensor_map(s);
  CHECK(rt::tensor_map_memo_size() == n);
  CHECK(std::memcmp(&a, &b, sizeof(a)) == 0);
  s.dims[1] = 101;
  const TmaDesc c = rt::tensor_map(s);
  CHECK(rt::tensor_map_memo_size() == n + 1);
  CHECK(std::memcmp(&a, &c, sizeof(a)) != 0);
  s.box[0] = 65;  // over the 128-byte swizzle span
  CHECK_THROWS_AS(rt::tensor_map(s), Error);
}

TEST_CASE("wgmma m64n64 in every operand form", "[gpu][sm90][sanitize]") {
  if (!have_sm90a()) return;
  for (DType dt : {DType::BF16, DType::FP16})
    for (int amode = 0; amode < 3; ++amode)
      for (int bmajor = 0; bmajor < 2; ++bmajor) check_wgmma(dt, 64, amode, bmajor);
}

TEST_CASE("wgmma bf16 for N in {32, 128, 256} in every operand form", "[gpu][sm90]") {
  if (!have_sm90a()) return;
  for (int n : {32, 128, 256})
    for (int amode = 0; amode < 3; ++amode)
      for (int bmajor = 0; bmajor < 2; ++bmajor) check_wgmma(DType::BF16, n, amode, bmajor);
}

TEST_CASE("an mbarrier ring passes 1e5 slots at depths 1-4", "[gpu][sm90]") {
  if (!have_sm90a()) return;
  for (int depth = 1; depth <= 4; ++depth)
    for (int mode = 0; mode < 2; ++mode) check_ring(depth, mode, 100000, 8);
}

TEST_CASE("an mbarrier ring, short", "[gpu][sm90][sanitize]") {
  if (!have_sm90a()) return;
  for (int mode = 0; mode < 2; ++mode) check_ring(2, mode, 500, 2);
}

TEST_CASE("GEMM sm90 small and tail shapes match float64", "[gpu][sm90][sanitize]") {
  if (!have_sm90a()) return;
  check_gemm(128, 256, 64, DType::BF16, 1);
  check_gemm(200, 328, 264, DType::BF16, 1);
  check_gemm(72, 34, 8, DType::FP16, 1);
}

TEST_CASE("GEMM sm90 larger shapes match float64", "[gpu][sm90]") {
  if (!have_sm90a()) return;
  check_gemm(1000, 776, 1032, DType::BF16, 1);
  check_gemm(384, 512, 8192, DType::BF16, 7);
  check_gemm(4096, 4096, 1024, DType::BF16, 997);  // 512 tiles: several per persistent CTA
  check_gemm(520, 1000, 512, DType::FP16, 3);
}

TEST_CASE("GEMM sm90 is bitwise repeatable", "[gpu][sm90]") {
  if (!have_sm90a()) return;
  Gemm g(4096, 4096, 2048, DType::BF16);
  g.run();
  const auto first = download_vec<uint16_t>(g.dc);
  for (int rep = 0; rep < 100; ++rep) {
    g.run();
    const auto again = download_vec<uint16_t>(g.dc);
    INFO("rerun " << rep);
    REQUIRE(std::memcmp(first.data(), again.data(), first.size() * 2) == 0);
  }
}

TEST_CASE("TMA copy is bit-exact, tail box included", "[gpu][sm90][sanitize]") {
  if (!have_sm90a()) return;
  const size_t bytes = (size_t(3) << 20) + 5 * 128;  // 24581 rows: the last box has 5
  std::vector<uint8_t> src(bytes);
  for (auto& b : src) b = static_cast<uint8_t>(rng()());
  const cli::DeviceBuffer ds = upload_vec(src);
  cli::DeviceBuffer dd = test::poisoned(bytes + 4096);  // bytes past the copy stay poisoned
  ops::tma_copy_sm90(ds.get(), dd.get(), bytes, nullptr);
  cli::synchronize();
  const auto out = download_vec<uint8_t>(dd);
  CHECK(std::memcmp(out.data(), src.data(), bytes) == 0);
  size_t past = 0;
  for (size_t i = bytes; i < out.size(); ++i) past += out[i] != 0xFF;
  CHECK(past == 0);
}

TEST_CASE("elect.sync, named barriers and stmatrix", "[gpu][sm90][sanitize]") {
  if (!have_sm90a()) return;
  cli::DeviceBuffer out(1024 * 4);
  out.fill_byte(0);
  MiscProbeParams p{out.as<unsigned>()};
  rt::get_kernel(ops::misc_probe_kernel()).launch({1, 1, 1}, nullptr, &p, sizeof(p));
  cli::synchronize();
  const auto w = download_vec<uint32_t>(out);
  CHECK(w[0] == 8);  // one lane per warp
  for (int warp = 0; warp < 8; ++warp) CHECK(w[1 + warp] < 32);
  size_t bad_bar = 0;
  for (uint32_t t = 0; t < 128; ++t) bad_bar += w[16 + t] != 3 * (127 - t) + 1;
  CHECK(bad_bar == 0);
  std::vector<uint16_t> m(512);
  std::memcpy(m.data(), &w[512], 1024);
  size_t bad_plain = 0, bad_trans = 0;
  for (int i = 0; i < 4; ++i)
    for (int lane = 0; lane < 32; ++lane)
      for (int j = 0; j < 2; ++j) {
        const int r = lane / 4, c = 2 * (lane % 4) + j;
        const uint16_t v = static_cast<uint16_t>(64 * i + 2 * lane + j);
        bad_plain += m[64 * i + 8 * r + c] != v;
        bad_trans += m[256 + 64 * i + 8 * c + r] != v;
      }
  CHECK(bad_plain == 0);
  CHECK(bad_trans == 0);
}
