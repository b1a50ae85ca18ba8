package netgrant

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// connectRaw connects fd to the address raw holds, as the program gave
// it (which the kernel checks as it checks the program's), and returns
// the kernel's errno (0 on success).
func connectRaw(fd int, raw []byte) unix.Errno {
	var p unsafe.Pointer
	if len(raw) > 0 {
		p = unsafe.Pointer(&raw[0])
	}
	_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(p), uintptr(len(raw)))
	return e
}

// addrOf returns the address of b, for process_vm_readv.
func addrOf(b *byte) uint64 { return uint64(uintptr(unsafe.Pointer(b))) }

// bindRaw binds fd to the address raw holds, as the program gave it,
// and returns the kernel's errno (0 on success).
func bindRaw(fd int, raw []byte) unix.Errno {
	var p unsafe.Pointer
	if len(raw) > 0 {
		p = unsafe.Pointer(&raw[0])
	}
	_, _, e := unix.RawSyscall(unix.SYS_BIND, uintptr(fd), uintptr(p), uintptr(len(raw)))
	return e
}
