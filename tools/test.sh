#!/usr/bin/env bash
# Builds tfla and runs every test: unit (CPU), nvrtc (compiles the kernel templates with NVRTC,
# no GPU) and gpu (reported as skipped by ctest where no GPU is present).
# Installs the build dependencies from Debian's packages first, so it works on a fresh machine.
#
# usage: bash tools/test.sh [BUILD_DIR]          (default: build)
# environment:
#   TFLA_SKIP_DEPS=1      do not check or install packages
#   TFLA_CMAKE_ARGS="..." extra configure arguments, e.g. -DTFLA_SANITIZE=address,undefined
#   CUDA_HOME             the CUDA toolkit (default /usr/local/cuda); NVRTC comes from there
# Exit code: 0 when the build and every test passed, non-zero otherwise.
#
# tools/run.sh sources this file for tfla_install_deps and tfla_build.
set -euo pipefail

TFLA_APT_PACKAGES=(cmake ninja-build g++ pkg-config libspdlog-dev libfmt-dev catch2
                   libsqlite3-dev nlohmann-json3-dev)

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

# Configures (Ninja, Release) and builds into $1.
tfla_build() {
  local build="$1"
  # shellcheck disable=SC2086  # TFLA_CMAKE_ARGS is a list of words on purpose
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "-DCUDAToolkit_ROOT=$CUDA_HOME" \
    ${TFLA_CMAKE_ARGS:-}
  cmake --build "$build" --parallel "$(nproc)"
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
  echo "== tools/test.sh: build and tests passed in $((SECONDS - start)) s"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  tfla_test_main "$@"
fi
