#!/usr/bin/env bash
# bench/supervisor.sh — the supervisor against its peers, in one run:
#
#   caplin run --supervisor ... true  vs bwrap, same sandbox  (target <= 0.5x)
#     with the floor beside it: caplin's own start (caplin version), an
#     empty Go program, and caplin run without the supervisor
#   keystroke echo through caplin attach vs tmux attach, the same program
#     ("stty raw -echo; exec cat") on a terminal (target <= 1 ms median,
#     and <= 1.0x tmux), with the floors beside it: bench/gorelay, the
#     least relay a Go program can be (two io.Copy goroutines a side, the
#     same hops; and with -poll, one poll(2) loop a side on a locked
#     thread, as a C relay is), and no relay at all (the program on the
#     terminal)
#   1,000 idle jobs: the supervisor's threads, and its resident memory per
#     job (target: no thread per job, <= 64 KiB per job)
#
# Pairs run RUNS times (default 40) alternately, A then B, and print the
# medians and A/B; the echo pair runs 200 keys per client, ROUNDS times
# alternately (default 3). The supervisor is a private one, on a socket in
# a temporary directory, stopped at the end.
#
# Usage: bench/supervisor.sh [RUNS] [ROUNDS] [JOBS]
# Needs bubblewrap and tmux.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-40}
rounds=${2:-3}
jobs=${3:-1000}
for p in bwrap tmux; do
	command -v $p >/dev/null || { echo "supervisor.sh: $p is not installed" >&2; exit 1; }
done
dir=$(mktemp -d)
export CAPLIN_SUPERVISOR_SOCKET=$dir/sup/supervisor.sock
export TMUX_TMPDIR=$dir
cleanup() {
	tmux kill-server 2>/dev/null || true
	[ -z "${relay:-}" ] || kill "$relay" 2>/dev/null || true
	if [ -f "$CAPLIN_SUPERVISOR_SOCKET.lock" ]; then
		kill "$(cat "$CAPLIN_SUPERVISOR_SOCKET.lock")" 2>/dev/null || true
		sleep 1
	fi
	rm -rf "$dir"
}
trap cleanup EXIT
CGO_ENABLED=0 go build -o "$dir/caplin" ./cmd/caplin
go build -o "$dir/attachbench" ./bench/attachbench
go build -o "$dir/gorelay" ./bench/gorelay
printf 'package main\n\nfunc main() {}\n' >"$dir/empty.go"
(cd "$dir" && CGO_ENABLED=0 GOFLAGS= go build -o "$dir/empty" empty.go)
c=$dir/caplin

grants=(--unshare-all --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64
	--proc /proc --dev /dev --tmpfs /tmp)

# pair NAME -- A... -- B...: RUNS alternate runs; medians (ms) and A/B.
pair() {
	local name=$1 i s e
	shift 2
	local a=() b=() ta=() tb=()
	while [ "$1" != -- ]; do a+=("$1"); shift; done
	shift
	b=("$@")
	"${a[@]}" >/dev/null || { echo "supervisor.sh: $name: ${a[*]} failed" >&2; exit 1; }
	"${b[@]}" >/dev/null || { echo "supervisor.sh: $name: ${b[*]} failed" >&2; exit 1; }
	for ((i = 0; i < runs; i++)); do
		s=${EPOCHREALTIME/./}; "${a[@]}" >/dev/null; e=${EPOCHREALTIME/./}; ta+=($((e - s)))
		s=${EPOCHREALTIME/./}; "${b[@]}" >/dev/null; e=${EPOCHREALTIME/./}; tb+=($((e - s)))
	done
	local ma mb
	ma=$(printf '%s\n' "${ta[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p")
	mb=$(printf '%s\n' "${tb[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p")
	awk -v name="$name" -v a="$ma" -v b="$mb" 'BEGIN { printf "  %-46s %7.2f ms vs %7.2f ms = %.2fx\n", name, a / 1000, b / 1000, a / b }'
}

# The supervisor starts, and the template of this sandbox is made, once.
"$c" run --supervisor "${grants[@]}" /bin/true

