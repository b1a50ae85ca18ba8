package fdctl

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDupFile: the duplicate is close-on-exec, refers to the same file
// description, and the original keeps its non-blocking mode (which Fd
// would have cleared).
func TestDupFile(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	nfd, err := DupFile(w)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(nfd)
	if fl, err := unix.FcntlInt(uintptr(nfd), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("duplicate's fd flags %#x, %v; want FD_CLOEXEC", fl, err)
	}
	if _, err := unix.Write(nfd, []byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if n, err := r.Read(b); n != 1 || err != nil || b[0] != 'x' {
		t.Errorf("read through the original pipe: %d, %v", n, err)
	}
	var fl int
	if err := Control(w, func(fd int) (err error) {
		fl, err = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if fl&unix.O_NONBLOCK == 0 {
		t.Errorf("the original lost O_NONBLOCK (flags %#x)", fl)
	}
}

func TestClosed(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	w.Close()
	called := false
	if err := Control(w, func(int) error { called = true; return nil }); !errors.Is(err, os.ErrClosed) || called {
		t.Errorf("Control on a closed file = %v (fn called: %v); want os.ErrClosed", err, called)
	}
	if _, err := DupFile(w); !errors.Is(err, os.ErrClosed) {
		t.Errorf("DupFile of a closed file = %v", err)
	}
	if err := Control(nil, func(int) error { return nil }); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Control(nil) = %v", err)
	}
	if _, err := Dup(-1); !errors.Is(err, unix.EBADF) {
		t.Errorf("Dup(-1) = %v; want EBADF", err)
	}
}

// TestControlError: fn's error comes back as it is.
func TestControlError(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := errors.New("from fn")
	if err := Control(f, func(int) error { return want }); err != want {
		t.Errorf("Control = %v; want fn's error", err)
	}
}
