#!/bin/sh
# Issue 16, defect 5 through the CLI (and defect 10's "compile exits 0 when nothing could be
# stored"): cubins compiled into cache A are exported; the bundle's bytes are replaced by
# attacker-chosen ones with matching checksums; cache B imports it. Nothing forged is ever
# served: `tfla compile` on B finds no cached cubin, recompiles every key and stores the local
# bytes (equal to A's), and `tfla cache verify` counts no unverified cubin afterwards.
# usage: check_forged_cubins_cli.sh TFLA_BINARY (TFLA_CACHE names a scratch file). NVRTC, no GPU.
tfla=$1
d=$(dirname "$TFLA_CACHE")
py=python3
fail() { echo "FAILED: $*"; exit 1; }
run() {
  want=$1; shift
  out=$("$tfla" "$@" 2>"$d/stderr"); rc=$?
  err=$(cat "$d/stderr")
  echo "\$ tfla $* (exit $rc)"; echo "$out" | tail -5; echo "$err" | tail -5 | sed 's/^/  stderr: /'
  [ "$rc" -eq "$want" ] || fail "tfla $*: exit $rc, expected $want"
}
json() {
  echo "$out" | $py -c "import json,sys; j=json.load(sys.stdin); sys.exit(0 if ($1) else 1)" ||
    fail "stdout is not JSON with $1"
}
set -- --dtype bf16 --dims 64x64

run 0 compile "$@" --cache "$d/a.sqlite" --json
json 'j["ok"] and j["compiled"] > 0 and j["stored"] == j["compiled"]'
run 0 cache export "$d/bundle.tfla" --cache "$d/a.sqlite"
$py - "$d/bundle.tfla" <<'PY' || fail "forging"
import hashlib, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for (h,) in c.execute("select hash from cubins").fetchall():
    evil = b"ATTACKER CODE " + h.encode()
    c.execute("update cubins set bytes = ?, size_bytes = ?, checksum = ?, verified = 1 where hash = ?",
              (evil, len(evil), hashlib.sha256(evil).hexdigest(), h))
c.commit()
PY
run 0 cache import "$d/bundle.tfla" --cache "$d/b.sqlite" --json
json 'j["cubins_added"] > 0 and j["cubins_unverified"] == j["cubins_added"]'
run 0 cache verify --cache "$d/b.sqlite" --json
json 'j["cubins_unverified"] > 0'
run 0 compile "$@" --cache "$d/b.sqlite" --json
json 'j["ok"] and j["cached"] == 0 and j["stored"] == j["compiled"] and j["compiled"] > 0'
run 0 cache verify --cache "$d/b.sqlite" --json
json 'j["ok"] and j["cubins_unverified"] == 0'
$py - "$d/a.sqlite" "$d/b.sqlite" <<'PY' || fail "B serves bytes that A did not compile"
import sqlite3, sys
a = dict(sqlite3.connect(sys.argv[1]).execute("select hash, bytes from cubins"))
b = dict(sqlite3.connect(sys.argv[2]).execute("select hash, bytes from cubins where verified = 1"))
# B's verified bytes are its own compiles: A's bytes, or (NVRTC's output for a few kernels varies
# between compiles of the same source) another ELF cubin of the key, never the forged bytes.
assert b and all(not b[h].startswith(b"ATTACKER") and (a[h] == b[h] or b[h].startswith(b"\x7fELF")) for h in b), "forged bytes kept"
PY

# Compiled cubins that cannot be stored (the cache path holds a file that is not a cache) are
# a failure, and the file is left as it was.
echo "my notes" > "$d/notes.sqlite"
run 1 compile "$@" --cache "$d/notes.sqlite" --jobs 2
echo "$out" | grep -q 'FAILED to store' || fail "no FAILED to store line"
[ "$(cat "$d/notes.sqlite")" = "my notes" ] || fail "notes.sqlite changed"
echo "all forged-cubin CLI checks passed"
