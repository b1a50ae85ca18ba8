#!/usr/bin/env bash
# bench/pjdfstest.sh — runs pjdfstest (github.com/pjd/pjdfstest, the POSIX
# file-system suite) in a directory given to `caplin run` in each of
# several ways, for the same users, and compares: every case that passes
# on a kernel bind must pass on a served mount (issue 15).
#
# Modes (the way the test directory reaches the sandbox, at /mnt/t):
#   bind        caplin run --bind DIR /mnt/t            (the reference)
#   serve-bind  caplin run --serve-bind DIR /mnt/t      (skipped while caplin
#                                                      run has no such flag)
#   bindfs      caplin run --bind MNT /mnt/t, MNT a bindfs of DIR (a C FUSE
#               pass-through, as a peer; skipped when bindfs is missing)
# Users (who runs the suite, as uid 0 inside with every capability of the
# sandbox's user namespace, as pjdfstest needs):
#   root        caplin run by root, the sandbox's IDs 0-65535 mapped to
#               the host's 200000-265535: a subordinate range that this
#               script gives root in a private mount namespace of its own
#               (an /etc/subuid bound over the host's there; the host's
#               files are not changed), so that the suite may chown to
#               the uids it uses (65533, 65534, ...)
#   nobody      caplin run by uid 65534: the sandbox's uid 0 alone, mapped
#               to 65534, so chown to other uids fails (EINVAL) in every
#               mode alike
#
# SRC is a pjdfstest source tree, or a git directory of one (the search
# tool's fetched copy, /work/.mirror/pjd+pjdfstest/repo, say); it is
# copied and built in a temporary directory (autoconf and automake are
# installed with apt-get if missing). The suite's file-system type is the
# one of the directory underneath (EXT4, say) in every mode, so that a
# FUSE mount is held to the same assertions (tests/conf reads it from
# PJDFSTEST_FS in the copy).
#
# Prints, for each user and mode: test files, passed and failed files,
# tests, failed tests; then for each user and mode other than bind the test
# files that pass on the bind but fail there, with the subtests that do.
# Full prove logs are kept in the directory it names.
#
# Usage: [MODES="bind serve-bind bindfs"] [USERS="root nobody"]
#        [TIMEOUT=SECONDS] [REFERENCE=DIR] bench/pjdfstest.sh SRC [PROVE-ARGS...]
# (PROVE-ARGS narrow the run: tests/chmod, say; default: tests. REFERENCE:
# the work directory of an earlier run whose bind results to compare with
# when MODES has no bind.)
#        [USERS=...] [MODES=...] [REFERENCE=DIR] bench/pjdfstest.sh --report WORK
# (prints the counts and regressions of an earlier run's logs in WORK)
# Runs as root (to mount bindfs and give root a subordinate range).
set -euo pipefail

if [ "${1:-}" = --inner ]; then
	# --inner USER MODE DIR CAPLIN SUITE LOG PROVE-ARGS...: one run, in a
	# private mount namespace (see below).
	shift
	user=$1 mode=$2 dir=$3 caplin=$4 suite=$5 log=$6
	shift 6
	src=$dir
	if [ "$user" = root ]; then
		mount --bind "$suite/../subuid" /etc/subuid
		mount --bind "$suite/../subuid" /etc/subgid
	fi
	flag=--bind
	case $mode in
	serve-bind)
		flag=--serve-bind
		"$(dirname "$0")/fusedev.sh" "$dir.fusedev"
		;;
	bindfs)
		src=$dir.bindfs
		mkdir -p "$src"
		bindfs ${BINDFS_OPTS:-} "$dir" "$src"
		;;
	esac
	as=()
	[ "$user" = nobody ] && as=(setpriv --reuid 65534 --regid 65534 --clear-groups)
	tests=()
	for a in "$@"; do tests+=("/pjdfstest/$a"); done
	set +e
	timeout -k 10 "${TIMEOUT:-3600}" "${as[@]}" "$caplin" run --system --uid 0 --gid 0 --cap-add ALL \
		--setenv PJDFSTEST_FS "$PJDFSTEST_FS" --ro-bind "$suite" /pjdfstest \
		"$flag" "$src" /mnt/t --chdir /mnt/t -- prove -r "${tests[@]}" >"$log" 2>&1
	status=$?
	set -e
	[ "$mode" = bindfs ] && { fusermount -u "$src" || umount -l "$src"; }
	exit $status
