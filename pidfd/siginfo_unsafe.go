package pidfd

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// chld is the SIGCHLD part of a siginfo_t on Linux (all architectures
// caplin supports): x/sys/unix leaves it opaque.
type chld struct {
	signo  int32
	errno  int32
	code   int32
	_      int32
	pid    int32
	uid    uint32
	status int32
}

func siginfoChld(si *unix.Siginfo) *chld {
	return (*chld)(unsafe.Pointer(si))
}
