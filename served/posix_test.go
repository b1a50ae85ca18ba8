package served

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/dir"
	"golang.org/x/sys/unix"
)

// serveHostCached is serveHost with attributes the kernel may keep for an
// hour: what the test then sees fresh, the server or the kernel made fresh
// on purpose, not a timeout.
func serveHostCached(t *testing.T, root string) *mount {
	t.Helper()
	d, err := dir.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	return mountServer(t, NewServer(Host(d), Options{Cache: time.Hour}))
}

// TestHardLinkAttrs: a file's other names (hard links, which the kernel
// holds as files of their own) show its link count, mode, owner and ctime
// after it changes through one of them: link, chmod, chown, unlink and a
// rename over it.
func TestHardLinkAttrs(t *testing.T) {
	alsoAsNobody(t)
	root := t.TempDir()
	tree(t, root, map[string]string{"a": "x", "d": "y"})
	m := serveHostCached(t, root)

	stat := func(path string) (mode uint32, nlink uint64, ctime int64, uid uint32) {
		t.Helper()
		a := m.ok(req{Op: "lstat", Path: path})
		return a.Stat.Mode, a.Stat.Nlink, a.Stat.Ctime, a.Stat.UID
	}
	tick := func() { time.Sleep(20 * time.Millisecond) } // past the clock's granularity
	_, n, ctime0, _ := stat("a")
	if n != 1 {
		t.Fatalf("a: nlink %d, want 1", n)
	}
	tick()
	m.ok(req{Op: "link", Path: "a", Path2: "b"})
	for _, p := range []string{"a", "b"} {
		if _, n, ctime, _ := stat(p); n != 2 || ctime <= ctime0 {
			t.Errorf("after link a b: %s: nlink %d (want 2), ctime %d (want later than %d)", p, n, ctime, ctime0)
		}
	}
	m.ok(req{Op: "chmod", Path: "b", Mode: 0o600})
	if mode, _, _, _ := stat("a"); mode != unix.S_IFREG|0o600 {
		t.Errorf("after chmod b: a's mode %o, want %o", mode, unix.S_IFREG|0o600)
	}
	if os.Getuid() == 0 {
		m.ok(req{Op: "lchown", Path: "b", UID: 65534, GID: 65534})
		if _, _, _, uid := stat("a"); uid != 65534 {
			t.Errorf("after chown b: a's owner %d, want 65534", uid)
		}
	}
	m.ok(req{Op: "link", Path: "b", Path2: "c"})
	if _, n, _, _ := stat("a"); n != 3 {
		t.Errorf("after link b c: a: nlink %d, want 3", n)
	}
	_, _, ctime1, _ := stat("a")
	tick()
	m.ok(req{Op: "unlink", Path: "c"})
	for _, p := range []string{"a", "b"} {
		if _, n, ctime, _ := stat(p); n != 2 || ctime <= ctime1 {
			t.Errorf("after unlink c: %s: nlink %d (want 2), ctime %d (want later than %d)", p, n, ctime, ctime1)
		}
	}

	// A rename over d drops its file's link count, which e shows.
	m.ok(req{Op: "link", Path: "d", Path2: "e"})
	if _, n, _, _ := stat("e"); n != 2 {
		t.Errorf("after link d e: e: nlink %d, want 2", n)
	}
	stat("d")
	m.ok(req{Op: "rename", Path: "b", Path2: "d"})
	if _, n, _, _ := stat("e"); n != 1 {
		t.Errorf("after rename b d: e: nlink %d, want 1", n)
	}
	if _, n, _, _ := stat("a"); n != 2 {
		t.Errorf("after rename b d: a: nlink %d, want 2", n)
	}
}

// TestUnlinkedOpen: a file removed while open keeps its attributes and
// changes through the descriptor, as on a local file system: fstat shows
// link count 0, and ftruncate and fchmod work.
func TestUnlinkedOpen(t *testing.T) {
	alsoAsNobody(t)
	root := t.TempDir()
	tree(t, root, map[string]string{"f": "hello"})
	m := serveHostCached(t, root)

	fd := int(m.ok(req{Op: "open", Path: "f", Flags: os.O_RDWR}).N)
	m.ok(req{Op: "unlink", Path: "f"})
	if a := m.ok(req{Op: "fstat", FD: fd}); a.Stat.Nlink != 0 || a.Stat.Size != 5 {
		t.Errorf("fstat after unlink: nlink %d (want 0), size %d (want 5)", a.Stat.Nlink, a.Stat.Size)
	}
	m.ok(req{Op: "ftruncate", FD: fd, Off: 2})
	m.ok(req{Op: "fchmod", FD: fd, Mode: 0o600})
	if a := m.ok(req{Op: "fstat", FD: fd}); a.Stat.Size != 2 || a.Stat.Mode != unix.S_IFREG|0o600 {
		t.Errorf("fstat after ftruncate and fchmod: size %d (want 2), mode %o (want %o)", a.Stat.Size, a.Stat.Mode, unix.S_IFREG|0o600)
	}
	if a := m.ok(req{Op: "pread", FD: fd, N: 10}); string(a.Data) != "he" {
		t.Errorf("read after ftruncate: %q", a.Data)
	}
	m.ok(req{Op: "close", FD: fd})
}

