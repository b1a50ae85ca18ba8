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

func getxattrat(dirfd int, path string, atFlags int, attr string, dest []byte) (int, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return 0, err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return 0, err
	}
	args := xattrArgs{value: uint64(uintptr(bytePtr(dest))), size: uint32(len(dest))}
	n, _, e := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(atFlags),
		uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func setxattrat(dirfd int, path string, atFlags int, attr string, value []byte, flags int) error {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return err
	}
	args := xattrArgs{value: uint64(uintptr(bytePtr(value))), size: uint32(len(value)), flags: uint32(flags)}
	_, _, e := unix.Syscall6(unix.SYS_SETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(atFlags),
		uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	if e != 0 {
		return e
	}
	return nil
}

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

func removexattrat(dirfd int, path string, atFlags int, attr string) error {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return err
	}
	_, _, e := unix.Syscall6(unix.SYS_REMOVEXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(atFlags),
		uintptr(unsafe.Pointer(a)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
