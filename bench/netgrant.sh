#!/usr/bin/env bash
# bench/netgrant.sh — network grants (caplin run --connect) against a
# direct socket and against an HTTP CONNECT proxy that filters the same
# way, in one run, alternating, and the ratios the issue asks for:
#
#   a blocking connect on loopback: through the trap - direct   (<= 50 µs added)
#   a 256 MiB transfer on the installed socket / a direct one   (>= 0.95x)
#   an HTTP GET on a new connection, 1,000 of them: through an
#     HTTP CONNECT proxy / through caplin's grant              (>= 2x)
#     (the Go proxy of bench/netbench, and tinyproxy where installed,
#     apt-get install tinyproxy; and, for scale, the GET direct)
#   the same connect and GET without namespaces (--landlock-only), where
#     caplin connects the program's own socket: no socket is made or
#     installed (no SECCOMP_IOCTL_NOTIF_ADDFD)
#   the floor: a connect to the sandbox's own loopback, which no rule
#     concerns (caplin makes it on its copy of the socket), against the
#     same connect in a sandbox without the trap: the trap's round trip,
#     which every granted connect pays
#
# The load is bench/netbench: servers on the host's loopback (accept and
# close, a sink, a small HTTP server, and the proxy, which tunnels to that
# HTTP server only), and clients that report medians of their own timed
# loops, so caplin's start-up is not counted. "Direct" and "proxy" clients
# run on the host; "grant" clients in caplin run --system --connect ...,
# which reaches the servers through the trap, with no proxy settings.
#
# Each client runs REPS times (default 5) alternately, and the medians of
# those are printed.
# Usage: bench/netgrant.sh [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5}
dir=$(mktemp -d)
chmod 755 "$dir"
srv=
trap 'test -n "$srv" && kill "$srv" 2>/dev/null; rm -rf "$dir"' EXIT
CGO_ENABLED=0 go build -o "$dir/caplin" ./cmd/caplin
CGO_ENABLED=0 go build -o "$dir/netbench" ./bench/netbench
"$dir/netbench" serve >"$dir/ports" &
srv=$!
for _ in $(seq 100); do [ -s "$dir/ports" ] && break; sleep 0.05; done
# shellcheck disable=SC1090
eval "$(sed 's/ /\n/g' "$dir/ports")" # connect=P sink=P http=P proxy=P
if command -v tinyproxy >/dev/null; then
	tport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18888)
	printf 'Port %s\nListen 127.0.0.1\nTimeout 60\nMaxClients 200\nAllow 127.0.0.1\nConnectPort %s\nFilter "%s/filter"\nFilterDefaultDeny Yes\nFilterExtended On\nLogLevel Critical\n' \
		"$tport" "$http" "$dir" >"$dir/tinyproxy.conf"
	echo '^127\.0\.0\.1$' >"$dir/filter"
	tinyproxy -d -c "$dir/tinyproxy.conf" >/dev/null 2>&1 &
	tp=$!
	trap 'test -n "$srv" && kill "$srv" 2>/dev/null; kill "$tp" 2>/dev/null; rm -rf "$dir"' EXIT
	sleep 0.3
fi
grant=("$dir/caplin" run --system --ro-bind "$dir/netbench" /nb
	--connect "127.0.0.1:$connect" --connect "127.0.0.1:$sink" --connect "127.0.0.1:$http" -- /nb)

# value OUTPUT: the number after = in a client's output line.
value() { sed 's/.*=//'; }
med() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

llgrant=("$dir/caplin" run --landlock-only --system --ro-bind "$dir/netbench" "$dir/netbench"
	--connect "127.0.0.1:$connect" --connect "127.0.0.1:$http" -- "$dir/netbench")
plain=("$dir/caplin" run --system --net loopback --ro-bind "$dir/netbench" /nb -- /nb)
trapped=("$dir/caplin" run --system --ro-bind "$dir/netbench" /nb --connect 192.0.2.1:1 -- /nb)