// TestReplacedOpen: a file open in the sandbox and replaced by a rename
// through the mount keeps its contents, and takes writes, as on any file
// system; the new file is what the name leads to. On a mount with every
// right opens do not reach the server, which then holds the replaced
// file itself until the kernel forgets it.
func TestReplacedOpen(t *testing.T) {
	alsoAsNobody(t)
	root := t.TempDir()
	tree(t, root, map[string]string{"f": "old", "g": "new"})
	m := serveHostCached(t, root)

	fd := int(m.ok(req{Op: "open", Path: "f", Flags: os.O_RDWR}).N)
	m.ok(req{Op: "rename", Path: "g", Path2: "f"})
	m.ok(req{Op: "pwrite", FD: fd, Data: []byte("OLD"), Off: 0})
	if a := m.ok(req{Op: "pread", FD: fd, N: 10}); string(a.Data) != "OLD" {
		t.Errorf("read of the replaced file: %q, want %q", a.Data, "OLD")
	}
	if a := m.ok(req{Op: "read", Path: "f"}); string(a.Data) != "new" {
		t.Errorf("read of f: %q, want %q", a.Data, "new")
	}
	m.ok(req{Op: "close", FD: fd})
	if b, err := os.ReadFile(filepath.Join(root, "f")); err != nil || string(b) != "new" {
		t.Errorf("host f: %q, %v; want %q", b, err, "new")
	}
}

// TestNoWriterKept: after a file written through a mount with every right
// is closed, the server holds no descriptor of it open for writing: the
// host can execute it at once (no ETXTBSY).
func TestNoWriterKept(t *testing.T) {
	root := t.TempDir()
	m := serveHostCached(t, root)
	m.ok(req{Op: "write", Path: "x", Flags: os.O_WRONLY | os.O_CREATE | os.O_TRUNC, Mode: 0o755, Data: []byte("#!/bin/sh\nexit 7\n")})
	m.ok(req{Op: "write", Path: "x", Flags: os.O_WRONLY, Data: []byte("#!/bin/sh\nexit 3\n")})
	err := exec.Command(filepath.Join(root, "x")).Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("running the file written through the mount: %v, want exit status 3", err)
	}
}

// TestReplacedOutside: a file open in the sandbox whose name is given to
// another file from outside the mount (an editor's save) is not written
// through that name: the write fails with ESTALE, and the new file keeps
// its contents.
func TestReplacedOutside(t *testing.T) {
	root := t.TempDir()
	tree(t, root, map[string]string{"f": "old", "g": "new"})
	m := serveHostCached(t, root)
	fd := int(m.ok(req{Op: "open", Path: "f", Flags: os.O_WRONLY}).N)
	if err := os.Rename(filepath.Join(root, "g"), filepath.Join(root, "f")); err != nil {
		t.Fatal(err)
	}
	m.errno(req{Op: "pwrite", FD: fd, Data: []byte("XXX"), Off: 0}, unix.ESTALE)
	m.ok(req{Op: "close", FD: fd})
	if b, err := os.ReadFile(filepath.Join(root, "f")); err != nil || string(b) != "new" {
		t.Errorf("host f: %q, %v; want %q", b, err, "new")
	}
}

// TestAppendByNode: writes of a file opened O_APPEND land at the end of
// the host file, also where it grew from outside since the kernel last
// saw its size.
func TestAppendByNode(t *testing.T) {
	root := t.TempDir()
	tree(t, root, map[string]string{"log": "a\n"})
	m := serveHostCached(t, root)
	fd := int(m.ok(req{Op: "open", Path: "log", Flags: os.O_WRONLY | os.O_APPEND}).N)
	m.ok(req{Op: "fwrite", FD: fd, Data: []byte("b\n")})
	f, err := os.OpenFile(filepath.Join(root, "log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("outside\n")
	f.Close()
	m.ok(req{Op: "fwrite", FD: fd, Data: []byte("c\n")})
	m.ok(req{Op: "close", FD: fd})
	if b, _ := os.ReadFile(filepath.Join(root, "log")); string(b) != "a\nb\noutside\nc\n" {
		t.Errorf("host log: %q, want %q", b, "a\nb\noutside\nc\n")
	}
}
