// The XLA FFI handlers of libtfla_jax as C++ functions (tfla_jax.cpp binds them to the exported
// handler symbols tfla_jax_forward, tfla_jax_backward, tfla_jax_step), declared for the unit
// test that calls them with hand-made buffers (tests/unit/test_jax_ffi.cpp). Arguments, results
// and attributes: tfla_jax.cpp's header comment.
#pragma once
#include <cstdint>
#include <string_view>

#include "tfla/tfla.h"
#include "xla/ffi/api/ffi.h"

namespace tfla::jax_ffi {

namespace ffi = xla::ffi;

// The layouts of the forward and backward (their `layout` attribute): q, k, v, h and gradients
// (B, NH, S, D) with gates (B, NH, S), or (B, S, NH, D) with gates (B, S, NH).
inline constexpr int64_t kBHSD = 0, kBSHD = 1;

// The C ABI's (b, h, s) element strides of a row-major (B, NH, S, D) or (B, S, NH, D) tensor
// and of its (B, NH, S) or (B, S, NH) gates (all zero: contiguous (B, NH, S, D)).
tfla_strides seq_strides(int64_t layout, int64_t NH, int64_t S, int64_t D);
tfla_strides gate_strides(int64_t layout, int64_t NH, int64_t S);

ffi::Error Forward(void* stream, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                   ffi::AnyBuffer i, ffi::AnyBuffer f, ffi::RemainingArgs states,
                   ffi::Result<ffi::AnyBuffer> h, ffi::Result<ffi::AnyBuffer> norm,
                   ffi::Result<ffi::AnyBuffer> m, ffi::RemainingRets more, int64_t variant,
                   int64_t normalize, float eps, float scale, std::string_view config,
                   int64_t has_initial, int64_t want_last, int64_t keep, int64_t layout);

ffi::Error Backward(void* stream, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                    ffi::AnyBuffer i, ffi::AnyBuffer f, ffi::AnyBuffer norm, ffi::AnyBuffer dh,
                    ffi::RemainingArgs rest, ffi::Result<ffi::AnyBuffer> dq,
                    ffi::Result<ffi::AnyBuffer> dk, ffi::Result<ffi::AnyBuffer> dv,
                    ffi::Result<ffi::AnyBuffer> di, ffi::Result<ffi::AnyBuffer> df,
                    ffi::RemainingRets more, int64_t variant, int64_t normalize, float eps,
                    float scale, std::string_view config, int64_t has_initial, int64_t has_dc_last,
                    int64_t has_saved, int64_t layout);

ffi::Error Step(void* stream, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                ffi::AnyBuffer i, ffi::AnyBuffer f, ffi::AnyBuffer C, ffi::AnyBuffer n,
                ffi::AnyBuffer m, ffi::Result<ffi::AnyBuffer> h, ffi::Result<ffi::AnyBuffer> C_new,
                ffi::Result<ffi::AnyBuffer> n_new, ffi::Result<ffi::AnyBuffer> m_new,
                int64_t variant, int64_t normalize, float eps, float scale,
                std::string_view config);

}  // namespace tfla::jax_ffi