declare -a cd cg cl td tg hp hg hl ht hd fp ft
ht=() # set -u: an array that stays empty (no tinyproxy) must be set
for ((r = 0; r < reps; r++)); do
	fp+=("$("${plain[@]}" selfconnect 2000 | value)")
	ft+=("$("${trapped[@]}" selfconnect 2000 | value)")
	cd+=("$("$dir/netbench" connect 2000 "127.0.0.1:$connect" | value)")
	cg+=("$("${grant[@]}" connect 2000 "127.0.0.1:$connect" | value)")
	cl+=("$("${llgrant[@]}" connect 2000 "127.0.0.1:$connect" 2>/dev/null | value)")
	td+=("$("$dir/netbench" send "127.0.0.1:$sink" 256 | value)")
	tg+=("$("${grant[@]}" send "127.0.0.1:$sink" 256 | value)")
	hp+=("$("$dir/netbench" http 1000 "http://127.0.0.1:$http/" "127.0.0.1:$proxy" | value)")
	hg+=("$("${grant[@]}" http 1000 "http://127.0.0.1:$http/" | value)")
	hl+=("$("${llgrant[@]}" http 1000 "http://127.0.0.1:$http/" 2>/dev/null | value)")
	hd+=("$("$dir/netbench" http 1000 "http://127.0.0.1:$http/" | value)")
	if [ -n "${tp:-}" ]; then
		ht+=("$("$dir/netbench" http 1000 "http://127.0.0.1:$http/" "127.0.0.1:$tport" | value)")
	fi
done
c_d=$(printf '%s\n' "${cd[@]}" | med)
c_g=$(printf '%s\n' "${cg[@]}" | med)
c_l=$(printf '%s\n' "${cl[@]}" | med)
h_l=$(printf '%s\n' "${hl[@]}" | med)
t_d=$(printf '%s\n' "${td[@]}" | med)
t_g=$(printf '%s\n' "${tg[@]}" | med)
h_p=$(printf '%s\n' "${hp[@]}" | med)
h_g=$(printf '%s\n' "${hg[@]}" | med)
h_d=$(printf '%s\n' "${hd[@]}" | med)
f_p=$(printf '%s\n' "${fp[@]}" | med)
f_t=$(printf '%s\n' "${ft[@]}" | med)
echo "medians of $reps alternate runs (each a median of its own loop):"
awk -v d="$c_d" -v g="$c_g" 'BEGIN { printf "  connect, blocking:   grant %7.1f µs, direct %7.1f µs: %+.1f µs added (<= 50)\n", g, d, g - d }'
awk -v d="$t_d" -v g="$t_g" 'BEGIN { printf "  256 MiB transfer:    grant %7.0f MiB/s, direct %7.0f MiB/s: %.2fx (>= 0.95)\n", g, d, g / d }'
awk -v p="$h_p" -v g="$h_g" -v d="$h_d" 'BEGIN { printf "  HTTP GET, new conn:  grant %7.1f µs, Go CONNECT proxy %7.1f µs: proxy/grant %.2fx (>= 2); direct %.1f µs\n", g, p, p / g, d }'
if [ ${#ht[@]} -gt 0 ]; then
	h_t=$(printf '%s\n' "${ht[@]}" | med)
	awk -v t="$h_t" -v g="$h_g" 'BEGIN { printf "                       tinyproxy %7.1f µs: tinyproxy/grant %.2fx (>= 2)\n", t, t / g }'
fi
awk -v d="$c_d" -v l="$c_l" -v h="$h_l" -v p="$h_p" 'BEGIN { printf "  --landlock-only:     connect %7.1f µs: %+.1f µs added; HTTP GET %7.1f µs: proxy/grant %.2fx\n", l, l - d, h, p / h }'
awk -v p="$f_p" -v t="$f_t" 'BEGIN { printf "  floor: a connect to the sandbox loopback: %.1f µs trapped, %.1f µs without: the trap %+.1f µs\n", t, p, t - p }'
