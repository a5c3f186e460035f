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
template <int L, class P>
__device__ __forceinline__ SeqSpan seq_span(const P& p, int b, int h) {
  SeqSpan s;
  if (TFLA_PACKED) {
    i64 a, e;
    if (p.packed.cu_int64) {
      const long long* cu = static_cast<const long long*>(p.packed.cu_seqlens);
      a = cu[b];
      e = cu[b + 1];
    } else {
      const int* cu = static_cast<const int*>(p.packed.cu_seqlens);
      a = cu[b];
      e = cu[b + 1];
    }
    const i64 T = p.packed.T;
    a = a < 0 ? 0 : (a > T ? T : a);
    e = e < a ? a : (e > T ? T : e);
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

}  // namespace tfla
