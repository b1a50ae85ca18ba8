package probe

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// seccompActionAvail asks the kernel whether it knows the seccomp filter
// return action, with seccomp(SECCOMP_GET_ACTION_AVAIL) (Linux 4.14).
func seccompActionAvail(action uint32) error {
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, uintptr(unsafe.Pointer(&action)))
	if errno != 0 {
		return errno
	}
	return nil
}

// seccompNotifSizes is struct seccomp_notif_sizes.
type seccompNotifSizes struct {
	notif, resp, data uint16
}

// seccompGetNotifSizes returns the sizes of the user-notification structs,
// with seccomp(SECCOMP_GET_NOTIF_SIZES) (Linux 5.0).
func seccompGetNotifSizes() (seccompNotifSizes, error) {
	var s seccompNotifSizes
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_NOTIF_SIZES, 0, uintptr(unsafe.Pointer(&s)))
	if errno != 0 {
		return s, errno
	}
	return s, nil
}
