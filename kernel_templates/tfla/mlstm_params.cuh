// Kernel parameter blocks of the mLSTM kernels. Plain data shared by host and device code:
// the host fills one and passes it by value as the only kernel argument.
// Strides are in elements; the last (feature) dimension is always contiguous.
#pragma once

#if defined(__CUDACC__)
#define TFLA_HD __host__ __device__
#else
#define TFLA_HD
#endif

namespace tfla {

// The backward's gradient tile modes (mlstm_bwd_tile.cuh, mlstm_bwd_tile_sm90.cuh).
enum BwdMode { kDQ = 0, kDK = 1, kDV = 2 };

// Shared-memory footprints, used by the host to size launches and by kernels to check them.
// A tile of rows x cols elements of eb bytes is padded by 16 bytes per row (see STile).
TFLA_HD constexpr int stile_bytes(int rows, int cols, int eb) { return rows * (cols + 16 / eb) * eb; }
TFLA_HD constexpr int fwd_states_smem_bytes(int eb, int sub, int bk, int bv, int nwarps) {
  return 2 * stile_bytes(sub, bk, eb) + 2 * stile_bytes(sub, bv, eb) + 2 * sub * 4 + nwarps * bk * 4;
}
TFLA_HD constexpr int max_i(int a, int b) { return a > b ? a : b; }
TFLA_HD constexpr int bwd_dstates_smem_bytes(int eb, int sub, int bk, int bv, int nwarps) {
  return 2 * stile_bytes(sub, bk, eb) + 2 * stile_bytes(sub, bv, eb) + 2 * sub * 4 + nwarps * 4;
}
// Backward tile kernel: X (br x dx), region A = max(Z tile, Y block), region B = max(W tile, Y
// block), P (br x bt), row/column factors. y_nmajor: the Y block is bn x bkc (else bkc x bn).
TFLA_HD constexpr int bwd_tile_smem_bytes(int eb, int dx, int br, int bt, int bn, int bkc, bool y_nmajor) {
  return stile_bytes(br, dx, eb) +
         max_i(stile_bytes(bt, dx, eb), y_nmajor ? stile_bytes(bn, bkc, eb) : stile_bytes(bkc, bn, eb)) +
         max_i(stile_bytes(bt, bn, eb), y_nmajor ? stile_bytes(bn, bkc, eb) : stile_bytes(bkc, bn, eb)) +
         stile_bytes(br, bt, eb) + (3 * br + 2 * bt) * 4;
}
// The parallel form's addition to a tile kernel: u' of the CTA's rows and the gate scan's warp
// partials (mlstm_gate_scan.cuh).
TFLA_HD constexpr int gate_scan_smem_bytes(int rows, int nwarps) { return (rows + nwarps) * 4; }
TFLA_HD constexpr int fwd_output_smem_bytes(int eb, int dqk, int bq, int bkv, int bv, int bkc, int wn) {
  // Q, then region A = max(K tile, C block), region B = max(V tile, C block), then P.
  return stile_bytes(bq, dqk, eb) +
         (stile_bytes(bkv, dqk, eb) > stile_bytes(bkc, bv, eb) ? stile_bytes(bkv, dqk, eb) : stile_bytes(bkc, bv, eb)) +
         (stile_bytes(bkv, bv, eb) > stile_bytes(bkc, bv, eb) ? stile_bytes(bkv, bv, eb) : stile_bytes(bkc, bv, eb)) +
         stile_bytes(bq, bkv, eb) + (4 * bq + bkv + wn * bq) * 4;
}

// Packed sequences of variable lengths (cu_seqlens), read by kernels compiled with TFLA_PACKED=1
// (a packed call's; they need cu_seqlens set). There batch index b is
// sequence b of N = B, tokens [cu_seqlens[b], cu_seqlens[b + 1]) of a (1, NH, T, D) layout: the
// inputs' and outputs' batch strides are 0 and a sequence's tokens start at its offset; S and NC
// are the bound every sequence fits (grids and workspace are sized by it) and each sequence
// runs its own length; the per-token fp32 arrays (norm, m) are (NH, T). Other kernels take the
// plain (B, NH, S) layout and ignore it. See SeqSpan (seq_span.cuh).
struct PackedSeqs {
  const void* cu_seqlens;  // (N + 1) int32 or int64 on the device, or null
  int cu_int64;            // 1: int64 offsets
  long long T;             // the packed token count, cu_seqlens[N]
  int chunk;               // the call's chunk length: the gradient tiles' numbering unit (packed_tile_seq)
};

struct MlstmFwdParams {
  const void* q;  // (B, NH, S, Dqk) input dtype
  const void* k;  // (B, NH, S, Dqk) input dtype
  const void* v;  // (B, NH, S, Dv)  input dtype
  const void* i;  // (B, NH, S)      gate dtype: input-gate pre-activation
  const void* f;  // (B, NH, S)      gate dtype: forget-gate pre-activation
  long long q_sb, q_sh, q_ss;
  long long k_sb, k_sh, k_ss;
  long long v_sb, v_sh, v_ss;
  long long i_sb, i_sh, i_ss;
  long long f_sb, f_sh, f_ss;
  void* h;  // (B, NH, S, Dv) input dtype
  long long h_sb, h_sh, h_ss;
  float* norm_out;  // (B, NH, S) fp32 or null: den_t (the value h was divided by, minus eps)
  float* m_out;     // (B, NH, S) fp32 or null: stabilizer m_t
  const float* C0;  // (B, NH, Dqk, Dv) fp32 or null
  const float* n0;  // (B, NH, Dqk) fp32 or null
  const float* m0;  // (B, NH) fp32 or null
  float* C_last;    // (B, NH, Dqk, Dv) fp32 or null
  float* n_last;    // (B, NH, Dqk) fp32 or null
  float* m_last;    // (B, NH) fp32 or null
  // workspace (all indexed by bh = b * NH + h; S_pad = NC * chunk)
  float* gate_b;    // (BH, S_pad) inclusive cumsum of logsigmoid(f) inside each chunk
  float* gate_u;    // (BH, S_pad) u_t = i~_t - b_t (-inf past S)
  float* gate_pm;   // (BH, S_pad) prefix max of u inside each chunk
  float* chunk_g;   // (BH, NC) b at the chunk's end
  float* chunk_umax;// (BH, NC) max of u over the chunk
  float* chunk_m;   // (BH, NC + 1) stabilizer entering chunk c; [NC] = m after the last chunk
  void* states_C;   // (BH, NC, Dqk, Dv) state dtype: C entering chunk c (stabilized by chunk_m)
  float* states_n;  // (BH, NC, Dqk) n entering chunk c
  // The sequence split of the state recurrence (mlstm_fwd_state_fix.cuh), nseg > 1: segment j
  // walks chunks [j seg_chunks, (j + 1) seg_chunks) from a zero state, its stabilizer entering
  // chunk c in seg_mloc (segment 0, which starts from C0, writes chunk_m), and leaves its end
  // state in seg_C / seg_n / seg_m; the fix kernel then makes every state exact.
  // seg_pieces > 1 (the fused walk's split only): the summary walk takes each segment in
  // seg_pieces pieces of seg_chunks / seg_pieces chunks, each leaving its own end state, and the
  // fold composes the pieces; the seg_* arrays then hold nseg * seg_pieces pieces, segment j's
  // start state at piece j * seg_pieces.
  float* seg_C;     // (BH, nseg * pieces, Dqk, Dv) fp32
  float* seg_n;     // (BH, nseg * pieces, Dqk) fp32
  float* seg_m;     // (BH, nseg * pieces)
  float* seg_mloc;  // (BH, NC + 1)
  int nseg, seg_chunks, seg_pieces;
  int B, NH, S, NC;
  float scale, eps;
  PackedSeqs packed;
};

// Backward. The forward's gate and state workspace (recomputed by the forward's gate and state
// kernels) is read through the same field names.
struct MlstmBwdParams {
  const void* q;   // (B, NH, S, Dqk)
  const void* k;   // (B, NH, S, Dqk)
  const void* v;   // (B, NH, S, Dv)
  const void* i;   // (B, NH, S) gate dtype
  const void* f;   // (B, NH, S) gate dtype
  const void* dh;  // (B, NH, S, Dv)
  long long q_sb, q_sh, q_ss;
  long long k_sb, k_sh, k_ss;
  long long v_sb, v_sh, v_ss;
  long long i_sb, i_sh, i_ss;
  long long f_sb, f_sh, f_ss;
  long long dh_sb, dh_sh, dh_ss;
  const float* norm;     // (B, NH, S) den_t from the forward
  const float* dC_last;  // (B, NH, Dqk, Dv) or null
  const float* C_last;   // (BH, Dqk, Dv) workspace: recomputed C_S (when dC_last)
  void* dq;  // (B, NH, S, Dqk) out
  void* dk;  // (B, NH, S, Dqk) out
  void* dv;  // (B, NH, S, Dv) out
  long long dq_sb, dq_sh, dq_ss;
  long long dk_sb, dk_sh, dk_ss;
  long long dv_sb, dv_sh, dv_ss;
  void* di;  // (B, NH, S) gate dtype out
  void* df;  // (B, NH, S) gate dtype out
  long long di_sb, di_sh, di_ss;
  long long df_sb, df_sh, df_ss;
  float* dC0;  // (B, NH, Dqk, Dv) out or null
  // workspace
  const float* gate_b;
  const float* gate_u;
  const float* gate_pm;
  const float* chunk_g;
  const float* chunk_m;   // (BH, NC + 1)
  const void* states_C;   // (BH, NC, Dqk, Dv) C entering chunk c
  void* dstates_C;        // (BH, NC, Dqk, Dv) dC of the state leaving chunk c
  float* dclast_dot;      // (BH, NT_dstates) partial <dC_last, C_S>
  int dclast_parts;       // NT_dstates: CTAs per head of the dC kernel
  float* xpart;           // (BH, S_pad, 2, xparts) fp32 partial row dots q.dq (0) and k.dk (1)
  int xparts;             // Dqk tiles of the dQ / dK kernels
  float* row_x;           // (BH, S_pad) reverse cumsum inside the chunk of q.dq - k.dk
  float* chunk_x;         // (BH, NC) chunk totals of q.dq - k.dk
  int B, NH, S, NC;
  float scale, eps;
  // The sequence split of the dC recurrence (mlstm_bwd_dstate_fix.cuh), nseg > 1: segment j
  // walks chunks [j seg_chunks, (j + 1) seg_chunks) backwards from a zero gradient (the last
  // from dC_last) and leaves its dC at its first chunk in seg_dC; the fix kernel makes every
  // stored gradient exact and writes dC0.
  float* seg_dC;          // (BH, nseg, Dqk, Dv) fp32
  int nseg, seg_chunks;
  PackedSeqs packed;
};

}  // namespace tfla
