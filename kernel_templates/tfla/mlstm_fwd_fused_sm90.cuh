// The fused forward on the sm_90a engine: one kernel walks each head's chunks of L = 64 in order,
// keeping the chunk state on chip, so no state workspace is written or read. The math is the
// chunkwise forward's (mlstm_fwd_states.cuh, mlstm_fwd_output.cuh) with the gate kernel's
// workspace at chunk 64; entering chunk c with state C_c (stabilized by m_c) and n_c:
//   H_i = beta_i s (q_i C_c) + sum_{j<=i in chunk} exp(r_i + u_j) s (q_i . k_j) v_j
//   N_i = beta_i s (q_i . n_c) + sum_{j<=i in chunk} exp(r_i + u_j) s (q_i . k_j)
//   h_i = H_i / (den_i + eps)
//   m_c+1 = max(g + m_c, g + max_t u_t) (mLSTMexp; 0 for mLSTMsig),  w_t = exp(g + u_t - m_c+1)
//   C_c+1 = exp(g + m_c - m_c+1) C_c + (K * w)^T V,   n_c+1 = exp(g + m_c - m_c+1) n_c + sum_t w_t k_t
//
// One CTA per (BV columns of Dv, head, segment of the sequence), 384 threads; BV is 128, or 256
// where Dqk <= 128 (FwdConfig::fused_bv: half the walks, each doing Q K^T once for 256 columns):
//  - warpgroup 0 (producer, 24 registers): one thread loads by TMA, per chunk, K (64 x Dqk) and
//    V (64 x BV) into the next of two ring slots, then Q (64 x Dqk) and the chunk's gate rows
//    (b_t, pm_t, u_t from the gate kernel's workspace) into their own buffer once the consumers
//    are done with the previous chunk's.
//  - warpgroups 1 and 2 (consumers, 240 registers) own WC = BV / 2 columns each: of h (a 64 x 64
//    fp32 accumulator per block of 64 columns) and of the state, held transposed as C^T (WC x Dqk
//    fp32, WC Dqk / 128 registers, blocks of 64 rows) for the whole walk, with a 16-bit copy Cs in shared memory (K-major, the inter part's B
//    operand). Per chunk a consumer issues its half of S = Q K^T (32 keys: m64n32) with its
//    blocks' part of q_i . n_c (m64n8 over the 64-row blocks of Dqk whose n it keeps, B = n_c in
//    two 16-bit parts; fp16: fp32 on the CUDA cores), then the inter part Q Cs (m64n64). It turns
//    its half of S into P (decay, causal mask) in a shared 16-bit P tile, with its part of each
//    row's N_i (its half of the row sum of P plus its part of beta_i s (q_i . n_c)) beside it. Once
//    both halves are there (the one barrier of the two consumers per chunk) it issues P V (both
//    operands from shared memory), its blocks of n's update K^T w (m64n8) and the update of its
//    state slice, C^T <- decay C^T + (V * w)^T K (m64nDqk, A = V^T from ldmatrix.trans scaled by
//    w_t in registers, B = K MN-major; in 256-column bf16 walks the decay is kept aside and
//    multiplied out only now and then, see kLazy). While the update runs it stores h (with 128
//    columns the two blocks of h take turns, see the branch in the chunk loop); then the new state
//    goes to Cs by stmatrix and its n_c+1 to its own n tile, behind a barrier of its own
//    warpgroup, so the consumers meet only once per chunk.
// Rows past S read zeros (TMA fills outside the tensor; in a packed sequence the next sequence's
// tokens) and are not stored; keys past S have u = -inf (the gate kernel's padding), so they
// weigh nothing in P, C and n. A packed sequence (seq_span.cuh, never split) walks its own
// chunks; its tokens start at tok0 of a (1, NH, T, D) layout (TMA batch coordinate 0).
// With p.nseg > 1 (few heads on a long sequence) the walk is split into segments of seg_chunks
// chunks (grid z): segment j > 0 starts from the exact state entering it, which the summary walk
// (mlstm_fwd_states_sm90.cuh without chunk states) and the fold (mlstm_fwd_state_fix.cuh, STARTS)
// left in seg_C, seg_n at piece j * p.seg_pieces and chunk_m at its first chunk
// (docs/SEQUENCE_SPLIT.md); only the last segment writes the last states.
// With a saved-states buffer (p.states_C set) the walk reads the gate rows of the buffer's
// chunk, gate_sub chunks of 64 (b_t and u_t relative to that chunk's start: the walk subtracts b
// at the end of the chunk of 64 before, g_off, where the formulas above take b and u relative to
// its own chunk's start; pm_t over the longer prefix adds only keys whose weight
// m_c already bounds), and fills the buffer as the three kernels would: at each of its chunks'
// starts the state C entering it (16-bit, (Dqk, Dv) rows, through movmatrix transposes of the
// C^T fragments), n and the stabilizer, then the stabilizer after the last chunk and C_S (fp32,
// p.C_last). Split so, its segments start at the buffer's chunks (the summary walk runs at that
// chunk on those gate rows), each segment's stabilizer in the buffer's chunk_m.
#pragma once
#include "tfla/mlstm_sm90_params.cuh"
#include "tfla/seq_span.cuh"
#include "tfla/sm90.cuh"
#include "tfla/sm90_wgmma.cuh"

