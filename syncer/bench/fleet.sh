#!/usr/bin/env bash
# A rollout recorded in etcd (one local member), over N small `local:` hosts in 2 colos
# rolled in parallel, with C controllers (the first starts it, the others --join): per
# host, the etcd requests the controllers made (the member's own counters, from its
# /metrics: ranges, puts, deletes, txns, and the gateway's HTTP requests), the
# controllers' CPU, and the record's size (the bytes of its keys' values).
# Usage: fleet.sh [N...]   (default: 50 500; each with 1 and 3 controllers)
#   SYNCER=path/to/syncer IMAGER=path/to/imager: binaries to use (default: builds the
#   release ones).
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$(mktemp -d /tmp/fleet-bench.XXXXXX)
etcd_pid=
trap '[ -n "$etcd_pid" ] && kill -9 $etcd_pid 2>/dev/null; tail -5 "$work"/err.* 2>/dev/null; rm -rf "$work"' EXIT
if [ -z "${SYNCER:-}" ]; then
  (cd "$repo" && cargo build --release --quiet)
  SYNCER=$repo/target/release/syncer IMAGER=$repo/target/release/imager
fi
export IMAGER_STORE=$work/store
# Two tiny images: a config and 20 kB of content that differ.
for v in 1 2; do
  mkdir -p "$work/v$v/etc" "$work/v$v/srv"
  printf 'version %s\n' $v > "$work/v$v/etc/app.conf"
  head -c 20000 /dev/urandom > "$work/v$v/srv/payload"
  "$IMAGER" import "$work/v$v" --name v$v -q >/dev/null
done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
peer=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
etcd --name b --data-dir "$work/etcd" --listen-client-urls http://127.0.0.1:$port \
  --advertise-client-urls http://127.0.0.1:$port --listen-peer-urls http://127.0.0.1:$peer \
  --initial-advertise-peer-urls http://127.0.0.1:$peer --initial-cluster b=http://127.0.0.1:$peer \
  > "$work/etcd.log" 2>&1 &
etcd_pid=$!
until curl -sf http://127.0.0.1:$port/health >/dev/null; do sleep 0.2; done
metrics() { # the member's request counters, summed: ranges puts deletes txns http
  curl -s http://127.0.0.1:$port/metrics | awk '
    /^etcd_mvcc_range_total/ {r+=$2} /^etcd_mvcc_put_total/ {p+=$2}
    /^etcd_mvcc_delete_total/ {d+=$2} /^etcd_mvcc_txn_total/ {t+=$2}
    /^grpc_server_handled_total/ {g+=$2}
    END {printf "%d %d %d %d %d\n", r, p, d, t, g}'
}
run() { # N C
  local n=$1 c=$2 half=$(( $1 / 2 )) prefix=bench/n$1c$2 i
  rm -rf "$work"/h*
  { printf '[fleet]\nparallel_colos = 2\n[policy]\ncanary = 1\nwaves = ["100%%"]\nparallel = 4\npause = "none"\n'
    for colo in a b; do
      printf '[[colo]]\nname = "%s"\nhosts = [' $colo
      for i in $(seq $half); do mkdir -p "$work/h$colo$i"; printf '"local:%s/h%s%s", ' "$work" $colo $i; done
      printf ']\n'
    done; } > "$work/fleet.toml"
  "$SYNCER" push v1 $(for h in "$work"/h*; do printf 'local:%s ' "$h"; done) -j 8 >/dev/null
  local url=etcd://127.0.0.1:$port/$prefix before after
  before=$(metrics)
  /usr/bin/time -f "%e %U %S" -o "$work/time.1" "$SYNCER" rollout v2 --inventory "$work/fleet.toml" \
    --state "$url" --yes --json > "$work/out.json" 2>"$work/err.1" &
  local pids=$!
  until "$SYNCER" rollout --status --state "$url" --json 2>/dev/null | grep -q '"image"'; do sleep 0.05; done
  for i in $(seq 2 "$c"); do
    /usr/bin/time -f "%e %U %S" -o "$work/time.$i" "$SYNCER" rollout --join "$url" \
      --inventory "$work/fleet.toml" --yes --json > /dev/null 2>"$work/err.$i" &
    pids="$pids $!"
  done
  wait $pids
  after=$(metrics)
  local size
  size=$(ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:$port get --prefix "/$prefix/" -w json |
    python3 -c 'import json,sys,base64; print(sum(len(base64.b64decode(k.get("value",""))) for k in json.load(sys.stdin).get("kvs",[])))')
  python3 - "$n" "$c" "$before" "$after" "$size" "$work" <<'PY'
import sys, json, glob
n, c = int(sys.argv[1]), int(sys.argv[2])
b, a = [list(map(int, x.split())) for x in sys.argv[3:5]]
size, work = int(sys.argv[5]), sys.argv[6]
d = [y - x for x, y in zip(b, a)]
cpu = wall = 0.0
for f in glob.glob(f"{work}/time.*"):
    w, u, s = map(float, open(f).read().split()[-3:])
    cpu += u + s; wall = max(wall, w)
st = json.load(open(f"{work}/out.json"))
ok = sum(h["outcome"] == "ok" for h in st["hosts"])
by = len({h.get("controller") for h in st["hosts"]})
print(f"hosts={n} controllers={c} (pushing: {by}) ok={ok} wall_s={wall:.1f} controllers_cpu_s={cpu:.1f} "
      f"cpu_ms_per_host={cpu * 1000 / n:.0f} etcd_per_host: ranges={d[0]/n:.1f} puts={d[1]/n:.1f} "
      f"deletes={d[2]/n:.1f} txns={d[3]/n:.1f} requests={d[4]/n:.1f} record_bytes={size} "
      f"bytes_per_host={size // n}")
PY
  rm -f "$work"/time.*
}
for n in ${@:-50 500}; do
  for c in 1 3; do run "$n" "$c"; done
done
