package proc

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pidfdReaped reports whether the process behind pidfd f has been reaped:
// the kernel shows "Pid: -1" for it then (a zombie still has its pid).
func pidfdReaped(t *testing.T, f *os.File) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), "\nPid:\t-1\n")
}

// forkAndDrop forks a child with opts and drops its Handle without
// closing it. It returns a pidfd of the child's own.
func forkAndDrop(t *testing.T, opts *Options) *os.File {
	t.Helper()
	h, err := Fork(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Getpid(context.Background()); err != nil {
		t.Fatal(err)
	}
	f, err := h.Process().File()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestDroppedHandle drops a Handle without closing it: once the garbage
// collector finds it, its child is killed and reaped, rather than left
// waiting for a request forever.
func TestDroppedHandle(t *testing.T) {
	alsoAsNobody(t)
	for name, opts := range map[string]*Options{
		"tree":     nil,
		"detached": {Detached: true},
		"direct":   {Direct: true},
	} {
		t.Run(name, func(t *testing.T) {
			f := forkAndDrop(t, opts)
			defer f.Close()
			deadline := time.Now().Add(10 * time.Second)
			for !pidfdReaped(t, f) {
				if time.Now().After(deadline) {
					fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}
					n, _ := unix.Poll(fds, 0)
					t.Fatalf("the child of a dropped Handle is still there (exited: %v)", n > 0)
				}
				runtime.GC()
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}
