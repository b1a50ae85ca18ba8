#!/usr/bin/env bash
# bench/sandbox.sh — a fully isolated /bin/true from a long-running Go
# program: caplin's sandbox.Build vs bubblewrap with the equivalent flags vs
# plain os/exec, in one run (medians of COUNT, default 5). Installs
# bubblewrap with apt-get if it is missing.
# Usage: bench/sandbox.sh [COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-5}
command -v bwrap >/dev/null || { apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; }
bin=$(mktemp)
out=$(mktemp)
trap 'rm -f "$bin" "$out"' EXIT
go test -c -o "$bin" ./sandbox
for i in $(seq "$count"); do
	"$bin" -test.run '^$' -test.bench '^Benchmark(SandboxTrue|BwrapTrue|OSExecTrue)$' -test.benchtime 200x >>"$out"
done
awk -v count="$count" '
/^Benchmark/ { name = $1; sub(/-[0-9]+$/, "", name); n[name]++; v[name, n[name]] = $3 }
function med(name,   i, j, t, k, a) {
	k = n[name]
	for (i = 1; i <= k; i++) a[i] = v[name, i]
	for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return a[int((k + 1) / 2)]
}
END {
	s = med("BenchmarkSandboxTrue"); b = med("BenchmarkBwrapTrue"); o = med("BenchmarkOSExecTrue")
	printf "isolated /bin/true (median of %d): caplin %.2f ms, bwrap %.2f ms, os/exec %.2f ms\n", count, s / 1e6, b / 1e6, o / 1e6
	printf "bwrap / caplin = %.2fx (target >= 4x); caplin / os/exec = %.2fx (target <= 2x)\n", b / s, s / o
}' "$out"
