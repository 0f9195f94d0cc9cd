# Sourced by the bench scripts (push.sh, fanout.sh, rollout.sh, mirrors.sh,
# first-install.sh): what they share.

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

# start_sshd DIR: a private sshd on 127.0.0.1 (the first free port from $SSH_PORT,
# default 2299) with its own host and client keys in DIR; sets $sshd_pid (the caller's
# cleanup kills it) and $ssh_cmd (an ssh command line that logs in as root with the
# client key), and waits until a login works.
start_sshd() {
  local sd=$1 port i
  port=$(python3 - "${SSH_PORT:-2299}" <<'PY'
import socket, sys
for p in range(int(sys.argv[1]), int(sys.argv[1]) + 100):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()
else:
    sys.exit("no free port")
PY
)
  mkdir -p "$sd" /run/sshd; chmod 700 "$sd"
  ssh-keygen -q -t ed25519 -N '' -f "$sd/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$sd/client_key"
  cp "$sd/client_key.pub" "$sd/authorized_keys"
  cat > "$sd/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $sd/host_key
AuthorizedKeysFile $sd/authorized_keys
PermitRootLogin yes
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PidFile $sd/sshd.pid
EOF
  /usr/sbin/sshd -D -f "$sd/sshd_config" -E "$sd/sshd.log" &
  sshd_pid=$!
  ssh_cmd="ssh -i $sd/client_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -p $port"
  for i in $(seq 50); do
    $ssh_cmd root@127.0.0.1 true 2>/dev/null && return 0
    sleep 0.2
  done
  echo "cannot log in to the private sshd on port $port:" >&2
  tail "$sd/sshd.log" >&2
  exit 1
}
