package directory

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/rpc/rpctest"
	"golang.org/x/sys/unix"
)

// dirPair serves a Directory for a new temporary tree and returns a client
// for it and the tree's path:
//
//	hello.txt   "hello"
//	sub/inner.txt "inner"
func dirPair(t testing.TB, rights dir.Rights) (Client, string) {
	t.Helper()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "hello.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "sub", "inner.txt"), []byte("inner"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := dir.Open(root, rights)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := rpctest.Pair(t, New(d))
	return Client{c}, root
}

func readAllClose(t *testing.T, f *os.File) string {
	t.Helper()
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDirectory(t *testing.T) {
	testenv.AlsoAsNobody(t)
	d, root := dirPair(t, dir.All)
	ctx := context.Background()

	f, err := d.Open(ctx, "hello.txt", os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s := readAllClose(t, f); s != "hello" {
		t.Fatalf("hello.txt holds %q", s)
	}
	f, err = d.Open(ctx, "sub/new.txt", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("made through rpc")
	f.Close()
	if b, _ := os.ReadFile(filepath.Join(root, "sub", "new.txt")); string(b) != "made through rpc" {
		t.Fatalf("sub/new.txt holds %q", b)
	}
	if st, err := d.Stat(ctx, "sub/new.txt", false); err != nil || st.Size != 16 || st.Mode.Perm() != 0o600 || st.Name != "new.txt" {
		t.Fatalf("stat sub/new.txt = %+v, %v", st, err)
	}
	ents, err := d.ReadDir(ctx, ".")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ents, []DirEntry{{"hello.txt", 0}, {"sub", fs.ModeDir}}) {
		t.Fatalf("readdir . = %v", ents)
	}
	if err := d.Mkdir(ctx, "a/b/c", 0, true); err != nil {
		t.Fatal(err)
	}
	if err := d.Rename(ctx, "a/b/c", "sub/c"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(root, "sub", "c")); err != nil || !fi.IsDir() {
		t.Fatalf("sub/c after rename: %v", err)
	}
	if err := d.Remove(ctx, "sub/c"); err != nil {
		t.Fatal(err)
	}
	if r, err := d.Rights(ctx); err != nil || r != dir.All {
		t.Fatalf("rights = %v, %v", r, err)
	}

	// What the server refuses, with the errno the client can test.
	for _, c := range []struct {
		path  string
		flags int
		errno syscall.Errno
		text  string
	}{
		{"../outside", os.O_RDONLY, syscall.EXDEV, "escapes"},
		{"/etc/passwd", os.O_RDONLY, syscall.EINVAL, "absolute path"},
		{"sub", os.O_RDONLY, syscall.EISDIR, "is a directory"},
		{"missing", os.O_RDONLY, syscall.ENOENT, "missing"},
	} {
		f, err := d.Open(ctx, c.path, c.flags, 0)
		if err == nil {
			f.Close()
		}
		if !errors.Is(err, c.errno) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("open %s = %v; want %v (%q)", c.path, err, c.errno, c.text)
		}
	}
	if err := d.Remove(ctx, "sub"); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("remove of a full directory = %v", err)
	}
}