echo "start-up, medians of $runs alternate runs, A vs B = A/B:"
pair "run --supervisor / bwrap (<= 0.5x)" -- "$c" run --supervisor "${grants[@]}" /bin/true -- bwrap "${grants[@]}" /bin/true
pair "floor: caplin version / bwrap" -- "$c" version -- bwrap "${grants[@]}" /bin/true
pair "floor: empty Go program / bwrap" -- "$dir/empty" -- bwrap "${grants[@]}" /bin/true
pair "run --supervisor / caplin run" -- "$c" run --supervisor "${grants[@]}" /bin/true -- "$c" run "${grants[@]}" /bin/true
pair "run --supervisor / caplin version" -- "$c" run --supervisor "${grants[@]}" /bin/true -- "$c" version

echo "keystroke echo, 200 keys per client, median and 90th percentile (ms):"
"$c" start --name bench-cat --tty --system -- sh -c 'stty raw -echo; exec cat' >/dev/null
tmux new-session -d -s bench -x 80 -y 24 "sh -c 'stty raw -echo; exec cat'"
"$dir/gorelay" server "$dir/relay.sock" sh -c 'stty raw -echo; exec cat' &
relay=$!
while [ ! -S "$dir/relay.sock" ]; do sleep 0.05; done
for ((r = 1; r <= rounds; r++)); do
	read -r cm cp < <("$dir/attachbench" 200 "$c" attach bench-cat)
	read -r tm tp < <("$dir/attachbench" 200 tmux attach -t bench)
	read -r gm gp < <("$dir/attachbench" 200 "$dir/gorelay" client "$dir/relay.sock")
	"$dir/gorelay" server -poll "$dir/poll.sock" sh -c 'stty raw -echo; exec cat' &
	while [ ! -S "$dir/poll.sock" ]; do sleep 0.05; done
	read -r pm pp < <("$dir/attachbench" 200 "$dir/gorelay" client -poll "$dir/poll.sock")
	wait $! || true
	rm -f "$dir/poll.sock"
	read -r dm dp < <("$dir/attachbench" 200 sh -c 'stty raw -echo; exec cat')
	awk -v r="$r" -v cm="$cm" -v cp="$cp" -v tm="$tm" -v tp="$tp" -v gm="$gm" -v pm="$pm" -v dm="$dm" 'BEGIN {
		printf "  round %d: caplin attach %.3f (p90 %.3f) vs tmux %.3f (p90 %.3f) = %.2fx\n", r, cm, cp, tm, tp, cm / tm
		printf "           floor: gorelay %.3f = %.2fx tmux (caplin attach / gorelay = %.2fx); gorelay -poll %.3f = %.2fx tmux; no relay %.3f\n", gm, gm / tm, cm / gm, pm, pm / tm, dm
	}'
done
kill "$relay" 2>/dev/null || true
relay=
"$c" stop bench-cat >/dev/null
"$c" rm bench-cat

pid=$(cat "$CAPLIN_SUPERVISOR_SOCKET.lock")
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$pid/status"; }
threads() { awk '/^Threads/ { print $2 }' "/proc/$pid/status"; }
r0=$(rss) t0=$(threads)
echo "$jobs idle jobs (sleep, --system):"
s=${EPOCHREALTIME/./}
for ((i = 0; i < jobs; i++)); do
	"$c" start --system -- sleep 100000 >/dev/null
done
e=${EPOCHREALTIME/./}
r1=$(rss) t1=$(threads)
awk -v n="$jobs" -v r0="$r0" -v r1="$r1" -v t0="$t0" -v t1="$t1" -v d=$((e - s)) 'BEGIN {
	printf "  started in %.1f s (%.1f ms each)\n", d / 1e6, d / 1e3 / n
	printf "  supervisor threads: %d before, %d after\n", t0, t1
	printf "  supervisor resident memory: %d KiB before, %d KiB after: %.1f KiB per job\n", r0, r1, (r1 - r0) / n
}'
