package directory

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/fxamacker/cbor/v2"
	"golang.org/x/sys/unix"
)

// TestDirectoryFSMethods makes one call of each file-system method and
// checks what it did to the tree, as the host sees it.
func TestDirectoryFSMethods(t *testing.T) {
	testenv.AlsoAsNobody(t)
	d, root := dirPair(t, dir.All)
	ctx := context.Background()
	at := func(p string) string { return filepath.Join(root, p) }

	var want unix.Stat_t
	if err := unix.Lstat(at("hello.txt"), &want); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Lstat(ctx, "hello.txt"); err != nil || got != want {
		t.Fatalf("lstat hello.txt = %+v, %v; want %+v", got, err, want)
	}

	f, err := d.Openat(ctx, "zero", os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, err := os.Lstat(at("zero")); err != nil || fi.Mode() != 0 {
		t.Errorf("openat with mode 0 made %v, %v", fi.Mode(), err)
	}
	if err := d.Mkdirat(ctx, "dir0", 0o700); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(at("dir0")); err != nil || fi.Mode() != os.ModeDir|0o700 {
		t.Errorf("mkdirat 0700 made %v, %v", fi.Mode(), err)
	}
	if err := d.Mknodat(ctx, "fifo", unix.S_IFIFO|0o640, 0); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(at("fifo")); err != nil || fi.Mode() != os.ModeNamedPipe|0o640 {
		t.Errorf("mknodat FIFO made %v, %v", fi.Mode(), err)
	}
	if err := d.Symlink(ctx, "hello.txt", "lnk"); err != nil {
		t.Fatal(err)
	}
	if s, err := d.Readlink(ctx, "lnk"); err != nil || s != "hello.txt" {
		t.Errorf("readlink = %q, %v", s, err)
	}
	if f, err := d.Openat(ctx, "lnk", os.O_RDONLY|unix.O_NOFOLLOW, 0); !errors.Is(err, syscall.ELOOP) {
		if err == nil {
			f.Close()
		}
		t.Errorf("openat O_NOFOLLOW of a link = %v, want ELOOP", err)
	}
	if err := d.Link(ctx, "hello.txt", "sub/hard"); err != nil {
		t.Fatal(err)
	}
	if st, err := d.Lstat(ctx, "sub/hard"); err != nil || st.Ino != want.Ino || st.Nlink != 2 {
		t.Errorf("lstat of the hard link: ino %d nlink %d, %v", st.Ino, st.Nlink, err)
	}
	if err := d.Chmod(ctx, "hello.txt", 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Truncate(ctx, "hello.txt", 2); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(at("hello.txt")); string(b) != "he" {
		t.Errorf("after truncate 2: %q", b)
	}
	atime, mtime := unix.Timespec{Sec: 1e9, Nsec: 5}, unix.Timespec{Sec: 2e9, Nsec: 7}
	if err := d.Utimens(ctx, "lnk", &atime, &mtime); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(at("lnk"), &st); err != nil || st.Atim != atime || st.Mtim != mtime {
		t.Errorf("the link's times after utimens: %v %v, %v", st.Atim, st.Mtim, err)
	}
	if err := unix.Stat(at("lnk"), &st); err != nil || st.Mtim == mtime {
		t.Errorf("utimens of the link changed its target's: %v", err)
	}
	if err := d.Utimens(ctx, "lnk", nil, nil); err != nil {
		t.Errorf("utimens with both times nil: %v", err)
	}
	if err := d.Chown(ctx, "lnk", -1, os.Getgid()); err != nil {
		t.Errorf("chown to one's own group: %v", err)
	}
	if err := d.Renameat2(ctx, "zero", "sub/zero", unix.RENAME_NOREPLACE); err != nil {
		t.Fatal(err)
	}
	if err := d.Renameat2(ctx, "sub/zero", "sub/inner.txt", unix.RENAME_NOREPLACE); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("renameat2 NOREPLACE over a name = %v, want EEXIST", err)
	}
	if err := d.Renameat2(ctx, "sub/zero", "sub/inner.txt", unix.RENAME_EXCHANGE); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(at("sub/zero")); string(b) != "inner" {
		t.Errorf("after the exchange, sub/zero holds %q", b)
	}
	if err := d.Unlink(ctx, "dir0"); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("unlink of a directory = %v, want EISDIR", err)
	}
	if err := d.Rmdir(ctx, "fifo"); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("rmdir of a FIFO = %v, want ENOTDIR", err)
	}
	if err := d.Rmdir(ctx, "dir0"); err != nil {
		t.Fatal(err)
	}
	if err := d.Unlink(ctx, "fifo"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(at("fifo")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("fifo after unlink: %v", err)
	}
	var wantfs unix.Statfs_t
	if err := unix.Statfs(root, &wantfs); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Statfs(ctx, "."); err != nil || got.Type != wantfs.Type || got.Bsize != wantfs.Bsize || got.Namelen != wantfs.Namelen || got.Blocks != wantfs.Blocks {
		t.Errorf("statfs = %+v, %v; want %+v", got, err, wantfs)
	}

	ents, err := d.Getdents(ctx, ".")
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(ents, func(a, b Dirent) int { return strings.Compare(a.Name, b.Name) })
	wantEnts := []Dirent{{"hello.txt", unix.DT_REG, want.Ino}, {"lnk", unix.DT_LNK, 0}, {"sub", unix.DT_DIR, 0}}
	for i := range wantEnts {
		if i < len(ents) && wantEnts[i].Ino == 0 {
			wantEnts[i].Ino = ents[i].Ino
		}
	}
	if !slices.Equal(ents, wantEnts) {
		t.Errorf("getdents . = %v, want %v", ents, wantEnts)
	}

	err = d.Setxattr(ctx, "hello.txt", "user.k", []byte("v"), unix.XATTR_CREATE)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		t.Logf("no user xattrs in %s: %v", root, err)
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if v, err := d.Getxattr(ctx, "hello.txt", "user.k"); err != nil || string(v) != "v" {
		t.Errorf("getxattr = %q, %v", v, err)
	}
	if l, err := d.Listxattr(ctx, "hello.txt"); err != nil || !slices.Contains(l, "user.k") {
		t.Errorf("listxattr = %q, %v", l, err)
	}
	if err := d.Setxattr(ctx, "hello.txt", "user.k", []byte("w"), unix.XATTR_CREATE); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("setxattr XATTR_CREATE of one that is = %v, want EEXIST", err)
	}
	if err := d.Removexattr(ctx, "hello.txt", "user.k"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Getxattr(ctx, "hello.txt", "user.k"); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("getxattr after removexattr = %v, want ENODATA", err)
	}
	if err := d.Setxattr(ctx, "hello.txt", "user.big", make([]byte, maxXattr+1), 0); !errors.Is(err, syscall.E2BIG) {
		t.Errorf("setxattr of %d bytes = %v, want E2BIG", maxXattr+1, err)
	}
}

