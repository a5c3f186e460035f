#!/bin/bash
# The GPU validation run used for the closing notes: every GPU test against the float64
# reference, compute-sanitizer memcheck/racecheck on the [sanitize] cases, the dispatch
# overhead, a tuning run of the paper shape (its wall time), tuned vs default fwbw, and the
# Python binding's tests. Runs on a GPU machine over binaries packed with tools/dev/pack.sh into
# .dev (and the peer/pytest wheels in .whl); results in $OUT (default ./gpu-check-out).
# usage: bash tools/dev/gpu_check.sh
set -u
OUT="${OUT:-$PWD/gpu-check-out}"; mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/.dev/lib PATH=$PATH:/usr/local/cuda/bin TFLA_CACHE=$OUT/tfla.sqlite TFLA_CLI=$PWD/.dev/bin/tfla
B=.dev/bin
S0=$SECONDS
$B/tfla info 2>&1 | tee $OUT/info.txt
# Each binary under its own limit (GPU_TEST_TIMEOUT, default 300 s: test_gpu_varlen alone ran
# past 150 s on an H200 with a cold kernel cache). A binary stopped by the limit reports the
# signal as one failed assertion (Catch2's fatal-signal handler), so rc 124 says which it was.
for t in smoke sm90 ops dispatch step parallel backend varlen; do
  s=$SECONDS; timeout "${GPU_TEST_TIMEOUT:-300}" $B/test_gpu_$t --durations no > $OUT/test_$t.txt 2>&1; rc=$?
  seed=$(grep -o 'Randomness seeded to: [0-9]*' $OUT/test_$t.txt | head -1)
  echo "test_gpu_$t rc=$rc $((SECONDS-s))s${seed:+ ($seed)}: $(tail -2 $OUT/test_$t.txt | tr '\n' ' ')"
done
for spec in "ops memcheck" "ops racecheck" "step memcheck" "step racecheck" "step synccheck"; do
  set -- $spec; s=$SECONDS
  timeout 90 compute-sanitizer --tool $2 --error-exitcode 9 $B/test_gpu_$1 "[sanitize]" > $OUT/san_$1_$2.txt 2>&1; rc=$?
  echo "sanitizer $1 $2 rc=$rc $((SECONDS-s))s: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|passed|failed' $OUT/san_$1_$2.txt | tail -2 | tr '\n' ' ')"
done
$B/tfla bench overhead 2>&1 | tee $OUT/overhead.txt
echo "== elapsed $((SECONDS-S0))s; tuning"
s=$SECONDS
timeout 170 $B/tfla tune --op fwbw --variant exp,sig --dqk 256 --dv 512 --bh 64 --seq 8192 --budget 6 --reps 5 > $OUT/tune.txt 2>&1
echo "tune rc=$? wall $((SECONDS-s))s"; tail -12 $OUT/tune.txt
$B/tfla bench fwbw --seqs 8192 --tokens 65536 --reps 10 2>&1 | tail -4 | tee $OUT/bench_tuned.txt
TFLA_TUNED=0 $B/tfla bench fwbw --seqs 8192 --tokens 65536 --reps 10 2>&1 | tail -4 | tee $OUT/bench_default.txt
echo "== elapsed $((SECONDS-S0))s; python gpu tests"
python3 -c "import pytest" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/pytest/*.whl; python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
s=$SECONDS
TFLA_LIBRARY=$PWD/.dev/lib/libtfla.so PYTHONPATH=/tmp/site:$PWD/tools/python timeout 150 python3 -m pytest -q -p no:cacheprovider -x tools/python/tests > $OUT/pytest.txt 2>&1
echo "pytest rc=$? $((SECONDS-s))s: $(tail -1 $OUT/pytest.txt)"
echo "== elapsed $((SECONDS-S0))s; step vs the Triton step"
PYTHONPATH=/tmp/site timeout 150 python3 tools/bench/step_compare.py --tfla $B/tfla 2>&1 | grep -v "differs from"
echo "== total $((SECONDS-S0))s"
