// Argument checks shared by the mLSTM ops: every message names the argument and the rule.
#pragma once
#include <cstddef>
#include <cstdint>

#include "tfla/tfla.hpp"

namespace tfla::ops {

// Throws InvalidArgument unless the problem's shapes, dtypes and options are supported. With
// its limits (B * NH <= 65535, S <= 2^30, D <= 512) every tensor's element count and byte size
// (B * NH * S * D * 4 < 2^56) fits int64_t and size_t. A workspace's chunk states scale with
// B * NH * S / chunk * Dqk * Dv instead (up to 2^62 bytes a buffer at chunk 16): their sums are
// size_t, checked as a plan carves them (Plan::take), and may pass INT64_MAX.
void check_problem(const MlstmProblem& p);
// Throws InvalidArgument when dtype, gate_dtype or variant is not one of its enum's values
// (e.g. DType(42) from a cast); check_problem calls it first.
void check_enums(const MlstmProblem& p);
// Contiguous strides for a (B, NH, S, D) tensor when s is all zero, else s.
Strides resolve(const Strides& s, const MlstmProblem& p, int64_t d);
// Contiguous (B, NH, S) strides for a gate tensor when s is all zero, else s.
Strides resolve_gate(const Strides& s, const MlstmProblem& p);
// Checks a feature tensor: non-null, 16-byte aligned, strides multiples of 16 bytes.
void check_tensor(const char* name, const void* ptr, const Strides& s, const MlstmProblem& p,
                  int64_t d);
// Checks a gate tensor (B, NH, S): non-null and aligned to its element size.
void check_gate(const char* name, const void* ptr, const Strides& s, const MlstmProblem& p);
// Checks an optional fp32 tensor: null, or 4-byte aligned.
void check_optional_f32(const char* name, const void* ptr);
// Checks an optional fp32 (B, NH, Dqk, Dv) state (C0, C_last, dC_last, dC0): null, or 8-byte
// aligned (the state kernels read and write its rows as pairs of floats).
void check_optional_state(const char* name, const void* ptr);
// Where a (B, NH, S, d) tensor lies: its base and the bytes from it to one past its last element
// (its strides in elements, resolved), and whether its elements fill those bytes exactly (dense).
// Throws InvalidArgument naming the tensor where the strides reach past 2^62 bytes or past the
// end of the address space.
struct Span {
  uintptr_t lo = 0, hi = 0;
  bool dense = false;
};
Span span_of(const char* name, const void* ptr, const Strides& s, const MlstmProblem& p, int64_t d, size_t elem);
// For a tensor the call writes: throws InvalidArgument naming it unless its strides give every
// (b, h, t, feature) element an address of its own (d = 1 for a gate tensor).
void check_output_layout(const char* name, const Strides& s, const MlstmProblem& p, int64_t d);
// Throws InvalidArgument naming both unless output `out` and tensor `other` can be told apart:
// they overlap where they start at one address, or where both are dense and their bytes meet.
// Interleaved strided views of one buffer (neither dense) are left to the caller.
void check_apart(const char* out_name, const Span& out, const char* other_name, const Span& other);
float resolved_scale(const MlstmProblem& p);
// Throws InvalidArgument naming `what` and the item when a config value lies outside
// [util::kConfigValueMin, util::kConfigValueMax] (kernel parameters are ints) or a name is not
// [a-z0-9_]+; unknown names are left to the ops, which know their keys.
void check_config(const Config& c, const char* what);

}  // namespace tfla::ops
