package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// skipWithoutUserNS skips t when err, a fork's, says the caller may make
// no user namespace here, and fails it on another error.
func skipWithoutUserNS(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSPC) {
		t.Skip("no unprivileged user namespaces here:", err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestJoinPIDNamespace: after JoinPIDNamespace, the children a handle
// forks are born in the pid namespace it joined, with the handle's child
// as their parent (reaping goes through it), while the handle's child
// stays where it was.
func TestJoinPIDNamespace(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	owner, err := Fork(ctx, &Options{From: Direct, NewUser: true, NewPID: true})
	skipWithoutUserNS(t, err)
	defer owner.Close()
	link := func(pid int) string {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
		return l
	}
	open := func(name string) *os.File {
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", owner.Pid(), name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	ns := open("pid")

	// The handle joins the owner's user namespace first, where it has
	// CAP_SYS_ADMIN, which setns asks for in its own namespace too.
	h := fork(t, &Options{From: Direct})
	var b Batch
	user := b.PutFile(open("user"), -1)
	b.Setns(user, unix.CLONE_NEWUSER)
	if _, err := h.Run(ctx, &b); err != nil {
		t.Fatal(err)
	}
	if err := h.JoinPIDNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	c, err := h.Fork(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if link(c.Pid()) != link(owner.Pid()) || link(h.Pid()) == link(owner.Pid()) {
		t.Errorf("pid namespaces: child %q, joining handle %q; want the child's %q, the handle's its own",
			link(c.Pid()), link(h.Pid()), link(owner.Pid()))
	}
	if code := shellStatus(t, c, "exit 4"); code != 4 {
		t.Errorf("the child's status %d, want exit 4", code)
	}
	if err := h.JoinPIDNamespace(ctx, os.Stdin); err == nil {
		t.Error("joining what is not a pid namespace succeeded")
	}
}

// TestIDMapsBy: with Options.IDMapsBy the caller writes the new user
// namespace's maps, given the child's pid, and the child runs as they say;
// its error fails the fork.
func TestIDMapsBy(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	write := func(ctx context.Context, pid int) error {
		for _, f := range []struct{ name, data string }{
			{"setgroups", "deny"},
			{"uid_map", fmt.Sprintf("77 %d 1\n", os.Geteuid())},
			{"gid_map", fmt.Sprintf("78 %d 1\n", os.Getegid())},
		} {
			if err := os.WriteFile(fmt.Sprintf("/proc/%d/%s", pid, f.name), []byte(f.data), 0); err != nil {
				return err
			}
		}
		return nil
	}
	h, err := Fork(ctx, &Options{From: Direct, NewUser: true, IDMapsBy: write})
	skipWithoutUserNS(t, err)
	defer h.Close()
	var b Batch
	uid, gid := b.Geteuid(), b.Getegid()
	res, err := h.Run(ctx, &b)
	if err != nil {
		t.Fatal(err)
	}
	if res.Int(uid) != 77 || res.Int(gid) != 78 {
		t.Errorf("ids inside %d, %d; want the caller's maps' 77, 78", res.Int(uid), res.Int(gid))
	}
	failing := func(context.Context, int) error { return errors.New("no maps") }
	if h, err := Fork(ctx, &Options{From: Direct, NewUser: true, IDMapsBy: failing}); err == nil || !strings.Contains(err.Error(), "no maps") {
		if h != nil {
			h.Close()
		}
		t.Errorf("a failing IDMapsBy: %v", err)
	}
}
