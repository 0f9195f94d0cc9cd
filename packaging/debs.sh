#!/usr/bin/env bash
# Builds the Debian packages from the workspace with cargo-deb 3.8.0
# (`cargo install cargo-deb --version 3.8.0 --locked`):
#   imager        the image builder (/usr/bin/imager), its man pages and completions
#   syncer        the controller (/usr/bin/syncer), its man pages and completions;
#                 depends on syncer-agent at the same version (what --install-agent copies)
#   syncer-agent  the agent for hosts (/usr/bin/syncer-agent, /etc/syncer/trust.toml.example,
#                 README.Debian with the forced-command authorized_keys line)
#
# usage: packaging/debs.sh [--profile release|dev] [--no-build] [-o DIR] [PACKAGE...]
# PACKAGEs: imager, syncer, syncer-agent (default: all three). The .debs go to DIR
# (default: TARGET/debian). --no-build packages binaries built already (the tests
# package the debug binaries they run, so --profile dev).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release build=1 out= packages=()
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        -o) out="$2"; shift 2 ;;
        imager|syncer|syncer-agent) packages+=("$1"); shift ;;
        *) echo "debs.sh: unknown argument '$1' (usage: debs.sh [--profile P] [--no-build] [-o DIR] [imager|syncer|syncer-agent]...)" >&2; exit 2 ;;
    esac
done
[ ${#packages[@]} -gt 0 ] || packages=(imager syncer syncer-agent)
command -v cargo-deb >/dev/null || {
    echo "debs.sh: cargo-deb is missing: cargo install cargo-deb --version 3.8.0 --locked" >&2; exit 1; }
target=$(cargo metadata --no-deps --format-version 1 --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
case "$profile" in dev) dir="$target/debug" ;; *) dir="$target/$profile" ;; esac
out="${out:-$target/debian}"
if [ "$build" = 1 ]; then
    cargo build --locked --profile "$profile" -p imager-cli -p syncer --bins
fi
# Man pages and completions come from each binary's own clap definitions, so the
# packages' pages say what the packaged binary does.
for tool in imager syncer; do
    [[ " ${packages[*]} " == *" $tool "* ]] || continue
    a="$dir/deb-assets/$tool"
    rm -rf "$a" && mkdir -p "$a/man" "$a/completions"
    "$dir/$tool" manpages "$a/man" >/dev/null
    gzip -9n "$a"/man/*.1
    "$dir/$tool" completions bash >"$a/completions/$tool.bash"
    "$dir/$tool" completions zsh >"$a/completions/_$tool"
    "$dir/$tool" completions fish >"$a/completions/$tool.fish"
done
mkdir -p "$out"
# Packaged binaries are stripped (strip keeps the ELF build ID, which is how a
# controller tells whether a host runs its agent).
# (cargo-deb warns that a dev profile is for tests only, which is what it is used for.)
quiet=()
[ "$profile" = dev ] && quiet=(-q)
for p in "${packages[@]}"; do
    case "$p" in
        imager) args=(-p imager-cli) ;;
        syncer) args=(-p syncer) ;;
        syncer-agent) args=(-p syncer --variant agent) ;;
    esac
    cargo deb "${quiet[@]}" --locked --no-build --profile "$profile" --strip --no-dbgsym \
        -o "$out" "${args[@]}"
done
