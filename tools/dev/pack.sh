#!/usr/bin/env bash
# Packs a build's library, CLI and GPU test binaries (debug info stripped, about 5 MB) into one
# folder, for running on a GPU machine that cannot build the project (no network, other
# packages). usage: tools/dev/pack.sh BUILD_DIR DEST_DIR
# On the GPU machine: export LD_LIBRARY_PATH=$PWD/DEST_DIR/lib; DEST_DIR/bin/tfla info
# (test_gpu_dispatch runs the CLI: export TFLA_CLI=$PWD/DEST_DIR/bin/tfla, else it looks for the
# build path compiled into it.)
set -euo pipefail
build="${1:?usage: tools/dev/pack.sh BUILD_DIR DEST_DIR}"
dest="${2:?usage: tools/dev/pack.sh BUILD_DIR DEST_DIR}"
rm -rf "$dest"
mkdir -p "$dest/lib" "$dest/bin"
cp -a "$build"/src/libtfla.so* "$dest/lib/"
# the XLA FFI handlers (tfla.jax), where the build made them
[ -f "$build/src/libtfla_jax.so" ] && cp "$build/src/libtfla_jax.so" "$dest/lib/"
cp "$build/tools/tfla" "$dest/bin/"
for t in "$build"/tests/gpu/test_gpu_*; do
  [ -x "$t" ] && [ -f "$t" ] && cp "$t" "$dest/bin/"
done
find "$dest" -type f \( -name 'tfla' -o -name 'test_gpu_*' -o -name 'libtfla*.so*' \) \
  -exec strip --strip-debug {} +
du -sh "$dest"