fi

# summarize USER MODE [SECONDS]: USER-MODE.failed from the prove log
# USER-MODE.log (each failing test file and its failed subtests, "FILE
# N,M-K,..." or "FILE whole"), and the counts.
summarize() {
	local log=$work/$1-$2.log
	awk '
		/^\/pjdfstest\/.*\(Wstat:/ { f = $1; fail[f] = ""; order[++n] = f; want = 1; cont = 0; next }
		want && /^  Failed tests?:/ { sub(/^  Failed tests?: */, ""); fail[f] = fail[f] $0; cont = 1; next }
		want && /^  Parse errors:|^  Non-zero/ { fail[f] = fail[f] (fail[f] == "" ? "" : ",") "whole"; cont = 0; next }
		want && cont && /^          *[0-9]/ { s = $0; gsub(/ /, "", s); fail[f] = fail[f] "," s; next }
		# Other lines ("  TODO passed:", a TODO test that passed) and
		# theirs are no failures.
		want && /^  [A-Z]/ { cont = 0; next }
		/^Files=/ { want = 0 }
		END { for (i = 1; i <= n; i++) { s = fail[order[i]]; gsub(/ /, "", s); print order[i], (s == "" ? "whole" : s) } }
	' "$log" >"$work/$1-$2.failed"
	awk -v um="$1/$2" -v secs="${3:-}" '
		FILENAME ~ /\.failed$/ { ff++; n = split($2, r, ","); for (i = 1; i <= n; i++) { if (split(r[i], ab, "-") == 2) ft += ab[2] - ab[1] + 1; else if (r[i] ~ /^[0-9]+$/) ft++ } next }
		/^Files=/ { sub(/,$/, "", $1); sub(/,$/, "", $2); split($1, a, "="); split($2, b, "="); files = a[2]; tests = b[2] }
		/^Result:/ { result = $2 }
		END { printf "  %-18s files %4d: %4d passed, %3d failed; tests %5d: %5d passed, %4d failed; %s%s\n", um, files, files - ff, ff, tests, tests - ft, ft, result == "" ? "NO RESULT" : result, secs == "" ? "" : " in " secs "s" }
	' "$work/$1-$2.failed" "$log"
}

# regressions: the test files (and their subtests) that pass on the bind
# but fail in another mode, per user.
regressions() {
	for user in $users; do
		ref=$work/$user-bind.failed
		[ -f "$ref" ] || ref=${REFERENCE:-/nonexistent}/$user-bind.failed
		[ -f "$ref" ] || continue
		for mode in $modes; do
			[ "$mode" != bind ] && [ -f "$work/$user-$mode.failed" ] || continue
			echo "$user: passing on bind, failing on $mode:"
			awk '
				function expand(s, set,   n, r, i, ab, j) {
					n = split(s, r, ",")
					for (i = 1; i <= n; i++) {
						if (split(r[i], ab, "-") == 2) for (j = ab[1]; j <= ab[2]; j++) set[j] = 1
						else set[r[i]] = 1
					}
				}
				FNR == NR { base[$1] = $2; next }
				{
					if (!($1 in base)) { print "  " $1 ": " $2; k++; next }
					if (base[$1] == "whole") next
					delete b; delete m
					expand(base[$1], b); expand($2, m)
					n = 0
					for (t in m) if (!(t in b)) { for (i = ++n; i > 1 && l[i - 1] + 0 > t + 0; i--) l[i] = l[i - 1]; l[i] = t }
					out = ""
					for (i = 1; i <= n; i++) out = out " " l[i]
					if (n) { print "  " $1 ":" out; k++ }
				}
				END { if (!k) print "  none" }
			' "$ref" "$work/$user-$mode.failed"
		done
	done
}

if [ "${1:-}" = --report ]; then
	# --report WORK: the counts and regressions of an earlier run's logs.
	work=$2
	users=${USERS:-root nobody}
	modes=${MODES:-bind serve-bind bindfs}
	for user in $users; do
		for mode in $modes; do
			[ -f "$work/$user-$mode.log" ] && summarize "$user" "$mode"
		done
	done
	regressions
	exit 0
fi

[ $# -ge 1 ] || { echo "usage: bench/pjdfstest.sh SRC [PROVE-ARGS...]" >&2; exit 2; }
src=$(realpath "$1")
shift
[ $# -ge 1 ] || set -- tests
[ "$(id -u)" = 0 ] || { echo "pjdfstest.sh: run it as root" >&2; exit 1; }
self=$(realpath "$0")
cd "$(dirname "$0")/.."

for tool in autoreconf automake prove; do
	command -v $tool >/dev/null || { apt-get update -qq && apt-get install -y -qq autoconf automake perl >/dev/null; break; }
done
work=$(mktemp -d /var/tmp/caplin-pjdfstest.XXXXXX)
chmod 755 "$work"
echo "pjdfstest.sh: work and logs in $work"
CGO_ENABLED=0 go build -o "$work/caplin" ./cmd/caplin
mkdir "$work/suite"
if [ -d "$src/objects" ] || [ -d "$src/.git" ] && [ ! -f "$src/pjdfstest.c" ]; then
	git -C "$src" archive HEAD | tar -x -C "$work/suite"
else
	cp -a "$src/." "$work/suite"
fi
(cd "$work/suite" && autoreconf -ifs && ./configure -q && make -s pjdfstest) >"$work/build.log" 2>&1 ||
	{ echo "pjdfstest.sh: the build failed; see $work/build.log" >&2; exit 1; }
# The same file-system type in every mode: the one underneath.
echo 'fs=${PJDFSTEST_FS:-$fs}' >>"$work/suite/tests/conf"
chmod -R a+rX "$work/suite"
echo root:200000:65536 >"$work/subuid"
chmod 644 "$work/subuid"
PJDFSTEST_FS=$(df -PT "$work" | awk 'END { print toupper($2) }')
export PJDFSTEST_FS

modes=${MODES:-bind serve-bind bindfs}
users=${USERS:-root nobody}
have_flag() { "$work/caplin" run --help 2>&1 | grep -q -- "--$1 "; }
echo "suite: pjdfstest $(git -C "$src" log -1 --format=%h 2>/dev/null || echo "from $src"), prove -r $*; file system $PJDFSTEST_FS"
for user in $users; do
	for mode in $modes; do
		case $mode in
		serve-bind) have_flag serve-bind || { echo "  $user/$mode: skipped: caplin run has no --serve-bind"; continue; } ;;
		bindfs) command -v bindfs >/dev/null || { echo "  $user/$mode: skipped: bindfs is not installed"; continue; } ;;
		bind) ;;
		*) echo "pjdfstest.sh: unknown mode $mode" >&2; exit 2 ;;
		esac
		dir=$work/t-$user-$mode
		mkdir "$dir"
		if [ "$user" = root ]; then chown 200000:200000 "$dir"; else chown 65534:65534 "$dir"; fi
		log=$work/$user-$mode.log
		s=${EPOCHREALTIME/./}
		unshare -m --propagation private "$self" --inner "$user" "$mode" "$dir" "$work/caplin" "$work/suite" "$log" "$@" || true
		e=${EPOCHREALTIME/./}
		summarize "$user" "$mode" $(((e - s) / 1000000))
	done
done

regressions
