#!/usr/bin/env bash
# Build benchmark: `imager build manifests/base.toml` against plain mmdebstrap of the same
# package set, in the same run on the same machine.
#   imager lock                      resolve against the mirrors (network)
#   imager build, cold cache         download + install + strip + scrub + normalise + hash + store
#   imager build, warm cache         the steady state of a rebuild (no network)
#   mmdebstrap from the mirror       the same packages, downloaded by apt
#   mmdebstrap from a local repo     the same .debs from a file:// repository: the same
#                                    input as imager's warm build, so the difference is
#                                    imager's own overhead
# Usage: imager/bench/build.sh [WORKDIR]      (root; builds imager --release)
set -euo pipefail
work=${1:-$(mktemp -d)}
here=$(cd "$(dirname "$0")/../.." && pwd)
command -v dpkg-scanpackages >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q dpkg-dev >/dev/null; }
(cd "$here" && cargo build --release -q -p imager-cli)
imager="$here/target/release/imager"
rm -rf "$work"; mkdir -p "$work"
cp -a "$here/manifests" "$work/m"; rm -f "$work/m/"*.lock
I() { "$imager" --store "$work/store" -q "$@"; }
now() { date +%s.%N; }
timed() { local t0; t0=$(now); "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }; printf '%.1f' "$(echo "$(now) - $t0" | bc)"; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "imager-lock          wall_s=$(timed I lock "$work/m/base.toml")"
echo "imager-build-cold    wall_s=$(timed I build "$work/m/base.toml")"
echo "imager-build-warm    wall_s=$(timed I build "$work/m/base.toml")"
echo "imager-build-warm    wall_s=$(timed I build "$work/m/base.toml")"
echo "phases of the last build: $(grep ' time ' "$work/out")"
id=$(I show base --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "image $id"

lock="$work/m/base.lock"
names=$(awk '$1 == "package" {print $2}' "$lock" | paste -sd,)
mapfile -t mirrors < <(awk '$1 == "source" {$1 = "deb"; print}' "$lock")
plain() { SOURCE_DATE_EPOCH=$(awk '$1 == "epoch" {print $2}' "$lock") mmdebstrap --quiet --mode=root \
  --variant=minbase --include="$names" "$@"; }
rm -rf "$work/plain"
echo "mmdebstrap-mirror    wall_s=$(timed plain bookworm "$work/plain" "${mirrors[@]}")"
rm -rf "$work/plain" "$work/repo"; mkdir -p "$work/repo"
awk '$1 == "package" {v = $3; gsub(":", "%3a", v); print $8, $2 "_" v "_" $4 ".deb"}' "$lock" |
  while read -r sha name; do ln "$work/store/debs/$sha.deb" "$work/repo/$name"; done
(cd "$work/repo" && dpkg-scanpackages -m . > Packages 2>/dev/null)
echo "mmdebstrap-local     wall_s=$(timed plain --hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount "" "$work/plain" "deb [trusted=yes] file://$work/repo ./")"
du -sb "$work/plain" | awk '{print "plain tree bytes", $1}'
I show base | sed -n '1,4p'
rm -rf "$work/plain" "$work/repo"
