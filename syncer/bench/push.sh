#!/usr/bin/env bash
# Measures `syncer push` on the corpus update A -> B, and runs the reference tools
# (peers.sh: rsync, OSTree static delta, casync) in the same run, so that the figures
# are side by side on the same machine and data.
#   syncer-pipe-cold    unmanaged host (a fresh copy of A), empty delta cache, over a pipe
#   syncer-pipe-warm    the same with the delta cache kept (the steady state in a fleet)
#   syncer-pipe-adopt   first push of A onto a fresh copy of A (records the image)
#   syncer-pipe-managed then B onto that managed host (the manifest travels as a delta)
#   syncer-ssh-warm     unmanaged, warm cache, over ssh to a private sshd on 127.0.0.1
#   rsync-ssh-cz        rsync -aHAXcz to a fresh copy of A over the same ssh
#   *-noop-*            pushing B onto a host that is already B (syncer and rsync)
#   syncer-level-N      cold cache at zstd level N: plan time and zstd delta bytes
# Each figure is one line, `name key=value ...` (as peers.sh prints), then a summary.
# Both trees get their mtimes clamped to one epoch first (the copies peers.sh makes and
# reuses), and those clamped copies are what is imported as images A and B.
# Usage: push.sh [CORPUSDIR] [WORKDIR]
#   CORPUSDIR  default /work/corpus; built with corpus.sh when missing
#   WORKDIR    default a temporary directory, removed at the end; a given WORKDIR keeps
#              what peers.sh leaves there (clamped A and B are reused by later runs) and
#              push-results.txt (every figure line); this script's own scratch is removed
#              Put it on the kind of filesystem hosts have (ext4 with a journal): on ext4
#              without one, every inode made right after a push freed many checks each
#              recently freed inode first, and staging pays most of the wall time for it.
# Environment: PEERS=path to peers.sh (default: next to this script, else
#   /work/shared/bench/peers.sh); NO_BUILD=1 to skip `cargo build --release`;
#   SSH_PORT=first port to try for the private sshd (default 2299); KEEP=1 keeps all;
#   LEVELS="3 9 19" the zstd levels of the cold-cache sweep (LEVELS= skips it).
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
repo=$(cd "$here/../.." && pwd)
corpus=${1:-/work/corpus}
if [ -n "${2:-}" ]; then work=$2; own_work=0; else work=$(mktemp -d /tmp/push-bench.XXXXXX); own_work=1; fi
mkdir -p "$work"; work=$(cd "$work" && pwd)
w="$work/syncer-bench"            # everything this script makes (peers.sh uses other names)
exclude="$repo/exclude-lists/local-state.txt"
peers=${PEERS:-}
[ -n "$peers" ] || { [ -f "$here/peers.sh" ] && peers="$here/peers.sh" || peers=/work/shared/bench/peers.sh; }
[ -f "$peers" ] || { echo "push.sh: peers.sh not found (set PEERS=)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "push.sh: run as root (hosts are root filesystems)" >&2; exit 2; }
# What the benchmark compares against and runs with, installed if missing (as peers.sh
# installs rsync, ostree and casync).
need=
for t in rsync:rsync python3:python3 bc:bc ssh:openssh-client ssh-keygen:openssh-client /usr/sbin/sshd:openssh-server; do
  command -v "${t%%:*}" >/dev/null || need="$need ${t##*:}"
done
if [ -n "$need" ]; then
  echo "push.sh: installing$need" >&2
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need >/dev/null
fi

sshd_pid=
cleanup() {
  local rc=$?
  if [ -n "$sshd_pid" ]; then kill "$sshd_pid" 2>/dev/null || true; wait "$sshd_pid" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" != 1 ]; then
    rm -rf "$w"
    [ "$own_work" = 1 ] && rm -rf "$work"
  else
    echo "push.sh: kept $work" >&2
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
secs() { printf '%.3f' "$(echo "$2 - $1" | bc)"; }   # secs T0 T1
results="$work/push-results.txt"; : > "$results"
failed=0
report() { echo "$*"; echo "$*" >> "$results"; }

# ---- binaries, corpus, clamped trees, images ------------------------------------------
if [ "${NO_BUILD:-0}" != 1 ]; then (cd "$repo" && cargo build --release -q); fi
imager="$repo/target/release/imager"; syncer="$repo/target/release/syncer"
[ -x "$imager" ] && [ -x "$syncer" ] || { echo "push.sh: no release binaries in $repo/target" >&2; exit 2; }
[ -d "$corpus/A" ] && [ -d "$corpus/B" ] || bash "$here/corpus.sh" "$corpus"
rm -rf "$w"; mkdir -p "$w"
for n in A B; do   # exactly as peers.sh does, so that it reuses these copies
  [ -d "$work/$n" ] || { cp -a "$corpus/$n" "$work/$n"; find "$work/$n" -newermt @1700000000 -exec touch -h -d @1700000000 {} +; }
done
store="$w/store"
t0=$(now)
import_tree() { "$imager" import "$work/$1" --name "$1" --store "$store" -q --exclude-from "$exclude" 2> "$w/import-$1.err" ||
           { echo "push.sh: imager import $1 failed:" >&2; cat "$w/import-$1.err" >&2; exit 1; }; }
idA=$(import_tree A)
t1=$(now)
idB=$(import_tree B)
t2=$(now)
report "imager-import-A wall_s=$(secs $t0 $t1) id=${idA:0:12}"
report "imager-import-B wall_s=$(secs $t1 $t2) id=${idB:0:12}"

# A fresh copy of a clamped tree, as an unmanaged host that syncer has never seen.
fresh() { rm -rf "$2"; cp -a "$work/$1" "$2"; sync; }

# push NAME IMAGE HOST [syncer options...]: times one push, prints its figures.
push() {
  local name=$1 image=$2 host=$3; shift 3
  local out="$w/$name.json" err="$w/$name.err" t0 t1 rc=0
  t0=$(now)
  # At level 19 unless the caller says (a push to `local:` hosts defaults to 1): the
  # level of a fleet's pushes and of `publish`, which the figures are about.
  local lv=(--level 19); case " $* " in *" --level "*) lv=();; esac
  # --no-store-copies: a local: host's new files through the pipe, as a fleet's hosts
  # get them (its agent would otherwise copy them from the store).
  "$syncer" push "$image" "$host" --store "$store" --json "${lv[@]}" --no-store-copies "$@" > "$out" 2> "$err" || rc=$?
  t1=$(now)
  local line
  line=$(python3 - "$out" "$(secs $t0 $t1)" "$rc" "$err" <<'PY'
import json, sys
out, wall, rc, err = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def oneline(s):
    return " ".join(s.split())[:300]
try:
    h = json.load(open(out))["hosts"][0]
except Exception:
    print("ok=false rc=%d wall_s=%.3f error=%s" % (rc, wall, json.dumps(oneline(open(err).read()))))
    sys.exit()
s, p = h["sent"], h["phases"]
fields = [
    ("ok", str(h["ok"]).lower()),
    ("wall_s", "%.3f" % wall),
    ("wire_bytes", h["wire_sent"] + h["wire_received"]),
    ("wire_sent", h["wire_sent"]),
    ("wire_received", h["wire_received"]),
    ("connect_s", "%.3f" % p["connect"]),
    ("scan_s", "%.3f" % p["scan"]),
    ("plan_s", "%.3f" % p["plan"]),
    ("stage_s", "%.3f" % p["stage"]),
    ("commit_s", "%.3f" % p["commit"]),
    ("total_s", "%.3f" % p["total"]),
    ("zstd_delta_bytes", s["zstd_delta"]["bytes"]),
    ("rsync_delta_bytes", s["rsync_delta"]["bytes"]),
    ("bsdiff_bytes", s["bsdiff"]["bytes"]),
    ("gzip_delta_bytes", s["gzip_delta"]["bytes"]),
    ("zucchini_bytes", s["zucchini"]["bytes"]),
    ("bitcode_delta_bytes", s["bitcode_delta"]["bytes"]),
    ("whole_bytes", s["whole"]["bytes"]),
    ("pack_files", h["packs"]["files"]),
    ("pack_bytes", h["packs"]["bytes"]),
    # Where the wire's bytes went (frames included).
    ("wire_manifest", h["wire"].get("Target", {}).get("sent", 0)),
    ("wire_answer", h["wire"].get("Differences", {}).get("received", 0)
        + h["wire"].get("Signatures", {}).get("received", 0)),
    ("wire_content", sum(h["wire"].get(m, {}).get("sent", 0) for m in ("Pack", "Put", "Data"))),
    ("changed", h.get("changed", 0) + h.get("added", 0) + h.get("deleted", 0) + h.get("metadata", 0)),
    ("hashed_files", (h.get("scan") or {}).get("hashed_files", "-")),
]
if rc != 0 or not h["ok"]:
    fields.append(("rc", rc))
    fields.append(("error", json.dumps(oneline(h.get("error") or open(err).read()))))
print(" ".join("%s=%s" % kv for kv in fields))
PY
)
  report "$name $line"
  case "$line" in ok=true*) ;; *) failed=1; echo "push.sh: $name failed, stderr:" >&2; tail -5 "$err" >&2 || true;; esac
}

