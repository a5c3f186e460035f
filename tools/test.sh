#!/usr/bin/env bash
# Builds tfla and runs every test: unit (CPU), nvrtc (compiles the kernel templates with NVRTC,
# no GPU) and gpu (reported as skipped by ctest where no GPU is present), the Python binding's
# tests, then three packaging checks: `pip install ./tools/python` in a fresh venv
# (tools/check_pip_install.sh), the tests built against Catch2 3 (tools/check_catch2_v3.sh) and
# tfla.jax with JAX from PyPI (tools/check_jax.sh).
# Installs the build dependencies from Debian's packages first, so it works on a fresh machine.
#
# usage: bash tools/test.sh [BUILD_DIR]          (default: build)
# environment:
#   TFLA_SKIP_DEPS=1      do not check or install packages
#   TFLA_CMAKE_ARGS="..." extra configure arguments, e.g. -DTFLA_SANITIZE=address,undefined
#   CUDA_HOME             the CUDA toolkit (default /usr/local/cuda); NVRTC comes from there
#   TFLA_PACKAGING_CHECKS 1 (default): run the packaging checks, skipping (with a message) the
#                         ones whose download site (PyPI, Debian) cannot be reached; required:
#                         run them and fail when a site cannot be reached (.ci/run); 0: skip them
# Exit code: 0 when the build and every test passed, non-zero otherwise.
#
# tools/run.sh sources this file for tfla_install_deps and tfla_build.
set -euo pipefail

# ccache: the packaging checks compile libtfla and the tests again; with it they reuse this
# build's objects.
TFLA_APT_PACKAGES=(cmake ninja-build g++ pkg-config libspdlog-dev libfmt-dev catch2
                   libsqlite3-dev nlohmann-json3-dev python3 python3-pytest python3-venv ccache)

# Installs the Debian packages the build needs (only those missing) and finds the CUDA toolkit.
tfla_install_deps() {
  if [[ "${TFLA_SKIP_DEPS:-0}" != 1 ]]; then
    local missing=() pkg
    for pkg in "${TFLA_APT_PACKAGES[@]}"; do
      if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
      fi
    done
    if ((${#missing[@]})); then
      echo "== installing ${missing[*]} (apt-get)"
      local sudo=()
      [[ "$(id -u)" -ne 0 ]] && sudo=(sudo)
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}"
    else
      echo "== build dependencies present: ${TFLA_APT_PACKAGES[*]}"
    fi
  fi
  CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
  if ! ls "$CUDA_HOME"/include/nvrtc.h >/dev/null 2>&1; then
    echo "error: no CUDA toolkit with NVRTC at $CUDA_HOME (need CUDA 12+; set CUDA_HOME)" >&2
    return 1
  fi
  export CUDA_HOME
  export PATH="$CUDA_HOME/bin:$PATH"
}

# Configures (Ninja, Release; through ccache when it is installed) and builds into $1.
tfla_build() {
  local build="$1" launcher=()
  if command -v ccache >/dev/null 2>&1 && [[ "${TFLA_CMAKE_ARGS:-}" != *COMPILER_LAUNCHER* ]]; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  fi
  # shellcheck disable=SC2086  # TFLA_CMAKE_ARGS is a list of words on purpose
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "-DCUDAToolkit_ROOT=$CUDA_HOME" \
    "${launcher[@]}" ${TFLA_CMAKE_ARGS:-}
  cmake --build "$build" --parallel "$(nproc)"
}

# Runs the Python binding's tests (tools/python/tests) against the library built in $1: the
# argument checks, the ctypes layouts and the library's CPU-side queries; the tests marked gpu
# skip without torch and a CUDA device. A sanitizer build's libtfla cannot be loaded into a
# plain python3 (its ASan runtime must come first), so there only the checks run.
tfla_python_tests() {
  local build="$1" lib
  [[ "$build" = /* ]] || build="$PWD/$build"
  # The first python3 with pytest (PATH's, then Debian's python3-pytest); else pytest from PyPI.
  local py=""
  for cand in python3 /usr/bin/python3; do
    if "$cand" -c 'import pytest' >/dev/null 2>&1; then py="$cand"; break; fi
  done
  if [[ -z "$py" ]]; then
    echo "== installing pytest from PyPI"
    python3 -m pip install -q pytest
    py=python3
  fi
  if grep -q '^TFLA_SANITIZE:STRING=.' "$build/CMakeCache.txt" 2>/dev/null; then
    echo "== python tests (argument checks only: sanitizer build)"
    "$py" -m pytest -q -p no:cacheprovider tools/python/tests/test_checks.py
    return
  fi
  lib="$build/src/libtfla.so"
  echo "== python tests (tools/python/tests, TFLA_LIBRARY=$lib)"
  TFLA_LIBRARY="$lib" "$py" -m pytest -q -p no:cacheprovider tools/python/tests
}

# Whether an https URL answers (for the checks that download from PyPI or Debian).
tfla_reachable() {
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15)' "$1" \
    >/dev/null 2>&1
}

# The packaging checks (see the header): each runs when its download site answers. $1: the
# main build, whose compiler they use (so that ccache serves its objects).
tfla_packaging_checks() {
  local build="$1" mode="${TFLA_PACKAGING_CHECKS:-1}" name script url
  [[ "$mode" == 0 ]] && { echo "== packaging checks skipped (TFLA_PACKAGING_CHECKS=0)"; return; }
  for name in pip catch2v3 jax; do
    case "$name" in
      pip) script=tools/check_pip_install.sh url=https://pypi.org/simple/scikit-build-core/ ;;
      jax) script=tools/check_jax.sh url=https://pypi.org/simple/jax/ ;;
      catch2v3) script=tools/check_catch2_v3.sh url=https://deb.debian.org/debian/ ;;
    esac
    if ! tfla_reachable "$url"; then
      if [[ "$mode" == required ]]; then
        echo "error: $script needs $url, which does not answer" >&2
        return 1
      fi
      echo "== SKIPPED $script: $url does not answer (TFLA_PACKAGING_CHECKS=required makes this an error)"
      continue
    fi
    TFLA_MAIN_BUILD="$build" bash "$script"
  done
}

tfla_test_main() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  local build="${1:-build}"
  local start=$SECONDS
  tfla_install_deps
  echo "== configure and build ($build)"
  tfla_build "$build"
  echo "== test"
  ctest --test-dir "$build" --output-on-failure
  tfla_python_tests "$build"
  tfla_packaging_checks "$build"
  echo "== tools/test.sh: build and tests passed in $((SECONDS - start)) s"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  tfla_test_main "$@"
fi