namespace tfla {

template <class T, int DQK, int DV, int BV, bool EXP, bool NORMALIZE>
__device__ void mlstm_fwd_fused_sm90(const MlstmFwdFusedSm90Params& P, char* smem_raw) {
  using namespace sm90;
  using Shape = FwdFusedSm90Shape;
  constexpr int L = Shape::kChunk, STAGES = Shape::kStages;
  // each consumer's columns of h and of the state: WC = BV / 2, kVB blocks of 64 (the m64 rows of C^T)
  constexpr int WC = BV / 2, kVB = WC / 64;
  constexpr int kQPanels = DQK / 64;
  constexpr int kPanelBytes = 64 * 128;  // 64 rows of 64 16-bit columns
  constexpr int kQBytes = kQPanels * kPanelBytes;
  constexpr int kKBytes = kQBytes, kVBytes = (BV / 64) * kPanelBytes;
  constexpr int kSlotBytes = kKBytes + kVBytes;
  constexpr int kCsPanelBytes = WC * 128;           // WC rows of 64 16-bit Dqk columns
  constexpr int kCsBytes = kQPanels * kCsPanelBytes;  // one consumer's WC x Dqk state copy
  constexpr int kPBytes = L * L * 2;                 // P (64 x 64, 16-bit)
  constexpr bool NEED_N = EXP || NORMALIZE;
  constexpr int kAccC = DQK / 2;  // state floats per thread and block of 64 columns (64 x Dqk)
  // n's update, n_c+1 = n_c decayed + K^T w, on the tensor cores: per 64-row block of Dqk, m64n8
  // with A = K^T (the K tile, MN-major) and B = an 8 x 64 K-major tile of w (rows 0 and 1: hi and
  // lo 16-bit parts, rows 2..7 zero). Consumer cw takes the blocks mb = cw, cw + 2, ...; a quad's
  // lane 0 keeps n of its rows (16 warp + g + 8 hh of each block) in fp32 registers.
  constexpr int kNBlocks = DQK / 64, kNB = (kNBlocks + 1) / 2;
  // bf16: q_i . n_c on the tensor cores, from an 8 x Dqk K-major tile of n_c in two bf16 parts
  // (rows 0 and 1: hi = bf16(n), lo = bf16(n - hi); rows 2..7 zero), m64n8 with A = Q. fp16 cannot
  // hold n's range (it grows with the sequence), so there the CUDA cores take it from fp32 n.
  constexpr bool kTensorQn = NEED_N && WgmmaIsBf16<T>::value;
  constexpr bool kCudaQn = NEED_N && !kTensorQn;
  constexpr int kNBytes = DQK * 16;  // one n buffer: the tile (DQK / 64 panels of 8 rows), or fp32 n
  static_assert(DQK == 64 || DQK == 128 || DQK == 256, "Dqk 64, 128 or 256");
  static_assert(BV == 128 || BV == 256, "slices of 128 or 256 columns of Dv");
  static_assert(BV == 128 || DQK <= 128, "256 columns: the state (WC x Dqk per consumer) must fit the registers");
  static_assert(DV % BV == 0, "BV-column slices of Dv");
  static_assert(Elem<T>::is16, "16-bit inputs");
  static_assert(1024 + kQBytes + STAGES * kSlotBytes + 2 * kPBytes + Shape::kConsumers * (kNBytes + 1024) +
                        Shape::kConsumers * (kCsBytes + 2 * L * 4 + L * 4) + 3 * L * 4 +
                        Shape::kConsumers * 512 * 4 + (2 * STAGES + 2) * 8 ==
                    fwd_fused_sm90_smem_bytes(DQK, BV),
                "the layout below must match fwd_fused_sm90_smem_bytes, which the host sizes the launch with");

  const MlstmFwdParams& p = P.p;
  char* sQ = align_smem<1024>(smem_raw);
  char* ring = sQ + kQBytes;
  char* sCs = ring + STAGES * kSlotBytes;
  char* sP = sCs + Shape::kConsumers * kCsBytes;         // P of chunks c % 2 = 0, 1
  char* sN = sP + 2 * kPBytes;                           // per consumer: n_c of its Dqk blocks
  char* sWt = sN + Shape::kConsumers * kNBytes;          // per consumer: the w tile of n's update
  float* sRow = reinterpret_cast<float*>(sWt + Shape::kConsumers * 1024);  // N_i's parts, per consumer
  float* sW = sRow + 2 * Shape::kConsumers * L;
  float* sG = sW + Shape::kConsumers * L;  // the chunk's gate rows b_t, u_t, pm_t, loaded with Q
  // mLSTMexp: each consumer thread's mu_i and beta_i s of its two rows (kept out of registers)
  float* sMu = sG + 3 * L;
  u64* full = reinterpret_cast<u64*>(sMu + Shape::kConsumers * 128 * 4);
  u64* empty = full + STAGES;
  u64* q_full = empty + STAGES;
  u64* q_empty = q_full + 1;
  constexpr int kConsumerWarps = 4 * Shape::kConsumers;
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kConsumerWarps);
    }
    mbar_init(q_full, 1);
    mbar_init(q_empty, kConsumerWarps);
    fence_mbarrier_init();
    tma_prefetch_desc(&P.q);
    tma_prefetch_desc(&P.k);
    tma_prefetch_desc(&P.v);
    tma_prefetch_desc(&P.gates);
  }
  __syncthreads();

  const int vt = blockIdx.x, bh = blockIdx.y;
  const int b = bh / p.NH, h = bh % p.NH;
  const SeqSpan sq = seq_span<L>(p, b, h);
  const int S = sq.S, NC = TFLA_PACKED ? sq.NC : p.NC;
  const int nseg = p.nseg > 1 ? p.nseg : 1, seg = blockIdx.z;
  const int c_begin = nseg > 1 ? seg * p.seg_chunks : 0;
  const int c_end = nseg > 1 ? min(NC, c_begin + p.seg_chunks) : NC;

  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    setmaxnreg_dec<24>();
    if (threadIdx.x == 0) {
      RingPos<STAGES> pos;
      u32 q_phase = 0;
      const int tok0 = static_cast<int>(sq.tok0), tb = TFLA_PACKED ? 0 : b;
#pragma unroll 1
      for (int c = c_begin; c < c_end; ++c) {
        const int row0 = c * L, trow = tok0 + row0;
        mbar_wait(&empty[pos.slot], pos.phase ^ 1u);
        char* slot = ring + pos.slot * kSlotBytes;
        mbar_arrive_expect_tx(&full[pos.slot], kSlotBytes);
#pragma unroll
        for (int kp = 0; kp < kQPanels; ++kp)
          tma_load_4d(slot + kp * kPanelBytes, &P.k, &full[pos.slot], 64 * kp, trow, h, tb);
#pragma unroll
        for (int vp = 0; vp < BV / 64; ++vp)
          tma_load_4d(slot + kKBytes + vp * kPanelBytes, &P.v, &full[pos.slot], vt * BV + 64 * vp, trow, h, tb);
        pos.advance();
        mbar_wait(q_empty, q_phase ^ 1u);
        mbar_arrive_expect_tx(q_full, kQBytes + 3 * L * 4);
#pragma unroll
        for (int kp = 0; kp < kQPanels; ++kp) tma_load_4d(sQ + kp * kPanelBytes, &P.q, q_full, 64 * kp, trow, h, tb);
        tma_load_3d(sG, &P.gates, q_full, row0, bh, 0);
        q_phase ^= 1u;
      }
    }
    return;
  }

  setmaxnreg_inc<240>();
  // the walk's last chunk + 1 through a shuffle: warp-uniform to the compiler, which keeps it out
  // of the per-thread registers
  const int c_stop_reg = __shfl_sync(0xffffffffu, c_end, 0);
  // consumer warpgroup: columns 64 cw .. 64 cw + 63 of the CTA's slice (taken through a shuffle,
  // so the compiler knows it is warp-uniform and builds the wgmma descriptors in uniform registers)
  const int cw = __shfl_sync(0xffffffffu, wg, 0) - 1;
  const int lt = threadIdx.x % 128, lane = threadIdx.x % 32, warp = lt / 32;
  const int g = lane / 4, cq = lane % 4;
  const bool warp_leader = lane == 0;
  const int v0 = vt * BV + WC * cw;  // first column of h and of the state this warpgroup owns
  const float scale = p.scale;
  const u32 q_base = smem_u32(sQ);
  char* cs = sCs + cw * kCsBytes;
  const u32 cs_base = smem_u32(cs);
  u32* w_s = reinterpret_cast<u32*>(sW + cw * L);  // the update's weights w_t, w_t+1 as 16-bit pairs
  float* mu_s = sMu + cw * 512;
  // (the saved layout's values are read from the parameters where used: no registers kept)
  auto save = [&] { return P.p.states_C != nullptr; };
  auto save_nc = [&] { return (P.p.S + L * P.gate_sub - 1) / (L * P.gate_sub); };  // its chunks
  const bool track_n = NEED_N || p.n_last != nullptr || save();
  const bool row_out = vt == 0 && cw == 0 && cq == 0;  // stores den_i and m_i

  // The state slice C^T: element i of block vb of this thread is Dv column
  // v0 + 64 vb + 16 warp + g + 8 ((i / 2) % 2) and Dqk row 8 (i / 4) + 2 cq + i % 2.
  float acc_c[kVB][kAccC];
  // offset of element i in a (Dqk, Dv) fp32 state, after cbase(vb)
  auto cbase = [&](int vb) { return v0 + 64 * vb + 16 * warp + g; };
  auto coff = [&](int i) { return (8 * (i / 4) + 2 * cq + i % 2) * DV + 8 * ((i / 2) % 2); };
  // the state entering the first chunk: the caller's initial state, or a later segment's start
  const long long sb = (static_cast<long long>(bh) * nseg + seg) * (p.seg_pieces > 1 ? p.seg_pieces : 1);
  const float* C_in = seg > 0 ? p.seg_C + sb * DQK * DV : p.C0 ? p.C0 + static_cast<long long>(bh) * DQK * DV : nullptr;
  const float* n_in = seg > 0 ? p.seg_n + sb * DQK : p.n0 ? p.n0 + static_cast<long long>(bh) * DQK : nullptr;
