package unotify

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Data is struct seccomp_data: the trapped call.
type Data struct {
	Nr   int32
	Arch uint32
	IP   uint64
	Args [6]uint64
}

// Notif is struct seccomp_notif, as far as caplin reads it. The kernel's
// may be larger (Sizes): Recv gives it a buffer of the kernel's size.
type Notif struct {
	ID    uint64
	PID   uint32
	Flags uint32
	Data  Data
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

// Sizes returns the kernel's size of struct seccomp_notif.
func Sizes() (int, error) {
	var s struct{ notif, resp, data uint16 }
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_NOTIF_SIZES, 0, uintptr(unsafe.Pointer(&s)))
	if errno != 0 {
		return 0, errno
	}
	return int(s.notif), nil
}

// Recv receives one notification from listener fd into buf (zeroed
// first, as the kernel requires), which is at least the kernel's size of
// struct seccomp_notif, and returns it.
func Recv(fd int, buf []byte) (Notif, error) {
	clear(buf)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlRecv, uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return Notif{}, errno
	}
	return *(*Notif)(unsafe.Pointer(&buf[0])), nil
}

// Send answers notification id: with errno (a failed call) when it is
// not zero, else with val; or, with cont, lets the call go on in the
// kernel as if never trapped.
func Send(fd int, id uint64, val int64, errno unix.Errno, cont bool) error {
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

// IDValid reports whether notification id is still pending: its process
// is still in the trapped call (it was not killed, nor interrupted).
func IDValid(fd int, id uint64) bool {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlIDValid, uintptr(unsafe.Pointer(&id)))
	return e == 0
}

// AddFD installs src in the trapped process at fd number target (as
// dup2 would, closing what was there), close-on-exec if cloexec.
func AddFD(fd int, id uint64, src, target int, cloexec bool) error {
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

// AddFDNew installs src in the trapped process at its lowest free fd
// number, close-on-exec if cloexec, and returns that number; with send
// (SECCOMP_ADDFD_FLAG_SEND, Linux 5.14), the trapped call also returns
// it, at once, as if answered.
func AddFDNew(fd int, id uint64, src int, cloexec, send bool) (int, error) {
	a := notifAddfd{id: id, srcfd: uint32(src)}
	if send {
		a.flags = unix.SECCOMP_ADDFD_FLAG_SEND
	}
	if cloexec {
		a.newfdFlags = unix.O_CLOEXEC
	}
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlAddfd, uintptr(unsafe.Pointer(&a)))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// ReadMem copies len(p) bytes at addr in process pid to p.
func ReadMem(pid int, addr uint64, p []byte) error {
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

// SetSyncWakeUp asks the kernel to wake the listener's waiter, and the
// trapped thread on an answer, on the waking thread's CPU
// (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, Linux 6.6).
func SetSyncWakeUp(fd int) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlSetFlags, unix.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
	if e != 0 {
		return e
	}
	return nil
}
