#!/usr/bin/env bash
# A live push, measured: the update pair base-point -> base (manifests/: the point release,
# then with -updates and -security) pushed over ssh onto a running machine (systemd-nspawn,
# systemd as PID 1, its own network on a veth link) while a client requests from its nginx
# without pause. Prints one figure line:
#   live-push wall=S requests=N failed=N restarts=N triggers=N stale_units=N changed=N wire_sent=B
# wall: the push's wall time (connect, scan, send, commit, triggers); requests/failed: HTTP
# requests answered/failed while it ran; restarts: running services whose main process
# changed; stale_units: units still running replaced files after the triggers.
# Usage: live.sh [WORKDIR]   (default a temporary directory, removed at the end)
# Environment: STORE=an imager store that already holds base-point and base (skips the
#   two builds); NO_BUILD=1 to skip `cargo build --release`; KEEP=1 keeps WORKDIR.
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "live.sh: run as root" >&2; exit 2; }
for t in systemd-nspawn nsenter ip ssh ssh-keygen python3 mmdebstrap; do
  command -v "$t" >/dev/null || { echo "live.sh: $t is missing (see the README's set-up)" >&2; exit 2; }
done
given=${1:-}
if [ -n "$given" ]; then work=$given; mkdir -p "$work"; else work=$(mktemp -d /var/tmp/live-bench.XXXXXX); fi
work=$(cd "$work" && pwd)
name=livebench
cleanup() {
  [ -n "${load_pid:-}" ] && kill "$load_pid" 2>/dev/null || true
  [ -n "${nspawn_pid:-}" ] && { kill -TERM "$nspawn_pid" 2>/dev/null; wait "$nspawn_pid" 2>/dev/null || true; }
  [ -n "${KEEP:-}" ] || [ -n "$given" ] || rm -rf "$work"
}
trap cleanup EXIT
[ -n "${NO_BUILD:-}" ] || (cd "$repo" && cargo build --release --locked -q -p imager-cli -p syncer)
imager="$repo/target/release/imager"; syncer="$repo/target/release/syncer"
store=${STORE:-$work/store}
if [ -z "${STORE:-}" ]; then
  cp -a "$repo/manifests" "$work/manifests"; rm -f "$work"/manifests/*.lock
  for m in base-point base; do
    "$imager" --store "$store" -q build "$work/manifests/$m.toml" --update-lock >/dev/null
  done
fi

root="$work/$name"; rm -rf "$root"; mkdir "$root"
# A first install of the point release (chrooted triggers that need systemd fail: fine).
IMAGER_STORE=$store "$syncer" push base-point "local:$root" >/dev/null || true
ssh-keygen -q -t ed25519 -N '' -f "$work/id" <<<y >/dev/null 2>&1 || true
install -d -m 700 "$root/root/.ssh"; install -m 600 "$work/id.pub" "$root/root/.ssh/authorized_keys"
systemd-nspawn --boot --quiet --register=no --keep-unit --network-veth --machine=$name -D "$root" \
  >"$work/console.log" 2>&1 &
nspawn_pid=$!
leader=""
until [ -n "$leader" ]; do
  sleep 0.2
  for p in $(pgrep -P "$nspawn_pid") $(pgrep -P "$(pgrep -P "$nspawn_pid" | head -1)" 2>/dev/null); do
    [ "$(cat /proc/$p/comm 2>/dev/null)" = systemd ] && leader=$p
  done
done
until ip link show "ve-$name" >/dev/null 2>&1; do sleep 0.1; done
ip addr replace 10.231.250.1/24 dev "ve-$name"; ip link set "ve-$name" up
nsenter -t "$leader" --net ip addr replace 10.231.250.2/24 dev host0
nsenter -t "$leader" --net ip link set host0 up
in_machine() { nsenter -t "$leader" --all -- /bin/sh -c "$1"; }
until in_machine 'test -S /run/systemd/private' 2>/dev/null; do sleep 0.2; done
state=$(in_machine 'systemctl is-system-running --wait' || true)
[ "$state" = running ] || { echo "live.sh: the machine booted $state" >&2; in_machine 'systemctl --failed' >&2; exit 1; }
services() {
  in_machine 'for u in $(systemctl list-units --type=service --state=running --no-legend --plain | cut -d" " -f1); do echo "$u $(systemctl show -p MainPID --value $u)"; done' | sort
}
services >"$work/before"

# The client: GET / one after another, counting answers and failures, until signalled.
python3 - >"$work/load" <<'EOF' &
import http.client, signal, sys
ok = failed = 0
stop = False
def end(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, end)
while not stop:
    try:
        c = http.client.HTTPConnection("10.231.250.2", 80, timeout=60)
        c.request("GET", "/")
        r = c.getresponse(); r.read()
        ok, failed = (ok + 1, failed) if r.status == 200 else (ok, failed + 1)
    except Exception:
        failed += 1
print(ok, failed)
EOF
load_pid=$!
rsh="ssh -i $work/id -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
t0=$(date +%s.%N)
IMAGER_STORE=$store "$syncer" push base ssh://root@10.231.250.2/ -e "$rsh" --install-agent --json \
  >"$work/report.json" || true
t1=$(date +%s.%N)
kill -TERM "$load_pid"; wait "$load_pid" || true; load_pid=""
services >"$work/after"
read -r ok failed <"$work/load"
restarts=$(join "$work/before" "$work/after" | awk '$2 != $3' | wc -l)
python3 - "$work/report.json" "$ok" "$failed" "$restarts" "$t0" "$t1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["hosts"][0]
wall = float(sys.argv[6]) - float(sys.argv[5])
changed = r.get("added", 0) + r.get("changed", 0) + r.get("deleted", 0) + r.get("metadata", 0)
failed_triggers = sum(1 for t in r.get("triggers", []) if t.get("status") != 0)
print(f"live-push wall={wall:.2f} requests={sys.argv[2]} failed={sys.argv[3]} restarts={sys.argv[4]} "
      f"triggers={len(r.get('triggers', []))} triggers_failed={failed_triggers} "
      f"stale_units={len(r.get('stale', []))} changed={changed} wire_sent={r.get('wire_sent', 0)} "
      f"committed={str(r.get('committed')).lower()} outcome={r.get('outcome', '').replace(' ', '_')}")
for u in r.get("stale", []):
    print(f"  still running replaced files: {u['unit']}: {' '.join(u['files'][:3])}")
EOF
