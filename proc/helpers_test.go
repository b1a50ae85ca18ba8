package proc

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

// envNobody is set in a test binary re-run as uid 65534.
const envNobody = "CAPLIN_TEST_NOBODY"

// alsoAsNobody makes a test that matters unprivileged run twice when the
// tests run as root: as root (the caller goes on) and, in a subprocess, as
// uid 65534 (nobody), which must pass too. Unprivileged runs are what real
// users have; CI runs as root.
func alsoAsNobody(t *testing.T) {
	t.Helper()
	if os.Getenv(envNobody) != "" || os.Getuid() != 0 {
		return
	}
	t.Run("nobody", func(t *testing.T) {
		exe := nobodyBinary(t)
		name := strings.SplitN(t.Name(), "/", 2)[0]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, exe, "-test.run=^"+name+"$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), envNobody+"=1")
		cmd.Dir = filepath.Dir(exe)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err == nil && bytes.Contains(out, []byte("--- SKIP: "+name)) {
			t.Skipf("as nobody: skipped:\n%s", out)
		}
		if err != nil || !bytes.Contains(out, []byte("--- PASS: "+name)) {
			t.Fatalf("as nobody: %v\n%s", err, out)
		}
	})
}

// nobodyBinary copies the test binary where uid 65534 can run it.
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
	exe := filepath.Join(dir, "proc.test")
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

// sharedTempDir returns a temporary directory every user can write to.
func sharedTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "caplin-test-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o1777)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// openFDs lists this process's open fds.
func openFDs(t *testing.T) map[string]string {
	t.Helper()
	return fdTable(t, "/proc/self/fd")
}

// fdTable reads an fd directory: fd number → link target.
func fdTable(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // the fd ReadDir itself used, now closed
		}
		m[e.Name()] = target
	}
	return m
}
