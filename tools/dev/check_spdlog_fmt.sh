#!/usr/bin/env bash
# Compiles (-fsyntax-only) every tfla source that uses spdlog or fmt against the spdlog and fmt
# headers of other distributions, taken from their -dev packages (downloaded and unpacked with
# dpkg -x; nothing is installed):
#   ubuntu-22.04: libspdlog-dev 1.9.2, libfmt-dev 8.1.1
#   ubuntu-24.04: libspdlog-dev 1.12.0, libfmt-dev 9.1.0
# (Debian 12's spdlog 1.10.0 / fmt 9.1.0 is what the normal build uses.)
#
# usage: bash tools/dev/check_spdlog_fmt.sh [BUILD_DIR]   (a configured build; default: build)
# Needs network access to archive.ubuntu.com. Exit code 0 when every source compiled.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
build="${1:-build}"
[[ -f "$build/compile_commands.json" ]] || { echo "error: configure $build first" >&2; exit 1; }
work="$build/dep-headers"
mirror=http://archive.ubuntu.com/ubuntu/pool/universe
declare -A debs=(
  [ubuntu-22.04]="s/spdlog/libspdlog-dev_1.9.2+ds-0.2_amd64.deb f/fmtlib/libfmt-dev_8.1.1+ds1-2_amd64.deb"
  [ubuntu-24.04]="s/spdlog/libspdlog-dev_1.12.0+ds-2build1_amd64.deb f/fmtlib/libfmt-dev_9.1.0+ds1-2_amd64.deb")
# The sources that include spdlog or fmt, directly or through a log header.
mapfile -t sources < <(grep -rlE 'spdlog|fmt/|log\.hpp' --include='*.cpp' src cache tuner tools/cli)
fail=0
for distro in "${!debs[@]}"; do
  root="$work/$distro"
  if [[ ! -d "$root/usr/include/spdlog" ]]; then
    mkdir -p "$root"
    for deb in ${debs[$distro]}; do
      python3 -c 'import sys, urllib.request; open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1], timeout=60).read())' \
        "$mirror/$deb" "$work/$(basename "$deb")"
      dpkg -x "$work/$(basename "$deb")" "$root"
    done
  fi
  echo "== $distro: ${debs[$distro]}: ${#sources[@]} sources"
  for src in "${sources[@]}"; do
    # The source's own compile command, with the distro's headers first and no object output.
    cmd=$(python3 - "$build/compile_commands.json" "$PWD/$src" "$root/usr/include" <<'PY'
import json, shlex, sys
db, src, inc = sys.argv[1], sys.argv[2], sys.argv[3]
for e in json.load(open(db)):
    if e["file"] == src:
        args = shlex.split(e["command"])
        if args[0].endswith("ccache"):
            args = args[1:]
        out = [args[0], "-isystem", inc]
        skip = False
        for a in args[1:]:
            if skip:
                skip = False
                continue
            if a in ("-o", "-MF", "-MT", "-MQ"):
                skip = True
                continue
            if a in ("-MD", "-MMD"):
                continue
            out.append(a)
        print("cd " + shlex.quote(e["directory"]) + " && " + shlex.join(out + ["-fsyntax-only"]))
        break
PY
)
    if [[ -z "$cmd" ]]; then echo "   $src: not in compile_commands.json (skipped)"; continue; fi
    if bash -c "$cmd" 2>"$work/err.txt"; then
      echo "   ok   $src"
    else
      echo "   FAIL $src"; head -n 30 "$work/err.txt"; fail=1
    fi
  done
done
exit "$fail"