# rsync_run NAME SRC DEST [rsync options...]: times one rsync, prints bytes and wall.
rsync_run() {
  local name=$1 src=$2 dest=$3; shift 3
  local t0 t1 rc=0
  t0=$(now)
  rsync "$@" --numeric-ids --delete --stats "$src" "$dest" > "$w/$name.stats" 2>&1 || rc=$?
  t1=$(now)
  local sent recv
  sent=$(awk -F: '/Total bytes sent/ {gsub(/[ ,]/,"",$2); print $2}' "$w/$name.stats")
  recv=$(awk -F: '/Total bytes received/ {gsub(/[ ,]/,"",$2); print $2}' "$w/$name.stats")
  if [ "$rc" = 0 ]; then
    report "$name ok=true wall_s=$(secs $t0 $t1) bytes_sent=$sent bytes_received=$recv wire_bytes=$((sent + recv))"
  else
    failed=1
    report "$name ok=false rc=$rc wall_s=$(secs $t0 $t1)"
    tail -5 "$w/$name.stats" >&2
  fi
}

rsh="$w/rsh"; printf '#!/bin/sh\nshift\nexec "$@"\n' > "$rsh"; chmod +x "$rsh"   # as peers.sh
# syncer does not create a --cache directory it is given (writes into a missing one fail
# silently and every push is cold), so make each one first.
cache="$w/cache"; mkdir -p "$cache"
cache_size() { report "syncer-cache-$1 files=$(find "$2" -type f | wc -l) bytes=$(du -sb "$2" | cut -f1)"; }

