package served_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/rpc/directory"
	"github.com/caplin-dev/caplin/rpc/rpctest"
	"github.com/caplin-dev/caplin/served"
	"github.com/caplin-dev/caplin/served/remote"
	"golang.org/x/sys/unix"
)

// TestRemoteMounted mounts an rpc Directory object (served/remote) and
// runs programs' operations on it: what they do reaches the object's
// directory, and its refusals and failures arrive with their errnos;
// after the object is revoked, operations fail with EIO.
func TestRemoteMounted(t *testing.T) {
	served.AlsoAsNobody(t)
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "ro"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "ro", "g"), []byte("g"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := dir.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	h, revoke := rpc.Revocable(directory.New(d))
	c, _ := rpctest.Pair(t, h)
	obj := directory.Client{Client: c}
	m := served.MountServer(t, served.NewServer(remote.New(obj), served.Options{Dest: "/remote"}))

	if a := m.OK(served.Req{Op: "read", Path: "f"}); string(a.Data) != "hello" {
		t.Errorf("read f: %q", a.Data)
	}
	if a := m.OK(served.Req{Op: "lstat", Path: "f"}); a.Stat.Mode != unix.S_IFREG|0o644 || a.Stat.Size != 5 || a.Stat.UID != 0 {
		t.Errorf("lstat f: %+v", a.Stat)
	}
	m.OK(served.Req{Op: "write", Path: "new", Data: []byte("made"), Flags: os.O_CREATE | os.O_EXCL | os.O_WRONLY, Mode: 0o640})
	if fi, err := os.Stat(filepath.Join(root, "new")); err != nil || fi.Mode().Perm() != 0o640 || fi.Size() != 4 {
		t.Errorf("new on the host: %v, %v", fi, err)
	}
	m.OK(served.Req{Op: "mkdir", Path: "d", Mode: 0o775})
	if fi, err := os.Stat(filepath.Join(root, "d")); err != nil || fi.Mode().Perm() != 0o775 {
		t.Errorf("d on the host: %v, %v", fi, err)
	}
	m.OK(served.Req{Op: "rename", Path: "new", Path2: "d/renamed"})
	m.OK(served.Req{Op: "link", Path: "d/renamed", Path2: "hard"})
	m.OK(served.Req{Op: "symlink", Path: "sym", Path2: "d/renamed"})
	if a := m.OK(served.Req{Op: "read", Path: "sym"}); string(a.Data) != "made" {
		t.Errorf("read through the new link: %q", a.Data)
	}
	m.OK(served.Req{Op: "chmod", Path: "hard", Mode: 0o600})
	m.OK(served.Req{Op: "truncate", Path: "hard", Off: 2})
	m.OK(served.Req{Op: "utimes", Path: "hard", Off: 1234567})
	if fi, err := os.Stat(filepath.Join(root, "d", "renamed")); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 2 || fi.ModTime().Unix() != 1234567 {
		t.Errorf("d/renamed after chmod, truncate, utimes: %v, %v", fi, err)
	}
	m.OK(served.Req{Op: "mknod", Path: "fifo", Mode: unix.S_IFIFO | 0o600})
	a := m.OK(served.Req{Op: "readdir", Path: "."})
	for _, want := range []string{"f", "d", "hard", "sym", "fifo", "ro"} {
		if !slices.Contains(a.Names, want) {
			t.Errorf("readdir: %q missing from %q", want, a.Names)
		}
	}
	m.Errno(served.Req{Op: "rmdir", Path: "d"}, syscall.ENOTEMPTY)
	m.Errno(served.Req{Op: "unlink", Path: "d"}, syscall.EISDIR)
	m.Errno(served.Req{Op: "read", Path: "missing"}, syscall.ENOENT)
	m.OK(served.Req{Op: "unlink", Path: "d/renamed"})
	m.OK(served.Req{Op: "rmdir", Path: "d"})

	// The object's own rights: a read-only sub refuses with EPERM.
	ro, err := obj.Sub(context.Background(), "ro", dir.ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	mro := served.MountServer(t, served.NewServer(remote.New(ro), served.Options{Dest: "/ro"}))
	if a := mro.OK(served.Req{Op: "read", Path: "g"}); string(a.Data) != "g" {
		t.Errorf("read g through the read-only object: %q", a.Data)
	}
	mro.Errno(served.Req{Op: "unlink", Path: "g"}, syscall.EPERM)
	mro.Errno(served.Req{Op: "write", Path: "x", Data: []byte("x"), Flags: os.O_CREATE | os.O_WRONLY, Mode: 0o644}, syscall.EPERM)

	revoke()
	m.Errno(served.Req{Op: "lstat", Path: "ro/g"}, syscall.EIO) // not looked up before: no cache holds it
	m.Errno(served.Req{Op: "readdir", Path: "."}, syscall.EIO)
}
