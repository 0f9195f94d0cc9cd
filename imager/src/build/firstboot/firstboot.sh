#!/bin/sh
# Written by imager into images that run sshd. An image carries no machine state, so
# this creates it on the machine, at its first boot, before ssh starts: every ssh host
# key that sshd is configured to use and that does not exist yet. It never replaces a
# key; the keys are local state, which pushes of later images leave alone.
set -eu
configured() {
    # HostKey lines of sshd_config and of the files it includes from sshd_config.d
    # (first word case-insensitive, as sshd reads it).
    for f in /etc/ssh/sshd_config /etc/ssh/sshd_config.d/*.conf; do
        [ -f "$f" ] || continue
        awk 'tolower($1) == "hostkey" { print $2 }' "$f"
    done
}
keys=$(configured)
if [ -z "$keys" ]; then
    # sshd's defaults: rsa, ecdsa and ed25519 under /etc/ssh.
    exec ssh-keygen -A
fi
for key in $keys; do
    [ -e "$key" ] && continue
    case "$key" in
        *ed25519*) type=ed25519 ;;
        *ecdsa*) type=ecdsa ;;
        *rsa*) type=rsa ;;
        *) echo "imager-firstboot: cannot tell the type of host key $key" >&2; exit 1 ;;
    esac
    mkdir -p "$(dirname "$key")"
    ssh-keygen -q -t "$type" -N '' -C "" -f "$key"
    echo "imager-firstboot: created $type host key $key"
done
