// The problems `tfla tune` tunes: one shape per line of a spec file (a model's list of shapes),
//   op=fwbw variant=exp dtype=bf16 dqk=256 dv=512 bh=64 seq=8192   # comment
// with optional normalize=0|1 and layout=bhsd. Blank lines and '#' comments are skipped.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tfla/tfla.hpp"
#include "tfla_cache/cache.hpp"

namespace tfla::tuner {

struct TuneProblem {
  std::string op = "fwbw";  // "fwd", "bwd", "fwbw" or "step" (seq = T tokens per step call)
  Variant variant = Variant::Exp;
  DType dtype = DType::BF16;
  bool normalize = true;
  int64_t dqk = 256, dv = 512, bh = 64, seq = 8192;

  MlstmProblem problem() const;  // B = bh, NH = 1, fp32 gates
  std::string to_string() const; // one spec-file line, parseable by parse_spec_line
};

// Parses one line's key=value items over `defaults`. Throws Error(InvalidArgument) naming the
// bad item (unknown key, a key given twice, bad value, non-positive dimension, a NUL byte and its
// column) or the library limit the shape breaks (ops::check_problem: head dims, B * NH, S).
TuneProblem parse_spec_line(const std::string& line, const TuneProblem& defaults = {});
// Parses a whole spec text; errors carry "line N: ". Comments and blank lines are skipped.
std::vector<TuneProblem> parse_spec(const std::string& text);
// Reads and parses a file; Error(InvalidArgument) when it cannot be read (a directory, more
// than 1 MiB, a line over 4096 characters) or holds no shape.
std::vector<TuneProblem> read_spec_file(const std::string& path);

// The shapes the library recorded (TFLA_RECORD_SHAPES=1) as problems to tune: a recorded
// forward and backward of the same shape become one fwbw problem (they share a chunk); step
// shapes stay step problems. Rows with a dtype or variant this build does not know are
// skipped. Order: most looked-up first.
std::vector<TuneProblem> problems_from_recorded(const std::vector<cache::RecordedShape>& rows);

DType parse_dtype(const std::string& s);      // "bf16", "fp16", "fp32"; throws InvalidArgument
Variant parse_variant(const std::string& s);  // "exp", "sig"; throws InvalidArgument

}  // namespace tfla::tuner
