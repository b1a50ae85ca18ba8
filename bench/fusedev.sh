#!/usr/bin/env bash
# bench/fusedev.sh DIR — for bench/served.sh and bench/pjdfstest.sh, run as
# root in a private mount namespace of theirs: binds a FUSE device node of
# mode 0666 (made on a tmpfs at DIR) over /dev/fuse, unless /dev/fuse is
# open to all already, because caplin run as root runs its sandboxes as an
# unprivileged host user, who must open /dev/fuse for a served mount. The
# host's /dev/fuse is not changed.
set -euo pipefail
[ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ] || exit 0
mkdir -p "$1"
mount -t tmpfs -o mode=0755 tmpfs "$1"
mknod -m 0666 "$1/fuse" c 10 229
mount --bind "$1/fuse" /dev/fuse
umount -l "$1"