# ---- 1, 2: unmanaged host over a pipe, cold then warm delta cache ----------------------
fresh A "$w/h1"
push syncer-pipe-cold B "local:$w/h1" --cache "$cache"
cache_size L19 "$cache"
fresh A "$w/h2"
push syncer-pipe-warm B "local:$w/h2" --cache "$cache"
rm -rf "$w/h2"

# The plan for a fresh copy of A, path by path (warm cache): which way each changed file
# travels and what each candidate would have cost on its own, for the table by kind.
fresh A "$w/h2"
"$syncer" push B "local:$w/h2" --store "$store" --json --dry-run --level 19 --no-store-copies --cache "$cache" > "$work/push-plan.json"
rm -rf "$w/h2"

# ---- 3: managed host: adopt A, then push B ---------------------------------------------
# The first managed push also computes the manifest delta A -> B (once per image pair,
# some 0.6 s at level 19); the steady state of a fleet is every host after it, measured
# by pushing B again once the host is back at A.
fresh A "$w/h3"
push syncer-pipe-adopt A "local:$w/h3" --cache "$cache"
push syncer-pipe-managed-first B "local:$w/h3" --cache "$cache"
push syncer-pipe-managed-back A "local:$w/h3" --cache "$cache"     # and B -> A
push syncer-pipe-managed B "local:$w/h3" --cache "$cache"
rm -rf "$w/h3"

