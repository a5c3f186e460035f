#!/usr/bin/env bash
# Runs every GPU test binary of a build on this machine's GPU and prints a summary.
# usage: tools/run_gpu_tests.sh [BUILD_DIR]   (default: build)
# Exit code: 0 when every GPU test passed, 1 when one failed, 3 when there is no GPU.
set -u
build="${1:-build}"
shopt -s nullglob
tests=("$build"/tests/gpu/test_gpu_*)
if [ ${#tests[@]} -eq 0 ]; then
  echo "no GPU test binaries under $build/tests/gpu: build first (cmake --build $build)" >&2
  exit 1
fi
"$build"/tools/tfla info || true
pass=0; fail=0; skip=0; failed=()
for t in "${tests[@]}"; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  echo "=== $name"
  start=$(date +%s)
  "$t" --durations no
  rc=$?
  secs=$(( $(date +%s) - start ))
  case $rc in
    0) pass=$((pass+1)); echo "--- $name: passed (${secs}s)";;
    77) skip=$((skip+1)); echo "--- $name: skipped (no GPU)";;
    *) fail=$((fail+1)); failed+=("$name"); echo "--- $name: FAILED rc=$rc (${secs}s)";;
  esac
done
echo "GPU tests: $pass passed, $fail failed, $skip skipped${failed:+ (failed: ${failed[*]})}"
[ $fail -gt 0 ] && exit 1
[ $pass -eq 0 ] && [ $skip -gt 0 ] && exit 3
exit 0
