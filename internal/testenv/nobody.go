// Package testenv holds helpers for caplin's tests. It imports no caplin
// package.
package testenv

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// EnvNobody is set in a test binary that AlsoAsNobody re-runs as uid 65534.
const EnvNobody = "CAPLIN_TEST_NOBODY"

// AsNobody reports whether this test binary is the re-run as uid 65534.
func AsNobody() bool { return os.Getenv(EnvNobody) != "" }

// AlsoAsNobody makes a test that matters unprivileged run twice when the
// tests run as root: as root (the caller goes on) and, in a subtest that
// re-runs the test binary with only this test as uid 65534 (nobody), which
// must pass too. Root passes permission checks a real user fails; CI runs
// as root, and real users do not.
func AlsoAsNobody(t *testing.T) {
	t.Helper()
	alsoAsNobody(t, NobodyCommand)
}

// alsoAsNobody is AlsoAsNobody with the re-run's command made by command.
func alsoAsNobody(t *testing.T, command func(context.Context, *testing.T, string) *exec.Cmd) {
	t.Helper()
	if AsNobody() || os.Getuid() != 0 {
		return
	}
	t.Run("nobody", func(t *testing.T) {
		name := strings.SplitN(t.Name(), "/", 2)[0]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := command(ctx, t, name).CombinedOutput()
		if err == nil && bytes.Contains(out, []byte("--- SKIP: "+name)) {
			t.Skipf("as nobody: skipped:\n%s", out)
		}
		if err != nil || !bytes.Contains(out, []byte("--- PASS: "+name)) {
			t.Fatalf("as nobody: %v\n%s", err, out)
		}
	})
}

// NobodyCommand returns a command that runs the test binary's test name
// (verbosely) as uid and gid 65534, with EnvNobody set; the caller may
// adjust it (its SysProcAttr, to add ambient capabilities, say) before
// running it. Only root can run it.
func NobodyCommand(ctx context.Context, t *testing.T, name string) *exec.Cmd {
	t.Helper()
	exe := nobodyBinary(t)
	args := []string{"-test.run=^" + name + "$", "-test.v", "-test.count=1"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = append(os.Environ(), EnvNobody+"=1")
	cmd.Dir = filepath.Dir(exe)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	return cmd
}

// NobodyTests runs the test binary's tests that match the regular
// expression run (verbosely) as uid and gid 65534, as NobodyCommand does,
// with extra variables added to the environment (the address of a server
// the caller started, say), and fails t unless every one of them passes:
// none may skip. Only root can run it.
func NobodyTests(ctx context.Context, t *testing.T, run string, extra ...string) {
	t.Helper()
	cmd := NobodyCommand(ctx, t, "")
	for i, a := range cmd.Args {
		if strings.HasPrefix(a, "-test.run=") {
			cmd.Args[i] = "-test.run=" + run
		}
	}
	cmd.Env = append(cmd.Env, extra...)
	out, err := cmd.CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("--- SKIP")) || bytes.Contains(out, []byte("--- FAIL")) {
		t.Fatalf("as uid 65534: %v\n%s", err, out)
	}
}

// nobodyBinary copies the test binary where uid 65534 can run it: go test
// builds it in a directory only its owner can enter.
func nobodyBinary(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "caplin-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	exe := filepath.Join(dir, filepath.Base(os.Args[0]))
	dst, err := os.OpenFile(exe, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return exe
}

// SharedTempDir returns a new temporary directory every user can write to
// (sticky, like /tmp), removed when the test ends.
func SharedTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "caplin-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
