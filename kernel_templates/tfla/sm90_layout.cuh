// Shared-memory layouts of the sm_90a engine, as plain data that host and device code agree on:
// the 128-byte TMA descriptor passed in kernel parameters, the swizzle that TMA applies when it
// writes a box to shared memory, and the encoder of wgmma's 64-bit shared-memory matrix
// descriptors for those swizzled tiles. Host tests use the same functions to predict shared
// memory contents and descriptor bits, so one encoder serves both sides.
//
// A swizzled tile is a stack of rows of `swizzle` bytes (32, 64 or 128), as TMA writes a box
// whose innermost extent is that many bytes. The swizzle acts on address bits: the 16-byte chunk
// index (bits 4..) is XORed with the 128-byte line index (bits 7..), both masked to
// swizzle / 16 - 1. For 128B rows that is chunk c of row r stored at chunk c ^ (r % 8); 64B rows
// pair up in one 128-byte line. The pattern repeats every 8 rows (8 * swizzle bytes, an "atom",
// which must start at an address aligned to that size: 1024 bytes for 128B).
//
// wgmma descriptor (PTX ISA, "matrix descriptor"): bits 0-13 start address >> 4, 16-29 leading
// byte offset (LBO) >> 4, 32-45 stride byte offset (SBO) >> 4, 49-51 base offset (0: atoms are
// aligned), 62-63 layout (1 = 128B, 2 = 64B, 3 = 32B swizzle, 0 = none).
//  - K-major operand (rows are M or N, K contiguous in a row of `swizzle` bytes): SBO = the
//    stride between 8-row groups (8 * swizzle when rows are packed); LBO is unused (encoded 1).
//    The next k16 slice of a bf16 tile starts 32 bytes further in the same rows.
//  - MN-major operand (rows are K, M or N contiguous in a row of `swizzle` bytes, i.e. a panel
//    of swizzle / 2 bf16 columns): SBO = the stride between 8-row (8-k) groups, LBO = the
//    stride between panels of swizzle / 2 columns. The next k16 slice starts 16 rows further.
#pragma once

#if defined(__CUDACC__)
#define TFLA_HD __host__ __device__
#else
#define TFLA_HD
#endif

namespace tfla {

// A CUtensorMap's bytes (cuTensorMapEncodeTiled's output), passed by value inside a
// `const __grid_constant__` parameter block so TMA can read it from parameter space.
struct alignas(64) TmaDesc {
  unsigned long long words[16];
};

namespace sm90 {

// The byte offset at which TMA stores byte `offset` of a box whose rows are `swizzle` bytes
// (0: no swizzle). The box must start at an address aligned to 8 * swizzle.
TFLA_HD constexpr unsigned swizzled_offset(unsigned offset, int swizzle) {
  if (swizzle == 0) return offset;
  const unsigned mask = static_cast<unsigned>(swizzle) / 16 - 1;  // 16-byte chunks per row - 1
  return offset ^ (((offset >> 7) & mask) << 4);
}

// The layout field of a descriptor for a swizzle of 0, 32, 64 or 128 bytes.
TFLA_HD constexpr unsigned long long desc_layout_bits(int swizzle) {
  return swizzle == 128 ? 1ull : swizzle == 64 ? 2ull : swizzle == 32 ? 3ull : 0ull;
}

// A wgmma shared-memory matrix descriptor from a shared-memory byte address and the two
// strides in bytes (multiples of 16).
TFLA_HD constexpr unsigned long long wgmma_desc(unsigned smem_addr, unsigned lbo_bytes,
                                                unsigned sbo_bytes, int swizzle) {
  return static_cast<unsigned long long>((smem_addr & 0x3FFFFu) >> 4) |
         (static_cast<unsigned long long>((lbo_bytes >> 4) & 0x3FFFu) << 16) |
         (static_cast<unsigned long long>((sbo_bytes >> 4) & 0x3FFFu) << 32) |
         (desc_layout_bits(swizzle) << 62);
}

// K-major tile with packed rows of `swizzle` bytes (rows = M or N).
TFLA_HD constexpr unsigned long long wgmma_desc_kmajor(unsigned smem_addr, int swizzle) {
  return wgmma_desc(smem_addr, 16u, 8u * static_cast<unsigned>(swizzle), swizzle);
}
// MN-major tile: packed rows of `swizzle` bytes along K, panels of swizzle / 2 bf16 columns
// panel_stride_bytes apart.
TFLA_HD constexpr unsigned long long wgmma_desc_mnmajor(unsigned smem_addr, int swizzle,
                                                        unsigned panel_stride_bytes) {
  return wgmma_desc(smem_addr, panel_stride_bytes, 8u * static_cast<unsigned>(swizzle), swizzle);
}
// Bytes to add to a descriptor's start address to reach the next k16 slice of a 16-bit tile.
TFLA_HD constexpr unsigned k16_step_bytes(bool mn_major, int swizzle) {
  return mn_major ? 16u * static_cast<unsigned>(swizzle) : 32u;
}
// The same step in the descriptor's units (the start-address field counts 16 bytes).
TFLA_HD constexpr unsigned long long desc_step(unsigned bytes) { return bytes >> 4; }

static_assert(swizzled_offset(0, 128) == 0 && swizzled_offset(128, 128) == 144 &&
                  swizzled_offset(7 * 128 + 16 * 7, 128) == 7 * 128 &&
                  swizzled_offset(8 * 128, 128) == 8 * 128 &&
                  swizzled_offset(64 + 16, 64) == 64 + 16 &&
                  swizzled_offset(64 * 3, 64) == 64 * 3 + 16 &&
                  swizzled_offset(32 * 4, 32) == 32 * 4 + 16,
              "swizzle pattern");
static_assert(wgmma_desc_kmajor(0x400, 128) ==
                  ((0x40ull) | (1ull << 16) | (64ull << 32) | (1ull << 62)),
              "K-major 128B descriptor");

}  // namespace sm90
}  // namespace tfla
