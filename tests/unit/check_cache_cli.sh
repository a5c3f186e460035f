#!/bin/sh
# The tfla cache subcommands on a cache seeded by tfla_test_cache_seed (TFLA_CACHE names it).
# usage: check_cache_cli.sh TFLA_BINARY. Prints each step; exits non-zero on the first failure.
tfla=$1
fail() { echo "FAILED: $*"; exit 1; }
run() {  # run EXPECTED_RC ARGS...: runs tfla, prints and keeps its output in $out
  want=$1; shift
  out=$("$tfla" "$@" 2>&1); rc=$?
  echo "\$ tfla $* (exit $rc)"; echo "$out"
  [ "$rc" -eq "$want" ] || fail "tfla $*: exit $rc, expected $want"
}
has() { echo "$out" | grep -Eq -- "$1" || fail "expected output matching '$1'"; }

gpu=no
"$tfla" info --json | grep -q '"ordinal"' && gpu=yes

run 0 cache list
has 'fwd +exp +bf16 +256x512 +BH=64,S=8192'
has '1\.50x'
has '^5 entries'
run 0 cache list --json --env nosuchenv
has '"entries": \[\]'
run 0 cache show 'BH=64,S=8192'
has 'compile_failed'
has 'too much shared memory'
has 'winner +chunk=128'
run 2 cache show 'fwd/exp'                # ambiguous: several entries match
run 1 cache show 'nosuchentry'
run 0 cache stats --json
has '"environments": 3'
has '"entries": 5'
has '"candidates": 10'
has '"cubins": 4'

if [ "$gpu" = no ]; then
  run 0 cache explain --op fwd --variant exp --dtype bf16 --dqk 256 --dv 512 --bh 64 --seq 8192
  has 'most recently tuned environment'
  has '^lookup +exact'
  run 0 cache explain --op fwd --variant exp --dtype bf16 --dqk 256 --dv 512 --bh 48 --seq 8192
  has '^lookup +bucket'
  run 0 cache explain --op fwd --variant exp --dtype bf16 --dqk 256 --dv 512 --bh 64 --seq 4096 --json
  has '"kind": "neighbour"'
  run 0 cache explain --op fwd --variant sig --dtype bf16 --dqk 256 --dv 512 --bh 64 --seq 8192
  has '^lookup +none'
  has 'heuristic default'
  run 3 cache prune --all-but-current
  run 0 cache prune --dry-run
  has 'would prune 1 environments \(1 entries, 2 candidates, 1 cubins\)'
  has 'tfla 0\.0\.1'
  run 0 cache stats --json
  has '"environments": 3'
  run 0 cache prune   # keeps the H100 and H200 environments and the unlisted cubin
  has 'pruned 1 environments \(1 entries, 2 candidates, 1 cubins\).*3 kept'
  run 0 cache stats --json
  has '"environments": 2'
  has '"entries": 4'
  has '"candidates": 8'
  has '"cubins": 3'
  run 0 cache list
  has 'BH=16,S=2048'
  run 0 cache prune
  has 'nothing to prune'
  run 0 cache verify
  has 'load check +skipped'
else
  run 0 cache explain --op fwd --variant exp --dtype bf16 --dqk 256 --dv 512 --bh 64 --seq 8192
  has 'current device'
fi
run 2 cache explain --op fwd --dqk 256
run 0 cache recorded
has 'fwd/exp/norm/bf16/256x512/bhsd/BH=32,S=4096 +2'
has 'step/sig/norm/bf16/256x512/bhsd/BH=128,S=1 +1'
has 'tfla tune --from-recorded'
run 0 cache recorded --json
has '"lookups": 2'
run 2 cache recorded --bogus
if [ "$gpu" = no ]; then
  run 3 tune --from-recorded
  has 'needs the GPU'
fi
run 0 cache recorded --clear
has 'cleared 2 recorded'
run 0 cache recorded
has 'no recorded shapes'
run 0 cache export "$TFLA_CACHE.export"
run 0 cache import "$TFLA_CACHE.export" --cache "$TFLA_CACHE.fresh" --json
has '"entries_added": [1-9]'
echo "all cache CLI checks passed"