func TestDirectorySub(t *testing.T) {
	testenv.AlsoAsNobody(t)
	d, root := dirPair(t, dir.All)
	ctx := context.Background()

	ro, err := d.Sub(ctx, "sub", dir.ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	f, err := ro.Open(ctx, "inner.txt", os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s := readAllClose(t, f); s != "inner" {
		t.Fatalf("inner.txt through sub holds %q", s)
	}
	// Narrower: no writes, no way back up, no widening.
	_, err = ro.Open(ctx, "inner.txt", os.O_WRONLY, 0)
	if !errors.Is(err, rpc.ErrDenied) || !errors.Is(err, syscall.EPERM) {
		t.Errorf("write through a read-only sub = %v, want rpc.ErrDenied", err)
	}
	if err := ro.Mkdir(ctx, "x", 0, false); !errors.Is(err, rpc.ErrDenied) {
		t.Errorf("mkdir through a read-only sub = %v", err)
	}
	if _, err := ro.Open(ctx, "../hello.txt", os.O_RDONLY, 0); !errors.Is(err, syscall.EXDEV) {
		t.Errorf("open ../hello.txt through sub = %v", err)
	}
	if _, err := ro.Sub(ctx, ".", dir.ReadWrite); !errors.Is(err, rpc.ErrDenied) {
		t.Errorf("sub widening rights = %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "sub", "x")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("sub/x exists after a refused mkdir: %v", err)
	}

	// Pipelined: the new object is usable before the reply to sub.
	p, err := d.SubPipelined("sub", dir.ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if st, err := p.Stat(ctx, "inner.txt", false); err != nil || st.Size != 5 {
		t.Fatalf("stat through a pipelined sub = %+v, %v", st, err)
	}
	bad, err := d.SubPipelined("nowhere", dir.ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.Stat(ctx, ".", false); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "nowhere") {
		t.Fatalf("call on a pipelined sub that failed = %v", err)
	}
}

// TestDirectoryExport checks that an exported directory is a detached mount
// root: ".." from it is itself, and it is read-only for a read-only object.
func TestDirectoryExport(t *testing.T) {
	testenv.AlsoAsNobody(t)
	d, _ := dirPair(t, dir.All)
	ctx := context.Background()
	ro, err := d.Sub(ctx, ".", dir.ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	f, err := ro.Export(ctx, "sub")
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOSYS) {
		t.Skipf("no detached mounts here (unprivileged user namespaces?): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var top, up unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &top); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstatat(int(f.Fd()), "../../..", &up, 0); err != nil {
		t.Fatal(err)
	}
	if top.Dev != up.Dev || top.Ino != up.Ino {
		t.Fatalf(`".." from the exported root leaves it`)
	}
	fd, err := unix.Openat(int(f.Fd()), "inner.txt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s := readAllClose(t, os.NewFile(uintptr(fd), "inner.txt")); s != "inner" {
		t.Fatalf("inner.txt through the export holds %q", s)
	}
	if fd, err := unix.Openat(int(f.Fd()), "new", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644); !errors.Is(err, syscall.EROFS) {
		if err == nil {
			unix.Close(fd)
		}
		t.Fatalf("create in a read-only export = %v, want EROFS", err)
	}
}

// TestDirectoryClosesDir checks that a Directory object's directory
// descriptor goes when the object does.
func TestDirectoryClosesDir(t *testing.T) {
	d, _ := dirPair(t, dir.All)
	ctx := context.Background()
	before := testenv.OpenFDs(t)
	for range 50 {
		s, err := d.Sub(ctx, "sub", dir.ReadOnly)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Rights(ctx); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	testenv.WaitFDs(t, before)
}

// TestDirectoryReviewed holds the cases a security review found.
func TestDirectoryReviewed(t *testing.T) {
	testenv.AlsoAsNobody(t)
	d, root := dirPair(t, dir.All)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A FIFO is refused at once: its open(2) would wait for a writer and
	// pin a server thread for as long as the holder likes.
	if err := unix.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if f, err := d.Open(ctx, "fifo", os.O_RDONLY, 0); !errors.Is(err, rpc.ErrInvalid) || !strings.Contains(err.Error(), "not a regular file") {
		if err == nil {
			f.Close()
		}
		t.Errorf("open of a FIFO = %v", err)
	}
	// A file opened without O_NONBLOCK is blocking, as asked.
	f, err := d.Open(ctx, "hello.txt", os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fl, _ := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); fl&unix.O_NONBLOCK != 0 {
		t.Errorf("file opened with flags %#x", fl)
	}
	f.Close()

	// No setuid, setgid or sticky bits from a peer.
	f, err = d.Open(ctx, "suid", os.O_WRONLY|os.O_CREATE, 0o4755|os.ModeSetuid|os.ModeSticky)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, err := os.Stat(filepath.Join(root, "suid")); err != nil || fi.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
		t.Errorf("file made with mode %v, %v", fi.Mode(), err)
	}
	if err := d.Mkdir(ctx, "sgid", 0o2755|os.ModeSetgid, false); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(root, "sgid")); err != nil || fi.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
		t.Errorf("directory made with mode %v, %v", fi.Mode(), err)
	}

	// export gives no more than the object's rights: it needs Read, and
	// the mount is writable only with every write right.
	wo, err := d.Sub(ctx, ".", dir.RightWrite|dir.RightCreate)
	if err != nil {
		t.Fatal(err)
	}
	defer wo.Close()
	if f, err := wo.Export(ctx, "."); !errors.Is(err, rpc.ErrDenied) {
		if err == nil {
			f.Close()
		}
		t.Errorf("export by a write-only object = %v", err)
	}
	rw, err := d.Sub(ctx, ".", dir.RightRead|dir.RightWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	ex, err := rw.Export(ctx, "sub")
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOSYS) {
		t.Skipf("no detached mounts here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	if fd, err := unix.Openat(int(ex.Fd()), "made", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644); !errors.Is(err, syscall.EROFS) {
		if err == nil {
			unix.Close(fd)
		}
		t.Errorf("create through the export of a read|write object (no create) = %v, want EROFS", err)
	}
	if err := unix.Unlinkat(int(ex.Fd()), "inner.txt", 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("unlink through the export of an object without delete = %v, want EROFS", err)
	}
}

// TestDirectoryClientDistrustsServer: a server that answers sub with no
// descriptor makes Sub fail, not panic.
func TestDirectoryClientDistrustsServer(t *testing.T) {
	c, _ := rpctest.Pair(t, rpc.Methods{"sub": func(ctx context.Context, call *rpc.Call) (any, error) { return nil, nil }})
	if _, err := (Client{c}).Sub(context.Background(), "x", dir.ReadOnly); !errors.Is(err, rpc.ErrBadMessage) {
		t.Fatalf("Sub answered with null = %v", err)
	}
	if _, err := rpc.NewClient(nil, rpc.ClientOptions{}); err == nil {
		t.Fatal("rpc.NewClient(nil) did not fail")
	}
}

// TestFileObject: a file opened as an object: reads and writes at
// offsets (inline and in a memfd), its attributes, truncate, sync, seek;
// closing the object closes the file.
func TestFileObject(t *testing.T) {
	testenv.AlsoAsNobody(t)
	d, root := dirPair(t, dir.All)
	ctx := context.Background()
	f, err := d.OpenFile(ctx, "sub/obj", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	big := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB: a memfd
	if n, err := f.WriteAt(ctx, big, 10); err != nil || n != len(big) {
		t.Fatalf("writeat: %d, %v", n, err)
	}
	if n, err := f.WriteAt(ctx, []byte("head"), 0); err != nil || n != 4 {
		t.Fatalf("writeat: %d, %v", n, err)
	}
	got := make([]byte, len(big)+100)
	n, err := f.ReadAt(ctx, got, 0)
	if err != nil || n != len(big)+10 || string(got[:4]) != "head" || !bytes.Equal(got[10:n], big) {
		t.Fatalf("readat: %d, %v", n, err)
	}
	st, err := f.Stat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var host unix.Stat_t
	unix.Stat(filepath.Join(root, "sub", "obj"), &host)
	if st.Ino != host.Ino || st.Size != int64(len(big)+10) {
		t.Errorf("stat: ino %d size %d; the file's %d %d", st.Ino, st.Size, host.Ino, host.Size)
	}
	if err := f.Truncate(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(ctx, true); err != nil {
		t.Fatal(err)
	}
	if off, err := f.Seek(ctx, 0, io.SeekEnd); err != nil || off != 4 {
		t.Errorf("seek to the end: %d, %v", off, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "sub", "obj")); string(b) != "head" {
		t.Errorf("the file holds %q", b)
	}
	// What openat refuses, openfile does too.
	if _, err := d.OpenFile(ctx, "../x", os.O_RDONLY, 0); !errors.Is(err, syscall.EXDEV) {
		t.Errorf("openfile of ../x: %v", err)
	}
	if _, err := d.OpenFile(ctx, "sub", os.O_RDONLY, 0); !errors.Is(err, syscall.EISDIR) && !errors.Is(err, syscall.EINVAL) {
		t.Errorf("openfile of a directory: %v", err)
	}
}

// TestDirectoryOpenPath: O_PATH opens through rpc with the exec right (an
// fd to execveat), and without it fails on the rights; O_TMPFILE with
// O_CREAT does not slip past a Directory without the create right.
func TestDirectoryOpenPath(t *testing.T) {
	ctx := context.Background()
	d, _ := dirPair(t, dir.RightRead|dir.RightExec)
	f, err := d.Open(ctx, "hello.txt", unix.O_PATH, 0)
	if err != nil {
		t.Fatalf("O_PATH with the exec right: %v", err)
	}
	f.Close()
	ro, _ := dirPair(t, dir.RightRead)
	if f, err := ro.Open(ctx, "hello.txt", unix.O_PATH, 0); err == nil {
		f.Close()
		t.Error("O_PATH without the exec right succeeded")
	}
	for _, flags := range []int{unix.O_TMPFILE | os.O_CREATE | os.O_WRONLY, unix.O_TMPFILE | os.O_CREATE | os.O_RDWR} {
		if f, err := ro.Open(ctx, ".", flags, 0o600); err == nil {
			f.Close()
			t.Errorf("open(., %#x) on a read-only Directory succeeded", flags)
		}
	}
}
