// Kernel parameter block of the recurrent step's kernels (mlstm_step.cuh). Plain data shared by
// host and device code: the host fills one and passes it by value as the only kernel argument.
// Strides are in elements; the feature dimension is always contiguous.
#pragma once

#if defined(__CUDACC__)
#define TFLA_HD __host__ __device__
#else
#define TFLA_HD
#endif

namespace tfla {

struct MlstmStepParams {
  const void* q;  // (B, NH, T, Dqk) input dtype
  const void* k;  // (B, NH, T, Dqk) input dtype
  const void* v;  // (B, NH, T, Dv)  input dtype
  const void* i;  // (B, NH, T)      gate dtype: input-gate pre-activation
  const void* f;  // (B, NH, T)      gate dtype: forget-gate pre-activation
  long long q_sb, q_sh, q_ss;
  long long k_sb, k_sh, k_ss;
  long long v_sb, v_sh, v_ss;
  long long i_sb, i_sh, i_ss;
  long long f_sb, f_sh, f_ss;
  void* h;  // (B, NH, T, Dv) input dtype, out
  long long h_sb, h_sh, h_ss;
  float* C;  // (B, NH, Dqk, Dv) fp32, out (16-byte aligned); the source too where C_src is null
  float* n;  // (B, NH, Dqk) fp32, out; the source too where n_src is null
  float* m;  // (B, NH) fp32, out; mLSTMsig: may be null, else set to 0; mLSTMexp: the source too
             // where m_src is null
  // The states the step starts from, where they are not C, n, m themselves (null = in place).
  // A source is the same buffer as its destination or shares no byte with any destination.
  const float* C_src;  // (B, NH, Dqk, Dv) fp32 (16-byte aligned)
  const float* n_src;  // (B, NH, Dqk) fp32
  const float* m_src;  // (B, NH) fp32, mLSTMexp only
  int NH;    // heads per batch row (bh = b * NH + h)
  int T;     // tokens of this call, >= 1
  float scale, eps;
  int nm_mode;  // who writes n and m: STEP_NM_APART, STEP_NM_CLUSTER, STEP_NM_DEPENDENT or STEP_NM_RECORDS
};

// MlstmStepParams::nm_mode (mlstm_step.cuh says why each exists).
#define STEP_NM_APART 0      // sources apart from n, m: the fused kernel's slice 0 writes them
#define STEP_NM_CLUSTER 1    // in place, a cluster launch: slice 0 writes them after the cluster barrier
#define STEP_NM_DEPENDENT 2  // in place: the dependent mlstm_step_nm writes them
#define STEP_NM_RECORDS 3    // several tokens on many CTAs: mlstm_step_nm first, records in h

// The fused kernel's layout rules, shared by the host (config checks) and the kernel
// (static_asserts). A CTA owns a Dqk x BV column slice of one head's C; its NT threads read and
// write it as 16-byte (4 x fp32) vectors, BV / 4 threads per row, so NT / (BV / 4) rows per pass.
TFLA_HD constexpr int step_threads_per_row(int bv) { return bv / 4; }
TFLA_HD constexpr int step_rows_per_pass(int bv, int nt) { return nt / (bv / 4); }
// fp32 state values each thread keeps in registers (the whole slice, loaded at once).
TFLA_HD constexpr int step_state_regs(int dqk, int bv, int nt) { return dqk * bv / nt; }
// Threads of mlstm_step_nm (one CTA per head).
#define STEP_NM_THREADS 128
// The fused kernel stages the gate factors (f', i', m) of this many tokens at a time (one warp's).
#define STEP_GATE_TOKENS 32
// Static shared memory of one fused CTA, bytes: q, k (Dqk) and v (BV) of pf tokens in the input
// dtype, the partial h sums, the per-warp partials of n . q and the staged gate factors.
TFLA_HD constexpr int step_smem_bytes(int eb, int dqk, int bv, int nt, int pf) {
  return pf * (2 * dqk + bv) * eb + (32 % (bv / 4) == 0 ? nt / 32 : step_rows_per_pass(bv, nt)) * bv * 4 +
         nt / 32 * 4 + STEP_GATE_TOKENS * 16;
}

}  // namespace tfla