#pragma unroll
  for (int vb = 0; vb < kVB; ++vb) {
    if (C_in) {
      const float* c0 = C_in + cbase(vb);
#pragma unroll
      for (int i = 0; i < kAccC; ++i) acc_c[vb][i] = c0[coff(i)];
    } else {
#pragma unroll
      for (int i = 0; i < kAccC; ++i) acc_c[vb][i] = 0.f;
    }
  }
  // n: a quad's lane 0 keeps the rows n_row(j, hh) of its consumer's blocks in fp32 registers and
  // puts them into its consumer's own tile (put_n; panel j holds block n_block(j)), from which the
  // consumer takes its part of q . n over those blocks
  const bool own_n = cq == 0;
  // (with one block, Dqk 64, both consumers compute it and the first keeps it)
  auto n_block = [&](int j) { return kNBlocks == 1 ? 0 : cw + 2 * j; };
  auto n_row = [&](int j, int hh) { return 64 * n_block(j) + 16 * warp + g + 8 * hh; };
  auto has_block = [&](int j) { return kNBlocks == 1 ? cw == 0 : cw + 2 * j < kNBlocks; };
  float n_reg[kNB][2];
#pragma unroll
  for (int j = 0; j < kNB; ++j)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh)
      n_reg[j][hh] = own_n && has_block(j) && n_in ? n_in[n_row(j, hh)] : 0.f;
  auto n_own = [&] { return sN + cw * kNBytes; };
  auto wt_own = [&] { return sWt + cw * 1024; };
  auto put_n = [&]() {
#pragma unroll
    for (int j = 0; j < kNB; ++j)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        if (!has_block(j)) continue;
        const int nd = n_row(j, hh);
        if constexpr (kTensorQn) {
          const T hi = Elem<T>::from_float(n_reg[j][hh]);
          const T lo = Elem<T>::from_float(n_reg[j][hh] - Elem<T>::to_float(hi));
          char* at = n_own() + j * 1024 + (nd % 8) * 2;
          const int ch = (nd % 64) / 8;
          *reinterpret_cast<T*>(at + ((ch ^ 0) << 4)) = hi;
          *reinterpret_cast<T*>(at + 128 + ((ch ^ 1) << 4)) = lo;
        } else if constexpr (kCudaQn) {
          reinterpret_cast<float*>(n_own())[64 * j + nd % 64] = n_reg[j][hh];
        }
      }
  };
  // each consumer's tiles zeroed (rows 2..7 stay zero; with Dqk 64 the second consumer's n tile
  // stays zero, so its part of q . n is 0), then n_0 put in
  constexpr int kNPanels = kTensorQn ? kNB : 0;
  for (int i = lt; i < (kNPanels + 1) * 64; i += 128) {  // 16 bytes each: 64 per panel
    char* base = i / 64 < kNPanels ? n_own() + (i / 64) * 1024 : wt_own();
    *reinterpret_cast<uint4*>(base + (i % 64) * 16) = make_uint4(0u, 0u, 0u, 0u);
  }
  // 128 columns: the walk's end in the unused word before g_prev (below), read per chunk: the
  // state's 128 registers leave none to keep it in
  int* c_stop_s = reinterpret_cast<int*>(sW + cw * L + L - 2);
  if (kVB > 1 && lt == 0) *c_stop_s = c_end;
  named_bar_sync(4 + cw, 128);
  if (own_n) put_n();
  fence_proxy_async();
  // a later segment's stabilizer, which the fold left in chunk_m at its first gate chunk
  float m_prev = !EXP     ? 0.f
                 : seg > 0 ? p.chunk_m[static_cast<long long>(bh) * (save_nc() + 1) + c_begin / P.gate_sub]
                 : p.m0    ? p.m0[bh]
                           : 0.f;

  // C^T -> Cs (16-bit, 128B-swizzled K-major panels of 64 Dqk columns, WC rows each): stmatrix
  // stores four 8 x 8 blocks per call, lane 8 i + r giving row r of block i = (row half i % 2,
  // column block jb + i / 2).
  auto store_cs = [&]() {
    const int i4 = lane / 8, r = lane % 8;
#pragma unroll
    for (int vb = 0; vb < kVB; ++vb)
#pragma unroll
      for (int jb = 0; jb < DQK / 8; jb += 2) {
        const int row = 64 * vb + 16 * warp + 8 * (i4 % 2) + r;
        const int cb = jb + i4 / 2;  // Dqk column block of 8
        char* addr = cs + (cb / 8) * kCsPanelBytes + row * 128 + (((cb % 8) ^ r) << 4);
        const float* a = acc_c[vb];
        stmatrix_x4(addr, Elem<T>::pack2(a[4 * jb], a[4 * jb + 1]), Elem<T>::pack2(a[4 * jb + 2], a[4 * jb + 3]),
                    Elem<T>::pack2(a[4 * jb + 4], a[4 * jb + 5]), Elem<T>::pack2(a[4 * jb + 6], a[4 * jb + 7]));
      }
    fence_proxy_async();
  };
  store_cs();
  named_bar_sync(3, 256);  // every consumer's Cs and n tile are in shared memory

  // The state entering saved chunk cg (C, n and m in the walk's registers): movmatrix turns
  // each 8 x 8 block of C^T (rows v, columns k) around, giving lane (g, cq) the column pair
  // v = 16 warp + 8 hh + 2 cq of row k = 8 j + g. Lanes cq and cq ^ 1 swap one pair so that lane
  // cq holds the four columns 8 (cq % 2) + 2 (cq & 2) .. + 3 of hh = cq % 2: an 8-byte store,
  // a quad's four filling the row's 32-byte sector in one instruction (a 16-byte store per lane
  // needs more registers than the walk has to spare).
  auto save_state = [&](int cg) {
    const long long at = static_cast<long long>(bh) * save_nc() + cg;
    const bool odd = cq & 1;
    T* dst = static_cast<T*>(p.states_C) + at * DQK * DV + v0 + 16 * warp + 8 * (cq & 1) + 2 * (cq & 2);
#pragma unroll
    for (int vb = 0; vb < kVB; ++vb)
#pragma unroll
      for (int j = 0; j < DQK / 8; ++j) {
        const u32 a = movmatrix_trans(Elem<T>::pack2(acc_c[vb][4 * j], acc_c[vb][4 * j + 1]));
        const u32 b = movmatrix_trans(Elem<T>::pack2(acc_c[vb][4 * j + 2], acc_c[vb][4 * j + 3]));
        const u32 got = __shfl_xor_sync(0xffffffffu, odd ? a : b, 1);
        __stwb(reinterpret_cast<uint2*>(dst + (8 * j + g) * DV + 64 * vb),
               odd ? make_uint2(got, b) : make_uint2(a, got));
      }
    if (vt == 0 && own_n) {
      float* nd = p.states_n + at * DQK;
#pragma unroll
      for (int j = 0; j < kNB; ++j)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh)
          if (has_block(j)) nd[n_row(j, hh)] = n_reg[j][hh];
    }
    if (vt == 0 && threadIdx.x == 128) p.chunk_m[static_cast<long long>(bh) * (save_nc() + 1) + cg] = m_prev;
  };
  // b at the end of the previous chunk of 64 where it lies in the same gate chunk, in the unused
  // upper half of this consumer's weights (w_s takes L / 2 words), not in a register
  float* g_prev = sW + cw * L + L - 1;
  if (save()) save_state(c_begin / P.gate_sub);

  // Lazy decay (bf16, 256-column walks): the registers, Cs and the n tile hold C / D and n / D
  // with D = exp(ld) <= 1, the chunks' decays since the state was last exact. The inter part and
  // q . n take D through beta_i, the update's weights w_t take 1 / D, and the state is multiplied
  // out only where ld would fall below kLazyFloor (w_t and C / D then stay below e^-kLazyFloor
  // times their exact values, far inside bf16's range) or the exact state is stored next: at a
  // saved chunk and after the walk's last chunk. fp16 (range 65504) decays every chunk, and so
  // does the 128-column walk, where the same change measured slower (docs/PERF_NOTES.md, v29).
  constexpr bool kLazy = WgmmaIsBf16<T>::value && kVB > 1;
  constexpr float kLazyFloor = -30.f;
  float ld = 0.f;
  float acc_h[32];  // h's columns 64 vb .. 64 vb + 63 of this warpgroup's, one block vb at a time
  float sacc[16];
  float nacc[kNB][4];  // n's update of this chunk (K^T w, hi and lo columns)
  const int lrow = 16 * warp + g;  // this thread's rows of the chunk: lrow and lrow + 8