# ---- 4: over ssh to a private sshd on 127.0.0.1 -----------------------------------------
# The same at level 1, a `local:` host's default: no gzip-aware or Zucchini candidates
# (the wall time goals; the bytes goals are the level-19 pushes above).
fresh A "$w/h8"
push syncer-pipe-cold-L1 B "local:$w/h8" --cache "$cache" --level 1
fresh A "$w/h8"
push syncer-pipe-warm-L1 B "local:$w/h8" --cache "$cache" --level 1
rm -rf "$w/h8"
fresh A "$w/h8"
push syncer-pipe-adopt-L1 A "local:$w/h8" --cache "$cache" --level 1
push syncer-pipe-managed-first-L1 B "local:$w/h8" --cache "$cache" --level 1
push syncer-pipe-managed-back-L1 A "local:$w/h8" --cache "$cache" --level 1
push syncer-pipe-managed-L1 B "local:$w/h8" --cache "$cache" --level 1
rm -rf "$w/h8"

start_sshd "$w/ssh"
fresh A "$w/h4"
push syncer-ssh-warm B "ssh://root@127.0.0.1$w/h4" -e "$ssh_cmd" --agent "$syncer" --cache "$cache"
rm -rf "$w/h4"
fresh A "$w/r4"
rsync_run rsync-ssh-cz "$work/B/" "root@127.0.0.1:$w/r4/" -aHAXcz --compress-choice=zstd -e "$ssh_cmd"
rm -rf "$w/r4"
kill "$sshd_pid"; wait "$sshd_pid" 2>/dev/null || true; sshd_pid=

# ---- 5: no-op: the host is already B -----------------------------------------------------
push syncer-noop-managed B "local:$w/h1" --cache "$cache"        # h1 was pushed to B in 1
push syncer-noop-managed2 B "local:$w/h1" --cache "$cache"       # and again: steady state
rm -rf "$w/h1"
fresh B "$w/h5"
push syncer-noop-fresh B "local:$w/h5" --cache "$cache"          # never seen, no hash cache
rm -rf "$w/h5"
fresh B "$w/r5"
rsync_run rsync-c-noop "$work/B/" "x:$w/r5/" -aHAXc -e "$rsh"
rsync_run rsync-noop "$work/B/" "x:$w/r5/" -aHAX -e "$rsh"       # quick check (size+mtime)
rm -rf "$w/r5"

# ---- 5b: the agent's peak memory while it applies the update (warm cache) ---------------
# A local host's agent is `syncer serve --root DIR`, a child of the push: its VmHWM (peak
# resident set) is read from /proc until it exits.
fresh A "$w/h7"
"$syncer" push B "local:$w/h7" --store "$store" --json --level 19 --no-store-copies --cache "$cache" > "$w/rss.json" 2>&1 &
push_pid=$!
peak=0
while kill -0 "$push_pid" 2>/dev/null; do
  for pid in $(pgrep -f "serve --root $w/h7" || true); do
    kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$kb" ] && [ "$kb" -gt "$peak" ] && peak=$kb
  done
  sleep 0.01
done
wait "$push_pid" || failed=1
report "syncer-agent-rss peak_kb=$peak"
rm -rf "$w/h7"

