package dir

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The *xattrat system calls (Linux 6.13), which x/sys does not wrap: they
// act on a name relative to a directory descriptor, with AT_ flags, so an
// attribute of a name that must not be followed can be read without /proc.

// xattrArgs is struct xattr_args.
type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

func bytePtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

// xattrat makes the *xattrat call trap on path (relative to dirfd) with
// atFlags and, if attr is not "", the attribute name attr; a3 and a4 are
// its last two arguments.
func xattrat(trap uintptr, dirfd int, path string, atFlags int, attr string, a3 unsafe.Pointer, a4 uintptr) (int, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return 0, err
	}
	var a *byte
	if attr != "" {
		if a, err = unix.BytePtrFromString(attr); err != nil {
			return 0, err
		}
	}
	n, _, e := unix.Syscall6(trap, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(atFlags), uintptr(unsafe.Pointer(a)), uintptr(a3), a4)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func getxattrat(dirfd int, path string, atFlags int, attr string, dest []byte) (int, error) {
	args := xattrArgs{value: uint64(uintptr(bytePtr(dest))), size: uint32(len(dest))}
	return xattrat(unix.SYS_GETXATTRAT, dirfd, path, atFlags, attr, unsafe.Pointer(&args), unsafe.Sizeof(args))
}

func setxattrat(dirfd int, path string, atFlags int, attr string, value []byte, flags int) error {
	args := xattrArgs{value: uint64(uintptr(bytePtr(value))), size: uint32(len(value)), flags: uint32(flags)}
	_, err := xattrat(unix.SYS_SETXATTRAT, dirfd, path, atFlags, attr, unsafe.Pointer(&args), unsafe.Sizeof(args))
	return err
}

func removexattrat(dirfd int, path string, atFlags int, attr string) error {
	_, err := xattrat(unix.SYS_REMOVEXATTRAT, dirfd, path, atFlags, attr, nil, 0)
	return err
}

// listxattrat(dirfd, path, atFlags, list, size): the list is the fourth
// argument, where the others take the attribute name.
func listxattrat(dirfd int, path string, atFlags int, dest []byte) (int, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return 0, err
	}
	n, _, e := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(atFlags),
		uintptr(bytePtr(dest)), uintptr(len(dest)), 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