#pragma unroll 1
  for (int c = c_begin; c < (kVB > 1 ? *c_stop_s : c_stop_reg); ++c) {
    const int c_stop = kVB > 1 ? *c_stop_s : c_stop_reg;
    const int row0 = c * L;
    // the ring slot and the barriers' phases follow from c (no loop-carried registers for them):
    // a segment starts at a multiple of 2 STAGES chunks (the host's fused_segments)
    const int slot = c % STAGES;
    char* kv = ring + slot * kSlotBytes;
    const u32 k_base = smem_u32(kv), v_base = smem_u32(kv + kKBytes + cw * kVB * kPanelBytes);
    char* pbuf = sP + (c & 1) * kPBytes;
    // per consumer: its part of each row's N_i (its half of the row sum of P, its blocks' part of
    // beta_i s (q_i . n_c))
    float* rsum = sRow + (c & 1) * 2 * L;
    const float* g_b = sG;  // the chunk's gate rows (with Q): b_t, u_t, pm_t
    const float* g_u = sG + L;
    const float* g_pm = sG + 2 * L;
    const float g_off = c % P.gate_sub ? *g_prev : 0.f;
    mbar_wait(q_full, static_cast<u32>(c) & 1u);
    mbar_wait(&full[slot], static_cast<u32>(c / STAGES) & 1u);
    // this warpgroup's half of S = Q K^T (keys 32 cw .. 32 cw + 31), from shared memory, and
    // (kTensorQn) its blocks' part of q_i . n_c: hi and lo parts in the quad's lane 0, zeros in the others
    float qn[4];
    wgmma_fence();
#pragma unroll
    for (int kp = 0; kp < kQPanels; ++kp) {
      const u64 da = wgmma_desc_kmajor(q_base + kp * kPanelBytes, 128);
      const u64 db = wgmma_desc_kmajor(k_base + kp * kPanelBytes + cw * 32 * 128, 128);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        Wgmma<32>::template ss<T, 0, 0>(sacc, da + desc_step(32 * kk), db + desc_step(32 * kk), (kp | kk) != 0);
    }
    if constexpr (kTensorQn) {
#pragma unroll
      for (int j = 0; j < kNB; ++j) {
        const u64 dq = wgmma_desc_kmajor(q_base + n_block(j) * kPanelBytes, 128);
        const u64 dn = wgmma_desc_kmajor(smem_u32(n_own() + j * 1024), 128);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          Wgmma<8>::template ss<T, 0, 0>(qn, dq + desc_step(32 * kk), dn + desc_step(32 * kk), (j | kk) != 0);
      }
    }
    wgmma_commit();
    // the inter part Q C_c of h's columns 64 vb .., from shared memory
    auto issue_qc = [&](int vb) {
      wgmma_fence();
#pragma unroll
      for (int kp = 0; kp < kQPanels; ++kp) {
        const u64 da = wgmma_desc_kmajor(q_base + kp * kPanelBytes, 128);
        const u64 db = wgmma_desc_kmajor(cs_base + kp * kCsPanelBytes + vb * 64 * 128, 128);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          Wgmma<64>::template ss<T, 0, 0>(acc_h, da + desc_step(32 * kk), db + desc_step(32 * kk), (kp | kk) != 0);
      }
      wgmma_commit();
    };
    issue_qc(0);

    // The chunk's gates: g = b at its end, max u = pm at its end; the new stabilizer, the state
    // decayed to it (C and n, before the update adds the chunk; in 256-column walks lazily, see
    // kLazy), the row values r_i, beta_i, mu_i and the update's row weights w_t.
    const float b_end = g_b[L - 1];
    const float g_c = b_end - g_off;
    const float m_new = EXP ? fmaxf(g_c + m_prev, b_end + g_pm[L - 1]) : 0.f;
    const float ld_c = ld;
    {
      const float ld_next = kLazy ? ld_c + g_c + m_prev - m_new : g_c + m_prev - m_new;
      const bool exact_next = c + 1 == c_stop || (save() && (c + 1) % P.gate_sub == 0);
      if (!kLazy || exact_next || ld_next < kLazyFloor) {
        // (lazy: S and the inter part complete first, as ptxas would otherwise make them)
        if constexpr (kLazy) wgmma_wait<0>();
        const float decay = __expf(ld_next);
#pragma unroll
        for (int vb = 0; vb < kVB; ++vb)
#pragma unroll
          for (int i = 0; i < kAccC; ++i) acc_c[vb][i] *= decay;
#pragma unroll
        for (int j = 0; j < kNB; ++j) {
          n_reg[j][0] *= decay;
          n_reg[j][1] *= decay;
        }
        ld = 0.f;
      } else {
        ld = ld_next;
      }
    }
    float r[2], beta[2];
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const float b_raw = g_b[lrow + 8 * hh];
      const float bi = b_raw - g_off;
      if (EXP) {
        const float M = fmaxf(m_prev, g_pm[lrow + 8 * hh] + g_off);
        r[hh] = g_off - M;  // (u_j of the gate rows is u_j of this chunk's minus g_off)
        beta[hh] = __expf(kLazy ? m_prev - M + ld_c : m_prev - M);
        mu_s[4 * lt + hh] = bi + M;  // read back by this thread in the epilogue
        mu_s[4 * lt + 2 + hh] = beta[hh] * scale;  // and in the inter part's row scale
      } else {
        r[hh] = b_raw;
        beta[hh] = __expf(kLazy ? bi + ld_c : bi);
        if constexpr (kVB > 1) mu_s[4 * lt + 2 + hh] = beta[hh] * scale;  // (beta not kept past P)
      }
    }
    if (lt < L) {
      const float w = __expf(kLazy ? b_end + g_u[lt] - m_new - ld : b_end + g_u[lt] - m_new);
      const float w_next = __shfl_down_sync(0xffffffffu, w, 1);
      if (lt % 2 == 0) w_s[lt / 2] = Elem<T>::pack2(w, w_next);
      {  // this consumer's w tile of n's update: row 0 hi, row 1 lo, column lt
        const T hi = Elem<T>::from_float(w);
        const T lo = Elem<T>::from_float(w - Elem<T>::to_float(hi));
        char* at = wt_own() + (lt % 8) * 2;
        *reinterpret_cast<T*>(at + (((lt / 8) ^ 0) << 4)) = hi;
        *reinterpret_cast<T*>(at + 128 + (((lt / 8) ^ 1) << 4)) = lo;
        fence_proxy_async();
      }
    }
    m_prev = m_new;

    wgmma_wait<1>();
    reg_fence(sacc);
    // this warpgroup's half of P: decay and causal mask, rounded to 16 bits into the shared P
    // (one K-major 64 x 64 panel, the P V operand of both warpgroups) by stmatrix; its row sums
    // and its part of beta_i s (q_i . n_c), reduced over the quad, into rsum
    {
      float rs[2] = {0.f, 0.f};
      if constexpr (kTensorQn) {
        reg_fence(qn);
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) rs[hh] = beta[hh] * scale * (qn[2 * hh] + qn[2 * hh + 1]);
      } else if constexpr (kCudaQn) {
        // fp32 n on the CUDA cores: lane (g, cq) sums the 16-byte chunks cq and cq + 4 of the
        // 128-byte Q row panels of this consumer's blocks for its two rows
        const float* nf = reinterpret_cast<const float*>(n_own());
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int row = lrow + 8 * hh;
          float nq = 0.f;
#pragma unroll 1
          for (int j = 0; j < kNB; ++j) {
            if (!has_block(j)) continue;
            const int kp = n_block(j);
#pragma unroll
            for (int half = 0; half < 2; ++half) {
              const int ch = cq + 4 * half;
              const uint4 qv =
                  *reinterpret_cast<const uint4*>(sQ + kp * kPanelBytes + row * 128 + ((ch ^ (row & 7)) << 4));
              const float4 n0 = *reinterpret_cast<const float4*>(nf + 64 * j + 8 * ch);
              const float4 n1 = *reinterpret_cast<const float4*>(nf + 64 * j + 8 * ch + 4);
              const u32 wq[4] = {qv.x, qv.y, qv.z, qv.w};
              const float nn[8] = {n0.x, n0.y, n0.z, n0.w, n1.x, n1.y, n1.z, n1.w};
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const float2 f = Elem<T>::unpack2(wq[e]);
                nq += f.x * nn[2 * e] + f.y * nn[2 * e + 1];
              }
            }
          }
          rs[hh] = beta[hh] * scale * nq;
        }
      }
      u32 pp[4][2];
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const int gj = 32 * cw + 8 * jj + 2 * cq;
        const float2 uj = *reinterpret_cast<const float2*>(g_u + gj);
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int gi = lrow + 8 * hh;
          const float w0 = gj <= gi ? __expf(r[hh] + uj.x) * scale : 0.f;
          const float w1 = gj + 1 <= gi ? __expf(r[hh] + uj.y) * scale : 0.f;
          const float p0 = sacc[4 * jj + 2 * hh] * w0, p1 = sacc[4 * jj + 2 * hh + 1] * w1;
          rs[hh] += p0 + p1;
          pp[jj][hh] = Elem<T>::pack2(p0, p1);
        }
      }
      const int i4 = lane / 8, rr = lane % 8;
