#!/usr/bin/env bash
# bench/served.sh — the same work in a directory given to `caplin run` in
# each of several ways, in one run, alternately, so that a noisy moment
# (the machine's other work) hurts every side of a ratio alike (issue 15):
#
#   bind        caplin run --bind TREE /mnt/t            (the reference)
#   serve-bind  caplin run --serve-bind TREE /mnt/t      (skipped while caplin
#                                                      run has no such flag)
#   bindfs      caplin run --bind MNT /mnt/t, MNT a bindfs of TREE (a C
#               FUSE pass-through, the peer; skipped when bindfs is missing;
#               BINDFS_OPTS adds its options, --multithreaded say)
#   base        with BASE set to a git revision: serve-bind by caplin built
#               from BASE, for before/after figures from one run (the
#               last column is then serve-bind/base)
#
# Work (each mode has its own copy of the same tree, so that one mode's
# caches, git's index say, do not favour or hurt another's):
#   read-mostly  git status in a git repository of Go's source (net, os,
#                runtime, ..., some 5,000 files); grep -r over it; cat of 5,000
#                small files. Each is run twice in each sandbox: "first" is
#                its first run on the mount, "again" the second.
#   builds       make -j2 of a C project of 40 files (after make clean);
#                go build of a module of 8 packages whose leaf changes each
#                time (so all are compiled again; the standard library
#                comes from a GOCACHE in the tree, warmed beforehand).
#   metadata     tar -x of a 10,000-file archive; rm -rf of what it made.
# Targets for serve-bind against bind: read-mostly <= 1.3x, builds <= 1.5x,
# metadata <= 2x; and serve-bind no slower than bindfs.
#
# Each round runs one sandbox per mode, in turn, the order rotated each
# round, doing all the work once; each piece is timed inside the sandbox
# (bash's $EPOCHREALTIME around it, so a sandbox's start is not counted).
# A first round, not counted, warms the caches. Prints the medians over
# RUNS rounds (default 5) and the ratios.
#
# Runs as root (bindfs is mounted in a private mount namespace of its
# own; the sandbox runs as nobody on the host, as caplin run as root does).
# Usage: [BASE=REV] [MODES="bind serve-bind bindfs"] bench/served.sh [RUNS]
set -euo pipefail

