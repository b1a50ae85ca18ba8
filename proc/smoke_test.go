package proc

import (
	"context"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSmoke(t *testing.T) {
	ctx := context.Background()
	h, err := Fork(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	pid, err := h.Getpid(ctx)
	t.Logf("pid %d %v handle pid %d", pid, err, h.Pid())
	fd, err := h.Openat(ctx, unix.AT_FDCWD, "/etc/hostname", unix.O_RDONLY, 0)
	t.Logf("fd %d %v", fd, err)
	buf := make([]byte, 100)
	n, err := h.Read(ctx, fd, buf)
	t.Logf("read %d %v %q", n, err, buf[:n])
	_, err = h.Openat(ctx, unix.AT_FDCWD, "/nonexistent", unix.O_RDONLY, 0)
	t.Logf("err %v", err)
	exe, _ := os.Open("/bin/true")
	p, err := h.Exec(ctx, exe, []string{"true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Wait(ctx)
	t.Logf("state %v %v", st, err)
}