// TestDirectoryFSErrnos checks that the errno a remote failure had is the
// one the caller gets, for what a FUSE server passes on to programs.
func TestDirectoryFSErrnos(t *testing.T) {
	testenv.AlsoAsNobody(t)
	d, root := dirPair(t, dir.All)
	ctx := context.Background()
	if err := os.WriteFile(filepath.Join(root, "secret"), []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "locked"), 0o500); err != nil {
		t.Fatal(err)
	}
	root0 := os.Geteuid() == 0
	ro, err := d.Sub(ctx, ".", dir.ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	type call struct {
		name  string
		err   error
		errno syscall.Errno
		root  bool // the errno holds for root too
	}
	openErr := func(c Client, p string, flags int) error {
		f, err := c.Openat(ctx, p, flags, 0o644)
		if err == nil {
			f.Close()
		}
		return err
	}
	_, lstatErr := d.Lstat(ctx, "missing")
	_, getdentsErr := d.Getdents(ctx, "missing")
	_, readlinkErr := d.Readlink(ctx, "hello.txt")
	for _, c := range []call{
		{"lstat of nothing", lstatErr, syscall.ENOENT, true},
		{"getdents of nothing", getdentsErr, syscall.ENOENT, true},
		{"readlink of a file", readlinkErr, syscall.EINVAL, true},
		{"unlink of nothing", d.Unlink(ctx, "missing"), syscall.ENOENT, true},
		{"mkdirat of a name", d.Mkdirat(ctx, "sub", 0o755), syscall.EEXIST, true},
		{"rmdir of a full directory", d.Rmdir(ctx, "sub"), syscall.ENOTEMPTY, true},
		{"lstat out of the tree", func() error { _, err := d.Lstat(ctx, "../x"); return err }(), syscall.EXDEV, true},
		{"open without permission", openErr(d, "secret", os.O_RDONLY), syscall.EACCES, false},
		{"create in a 0500 directory", openErr(d, "locked/new", os.O_WRONLY|os.O_CREATE), syscall.EACCES, false},
		{"chown to root", d.Chown(ctx, "hello.txt", 0, 0), syscall.EPERM, false},
		{"unlink without the delete right", ro.Unlink(ctx, "hello.txt"), syscall.EPERM, true},
		{"setxattr without the setattr right", ro.Setxattr(ctx, "hello.txt", "user.x", nil, 0), syscall.EPERM, true},
		{"truncate without the write right", ro.Truncate(ctx, "hello.txt", 0), syscall.EPERM, true},
		{"chmod without the setattr right", ro.Chmod(ctx, "hello.txt", 0o600), syscall.EPERM, true},
	} {
		if root0 && !c.root {
			continue
		}
		if !errors.Is(c.err, c.errno) {
			t.Errorf("%s = %v, want %v", c.name, c.err, c.errno)
		}
	}
	if err := ro.Unlink(ctx, "hello.txt"); !errors.Is(err, rpc.ErrDenied) {
		t.Errorf("unlink without the delete right = %v, want rpc.ErrDenied", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "hello.txt")); err != nil {
		t.Errorf("hello.txt after a refused unlink: %v", err)
	}
}

