#!/usr/bin/env bash
# Build benchmark: `imager build manifests/base.toml` against plain mmdebstrap of the same
# package set, in the same run on the same machine.
#   imager lock                      resolve against the mirrors (network)
#   imager build, cold cache         download + install + strip + scrub + normalise + hash +
#                                    store, and keeping the installed tree in the install cache
#   imager build --no-cache          the same with the .debs in the store (no network)
#   imager build, install cache      the package set from the install cache
#   overlay / hook change            the engineer's loop: a manifest extending base with an
#                                    overlay file and a hook, each changed in turn
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
for _ in 1 2; do
  echo "imager-build-nocache wall_s=$(timed I build --no-cache "$work/m/base.toml")"
  echo "  phases: $(grep ' time ' "$work/out")"
done
for _ in 1 2; do
  echo "imager-build-cached  wall_s=$(timed I build "$work/m/base.toml")"
  echo "  phases: $(grep ' time ' "$work/out")"
done

# The engineer's loop: base plus an overlay file and a hook (the same package set, so the
# same install cache entry).
mkdir -p "$work/m/overlays/loop"
loop_manifest() {
  cat >"$work/m/loop.toml" <<EOT
name = "loop"
extends = "base.toml"
[[overlay]]
src = "overlays/loop/motd"
dest = "/etc/motd"
[[hook]]
name = "stamp"
run = "echo $1 > /etc/loop-stamp"
EOT
}
echo "first" >"$work/m/overlays/loop/motd"; loop_manifest one
I lock "$work/m/loop.toml" >/dev/null
I build "$work/m/loop.toml" >/dev/null
# Each edit twice: with the provenance (tar.zst and SPDX made and hashed), and without.
for n in 1 2 3 4; do
  flags=(); label=""
  if [ "$n" -gt 2 ]; then flags=(--no-provenance); label=" --no-provenance"; fi
  echo "edit $n" >"$work/m/overlays/loop/motd"
  echo "overlay-change$label wall_s=$(timed I build "${flags[@]}" "$work/m/loop.toml")"
  echo "  $(grep -m1 installed "$work/out" | sed 's/^ *//'); phases: $(grep ' time ' "$work/out")"
  loop_manifest "hook-$n"
  echo "hook-change$label    wall_s=$(timed I build "${flags[@]}" "$work/m/loop.toml")"
  echo "  phases: $(grep ' time ' "$work/out")"
done
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
