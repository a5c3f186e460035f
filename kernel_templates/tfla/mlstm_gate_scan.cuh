// The parallel (quadratic) form's gate values, computed inside the tile kernels: no gate kernel,
// no workspace. A CTA whose row tile starts at R measures every position from R:
//   b'_t = b_t - b_{R-1}     (the sum of f~ over [R, t] for t >= R; minus the sum over (t, R)
//                             for t < R)
//   u'_t = i~_t - b'_t,      pm'_i = max_{t <= i} u'_t,      B = b_{R-1} (the sum over [0, R))
// With one chunk spanning the sequence (m_0 = 0), DESIGN.md section 3 becomes
//   mu_i = b'_i + max(B, pm'_i),   D_ij = exp(r'_i + u'_j),   r'_i = -max(B, pm'_i)  (mLSTMexp)
//   mu_i = 0,                      D_ij = exp(r'_i + u'_j),   r'_i = b'_i            (mLSTMsig)
// which is the chunkwise kernels' (r_i, u_j, mu_i) with B in the role of the entering stabilizer
// m_c. The sums start at R and run outwards, so the values near the diagonal (the ones D keeps)
// stay small and exact in fp32 however long the sequence; far values only grow where D is
// already negligible.
//
// Every member is called by all NT threads of the CTA (block-wide scans, barriers inside).
#pragma once
#include "tfla/common.cuh"

namespace tfla {

// f~_t and i~_t of head (b, h) at position t; positions outside [0, S) give f~ = 0 and
// i~ = -inf, which add nothing to any sum or maximum.
template <class G, bool EXP, class P>
__device__ __forceinline__ void log_gates_at(const P& p, int b, int h, int t, bool valid, float& ft,
                                             float& it) {
  ft = 0.f;
  it = neg_inf();
  if (valid && t >= 0 && t < p.S) {
    ft = logsigmoid(Elem<G>::to_float(static_cast<const G*>(p.f)[b * p.f_sb + h * p.f_sh + (i64)t * p.f_ss]));
    const float iraw = Elem<G>::to_float(static_cast<const G*>(p.i)[b * p.i_sb + h * p.i_sh + (i64)t * p.i_ss]);
    it = EXP ? iraw : logsigmoid(iraw);
  }
}

// Block-wide inclusive scans in thread order, one value per thread. s_warp: NT / 32 floats of
// shared memory. Two barriers each; *total is the block's sum (max), the same in every thread.
template <int NT> struct BlockScan {
  static_assert(NT % 32 == 0, "whole warps");
  static constexpr int NW = NT / 32;
  float* s_warp;

  __device__ float sum(float x, float* total) const {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float y = __shfl_up_sync(0xffffffffu, x, o);
      if (lane >= o) x += y;
    }
    if (lane == 31) s_warp[warp] = x;
    __syncthreads();
    float off = 0.f, tot = 0.f;
#pragma unroll
    for (int w = 0; w < NW; ++w) {
      const float s = s_warp[w];
      if (w < warp) off += s;
      tot += s;
    }
    __syncthreads();
    *total = tot;
    return x + off;
  }

  __device__ float max(float x, float* total) const {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float y = __shfl_up_sync(0xffffffffu, x, o);
      if (lane >= o) x = fmaxf(x, y);
    }
    if (lane == 31) s_warp[warp] = x;
    __syncthreads();
    float off = neg_inf(), tot = neg_inf();
#pragma unroll
    for (int w = 0; w < NW; ++w) {
      const float s = s_warp[w];
      if (w < warp) off = fmaxf(off, s);
      tot = fmaxf(tot, s);
    }
    __syncthreads();
    *total = tot;
    return fmaxf(x, off);
  }
};

// The outward scans of one CTA over the raw gates of head (b, h). G: gate dtype.
template <int NT, bool EXP, class G> struct GateScan {
  BlockScan<NT> scan;
  int b, h;

  // The prefix [0, R), walked from R down in segments of NT: *B = b_{R-1} (0 when R = 0) and
  // *P0 = max_{t < R} u'_t (-inf when R = 0).
  template <class P> __device__ void prefix(const P& p, int R, float* B, float* P0) const {
    float carry = 0.f, mx = neg_inf();
    for (int hi = R; hi > 0; hi -= NT) {
      const int t = hi - 1 - static_cast<int>(threadIdx.x);
      float ft, it;
      log_gates_at<G, EXP>(p, b, h, t, true, ft, it);
      float tot, m;
      const float sfx = carry + scan.sum(ft, &tot);  // sum of f~ over [t, R)
      scan.max(it - (ft - sfx), &m);                 // u'_t, b'_t = f~_t - sfx
      carry += tot;
      mx = fmaxf(mx, m);
    }
    *B = carry;
    *P0 = mx;
  }

  // Positions [t0, t0 + n), n <= NT, walking up from R: thread tid holds t0 + tid (threads past
  // n hold nothing). csum: b' of t0 - 1, cmax: pm' of t0 - 1 (mLSTMexp); both advance past the
  // tile. Out: this thread's b'_t, u'_t and pm'_t (pm' only for mLSTMexp).
  template <class P>
  __device__ void up(const P& p, int t0, int n, float& csum, float& cmax, float& bp, float& u,
                     float& pm) const {
    const int tid = threadIdx.x;
    float ft, it, tot;
    log_gates_at<G, EXP>(p, b, h, t0 + tid, tid < n, ft, it);
    bp = csum + scan.sum(ft, &tot);
    u = it - bp;
    csum += tot;
    pm = neg_inf();
    if (EXP) {
      float m;
      pm = fmaxf(cmax, scan.max(u, &m));
      cmax = fmaxf(cmax, m);
    }
  }

  // Positions [t0, t0 + n), n <= NT, all below R, walking down towards 0: thread tid holds
  // t0 + n - 1 - tid. csum: the sum of f~ over [t0 + n, R), advanced past the tile. Returns
  // this thread's u'_t.
  template <class P> __device__ float down(const P& p, int t0, int n, float& csum) const {
    const int tid = threadIdx.x;
    float ft, it, tot;
    log_gates_at<G, EXP>(p, b, h, t0 + n - 1 - tid, tid < n, ft, it);
    const float sfx = csum + scan.sum(ft, &tot);
    csum += tot;
    return it - (ft - sfx);
  }
};

}  // namespace tfla
