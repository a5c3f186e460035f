#!/bin/sh
# Issue 16's CLI reproductions, each with the promised behaviour: a foreign file at the cache
# path is refused and left as it was; an old bundle imports; export never overwrites unasked;
# verify reports a file it moved aside; forged rows are rejected and listed; no shell runs
# TFLA_TUNE_WORKER; exit codes (usage 2 before the driver check), JSON error objects, --help on
# every command, boolean and integer environment variables.
# usage: check_hardening_cli.sh TFLA_BINARY SEED_BINARY (TFLA_CACHE names a scratch file; its
# directory is the scratch directory). Needs python3 (its sqlite3 module writes foreign files).
tfla=$1
seed=$2
d=$(dirname "$TFLA_CACHE")
py=python3
fail() { echo "FAILED: $*"; exit 1; }
run() {  # run EXPECTED_RC ARGS...: runs tfla, prints and keeps stdout in $out, stderr in $err
  want=$1; shift
  out=$("$tfla" "$@" 2>"$d/stderr"); rc=$?
  err=$(cat "$d/stderr")
  echo "\$ tfla $* (exit $rc)"; echo "$out"; echo "$err" | sed 's/^/  stderr: /'
  [ "$rc" -eq "$want" ] || fail "tfla $*: exit $rc, expected $want"
}
has() { echo "$out" | grep -Eq -- "$1" || fail "expected stdout matching '$1'"; }
has_err() { echo "$err" | grep -Eq -- "$1" || fail "expected stderr matching '$1'"; }
json() {  # json PYTHON_EXPR: stdout parses as JSON and the expression (over j) is true
  echo "$out" | $py -c "import json,sys; j=json.load(sys.stdin); sys.exit(0 if ($1) else 1)" ||
    fail "stdout is not JSON with $1"
}
sql() { $py -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()" "$@" ||
          fail "sql on $1"; }
gpu=no
"$tfla" info --json | grep -q '"ordinal"' && gpu=yes

echo "== 1: another program's SQLite file at the cache path is refused, untouched"
sql "$d/x.db" "create table u(i); insert into u values(1);"
sum=$(cksum < "$d/x.db")
TFLA_CACHE="$d/x.db" run 1 cache list
has_err "x.db" ; has_err "not a tfla cache"; has_err "untouched"
TFLA_CACHE="$d/x.db" run 1 cache stats --json
json 'j["ok"] is False and j["exit_code"] == 1 and "not a tfla cache" in j["error"]["message"]'
[ "$(cksum < "$d/x.db")" = "$sum" ] || fail "x.db changed"
ls "$d" | grep -q 'x.db.corrupt' && fail "x.db was moved aside"
$py -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); assert c.execute('select count(*) from u').fetchone()[0] == 1" "$d/x.db" ||
  fail "x.db lost its row"

echo "== 2: a schema v1 bundle imports its entries"
"$seed" "$TFLA_CACHE" || fail "seed"
run 0 cache export "$d/v1.tfla"
sql "$d/v1.tfla" "DROP TABLE recorded; ALTER TABLE cubins DROP COLUMN verified; PRAGMA user_version = 1;"
run 0 cache import "$d/v1.tfla" --cache "$d/fresh.sqlite" --json
json 'j["ok"] and j["entries_added"] == 5 and j["rows_rejected"] == 0'

echo "== 3: export never overwrites unless --force"
echo "my notes" > "$d/notes.txt"
run 2 cache export "$d/notes.txt"
has_err "exists"
[ "$(cat "$d/notes.txt")" = "my notes" ] || fail "notes.txt overwritten"
run 2 cache export "$d/v1.tfla" --json
json 'j["ok"] is False and j["error"]["kind"] == "usage"'
run 0 cache export "$d/notes.txt" --force
has 'exported 3 environments, 5 entries'
# a killed export's leftovers (a dead pid) are removed by the next export of that file
sh -c 'exit 0' & dead=$!; wait $dead
echo half > "$d/out.tfla.tmp-$dead"; echo half > "$d/out.tfla.tmp-$dead-journal"
run 0 cache export "$d/out.tfla"
[ -e "$d/out.tfla.tmp-$dead" ] && fail "stale export temporary left"
[ -e "$d/out.tfla.tmp-$dead-journal" ] && fail "stale export journal left"

echo "== 4: verify reports a damaged cache it moved aside"
cp "$TFLA_CACHE" "$d/trunc.sqlite"
$py -c "import os,sys; os.truncate(sys.argv[1], 3000)" "$d/trunc.sqlite"
run 1 cache verify --cache "$d/trunc.sqlite" --json
json 'j["ok"] is False and any("moved it aside" in p for p in j["problems"]) and j["notes"]'
ls "$d" | grep -q 'trunc.sqlite.corrupt-' || fail "not moved aside"
run 0 cache verify --cache "$d/trunc.sqlite"

