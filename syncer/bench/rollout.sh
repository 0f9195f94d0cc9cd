#!/usr/bin/env bash
# Rollout of the corpus update A -> B to 8 hosts (local: roots on this machine) against
# 8 parallel `rsync -aHAXcz` (as ../shared/bench/peers.sh runs them), in one run:
# wall time and total CPU (the command and all its children: agents, rsync servers),
# and the controller's own CPU per additional host (1-host against 8-host rollouts).
# Hosts start as unmanaged copies of A (as rsync's do), or managed: synced to A by syncer
# before, so the agent's hash cache is warm (the steady state of a fleet).
# Both trees get their mtimes clamped to one epoch first, as peers.sh does.
# Usage: rollout.sh [CORPUSDIR]     (root; builds the release binaries first)
#   ONLY_MANAGED=1 skips the unmanaged-host runs.
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
corpus=${1:-/work/corpus}
[ -d "$corpus/A" ] || bash "$here/corpus.sh" "$corpus"
work=$(mktemp -d /tmp/rollout-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
(cd "$repo" && cargo build --release --quiet)
syncer=$repo/target/release/syncer
imager=$repo/target/release/imager
export IMAGER_STORE=$work/store
. "$here/lib.sh"
import_corpus
hosts() { # N: fresh copies of A as h1..hN
  rm -rf "$work"/h*; for i in $(seq "$1"); do cp -a "$work/A" "$work/h$i"; done; sync
}
inventory() { # N
  { printf '[policy]\ncanary = 0\nwaves = ["100%%"]\nparallel = 8\npause = "none"\n\n[[colo]]\nname = "bench"\nhosts = ['
    for i in $(seq "$1"); do printf '"local:%s/h%s", ' "$work" "$i"; done
    printf ']\n'; } > "$work/fleet.toml"
}
measure() { # name N: prints wall, total CPU, controller CPU, bytes
  local name=$1 n=$2
  inventory "$n"; rm -f "$work/fleet.rollout.json"
  /usr/bin/time -f "%e %U %S" -o "$work/time" "$syncer" rollout B --inventory "$work/fleet.toml" --yes --json --no-store-copies > "$work/out.json"
  read -r wall user sys < "$work/time"
  python3 - "$work/out.json" "$name" "$wall" "$user" "$sys" <<'PY'
import json, sys
st = json.load(open(sys.argv[1])); name, wall, user, sys_ = sys.argv[2], *map(float, sys.argv[3:])
ok = sum(h["outcome"] == "ok" for h in st["hosts"])
sent = sum(h["wire_sent"] for h in st["hosts"])
print(f"{name} hosts={len(st['hosts'])} ok={ok} wall_s={wall:.2f} cpu_s={user + sys_:.2f} "
      f"controller_cpu_s={st['controller_cpu_seconds']:.2f} wire_sent_total={sent}")
PY
}
[ -n "${ONLY_MANAGED:-}" ] || rm -rf "$IMAGER_STORE/syncer-cache"
[ -n "${ONLY_MANAGED:-}" ] || { hosts 8; measure syncer-8hosts-cold 8; }
[ -n "${ONLY_MANAGED:-}" ] || { hosts 8; measure syncer-8hosts-warm 8; }
[ -n "${ONLY_MANAGED:-}" ] || { hosts 1; measure syncer-1host-warm 1; }
# The steady state of a fleet: hosts synced to A before (image recorded, hash cache warm).
managed() { # N
  hosts "$1"; inventory "$1"
  "$syncer" push A $(for i in $(seq "$1"); do printf 'local:%s/h%s ' "$work" "$i"; done) >/dev/null
}
# One untimed round first: it computes the A -> B manifest delta (once per image pair,
# then cached like the content deltas), and the content deltas if the runs above were
# skipped.
managed 1; inventory 1; "$syncer" rollout B --inventory "$work/fleet.toml" --yes >/dev/null 2>&1
managed 8; measure syncer-8hosts-managed 8
managed 1; measure syncer-1host-managed 1

# rsync, 8 hosts in parallel (as peers.sh), with its CPU.
rsh="$work/rsh"; printf '#!/bin/sh\nshift\nexec "$@"\n' > "$rsh"; chmod +x "$rsh"
hosts 8
/usr/bin/time -f "%e %U %S" -o "$work/time" bash -c '
  for i in 1 2 3 4 5 6 7 8; do
    rsync -aHAXcz --compress-choice=zstd --numeric-ids --delete -e "$1" "$2/B/" "x:$2/h$i/" >/dev/null &
  done; wait' _ "$rsh" "$work"
read -r wall user sys < "$work/time"
echo "rsync-cz-8hosts wall_s=$wall cpu_s=$(echo "$user + $sys" | bc)"
