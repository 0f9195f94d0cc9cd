#!/usr/bin/env bash
# The corpus update A -> B rolled out to 1, 8 and 32 hosts (fresh copies of A, one colo,
# all hosts at once), content over ssh (the controller's stream) against content through
# a colo cache: `syncer publish B --from A` into an origin served by nginx
# (syncer/nginx/origin.conf) behind a caching nginx (syncer/nginx/colo-cache.conf), cold
# for each run. Figures per run: wall time, file-content bytes out of the controller
# (its Data frames), bytes out of the origin and out of the cache (their access logs),
# the cache's hits, the controller's CPU and peak memory.
# Usage: mirrors.sh [CORPUSDIR] [COUNTS]   (root; default /work/corpus, "1 8 32")
#   NO_BUILD=1 skips `cargo build --release`. Needs about 330 MB of disk per host.
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
corpus=${1:-/work/corpus}
counts=${2:-1 8 32}
[ "$(id -u)" = 0 ] || { echo "mirrors.sh: run as root" >&2; exit 2; }
command -v nginx >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q nginx-light >/dev/null; }
[ -d "$corpus/A" ] || bash "$here/corpus.sh" "$corpus"
work=$(mktemp -d /var/tmp/mirrors-bench.XXXXXX)
stop_nginx() { # DIR
  [ -f "$1/nginx.pid" ] && kill -TERM "$(cat "$1/nginx.pid")" 2>/dev/null || true
  while [ -f "$1/nginx.pid" ] && kill -0 "$(cat "$1/nginx.pid" 2>/dev/null)" 2>/dev/null; do sleep 0.1; done
}
cleanup() { stop_nginx "$work/origin"; stop_nginx "$work/cache"; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
[ "${NO_BUILD:-0}" = 1 ] || (cd "$repo" && cargo build --release --quiet)
syncer=$repo/target/release/syncer
imager=$repo/target/release/imager
export IMAGER_STORE=$work/store
. "$here/lib.sh"
import_corpus
/usr/bin/time -f "%e" -o "$work/time" "$syncer" publish B --from A --to "$work/pub" --json > "$work/publish.json"
python3 - "$work/publish.json" "$(cat "$work/time")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for p in r["pairs"]:
    print(f"publish {(p['from'] or 'none')[:12]}->{p['to'][:12]}: {p['blobs']} files, {p['bytes']/1e6:.2f} MB, "
          f"{p['not_published']} not publishable")
print(f"publish wall_s={float(sys.argv[2]):.2f}")
PY

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_nginx() { # DIR SHIPPED PORT SED...
  local d=$1 conf=$2 port=$3; shift 3
  mkdir -p "$d/tmp"
  sed "$@" -e "s/listen [0-9]*;/listen 127.0.0.1:$port;/" "$repo/syncer/nginx/$conf" > "$d/site.conf"
  cat > "$d/nginx.conf" <<EOF
master_process on; worker_processes 2; pid $d/nginx.pid; user root; error_log $d/error.log;
events { worker_connections 1024; }
http {
  client_body_temp_path $d/tmp/body; proxy_temp_path $d/tmp/proxy; fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi; scgi_temp_path $d/tmp/scgi;
  log_format t '\$request_method \$uri \$http_range \$status \$body_bytes_sent \$upstream_cache_status';
  access_log $d/access.log t;
  include $d/site.conf;
}
EOF
  nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log"
  until (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; do sleep 0.1; done
}
oport=$(free_port)
start_nginx "$work/origin" origin.conf "$oport" -e "s|/srv/syncer-pub|$work/pub|"

hosts() { # N
  rm -rf "$work/hosts"; mkdir -p "$work/hosts"
  for i in $(seq "$1"); do cp -a "$work/A" "$work/hosts/h$i"; done
  sync
}

run() { # N MODE(ssh|mirrors)
  local n=$1 mode=$2 mirrors="" cport
  hosts "$n"
  : > "$work/origin/access.log"
  if [ "$mode" = mirrors ]; then
    stop_nginx "$work/cache"; rm -rf "$work/cache"
    cport=$(free_port)
    start_nginx "$work/cache" colo-cache.conf "$cport" \
      -e "s|/var/cache/nginx/syncer|$work/cache/store|" -e "s|origin.example.net:80|127.0.0.1:$oport|"
    mirrors="mirrors = [\"http://127.0.0.1:$cport/\", \"http://127.0.0.1:$oport/\"]"
  fi
  { printf '[policy]\ncanary = 0\nwaves = ["100%%"]\nparallel = %d\npause = "none"\n\n[[colo]]\nname = "bench"\n%s\nhosts = [' "$n" "$mirrors"
    for i in $(seq "$n"); do printf '"local:%s/hosts/h%s", ' "$work" "$i"; done
    printf ']\n'; } > "$work/fleet.toml"
  rm -f "$work/fleet.rollout.json"
  # The controller's peak memory: its VmHWM (a high-water mark) read until it exits.
  local start pid hwm=0 v cachelog=/nonexistent
  [ "$mode" = mirrors ] && cachelog=$work/cache/access.log
  start=$(date +%s.%N)
  "$syncer" rollout B --inventory "$work/fleet.toml" --yes --json > "$work/out.json" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    v=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$v" ] && hwm=$v
    sleep 0.05
  done
  wait "$pid"
  python3 - "$work/out.json" "$n" "$mode" "$(echo "$(date +%s.%N) - $start" | bc)" "$work/origin/access.log" "$cachelog" "$hwm" <<'PY'
import json, os, sys
st = json.load(open(sys.argv[1])); n = int(sys.argv[2]); mode = sys.argv[3]; wall = float(sys.argv[4])
hwm_mb = int(sys.argv[7]) / 1024
def served(log):
    if not os.path.exists(log):
        return 0, 0
    b = h = 0
    for l in open(log):
        f = l.split()
        b += int(f[4]); h += f[-1] == "HIT"
    return b, h
origin, _ = served(sys.argv[5]); cache, hits = served(sys.argv[6])
ok = sum(h["outcome"] == "ok" for h in st["hosts"])
ctl = sum(h["content"]["controller_bytes"] for h in st["hosts"])
print(f"{mode}-{n} hosts={n} ok={ok} wall_s={wall:.2f} controller_content_MB={ctl/1e6:.2f} "
      f"origin_MB={origin/1e6:.2f} cache_MB={cache/1e6:.2f} cache_hits={hits} "
      f"controller_cpu_s={st['controller_cpu_seconds']:.2f} controller_peak_MB={hwm_mb:.0f}")
PY
}

for n in $counts; do
  run "$n" ssh
  run "$n" mirrors
done