if [ "${1:-}" = --inner ]; then
	# --inner WORK RUNS: the rounds, in a private mount namespace.
	work=$2 runs=$3
	modes=()
	for mode in ${MODES:-bind serve-bind bindfs} ${BASE:+base}; do
		case $mode in
		bind) ;;
		serve-bind | base)
			"$work/caplin" run --help 2>&1 | grep -q -- "--serve-bind " ||
				{ echo "serve-bind: skipped: caplin run has no --serve-bind yet" >&2; continue; }
			"$(dirname "$0")/fusedev.sh" "$work/fusedev"
			;;
		bindfs)
			command -v bindfs >/dev/null || { echo "bindfs: skipped: bindfs is not installed" >&2; continue; }
			mkdir -p "$work/bindfs.mnt"
			# shellcheck disable=SC2086
			bindfs ${BINDFS_OPTS:-} "$work/tree-bindfs" "$work/bindfs.mnt"
			trap 'fusermount -u "$work/bindfs.mnt" 2>/dev/null || umount -l "$work/bindfs.mnt"' EXIT
			;;
		*) echo "served.sh: unknown mode $mode" >&2; exit 2 ;;
		esac
		modes+=("$mode")
	done
	for ((r = 0; r <= runs; r++)); do
		n=${#modes[@]}
		for ((k = 0; k < n; k++)); do
			mode=${modes[$(((r + k) % n))]}
			flag=--bind src=$work/tree-$mode caplin=$work/caplin
			[ "$mode" = serve-bind ] && flag=--serve-bind
			[ "$mode" = base ] && flag=--serve-bind caplin=$work/caplin-base
			[ "$mode" = bindfs ] && src=$work/bindfs.mnt
			out=$("$caplin" run --system --setenv PATH /usr/local/go/bin:/usr/local/bin:/usr/bin:/bin \
				--setenv HOME /mnt/t/.home --setenv LC_ALL C \
				"$flag" "$src" /mnt/t --chdir /mnt/t -- bash "/mnt/t/work.sh") ||
				{ echo "served.sh: the work failed in mode $mode:" >&2; echo "$out" >&2; exit 1; }
			# Round 0 warms the caches.
			[ "$r" -gt 0 ] && echo "$out" | sed "s/^/$mode /" >>"$work/times"
		done
	done
	exit 0
fi

runs=${1:-5}
[ "$(id -u)" = 0 ] || { echo "served.sh: run it as root" >&2; exit 1; }
self=$(realpath "$0")
cd "$(dirname "$0")/.."
for tool in git make gcc go tar; do
	command -v $tool >/dev/null || { echo "served.sh: $tool is not installed" >&2; exit 1; }
done
work=$(mktemp -d /var/tmp/caplin-served-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
CGO_ENABLED=0 go build -o "$work/caplin" ./cmd/caplin
if [ -n "${BASE:-}" ]; then
	mkdir "$work/base"
	git archive "$BASE" | tar -x -C "$work/base"
	(cd "$work/base" && CGO_ENABLED=0 go build -o "$work/caplin-base" ./cmd/caplin)
fi

# The tree, once; then a copy for each mode.
t=$work/tree
mkdir -p "$t/repo" "$t/small" "$t/c" "$t/gomod" "$t/.home"
goroot=$(go env GOROOT)
for d in net os go io strings bufio crypto runtime syscall internal; do cp -a "$goroot/src/$d" "$t/repo/"; done
git -C "$t/repo" init -q -b main
git -C "$t/repo" add -A
git -C "$t/repo" -c user.name=b -c user.email=b@example.com commit -q -m tree
# files DIR DIRS FILES: DIRS directories of FILES small files each.
files() {
	perl -e 'my ($top, $nd, $nf) = @ARGV; for my $d (0 .. $nd - 1) { mkdir "$top/d$d" or die "$top/d$d: $!";
		for my $f (0 .. $nf - 1) { open(my $h, ">", "$top/d$d/f$f") or die "$top/d$d/f$f: $!";
			print $h "$d $f " . ("x" x (512 + ($d * $nf + $f) % 1536)) . "\n"; close($h) } }' "$@"
}
files "$t/small" 50 100
{
	printf 'CC = gcc\nCFLAGS = -O1\nOBJS ='
	for ((i = 0; i < 40; i++)); do printf ' f%d.o' $i; done
	printf '\n\nprog: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\n%%.o: %%.c common.h\n\t$(CC) $(CFLAGS) -c $<\n\nclean:\n\trm -f prog $(OBJS)\n'
} >"$t/c/Makefile"
printf '#include <stdio.h>\n#include <string.h>\n#include <stdlib.h>\nint f(int);\n' >"$t/c/common.h"
for ((i = 0; i < 40; i++)); do
	{
		echo '#include "common.h"'
		for ((j = 0; j < 20; j++)); do
			printf 'static int g%d(int x) { char b[64]; snprintf(b, sizeof b, "%%d", x * %d); return (int)strlen(b) + atoi(b); }\n' $j $j
		done
		if [ $i = 0 ]; then
			printf 'int main(void) { printf("%%d\\n", g0(1) + g19(2)); return 0; }\n'
		else
			printf 'int f%d(int x) { return g0(x) + g19(x); }\n' $i
		fi
	} >"$t/c/f$i.c"
done
printf 'module example.com/b\n\ngo 1.22\n' >"$t/gomod/go.mod"
for ((p = 0; p < 8; p++)); do
	mkdir "$t/gomod/p$p"
	{
		printf 'package p%d\n\nimport (\n\t"fmt"\n\t"strings"\n' $p
		[ $p -gt 0 ] && printf '\n\t"example.com/b/p%d"\n' $((p - 1))
		printf ')\n\n'
		for ((j = 0; j < 30; j++)); do
			printf 'func F%d(s string) string { return strings.ToUpper(fmt.Sprint(s, %d)) }\n\n' $j $j
		done
		if [ $p -gt 0 ]; then
			printf 'func Chain() string { return p%d.Chain() + F0("x") }\n' $((p - 1))
		else
			printf 'func Chain() string { return Gen + F0("x") }\n'
		fi
	} >"$t/gomod/p$p/p.go"
done
printf 'package p0\n\nconst Gen = "0"\n' >"$t/gomod/p0/gen.go"
printf 'package main\n\nimport (\n\t"fmt"\n\n\t"example.com/b/p7"\n)\n\nfunc main() { fmt.Println(p7.Chain()) }\n' >"$t/gomod/main.go"
mkdir "$work/meta"
files "$work/meta" 100 100
tar -cf "$t/meta.tar" -C "$work" meta
rm -rf "$work/meta"
cat >"$t/work.sh" <<'EOF'
# The work, in the sandbox, in /mnt/t; prints "NAME MICROSECONDS" lines,
# or "NAME FAIL" (and what it said, on stderr) for work that failed.
export GOCACHE=/mnt/t/.gocache GOPATH=/mnt/t/.gopath GOFLAGS=-mod=mod GOTOOLCHAIN=local GOPROXY=off CGO_ENABLED=0
tm() {
	local name=$1 s e
	shift
	s=${EPOCHREALTIME/./}
	if "$@" >/tmp/out 2>&1; then
		e=${EPOCHREALTIME/./}
		echo "$name $((e - s))"
	else
		echo "$name FAIL"
		{ echo "$name failed:"; tail -n 5 /tmp/out; } >&2
	fi
}
catsmall() { find small -type f -print0 | xargs -0 cat; }
gobuild() { (cd gomod && printf 'package p0\n\nconst Gen = "%s"\n' "$EPOCHREALTIME" >p0/gen.go && go build -o b .); }
cbuild() { make -s -C c clean && make -s -j2 -C c; }
tm "git-status-first" git -C repo status --porcelain
tm "git-status-again" git -C repo status --porcelain
tm "grep-r-first" grep -r -c --exclude-dir=.git -e 'func.*error' repo
tm "grep-r-again" grep -r -c --exclude-dir=.git -e 'func.*error' repo
tm "cat-small-first" catsmall
tm "cat-small-again" catsmall
tm "make-c" cbuild
tm "go-build" gobuild
rm -rf x 2>/dev/null
mkdir -p x
tm "untar-10k" tar -xf meta.tar -C x
tm "rm-rf-10k" rm -rf x
EOF
for mode in ${MODES:-bind serve-bind bindfs} ${BASE:+base}; do cp -a "$t" "$work/tree-$mode"; done
rm -rf "$t"
# The sandbox is nobody on the host (caplin run as root, without
# subordinate IDs): the trees are its own.
chown -R 65534:65534 "$work"/tree-*

unshare -m --propagation private "$self" --inner "$work" "$runs"

echo "medians of $runs rounds, ms (ratios: A/B; targets for serve-bind/bind in brackets):"
awk -v runs="$runs" '
# med(K): the median time of K in ms, or -1 if any run of it failed.
function med(k,   n, i, j, t, a) {
	if (k in failed) return -1
	n = cnt[k]
	for (i = 1; i <= n; i++) a[i] = v[k, i]
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return a[int((n + 1) / 2)] / 1000
}
function ms(x) { return x < 0 ? "failed" : sprintf("%.1f", x) }
function ratio(a, b) { return a < 0 || b <= 0 ? "-" : sprintf("%.2fx", a / b) }
{ k = $1 SUBSEP $2; if ($3 == "FAIL") failed[k] = 1; else v[k, ++cnt[k]] = $3; seenm[$1] = 1; if (!($2 in seenw)) { seenw[$2] = 1; work[++nw] = $2 } }
END {
	split("bind serve-bind bindfs base", order, " ")
	for (i = 1; i <= 4; i++) if (order[i] in seenm) modes[++nm] = order[i]
	target["git-status"] = "1.3"; target["grep-r"] = "1.3"; target["cat-small"] = "1.3"
	target["make-c"] = "1.5"; target["go-build"] = "1.5"; target["untar-10k"] = "2"; target["rm-rf-10k"] = "2"
	printf "  %-18s", "work"
	for (m = 1; m <= nm; m++) printf " %10s", modes[m]
	for (m = 2; m <= nm; m++) printf " %16s", modes[m] "/bind"
	if (("serve-bind" in seenm) && ("bindfs" in seenm)) printf " %18s", "serve-bind/bindfs"
	if (("serve-bind" in seenm) && ("base" in seenm)) printf " %16s", "serve-bind/base"
	printf "\n"
	for (w = 1; w <= nw; w++) {
		name = work[w]; base = name; sub(/-(first|again)$/, "", base)
		printf "  %-18s", name
		for (m = 1; m <= nm; m++) printf " %10s", ms(med(modes[m] SUBSEP name))
		b = med("bind" SUBSEP name)
		for (m = 2; m <= nm; m++) {
			r = ratio(med(modes[m] SUBSEP name), b)
			if (modes[m] == "serve-bind") printf " %10s [<=%s]", r, target[base]
			else printf " %16s", r
		}
		if (("serve-bind" in seenm) && ("bindfs" in seenm)) printf " %18s", ratio(med("serve-bind" SUBSEP name), med("bindfs" SUBSEP name))
		if (("serve-bind" in seenm) && ("base" in seenm)) printf " %16s", ratio(med("serve-bind" SUBSEP name), med("base" SUBSEP name))
		printf "\n"
	}
}' "$work/times"
