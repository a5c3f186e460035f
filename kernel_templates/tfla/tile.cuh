// Tiles as types: shared-memory tiles, their async loads from global memory, and a CTA-wide
// tensor-core GEMM on shared tiles with fp32 accumulators held in registers.
//
// Accumulator layout (shared by every dtype): a warp owns FM x FN fragments of 16 x 8; lane
// (g = lane / 4, t = lane % 4) holds rows g and g + 8, columns 2t and 2t + 1 of each fragment:
//   acc[fm][fn][0] = (g, 2t)   acc[fm][fn][1] = (g, 2t+1)
//   acc[fm][fn][2] = (g+8, 2t) acc[fm][fn][3] = (g+8, 2t+1)
// bf16/fp16 use mma.m16n8k16 with ldmatrix; fp32 uses mma.m16n8k8.tf32 three times per step
// (big*big + big*small + small*big), which keeps fp32 accuracy on the tensor cores.
#pragma once
#include "tfla/common.cuh"
#include "tfla/mlstm_params.cuh"

namespace tfla {

// A ROWS x COLS tile in shared memory, rows padded by 16 bytes so ldmatrix is conflict free.
template <class T, int ROWS, int COLS> struct STile {
  static constexpr int PAD = 16 / Elem<T>::bytes;
  static constexpr int LD = COLS + PAD;
  static constexpr int ELEMS = ROWS * LD;
  static constexpr int BYTES = ELEMS * Elem<T>::bytes;
};

// Async copy of a ROWS x COLS tile from global (row stride ldg elements) into shared (row
// stride lds). Rows >= rows_valid are zero-filled without reading global memory.
// COLS * sizeof(T) must be a multiple of 16, g and ldg 16-byte aligned (checked on the host).
template <class T, int ROWS, int COLS, int NT>
__device__ __forceinline__ void load_tile_async(T* s, int lds, const T* g, i64 ldg, int rows_valid,
                                                int tid) {
  constexpr int VEC = 16 / Elem<T>::bytes;
  constexpr int CPR = COLS / VEC;  // 16-byte chunks per row
  constexpr int TOTAL = ROWS * CPR;
#pragma unroll 4
  for (int idx = tid; idx < TOTAL; idx += NT) {
    const int r = idx / CPR;
    const int c = (idx % CPR) * VEC;
    const bool ok = r < rows_valid;
    cp_async16(s + r * lds + c, ok ? (const void*)(g + r * ldg + c) : (const void*)g, ok ? 16 : 0);
  }
}

// C[M x N] += A[M x K] * B[K x N] over a CTA of WM x WN warps; each warp owns an
// (M / WM) x (N / WN) block of C. A_KMAJOR: A stored as [k][m] (else [m][k]).
// B_NMAJOR: B stored as [n][k] (else [k][n]). lda/ldb in elements.
template <class T, int M, int N, int K, int WM, int WN, bool A_KMAJOR, bool B_NMAJOR>
struct Gemm {
  static constexpr int WTM = M / WM;
  static constexpr int WTN = N / WN;
  static constexpr int FM = WTM / 16;
  static constexpr int FN = WTN / 8;
  static_assert(M % (16 * WM) == 0, "M must split into 16-row fragments per warp");
  static_assert(N % (16 * WN) == 0, "N must split into pairs of 8-column fragments per warp");
  static_assert(K % 16 == 0, "K must be a multiple of 16");
  typedef float Acc[FM][FN][4];

  __device__ static void zero(Acc& acc) {
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int j = 0; j < FN; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
  }

  __device__ static void run(Acc& acc, const T* sA, int lda, const T* sB, int ldb, int warp_m,
                             int warp_n, int lane) {
    if constexpr (Elem<T>::is16) {
      run16<false>(acc, sA, lda, sB, ldb, warp_m, warp_n, lane, nullptr);
    } else {
      run32<false>(acc, sA, lda, sB, ldb, warp_m, warp_n, lane, nullptr);
    }
  }
  // As run, with column k of A scaled by ks[k] (fp32, shared memory) on the fly.
  __device__ static void run_scaled_k(Acc& acc, const T* sA, int lda, const T* sB, int ldb,
                                      int warp_m, int warp_n, int lane, const float* ks) {
    if constexpr (Elem<T>::is16) {
      run16<true>(acc, sA, lda, sB, ldb, warp_m, warp_n, lane, ks);
    } else {
      run32<true>(acc, sA, lda, sB, ldb, warp_m, warp_n, lane, ks);
    }
  }

