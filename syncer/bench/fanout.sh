#!/usr/bin/env bash
# Fan-out of the corpus update A -> B to 1, 8 and 32 hosts, each host on a filesystem of
# its own (a loop-mounted ext4 image per host), so that hosts do not share one disk's
# allocator and flushes as rollout.sh's hosts do: syncer rollout (all hosts in parallel,
# warm delta cache: the deltas are computed once per image pair for a fleet) against as
# many `rsync -aHAXcz` in parallel, on the same kind of filesystems.
# Figures per run: wall time, CPU of the command and its children (agents, rsync
# servers), the controller's own CPU and that per host.
# Usage: fanout.sh [CORPUSDIR] [COUNTS]   (root; default /work/corpus, "1 8 32")
#   NO_BUILD=1 skips `cargo build --release`. Needs about 1 GiB of disk per host.
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
corpus=${1:-/work/corpus}
counts=${2:-1 8 32}
[ "$(id -u)" = 0 ] || { echo "fanout.sh: run as root (loop mounts)" >&2; exit 2; }
command -v rsync >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q rsync >/dev/null; }
[ -d "$corpus/A" ] || bash "$here/corpus.sh" "$corpus"
work=$(mktemp -d /var/tmp/fanout-bench.XXXXXX)
cleanup() {
  for m in "$work"/mnt/*; do mountpoint -q "$m" 2>/dev/null && umount "$m"; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[ "${NO_BUILD:-0}" = 1 ] || (cd "$repo" && cargo build --release --quiet)
syncer=$repo/target/release/syncer
imager=$repo/target/release/imager
export IMAGER_STORE=$work/store
. "$here/lib.sh"
import_corpus
mkdir -p "$work/mnt" "$work/img"

# hosts N: N fresh copies of A, each on its own ext4, mounted at mnt/h1..hN.
hosts() {
  local i
  for m in "$work"/mnt/*; do mountpoint -q "$m" 2>/dev/null && umount "$m"; done
  rm -rf "$work"/mnt/* "$work"/img/*
  for i in $(seq "$1"); do
    truncate -s 1G "$work/img/h$i.img"
    mkfs.ext4 -q -F "$work/img/h$i.img"
    mkdir -p "$work/mnt/h$i"
    mount -o loop "$work/img/h$i.img" "$work/mnt/h$i"
    cp -a "$work/A/." "$work/mnt/h$i/"
  done
  sync
}

inventory() { # N
  { printf '[policy]\ncanary = 0\nwaves = ["100%%"]\nparallel = %d\npause = "none"\n\n[[colo]]\nname = "bench"\nhosts = [' "$1"
    for i in $(seq "$1"); do printf '"local:%s/mnt/h%s", ' "$work" "$i"; done
    printf ']\n'; } > "$work/fleet.toml"
}

syncer_run() { # N
  local n=$1
  hosts "$n"; inventory "$n"; rm -f "$work/fleet.rollout.json"
  /usr/bin/time -f "%e %U %S" -o "$work/time" "$syncer" rollout B --inventory "$work/fleet.toml" --yes --json --no-store-copies > "$work/out.json"
  read -r wall user sys < "$work/time"
  python3 - "$work/out.json" "$n" "$wall" "$user" "$sys" <<'PY'
import json, sys
st = json.load(open(sys.argv[1])); n = int(sys.argv[2]); wall, user, sys_ = map(float, sys.argv[3:])
ok = sum(h["outcome"] == "ok" for h in st["hosts"])
c = st["controller_cpu_seconds"]
print(f"syncer-fanout-{n} hosts={n} ok={ok} wall_s={wall:.2f} cpu_s={user + sys_:.2f} "
      f"controller_cpu_s={c:.2f} controller_cpu_per_host_s={c / n:.3f}")
PY
}

rsync_run() { # N
  local n=$1 i rsh="$work/rsh"
  printf '#!/bin/sh\nshift\nexec "$@"\n' > "$rsh"; chmod +x "$rsh"
  hosts "$n"
  cat > "$work/rsync-all" <<EOF
#!/bin/sh
for i in \$(seq $n); do
  rsync -aHAXcz --compress-choice=zstd --numeric-ids --delete -e "$rsh" "$work/B/" "x:$work/mnt/h\$i/" >/dev/null &
done
wait
EOF
  chmod +x "$work/rsync-all"
  /usr/bin/time -f "%e %U %S" -o "$work/time" "$work/rsync-all"
  read -r wall user sys < "$work/time"
  echo "rsync-fanout-$n hosts=$n wall_s=$wall cpu_s=$(echo "$user + $sys" | bc)"
}

# Warm the delta cache once (a fleet computes the deltas for an image pair once).
hosts 1; inventory 1
"$syncer" rollout B --inventory "$work/fleet.toml" --yes --json --no-store-copies > /dev/null
for n in $counts; do
  syncer_run "$n"
  rsync_run "$n"
done
