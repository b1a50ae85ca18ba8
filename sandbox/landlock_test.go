package sandbox

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

func landlocked(t *testing.T, p *LandlockPolicy) *proc.Handle {
	t.Helper()
	abi, err := LandlockABI()
	if err != nil {
		t.Skip(err)
	}
	_ = abi
	ctx := context.Background()
	h, err := proc.Fork(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if _, err := ApplyLandlock(ctx, h, p); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestLandlockFiles grants a read-only tree and a read-write one, then
// tries to read, write and create outside and inside them.
func TestLandlockFiles(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	ro, rw := testenv.SharedTempDir(t), testenv.SharedTempDir(t)
	outside := testenv.SharedTempDir(t)
	os.WriteFile(filepath.Join(ro, "r"), []byte("r"), 0o666)
	os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o666)
	p := &LandlockPolicy{
		Paths:      []PathGrant{{Path: ro, Access: AccessRead}, {Path: rw, Access: AccessWrite}, {Path: "/proc", Access: AccessRead}},
		BestEffort: true,
	}
	h := landlocked(t, p)
	open := func(path string, flags int) error {
		fd, err := h.Openat(ctx, unix.AT_FDCWD, path, flags|unix.O_CLOEXEC, 0o644)
		if err == nil {
			h.CloseFD(ctx, fd)
		}
		return err
	}
	if err := open(filepath.Join(ro, "r"), unix.O_RDONLY); err != nil {
		t.Errorf("read in the read-only grant: %v", err)
	}
	for _, c := range []struct {
		what  string
		path  string
		flags int
	}{
		{"write in the read-only grant", filepath.Join(ro, "r"), unix.O_WRONLY},
		{"create in the read-only grant", filepath.Join(ro, "new"), unix.O_CREAT | unix.O_WRONLY},
		{"read outside the grants", filepath.Join(outside, "secret"), unix.O_RDONLY},
		{"read /etc, not granted", "/etc/hostname", unix.O_RDONLY},
		{"through .. out of a grant", filepath.Join(rw, "..", filepath.Base(outside), "secret"), unix.O_RDONLY},
	} {
		if err := open(c.path, c.flags); !errors.Is(err, unix.EACCES) {
			t.Errorf("%s: %v, want EACCES", c.what, err)
		}
	}
	if err := open(filepath.Join(rw, "new"), unix.O_CREAT|unix.O_WRONLY); err != nil {
		t.Errorf("create in the read-write grant: %v", err)
	}
	// A symlink inside a grant that points outside does not help.
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(rw, "link"))
	if err := open(filepath.Join(rw, "link"), unix.O_RDONLY); !errors.Is(err, unix.EACCES) {
		t.Errorf("symlink out of a grant: %v, want EACCES", err)
	}
	// Nor does /proc/self/root (granted /proc, read).
	if err := open("/proc/self/root"+filepath.Join(outside, "secret"), unix.O_RDONLY); !errors.Is(err, unix.EACCES) {
		t.Errorf("/proc/self/root out of the grants: %v, want EACCES", err)
	}
}

// TestLandlockNetworkAndScope: no TCP connect but to granted ports (ABI 4),
// no signals to processes outside the sandbox (ABI 6).
func TestLandlockNetworkAndScope(t *testing.T) {
	testenv.AlsoAsNobody(t)
	abi, err := LandlockABI()
	if err != nil || abi < 6 {
		t.Skipf("needs Landlock ABI 6, have %d (%v)", abi, err)
	}
	ctx := context.Background()
	l1, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	l2, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	granted := uint16(l2.Addr().(*net.TCPAddr).Port)
	h := landlocked(t, &LandlockPolicy{ConnectTCP: []uint16{granted}})
	connect := func(l net.Listener) error {
		s, err := h.Socket(ctx, unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer h.CloseFD(ctx, s)
		var sa unix.RawSockaddrInet4
		sa.Family = unix.AF_INET
		port := l.Addr().(*net.TCPAddr).Port
		sa.Port = uint16(port>>8 | port<<8&0xff00)
		sa.Addr = [4]byte{127, 0, 0, 1}
		b := make([]byte, unix.SizeofSockaddrInet4)
		copy(b, (*[unix.SizeofSockaddrInet4]byte)(unsafePointer(&sa))[:])
		return h.Connect(ctx, s, b)
	}
	if err := connect(l1); !errors.Is(err, unix.EACCES) {
		t.Errorf("connect to an ungranted 127.0.0.1 port: %v, want EACCES", err)
	}
	if err := connect(l2); err != nil {
		t.Errorf("connect to the granted port: %v", err)
	}
	// Signals to a process outside the sandbox's domain fail: pid 1 is
	// caplin's zygote, which an unrestricted child may signal (control).
	if err := h.Kill(ctx, 1, 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("kill(1, 0) from inside: %v, want EPERM", err)
	}
	free, err := proc.Fork(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer free.Close()
	if err := free.Kill(ctx, 1, 0); err != nil {
		t.Errorf("control: kill(1, 0) from an unrestricted child: %v", err)
	}
}

func TestLandlockStrict(t *testing.T) {
	p := &LandlockPolicy{Paths: []PathGrant{{Path: "/usr", Access: AccessRead}}}
	var b proc.Batch
	_, err := p.Record(&b, 3)
	var ue *UnsupportedError
	if !errors.As(err, &ue) || ue.MinKernel != "6.12" || !errors.Is(err, ErrUnenforceable) || !errors.Is(err, unix.ENOSYS) {
		t.Errorf("ABI 3 without BestEffort: %v, want an UnsupportedError for Linux 6.12 (no TCP restriction nor scoping there)", err)
	}
	p.BestEffort = true
	dropped, err := p.Record(&b, 3)
	if err != nil || len(dropped) != 2 {
		t.Errorf("ABI 3 with BestEffort: dropped %q, %v", dropped, err)
	}
}
