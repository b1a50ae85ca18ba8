#!/usr/bin/env bash
# bench/dir.sh — directory capabilities against their peers, in one run:
#
#   Open of a file through a Dir (openat2, confined)  vs os.Open (≤ 1.2x)
#   CompareAndSwap increments from 4 processes        vs a flock read-modify-write
#
# COUNT runs (default 5), interleaved; medians. TMPDIR picks the file system
# the contention benchmarks use (tmpfs and ext4 differ by 30x: fsync).
# Usage: bench/dir.sh [COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-5}
bin=$(mktemp)
out=$(mktemp)
trap 'rm -f "$bin" "$out"' EXIT
go test -c -o "$bin" ./dir
for i in $(seq "$count"); do
	"$bin" -test.run '^$' -test.bench '^Benchmark(DirOpen|OSOpen)$' -test.benchtime 1s >>"$out"
	"$bin" -test.run '^$' -test.bench '^Benchmark(CompareAndSwap|FlockRMW)Contention$' -test.benchtime 2000x >>"$out"
done
awk -v count="$count" '
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name)
	n[name]++; v[name, n[name]] = $3
	for (i = 4; i < NF; i++) if ($(i + 1) == "incr/s") r[name, n[name]] = $i
}
function med(arr, name,   i, j, t, k, a) {
	k = n[name]
	for (i = 1; i <= k; i++) a[i] = arr[name, i]
	for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return a[int((k + 1) / 2)]
}
END {
	a = med(v, "BenchmarkDirOpen"); b = med(v, "BenchmarkOSOpen")
	printf "Open via Dir vs os.Open (median of %d): %.2f µs vs %.2f µs = %.2fx (target ≤ 1.20x)\n", count, a / 1000, b / 1000, a / b
	c = med(r, "BenchmarkCompareAndSwapContention"); f = med(r, "BenchmarkFlockRMWContention")
	printf "4-process counter: CompareAndSwap %.0f incr/s, flock read-modify-write %.0f incr/s\n", c, f
}' "$out"
