#!/usr/bin/env bash
# bench/remote.sh — caplin's remote hosts against ssh, in one run, on a
# throwaway OpenSSH sshd on a loopback port (bench/remotebench says what
# is measured and the targets):
#
#   spawn and wait of /bin/true over the open connection, vs ssh over an
#     open ControlMaster connection
#   a batch of 32 calls in a remote child vs a batch of 1
#   a file read through a remote fd, vs ssh HOST cat FILE
#
# As root, sshd runs in a mount namespace of its own (with a tmpfs /run
# for its /run/sshd, and a copy of /etc/passwd that gives root a fresh
# home in the temporary directory: no start-up files of the machine's
# root to run for each ssh session) and root logs in; otherwise sshd runs
# as the user, who logs in, with the user's own start-up files. The
# agent's cache is in the temporary directory.
#
# Usage: bench/remote.sh [RUNS] [MIB]
# Needs openssh-server (/usr/sbin/sshd) and ssh.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-40}
mib=${2:-256}
[ -x /usr/sbin/sshd ] || { echo "remote.sh: no /usr/sbin/sshd: apt-get install openssh-server" >&2; exit 1; }
dir=$(mktemp -d)
chmod 755 "$dir"
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
CGO_ENABLED=0 go build -o "$dir/caplin" ./cmd/caplin
go build -o "$dir/remotebench" ./bench/remotebench
ssh-keygen -q -t ed25519 -N "" -f "$dir/host_key"
ssh-keygen -q -t ed25519 -N "" -f "$dir/user_key"
cp "$dir/user_key.pub" "$dir/authorized_keys"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$dir/sshd_config" <<CONF
ListenAddress 127.0.0.1:$port
HostKey $dir/host_key
AuthorizedKeysFile $dir/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
PidFile none
SetEnv XDG_CACHE_HOME=$dir/cache
MaxStartups 100
MaxSessions 100
CONF
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host_key.pub")" >"$dir/known_hosts"
cat >"$dir/ssh_config" <<CONF
Host bench
	HostName 127.0.0.1
	Port $port
	User $(id -un)
	IdentityFile $dir/user_key
	IdentitiesOnly yes
	UserKnownHostsFile $dir/known_hosts
	StrictHostKeyChecking yes
	LogLevel ERROR
CONF
if [ "$(id -u)" = 0 ]; then
	mkdir -m 700 "$dir/home"
	awk -F: -v OFS=: -v home="$dir/home" '$1 == "root" { $6 = home } { print }' /etc/passwd >"$dir/passwd"
	unshare --mount --propagation private /bin/sh -c \
		'mount -t tmpfs -o mode=755 tmpfs /run && mkdir -m 755 /run/sshd && mount --bind "$2" /etc/passwd && exec /usr/sbin/sshd -D -e -f "$1"' sh "$dir/sshd_config" "$dir/passwd" 2>"$dir/sshd.log" &
else
	/usr/sbin/sshd -D -e -f "$dir/sshd_config" 2>"$dir/sshd.log" &
fi
pid=$!
for _ in $(seq 100); do
	(echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
	sleep 0.05
done
head -c "$((mib << 20))" /dev/urandom >"$dir/file"
export CAPLIN_SSH="ssh -F $dir/ssh_config"
export XDG_CACHE_HOME=$dir/local-cache # where caplin keeps its agent's hash
echo "caplin remote vs ssh (loopback, $(nproc) CPUs, $runs runs per pair):"
"$dir/remotebench" -runs "$runs" -mib "$mib" ${REMOTEBENCH_ONLY:+-only "$REMOTEBENCH_ONLY"} -agent "$dir/caplin" bench "$dir/file"
