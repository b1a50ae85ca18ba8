package proc

import (
	"bytes"
	"context"
	"testing"

	"golang.org/x/sys/unix"
)

// TestBlobsStartZeroed sends a message from the child after a request
// whose data left non-zero bytes in the handle's request buffer: the
// msghdr Sendmsg lays out relies on its unset fields being zero.
func TestBlobsStartZeroed(t *testing.T) {
	ctx := context.Background()
	h := fork(t, nil)
	var fds [2]int
	var b Batch
	b.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0, &fds)
	null := b.Openat(Int(unix.AT_FDCWD), "/dev/null", unix.O_WRONLY, 0)
	b.Write(null, bytes.Repeat([]byte{0xff}, 4096))
	if _, err := h.Run(ctx, &b); err != nil {
		t.Fatal(err)
	}
	var s Batch
	s.Sendmsg(Int(fds[0]), []byte("x"), []Val{Int(fds[1])}, 0)
	if _, err := h.Run(ctx, &s); err != nil {
		t.Errorf("sendmsg after a request that left data behind: %v", err)
	}
}
