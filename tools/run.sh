#!/usr/bin/env bash
# The main job: installs the build dependencies, builds tfla, runs the CPU and NVRTC tests, and
# where a CUDA GPU is present runs the GPU test suite, tunes the paper shape (`tfla tune`, kept in
# the cache), benchmarks the forward, forward + backward and step kernels (CSV files in
# BUILD_DIR) and runs the Python binding's tests (its GPU tests where torch sees the GPU).
# Without a GPU it stops after the CPU tests and says so (exit 0).
#
# usage: bash tools/run.sh [BUILD_DIR]           (default: build)
# environment: as tools/test.sh (TFLA_SKIP_DEPS, TFLA_CMAKE_ARGS, CUDA_HOME); TFLA_DEVICE picks
# the GPU; TFLA_BENCH_ARGS="..." replaces the benchmarks' default options, TFLA_TUNE_ARGS="..."
# the tuning run's.
# Exit code: 0 ok, 1 a build, test or benchmark failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=tools/test.sh
source tools/test.sh

build="${1:-build}"
tfla_install_deps
echo "== configure and build ($build)"
tfla_build "$build"
echo "== CPU and NVRTC tests"
ctest --test-dir "$build" --output-on-failure --label-exclude gpu

info_json="$("$build"/tools/tfla info --json)"
if ! grep -q '"ordinal"' <<<"$info_json"; then
  "$build"/tools/tfla info
  echo
  echo "no CUDA GPU found: built and ran the CPU/NVRTC tests only; run this on an H100/H200" \
       "machine for the kernels"
  exit 0
fi

echo "== GPU tests"
tools/run_gpu_tests.sh "$build"

echo "== tfla tune (the paper shape: forward + backward, both variants)"
# shellcheck disable=SC2086  # TFLA_TUNE_ARGS is a list of words on purpose
"$build"/tools/tfla tune ${TFLA_TUNE_ARGS:---op fwbw --variant exp,sig --dqk 256 --dv 512 --bh 64 --seq 8192 --budget 6}
echo "== tfla bench forward, fwbw (tuned configs) and step"
# shellcheck disable=SC2086  # TFLA_BENCH_ARGS is a list of words on purpose
"$build"/tools/tfla bench forward ${TFLA_BENCH_ARGS:-} --csv "$build/bench_forward.csv"
# shellcheck disable=SC2086
"$build"/tools/tfla bench fwbw ${TFLA_BENCH_ARGS:-} --csv "$build/bench_fwbw.csv"
"$build"/tools/tfla bench step --csv "$build/bench_step.csv"
# The binding's tests, its GPU part where torch sees the GPU (needs pytest; GPU machines are
# often offline, so none is installed here).
if python3 -c 'import pytest' 2>/dev/null || /usr/bin/python3 -c 'import pytest' 2>/dev/null; then
  tfla_python_tests "$build"
else
  echo "== python tests skipped: no pytest here (python3 -m pip install pytest)"
fi
echo "== results: $build/bench_forward.csv, $build/bench_fwbw.csv, $build/bench_step.csv"
