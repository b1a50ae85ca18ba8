package served_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/served"
	"golang.org/x/sys/unix"
)

// fileFS is a served.FileFS over the host's files: each open file is a
// served.File (pread and pwrite by the test's own code), counted, as a
// Directory's file objects on another host are.
type fileFS struct {
	served.FS
	opened *atomic.Int32
}

func (f fileFS) OpenObject(ctx context.Context, name string, flag int, perm uint32) (served.File, error) {
	file, err := f.FS.OpenFile(ctx, name, flag, perm)
	if err != nil {
		return nil, err
	}
	f.opened.Add(1)
	return osFile{file}, nil
}

type osFile struct{ f *os.File }

func (o osFile) Stat(context.Context) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstat(int(o.f.Fd()), &st)
	return st, err
}
func (o osFile) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	n, err := o.f.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		err = nil // a short read is the end, as served.File says
	}
	return n, err
}
func (o osFile) WriteAt(_ context.Context, p []byte, off int64) (int, error) {
	return o.f.WriteAt(p, off)
}
func (o osFile) Truncate(_ context.Context, size int64) error { return o.f.Truncate(size) }
func (o osFile) Sync(context.Context, bool) error             { return o.f.Sync() }
func (o osFile) Allocate(_ context.Context, mode uint32, off, size int64) error {
	return unix.Fallocate(int(o.f.Fd()), mode, off, size)
}
func (o osFile) Seek(_ context.Context, off int64, whence int) (int64, error) {
	return unix.Seek(int(o.f.Fd()), off, whence)
}
func (o osFile) Close() error { return o.f.Close() }

// TestFileFS: a FileFS's files are read and written through its Files,
// every open reaching it (no CAP_NO_OPEN_SUPPORT, even read-only).
func TestFileFS(t *testing.T) {
	served.AlsoAsNobody(t)
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "a"), []byte("0123456789"), 0o644)
	d, err := dir.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	var opened atomic.Int32
	m := served.MountServer(t, served.NewServer(fileFS{served.Host(d), &opened}, served.Options{Dest: "/m"}))

	if a := m.OK(served.Req{Op: "read", Path: "a"}); string(a.Data) != "0123456789" {
		t.Errorf("read a: %q", a.Data)
	}
	fd := m.OK(served.Req{Op: "open", Path: "a", Flags: os.O_RDWR}).N
	if a := m.OK(served.Req{Op: "pread", FD: int(fd), N: 4, Off: 3}); string(a.Data) != "3456" {
		t.Errorf("pread at 3: %q", a.Data)
	}
	m.OK(served.Req{Op: "pwrite", FD: int(fd), Data: []byte("xy"), Off: 8})
	if a := m.OK(served.Req{Op: "fstat", FD: int(fd)}); a.Stat.Size != 10 {
		t.Errorf("fstat: size %d", a.Stat.Size)
	}
	m.OK(served.Req{Op: "ftruncate", FD: int(fd), Off: 5})
	m.OK(served.Req{Op: "close", FD: int(fd)})
	m.OK(served.Req{Op: "write", Path: "new", Data: []byte("made"), Flags: os.O_CREATE | os.O_EXCL | os.O_WRONLY, Mode: 0o640})
	if b, _ := os.ReadFile(filepath.Join(root, "a")); string(b) != "01234" {
		t.Errorf("a on the host: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "new")); !bytes.Equal(b, []byte("made")) {
		t.Errorf("new on the host: %q", b)
	}
	if fi, err := os.Stat(filepath.Join(root, "new")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("new's mode on the host: %v %v", fi, err)
	}
	if n := opened.Load(); n < 3 {
		t.Errorf("%d opens reached the FileFS, want every one (3)", n)
	}
}
