#!/usr/bin/env bash
# The main job: installs the build dependencies, builds tfla, runs the CPU and NVRTC tests, and
# where a CUDA GPU is present runs the GPU test suite and the forward benchmark
# (build/tools/tfla bench forward, also written to BUILD_DIR/bench_forward.csv).
# Without a GPU it stops after the CPU tests and says so (exit 0).
#
# usage: bash tools/run.sh [BUILD_DIR]           (default: build)
# environment: as tools/test.sh (TFLA_SKIP_DEPS, TFLA_CMAKE_ARGS, CUDA_HOME); TFLA_DEVICE picks
# the GPU; TFLA_BENCH_ARGS="..." replaces the benchmark's default options.
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

echo "== tfla bench forward"
# shellcheck disable=SC2086  # TFLA_BENCH_ARGS is a list of words on purpose
"$build"/tools/tfla bench forward ${TFLA_BENCH_ARGS:-} --csv "$build/bench_forward.csv"
echo "== results: $build/bench_forward.csv"
