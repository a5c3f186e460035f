// Parameter blocks and shared-memory plans of the mLSTM kernels on the sm_90a engine. Plain data
// shared by host and device code: the kernels static_assert their layouts against the functions
// here, which the host sizes shared memory with.
#pragma once
#include "tfla/mlstm_params.cuh"
#include "tfla/sm90_layout.cuh"

namespace tfla {

// ---- forward output (mlstm_fwd_output_sm90.cuh) ---------------------------------------------
// A CTA tile is 128 query rows (two consumer warpgroups of 64) by BV columns of h; key tiles and
// staged chunk-state blocks are 64 rows. All tiles are 16-bit and 128B-swizzled in panels of 64
// columns (8 KB per 64 rows).
struct FwdOutputSm90Shape {
  static constexpr int kBQ = 128, kBKV = 64, kPanel = 64;
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = 128 * (1 + kConsumers);
};
// One ring slot holds a key tile (64 x Dqk), a value tile (64 x BV) or a staged block of the
// chunk state (64 Dqk rows x BV).
TFLA_HD constexpr int fwd_output_sm90_slot_bytes(int dqk, int bv) {
  return (dqk > bv ? dqk : bv) * 64 * 2;
}
// 1024 bytes of alignment slack, Q (128 x Dqk), the ring, then the barriers: full and empty per
// slot, Q full and Q empty.
TFLA_HD constexpr int fwd_output_sm90_smem_bytes(int dqk, int bv, int stages) {
  return 1024 + 128 * dqk * 2 + stages * fwd_output_sm90_slot_bytes(dqk, bv) + (2 * stages + 2) * 8;
}

struct MlstmFwdSm90Params {
  TmaDesc q;  // dims {Dqk, S, NH, B}, box {64, 128, 1, 1}, 128B swizzle
  TmaDesc k;  // dims {Dqk, S, NH, B}, box {64, 64, 1, 1}
  TmaDesc v;  // dims {Dv, S, NH, B}, box {64, 64, 1, 1}
  TmaDesc c;  // states_C: dims {Dv, Dqk, BH * NC}, box {64, 64, 1}
  MlstmFwdParams p;
  int q_tiles;  // query tiles per head: ceil(S / 128)
  int v_tiles;  // Dv / BV
  int tiles;    // v_tiles * q_tiles * B * NH
};

// ---- fused forward (mlstm_fwd_fused_sm90.cuh) ----------------------------------------------
// A CTA walks one head's chunks of 64 for BV columns of h and of the state (kBV = 128 by
// default, 256 where Dqk <= 128): two consumer warpgroups of BV / 2 columns each, the state's
// Dqk x BV / 2 slice in registers. Q (64 x Dqk) has one buffer; K (64 x Dqk) and V (64 x BV)
// share a two-slot ring. n has two buffers of Dqk x 16 bytes (n_c and n_c+1, each consumer
// updating half: an 8-row 16-bit tile or fp32), as have P (64 x 64, 16-bit) and its row sums (64
// fp32 per consumer), for chunks of even and odd index; each consumer keeps a 16-bit copy of its
// state slice (BV / 2 x Dqk, the inter part's operand) and the chunk's row weights w_t (64 fp32).
struct FwdFusedSm90Shape {
  static constexpr int kChunk = 64, kBV = 128;
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kStages = 2;
};
// 1024 bytes of alignment slack, Q, the ring, the state copies, P's two buffers, per consumer
// its n tile (DQK * 16 bytes) and its w tile of n's update (8 x 64 16-bit), then
// per consumer the row values' two (N_i's parts) and the weights, the chunk's gate rows (b_t, u_t, pm_t: 64 fp32
// each, loaded with Q), the consumer threads' mu_i and beta_i s (mLSTMexp; 4 fp32 each), then the
// barriers: full and empty per slot, Q full and Q empty.
TFLA_HD constexpr int fwd_fused_sm90_smem_bytes(int dqk, int bv = FwdFusedSm90Shape::kBV) {
  return 1024 + dqk * 64 * 2 + FwdFusedSm90Shape::kStages * (dqk + bv) * 64 * 2 + bv * dqk * 2 +
         2 * 64 * 64 * 2 + FwdFusedSm90Shape::kConsumers * (dqk * 16 + 1024) +
         FwdFusedSm90Shape::kConsumers * (2 * 64 * 4 + 64 * 4) + 3 * 64 * 4 +
         FwdFusedSm90Shape::kConsumers * 512 * 4 + (2 * FwdFusedSm90Shape::kStages + 2) * 8;
}
struct MlstmFwdFusedSm90Params {
  TmaDesc q;  // dims {Dqk, S, NH, B}, box {64, 64, 1, 1}, 128B swizzle
  TmaDesc k;  // dims {Dqk, S, NH, B}, box {64, 64, 1, 1}
  TmaDesc v;  // dims {Dv, S, NH, B}, box {64, 64, 1, 1}
  TmaDesc gates;  // the gate kernel's gate_b, gate_u, gate_pm (one after another, equal strides):
                  // fp32 dims {S_pad, BH, 3}, box {64, 1, 3}
  MlstmFwdParams p;  // p.NC: chunks of 64
  // The gate kernel's chunk in chunks of 64: 1, or (a saved-states buffer, p.states_C set) the
  // saved layout's chunk / 64, whose gate rows, chunk states, n and stabilizers the walk fills.
  int gate_sub;
};

// ---- chunk-state walks (sm90_state_walk.cuh): the forward's states, the backward's dC --------
// A CTA walks one head's sequence for BV columns of the state and all Dqk rows (two consumer
// warpgroups of Dqk / 2 rows); each ring slot holds a 64-row sub-block of A (64 x Dqk: K or Q)
// and of B (64 x BV: V or dH).
struct StateWalkSm90Shape {
  static constexpr int kSub = 64;
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = 128 * (1 + kConsumers);
};
TFLA_HD constexpr int state_walk_sm90_slot_bytes(int dqk, int bv) { return (dqk + bv) * 64 * 2; }
// 1024 bytes of alignment slack, the ring, the reductions (1024 floats per consumer warpgroup:
// one per thread and scaled column; 8 per-warp sums), the barriers (full and empty per slot).
TFLA_HD constexpr int state_walk_sm90_smem_bytes(int dqk, int bv, int stages) {
  return 1024 + stages * state_walk_sm90_slot_bytes(dqk, bv) + (2 * 1024 + 8) * 4 + 2 * stages * 8;
}
struct MlstmFwdStatesSm90Params {
  TmaDesc k;  // dims {Dqk, S, NH, B}, box {64, 64, 1, 1}, 128B swizzle
  TmaDesc v;  // dims {Dv, S, NH, B}, box {64, 64, 1, 1}
  MlstmFwdParams p;
};
struct MlstmBwdDstatesSm90Params {
  TmaDesc q;   // dims {Dqk, S, NH, B}, box {64, 64, 1, 1}, 128B swizzle
  TmaDesc dh;  // dims {Dv, S, NH, B}, box {64, 64, 1, 1}
  MlstmBwdParams p;
};

// ---- gradient tiles (mlstm_bwd_tile_sm90.cuh): dQ, dK, dV ------------------------------------
// A CTA tile is 128 gradient rows (two consumer warpgroups of 64) by BN columns; the other side's
// tiles are 64 rows. X (128 x DX) has its own buffer; a ring slot holds BN / 64 panels of 64 rows
// x 64 columns: a W tile (64 x BN), a staged state block (64 contraction rows x BN) or up to
// BN / 64 panels of a Z tile (64 x DX).
struct BwdTileSm90Shape {
  static constexpr int kBR = 128, kBT = 64, kPanel = 64;
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = 128 * (1 + kConsumers);
};
TFLA_HD constexpr int bwd_tile_sm90_slot_bytes(int bn) { return bn * 64 * 2; }
// 1024 bytes of alignment slack, X (128 x DX), the ring, then the barriers: full and empty per
// slot, X full and X empty.
TFLA_HD constexpr int bwd_tile_sm90_smem_bytes(int dx, int bn, int stages) {
  return 1024 + 128 * dx * 2 + stages * bwd_tile_sm90_slot_bytes(bn) + (2 * stages + 2) * 8;
}
struct MlstmBwdTileSm90Params {
  TmaDesc x;  // the gradient's rows: dims {DX, S, NH, B}, box {64, 128, 1, 1}, 128B swizzle
  TmaDesc z;  // the other side's score operand: dims {DX, S, NH, B}, box {64, 64, 1, 1}
  TmaDesc w;  // the other side's product operand: dims {DN, S, NH, B}, box {64, 64, 1, 1}
  TmaDesc y;  // chunk states (dQ: C, dK and dV: dC): dims {Dv, Dqk, BH * NC}, box {64, 64, 1}
  MlstmBwdParams p;
  int row_tiles;  // 128-row tiles per head: ceil(S / 128); packed (TFLA_PACKED): packed_row_tiles
  int n_tiles;    // DN / BN
  int tiles;      // n_tiles * row_tiles * B * NH (packed: n_tiles * row_tiles * NH)
};

// ---- dK and dV in one kernel (mlstm_bwd_dkv_sm90.cuh) ----------------------------------------
// A CTA tile is 64 key rows with all columns of dK and of dV (one consumer warpgroup each); the
// query tiles are 64 rows. k_j (64 x Dqk) and v_j (64 x Dv) have their own buffers; a ring slot
// holds a query tile's q_i and dh_i (64 x (Dqk + Dv)) or a band of dC (64 Dqk rows x Dv).
struct BwdDkvSm90Shape {
  static constexpr int kBR = 64, kBT = 64;
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = 128 * (1 + kConsumers);
};
TFLA_HD constexpr int bwd_dkv_sm90_slot_bytes(int dqk, int dv) { return (dqk + dv) * 64 * 2; }
// 1024 bytes of alignment slack, k_j and v_j, the ring, per slot its query tile's 64 column
// factors (fp32), then the barriers: full, empty, factors full and factors empty per slot, X full
// and X empty.
TFLA_HD constexpr int bwd_dkv_sm90_smem_bytes(int dqk, int dv, int stages) {
  return 1024 + (dqk + dv) * 64 * 2 + stages * bwd_dkv_sm90_slot_bytes(dqk, dv) + stages * 64 * 4 +
         (4 * stages + 2) * 8;
}
struct MlstmBwdDkvSm90Params {
  TmaDesc q, k;  // dims {Dqk, S, NH, B} (packed: {Dqk, T, NH, 1}), box {64, 64, 1, 1}, 128B swizzle
  TmaDesc v, dh;  // dims {Dv, S, NH, B} (packed: {Dv, T, NH, 1}), box {64, 64, 1, 1}
  TmaDesc y;      // dC: dims {Dv, Dqk, BH * NC}, box {64, 64, 1}
  MlstmBwdParams p;
  int row_tiles;  // 64-row key tiles per head: ceil(S / 64) (packed: packed_row_tiles, gaps included)
  int tiles;      // row_tiles * B * NH (packed: row_tiles * NH)
};

}  // namespace tfla
