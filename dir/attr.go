package dir

import (
	"errors"

	"golang.org/x/sys/unix"
)

// This file holds the operations a file system server needs on top of the
// io/fs-style ones: each acts on the final element of a name without
// following it, as the *at system call with AT_SYMLINK_NOFOLLOW does.

// onFinal starts an operation on name that needs rights, and runs fn on
// name's final element, never following it: fn gets the directory that
// holds it, its plain name and AT_SYMLINK_NOFOLLOW; or, where the final
// element is ".", ".." or has a trailing slash (which an *at call would
// look up unconfined), the O_PATH|O_NOFOLLOW descriptor the whole path
// resolves to confined, "" and AT_EMPTY_PATH|AT_SYMLINK_NOFOLLOW. Errors
// name op and name.
func (d *Dir) onFinal(op, name string, need Rights, fn func(fd int, base string, flags int) error) error {
	rootfd, p, err := d.beginParent(op, name, need, nil)
	if err != nil {
		return err
	}
	defer d.endParent(&p)
	fd, base, flags := p.fd, p.base, unix.AT_SYMLINK_NOFOLLOW
	if !p.plain {
		lfd, err := openat2(rootfd, name, unix.O_PATH|unix.O_NOFOLLOW, 0, d.mode)
		if err != nil {
			return pathErr(op, name, err)
		}
		defer unix.Close(lfd)
		fd, base, flags = lfd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW
	}
	if err := ignoringEINTR(func() error { return fn(fd, base, flags) }); err != nil {
		return pathErr(op, name, err)
	}
	return nil
}

// Lchown changes the owner and group of the named file in d to the IDs
// uid and gid (-1 leaves one as it is); a symbolic link is changed, not
// followed. It needs RightSetAttr.
func (d *Dir) Lchown(name string, uid, gid int) error {
	return d.onFinal("lchown", name, RightSetAttr, func(fd int, base string, flags int) error {
		return unix.Fchownat(fd, base, uid, gid, flags)
	})
}

// Utimens sets the access and modification times of the named file in d;
// a symbolic link's own times are set, not its target's. A nil time is
// left as it is (UTIME_OMIT), and unix.UTIME_NOW in Nsec means now. It
// needs RightSetAttr.
func (d *Dir) Utimens(name string, atime, mtime *unix.Timespec) error {
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	if atime != nil {
		ts[0] = *atime
	}
	if mtime != nil {
		ts[1] = *mtime
	}
	return d.onFinal("utimens", name, RightSetAttr, func(fd int, base string, flags int) error {
		return unix.UtimesNanoAt(fd, base, ts, flags)
	})
}

// Truncate changes the size of the named regular file in d. It follows no
// symbolic link: the file is opened O_WRONLY|O_NOFOLLOW (ELOOP for a
// link; EISDIR for a directory; O_NONBLOCK, so a FIFO is refused rather
// than waited on) and truncated through that descriptor, so the caller
// needs permission to write the file, as truncate(2) demands. It needs
// RightWrite.
func (d *Dir) Truncate(name string, size int64) error {
	const op = "truncate"
	fd, err := d.openIn(op, name, RightWrite, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := ignoringEINTR(func() error { return unix.Ftruncate(fd, size) }); err != nil {
		return pathErr(op, name, err)
	}
	return nil
}

// Mknod makes the named file in d with mode (its S_IFMT type: a FIFO,
// socket, character or block device, or regular file; and its permission
// bits, before the umask) and, for a device, the device number dev, as
// mknod(2) does: making a device node needs CAP_MKNOD in the file
// system's user namespace. It needs RightCreate.
func (d *Dir) Mknod(name string, mode uint32, dev uint64) error {
	const op = "mknod"
	_, p, err := d.beginParent(op, name, RightCreate, nil)
	if err != nil {
		return err
	}
	defer d.endParent(&p)
	if err := ignoringEINTR(func() error { return unix.Mknodat(p.fd, p.base, mode, int(dev)) }); err != nil {
		return pathErr(op, name, err)
	}
	return nil
}

// Unlink removes the named file in d, which must not be a directory
// (EISDIR, as unlinkat(2) gives); a symbolic link is removed, not
// followed. It needs RightDelete.
func (d *Dir) Unlink(name string) error {
	return d.unlink("unlink", name, 0)
}

// Rmdir removes the named empty directory in d (ENOTDIR if it is not a
// directory, ENOTEMPTY if it holds names, as unlinkat(2) gives). It needs
// RightDelete.
func (d *Dir) Rmdir(name string) error {
	return d.unlink("rmdir", name, unix.AT_REMOVEDIR)
}

func (d *Dir) unlink(op, name string, flags int) error {
	_, p, err := d.beginParent(op, name, RightDelete, nil)
	if err != nil {
		return err
	}
	defer d.endParent(&p)
	if err := ignoringEINTR(func() error { return unix.Unlinkat(p.fd, p.base, flags) }); err != nil {
		return pathErr(op, name, err)
	}
	return nil
}

// RenameFlags renames oldname to newname, both in d, with renameat2(2)'s
// flags (unix.RENAME_NOREPLACE, unix.RENAME_EXCHANGE, unix.RENAME_WHITEOUT;
// 0 is Rename). Neither last element is followed. It needs RightCreate and
// RightDelete, as Rename and Exchange do. Unlike Exchange it takes no
// locks and does not fsync.
func (d *Dir) RenameFlags(oldname, newname string, flags uint) error {
	return d.rename("rename", oldname, newname, flags)
}

// Statfs returns the statfs(2) of the file system that holds the named
// file in d; a final symbolic link is not followed. It needs no right.
func (d *Dir) Statfs(name string) (unix.Statfs_t, error) {
	const op = "statfs"
	var st unix.Statfs_t
	fd, err := d.openIn(op, name, 0, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	if err := ignoringEINTR(func() error { return unix.Fstatfs(fd, &st) }); err != nil {
		return st, pathErr(op, name, err)
	}
	return st, nil
}

// errNoXattrAt is the error of a fallback that needed /proc and found none.
var errNoXattrAt = errors.New("extended attributes of a name need getxattrat and friends (Linux 6.13) or /proc")
