#!/usr/bin/env bash
# Measures a first install: `syncer push` of an image onto an empty root, against copying
# the image's export with the tools people would use instead, in the same run:
#   local-cp           cp -a of the export (a directory on the same filesystem)
#   local-push         syncer push IMAGE local:EMPTY: the agent copies the image's files
#                      from the store itself (store copies, the default for local:
#                      hosts); then local-push-again: a second empty root
#   local-push-pipe    the same through the agent's pipe (--no-store-copies), default
#                      level (1 for local hosts), cold delta cache
#   ssh-rsync          rsync -a of the export over ssh (a private sshd on 127.0.0.1)
#   ssh-push-L3        syncer push over the same ssh at --level 3, cold cache
#   ssh-push-L19       ... at level 19 (the default for ssh hosts), cold cache
# Each figure is one line, `name key=value ...`, then a summary with the ratios.
# The image is B of the benchmark corpus (a Debian root of some 320 MB, 12,500 files),
# imported as push.sh imports it.
# Usage: first-install.sh [CORPUSDIR] [WORKDIR]  (default /work/corpus, a temporary dir;
#   put WORKDIR on a journaled filesystem, as push.sh explains). NO_BUILD=1 skips the
#   release build.
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
repo=$(cd "$here/../.." && pwd)
corpus=${1:-/work/corpus}
if [ -n "${2:-}" ]; then work=$2; own=0; else work=$(mktemp -d /tmp/first-install.XXXXXX); own=1; fi
mkdir -p "$work"; work=$(cd "$work" && pwd)
w="$work/first-install"
[ "$(id -u)" = 0 ] || { echo "first-install.sh: run as root (hosts are root filesystems)" >&2; exit 2; }
for t in rsync ssh /usr/sbin/sshd bc; do
  command -v "$t" >/dev/null || { apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q rsync openssh-client openssh-server bc >/dev/null; break; }
done
sshd_pid=
cleanup() {
  local rc=$?
  if [ -n "$sshd_pid" ]; then kill "$sshd_pid" 2>/dev/null || true; wait "$sshd_pid" 2>/dev/null || true; fi
  rm -rf "$w"
  [ "$own" = 1 ] && rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { printf '%.3f' "$(echo "$2 - $1" | bc)"; }
results="$work/first-install-results.txt"; : > "$results"
report() { echo "$*"; echo "$*" >> "$results"; }

if [ "${NO_BUILD:-0}" != 1 ]; then (cd "$repo" && cargo build --release -q); fi
imager="$repo/target/release/imager"; syncer="$repo/target/release/syncer"
[ -d "$corpus/B" ] || bash "$here/corpus.sh" "$corpus"
rm -rf "$w"; mkdir -p "$w"
export IMAGER_STORE="$w/store"
cp -a "$corpus/B" "$w/B"
"$imager" import "$w/B" --name B -q --exclude-from "$repo/exclude-lists/local-state.txt" >/dev/null
rm -rf "$w/B"
"$imager" export B --dir "$w/export" -q
report "image bytes=$(du -sb "$w/export" | cut -f1) files=$(find "$w/export" -type f | wc -l)"
sync

# timed NAME CMD...: runs CMD, reports its wall time (and a push's phases).
timed() {
  local name=$1; shift
  local t0 t1
  sync; t0=$(now)
  "$@" > "$w/$name.out" 2> "$w/$name.err" || { echo "first-install.sh: $name failed:" >&2; tail -5 "$w/$name.err" >&2; exit 1; }
  t1=$(now)
  local extra=""
  if grep -q '"hosts"' "$w/$name.out" 2>/dev/null; then
    extra=$(python3 - "$w/$name.out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); h = r["hosts"][0]; p = h["phases"]
assert h["ok"], h.get("error")
print("level=%s wire_bytes=%d scan_s=%.3f plan_s=%.3f stage_s=%.3f commit_s=%.3f" % (
    r.get("level", "-"), h["wire_sent"] + h["wire_received"], p["scan"], p["plan"], p["stage"], p["commit"]))
PY
)
  fi
  report "$name wall_s=$(secs "$t0" "$t1") $extra"
}

mkdir -p "$w/cache-local" "$w/cache-3" "$w/cache-19"
timed local-cp cp -a "$w/export" "$w/cp"
rm -rf "$w/cp"
mkdir "$w/h1" "$w/h2"
timed local-push "$syncer" push B "local:$w/h1" --json --cache "$w/cache-local"
timed local-push-again "$syncer" push B "local:$w/h2" --json --cache "$w/cache-local"
rm -rf "$w/h1" "$w/h2"
mkdir "$w/h1"
timed local-push-pipe "$syncer" push B "local:$w/h1" --json --cache "$w/cache-local" --no-store-copies
rm -rf "$w/h1"

start_sshd "$w/ssh"
mkdir "$w/r1" "$w/h3" "$w/h4"
timed ssh-rsync rsync -a --numeric-ids -e "$ssh_cmd" "$w/export/" "root@127.0.0.1:$w/r1/"
rm -rf "$w/r1"
timed ssh-push-L3 "$syncer" push B "ssh://root@127.0.0.1$w/h3" -e "$ssh_cmd" --agent "$syncer" --json --cache "$w/cache-3" --level 3
rm -rf "$w/h3"
timed ssh-push-L19 "$syncer" push B "ssh://root@127.0.0.1$w/h4" -e "$ssh_cmd" --agent "$syncer" --json --cache "$w/cache-19"
rm -rf "$w/h4"

echo
python3 - "$results" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    name, *kv = line.split()
    rows[name] = dict(x.split("=", 1) for x in kv if "=" in x)
g = lambda n, k: float(rows[n][k])
print("%-26s %8s %10s %s" % ("case", "wall s", "ratio", "against"))
for n, ref, goal in (("local-push", "local-cp", 2.0), ("local-push-again", "local-cp", 2.0),
                     ("local-push-pipe", "local-cp", 2.0),
                     ("ssh-push-L3", "ssh-rsync", 1.5), ("ssh-push-L19", "ssh-rsync", 1.5)):
    print("%-26s %8.2f %10.2f %s (%.2f s; goal <= %.1f)" % (n, g(n, "wall_s"), g(n, "wall_s") / g(ref, "wall_s"), ref, g(ref, "wall_s"), goal))
PY
