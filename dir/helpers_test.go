package dir

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
// uid 65534 (nobody), which must pass too. Root passes permission checks
// that a real user fails, so every test of confinement and rights must
// also hold without them.
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
		args := []string{"-test.run=^" + name + "$", "-test.v", "-test.count=1"}
		if testing.Short() {
			args = append(args, "-test.short")
		}
		cmd := exec.CommandContext(ctx, exe, args...)
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
	exe := filepath.Join(dir, "dir.test")
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

// envTmp, if set, is where tempDir makes its directories.
const envTmp = "CAPLIN_DIR_TMP"

// tempDir returns a new directory for a test, in $CAPLIN_DIR_TMP if set,
// else on tmpfs (/dev/shm) where there is one, so that the fsyncs of the
// atomic operations cost nothing; else t.TempDir. The layout is created by
// the caller.
func tempDir(t testing.TB) string {
	t.Helper()
	base := os.Getenv(envTmp)
	if st, err := os.Stat("/dev/shm"); base == "" && err == nil && st.IsDir() {
		if f, err := os.CreateTemp("/dev/shm", "probe"); err == nil {
			f.Close()
			os.Remove(f.Name())
			base = "/dev/shm"
		}
	}
	if base == "" {
		return t.TempDir()
	}
	d, err := os.MkdirTemp(base, "caplin-dir-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// mustOpen opens a Dir for a test and closes it when the test ends.
func mustOpen(t testing.TB, path string, opts ...Option) *Dir {
	t.Helper()
	d, err := Open(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// writeTree makes files (name → contents; a name ending in "/" is a
// directory, contents "->target" a symbolic link) under root.
func writeTree(t testing.TB, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
