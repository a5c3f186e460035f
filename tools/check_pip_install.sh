#!/usr/bin/env bash
# Installs the tfla Python package as a user does and checks it from outside the checkout:
#   1. a fresh venv; `pip install ./tools/python`: scikit-build-core (from PyPI) compiles libtfla
#      with CMake (Release; tests and the CLI off to keep it quick; ccache when installed) and
#      puts it inside the package;
#   2. `import tfla` finds that library with no TFLA_LIBRARY; the CPU queries answer (versions,
#      runtime_info() without a driver, a config and its workspace size); NVRTC found
#      (tools/python/tests/check_installed.py);
#   3. `pip install nvidia-cuda-nvrtc` (the wheel PyTorch pulls in) and the same checks, now
#      with NVRTC from the wheel beside libtfla, as on a machine with only a driver and PyTorch.
#
# usage: bash tools/check_pip_install.sh [WORK_DIR]     (default: build-pip; replaced each run,
#        with WORK_DIR-cmake, the CMake build folder)
# environment: CUDA_HOME (default /usr/local/cuda; the build needs its headers),
#   TFLA_MAIN_BUILD (default build: a configured build whose C++ compiler is used),
#   TFLA_PIP_NVRTC_WHEEL (default "nvidia-cuda-nvrtc==13.0.*"; empty: skip step 3)
# Needs python3 with venv and network access to PyPI. Exit code 0 when every check passed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"
work="${1:-build-pip}"
[[ "$work" = /* ]] || work="$repo/$work"
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
nvrtc_wheel="${TFLA_PIP_NVRTC_WHEEL-nvidia-cuda-nvrtc==13.0.*}"
start=$SECONDS

# The CMake build folder sits beside the work folder, at the depth of build/: the compile
# commands then match the main build's, and ccache (when present) serves its objects.
rm -rf "$work" "$work-cmake"
mkdir -p "$work"
echo "== pip install: fresh venv in $work/venv"
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q --upgrade pip

settings=(--config-settings=cmake.build-type=Release
          --config-settings=cmake.define.TFLA_BUILD_TESTS=OFF
          --config-settings=cmake.define.TFLA_BUILD_TOOLS=OFF
          "--config-settings=cmake.define.CUDAToolkit_ROOT=$CUDA_HOME"
          "--config-settings=build-dir=$work-cmake")
if command -v ccache >/dev/null 2>&1; then
  settings+=(--config-settings=cmake.define.CMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
# The main build's compiler, spelled the same (scikit-build-core would pick g++ where CMake
# picked c++), so that ccache matches the compile commands.
cxx=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "${TFLA_MAIN_BUILD:-build}/CMakeCache.txt" 2>/dev/null || true)
[[ -n "$cxx" ]] && settings+=("--config-settings=cmake.define.CMAKE_CXX_COMPILER=$cxx")
echo "== pip install ./tools/python (scikit-build-core builds libtfla)"
t0=$SECONDS
# -v: CMake's output goes to the log; only its tail is shown unless the install fails.
if ! "$py" -m pip install -v "${settings[@]}" ./tools/python >"$work/pip-install.log" 2>&1; then
  tail -n 80 "$work/pip-install.log" >&2
  echo "error: pip install ./tools/python failed (full log: $work/pip-install.log)" >&2
  exit 1
fi
grep -E "^Successfully installed|Built wheel|Created wheel" "$work/pip-install.log" || true
echo "   built and installed in $((SECONDS - t0)) s"

# Outside the checkout, with nothing pointing at a build folder.
cd "$work"
unset TFLA_LIBRARY TFLA_NVRTC TFLA_NVRTC_SEARCH_PATH PYTHONPATH
echo "== check the installed package (NVRTC from wherever it is)"
"$py" "$repo/tools/python/tests/check_installed.py"

if [[ -n "$nvrtc_wheel" ]]; then
  echo "== pip install $nvrtc_wheel; NVRTC must now come from the wheel"
  "$py" -m pip install -q "$nvrtc_wheel"
  "$py" "$repo/tools/python/tests/check_installed.py" --nvrtc-found-by "nvidia-cuda-nvrtc wheel"
fi
echo "== tools/check_pip_install.sh: passed in $((SECONDS - start)) s"
