// How `tfla tune-worker` judges a candidate's outputs against the default config's on the real
// problem (set 0 of its inputs): every output by its relative Frobenius error, except df. df is
// a reverse cumulative sum of differences (DESIGN.md's df formula), so over a long sequence the
// exact df is small next to its summands and two correct configs that sum in different chunk
// orders differ in df by far more than bf16 rounding elsewhere (measured on an H200: chunk 128
// and 512 against the default's 256 at B = 1, S = 65536, NH 8, 256 x 512, mLSTMsig: df 6.5e-2 and
// 3.3e-2 apart, dq, dk, dv and di within 8.5e-4). So df is measured in the units its formula can
// resolve, those of reference::df_conditioned_error: |df - df_ref| / |scale| with
// scale_t = sigmoid(-f_t) sum_{u >= t, same head} (|q_u . dq_u| + |k_u . dk_u|), dq and dk the
// reference's.
#pragma once

#include <cstdint>
#include <vector>

namespace tfla::tuner {

// |x_r . dx_r| for each of the rows of x and dx (rows x d, row-major).
std::vector<double> abs_row_dots(const std::vector<float>& x, const std::vector<float>& dx, int64_t rows,
                                 int64_t d);

// The scale of df's error for heads of S rows each: qdq and kdk from abs_row_dots of (q, dq) and
// (k, dk), f the forget-gate pre-activations (heads x S).
std::vector<double> df_error_scale(const std::vector<double>& qdq, const std::vector<double>& kdk,
                                   const std::vector<float>& f, int64_t heads, int64_t S);

// |df - df_ref|_F / |scale|_F (|df - df_ref|_F where the scale is zero); +inf where df or df_ref
// holds a NaN or an infinity.
double df_scaled_error(const std::vector<float>& df, const std::vector<float>& df_ref,
                       const std::vector<double>& scale);

}  // namespace tfla::tuner