  template <bool SCALE_K>
  __device__ static void run16(Acc& acc, const T* sA, int lda, const T* sB, int ldb, int warp_m,
                               int warp_n, int lane, const float* ks) {
    const int m_base = warp_m * WTM;
    const int n_base = warp_n * WTN;
    const int mat = lane >> 3, r8 = lane & 7;
#pragma unroll
    for (int k0 = 0; k0 < K; k0 += 16) {
      u32 a[FM][4];
#pragma unroll
      for (int fm = 0; fm < FM; ++fm) {
        const int m0 = m_base + fm * 16;
        if constexpr (A_KMAJOR) {
          const T* p = sA + (k0 + (mat >> 1) * 8 + r8) * lda + m0 + (mat & 1) * 8;
          ldmatrix_x4_trans(a[fm], p);
        } else {
          const T* p = sA + (m0 + (lane & 15)) * lda + k0 + (lane >> 4) * 8;
          ldmatrix_x4(a[fm], p);
        }
      }
      if constexpr (SCALE_K) {
        // a0/a1 hold k = k0 + 2t, +1; a2/a3 hold k = k0 + 2t + 8, +9.
        const int t2 = (lane & 3) * 2;
        const u32 w01 = Elem<T>::pack2(ks[k0 + t2], ks[k0 + t2 + 1]);
        const u32 w89 = Elem<T>::pack2(ks[k0 + t2 + 8], ks[k0 + t2 + 9]);
#pragma unroll
        for (int fm = 0; fm < FM; ++fm) {
          a[fm][0] = Elem<T>::mul2(a[fm][0], w01);
          a[fm][1] = Elem<T>::mul2(a[fm][1], w01);
          a[fm][2] = Elem<T>::mul2(a[fm][2], w89);
          a[fm][3] = Elem<T>::mul2(a[fm][3], w89);
        }
      }
#pragma unroll
      for (int fn = 0; fn < FN; fn += 2) {
        const int n0 = n_base + fn * 8;
        u32 b[4];
        if constexpr (B_NMAJOR) {
          const T* p = sB + (n0 + (mat >> 1) * 8 + r8) * ldb + k0 + (mat & 1) * 8;
          ldmatrix_x4(b, p);
        } else {
          const T* p = sB + (k0 + (mat & 1) * 8 + r8) * ldb + n0 + (mat >> 1) * 8;
          ldmatrix_x4_trans(b, p);
        }
#pragma unroll
        for (int fm = 0; fm < FM; ++fm) {
          Mma<T>::run(acc[fm][fn], a[fm], b[0], b[1]);
          Mma<T>::run(acc[fm][fn + 1], a[fm], b[2], b[3]);
        }
      }
    }
  }

