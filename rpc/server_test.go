package rpc

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFailDoesNotWait: Fail on a socket whose peer does not read (its
// buffer full) returns at once, closing it; on one with room, the peer
// reads the failure.
func TestFailDoesNotWait(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	unix.SetNonblock(fds[1], true)
	for {
		if _, err := unix.Write(fds[1], make([]byte, 1024)); err != nil {
			break
		}
	}
	done := make(chan struct{})
	go func() {
		Fail(os.NewFile(uintptr(fds[1]), "full"), errors.New("no"))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Fail waited for a peer that does not read")
	}
	// With room, the failure arrives.
	fds, err = unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	Fail(os.NewFile(uintptr(fds[1]), "room"), &Error{Code: CodeFailed, Text: "gone"})
	c, err := NewClient(os.NewFile(uintptr(fds[0]), "client"), ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Call(context.Background(), "x", nil, nil); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("a call on a failed object: %v, want the failure", err)
	}
}

// TestSendContext: Send to a server that reads nothing waits for room;
// SendContext gives up when its ctx ends.
func TestSendContext(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1]) // the server, which reads nothing
	c, err := NewClient(os.NewFile(uintptr(fds[0]), "client"), ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := strings.Repeat("x", 32<<10)
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := c.SendContext(ctx, "m", big)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return
		}
		if err != nil || i > 10000 {
			t.Fatalf("send %d: %v, want the deadline once the socket is full", i, err)
		}
	}
}
