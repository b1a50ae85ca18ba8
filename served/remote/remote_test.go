package remote

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/rpc/directory"
	"github.com/caplin-dev/caplin/rpc/rpctest"
	"github.com/caplin-dev/caplin/served"
	"golang.org/x/sys/unix"
)

// tree makes a temporary directory holding hello.txt ("hello") and
// sub/inner.txt ("inner").
func tree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "hello.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "sub", "inner.txt"), []byte("inner"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// serve serves root with rights as a Directory object and returns the
// FS of a client of it.
func serve(t *testing.T, root string, rights dir.Rights) served.FS {
	t.Helper()
	d, err := dir.Open(root, rights)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := rpctest.Pair(t, directory.New(d))
	return New(directory.Client{Client: c})
}

func read(t *testing.T, f *os.File) string {
	t.Helper()
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRemote makes one call of each FS method through a Directory object
// and checks what it did, as the host sees it.
func TestRemote(t *testing.T) {
	testenv.AlsoAsNobody(t)
	root := tree(t)
	fsys := serve(t, root, dir.All)
	ctx := context.Background()
	at := func(p string) string { return filepath.Join(root, p) }

	var want unix.Stat_t
	if err := unix.Lstat(at("sub"), &want); err != nil {
		t.Fatal(err)
	}
	if st, err := fsys.Lstat(ctx, "sub"); err != nil || st != want {
		t.Fatalf("lstat sub = %+v, %v; want %+v", st, err, want)
	}
	ents, err := fsys.ReadDir(ctx, ".")
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(ents, func(a, b served.DirEntry) int { return int(a.Type) - int(b.Type) })
	if len(ents) != 2 || ents[0].Name != "sub" || ents[0].Type != unix.DT_DIR || ents[0].Ino != want.Ino || ents[1].Name != "hello.txt" || ents[1].Type != unix.DT_REG {
		t.Fatalf("readdir . = %+v", ents)
	}
	f, err := fsys.OpenFile(ctx, "hello.txt", os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s := read(t, f); s != "hello" {
		t.Fatalf("hello.txt holds %q", s)
	}
	f, err = fsys.OpenFile(ctx, "sub/new", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("new")
	f.Close()
	if fi, err := os.Lstat(at("sub/new")); err != nil || fi.Mode() != 0o640 || fi.Size() != 3 {
		t.Fatalf("sub/new: %v, %v", fi, err)
	}
	if err := fsys.Symlink(ctx, "hello.txt", "lnk"); err != nil {
		t.Fatal(err)
	}
	if s, err := fsys.Readlink(ctx, "lnk"); err != nil || s != "hello.txt" {
		t.Fatalf("readlink lnk = %q, %v", s, err)
	}
	if f, err := fsys.OpenFile(ctx, "lnk", os.O_RDONLY, 0); !errors.Is(err, syscall.ELOOP) {
		if err == nil {
			f.Close()
		}
		t.Errorf("open of a symbolic link = %v, want ELOOP (no final link is followed)", err)
	}
	if err := fsys.Mkdir(ctx, "d", 0o750); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Mknod(ctx, "d/fifo", unix.S_IFIFO|0o600, 0); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Link(ctx, "sub/new", "d/hard"); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Rename(ctx, "d/hard", "d/moved", unix.RENAME_NOREPLACE); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Chmod(ctx, "d/moved", 0o600); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Chown(ctx, "d/moved", -1, -1); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Truncate(ctx, "d/moved", 1); err != nil {
		t.Fatal(err)
	}
	mt := unix.Timespec{Sec: 1234, Nsec: 5678}
	if err := fsys.Utimens(ctx, "d/moved", nil, &mt); err != nil {
		t.Fatal(err)
	}
	if st, err := fsys.Lstat(ctx, "sub/new"); err != nil || st.Mode != unix.S_IFREG|0o600 || st.Size != 1 || st.Nlink != 2 || st.Mtim != mt {
		t.Errorf("sub/new after chmod, truncate, utimens through its link: %+v, %v", st, err)
	}
	if err := fsys.Unlink(ctx, "d/moved"); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Unlink(ctx, "d/fifo"); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Rmdir(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(at("d")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("d after rmdir: %v", err)
	}
	if st, err := fsys.Statfs(ctx, "."); err != nil || st.Bsize == 0 || st.Namelen == 0 {
		t.Errorf("statfs = %+v, %v", st, err)
	}
	err = fsys.Setxattr(ctx, "hello.txt", "user.a", []byte("1"), 0)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		t.Logf("no user xattrs in %s", root)
	} else {
		if err != nil {
			t.Fatal(err)
		}
		if v, err := fsys.Getxattr(ctx, "hello.txt", "user.a"); err != nil || string(v) != "1" {
			t.Errorf("getxattr = %q, %v", v, err)
		}
		if l, err := fsys.Listxattr(ctx, "hello.txt"); err != nil || !slices.Contains(l, "user.a") {
			t.Errorf("listxattr = %q, %v", l, err)
		}
		if err := fsys.Removexattr(ctx, "hello.txt", "user.a"); err != nil {
			t.Errorf("removexattr: %v", err)
		}
	}
	if err := fsys.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if _, err := fsys.Lstat(ctx, "."); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("lstat after close = %v, want ENOTCONN", err)
	}
}

// TestRemoteErrnos: the errno of a remote failure is the FS's, and a
// failure without one (the object revoked) is EIO.
func TestRemoteErrnos(t *testing.T) {
	testenv.AlsoAsNobody(t)
	root := tree(t)
	if err := os.WriteFile(filepath.Join(root, "secret"), nil, 0); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	fsys := serve(t, root, dir.All)
	ro := serve(t, root, dir.ReadOnly)
	open := func(fsys served.FS, name string, flag int) error {
		f, err := fsys.OpenFile(ctx, name, flag, 0o644)
		if err == nil {
			f.Close()
		}
		return err
	}
	_, lstatErr := fsys.Lstat(ctx, "missing")
	for _, c := range []struct {
		what    string
		err     error
		errno   syscall.Errno
		notRoot bool
	}{
		{"lstat of nothing", lstatErr, syscall.ENOENT, false},
		{"open of nothing", open(fsys, "sub/missing", os.O_RDONLY), syscall.ENOENT, false},
		{"open without permission", open(fsys, "secret", os.O_RDONLY), syscall.EACCES, true},
		{"chown to another user", fsys.Chown(ctx, "hello.txt", 1, -1), syscall.EPERM, true},
		{"unlink without the delete right", ro.Unlink(ctx, "hello.txt"), syscall.EPERM, false},
		{"create without the create right", open(ro, "x", os.O_WRONLY|os.O_CREATE), syscall.EPERM, false},
		{"rmdir of a full directory", fsys.Rmdir(ctx, "sub"), syscall.ENOTEMPTY, false},
		{"a device node", fsys.Mknod(ctx, "null", unix.S_IFCHR|0o666, unix.Mkdev(1, 3)), syscall.EPERM, false},
	} {
		if c.notRoot && os.Geteuid() == 0 {
			continue
		}
		if !errors.Is(c.err, c.errno) {
			t.Errorf("%s = %v, want %v", c.what, c.err, c.errno)
		}
	}

	d, err := dir.Open(root, dir.All)
	if err != nil {
		t.Fatal(err)
	}
	h, revoke := rpc.Revocable(directory.New(d))
	c, _ := rpctest.Pair(t, h)
	rev := New(directory.Client{Client: c})
	defer rev.Close()
	if _, err := rev.Lstat(ctx, "hello.txt"); err != nil {
		t.Fatal(err)
	}
	revoke()
	if _, err := rev.Lstat(ctx, "hello.txt"); !errors.Is(err, syscall.EIO) || !errors.Is(err, rpc.ErrRevoked) {
		t.Errorf("lstat after revoke = %v, want EIO and rpc.ErrRevoked", err)
	}
	var errno syscall.Errno
	if _, err := rev.ReadDir(ctx, "."); !errors.As(err, &errno) || errno != syscall.EIO {
		t.Errorf("readdir after revoke = %v (errno %v), want EIO", err, errno)
	}

	// The server gone: ENOTCONN. A request given up: its context's error.
	d, err = dir.Open(root, dir.All)
	if err != nil {
		t.Fatal(err)
	}
	c, srv := rpctest.Pair(t, directory.New(d))
	gone := New(directory.Client{Client: c})
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := gone.Lstat(cancelled, "hello.txt"); !errors.Is(err, context.Canceled) || errors.As(err, &errno) {
		t.Errorf("lstat with an ended context = %v, want context.Canceled and no errno", err)
	}
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if _, err := gone.Lstat(ctx, "hello.txt"); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("lstat after the server's shutdown = %v, want ENOTCONN", err)
	}
}

// TestRemoteUnion unites a read-only object and a writable one: lookups
// find either's names, new names go to the writable one, and a rename
// from one to the other is EXDEV.
func TestRemoteUnion(t *testing.T) {
	lower, upper := tree(t), t.TempDir()
	if err := os.Mkdir(filepath.Join(upper, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(upper, "hello.txt"), []byte("upper"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	u := served.Union(
		served.UnionMember{FS: serve(t, upper, dir.All), Writable: true},
		served.UnionMember{FS: serve(t, lower, dir.ReadOnly)},
	)
	defer u.Close()
	f, err := u.OpenFile(ctx, "hello.txt", os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s := read(t, f); s != "upper" {
		t.Errorf("hello.txt holds %q, want the upper member's", s)
	}
	f, err = u.OpenFile(ctx, "sub/inner.txt", os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s := read(t, f); s != "inner" {
		t.Errorf("sub/inner.txt holds %q", s)
	}
	f, err = u.OpenFile(ctx, "sub/made", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := os.Lstat(filepath.Join(upper, "sub", "made")); err != nil {
		t.Errorf("sub/made is not in the upper member: %v", err)
	}
	if err := u.Rename(ctx, "sub/inner.txt", "sub/moved", 0); !errors.Is(err, syscall.EXDEV) {
		t.Errorf("rename from the lower member = %v, want EXDEV", err)
	}
	if err := u.Unlink(ctx, "sub/inner.txt"); !errors.Is(err, syscall.EPERM) {
		t.Errorf("unlink in the read-only member = %v, want EPERM", err)
	}
	ents, err := u.ReadDir(ctx, "sub")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"inner.txt", "made"}) {
		t.Errorf("readdir sub = %v", names)
	}
}
