# Sourced by the bench scripts (fanout.sh, rollout.sh, mirrors.sh): what they share.

# Copies the corpus's A and B into $work, their times clamped as peers.sh does, and
# imports both into $IMAGER_STORE as the names A and B, leaving out local state.
# Uses $corpus, $work, $imager and $repo.
import_corpus() {
  local n
  for n in A B; do
    cp -a "$corpus/$n" "$work/$n"
    find "$work/$n" -newermt @1700000000 -exec touch -h -d @1700000000 {} +
    "$imager" import "$work/$n" --name $n -q --exclude-from "$repo/exclude-lists/local-state.txt" >/dev/null
  done
}
