package borrow

import (
	"errors"
	"testing"
)

// TestInstallOnce: FD calls the lender installed, and a second Install
// panics rather than replace it.
func TestInstallOnce(t *testing.T) {
	want := errors.New("lent")
	Install(func(d any, op string, f func(fd int) error) error {
		if d != "d" || op != "op" {
			t.Errorf("lender called with %v, %q", d, op)
		}
		return f(7)
	})
	got := FD("d", "op", func(fd int) error {
		if fd != 7 {
			t.Errorf("f called with fd %d", fd)
		}
		return want
	})
	if got != want {
		t.Errorf("FD = %v; want f's error", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("a second Install did not panic")
		}
	}()
	Install(func(any, string, func(int) error) error { return nil })
}
