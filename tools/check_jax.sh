#!/usr/bin/env bash
# tfla.jax without a GPU, as CI runs it: JAX (CPU) from PyPI in a venv, libtfla_jax built in the
# main build folder against that jaxlib's XLA FFI headers (cmake -DTFLA_JAX=ON
# -DTFLA_JAX_PYTHON=...), then its handlers called with hand-made buffers (test_jax_ffi) and
# tools/python/tests/test_jax_cpu.py with that Python: the module imports, the FFI targets
# register, argument errors are named. (test_jax_gpu.py needs JAX with
# CUDA and a GPU; it skips here.)
#
# usage: bash tools/check_jax.sh [VENV_DIR]     (default: build-jax; kept between runs)
# environment: TFLA_MAIN_BUILD (default build: the configured build folder), TFLA_JAX_SPEC
#   (default "jax": the pip requirement)
# Needs python3 with venv and network access to PyPI. Exit code 0 when the build and tests passed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv="${1:-build-jax}"
build="${TFLA_MAIN_BUILD:-build}"
start=$SECONDS
if [[ ! -x "$venv/bin/python" ]]; then
  echo "== tfla.jax: venv in $venv"
  python3 -m venv "$venv"
fi
py="$PWD/$venv/bin/python"
[[ "$venv" = /* ]] && py="$venv/bin/python"
echo "== tfla.jax: pip install ${TFLA_JAX_SPEC:-jax} pytest"
"$py" -m pip install -q "${TFLA_JAX_SPEC:-jax}" pytest
echo "== tfla.jax: build libtfla_jax in $build ($("$py" -c 'import jax; print("jax", jax.__version__)'))"
cmake -S . -B "$build" -DTFLA_JAX=ON "-DTFLA_JAX_PYTHON=$py" >/dev/null
cmake --build "$build" --target tfla_jax test_jax_ffi
echo "== tfla.jax: the handlers with hand-made buffers (tests/unit/test_jax_ffi.cpp)"
"$build/tests/unit/test_jax_ffi"
echo "== tfla.jax: tools/python/tests/test_jax_cpu.py"
TFLA_LIBRARY="$PWD/$build/src/libtfla.so" "$py" -m pytest -q -p no:cacheprovider tools/python/tests/test_jax_cpu.py
echo "== tools/check_jax.sh passed in $((SECONDS - start)) s"
