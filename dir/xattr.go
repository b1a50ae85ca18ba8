package dir

import (
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Extended attributes act on the named file itself, never following a
// final symbolic link. They use the *xattrat system calls of Linux 6.13;
// on older kernels, the file is opened O_PATH|O_NOFOLLOW, confined, and
// its attributes reached through its /proc/self/fd entry (so they need
// /proc), except a symbolic link's, which fail there with EOPNOTSUPP: no
// call of those kernels reaches them without following the link.

// xattrOp runs an extended attribute operation on name's final element:
// at, with the *xattrat calls, or where the kernel lacks them, proc, with
// a /proc/self/fd path of an O_PATH descriptor of it.
func (d *Dir) xattrOp(op, name string, need Rights, at func(fd int, base string, flags int) error, proc func(path string) error) error {
	return d.onFinal(op, name, need, func(fd int, base string, flags int) error {
		var err error
		if testHooks.noXattrAt.Load() {
			err = unix.ENOSYS
		} else if base == "" {
			// fd is the O_PATH descriptor of ".", ".." or "name/": a
			// directory, which the *xattrat calls do not take with
			// AT_EMPTY_PATH (EBADF), but do as "." from it.
			err = at(fd, ".", unix.AT_SYMLINK_NOFOLLOW)
		} else {
			err = at(fd, base, flags)
		}
		if err != unix.ENOSYS {
			return err
		}
		lfd := fd
		if base != "" {
			// A plain name: opening it with O_NOFOLLOW looks nothing else up.
			lfd, err = unix.Openat(fd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(lfd)
		}
		var st unix.Stat_t
		if err := unix.Fstat(lfd, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return unix.EOPNOTSUPP
		}
		err = proc("/proc/self/fd/" + strconv.Itoa(lfd))
		if err == unix.ENOENT {
			return errNoXattrAt
		}
		return err
	})
}

// sizedRead calls read with a buffer until it is large enough: read
// returns the size of the value, or ERANGE if the buffer is too small, and
// with an empty buffer, the size the value has.
func sizedRead(read func([]byte) (int, error)) ([]byte, error) {
	buf := make([]byte, 256)
	for range 8 {
		n, err := read(buf)
		if err == nil {
			return buf[:n], nil
		}
		if err != unix.ERANGE {
			return nil, err
		}
		if n, err = read(nil); err != nil {
			return nil, err
		}
		buf = make([]byte, n+1)
	}
	return nil, unix.ERANGE // the value keeps growing
}

// Getxattr returns the value of the extended attribute attr of the named
// file in d (ENODATA if it has none of that name). It needs RightRead.
func (d *Dir) Getxattr(name, attr string) ([]byte, error) {
	var val []byte
	err := d.xattrOp("getxattr", name, RightRead, func(fd int, base string, flags int) (err error) {
		val, err = sizedRead(func(b []byte) (int, error) { return getxattrat(fd, base, flags, attr, b) })
		return err
	}, func(path string) (err error) {
		val, err = sizedRead(func(b []byte) (int, error) { return unix.Getxattr(path, attr, b) })
		return err
	})
	return val, err
}

// Listxattr returns the names of the extended attributes of the named
// file in d. It needs RightRead.
func (d *Dir) Listxattr(name string) ([]string, error) {
	var list []byte
	err := d.xattrOp("listxattr", name, RightRead, func(fd int, base string, flags int) (err error) {
		list, err = sizedRead(func(b []byte) (int, error) { return listxattrat(fd, base, flags, b) })
		return err
	}, func(path string) (err error) {
		list, err = sizedRead(func(b []byte) (int, error) { return unix.Listxattr(path, b) })
		return err
	})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, n := range strings.Split(string(list), "\x00") {
		if n != "" {
			names = append(names, n)
		}
	}
	return names, nil
}

// Setxattr sets the extended attribute attr of the named file in d to
// value; flags are setxattr(2)'s (unix.XATTR_CREATE, unix.XATTR_REPLACE).
// It needs RightSetAttr.
func (d *Dir) Setxattr(name, attr string, value []byte, flags int) error {
	return d.xattrOp("setxattr", name, RightSetAttr, func(fd int, base string, atFlags int) error {
		return setxattrat(fd, base, atFlags, attr, value, flags)
	}, func(path string) error {
		return unix.Setxattr(path, attr, value, flags)
	})
}

// Removexattr removes the extended attribute attr of the named file in d.
// It needs RightSetAttr.
func (d *Dir) Removexattr(name, attr string) error {
	return d.xattrOp("removexattr", name, RightSetAttr, func(fd int, base string, flags int) error {
		return removexattrat(fd, base, flags, attr)
	}, func(path string) error {
		return unix.Removexattr(path, attr)
	})
}
