package served

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// setgroupsThread sets the calling thread's supplementary groups only
// (the system call; Go's syscall.Setgroups sets every thread's).
func setgroupsThread(gids []uint32) error {
	var p unsafe.Pointer
	if len(gids) > 0 {
		p = unsafe.Pointer(&gids[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gids)), uintptr(p), 0); e != 0 {
		return e
	}
	return nil
}
