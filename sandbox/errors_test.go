package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// TestUnsupportedError: every error that says the kernel lacks something
// matches ErrUnenforceable and unix.ENOSYS, keeps the kernel's own errno,
// and names the first Linux release that has what is missing.
func TestUnsupportedError(t *testing.T) {
	disabled := &UnsupportedError{Feature: "Landlock", MinKernel: "5.13", Detail: "enabled at boot: add landlock to lsm=",
		Err: os.NewSyscallError("landlock_create_ruleset", unix.EOPNOTSUPP)}
	for _, target := range []error{ErrUnenforceable, unix.ENOSYS, unix.EOPNOTSUPP} {
		if !errors.Is(disabled, target) {
			t.Errorf("errors.Is(%v, %v) = false", disabled, target)
		}
	}
	if errors.Is(disabled, unix.EPERM) {
		t.Errorf("errors.Is(%v, EPERM) = true", disabled)
	}
	if want := "sandbox: Landlock needs Linux 5.13 or later (enabled at boot: add landlock to lsm=): landlock_create_ruleset: operation not supported"; disabled.Error() != want {
		t.Errorf("Error() = %q, want %q", disabled.Error(), want)
	}

	for _, c := range []struct {
		abi    int
		policy LandlockPolicy
		min    string
	}{
		{0, LandlockPolicy{AnyTCP: true}, "5.13"},
		{1, LandlockPolicy{AnyTCP: true}, "6.12"},
		{5, LandlockPolicy{AnyTCP: true}, "6.12"},
	} {
		var b proc.Batch
		_, err := c.policy.Record(&b, c.abi)
		var ue *UnsupportedError
		if !errors.As(err, &ue) || ue.MinKernel != c.min || !errors.Is(err, unix.ENOSYS) || !errors.Is(err, ErrUnenforceable) || !strings.Contains(err.Error(), "Linux "+c.min) {
			t.Errorf("Record at ABI %d: %v, want an UnsupportedError for Linux %s", c.abi, err, c.min)
		}
	}
	if got := abiOfRights(unix.LANDLOCK_ACCESS_FS_IOCTL_DEV); got != 5 {
		t.Errorf("abiOfRights(IOCTL_DEV) = %d, want 5", got)
	}

	le := &LimitError{Limit: "pids", Reason: "no delegated cgroup"}
	if !errors.Is(le, ErrUnenforceable) || errors.Is(le, unix.ENOSYS) {
		t.Errorf("a LimitError: Is ErrUnenforceable %v (want true), Is ENOSYS %v (want false)", errors.Is(le, ErrUnenforceable), errors.Is(le, unix.ENOSYS))
	}
}

// TestErrorsKeepErrno fails on a format that wraps one error and prints
// another with %v, dropping its errno from errors.Is: the package's rule
// is %w for every error it passes on.
func TestErrorsKeepErrno(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for i, ln := range strings.Split(string(b), "\n") {
			if strings.Contains(ln, `%w: %v`) {
				t.Errorf("%s:%d: %%w: %%v drops the second error's errno: %s", name, i+1, strings.TrimSpace(ln))
			}
		}
	}
}
