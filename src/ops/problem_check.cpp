#include "ops/problem_check.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <string>
#include <utility>

#include "tfla_util/config_text.hpp"

namespace tfla::ops {
namespace {
[[noreturn]] void invalid(const std::string& msg) { throw Error(ErrorCode::InvalidArgument, msg); }
std::string str(int64_t v) { return std::to_string(v); }
}  // namespace

void check_enums(const MlstmProblem& p) {
  auto dtype_ok = [](DType d) { return d == DType::BF16 || d == DType::FP16 || d == DType::FP32; };
  if (!dtype_ok(p.dtype)) invalid("dtype " + str(static_cast<int64_t>(p.dtype)) + " is not a DType (BF16, FP16, FP32)");
  if (!dtype_ok(p.gate_dtype))
    invalid("gate_dtype " + str(static_cast<int64_t>(p.gate_dtype)) + " is not a DType (BF16, FP16, FP32)");
  if (p.variant != Variant::Exp && p.variant != Variant::Sig)
    invalid("variant " + str(static_cast<int64_t>(p.variant)) + " is not a Variant (Exp, Sig)");
}

void check_problem(const MlstmProblem& p) {
  check_enums(p);
  if (p.S == 0) invalid("S = 0: the sequence is empty; tfla needs S >= 1");
  if (p.B < 1 || p.NH < 1 || p.S < 1)
    invalid("B, NH and S must be >= 1 (got B=" + str(p.B) + ", NH=" + str(p.NH) + ", S=" + str(p.S) + ")");
  // B * NH in checked arithmetic: B = NH = 2^32 must not wrap around to a small product.
  int64_t bh = 0;
  if (__builtin_mul_overflow(p.B, p.NH, &bh) || bh > 65535)
    invalid("B * NH = " + str(p.B) + " * " + str(p.NH) + " exceeds 65535");
  if (p.S > (int64_t(1) << 30)) invalid("S = " + str(p.S) + " exceeds 2^30");
  auto dim_ok = [](int64_t d) { return d >= 16 && d <= 512 && d % 16 == 0; };
  if (!dim_ok(p.Dqk)) invalid("Dqk = " + str(p.Dqk) + " is unsupported: it must be a multiple of 16 in [16, 512]");
  if (!dim_ok(p.Dv)) invalid("Dv = " + str(p.Dv) + " is unsupported: it must be a multiple of 16 in [16, 512]");
  if (p.gate_dtype != DType::FP32 && p.gate_dtype != p.dtype)
    invalid(std::string("gate dtype ") + to_string(p.gate_dtype) + " must be fp32 or the input dtype (" +
            to_string(p.dtype) + ")");
  if (!(p.eps >= 0.f) || !std::isfinite(p.eps)) invalid("eps must be finite and >= 0");
  if (!std::isfinite(p.scale) || p.scale < 0.f) invalid("scale must be finite and >= 0 (0 = 1/sqrt(Dqk))");
  if (p.num_seqs < 0) invalid("num_seqs = " + str(p.num_seqs) + " is negative");
  if (p.num_seqs == 0) {
    if (p.max_seqlen != 0)
      invalid("max_seqlen = " + str(p.max_seqlen) + " without num_seqs: set both for packed sequences, or neither");
    return;
  }
  if (p.B != 1)
    invalid("packed sequences take B = 1 (the sequences lie along the token axis), got B = " + str(p.B));
  if (__builtin_mul_overflow(p.num_seqs, p.NH, &bh) || bh > 65535)
    invalid("num_seqs * NH = " + str(p.num_seqs) + " * " + str(p.NH) + " exceeds 65535");
  if (p.max_seqlen < 1 || p.max_seqlen > p.S)
    invalid("max_seqlen = " + str(p.max_seqlen) + " must be in [1, T = S = " + str(p.S) +
            "]: the longest packed sequence's length, or any bound of it up to T");
}

Strides resolve(const Strides& s, const MlstmProblem& p, int64_t d) {
  if (s.b == 0 && s.h == 0 && s.s == 0) return Strides{p.NH * p.S * d, p.S * d, d};
  return s;
}

Strides resolve_gate(const Strides& s, const MlstmProblem& p) {
  if (s.b == 0 && s.h == 0 && s.s == 0) return Strides{p.NH * p.S, p.S, 1};
  return s;
}

void check_tensor(const char* name, const void* ptr, const Strides& s0, const MlstmProblem& p, int64_t d) {
  if (!ptr) invalid(std::string(name) + " is null");
  const auto addr = reinterpret_cast<uintptr_t>(ptr);
  if (addr % 16) invalid(std::string(name) + " is not 16-byte aligned (address " + std::to_string(addr) + ")");
  const Strides s = resolve(s0, p, d);
  const int64_t vec = 16 / static_cast<int64_t>(dtype_bytes(p.dtype));
  if (s.b % vec || s.h % vec || s.s % vec)
    invalid(std::string(name) + " strides (" + str(s.b) + ", " + str(s.h) + ", " + str(s.s) +
            ") must be multiples of " + str(vec) + " elements (16 bytes)");
  if (s.s < d) invalid(std::string(name) + " sequence stride " + str(s.s) + " is smaller than its feature size " + str(d));
  if (s.b < 0 || s.h < 0) invalid(std::string(name) + " has a negative stride");
}

void check_gate(const char* name, const void* ptr, const Strides& s, const MlstmProblem& p) {
  if (!ptr) invalid(std::string(name) + " is null");
  if (reinterpret_cast<uintptr_t>(ptr) % dtype_bytes(p.gate_dtype))
    invalid(std::string(name) + " is not aligned to its element size");
  if (s.b < 0 || s.h < 0 || s.s < 0) invalid(std::string(name) + " has a negative stride");
}

Span span_of(const char* name, const void* ptr, const Strides& s, const MlstmProblem& p, int64_t d, size_t elem) {
  // the last element's offset (B-1) s.b + (NH-1) s.h + (S-1) s.s + d, times the element size,
  // in checked arithmetic (strides are >= 0 here: check_tensor / check_gate ran first)
  int64_t last = d, term = 0;
  bool over = false;
  for (const auto& [n, stride] : {std::pair<int64_t, int64_t>{p.B, s.b}, {p.NH, s.h}, {p.S, s.s}}) {
    over = over || __builtin_mul_overflow(n - 1, stride, &term) || __builtin_add_overflow(last, term, &last);
  }
  int64_t bytes = 0;
  over = over || __builtin_mul_overflow(last, static_cast<int64_t>(elem), &bytes) || bytes > (int64_t(1) << 62);
  const auto lo = reinterpret_cast<uintptr_t>(ptr);
  uintptr_t hi = 0;
  over = over || __builtin_add_overflow(lo, static_cast<uintptr_t>(bytes), &hi);
  if (over)
    invalid(std::string(name) + " strides (" + str(s.b) + ", " + str(s.h) + ", " + str(s.s) +
            ") reach past the address space for B=" + str(p.B) + ", NH=" + str(p.NH) + ", S=" + str(p.S));
  return {lo, hi, bytes == p.B * p.NH * p.S * d * static_cast<int64_t>(elem)};
}

void check_output_layout(const char* name, const Strides& s, const MlstmProblem& p, int64_t d) {
  // No two elements share an address when, with the axes of extent > 1 sorted by stride, each
  // stride passes the farthest element the smaller axes reach.
  std::pair<int64_t, int64_t> axes[4] = {{1, d}, {s.s, p.S}, {s.h, p.NH}, {s.b, p.B}};  // (stride, extent)
  std::sort(std::begin(axes), std::end(axes));
  int64_t reach = 0;  // offset of the farthest element of the axes so far
  for (const auto& [stride, extent] : axes) {
    if (extent == 1) continue;
    if (stride <= reach)
      invalid(std::string(name) + " strides (" + str(s.b) + ", " + str(s.h) + ", " + str(s.s) +
              ") give two of its elements one address: the call writes it, so each (b, h, t) row needs its own");
    reach += (extent - 1) * stride;  // no overflow: span_of bounded the same sum first
  }
}

void check_apart(const char* out_name, const Span& out, const char* other_name, const Span& other) {
  if (out.lo == other.lo || (out.dense && other.dense && out.lo < other.hi && other.lo < out.hi))
    invalid(std::string(out_name) + " overlaps " + other_name +
            ": the call writes it while it still reads the other; pass separate buffers");
}

void check_optional_f32(const char* name, const void* ptr) {
  if (ptr && reinterpret_cast<uintptr_t>(ptr) % 4) invalid(std::string(name) + " is not 4-byte aligned");
}

void check_optional_state(const char* name, const void* ptr) {
  if (ptr && reinterpret_cast<uintptr_t>(ptr) % 8)
    invalid(std::string(name) + " is not 8-byte aligned (the state kernels access its rows as pairs of floats)");
}

void check_config(const Config& c, const char* what) {
  if (std::string why = util::check_config_values(c); !why.empty()) invalid(std::string(what) + ": " + why);
}

float resolved_scale(const MlstmProblem& p) {
  return p.scale > 0.f ? p.scale : 1.f / std::sqrt(static_cast<float>(p.Dqk));
}

}  // namespace tfla::ops