// TestDirectoryFSPolicy checks what the server refuses any peer: setuid,
// setgid and sticky bits, device nodes, security and trusted extended
// attributes, renameat2 flags beyond NOREPLACE and EXCHANGE.
func TestDirectoryFSPolicy(t *testing.T) {
	testenv.AlsoAsNobody(t)
	d, root := dirPair(t, dir.All)
	ctx := context.Background()
	at := func(p string) string { return filepath.Join(root, p) }
	const special = os.ModeSetuid | os.ModeSetgid | os.ModeSticky
	if err := d.Chmod(ctx, "hello.txt", 0o6755); err != nil {
		t.Fatal(err)
	}
	if err := d.Mkdirat(ctx, "d", 0o1777); err != nil {
		t.Fatal(err)
	}
	f, err := d.Openat(ctx, "f", os.O_WRONLY|os.O_CREATE, 0o4755)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := d.Mknodat(ctx, "n", unix.S_IFREG|0o2755, 0); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"hello.txt", "d", "f", "n"} {
		if fi, err := os.Lstat(at(p)); err != nil || fi.Mode()&special != 0 {
			t.Errorf("%s: mode %v, %v; want no special bits", p, fi.Mode(), err)
		}
	}
	for _, c := range []struct {
		name  string
		err   error
		errno syscall.Errno
	}{
		{"a character device", d.Mknodat(ctx, "null", unix.S_IFCHR|0o666, unix.Mkdev(1, 3)), syscall.EPERM},
		{"a block device", d.Mknodat(ctx, "blk", unix.S_IFBLK|0o666, 0), syscall.EPERM},
		{"a FIFO with a device number", d.Mknodat(ctx, "fifo", unix.S_IFIFO|0o666, 1), syscall.EPERM},
		{"a directory by mknod", d.Mknodat(ctx, "dd", unix.S_IFDIR|0o755, 0), syscall.EPERM},
		{"security.capability", d.Setxattr(ctx, "hello.txt", "security.capability", []byte{1, 2, 3}, 0), syscall.EPERM},
		{"trusted.x", d.Setxattr(ctx, "hello.txt", "trusted.x", []byte("v"), 0), syscall.EPERM},
		{"removing security.selinux", d.Removexattr(ctx, "hello.txt", "security.selinux"), syscall.EPERM},
		{"RENAME_WHITEOUT", d.Renameat2(ctx, "hello.txt", "w", unix.RENAME_WHITEOUT), syscall.EINVAL},
	} {
		if !errors.Is(c.err, c.errno) {
			t.Errorf("%s = %v, want %v", c.name, c.err, c.errno)
		}
	}
	for _, p := range []string{"null", "blk", "fifo", "dd", "w"} {
		if _, err := os.Lstat(at(p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists after a refusal: %v", p, err)
		}
	}
}