echo "== 6: TFLA_TUNE_WORKER is not a shell command any more"
if [ "$gpu" = no ]; then
  TFLA_TUNE_WORKER="touch $d/pwned" run 3 tune --op fwd --variant exp --budget 1 --cache "$d/tune.sqlite"
  [ -e "$d/pwned" ] && fail "TFLA_TUNE_WORKER ran through a shell"
fi

echo "== 8: import rejects forged rows and names them; every command reads such a file"
run 0 cache export "$d/forged.tfla"
sql "$d/forged.tfla" "
UPDATE entries SET op = 'fwd''; DROP TABLE entries;--' WHERE rowid = 1;
UPDATE entries SET dv = -512 WHERE rowid = 2;
UPDATE entries SET batch_heads = 4611686018427387904 WHERE rowid = 3;
UPDATE entries SET winner_median_us = -1 WHERE rowid = 4;
UPDATE entries SET tool_version = CAST(X'fffe41' AS TEXT) WHERE rowid = 5;"
run 1 cache import "$d/forged.tfla" --cache "$d/clean.sqlite"
has 'REJECTED 5 rows'; has 'ProblemKey.op'; has 'head dims'; has 'winner_median_us'; has 'not UTF-8'
run 0 cache verify --cache "$d/clean.sqlite"
for cmd in "stats --json" "list --json" "prune --dry-run --json" "recorded --json"; do
  # shellcheck disable=SC2086
  run 0 cache $cmd --cache "$d/forged.tfla"
  json 'isinstance(j, dict)'
done
run 1 cache verify --cache "$d/forged.tfla" --json
json 'j["ok"] is False and len(j["problems"]) >= 5'
run 0 cache explain --op fwd --variant exp --dtype bf16 --dqk 256 --dv 512 --bh 64 --seq 8192 --cache "$d/forged.tfla" --json
json 'isinstance(j, dict) and j["kind"] in ("exact", "bucket", "neighbour", "none")'

echo "== 10: exit codes, JSON errors, --help, environment variables"
run 2 bench forward --tokens 0
has_err "tokens"
run 2 bench forward --dqk 17
run 2 tune --dqk 17
has_err "Dqk = 17"
run 2 cache explain --op bogus --dqk 256 --dv 512 --bh 64 --seq 8192
has_err "--op"
run 2 cache explain --op bogus --dqk 256 --dv 512 --bh 64 --seq 8192 --json
json 'j["ok"] is False and j["exit_code"] == 2 and j["error"]["kind"] == "usage"'
run 2 compile --dtype bf16 --dims 64x64 --emit "$d/no/such/dir" --no-cache
has_err "emit"
run 2 compile --dtype bf16 --dims 64x64 --packed 4 --no-cache
has_err "N:MAXLEN"
run 2 compile --dtype bf16 --dims 64x64 --packed 0:100 --no-cache
has_err "--packed 0:100"
run 2 compile --dtype bf16 --dims 64x64 --packed 9000:100 --heads 8 --no-cache
has_err "65535"
run 2 compile --dtype bf16 --dims 64x64 --heads 4 --no-cache
has_err "--heads"
run 2 compile --dtype bf16 --dims 64x64 --arch sm_9 --no-cache
has_err "--arch"
run 2 compile --dtype bf16 --dims 64x64 --arch sm_90aa --no-cache
has_err "--arch"
run 2 compile --dtype bf16 --dims 64x64 --packed 4:100 --every-family --no-cache
has_err "--every-family"
for filter in "--op bogus" "--variant lin" "--dtype bf17"; do
  # shellcheck disable=SC2086
  run 2 cache list $filter --cache "$d/never.sqlite"
  has_err "${filter%% *}"
done
[ -e "$d/never.sqlite" ] && fail "cache list with a bad filter created its cache"
run 2 bench gemm --m 0
has_err "--m"
run 2 bench gemm --k 12
has_err "--k"
run 2 bench tma-copy --mib 0
has_err "--mib"
run 1 cache show nosuchentry --json
json 'j["ok"] is False and "nosuchentry" in j["error"]["message"]'
run 2 info --bogus --json
json 'j["error"]["kind"] == "usage"'
for c in info compile bench cache tune version; do
  run 0 "$c" --help
  has '^usage: tfla'
done
run 0 cache list --help
has 'import FILE'
TFLA_CACHE_DISABLE=false run 0 info --json
json 'j["cache_disabled"] is False'
TFLA_CACHE_DISABLE=yes run 0 info --json
json 'j["cache_disabled"] is True'
TFLA_LOG_LEVEL=bogus run 0 info
has_err "TFLA_LOG_LEVEL='bogus' is not a level"
TFLA_CACHE_DISABLE=maybe run 1 info
has_err "TFLA_CACHE_DISABLE='maybe'"
TFLA_DEVICE=abc run 1 cache explain --op fwd --dqk 256 --dv 512 --bh 64 --seq 8192
has_err "TFLA_DEVICE='abc'"
if [ "$gpu" = no ]; then
  run 3 bench forward --tokens 1024 --seqs 512 --json
  json 'j["error"]["kind"] == "no_driver" and j["exit_code"] == 3'
fi
echo "all hardening CLI checks passed"
