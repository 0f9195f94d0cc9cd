#!/usr/bin/env bash
# Memory for one large file, measured: an image holding one sparse file of SIZE GiB (3 MiB
# of random data in it, the rest a hole), pushed to an empty `local:` root (first
# install), then a second image with 1 MiB of it rewritten in the middle and 5 bytes
# appended, pushed onto that host (delta push). Prints one figure line per size and step:
#   large-file size=4GiB step=first-install wall=S controller_rss_kb=N agent_rss_kb=N sent=B
# controller_rss_kb / agent_rss_kb: peak RSS (VmHWM) of the `syncer push` process and of
# its agent (`syncer serve`), sampled every 50 ms from /proc (VmHWM is the peak so far,
# so a sample late in the run sees the whole run's peak). The import's peak RSS is
# printed too (step=import).
# Usage: large-file.sh [WORKDIR]   (default a directory under /var/tmp, removed at the end)
# Environment: SIZES="4 16" (GiB); NO_BUILD=1 to skip `cargo build --release`.
# Needs about 2 × the file's allocated size free (the files are sparse: a few MiB each).
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
given=${1:-}
if [ -n "$given" ]; then work=$given; mkdir -p "$work"; else work=$(mktemp -d /var/tmp/large-bench.XXXXXX); fi
work=$(cd "$work" && pwd)
cleanup() { [ -n "$given" ] || rm -rf "$work"; }
trap cleanup EXIT
[ -n "${NO_BUILD:-}" ] || (cd "$repo" && cargo build --release --locked -q -p imager-cli -p syncer)
imager="$repo/target/release/imager"; syncer="$repo/target/release/syncer"
export IMAGER_STORE="$work/store"

# The peak RSS (kB) of the newest process whose command line matches $1, sampled until
# it exits; written to $2.
sample_peak() {
  local pattern=$1 out=$2 pid="" peak=0 v
  until [ -n "$pid" ]; do pid=$(pgrep -n -f -- "$pattern" || true); sleep 0.02; done
  while [ -e "/proc/$pid" ]; do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$v" ] && [ "$v" -gt "$peak" ] && peak=$v
    sleep 0.05
  done
  echo "$peak" >"$out"
}

# Runs a push of image $1 to $2 and prints its figure line (step $3).
measured_push() {
  local image=$1 root=$2 step=$3 t0 t1 sent
  sample_peak "serve --root $root" "$work/agent.kb" &
  local agent_sampler=$!
  t0=$(date +%s.%N)
  "$syncer" push "$image" "local:$root" --json --level 19 --no-store-copies >"$work/report.json" &
  local push=$!
  sample_peak "syncer push $image local:$root" "$work/controller.kb" &
  local sampler=$!
  wait "$push"
  t1=$(date +%s.%N)
  wait "$sampler" "$agent_sampler"
  sent=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["hosts"][0]; assert r["ok"], r; print(sum(v["bytes"] for v in r["sent"].values()))' "$work/report.json")
  printf 'large-file size=%sGiB step=%s wall=%.1f controller_rss_kb=%s agent_rss_kb=%s sent=%s\n' \
    "$size" "$step" "$(echo "$t1 - $t0" | bc)" "$(cat "$work/controller.kb")" "$(cat "$work/agent.kb")" "$sent"
}

for size in ${SIZES:-4 16}; do
  rm -rf "$work/store" "$work/v1" "$work/v2" "$work/host"
  for v in 1 2; do
    mkdir -p "$work/v$v/srv" "$work/v$v/etc" "$work/v$v/var/lib"
    echo "v$v" >"$work/v$v/etc/version"
    python3 - "$work/v$v/srv/disk.img" "$size" "$v" <<'PY'
import random, sys
path, size, v = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(7)
with open(path, 'wb') as f:
    f.truncate(size << 30)
    f.seek(5 << 20); f.write(random.randbytes(3 << 20))
    if v == 2:
        f.seek((size << 30) // 2); f.write(random.randbytes(1 << 20))
        f.seek(0, 2); f.write(b'grown')
PY
    /usr/bin/time -f %M -o "$work/import.kb" "$imager" import "$work/v$v" --name "large-v$v" -q >/dev/null
    printf 'large-file size=%sGiB step=import-v%s import_rss_kb=%s\n' "$size" "$v" "$(cat "$work/import.kb")"
    rm -rf "$work/v$v"
  done
  mkdir "$work/host"
  measured_push large-v1 "$work/host" first-install
  measured_push large-v2 "$work/host" delta-push
  echo "large-file size=${size}GiB host_allocated_kb=$(du -k "$work/host/srv/disk.img" | cut -f1)"
done
