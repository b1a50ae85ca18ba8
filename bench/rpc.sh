#!/usr/bin/env bash
# bench/rpc.sh — measures caplin's capability calls (package rpc) against
# their peers in one run and prints the ratios the rpc issue asks for:
#
#   a call round trip, no fd and one fd   vs a bare SOCK_SEQPACKET ping-pong (≤ 2x)
#   the same call through gRPC over a Unix socket   vs caplin's (≥ 5x)
#   throughput of 8 concurrent callers on one object
#
# The call is an echo of a short string and an int; the ping-pong sends
# messages of the same sizes, in blocking system calls, or through
# net.UnixConn (the runtime's poller, as rpc does) in the Net variants.
# Peers run in goroutines of the benchmark's process, and for the Proc
# benchmarks in another process (gRPC's server too, in GRPCProc). gRPC is
# measured by bench/grpc, a module of its own, whose run measures caplin's
# call too: gRPC/Call is taken within that run.
#
# Each benchmark runs COUNT times (default 5), interleaved so that a noisy
# moment hurts both sides of a ratio alike; the median is reported.
# Usage: bench/rpc.sh [COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-5}
out=$(mktemp)
trap 'rm -f "$out" "$out.rpc" "$out.grpc"' EXIT

go test -c -o "$out.rpc" ./rpc
(cd bench/grpc && go test -c -o "$out.grpc" .)
for i in $(seq "$count"); do
	"$out.rpc" -test.run '^$' -test.bench '^Benchmark(PingPong|PingPongNet|PingPongFD|PingPongProc|PingPongNetProc|Call|CallFD|CallProc|CallParallel)$' -test.benchtime 1s >>"$out"
	# Names as in the rpc run: tag them with the run they come from.
	"$out.grpc" -test.run '^$' -test.bench . -test.benchtime 1s | sed 's/^Benchmark/grpc:Benchmark/' >>"$out"
done

awk -v count="$count" '
/^(grpc:)?Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name); sub(/Benchmark/, "", name)
	n[name]++; v[name, n[name]] = $3; r[name, n[name]] = $5
}
function median(name, col,   i, j, t, k, a) {
	k = n[name]
	for (i = 1; i <= k; i++) a[i] = (col == "rate") ? r[name, i] : v[name, i]
	for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return a[int((k + 1) / 2)]
}
function row(what, a, b, limit,   ma, mb) {
	ma = median(a); mb = median(b)
	printf "%-44s %9.1f µs  %9.1f µs  %6.2fx  %s\n", what, ma / 1000, mb / 1000, ma / mb, limit
}
function rate(what, a, b,   ma, mb) {
	ma = median(a, "rate"); mb = 1e9 / median(b)
	printf "%-44s %9.0f /s  %9.0f /s  %6.2fx\n", what, ma, mb, ma / mb
}
END {
	printf "%-44s %12s  %12s  %7s  %s\n", "median of " count " (ns/op as µs)", "caplin", "peer", "ratio", "target"
	row("Call vs PingPong", "Call", "PingPong", "≤ 2x")
	row("Call vs PingPongNet (net.UnixConn)", "Call", "PingPongNet", "")
	row("CallFD vs PingPong", "CallFD", "PingPong", "≤ 2x")
	row("CallFD vs PingPongFD (fd each way)", "CallFD", "PingPongFD", "")
	row("CallProc vs PingPongProc (2 processes)", "CallProc", "PingPongProc", "≤ 2x")
	row("CallProc vs PingPongNetProc", "CallProc", "PingPongNetProc", "")
	row("gRPC vs Call (bench/grpc run)", "grpc:GRPC", "grpc:Call", "≥ 5x")
	row("gRPC vs Call, 2 processes (bench/grpc run)", "grpc:GRPCProc", "grpc:CallProc", "≥ 5x")
	row("Call vs PingPong (bench/grpc run)", "grpc:Call", "grpc:PingPong", "")
	printf "\n%-44s %12s  %12s  %7s\n", "throughput, calls/s", "8 callers", "1 caller", "ratio"
	rate("caplin, one object", "CallParallel", "Call")
	rate("gRPC, one connection (bench/grpc run)", "grpc:GRPCParallel", "grpc:GRPC")
	printf "caplin / gRPC, 8 callers (bench/grpc run): %.2fx the calls/s\n", median("grpc:CallParallel", "rate") / median("grpc:GRPCParallel", "rate")
}' "$out"