  __device__ static float a_at(const float* sA, int lda, int m, int k) {
    return A_KMAJOR ? sA[k * lda + m] : sA[m * lda + k];
  }
  __device__ static float b_at(const float* sB, int ldb, int k, int n) {
    return B_NMAJOR ? sB[n * ldb + k] : sB[k * ldb + n];
  }
  template <bool SCALE_K, class U>
  __device__ static void run32(Acc& acc, const U* sA, int lda, const U* sB, int ldb, int warp_m,
                               int warp_n, int lane, const float* ks) {
    const int g = lane >> 2, t = lane & 3;
    const int m_base = warp_m * WTM;
    const int n_base = warp_n * WTN;
#pragma unroll 2
    for (int k0 = 0; k0 < K; k0 += 8) {
      u32 ab[FM][4], as[FM][4];
#pragma unroll
      for (int fm = 0; fm < FM; ++fm) {
        const int m0 = m_base + fm * 16;
        float x[4] = {a_at(sA, lda, m0 + g, k0 + t), a_at(sA, lda, m0 + g + 8, k0 + t),
                      a_at(sA, lda, m0 + g, k0 + t + 4), a_at(sA, lda, m0 + g + 8, k0 + t + 4)};
        if constexpr (SCALE_K) {
          const float w0 = ks[k0 + t], w4 = ks[k0 + t + 4];
          x[0] *= w0;
          x[1] *= w0;
          x[2] *= w4;
          x[3] *= w4;
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          ab[fm][e] = to_tf32(x[e]);
          as[fm][e] = to_tf32(x[e] - __uint_as_float(ab[fm][e]));
        }
      }
#pragma unroll
      for (int fn = 0; fn < FN; ++fn) {
        const int n0 = n_base + fn * 8;
        const float y0 = b_at(sB, ldb, k0 + t, n0 + g), y1 = b_at(sB, ldb, k0 + t + 4, n0 + g);
        const u32 bb0 = to_tf32(y0), bb1 = to_tf32(y1);
        const u32 bs0 = to_tf32(y0 - __uint_as_float(bb0)), bs1 = to_tf32(y1 - __uint_as_float(bb1));
#pragma unroll
        for (int fm = 0; fm < FM; ++fm) {
          mma_tf32(acc[fm][fn], as[fm], bb0, bb1);
          mma_tf32(acc[fm][fn], ab[fm], bs0, bs1);
          mma_tf32(acc[fm][fn], ab[fm], bb0, bb1);
        }
      }
    }
  }
};

// Row / column of accumulator element e of fragment (fm, fn) for this lane, relative to the
// warp's block origin.
__device__ __forceinline__ int acc_row(int fm, int e, int lane) {
  return fm * 16 + (lane >> 2) + ((e & 2) ? 8 : 0);
}
__device__ __forceinline__ int acc_col(int fn, int e, int lane) {
  return fn * 8 + (lane & 3) * 2 + (e & 1);
}

// Fragment-level helpers over a warp's accumulator block of a Gemm G. The block's element (r, c)
// sits at row warp_m * G::WTM + r, column warp_n * G::WTN + c of the CTA tile.

// acc *= f
template <class G> __device__ __forceinline__ void scale_acc(typename G::Acc& acc, float f) {
#pragma unroll
  for (int fm = 0; fm < G::FM; ++fm)
#pragma unroll
    for (int fn = 0; fn < G::FN; ++fn)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[fm][fn][e] *= f;
}

// acc = src[row * ld + col] (fp32 global memory, the CTA tile's origin at src)
template <class G>
__device__ __forceinline__ void load_acc(typename G::Acc& acc, const float* src, i64 ld, int warp_m,
                                         int warp_n, int lane) {
#pragma unroll
  for (int fm = 0; fm < G::FM; ++fm)
#pragma unroll
    for (int fn = 0; fn < G::FN; ++fn)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        acc[fm][fn][e] = src[(i64)(warp_m * G::WTM + acc_row(fm, e, lane)) * ld +
                             warp_n * G::WTN + acc_col(fn, e, lane)];
}

// dst[row * ld + col] = acc * row_scale(row) in dtype TS, for rows < rows_valid. 16-bit types
// with a warp tile a multiple of 32 columns wide: each lane writes 16 bytes (8 columns) per
// store, its quad's column pairs gathered by quad_transpose (all lanes shuffle; the row check
// guards only the store and row_scale), so the dst row offset and ld must keep 16-byte
// alignment. Else pairs of adjacent columns are written together (4 bytes for 16-bit types, 8
// for fp32).
template <class TS, class G, class RowScale>
__device__ __forceinline__ void store_acc(const typename G::Acc& acc, TS* dst, i64 ld, int rows_valid,
                                          int warp_m, int warp_n, int lane, RowScale row_scale) {
#pragma unroll
  for (int fm = 0; fm < G::FM; ++fm)
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      const int r = warp_m * G::WTM + acc_row(fm, e, lane);
      if constexpr (Elem<TS>::is16 && G::FN % 4 == 0) {
        const bool valid = r < rows_valid;
        const float f = valid ? row_scale(r) : 0.f;
        const int q = lane & 3;
#pragma unroll
        for (int fn0 = 0; fn0 < G::FN; fn0 += 4) {
          u32 x[4];
#pragma unroll
          for (int k = 0; k < 4; ++k)
            x[k] = Elem<TS>::pack2(acc[fm][fn0 + k][e] * f, acc[fm][fn0 + k][e + 1] * f);
          const uint4 y = quad_transpose(x[0], x[1], x[2], x[3], q);
          if (valid) __stwb(reinterpret_cast<uint4*>(dst + (i64)r * ld + warp_n * G::WTN + (fn0 + q) * 8), y);
        }
        continue;
      }
      if (r >= rows_valid) continue;
      const float f = row_scale(r);
#pragma unroll
      for (int fn = 0; fn < G::FN; ++fn) {
        TS* d = dst + (i64)r * ld + warp_n * G::WTN + acc_col(fn, e, lane);
        if constexpr (Elem<TS>::is16) {
          *reinterpret_cast<u32*>(d) = Elem<TS>::pack2(acc[fm][fn][e] * f, acc[fm][fn][e + 1] * f);
        } else {
          *reinterpret_cast<float2*>(d) = make_float2(acc[fm][fn][e] * f, acc[fm][fn][e + 1] * f);
        }
      }
    }
}
template <class TS, class G>
__device__ __forceinline__ void store_acc(const typename G::Acc& acc, TS* dst, i64 ld, int rows_valid,
                                          int warp_m, int warp_n, int lane) {
  store_acc<TS, G>(acc, dst, ld, rows_valid, warp_m, warp_n, lane, [](int) { return 1.f; });
}

}  // namespace tfla