// TestDirectoryGetdentsBulk lists a directory too large for one message:
// the entries come in a sealed memfd.
func TestDirectoryGetdentsBulk(t *testing.T) {
	d, root := dirPair(t, dir.All)
	ctx := context.Background()
	want := map[string]uint64{}
	for i := range 3000 {
		name := fmt.Sprintf("a-rather-long-file-name-%06d", i)
		p := filepath.Join(root, "sub", name)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		want[name] = st.Ino
	}
	ents, err := d.Getdents(ctx, "sub")
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(want)+1 {
		t.Fatalf("getdents: %d entries, want %d", len(ents), len(want)+1)
	}
	for _, e := range ents {
		if ino, ok := want[e.Name]; ok && (e.Ino != ino || e.Type != unix.DT_REG) {
			t.Errorf("%s: ino %d type %d, want %d %d", e.Name, e.Ino, e.Type, ino, unix.DT_REG)
		}
	}
}

// TestDirectoryFSDistrustsServer: what a server answers is checked, not
// trusted: malformed entries, a bulk descriptor that is not a sealed
// memfd, both data and a descriptor.
func TestDirectoryFSDistrustsServer(t *testing.T) {
	ctx := context.Background()
	entry := func(ino uint64, typ uint8, name string) []byte {
		return encodeDirents([]Dirent{{Name: name, Type: typ, Ino: ino}})
	}
	good := entry(1, unix.DT_REG, "ok")
	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pipeR.Close()
	defer pipeW.Close()
	sealed, err := rpc.Bulk("x", good)
	if err != nil {
		t.Fatal(err)
	}
	defer sealed.File.Close()
	for _, c := range []struct {
		name  string
		reply func() (any, error)
		want  error
	}{
		{"a truncated entry", func() (any, error) { return Dirents{Data: good[:5]}, nil }, rpc.ErrBadMessage},
		{"a name longer than its bytes", func() (any, error) { return Dirents{Data: good[:len(good)-1]}, nil }, rpc.ErrBadMessage},
		{"an empty name", func() (any, error) { return Dirents{Data: entry(1, 8, "")}, nil }, rpc.ErrBadMessage},
		{`".."`, func() (any, error) { return Dirents{Data: entry(1, 4, "..")}, nil }, rpc.ErrBadMessage},
		{"a name with a slash", func() (any, error) { return Dirents{Data: entry(1, 8, "../etc")}, nil }, rpc.ErrBadMessage},
		{"a name with a NUL", func() (any, error) { return Dirents{Data: entry(1, 8, "a\x00b")}, nil }, rpc.ErrBadMessage},
		{"a name of 256 bytes", func() (any, error) { return Dirents{Data: entry(1, 8, strings.Repeat("n", 256))}, nil }, rpc.ErrBadMessage},
		{"a pipe as bulk", func() (any, error) { return Dirents{Bulk: rpc.FD{File: pipeR}}, nil }, rpc.ErrInvalid},
		{"data and bulk", func() (any, error) {
			dup, err := rpc.Bulk("x", good)
			return Dirents{Data: good, Bulk: dup}, err
		}, rpc.ErrBadMessage},
		{"the wrong type", func() (any, error) { return "not entries", nil }, rpc.ErrBadMessage},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl, _ := rpctest.Pair(t, rpc.Methods{"getdents": func(ctx context.Context, call *rpc.Call) (any, error) {
				call.Args(nil)
				r, err := c.reply()
				if d, ok := r.(Dirents); ok && d.Bulk.File == pipeR {
					// The server closes what it sends: send a duplicate.
					f, err := dupFile(pipeR)
					return Dirents{Bulk: rpc.FD{File: f}}, err
				}
				return r, err
			}})
			ents, err := (Client{cl}).Getdents(ctx, ".")
			if !errors.Is(err, c.want) {
				t.Fatalf("getdents = %v, %v; want %v", ents, err, c.want)
			}
		})
	}
}

