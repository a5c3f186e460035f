#!/bin/bash
# Times two builds' `tfla bench forward` and `bench fwbw` at the paper shape side by side in one
# run (alternating, so drift hits both alike): the old binaries packed into $1, the new into $2
# (tools/dev/pack.sh). Same cache for both (same kernels, same cubins), tuned entries off.
# usage: bash tools/dev/side_by_side.sh OLD_DIR NEW_DIR [ROUNDS]
set -u
old="$1"; new="$2"; rounds="${3:-2}"
export TFLA_CACHE=${TFLA_CACHE:-/tmp/side-by-side.sqlite} TFLA_TUNED=0
for r in $(seq "$rounds"); do
  for which in old new; do
    dir=$old; [ "$which" = new ] && dir=$new
    for op in forward fwbw; do
      LD_LIBRARY_PATH=$PWD/$dir/lib "$dir/bin/tfla" bench "$op" --variant sig --seqs 8192 --tokens 65536 \
        --reps 20 2>&1 | grep -E "^ *sig|ms" | tail -1 | sed "s/^/round $r $which $op: /"
    done
  done
done
