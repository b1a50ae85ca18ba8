#!/usr/bin/env bash
# bench/bwrap-suite.sh — runs bubblewrap's own test suite (tests/test-run.sh
# of a bubblewrap source tree, v0.11.1 or later) against caplin acting as
# bwrap, as the caller and, when the caller is root, again as uid 65534, and
# prints each run's ok and skip counts and its first failure.
#
# Usage: bench/bwrap-suite.sh [BUBBLEWRAP_SOURCE_TREE]   (or set BWRAP_SRC)
#
# The tree is only read: its tests are copied to a temporary directory
# (readable by uid 65534), caplin is built there as a file named bwrap, and
# everything is removed at the end. The suite stops at its first failure
# (it runs under set -e), so a run's count is of the checks before it.
#
# One check is skipped where it cannot apply, as docs/bwrap.md explains: run
# by root, "pre-exec failure doesn't include exit-code in json-status"
# injects a failure into the 39th prctl call of each process with strace;
# bubblewrap makes that many in its setup, caplin's processes make fewer
# when root keeps its capabilities, so nothing fails and the check would
# see the program's own exit code. (Run as uid 65534, it applies, and runs.)
#
# Needs go, bash, python3, capsh and getpcaps (libcap2-bin) and, as root,
# setpriv (util-linux); strace is optional, and so is bindfs (FUSE), for the
# suite's FUSE checks.
set -euo pipefail
src=${1:-${BWRAP_SRC:-}}
if [ -z "$src" ] || [ ! -f "$src/tests/test-run.sh" ]; then
	echo "usage: $0 BUBBLEWRAP_SOURCE_TREE (or BWRAP_SRC): a tree with tests/test-run.sh" >&2
	exit 2
fi
src=$(cd "$src" && pwd)
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/caplin-bwrap-suite.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
mkdir "$work/bin"
CGO_ENABLED=0 go build -o "$work/bin/bwrap" ./cmd/caplin
chmod 755 "$work/bin" "$work/bin/bwrap"

# suite WHO: runs a fresh copy of the tests as WHO (root, nobody: uid 65534
# from root, or self) and prints the counts and the first failure.
suite() {
	local who=$1 dir="$work/tests-$1" log="$work/log-$1" rc=0
	cp -r "$src/tests" "$dir"
	local as=()
	if [ "$who" = nobody ]; then
		chown -R 65534:65534 "$dir"
		as=(setpriv --reuid 65534 --regid 65534 --clear-groups)
	elif [ "$(id -u)" = 0 ]; then
		# The documented exception above: take the suite's own branch
		# for a strace without fault injection.
		sed -i 's/^if ! command -v strace >\/dev\/null ||/if true ||/' "$dir/test-run.sh"
	fi
	# A FUSE mount of WHO's, which the suite looks for in /proc/self/mounts
	# (its "can bind-mount a FUSE directory" checks): bindfs, where it is
	# installed (apt-get install bindfs); else the suite skips them.
	local fuse=""
	if command -v bindfs >/dev/null; then
		fuse="$work/fuse-$who"
		mkdir -p "$fuse/src" "$fuse/mnt"
		[ "$who" = nobody ] && chown -R 65534:65534 "$fuse"
		"${as[@]}" bindfs "$fuse/src" "$fuse/mnt" || fuse=""
	fi
	# In a session of its own, whose processes are killed after it: the
	# suite leaves background loops behind when it stops at a failure.
	(cd "$dir" && exec setsid "${as[@]}" env HOME="$dir" PATH="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
		BWRAP="$work/bin/bwrap" bash test-run.sh) >"$log" 2>&1 &
	local pid=$!
	wait "$pid" || rc=$?
	kill -KILL -- "-$pid" 2>/dev/null || true
	if [ -n "$fuse" ]; then
		fusermount -u "$fuse/mnt" 2>/dev/null || fusermount3 -u "$fuse/mnt" 2>/dev/null || umount "$fuse/mnt" || true
	fi
	local oks skips
	oks=$(grep -c '^ok [0-9]' "$log" || true)
	skips=$(grep -c '^ok [0-9]* # SKIP' "$log" || true)
	echo "as $who: $((oks - skips)) ok, $skips skipped$(grep -q '^1\.\.[0-9]' "$log" && echo ", all run" || true)"
	if [ "$rc" != 0 ]; then
		echo "  stopped (exit $rc) after: $(grep '^ok [0-9]' "$log" | tail -1)"
		echo "  first failure (the suite's last lines, without its trace):"
		grep -v '^+' "$log" | uniq | tail -8 | sed 's/^/    /'
	fi
	grep '^ok [0-9]* # SKIP' "$log" | sed 's/^/  /' || true
	return "$rc"
}

status=0
if [ "$(id -u)" = 0 ]; then
	suite root || status=1
	suite nobody || status=1
else
	suite self || status=1
fi
exit "$status"