#pragma unroll
      for (int jb = 0; jb < 4; jb += 2) {
        const int cb = 4 * cw + jb + i4 / 2;  // key column block of 8
        stmatrix_x4(pbuf + (16 * warp + 8 * (i4 % 2) + rr) * 128 + ((cb ^ rr) << 4), pp[jb][0], pp[jb][1],
                    pp[jb + 1][0], pp[jb + 1][1]);
      }
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        rs[hh] += __shfl_xor_sync(0xffffffffu, rs[hh], 1);
        rs[hh] += __shfl_xor_sync(0xffffffffu, rs[hh], 2);
        if (cq == 0) rsum[cw * L + lrow + 8 * hh] = rs[hh];
      }
      fence_proxy_async();
    }
    // Both halves of P and of N_i's parts are in shared memory.
    named_bar_sync(3, 256);
    // Once P V and n's update are done: n's update into its registers, then each row's den_i
    // (stored by the first thread of the row in the CTA of the first Dv slice) and 1 / (den_i + eps)
    float inv[2];
    auto finish_rows = [&] {
      {
#pragma unroll
        for (int j = 0; j < kNB; ++j) {
          reg_fence(nacc[j]);
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) n_reg[j][hh] += nacc[j][2 * hh] + nacc[j][2 * hh + 1];
        }
      }
      float rowN[2];  // N_i: both consumers' parts
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) rowN[hh] = rsum[lrow + 8 * hh] + rsum[L + lrow + 8 * hh];
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        float den = 1.f;
        if (NEED_N) {
          if (EXP) den = fmaxf(fabsf(rowN[hh]), __expf(-mu_s[4 * lt + hh]));
          else den = fmaxf(fabsf(rowN[hh]), 1.f);
        }
        inv[hh] = 1.f / (den + p.eps);
        const int gi = row0 + lrow + 8 * hh;
        if (row_out && gi < S) {
          // (the sequence's row again from its offsets: nothing of the span stays in registers)
          const long long o = (TFLA_PACKED ? seq_span<L>(p, b, h).row : static_cast<long long>(bh) * S) + gi;
          if (p.norm_out) p.norm_out[o] = den;
          if (p.m_out) p.m_out[o] = EXP ? mu_s[4 * lt + hh] : 0.f;
        }
      }
    };
    // h's columns 64 vb .. 64 vb + 63 (block vb), 16 bytes per lane and row
    auto store_h = [&](int vb) {
      T* gH = static_cast<T*>(p.h) + b * p.h_sb + h * p.h_sh + seq_span<L>(p, b, h).tok0 * p.h_ss + v0 + 64 * vb +
              8 * cq;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int gi = row0 + lrow + 8 * hh;
        T* row = gH + static_cast<long long>(gi) * p.h_ss;
#pragma unroll
        for (int j0 = 0; j0 < 8; j0 += 4) {
          u32 pr[4];
#pragma unroll
          for (int k = 0; k < 4; ++k)
            pr[k] = Elem<T>::pack2(acc_h[4 * (j0 + k) + 2 * hh] * inv[hh],
                                   acc_h[4 * (j0 + k) + 2 * hh + 1] * inv[hh]);
          const uint4 y = quad_transpose(pr[0], pr[1], pr[2], pr[3], cq);
          if constexpr (kVB > 1) {  // (an assignment became four 4-byte stores)
            if (gi < S) __stwb(reinterpret_cast<uint4*>(row + 8 * j0), y);
          } else {
            if (gi < S) *reinterpret_cast<uint4*>(row + 8 * j0) = y;
          }
        }
      }
    };
    // 64 columns: P V, n's update and the state's update issued at once, h stored while the
    // update runs. (The 128-column branch below runs the same steps in another order, through
    // lambdas; written so here, ptxas schedules this walk 2% slower. finish_rows and store_h
    // leave its SASS as it was.)
    if constexpr (kVB == 1) {
      wgmma_wait<0>();
      reg_fence(acc_h);
      if (lt == 0) *g_prev = g_b[L - 1];  // (every thread of the consumer read the previous one)
      __syncwarp();
      if (warp_leader) mbar_arrive(q_empty);  // the last reads of Q and its gate rows are done
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const float f = EXP ? mu_s[4 * lt + 2 + hh] : beta[hh] * scale;
          acc_h[4 * j + 2 * hh] *= f;
          acc_h[4 * j + 2 * hh + 1] *= f;
        }
      // acc_h += P V (P K-major from shared memory; this warpgroup's 64 columns of V, MN-major)
      {
        const u64 da = wgmma_desc_kmajor(smem_u32(pbuf), 128);
        const u64 db = wgmma_desc_mnmajor(v_base, 128, kPanelBytes);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          Wgmma<64>::template ss<T, 0, 1>(acc_h, da + desc_step(32 * kk), db + desc_step(16 * 128 * kk), 1);
        {
          const u64 dw = wgmma_desc_kmajor(smem_u32(wt_own()), 128);
#pragma unroll
          for (int j = 0; j < kNB; ++j) {
            const u64 dk = wgmma_desc_mnmajor(k_base + n_block(j) * kPanelBytes, 128, kPanelBytes);
#pragma unroll
            for (int kk = 0; kk < 4; ++kk)
              Wgmma<8>::template ss<T, 1, 0>(nacc[j], dk + desc_step(16 * 128 * kk), dw + desc_step(32 * kk), kk != 0);
          }
        }
        wgmma_commit();
      }
      // C^T <- C^T + (V * w)^T K (C^T decayed above): A = V^T by ldmatrix.trans (block i of slice kk: keys
      // 16 kk + 8 (i / 2) .., columns 16 warp + 8 (i % 2) ..), scaled by w_t (packed 16-bit products); B = K, MN-major.
      u32 va[4][4];
      {
        const int i4 = lane / 8, rr = lane % 8;
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          const int t = 16 * kk + 8 * (i4 / 2) + rr;
          const int chunk16 = 2 * warp + (i4 % 2);
          ldmatrix_x4_trans(va[kk], kv + kKBytes + cw * kPanelBytes + t * 128 + ((chunk16 ^ rr) << 4));
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int t0 = 16 * kk + 8 * (i / 2) + 2 * cq;
            va[kk][i] = Elem<T>::mul2(va[kk][i], w_s[t0 / 2]);
          }
        }
        const u64 db = wgmma_desc_mnmajor(k_base, 128, kPanelBytes);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          Wgmma<DQK>::template rs<T, 1>(acc_c[0], va[kk], db + desc_step(16 * 128 * kk), 1);
        wgmma_commit();
      }
      wgmma_wait<1>();  // P V and n's update are done (groups complete in order); the update may still run
      reg_fence(acc_h);
      finish_rows();
      store_h(0);
    } else {
      // 128 columns: the state takes 128 registers, so h's two blocks of 64 columns take turns in
      // the same 32 (h, the state and the update's operands do not fit together): block 0's P V and
      // n's update, the state's block 0 update behind them, block 0 stored; then block 1's inter
      // part, its P V, block 1 stored and the state's block 1 update.
      // h's block: the inter part scaled by beta_i s, then += P V (P K-major from shared memory;
      // the block's 64 columns of V, MN-major), with n's update (K^T w) beside block 0's
      auto scale_qc = [&] {
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) {
            const float f = mu_s[4 * lt + 2 + hh];
            acc_h[4 * j + 2 * hh] *= f;
            acc_h[4 * j + 2 * hh + 1] *= f;
          }
      };
      auto issue_pv = [&](int vb) {
        const u64 da = wgmma_desc_kmajor(smem_u32(pbuf), 128);
        const u64 db = wgmma_desc_mnmajor(v_base + vb * kPanelBytes, 128, kPanelBytes);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          Wgmma<64>::template ss<T, 0, 1>(acc_h, da + desc_step(32 * kk), db + desc_step(16 * 128 * kk), 1);
        if (vb == 0) {
          const u64 dw = wgmma_desc_kmajor(smem_u32(wt_own()), 128);
#pragma unroll
          for (int j = 0; j < kNB; ++j) {
            const u64 dk = wgmma_desc_mnmajor(k_base + n_block(j) * kPanelBytes, 128, kPanelBytes);
#pragma unroll
            for (int kk = 0; kk < 4; ++kk)
              Wgmma<8>::template ss<T, 1, 0>(nacc[j], dk + desc_step(16 * 128 * kk), dw + desc_step(32 * kk), kk != 0);
          }
        }
        wgmma_commit();
      };
      // the last reads of Q and its gate rows are done
      auto release_q = [&] {
        if (lt == 0) *g_prev = g_b[L - 1];  // (every thread of the consumer read the previous one)
        __syncwarp();
        if (warp_leader) mbar_arrive(q_empty);
      };
      wgmma_wait<0>();
      reg_fence(acc_h);
      scale_qc();
      issue_pv(0);
      // C^T <- C^T + (V * w)^T K (C^T decayed above, or its decay kept in ld), per block vb of 64
      // columns: A = V^T by ldmatrix.trans (block i of slice kk: keys 16 kk + 8 (i / 2) .., columns 16 warp + 8 (i % 2) ..
      // of the block's V panel), scaled by w_t (packed 16-bit products); B = K, MN-major.
      auto issue_update = [&](int vb) {
        u32 va[4][4];
        const int i4 = lane / 8, rr = lane % 8;
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          const int t = 16 * kk + 8 * (i4 / 2) + rr;
          const int chunk16 = 2 * warp + (i4 % 2);
          ldmatrix_x4_trans(va[kk], kv + kKBytes + (cw * kVB + vb) * kPanelBytes + t * 128 + ((chunk16 ^ rr) << 4));
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int t0 = 16 * kk + 8 * (i / 2) + 2 * cq;
            va[kk][i] = Elem<T>::mul2(va[kk][i], w_s[t0 / 2]);
          }
        }
        const u64 db = wgmma_desc_mnmajor(k_base, 128, kPanelBytes);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          Wgmma<DQK>::template rs<T, 1>(acc_c[vb], va[kk], db + desc_step(16 * 128 * kk), 1);
        wgmma_commit();
      };
      issue_update(0);
      wgmma_wait<1>();  // P V and n's update (groups complete in order)
      reg_fence(acc_h);
      finish_rows();
      store_h(0);
      issue_qc(1);
      wgmma_wait<0>();  // block 0's update and block 1's inter part
      reg_fence(acc_h);
      release_q();
      scale_qc();
      issue_pv(1);
      wgmma_wait<0>();  // block 1's P V
      reg_fence(acc_h);
      store_h(1);
      issue_update(1);
    }
    // The update completes behind the epilogue; then the state C_c+1 goes to Cs, this
    // warpgroup's half of n_c+1 to n_s and the slot back to the producer.
    wgmma_wait<0>();
