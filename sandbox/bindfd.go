package sandbox

import (
	"errors"
	"os"
	"strconv"
	"strings"

	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// statSource returns what a bind's source is: its FD's file, or the file
// at Source.
func statSource(m *Mount) (os.FileInfo, error) {
	if m.FD != nil {
		return m.FD.Stat()
	}
	return os.Stat(m.Source)
}

// bindFD records, in the first process, while it still sees the caller's
// mounts, the making of the mount that a bind whose source is the
// descriptor m.FD attaches, and returns it.
//
// open_tree cannot clone through a descriptor from another mount
// namespace (the caller's, not the process's copy of it), so:
//   - a descriptor on a mount of the caller's is cloned by its path in the
//     copy, if that path leads to it in the caller's mounts (same device,
//     inode and mount), and a check after the batch makes sure the clone
//     is the same file (bubblewrap's --bind-fd does the same);
//   - any other (a detached mount, as an export's root is) is sent to the
//     process and moved into its root as it is.
func (r *recorder) bindFD(i int, m *Mount) (proc.Val, error) {
	fd := int(m.FD.Fd())
	var want unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_SYNC_AS_STAT, unix.STATX_INO|unix.STATX_MNT_ID, &want); err != nil {
		return proc.Val{}, mountError(i, m, &os.SyscallError{Syscall: "statx", Err: err})
	}
	path, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return proc.Val{}, mountError(i, m, err)
	}
	ours, err := mountIDs("/proc/self/mountinfo")
	if err != nil {
		return proc.Val{}, mountError(i, m, err)
	}
	if !ours[int(want.Mnt_id)] {
		if want.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 {
			return proc.Val{}, mountError(i, m, errNotMount)
		}
		return r.b.PutFile(m.FD, -1), nil
	}
	var wantFS unix.Statfs_t
	if err := unix.Fstatfs(fd, &wantFS); err != nil {
		return proc.Val{}, mountError(i, m, &os.SyscallError{Syscall: "fstatfs", Err: err})
	}
	var at unix.Statx_t
	if !strings.HasPrefix(path, "/") ||
		unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_SYNC_AS_STAT, unix.STATX_INO|unix.STATX_MNT_ID, &at) != nil ||
		!sameFile(&at, &want) || at.Mnt_id != want.Mnt_id {
		return proc.Val{}, mountError(i, m, &os.PathError{Op: "bind", Path: path, Err: errMoved})
	}
	{
		// The path comes from the kernel, with no links in it; one
		// there now was put there since.
		clone := r.b.OpenTree(proc.AtFDCWD(), path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE|unix.AT_SYMLINK_NOFOLLOW)
		got := new(unix.Stat_t)
		gotFS := new(unix.Statfs_t)
		r.b.Fstatat(clone, "", got, unix.AT_EMPTY_PATH)
		r.b.Fstatfs(clone, gotFS)
		const attrs = unix.ST_RDONLY | unix.ST_NOSUID | unix.ST_NODEV | unix.ST_NOEXEC
		r.checks = append(r.checks, func(*proc.Results) error {
			// The same file, on a mount with the same attributes (not
			// another, writable, mount of it).
			if got.Dev != unix.Mkdev(want.Dev_major, want.Dev_minor) || got.Ino != want.Ino || gotFS.Flags&attrs != wantFS.Flags&attrs {
				return mountError(i, m, &os.PathError{Op: "bind", Path: path, Err: errMoved})
			}
			return nil
		})
		return clone, nil
	}
}

// errNotMount: a descriptor to bind is on no mount of the caller's, and
// is not the root of a detached mount either.
var errNotMount = errors.New("neither on a mount of the caller's nor the root of a detached mount (an export)")

// errMoved: the file at a descriptor's path is no longer the descriptor's.
var errMoved = errors.New("no longer the descriptor's file (renamed, or mounted over)")

func sameFile(a, b *unix.Statx_t) bool {
	return a.Ino == b.Ino && a.Dev_major == b.Dev_major && a.Dev_minor == b.Dev_minor
}

// verify runs the checks on what the recorder's batch found, its results
// res.
func (r *recorder) verify(res *proc.Results) error {
	for _, c := range r.checks {
		if err := c(res); err != nil {
			return err
		}
	}
	return nil
}
