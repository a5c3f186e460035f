#!/usr/bin/env bash
# The library's own host time per call, with no GPU: builds tools/dev/stub_driver.c into a
# stand-in libcuda.so.1 (launches, copies and module loads that return at once) and runs
# `tfla bench overhead` and `tfla bench step` against it. What it prints is tfla's host work
# alone (argument checks, selection, parameter blocks, the launch calls up to the driver); on a
# GPU the driver's launch time comes on top. The first call compiles the kernels with NVRTC
# into a throwaway cache.
# usage: tools/dev/host_profile.sh [BUILD_DIR]   (default: build)
set -euo pipefail
build="${1:-build}"
here="$(cd "$(dirname "$0")" && pwd)"
cc_bin="${CC:-cc}"
cuda_inc="${CUDA_HOME:-/usr/local/cuda}/include"
[ -x "$build/tools/tfla" ] || { echo "no $build/tools/tfla: build first (cmake --build $build)" >&2; exit 1; }
[ -f "$cuda_inc/cuda.h" ] || { echo "no cuda.h under $cuda_inc: set CUDA_HOME" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$cc_bin" -O2 -shared -fPIC -I"$cuda_inc" "$here/stub_driver.c" -o "$tmp/libcuda.so.1"
export LD_LIBRARY_PATH="$tmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" TFLA_CACHE="$tmp/cache.db"
"$build/tools/tfla" bench overhead
"$build/tools/tfla" bench step --batch 1,4 --tokens 1 | grep -v "copy bandwidth"
