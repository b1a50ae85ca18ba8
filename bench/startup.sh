#!/usr/bin/env bash
# bench/startup.sh — how long caplin takes to start, from a shell, against
# its peers, measured alternately in one run so that a noisy moment (the
# machine's other work) hurts both sides of a ratio alike:
#
#   caplin version        vs an empty static Go program      (target <= 1.3x)
#   the floor of that: an empty Go program that links the packages caplin
#   links (their initialisation), vs the empty Go program
#   caplin run ... true   vs bwrap with the same sandbox     (target <= 1.0x)
#   caplin bwrap ... true vs bwrap with identical flags      (target <= 1.0x)
#   the floor: the empty Go program, unshare(1) making the same
#   namespaces (user, mount, pid, ipc, uts, net, cgroup) around /bin/true,
#   and a Go program doing only that (os/exec with those clone flags, the
#   uid and gid mapped, no mounts, no Landlock, no seccomp): the least any
#   Go program pays for a namespace sandbox from a shell
#
# The sandbox: --unshare-all --die-with-parent, a read-only /usr with /bin,
# /lib, /lib64 as symlinks into it, /proc, /dev, a tmpfs /tmp; caplin run
# gets the same (it unshares everything by default), plus its Landlock and
# seccomp layers, which bwrap does not have.
#
# Each pair runs RUNS times (default 50) alternately, A then B; the medians
# and their ratio A/B are printed, REPS times over (default 3). Every run is
# one fork and exec from bash, timed with $EPOCHREALTIME around it.
#
# With BASE set to a git revision (BASE=main, say), caplin is also built
# from that revision, and each round first compares the two builds,
# alternately: "caplin run (this tree) / caplin run (BASE)".
#
# Usage: [BASE=REV] bench/startup.sh [RUNS] [REPS]
# Needs bubblewrap (apt-get install bubblewrap) and unshare (util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-50}
reps=${2:-3}
command -v bwrap >/dev/null || { echo "startup.sh: bubblewrap is not installed" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
CGO_ENABLED=0 go build -o "$dir/caplin" ./cmd/caplin
if [ -n "${BASE:-}" ]; then
	mkdir "$dir/base"
	git archive "$BASE" | tar -x -C "$dir/base"
	(cd "$dir/base" && CGO_ENABLED=0 go build -o "$dir/caplin-base" ./cmd/caplin)
fi
printf 'package main\n\nfunc main() {}\n' >"$dir/empty.go"
(cd "$dir" && CGO_ENABLED=0 GOFLAGS= go build -o "$dir/empty" empty.go)
mkdir "$dir/gons"
cat >"$dir/gons/main.go" <<'EOF'
// Command gons runs /bin/true in new user, mount, pid, ipc, uts, net and
// cgroup namespaces, and nothing else: the floor of a Go sandbox.
package main

import (
	"os"
	"os/exec"
	"syscall"
)

func main() {
	cmd := exec.Command("/bin/true")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
			syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS | syscall.CLONE_NEWNET | syscall.CLONE_NEWCGROUP,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		Pdeathsig:   syscall.SIGKILL,
	}
	if cmd.Run() != nil {
		os.Exit(1)
	}
}
EOF
(cd "$dir/gons" && CGO_ENABLED=0 GOFLAGS= GO111MODULE=off go build -o "$dir/gons-floor" .)
# The floor of caplin version: a program whose main does nothing, linking
# (blank imports) every package caplin links that may be imported from
# here, so that their package initialisation runs, and nothing else. It
# is built in the module (a directory the go command's ./... skips), to
# import caplin's packages and its dependencies.
imp=$(mktemp -d ./.startup-imports.XXXXXX)
trap 'rm -rf "$dir" "$imp"' EXIT
{
	echo 'package main'
	echo 'import ('
	go list -deps ./cmd/caplin | grep -vE '(^|/)internal(/|$)|^vendor/|^unsafe$|^runtime/cgo$|/cmd/caplin$' | sed 's/.*/\t_ "&"/'
	echo ')'
	echo 'func main() {}'
} >"$imp/main.go"
CGO_ENABLED=0 go build -o "$dir/imports" "./$imp"
rm -rf "$imp"

grants=(--ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64
	--proc /proc --dev /dev --tmpfs /tmp)
bw=(--unshare-all --die-with-parent "${grants[@]}" /bin/true)

# pair NAME RUNS -- A... -- B...: RUNS alternate runs of A and B; prints the
# medians (ms) and A/B.
pair() {
	local name=$1 n=$2 i s e
	shift 3
	local a=() b=() ta=() tb=()
	while [ "$1" != -- ]; do a+=("$1"); shift; done
	shift
	b=("$@")
	"${a[@]}" >/dev/null || { echo "startup.sh: $name: ${a[*]} failed" >&2; exit 1; }
	"${b[@]}" >/dev/null || { echo "startup.sh: $name: ${b[*]} failed" >&2; exit 1; }
	for ((i = 0; i < n; i++)); do
		s=${EPOCHREALTIME/./}; "${a[@]}" >/dev/null; e=${EPOCHREALTIME/./}; ta+=($((e - s)))
		s=${EPOCHREALTIME/./}; "${b[@]}" >/dev/null; e=${EPOCHREALTIME/./}; tb+=($((e - s)))
	done
	local ma mb
	ma=$(printf '%s\n' "${ta[@]}" | sort -n | sed -n "$(((n + 1) / 2))p")
	mb=$(printf '%s\n' "${tb[@]}" | sort -n | sed -n "$(((n + 1) / 2))p")
	awk -v name="$name" -v a="$ma" -v b="$mb" 'BEGIN { printf "  %-44s %6.2f ms vs %6.2f ms = %.2fx\n", name, a / 1000, b / 1000, a / b }'
}

echo "medians of $runs alternate runs each, A vs B = A/B:"
for ((r = 1; r <= reps; r++)); do
	echo "round $r:"
	if [ -n "${BASE:-}" ]; then
		pair "caplin run: this tree / $BASE" "$runs" -- "$dir/caplin" run "${grants[@]}" /bin/true -- "$dir/caplin-base" run "${grants[@]}" /bin/true
		pair "$BASE's caplin run / bwrap" "$runs" -- "$dir/caplin-base" run "${grants[@]}" /bin/true -- bwrap "${bw[@]}"
		pair "$BASE's caplin version / empty Go" "$runs" -- "$dir/caplin-base" version -- "$dir/empty"
	fi
	pair "caplin version / empty Go (<= 1.3x)" "$runs" -- "$dir/caplin" version -- "$dir/empty"
	pair "floor: caplin's imports only / empty Go" "$runs" -- "$dir/imports" -- "$dir/empty"
	pair "caplin run / bwrap (<= 1.0x)" "$runs" -- "$dir/caplin" run "${grants[@]}" /bin/true -- bwrap "${bw[@]}"
	pair "caplin bwrap / bwrap, same flags (<= 1.0x)" "$runs" -- "$dir/caplin" bwrap "${bw[@]}" -- bwrap "${bw[@]}"
	pair "floor: unshare -Urmpiun --cgroup -f / bwrap" "$runs" -- unshare -Urmpiun --cgroup -f /bin/true -- bwrap "${bw[@]}"
	pair "floor: Go, namespaces only / bwrap" "$runs" -- "$dir/gons-floor" -- bwrap "${bw[@]}"
	pair "caplin run / Go, namespaces only" "$runs" -- "$dir/caplin" run "${grants[@]}" /bin/true -- "$dir/gons-floor"
done
