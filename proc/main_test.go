package proc

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMain lets the test binary serve as a peer process: with
// CAPLIN_TEST_ECHO=FD it echoes SEQPACKET messages on fd FD, the bare
// ping-pong that remote calls are measured against.
func TestMain(m *testing.M) {
	if os.Getenv(envNoCloseRange) != "" {
		noCloseRange()
	}
	if marker := os.Getenv(envOwner); marker != "" {
		owner(marker)
	}
	if fd := os.Getenv("CAPLIN_TEST_ECHO"); fd != "" {
		echo(3)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// echo answers each message on fd with the same bytes, using blocking
// system calls on a locked thread, like a child server does.
func echo(fd int) {
	runtime.LockOSThread()
	buf := make([]byte, 1<<16)
	for {
		n, _, _, _, err := unix.Recvmsg(fd, buf, nil, 0)
		if err != nil || n == 0 {
			return
		}
		if err := unix.Sendmsg(fd, buf[:n], nil, nil, 0); err != nil {
			return
		}
	}
}
