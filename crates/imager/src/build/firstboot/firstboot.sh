#!/bin/sh
# Written by imager into images that run sshd. An image carries no machine state, so
# this creates what a running system needs of it on the machine, at its first boot,
# before ssh starts, and never replaces anything that is there:
# - /etc/resolv.conf, if there is none;
# - /etc/hosts naming localhost, if there is none;
# - every ssh host key that sshd is configured to use and that does not exist yet.
# What it creates is local state, which pushes of later images leave alone. The rest of
# what the build removes, systemd recreates itself: a new machine-id (the image's is
# empty), a random seed (systemd-random-seed makes one), and the hostname: with no
# /etc/hostname, systemd uses the name the container manager or DHCP gives, else its
# compiled-in fallback; writing one here would make it a static name that overrides them.
# The optional argument is a tree to act on instead of / (imager's unit test uses it).
set -eu
root=${1:-}

# Writes /etc/NAME holding TEXT if the machine has no such file: written beside it and
# hard-linked into place, which fails if something else (a DHCP client, an admin) wrote
# the file in the meantime: theirs wins. Anything there is left alone, a dangling symlink
# too (such as systemd-resolved's stub link, which points into /run until resolved
# starts).
create_absent() {
    f="$root/etc/$1"
    if [ -e "$f" ] || [ -L "$f" ]; then
        return 0
    fi
    tmp=$(mktemp "$root/etc/.$1.imager-firstboot.XXXXXX")
    trap 'rm -f "$tmp"' EXIT INT TERM
    printf '%s\n' "$2" >"$tmp"
    chmod 0644 "$tmp"
    if ln "$tmp" "$f" 2>/dev/null; then
        echo "imager-firstboot: created /etc/$1 ($3)"
    fi
    rm -f "$tmp"
    trap - EXIT INT TERM
}

# Absent, glibc's resolver acts as if the file were empty (nameserver 127.0.0.1), but
# tools that read or edit the file itself stumble on a missing one. The placeholder keeps
# that fallback and says where it came from.
create_absent resolv.conf "# Created by /usr/lib/imager/firstboot at this machine's first boot: no nameserver, so glibc's resolver uses 127.0.0.1." "no nameserver"

# Absent, "localhost" does not resolve (a minimal system has no nss-myhostname), and
# services that listen on it (PostgreSQL's default) fail to start.
create_absent hosts "$(printf '# Created by /usr/lib/imager/firstboot at this machine'"'"'s first boot.\n127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback')" "localhost only"

configured() {
    # HostKey lines of sshd_config and of the files it includes from sshd_config.d
    # (first word case-insensitive, as sshd reads it).
    for f in "$root"/etc/ssh/sshd_config "$root"/etc/ssh/sshd_config.d/*.conf; do
        [ -f "$f" ] || continue
        awk 'tolower($1) == "hostkey" { print $2 }' "$f"
    done
}
keys=$(configured)
if [ -z "$keys" ]; then
    # sshd's defaults: rsa, ecdsa and ed25519 under /etc/ssh.
    if [ -n "$root" ]; then
        exec ssh-keygen -A -f "$root"
    fi
    exec ssh-keygen -A
fi
for key in $keys; do
    [ -e "$root$key" ] && continue
    case "$key" in
        *ed25519*) type=ed25519 ;;
        *ecdsa*) type=ecdsa ;;
        *rsa*) type=rsa ;;
        *) echo "imager-firstboot: cannot tell the type of host key $key" >&2; exit 1 ;;
    esac
    mkdir -p "$(dirname "$root$key")"
    ssh-keygen -q -t "$type" -N '' -C "" -f "$root$key"
    echo "imager-firstboot: created $type host key $key"
done