# ---- 6: zstd level trade-off, cold cache each ---------------------------------------------
for level in ${LEVELS-3 9 19}; do
  fresh A "$w/h6"
  mkdir -p "$w/cache-$level"
  push "syncer-level-$level" B "local:$w/h6" --cache "$w/cache-$level" --level "$level"
  rm -rf "$w/h6" "$w/cache-$level"
done

# ---- 7: the reference tools, same machine, same clamped trees -----------------------------
bash "$peers" "$corpus" "$work" | while IFS= read -r line; do report "$line"; done
# OSTree's delta the other way (B -> A), from the repository peers.sh left: for the
# managed host's way back.
if [ -d "$work/repo" ]; then
  before=$(du -sb "$work/repo/deltas" | cut -f1)
  t0=$(now)
  ostree --repo="$work/repo" static-delta generate --from="$(ostree --repo="$work/repo" rev-parse img)" \
    --to="$(ostree --repo="$work/repo" rev-parse 'img^')" >/dev/null 2>&1
  t1=$(now)
  report "ostree-static-delta-back bytes=$(( $(du -sb "$work/repo/deltas" | cut -f1) - before )) generate_s=$(secs $t0 $t1)"
fi

# ---- summary ---------------------------------------------------------------------------------
echo
python3 - "$results" "$work/push-plan.json" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    name, *kv = line.split()
    rows[name] = dict(x.split("=", 1) for x in kv if "=" in x)
def mb(v):
    return "%.2f MB" % (int(v) / 1e6) if v not in (None, "") else "-"
def s(v):
    try:
        return "%.2f" % float(v)
    except (TypeError, ValueError):
        return v
def g(name, *keys):
    r = rows.get(name, {})
    for k in keys:
        if k in r:
            return r[k]
    return None
table = [
    ("case", "wall s", "bytes", "what"),
    ("syncer pipe, cold cache", g("syncer-pipe-cold", "wall_s"), mb(g("syncer-pipe-cold", "wire_bytes")), "wire sent+received; plan %s s" % g("syncer-pipe-cold", "plan_s")),
    ("syncer pipe, warm cache", g("syncer-pipe-warm", "wall_s"), mb(g("syncer-pipe-warm", "wire_bytes")), "wire sent+received; plan %s s" % g("syncer-pipe-warm", "plan_s")),
    ("syncer pipe, managed host", g("syncer-pipe-managed", "wall_s"), mb(g("syncer-pipe-managed", "wire_bytes")), "wire sent+received, warm cache"),
    ("syncer pipe, managed, level 1", g("syncer-pipe-managed-L1", "wall_s"), mb(g("syncer-pipe-managed-L1", "wire_bytes")), "a local: host's default level, warm cache"),
    ("syncer pipe, warm cache, level 1", g("syncer-pipe-warm-L1", "wall_s"), mb(g("syncer-pipe-warm-L1", "wire_bytes")), "never synced, warm cache"),
    ("rsync -cz pipe (peers)", g("rsync-cz", "wall_s"), mb(g("rsync-cz", "bytes_sent")), "bytes sent only"),
    ("rsync -cz pipe, 8 hosts", g("rsync-cz-8hosts", "wall_s"), "-", "parallel"),
    ("syncer ssh, warm cache", g("syncer-ssh-warm", "wall_s"), mb(g("syncer-ssh-warm", "wire_bytes")), "wire sent+received"),
    ("rsync -cz ssh", g("rsync-ssh-cz", "wall_s"), mb(g("rsync-ssh-cz", "wire_bytes")), "sent+received"),
    ("syncer no-op, managed", g("syncer-noop-managed", "wall_s"), mb(g("syncer-noop-managed", "wire_bytes")), "first one after the update"),
    ("syncer no-op, managed again", g("syncer-noop-managed2", "wall_s"), mb(g("syncer-noop-managed2", "wire_bytes")), "steady state, hash cache warm"),
    ("syncer no-op, fresh B copy", g("syncer-noop-fresh", "wall_s"), mb(g("syncer-noop-fresh", "wire_bytes")), "hashes every file"),
    ("rsync -c no-op", g("rsync-c-noop", "wall_s"), mb(g("rsync-c-noop", "wire_bytes")), "checksums every file"),
    ("rsync no-op (quick check)", g("rsync-noop", "wall_s"), mb(g("rsync-noop", "wire_bytes")), "size+mtime"),
]
for l in (3, 9, 19):
    n = "syncer-level-%d" % l
    if n not in rows:
        continue
    table.append(("syncer level %d, cold" % l, g(n, "wall_s"), mb(g(n, "wire_bytes")), "wire; bsdiff %s, zstd delta %s, whole %s; plan %s s" % (mb(g(n, "bsdiff_bytes")), mb(g(n, "zstd_delta_bytes")), mb(g(n, "whole_bytes")), g(n, "plan_s"))))
