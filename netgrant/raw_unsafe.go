package netgrant

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// connectRaw connects fd to the address raw holds, as the program gave
// it (which the kernel checks as it checks the program's), and returns
// the kernel's errno (0 on success).
func connectRaw(fd int, raw []byte) unix.Errno { return sockaddrCall(unix.SYS_CONNECT, fd, raw) }

// bindRaw binds fd to the address raw holds, as the program gave it,
// and returns the kernel's errno (0 on success).
func bindRaw(fd int, raw []byte) unix.Errno { return sockaddrCall(unix.SYS_BIND, fd, raw) }

// sockaddrCall makes the call nr(fd, raw, len(raw)).
func sockaddrCall(nr uintptr, fd int, raw []byte) unix.Errno {
	var p unsafe.Pointer
	if len(raw) > 0 {
		p = unsafe.Pointer(&raw[0])
	}
	_, _, e := unix.Syscall(nr, uintptr(fd), uintptr(p), uintptr(len(raw)))
	return e
}

// addrOf returns the address of b, for process_vm_readv.
func addrOf(b *byte) uint64 { return uint64(uintptr(unsafe.Pointer(b))) }

// setgroupsThread sets the calling thread's supplementary groups (the
// system call; the C library's and Go's set every thread's).
func setgroupsThread(gids []uint32) unix.Errno {
	var p unsafe.Pointer
	if len(gids) > 0 {
		p = unsafe.Pointer(&gids[0])
	}
	_, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gids)), uintptr(p), 0)
	return e
}
