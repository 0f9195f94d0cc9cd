#!/usr/bin/env bash
# Import benchmark, with the reference tools measured in the same run on the same data.
#   imager import --normalize (cold store, then warm: objects already stored),
#   imager hash --normalize (no store), imager export (tar.zst);
#   ostree commit of the same tree (archive-z2 as in ../shared/bench/peers.sh, and bare-user);
#   the corpus's .gz files: strip-nondeterminism vs imager normalize, on copies whose
#   headers were first stamped with a build time and a file name (as `gzip` without -n
#   leaves them), so that both tools have every header to rewrite.
# Usage: imager/bench/import.sh CORPUS_B_DIR [WORKDIR]   (root; builds imager --release)
set -euo pipefail
src=${1:?usage: import.sh CORPUS_B_DIR [WORKDIR]}
work=${2:-$(mktemp -d)}
here=$(cd "$(dirname "$0")/../.." && pwd)
for t in ostree strip-nondeterminism; do command -v $t >/dev/null || need="${need:-} $t"; done
[ -z "${need:-}" ] || { apt-get update -q >/dev/null && apt-get install -y -q $need >/dev/null; }
(cd "$here" && cargo build --release -q -p imager-cli)
imager="$here/target/release/imager"
epoch=1700000000
mkdir -p "$work"
now() { date +%s.%N; }
# best of N wall-clock runs of a command (after one untimed warm-up if asked)
best() { local n=$1; shift; local b=""; for _ in $(seq "$n"); do
  local t0; t0=$(now); "$@" >/dev/null 2>&1; local d; d=$(echo "$(now) - $t0" | bc)
  if [ -z "$b" ] || [ "$(echo "$d < $b" | bc)" = 1 ]; then b=$d; fi; done; printf '%.2f' "$b"; }

size=$(du -sb "$src" | cut -f1); entries=$(find "$src" | wc -l)
echo "tree: $src, $size bytes, $entries entries; $(nproc) cores"
cat "$src/." >/dev/null 2>&1 || true; find "$src" -type f -print0 | xargs -0 cat >/dev/null  # page cache warm for everyone

rm -rf "$work/store"
t0=$(now); "$imager" --store "$work/store" -q import "$src" --normalize --epoch $epoch --name b >/dev/null 2>&1; t1=$(now)
echo "imager-import-cold wall_s=$(printf '%.2f' "$(echo "$t1 - $t0" | bc)")"
echo "imager-import-warm wall_s=$(best 3 "$imager" --store "$work/store" -q import "$src" --normalize --epoch $epoch --name b)"
echo "imager-hash        wall_s=$(best 3 "$imager" -q hash "$src" --normalize --epoch $epoch)"
echo "imager-export-tarzst wall_s=$(best 1 "$imager" --store "$work/store" -q export b --tar "$work/b.tar.zst") bytes=$(stat -c %s "$work/b.tar.zst")"

printf '/dev\n' > "$work/skip"
for mode in archive-z2 bare-user; do
  rm -rf "$work/repo"; ostree --repo="$work/repo" init --mode=$mode
  t0=$(now); ostree --repo="$work/repo" commit -b img -s B --tree=dir="$src" --no-xattrs --skip-list="$work/skip" >/dev/null; t1=$(now)
  echo "ostree-commit-$mode wall_s=$(printf '%.2f' "$(echo "$t1 - $t0" | bc)")"
done
rm -rf "$work/repo"

# The .gz set, stamped like a build without -n: MTIME = now, FNAME = the file's name.
rm -rf "$work/gz"; mkdir -p "$work/gz"
(cd "$src" && find . -name '*.gz' -type f -print0 | cpio -0 -pdm --quiet "$work/gz")
python3 - "$work/gz" <<'PY'
import os, struct, sys, time
for d, _, fs in os.walk(sys.argv[1]):
    for f in fs:
        p = os.path.join(d, f)
        data = open(p, 'rb').read()
        if data[:3] != b'\x1f\x8b\x08' or data[3] & 0x1e:
            continue  # only plain members: add a name and a time to them
        name = f[:-3].encode() + b'\0'
        hdr = data[:3] + bytes([data[3] | 0x08]) + struct.pack('<I', int(time.time())) + data[8:10] + name
        open(p, 'wb').write(hdr + data[10:])
PY
ngz=$(find "$work/gz" -type f | wc -l); gzbytes=$(du -sb "$work/gz" | cut -f1)
rm -rf "$work/gz1" "$work/gz2"; cp -a "$work/gz" "$work/gz1"; cp -a "$work/gz" "$work/gz2"
t0=$(now); find "$work/gz1" -type f -print0 | xargs -0 -P"$(nproc)" -n 200 strip-nondeterminism -t gzip -T $epoch; t1=$(now)
echo "strip-nondeterminism-gz files=$ngz bytes=$gzbytes wall_s=$(printf '%.2f' "$(echo "$t1 - $t0" | bc)")"
t0=$(now); "$imager" -q normalize "$work/gz2" --epoch $epoch --no-pyc >/dev/null; t1=$(now)
echo "imager-normalize-gz files=$ngz bytes=$gzbytes wall_s=$(printf '%.2f' "$(echo "$t1 - $t0" | bc)")"
# Both tools should agree on the decompressed bytes; imager must have left no header stamped.
python3 - "$work/gz2" <<'PY'
import os, sys
bad = [os.path.join(d, f) for d, _, fs in os.walk(sys.argv[1]) for f in fs
       if (lambda b: b[:3] == b'\x1f\x8b\x08' and (b[4:8] != b'\0\0\0\0' or b[3] & 0x08))(open(os.path.join(d, f), 'rb').read(10))]
print("imager-normalize-gz stamped_headers_left=%d" % len(bad))
PY
rm -rf "$work/gz" "$work/gz1" "$work/gz2" "$work/b.tar.zst"