table += [
    ("syncer pipe, managed, B -> A", g("syncer-pipe-managed-back", "wall_s"), mb(g("syncer-pipe-managed-back", "wire_bytes")), "cold cache for this direction; plan %s s" % g("syncer-pipe-managed-back", "plan_s")),
    ("ostree static delta", g("ostree-static-delta", "generate_s"), mb(g("ostree-static-delta", "bytes")), "generation time"),
    ("ostree static delta B -> A", g("ostree-static-delta-back", "generate_s"), mb(g("ostree-static-delta-back", "bytes")), "generation time"),
    ("casync new chunks", None, mb(g("casync", "new_chunk_bytes")), ""),
]
cells = [table[0]] + [(r[0], s(r[1]), r[2], r[3]) for r in table[1:]]
cells = [[str(x) if x is not None else "-" for x in r] for r in cells]
w = [max(len(r[i]) for r in cells) for i in range(4)]
for i, c in enumerate(cells):
    print("  ".join([c[0].ljust(w[0]), c[1].rjust(w[1]), c[2].rjust(w[2]), c[3]]).rstrip())
    if i == 0:
        print("  ".join("-" * x for x in w))

# The goals against OSTree's static deltas, same run.
def ratio(a, b):
    try:
        return "%.3f" % (int(a) / int(b))
    except (TypeError, ValueError, ZeroDivisionError):
        return "-"
o, ob = g("ostree-static-delta", "bytes"), g("ostree-static-delta-back", "bytes")
print()
print("goal                                   syncer / ostree   target")
print("managed host A -> B, wire               %-17s <= 0.35" % ratio(g("syncer-pipe-managed", "wire_bytes"), o))
print("managed host B -> A, wire               %-17s <= 0.35" % ratio(g("syncer-pipe-managed-back", "wire_bytes"), ob))
print("host never synced A -> B, wire          %-17s <= 0.40" % ratio(g("syncer-pipe-warm", "wire_bytes"), o))
print("cold delta computation, s               %s / %s" % (g("syncer-pipe-cold", "plan_s"), s(g("ostree-static-delta", "generate_s"))))
print("agent peak RSS applying A -> B, MB       %-17s <= 256" % ("%.0f" % (int(g("syncer-agent-rss", "peak_kb") or 0) / 1024)))
def fratio(a, b):
    try:
        return "%.2f" % (float(a) / float(b))
    except (TypeError, ValueError, ZeroDivisionError):
        return "-"
