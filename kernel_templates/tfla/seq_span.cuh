// The tokens one CTA's sequence occupies: the plain (B, NH, S) layout, or a packed sequence of
// PackedSeqs (mlstm_params.cuh). Kernels take their sequence's length and token offset from here
// and keep the workspace indexing of the plain layout (every sequence owns NC chunks of it).
// Only kernels compiled with TFLA_PACKED=1 (rt::with_packed: the kernels of a packed call) read
// the offsets; the others take the plain layout without a branch on them.
#pragma once
#include "tfla/common.cuh"
#include "tfla/mlstm_params.cuh"

#ifndef TFLA_PACKED
#define TFLA_PACKED 0
#endif

namespace tfla {

struct SeqSpan {
  i64 tok0;  // the sequence's first token along the token axis (0 in the plain layout)
  int S;     // its length
  int NC;    // its chunks of the kernel's chunk length
  i64 row;   // offset of its first token in a per-token fp32 array (norm, m)
};

// Sequence b's span for head h at chunk length L (L = 0: no chunks, NC = 1). A packed
// sequence's offsets are clamped into [0, T] and its length to the bound S, so offsets that break
// cu_seqlens' rules can neither read nor write outside the tensors and the workspace.
// Offset j of a packed call's cu_seqlens, clamped into [0, T].
template <class P>
__device__ __forceinline__ i64 packed_offset(const P& p, int j) {
  const i64 x = p.packed.cu_int64 ? static_cast<const long long*>(p.packed.cu_seqlens)[j]
                                  : static_cast<const int*>(p.packed.cu_seqlens)[j];
  return x < 0 ? 0 : (x > p.packed.T ? p.packed.T : x);
}

template <int L, class P>
__device__ __forceinline__ SeqSpan seq_span(const P& p, int b, int h) {
  SeqSpan s;
  if (TFLA_PACKED) {
    i64 a = packed_offset(p, b), e = packed_offset(p, b + 1);
    const i64 T = p.packed.T;
    e = e < a ? a : e;
    if (e - a > p.S) e = a + p.S;
    s.tok0 = a;
    s.S = static_cast<int>(e - a);
    s.row = (i64)h * T + a;
  } else {
    s.tok0 = 0;
    s.S = p.S;
    s.row = ((i64)b * p.NH + h) * p.S;
  }
  s.NC = L > 0 ? (s.S + L - 1) / L : 1;
  return s;
}

// The R-row tiles of a packed call's sequences (U-row chunks, U a multiple of R), numbered per
// head along the packed token axis without a prefix sum of their counts: sequence j's tiles take
// the numbers [v_j, v_j + ceil(len_j / R)) with v_j = (U / R) floor((cu_seqlens[j] + (U - 1) j) /
// U). That leaves each sequence room for its tiles (v_{j+1} - v_j >= (U / R) ceil(len_j / U)),
// numbers packed_row_tiles (the host's) in all, and keeps a tile's number and its place in its
// chunk alike modulo U / R, which the persistent deal's alternation relies on
// (persistent_tile). Tile number r belongs to the last sequence j with v_j <= r (a binary search
// on the offsets); returns j and sets rt = r - v_j, its tile in that sequence, or -1 where r
// precedes every sequence (offsets that break the rules). A tile past its sequence's end
// (rt R >= its length) is a gap, skipped.
template <int R, int U, class P>
__device__ __forceinline__ int packed_tile_seq(const P& p, int r, int& rt) {
  static_assert(U % R == 0, "row tiles must not straddle chunks");
  auto v = [&](int j) {
    return static_cast<int>((packed_offset(p, j) + static_cast<i64>(U - 1) * j) / U) * (U / R);
  };
  int lo = 0, hi = p.B - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (v(mid) <= r) lo = mid;
    else hi = mid - 1;
  }
  const int v0 = v(lo);
  rt = v0 <= r ? r - v0 : -1;
  return lo;
}

}  // namespace tfla