func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// TestDirectoryFSBadArgs: arguments of the wrong shape fail alone, with
// ErrBadMessage, and the object goes on.
func TestDirectoryFSBadArgs(t *testing.T) {
	d, root := dirPair(t, dir.All)
	ctx := context.Background()
	for _, c := range []struct {
		method string
		args   any
	}{
		{"getattr", 42},
		{"getdents", []string{"."}},
		{"openat", "hello.txt"},
		{"chown", ChmodLike{Path: "hello.txt", Mode: 1}},
		{"renameat2", map[string]any{"Old": "hello.txt", "New": "x", "Flags": "all"}},
		{"utimens", map[string]any{"Path": "hello.txt", "Atime": 5}},
		{"setxattr", map[string]any{"Path": "hello.txt", "Name": "user.x", "Value": "text, not bytes", "Extra": 1}},
		{"truncate", TruncateArgs{Path: "hello.txt", Size: -1}},
	} {
		err := d.Call(ctx, c.method, c.args, nil)
		want := error(rpc.ErrBadMessage)
		if c.method == "truncate" {
			want = syscall.EINVAL
		}
		if !errors.Is(err, want) {
			t.Errorf("%s(%v) = %v, want %v", c.method, c.args, err, want)
		}
	}
	if err := d.Call(ctx, "fsync", "hello.txt", nil); !errors.Is(err, rpc.ErrUnknownMethod) {
		t.Errorf("an unknown method = %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(root, "hello.txt")); err != nil || fi.Size() != 5 {
		t.Errorf("hello.txt after the bad calls: %v, %v", fi, err)
	}
	if _, err := d.Lstat(ctx, "hello.txt"); err != nil {
		t.Errorf("the object after the bad calls: %v", err)
	}
}

// ChmodLike is a struct of another method's shape.
type ChmodLike struct {
	Path string
	Mode uint32
}

// FuzzDecodeDirents: whatever a server sends as entries, decoding does
// not panic, and what it accepts are names a directory can hold.
func FuzzDecodeDirents(f *testing.F) {
	f.Add(encodeDirents([]Dirent{{"a", unix.DT_REG, 1}, {"b", unix.DT_DIR, 2}}))
	f.Add([]byte{1, 2, 3})
	f.Add(encodeDirents([]Dirent{{"..", unix.DT_DIR, 1}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		ents, err := decodeDirents(b)
		if err != nil {
			if !errors.Is(err, rpc.ErrBadMessage) {
				t.Fatalf("error %v, want rpc.ErrBadMessage", err)
			}
			return
		}
		for _, e := range ents {
			if e.Name == "" || e.Name == "." || e.Name == ".." || len(e.Name) > 255 || strings.ContainsAny(e.Name, "/\x00") {
				t.Fatalf("accepted the name %q", e.Name)
			}
		}
		if again := encodeDirents(ents); string(again) != string(b) {
			t.Fatalf("re-encoding gives %x, not %x", again, b)
		}
	})
}

// FuzzDirectoryFSArgs sends any well-formed CBOR as the arguments of the
// file-system methods to a Directory over a temporary tree: the server
// must not panic, and must answer every call with a result or an
// *rpc.Error, within a few seconds (nothing it does may block).
func FuzzDirectoryFSArgs(f *testing.F) {
	methods := []string{"getattr", "getdents", "openat", "mkdirat", "mknodat", "unlink", "rmdir", "renameat2",
		"link", "symlink", "readlink", "chmod", "chown", "truncate", "utimens", "statfs", "getxattr",
		"listxattr", "setxattr", "removexattr", "openfile"}
	seed := func(method string, args any) {
		b, err := cbor.Marshal(args)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(slices.Index(methods, method)), b)
	}
	seed("getattr", "hello.txt")
	seed("openat", OpenatArgs{Path: "sub/new", Flags: os.O_RDWR | os.O_CREATE, Mode: 0o600})
	seed("mknodat", MknodArgs{Path: "fifo", Mode: unix.S_IFIFO | 0o600})
	seed("renameat2", Renameat2Args{Old: "hello.txt", New: "sub/x", Flags: unix.RENAME_NOREPLACE})
	seed("utimens", UtimensArgs{Path: "sub", Mtime: &Timespec{Nsec: unix.UTIME_NOW}})
	seed("setxattr", XattrArgs{Path: "hello.txt", Name: "user.f", Value: []byte("v")})
	d, _ := dirPair(f, dir.All)
	f.Fuzz(func(t *testing.T, m uint8, body []byte) {
		if cbor.Wellformed(body) != nil {
			return // the client's encoder would refuse it; FuzzDecodeBody covers the server's decoder
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var res any
		err := d.Call(ctx, methods[int(m)%len(methods)], cbor.RawMessage(body), &res)
		var e *rpc.Error
		if err != nil && !errors.As(err, &e) {
			return // the client did not send it (well-formed, but not valid: a bignum tag on an integer)
		}
		if e != nil && (e.Code == rpc.CodeClosed || e.Code == rpc.CodeFailed && e.Text == "internal error") { // ended, or the handler panicked
			t.Fatalf("%s: the object ended: %v", methods[int(m)%len(methods)], err)
		}
		if fd, ok := res.(rpc.FD); ok && fd.File != nil {
			fd.File.Close()
		}
	})
}

// TestDirectoryFSNames: names with newlines and of the maximum length go
// through, longer ones and NULs fail with the kernel's errnos.
func TestDirectoryFSNames(t *testing.T) {
	d, _ := dirPair(t, dir.All)
	ctx := context.Background()
	long := strings.Repeat("n", 255)
	for _, name := range []string{"new\nline", long, "sub/" + long, "\xff\xfe"} {
		f, err := d.Openat(ctx, name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			t.Errorf("openat %q: %v", name, err)
			continue
		}
		f.Close()
		if _, err := d.Lstat(ctx, name); err != nil {
			t.Errorf("lstat %q: %v", name, err)
		}
	}
	ents, err := d.Getdents(ctx, ".")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	for _, want := range []string{"new\nline", long, "\xff\xfe"} {
		if !slices.Contains(names, want) {
			t.Errorf("getdents: %q missing from %q", want, names)
		}
	}
	deep := strings.Repeat("d/", 2100) + "x" // longer than PATH_MAX
	for _, c := range []struct {
		name  string
		errno syscall.Errno
	}{
		{long + "n", syscall.ENAMETOOLONG},
		{"a\x00b", syscall.EINVAL},
		{deep, syscall.ENAMETOOLONG},
	} {
		if err := d.Mkdirat(ctx, c.name, 0o755); !errors.Is(err, c.errno) {
			t.Errorf("mkdirat %.20q... = %v, want %v", c.name, err, c.errno)
		}
	}
}
