#!/usr/bin/env bash
# Builds tfla's tests against Catch2 3, the version Debian 13 and Ubuntu 24.04 ship, so the
# test build keeps working with it while CI (Debian 12) builds with Catch2 2:
#   1. Catch2 3.7.1 from Debian 13's source archive (catch2_3.7.1.orig.tar.gz, sha256 checked),
#      built and installed into a prefix. Debian 13's libcatch2-dev .deb cannot be used as is on
#      Debian 12: its static libraries need glibc 2.38 and GCC 14's libstdc++.
#   2. tfla configured with CMAKE_PREFIX_PATH=<prefix>, so find_package(Catch2) takes version 3;
#   3. every test source compiled (tests/tfla_catch.hpp under Catch2 3), and the tests that
#      need no libtfla (test_cache, test_reference) linked against Catch2WithMain and run.
# The full suite against Catch2 3 is `TFLA_CMAKE_ARGS=-DCMAKE_PREFIX_PATH=<prefix> bash
# tools/test.sh build-catch2v3-full` (a whole extra build, ~10 minutes on 2 cores).
#
# usage: bash tools/check_catch2_v3.sh [WORK_DIR]        (default: build-catch2v3)
# The Catch2 build in WORK_DIR/catch2-prefix is kept between runs; the tfla build is
# incremental. Uses ccache when installed. Exit code 0 when everything built and passed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work="${1:-build-catch2v3}"
[[ "$work" = /* ]] || work="$PWD/$work"
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
version=3.7.1
tarball="catch2_${version}.orig.tar.gz"
sha256=c991b247a1a0d7bb9c39aa35faf0fe9e19764213f28ffba3109388e62ee0269c
urls=("https://deb.debian.org/debian/pool/main/c/catch2/$tarball"
      "https://snapshot.debian.org/archive/debian/20250101T000000Z/pool/main/c/catch2/$tarball")
prefix="$work/catch2-prefix"
start=$SECONDS
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
mkdir -p "$work"

if [[ ! -f "$prefix/.complete" ]]; then
  if [[ ! -f "$work/$tarball" ]]; then
    echo "== download Catch2 $version (Debian 13 source)"
    python3 - "$work/$tarball" "$sha256" "${urls[@]}" <<'PY'
import hashlib, sys, urllib.request
dest, want, urls = sys.argv[1], sys.argv[2], sys.argv[3:]
errors = []
for url in urls:
    try:
        data = urllib.request.urlopen(url, timeout=60).read()
    except Exception as e:  # noqa: BLE001  (any failure: try the next mirror)
        errors.append(f"{url}: {e}")
        continue
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        errors.append(f"{url}: sha256 {got}, expected {want}")
        continue
    open(dest, "wb").write(data)
    sys.exit(0)
sys.exit("could not download Catch2:\n  " + "\n  ".join(errors))
PY
  fi
  echo "== build Catch2 $version into $prefix"
  rm -rf "$work/catch2-src" "$work/catch2-build" "$prefix"
  mkdir -p "$work/catch2-src"
  tar -xzf "$work/$tarball" -C "$work/catch2-src" --strip-components=1
  cmake -S "$work/catch2-src" -B "$work/catch2-build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$prefix" -DBUILD_TESTING=OFF -DCATCH_INSTALL_DOCS=OFF \
    -DCATCH_INSTALL_EXTRAS=OFF "${launcher[@]}" >"$work/catch2-configure.log"
  cmake --build "$work/catch2-build" --parallel "$(nproc)" >"$work/catch2-build.log"
  cmake --install "$work/catch2-build" >/dev/null
  touch "$prefix/.complete"
  echo "   Catch2 built in $((SECONDS - start)) s"
fi

echo "== configure tfla against Catch2 $version"
build="$work/tfla"
# The main build's compiler, spelled the same, so that ccache matches the compile commands.
cxx=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "${TFLA_MAIN_BUILD:-build}/CMakeCache.txt" 2>/dev/null || true)
[[ -n "$cxx" ]] && launcher+=("-DCMAKE_CXX_COMPILER=$cxx")
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "-DCUDAToolkit_ROOT=$CUDA_HOME" \
  "-DCMAKE_PREFIX_PATH=$prefix" "${launcher[@]}" >"$work/tfla-configure.log"
if ! grep -q "tfla tests: Catch2 $version" "$work/tfla-configure.log"; then
  cat "$work/tfla-configure.log" >&2
  echo "error: the tfla test build did not pick Catch2 $version from $prefix" >&2
  exit 1
fi
echo "== compile every test source; link and run test_cache and test_reference"
mapfile -t objects < <(ninja -C "$build" -t targets all | sed -n 's|^\(tests/[^:]*\.o\): .*|\1|p')
((${#objects[@]} > 10)) || { echo "error: found only ${#objects[@]} test objects" >&2; exit 1; }
t0=$SECONDS
cmake --build "$build" --parallel "$(nproc)" --target "${objects[@]}" test_cache test_reference
echo "   ${#objects[@]} test objects and 2 test binaries built in $((SECONDS - t0)) s"
ctest --test-dir "$build" --output-on-failure -R '^(test_cache|test_reference)$'
echo "== tools/check_catch2_v3.sh: passed in $((SECONDS - start)) s"
