#!/usr/bin/env bash
# bench/sandbox.sh — a fully isolated /bin/true (user, mount, pid, net, ipc,
# uts namespaces; read-only /usr; /proc; /dev; tmpfs /tmp; Landlock;
# seccomp; dies with its parent), in one run with its peers:
#
#  1. from a long-running Go program (go test -bench, medians of COUNT):
#     sandbox.Build, sandbox.Template.Build, bubblewrap run by the same
#     program, and plain os/exec of /bin/true;
#  2. as commands started from a shell: caplin run and caplin bwrap vs
#     bwrap, RUNS times each (default 200).
#
# Installs bubblewrap with apt-get if it is missing.
# Usage: bench/sandbox.sh [COUNT] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-5}
runs=${2:-200}
command -v bwrap >/dev/null || { apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; }
bin=$(mktemp)
cmd=$(mktemp)
out=$(mktemp)
trap 'rm -f "$bin" "$cmd" "$out"' EXIT
CGO_ENABLED=0 go test -c -o "$bin" ./sandbox
CGO_ENABLED=0 go build -o "$cmd" ./cmd/caplin
for i in $(seq "$count"); do
	"$bin" -test.run '^$' -test.bench '^Benchmark(SandboxTrue|TemplateTrue|TemplatePID1True|BwrapTrue|BwrapPID1True|OSExecTrue)$' -test.benchtime 200x >>"$out"
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
	s = med("BenchmarkSandboxTrue"); t = med("BenchmarkTemplateTrue"); t1 = med("BenchmarkTemplatePID1True")
	b = med("BenchmarkBwrapTrue"); b1 = med("BenchmarkBwrapPID1True"); o = med("BenchmarkOSExecTrue")
	printf "from a Go program (median of %d), ms: sandbox.Build %.2f, Template.Build %.2f, Template.Build as pid 1 %.2f; bwrap %.2f, bwrap --as-pid-1 %.2f; os/exec %.2f\n", count, s / 1e6, t / 1e6, t1 / 1e6, b / 1e6, b1 / 1e6, o / 1e6
	printf "  bwrap / Build = %.2fx, bwrap / Template = %.2fx, bwrap --as-pid-1 / Template as pid 1 = %.2fx (target >= 4x)\n", b / s, b / t, b1 / t1
	printf "  Build / os/exec = %.2fx, Template / os/exec = %.2fx, Template as pid 1 / os/exec = %.2fx (target <= 2x)\n", s / o, t / o, t1 / o
}' "$out"

grants=(--ro-bind /usr /usr)
for d in /bin /lib /lib64 /sbin; do
	[ -e "$d" ] && grants+=(--ro-bind "$d" "$d")
done
grants+=(--proc /proc --dev /dev --tmpfs /tmp)
bw=(--unshare-all --die-with-parent "${grants[@]}" --new-session /bin/true)
per_run() { # per_run CMD ARGS... : microseconds per run
	local s e
	s=$(date +%s%N)
	for ((i = 0; i < runs; i++)); do "$@"; done
	e=$(date +%s%N)
	echo $(((e - s) / runs / 1000))
}
c_run=$(per_run "$cmd" run "${grants[@]}" /bin/true)
c_bwrap=$(per_run "$cmd" bwrap "${bw[@]}")
b=$(per_run bwrap "${bw[@]}")
awk -v r="$c_run" -v c="$c_bwrap" -v b="$b" -v n="$runs" 'BEGIN {
	printf "as commands from a shell (%d runs): caplin run %.2f ms, caplin bwrap %.2f ms, bwrap %.2f ms\n", n, r / 1000, c / 1000, b / 1000
	printf "  bwrap / caplin run = %.2fx, bwrap / caplin bwrap = %.2fx (target >= 2x)\n", b / r, b / c
}'
