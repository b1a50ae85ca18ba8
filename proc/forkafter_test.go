package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestForkAfter: the calls before a fork run in the handle's child first,
// in the same round trip, so the new child has what they made; when one
// fails, the error is that call's and nothing is forked.
func TestForkAfter(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, nil)
	nsOf := func(pid int) string {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/uts", pid))
		return l
	}
	var pre Batch
	pre.Unshare(unix.CLONE_NEWUSER | unix.CLONE_NEWUTS)
	g, err := h.ForkAfter(ctx, &pre, nil)
	skipWithoutUserNS(t, err)
	defer g.Close()
	if nsOf(g.Pid()) == "" || nsOf(g.Pid()) != nsOf(h.Pid()) || nsOf(g.Pid()) == nsOf(os.Getpid()) {
		t.Errorf("forked child's UTS namespace %q, its parent handle's %q, ours %q: want the one the handle made first", nsOf(g.Pid()), nsOf(h.Pid()), nsOf(os.Getpid()))
	}
	if code := shellStatus(t, g, "exit 4"); code != 4 {
		t.Errorf("forked child's status %d, want exit 4", code)
	}

	// A failing call of pre: its error, its index, no child; the handle
	// still serves, and forks.
	var bad Batch
	bad.Getpid()
	bad.Chdir("/nonexistent-forkafter")
	c, err := h.ForkAfter(ctx, &bad, nil)
	var be *BatchError
	if c != nil || !errors.As(err, &be) || be.Index != 1 || !errors.Is(err, unix.ENOENT) {
		t.Fatalf("ForkAfter with a failing chdir = %v, %v; want no child and a *BatchError of call 1, ENOENT", c, err)
	}
	c, err = h.ForkAfter(ctx, nil, nil)
	if err != nil {
		t.Fatalf("ForkAfter(nil) after a failed one: %v", err)
	}
	defer c.Close()
	if code := shellStatus(t, c, "exit 5"); code != 5 {
		t.Errorf("forked child's status %d, want exit 5", code)
	}
}
