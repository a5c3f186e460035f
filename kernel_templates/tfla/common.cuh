// tfla device primitives: element types, conversions, async copies, ldmatrix and mma wrappers.
// Device-only. Compiled by NVRTC with no CUDA headers: everything here is builtin or inline PTX.
#pragma once

namespace tfla {

typedef long long i64;
typedef unsigned int u32;
typedef unsigned short u16;

// The stabilizer a later segment of a split state walk starts from (mlstm_fwd_state_fix.cuh):
// below any real m, finite so that differences of it stay free of inf - inf.
constexpr float kSegmentM0 = -1e30f;

// 16-bit element types are kept as raw bits; arithmetic is always done in fp32.
struct bf16 { u16 bits; };
struct fp16 { u16 bits; };

template <class T> struct Elem;
template <> struct Elem<float> {
  static constexpr int bytes = 4;
  static constexpr bool is16 = false;
  __device__ static float to_float(float x) { return x; }
  __device__ static float from_float(float x) { return x; }
};
template <> struct Elem<bf16> {
  static constexpr int bytes = 2;
  static constexpr bool is16 = true;
  __device__ static float to_float(bf16 x) { return __uint_as_float(((u32)x.bits) << 16); }
  __device__ static bf16 from_float(float x) {
    u16 r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return bf16{r};
  }
  // two floats -> packed pair (lo = a, hi = b)
  __device__ static u32 pack2(float a, float b) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %2, %1;" : "=r"(r) : "f"(a), "f"(b));
    return r;
  }
  // elementwise product of two packed pairs (mul.bf16x2 needs sm_90; before it the same rounded
  // product as an fma with -0, which keeps the sign of a zero product)
  __device__ static u32 mul2(u32 a, u32 b) {
    u32 r;
#if __CUDA_ARCH__ >= 900
    asm("mul.rn.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
#else
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(0x80008000u));
#endif
    return r;
  }
  // packed pair -> two floats (x = lo, y = hi)
  __device__ static float2 unpack2(u32 v) { return make_float2(__uint_as_float(v << 16), __uint_as_float(v & 0xffff0000u)); }
};
template <> struct Elem<fp16> {
  static constexpr int bytes = 2;
  static constexpr bool is16 = true;
  __device__ static float to_float(fp16 x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
    return f;
  }
  __device__ static fp16 from_float(float x) {
    u16 r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return fp16{r};
  }
  __device__ static u32 pack2(float a, float b) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %2, %1;" : "=r"(r) : "f"(a), "f"(b));
    return r;
  }
  __device__ static u32 mul2(u32 a, u32 b) {
    u32 r;
    asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
    return r;
  }
  __device__ static float2 unpack2(u32 v) {
    float2 f;
    asm("{\n .reg .f16 lo, hi;\n mov.b32 {lo, hi}, %2;\n cvt.f32.f16 %0, lo;\n cvt.f32.f16 %1, hi;\n}"
        : "=f"(f.x), "=f"(f.y) : "r"(v));
    return f;
  }
};

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }
// exp(x) where keep, else 0, without a branch: the compiler turns `keep ? __expf(x) : 0.f` into a
// branch around every exp of a masked tile; exp(-inf) is 0, so the mask goes into the argument.
__device__ __forceinline__ float masked_exp(bool keep, float x) { return __expf(keep ? x : neg_inf()); }

__device__ __forceinline__ float logsigmoid(float x) {
  // log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)), stable for any x.
  return fminf(x, 0.f) - log1pf(__expf(-fabsf(x)));
}
__device__ __forceinline__ float sigmoidf_(float x) { return 1.f / (1.f + __expf(-x)); }

// ---- shared-memory addresses and async copies (sm_80+) -----------------------------------
__device__ __forceinline__ u32 smem_u32(const void* p) {
  return (u32)__cvta_generic_to_shared(p);
}
// 16-byte global -> shared copy; bytes < 16 zero-fills the rest (0 = all zeros, no read).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem),
               "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// ---- ldmatrix / mma.sync -----------------------------------------------------------------
__device__ __forceinline__ void ldmatrix_x4(u32 (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32 (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}

template <class T> struct Mma;
template <> struct Mma<bf16> {
  __device__ static void run(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};
template <> struct Mma<fp16> {
  __device__ static void run(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};
__device__ __forceinline__ u32 to_tf32(float x) {
  u32 r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ void mma_tf32(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---- warp / block reductions -------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// ---- accumulator fragments -> global memory --------------------------------------------------
// One butterfly stage of quad_transpose: lanes q and q ^ m exchange one register of each pair
// (a0, a1) and (b0, b1): the lane whose bit is set sends its first and takes the partner's second
// into it, the other sends its second and takes the partner's first. Straight-line code: the
// lane's bit picks registers through selects, never a dynamic index (which the compiler turns
// into branches); both shuffles go out before either result is used.
__device__ __forceinline__ void quad_stage(u32& a0, u32& a1, u32& b0, u32& b1, bool bit, int m) {
  u32 s0 = bit ? a0 : a1, s1 = bit ? b0 : b1;
  s0 = __shfl_xor_sync(0xffffffffu, s0, m);
  s1 = __shfl_xor_sync(0xffffffffu, s1, m);
  a0 = bit ? s0 : a0;
  b0 = bit ? s1 : b0;
  a1 = bit ? a1 : s0;
  b1 = bit ? b1 : s1;
}
// In the wgmma (and mma.sync) accumulator layout the four lanes of a quad (lane % 4 = q) hold
// consecutive column pairs of one row: for column blocks j0 .. j0 + 3 of 8 columns, lane q holds
// x[k] = the packed pair at columns 8 (j0 + k) + 2 q. quad_transpose gives lane q the four pairs
// of block j0 + q instead (columns 8 (j0 + q) .. + 7, in order), so one 16-byte store per lane
// writes the quad's 64 bytes.
__device__ __forceinline__ uint4 quad_transpose(u32 x0, u32 x1, u32 x2, u32 x3, int q) {
  // A 4 x 4 transpose over (lane q, register k) in two butterfly stages, one per bit of q: in
  // stage b, lanes q and q ^ (1 << b) swap the registers whose bit b differs from their own bit b.
  quad_stage(x0, x1, x2, x3, q & 1, 1);
  quad_stage(x0, x2, x1, x3, q & 2, 2);
  return make_uint4(x0, x1, x2, x3);
}

}  // namespace tfla
