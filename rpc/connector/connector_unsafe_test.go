package connector

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// disconnect dissolves a socket's association with its peer, as
// connect(2) with an address of family AF_UNSPEC does; x/sys/unix has no
// Sockaddr for it.
func disconnect(fd int) error {
	var sa [16]byte // a sockaddr with sa_family = AF_UNSPEC (0)
	_, _, errno := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa[0])), uintptr(len(sa)))
	if errno != 0 {
		return errno
	}
	return nil
}