#pragma unroll
    for (int vb = 0; vb < kVB; ++vb) reg_fence(acc_c[vb]);
    __syncwarp();
    if (warp_leader) mbar_arrive(&empty[slot]);
    if (track_n && own_n) put_n();
    store_cs();  // (its proxy fence also covers n's tile)
    // this consumer's Cs and n tile hold C_c+1 and n_c+1 (barrier 4 or 5; constant ids keep the id
    // out of the registers)
    if (cw == 0) named_bar_sync(4, 128);
    else named_bar_sync(5, 128);
    // the state entering the next saved chunk (no wgmma in flight here)
    if (save() && (c + 1) % P.gate_sub == 0 && c + 1 < c_stop) save_state((c + 1) / P.gate_sub);
  }

  // the last state: C_S (this warpgroup's columns), n_S and m_S from the Dv-slice-0 CTA of the
  // last segment
  if (static_cast<int>(blockIdx.z) + 1 < p.nseg) return;
  // the stabilizer after the sequence's last saved chunk (a packed sequence's own count)
  if (save() && vt == 0 && threadIdx.x == 128)
    p.chunk_m[static_cast<long long>(bh) * (save_nc() + 1) +
              (TFLA_PACKED ? (S + L * P.gate_sub - 1) / (L * P.gate_sub) : save_nc())] = m_prev;
  if (p.C_last) {
#pragma unroll
    for (int vb = 0; vb < kVB; ++vb) {
      float* cl = p.C_last + static_cast<long long>(bh) * DQK * DV + cbase(vb);
#pragma unroll
      for (int i = 0; i < kAccC; ++i) cl[coff(i)] = acc_c[vb][i];
    }
  }
  if (vt == 0) {
    // the consumer's index again from the thread's (the warp-uniform one, kept live over the walk
    // for this, took a spilled register)
    const int cw_end = static_cast<int>(threadIdx.x) / 128 - 1;
    if (p.n_last && own_n)
#pragma unroll
      for (int j = 0; j < kNB; ++j) {
        const int blk = kNBlocks == 1 ? 0 : cw_end + 2 * j;
        if (kNBlocks == 1 ? cw_end == 0 : blk < kNBlocks)
#pragma unroll
          for (int hh = 0; hh < 2; ++hh)
            p.n_last[static_cast<long long>(bh) * DQK + 64 * blk + 16 * warp + g + 8 * hh] = n_reg[j][hh];
      }
    if (p.m_last && cw_end == 0 && lt == 0) p.m_last[bh] = m_prev;
  }
}

}  // namespace tfla
