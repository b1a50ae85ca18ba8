package netgrant

// The seccomp user-notification interface (seccomp_unotify(2)): the
// structures and ioctls of a listener, which x/sys/unix does not wrap.

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// seccompData is struct seccomp_data.
type seccompData struct {
	nr   int32
	arch uint32
	ip   uint64
	args [6]uint64
}

// notif is struct seccomp_notif, as far as caplin reads it. The kernel's
// may be larger (SECCOMP_GET_NOTIF_SIZES): recv gives it a buffer of the
// kernel's size.
type notif struct {
	id    uint64
	pid   uint32
	flags uint32
	data  seccompData
}

// notifResp is struct seccomp_notif_resp.
type notifResp struct {
	id    uint64
	val   int64
	error int32
	flags uint32
}

// notifAddfd is struct seccomp_notif_addfd.
type notifAddfd struct {
	id         uint64
	flags      uint32
	srcfd      uint32
	newfd      uint32
	newfdFlags uint32
}

// The ioctls: _IOWR('!', 0, struct seccomp_notif), _IOWR('!', 1, struct
// seccomp_notif_resp), _IOW('!', 2, __u64), _IOW('!', 3, struct
// seccomp_notif_addfd).
const (
	ioctlRecv    = 0xc0502100
	ioctlSend    = 0xc0182101
	ioctlIDValid = 0x40082102
	ioctlAddfd   = 0x40182103
)

// notifSizes returns the kernel's size of struct seccomp_notif.
func notifSizes() (int, error) {
	var s struct{ notif, resp, data uint16 }
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_NOTIF_SIZES, 0, uintptr(unsafe.Pointer(&s)))
	if errno != 0 {
		return 0, errno
	}
	return int(s.notif), nil
}

// recv receives one notification from listener fd into buf (zeroed
// first, as the kernel requires), which is at least the kernel's size of
// struct seccomp_notif, and returns it.
func recv(fd int, buf []byte) (notif, error) {
	clear(buf)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlRecv, uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return notif{}, errno
	}
	return *(*notif)(unsafe.Pointer(&buf[0])), nil
}

// send answers notification id: with errno (a failed call) when it is
// not zero, else with val; or, with cont, lets the call go on in the
// kernel as if never trapped.
func send(fd int, id uint64, val int64, errno unix.Errno, cont bool) error {
	r := notifResp{id: id, val: val, error: -int32(errno)}
	if cont {
		r = notifResp{id: id, flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE}
	}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlSend, uintptr(unsafe.Pointer(&r)))
	if e != 0 {
		return e
	}
	return nil
}

// idValid reports whether notification id is still pending: its process
// is still in the trapped call (it was not killed, nor interrupted).
func idValid(fd int, id uint64) bool {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlIDValid, uintptr(unsafe.Pointer(&id)))
	return e == 0
}

// addfd installs src in the trapped process at fd number target (as
// dup2 would, closing what was there), close-on-exec if cloexec.
func addfd(fd int, id uint64, src, target int, cloexec bool) error {
	a := notifAddfd{id: id, flags: unix.SECCOMP_ADDFD_FLAG_SETFD, srcfd: uint32(src), newfd: uint32(target)}
	if cloexec {
		a.newfdFlags = unix.O_CLOEXEC
	}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlAddfd, uintptr(unsafe.Pointer(&a)))
	if e != 0 {
		return e
	}
	return nil
}

// sockaddrOf returns a pointer and length for sa, for connect(2).
func rawConnect(fd int, sa []byte) error {
	_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa[0])), uintptr(len(sa)))
	if e != 0 {
		return e
	}
	return nil
}

// readMem copies len(p) bytes at addr in process pid to p.
func readMem(pid int, addr uint64, p []byte) error {
	local := []unix.Iovec{{Base: &p[0], Len: uint64(len(p))}}
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(p)}}
	n, err := unix.ProcessVMReadv(pid, local, remote, 0)
	if err != nil {
		return err
	}
	if n != len(p) {
		return unix.EFAULT
	}
	return nil
}

// ioctlSetFlags is SECCOMP_IOCTL_NOTIF_SET_FLAGS, _IOW('!', 4, __u64)
// (Linux 6.6).
const ioctlSetFlags = 0x40082104

// setSyncWakeUp asks the kernel to wake the listener's waiter, and the
// trapped thread on an answer, on the waking thread's CPU
// (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, Linux 6.6).
func setSyncWakeUp(fd int) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlSetFlags, unix.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
	if e != 0 {
		return e
	}
	return nil
}