print()
print("goal (wall, warm cache)                 syncer / rsync    target")
print("managed host, pipe                      %-17s <= 0.5" % fratio(g("syncer-pipe-managed", "wall_s"), g("rsync-cz", "wall_s")))
print("managed host, pipe, level 1            %-17s <= 0.5" % fratio(g("syncer-pipe-managed-L1", "wall_s"), g("rsync-cz", "wall_s")))
print("unmanaged host, pipe                    %-17s <= 0.5" % fratio(g("syncer-pipe-warm", "wall_s"), g("rsync-cz", "wall_s")))
print("unmanaged host, pipe, level 1           %-17s <= 0.5" % fratio(g("syncer-pipe-warm-L1", "wall_s"), g("rsync-cz", "wall_s")))
print("unmanaged host, ssh                     %-17s <= 0.5" % fratio(g("syncer-ssh-warm", "wall_s"), g("rsync-ssh-cz", "wall_s")))
print()
print("%-28s %8s %8s %8s %8s %8s" % ("phases (s)", "connect", "scan", "plan", "stage", "commit"))
for n in ("syncer-pipe-warm", "syncer-pipe-managed", "syncer-pipe-warm-L1", "syncer-pipe-managed-L1", "syncer-ssh-warm", "syncer-noop-managed2"):
    r = rows.get(n, {})
    if "wall_s" in r:
        print("%-28s %8s %8s %8s %8s %8s" % (n, *(r.get(k + "_s", "-") for k in ("connect", "scan", "plan", "stage", "commit"))))

# Where the bytes go.
print()
print("%-28s %10s %10s %10s %10s" % ("wire parts", "manifest", "answer", "content", "other"))
for n in ("syncer-pipe-cold", "syncer-pipe-managed", "syncer-pipe-managed-back", "syncer-noop-managed"):
    r = rows.get(n, {})
    if "wire_bytes" not in r:
        continue
    parts = [int(r.get(k, 0)) for k in ("wire_manifest", "wire_answer", "wire_content")]
    print("%-28s %10d %10d %10d %10d" % (n, *parts, int(r["wire_bytes"]) - sum(parts)))

# Which way won, by kind of file (the plan for a fresh copy of A; candidates each
# compressed on their own; a packed file's bytes are its share of its pack).
try:
    plan = json.load(open(sys.argv[2]))["hosts"][0]["paths"]
except Exception:
    plan = []
kinds = {}
ways = ("bsdiff", "gzip", "zucchini", "bitcode", "zstd_delta", "whole")
for p in plan:
    c = p.get("candidates")
    if c is None:
        continue
    k = kinds.setdefault(p.get("class", "?"), {"files": 0, "won": {}, "before": 0, "after": 0, **{x: [0, 0] for x in ways}})
    k["files"] += 1
    for x in ways:
        if x in c:
            k[x][0] += 1
            k[x][1] += c[x]
    # The best candidate on its own, without and with the content-aware ones.
    k["before"] += min(c[x] for x in ("bsdiff", "zstd_delta", "whole") if x in c)
    k["after"] += min(c[x] for x in ways if x in c)
    way = p.get("via", "?") + (" (packed)" if p.get("packed") else "")
    k["won"][way] = k["won"].get(way, 0) + 1
if kinds:
    # Each candidate summed over the files it was computed for (files, bytes): bsdiff for
    # old versions up to 64 MiB, patch-from up to 1 MiB, whole only where the deltas
    # were not clearly small.
    print()
    print("%-15s %6s %16s %16s %16s %16s %16s %16s %10s %10s  %s" % ("kind", "files", "bsdiff", "gzip", "zucchini", "bitcode", "zstd delta", "whole", "best was", "best now", "sent as"))
    cell = lambda v: "%d: %s" % (v[0], mb(v[1])) if v[0] else "-"
    for name, k in sorted(kinds.items(), key=lambda kv: -kv[1]["bsdiff"][1]):
        won = ", ".join("%s %d" % kv for kv in sorted(k["won"].items(), key=lambda kv: -kv[1]))
        print("%-15s %6d %16s %16s %16s %16s %16s %16s %10s %10s  %s" % (name, k["files"], *(cell(k[x]) for x in ways), mb(k["before"]), mb(k["after"]), won))
PY
[ "$failed" = 0 ] || { echo "push.sh: some runs failed (ok=false above)" >&2; exit 1; }
