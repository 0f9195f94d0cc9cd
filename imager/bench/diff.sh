#!/usr/bin/env bash
# `imager diff` of the corpus pair A -> B against diffoscope on the same two trees, in
# one run. diffoscope reads and compares every file's content; imager compares the two
# manifests and reads content only for dpkg's files, changelogs and small text diffs.
# Usage: diff.sh [CORPUSDIR] [DIFFOSCOPE_TIMEOUT_S]   (root; builds the release binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
corpus=${1:-/work/corpus}
limit=${2:-300}
command -v diffoscope >/dev/null || { apt-get update -q && apt-get install -y -q diffoscope-minimal; }
work=$(mktemp -d /tmp/diff-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
(cd "$repo" && cargo build --release --quiet -p imager-cli)
imager=$repo/target/release/imager
export IMAGER_STORE=$work/store
for n in A B; do "$imager" import "$corpus/$n" --name $n -q >/dev/null; done
now() { date +%s.%N; }
for run in 1 2 3; do
  t0=$(now); "$imager" diff A B > "$work/report.txt"; t1=$(now)
  echo "imager-diff run=$run wall_s=$(echo "$t1 - $t0" | bc) report_lines=$(wc -l < "$work/report.txt")"
done
t0=$(now); "$imager" diff A B --json > "$work/report.json"; t1=$(now)
echo "imager-diff-json wall_s=$(echo "$t1 - $t0" | bc) bytes=$(wc -c < "$work/report.json")"
t0=$(now)
set +e; timeout "$limit" diffoscope --no-progress --text "$work/diffoscope.txt" "$corpus/A" "$corpus/B" >/dev/null 2>&1; rc=$?; set -e
t1=$(now)
if [ $rc -eq 124 ]; then
  echo "diffoscope wall_s>$limit (stopped by timeout)"
else
  echo "diffoscope wall_s=$(echo "$t1 - $t0" | bc) exit=$rc report_lines=$(wc -l < "$work/diffoscope.txt")"
fi
