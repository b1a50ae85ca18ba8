#!/usr/bin/env bash
# bench/proc.sh — measures caplin's process construction against its peers in
# one run and prints the ratios the proc issue asks for:
#
#   remote call round trip       vs a bare SOCK_SEQPACKET ping-pong (≤ 1.3x)
#   a batch of 32 calls          vs 32 single calls
#   Fork+Exec+Wait of /bin/true  vs Go's os/exec (≤ 1.1x): Spawn (fork and
#                                exec in one round trip), and Fork, Exec and
#                                Wait as three calls
#   the same from a 1 GiB caller vs a 20 MiB caller (≤ 1.2x)
#
# Each benchmark runs COUNT times (default 5), interleaved so that a noisy
# moment hurts both sides of a ratio alike; the median is reported.
# Usage: bench/proc.sh [COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-5}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

benches='^Benchmark(PingPong|RemoteCall|Batch32|Single32|SpawnWait|ForkExecWait|OSExec|ForkExecWait1G|ForkExecWait20M|SpawnWait1G|SpawnWait20M)$'
go test -c -o "$out.test" ./proc
trap 'rm -f "$out" "$out.test"' EXIT
for i in $(seq "$count"); do
	"$out.test" -test.run '^$' -test.bench "$benches" -test.benchtime 2s >>"$out"
done

awk -v count="$count" '
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name)
	n[name]++; v[name, n[name]] = $3
}
function median(name,   i, j, t, k, a) {
	k = n[name]
	for (i = 1; i <= k; i++) a[i] = v[name, i]
	for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return a[int((k + 1) / 2)]
}
function row(what, a, b, limit,   ma, mb, r) {
	ma = median(a); mb = median(b); r = ma / mb
	printf "%-44s %10.1f µs  %10.1f µs  %6.2fx  %s\n", what, ma / 1000, mb / 1000, r, limit
}
END {
	printf "%-44s %13s  %13s  %7s  %s\n", "caplin vs peer (median of " count ")", "caplin", "peer", "ratio", "target"
	row("remote getppid vs SEQPACKET ping-pong", "BenchmarkRemoteCall", "BenchmarkPingPong", "≤ 1.30x")
	row("batch of 32 calls vs 32 single calls", "BenchmarkBatch32", "BenchmarkSingle32", "")
	row("Spawn+Wait /bin/true vs os/exec", "BenchmarkSpawnWait", "BenchmarkOSExec", "≤ 1.10x")
	row("Fork, Exec, Wait /bin/true vs os/exec", "BenchmarkForkExecWait", "BenchmarkOSExec", "")
	row("Spawn+Wait, 1 GiB vs 20 MiB caller", "BenchmarkSpawnWait1G", "BenchmarkSpawnWait20M", "≤ 1.20x")
	row("Fork, Exec, Wait, 1 GiB vs 20 MiB caller", "BenchmarkForkExecWait1G", "BenchmarkForkExecWait20M", "≤ 1.20x")
}' "$out"
