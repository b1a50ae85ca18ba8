package served

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// eventLog collects a server's events.
type eventLog struct {
	mu sync.Mutex
	ev []Event
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ev = append(l.ev, e)
}

func (l *eventLog) all() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ev)
}

// tree makes files under root (see testenv.WriteTree).
var tree = testenv.WriteTree

// serveHost serves root with rights and mounts it in a worker.
func serveHost(t testing.TB, root string, rights Rights) (*mount, *eventLog) {
	t.Helper()
	d, err := dir.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	log := &eventLog{}
	s := NewServer(Host(d), Options{Rights: rights, Dest: "/data", Events: log.add})
	return mountServer(t, s), log
}

func TestServeHost(t *testing.T) {
	alsoAsNobody(t)
	root := t.TempDir()
	outside := t.TempDir()
	tree(t, outside, map[string]string{"secret": "s"})
	tree(t, root, map[string]string{"f": "hello", "sub/g": "g", "link": "->f"})
	m, log := serveHost(t, root, All)

	if a := m.ok(req{Op: "read", Path: "f"}); string(a.Data) != "hello" {
		t.Errorf("read f: %q", a.Data)
	}
	if a := m.ok(req{Op: "read", Path: "link"}); string(a.Data) != "hello" {
		t.Errorf("read through link: %q", a.Data)
	}
	if a := m.ok(req{Op: "readlink", Path: "link"}); string(a.Data) != "f" {
		t.Errorf("readlink: %q", a.Data)
	}
	// Owners: the test's IDs are 0 inside.
	if a := m.ok(req{Op: "lstat", Path: "f"}); a.Stat.UID != 0 || a.Stat.GID != 0 || a.Stat.Mode != unix.S_IFREG|0o644 || a.Stat.Size != 5 {
		t.Errorf("stat f: %+v", a.Stat)
	}
	m.ok(req{Op: "write", Path: "new", Data: []byte("made"), Flags: os.O_CREATE | os.O_EXCL | os.O_WRONLY, Mode: 0o640})
	if b, err := os.ReadFile(filepath.Join(root, "new")); err != nil || string(b) != "made" {
		t.Errorf("new on the host: %q %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(root, "new")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("new's mode on the host: %v %v", fi.Mode(), err)
	}
	m.ok(req{Op: "mkdir", Path: "d", Mode: 0o775})
	if fi, err := os.Stat(filepath.Join(root, "d")); err != nil || fi.Mode().Perm() != 0o775 {
		t.Errorf("mkdir d: mode %v %v (the server's umask must not apply)", fi.Mode(), err)
	}
	m.ok(req{Op: "rename", Path: "new", Path2: "d/renamed"})
	if a := m.ok(req{Op: "read", Path: "d/renamed"}); string(a.Data) != "made" {
		t.Errorf("after rename: %q", a.Data)
	}
	m.ok(req{Op: "link", Path: "d/renamed", Path2: "hard"})
	m.ok(req{Op: "symlink", Path: "sym", Path2: "d/renamed"})
	if a := m.ok(req{Op: "read", Path: "sym"}); string(a.Data) != "made" {
		t.Errorf("read new symlink: %q", a.Data)
	}
	m.ok(req{Op: "chmod", Path: "hard", Mode: 0o600})
	m.ok(req{Op: "truncate", Path: "hard", Off: 2})
	if b, _ := os.ReadFile(filepath.Join(root, "d/renamed")); string(b) != "ma" {
		t.Errorf("truncate through a hard link: %q", b)
	}
	m.ok(req{Op: "utimes", Path: "hard", Off: 1234567})
	if fi, _ := os.Stat(filepath.Join(root, "hard")); fi.ModTime().Unix() != 1234567 {
		t.Errorf("utimes: %v", fi.ModTime())
	}
	m.ok(req{Op: "lchown", Path: "hard", UID: 0, GID: 0})
	m.errno(req{Op: "lchown", Path: "hard", UID: 70000, GID: -1}, unmappedChownErrno())
	m.errno(req{Op: "rmdir", Path: "d"}, syscall.ENOTEMPTY)
	m.errno(req{Op: "unlink", Path: "d"}, syscall.EISDIR)
	m.ok(req{Op: "unlink", Path: "d/renamed"})
	m.ok(req{Op: "rmdir", Path: "d"})
	m.errno(req{Op: "read", Path: "missing"}, syscall.ENOENT)
	m.ok(req{Op: "write", Path: "missing", Data: []byte("now"), Flags: os.O_CREATE | os.O_WRONLY, Mode: 0o644})
	if a := m.ok(req{Op: "read", Path: "missing"}); string(a.Data) != "now" {
		t.Errorf("a name cached missing, made: %q", a.Data)
	}

	// Names with a newline, and of the longest length.
	long := strings.Repeat("n", 255)
	for _, name := range []string{"with\nnewline", long} {
		m.ok(req{Op: "write", Path: name, Data: []byte(name[:4]), Flags: os.O_CREATE | os.O_WRONLY, Mode: 0o644})
		if a := m.ok(req{Op: "read", Path: name}); string(a.Data) != name[:4] {
			t.Errorf("read %q: %q", name, a.Data)
		}
	}
	m.errno(req{Op: "write", Path: long + "x", Flags: os.O_CREATE | os.O_WRONLY, Mode: 0o644}, syscall.ENAMETOOLONG)
	a := m.ok(req{Op: "readdir", Path: "."})
	for _, want := range []string{"f", "sub", "link", "with\nnewline", long, "hard", "sym"} {
		if !slices.Contains(a.Names, want) {
			t.Errorf("readdir: %q missing from %q", want, a.Names)
		}
	}

	// Extended attributes, where the host file system has user ones.
	if a := m.do(req{Op: "setxattr", Path: "f", Path2: "user.k", Data: []byte("v")}); a.Errno == 0 {
		if a := m.ok(req{Op: "getxattr", Path: "f", Path2: "user.k"}); string(a.Data) != "v" {
			t.Errorf("getxattr: %q", a.Data)
		}
		m.ok(req{Op: "removexattr", Path: "f", Path2: "user.k"})
	} else if syscall.Errno(a.Errno) != syscall.EOPNOTSUPP {
		t.Errorf("setxattr: %s", a.Err)
	}
	if ev := log.all(); len(ev) != 0 {
		t.Errorf("events with every right: %+v", ev)
	}
}

// TestReadOnly: a read-only mount (whose opens the kernel does not send)
// reads, and refuses writes with EACCES and an event.
func TestReadOnly(t *testing.T) {
	alsoAsNobody(t)
	root := t.TempDir()
	tree(t, root, map[string]string{"f": "data", "sub/g": "g"})
	m, log := serveHost(t, root, ReadOnly)
	for range 2 {
		if a := m.ok(req{Op: "read", Path: "f"}); string(a.Data) != "data" {
			t.Errorf("read: %q", a.Data)
		}
	}
	if a := m.ok(req{Op: "readdir", Path: "sub"}); !slices.Equal(a.Names, []string{"g"}) {
		t.Errorf("readdir: %q", a.Names)
	}
	// The kernel lets the open through; the write is refused.
	fd := int(m.ok(req{Op: "open", Path: "f", Flags: os.O_WRONLY}).N)
	m.errno(req{Op: "fwrite", FD: fd, Data: []byte("x")}, syscall.EACCES)
	m.errno(req{Op: "write", Path: "f", Data: []byte("x"), Flags: os.O_WRONLY | os.O_TRUNC}, syscall.EACCES)
	m.errno(req{Op: "write", Path: "new", Flags: os.O_WRONLY | os.O_CREATE, Mode: 0o644}, syscall.EACCES)
	if b, _ := os.ReadFile(filepath.Join(root, "f")); string(b) != "data" {
		t.Errorf("f changed: %q", b)
	}
	if ev := log.all(); len(ev) != 3 {
		t.Errorf("events: %+v, want 3", ev)
	}
}

// unmappedChownErrno is what chown to an ID the user namespace does not
// map gives: the kernel refuses it before asking the server.
func unmappedChownErrno() syscall.Errno { return syscall.EINVAL }

// TestHostConfined: the FS never leaves its directory, whatever the names
// and links in it say; through the mount, the kernel resolves symbolic
// links itself, in the program's own view, and the server never follows
// one.
func TestHostConfined(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	tree(t, outside, map[string]string{"secret": "s"})
	tree(t, root, map[string]string{"f": "x", "out": "->" + outside, "rel": "->../" + filepath.Base(outside)})
	d, err := dir.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	fsys := Host(d)
	defer fsys.Close()
	ctx := context.Background()
	for _, name := range []string{"out/secret", "rel/secret", "../" + filepath.Base(outside) + "/secret"} {
		if _, err := fsys.OpenFile(ctx, name, os.O_RDONLY, 0); !errors.Is(err, unix.EXDEV) {
			t.Errorf("open %s: %v, want EXDEV", name, err)
		}
		if _, err := fsys.Lstat(ctx, name); !errors.Is(err, unix.EXDEV) {
			t.Errorf("lstat %s: %v, want EXDEV", name, err)
		}
		if err := fsys.Truncate(ctx, name, 0); !errors.Is(err, unix.EXDEV) {
			t.Errorf("truncate %s: %v, want EXDEV", name, err)
		}
	}
	if _, err := fsys.OpenFile(ctx, "out", os.O_RDONLY, 0); !errors.Is(err, unix.ELOOP) {
		t.Errorf("open of a final link: %v, want ELOOP", err)
	}
	if err := fsys.Chown(ctx, "out", os.Getuid(), -1); err != nil {
		t.Errorf("chown of a link: %v", err)
	}
	// A link within the tree: chmod is the link's own (refused, as Linux
	// refuses it), never its target's, whose owner the kernel did not
	// check (a link's owner may ask, through /proc, before Linux 6.6).
	if err := os.Symlink("f", filepath.Join(root, "in")); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(filepath.Join(root, "f"))
	if err := fsys.Chmod(ctx, "in", 0o4777); !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("chmod of a link: %v, want EOPNOTSUPP", err)
	}
	if after, _ := os.Stat(filepath.Join(root, "f")); after.Mode() != before.Mode() {
		t.Errorf("chmod of a link changed its target: %v -> %v", before.Mode(), after.Mode())
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "secret")); string(b) != "s" {
		t.Errorf("outside changed: %q", b)
	}
}

// TestRights: one refused operation per right, with the errno (EACCES) and
// the event; nothing changes on the host.
func TestRights(t *testing.T) {
	alsoAsNobody(t)
	files := map[string]string{"f": "data", "sub/g": "g", "link": "->f", "e/": ""}
	cases := []struct {
		name    string
		without Rights
		op      string // the FUSE operation in the event
		r       req
	}{
		{"read", RightRead, "open", req{Op: "read", Path: "f"}},
		{"readdir", RightRead, "opendir", req{Op: "readdir", Path: "sub"}},
		{"readlink", RightRead, "readlink", req{Op: "readlink", Path: "link"}},
		// Without write and append the kernel sends no opens (see TestReadOnly).
		{"write", RightWrite | RightAppend, "write", req{Op: "write", Path: "f", Flags: os.O_WRONLY, Data: []byte("w")}},
		{"write open", RightWrite, "open", req{Op: "write", Path: "f", Flags: os.O_WRONLY}},
		{"truncate", RightWrite, "setattr", req{Op: "truncate", Path: "f", Off: 1}},
		{"o_trunc", RightWrite, "open", req{Op: "write", Path: "f", Flags: os.O_WRONLY | os.O_TRUNC}},
		{"create", RightCreate, "create", req{Op: "write", Path: "new", Flags: os.O_CREATE | os.O_WRONLY, Mode: 0o644}},
		{"mkdir", RightCreate, "mkdir", req{Op: "mkdir", Path: "d", Mode: 0o755}},
		{"symlink", RightCreate, "symlink", req{Op: "symlink", Path: "s", Path2: "/etc/passwd"}},
		{"mknod", RightCreate, "mknod", req{Op: "mknod", Path: "p", Mode: unix.S_IFIFO | 0o644}},
		{"delete", RightDelete, "unlink", req{Op: "unlink", Path: "f"}},
		{"rmdir", RightDelete, "rmdir", req{Op: "rmdir", Path: "e"}},
		{"rename", RightRename, "rename", req{Op: "rename", Path: "f", Path2: "sub/f"}},
		{"rename over", RightDelete, "rename", req{Op: "rename", Path: "f", Path2: "sub/g"}},
		{"link", RightLink, "link", req{Op: "link", Path: "f", Path2: "sub/f"}},
		{"chmod", RightSetAttr, "setattr", req{Op: "chmod", Path: "f", Mode: 0o600}},
		{"chown", RightSetAttr, "setattr", req{Op: "lchown", Path: "f", UID: 0, GID: 0}},
		{"utimes", RightSetAttr, "setattr", req{Op: "utimes", Path: "f", Off: 1}},
		{"xattr", RightXattr, "setxattr", req{Op: "setxattr", Path: "f", Path2: "user.x", Data: []byte("v")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			tree(t, root, files)
			before := treeString(t, root)
			m, log := serveHost(t, root, All&^c.without)
			m.errno(c.r, syscall.EACCES)
			if after := treeString(t, root); after != before {
				t.Errorf("the tree changed:\n%s\n%s", before, after)
			}
			pid := m.ok(req{Op: "getpid"}).N
			ev := log.all()
			if len(ev) != 1 {
				t.Fatalf("events: %+v, want one", ev)
			}
			e := ev[0]
			// The kernel gives the calling thread's ID.
			_, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d", pid, e.PID))
			if e.Kind != "denied" || e.Op != c.op || e.Mount != "/data" || err != nil || !strings.HasPrefix(e.Path, "/") ||
				!strings.Contains(","+e.Missing+",", ","+strings.SplitN(c.without.String(), ",", 2)[0]+",") {
				t.Errorf("event %+v: want op %s, missing %s, pid %d", e, c.op, c.without, pid)
			}
		})
	}
}

// treeString lists a tree: names, modes, sizes, times and contents.
func treeString(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, _ := os.Lstat(p)
		c, _ := os.ReadFile(p)
		b.WriteString(p + " " + fi.Mode().String() + " " + fi.ModTime().String() + " " + string(c) + "\n")
		return nil
	})
	return b.String()
}

func TestAppendOnly(t *testing.T) {
	alsoAsNobody(t)
	root := t.TempDir()
	tree(t, root, map[string]string{"log": "one\n"})
	m, log := serveHost(t, root, All&^RightWrite)
	m.ok(req{Op: "write", Path: "log", Data: []byte("two\n"), Flags: os.O_WRONLY | os.O_APPEND})
	fd := int(m.ok(req{Op: "open", Path: "log", Flags: os.O_RDWR | os.O_APPEND}).N)
	// pwrite on an O_APPEND file appends on Linux, whatever the offset.
	m.ok(req{Op: "pwrite", FD: fd, Data: []byte("three\n"), Off: 0})
	m.ok(req{Op: "close", FD: fd})
	if b, _ := os.ReadFile(filepath.Join(root, "log")); string(b) != "one\ntwo\nthree\n" {
		t.Errorf("log: %q", b)
	}
	m.errno(req{Op: "write", Path: "log", Data: []byte("x"), Flags: os.O_WRONLY}, syscall.EACCES)
	m.errno(req{Op: "write", Path: "log", Flags: os.O_WRONLY | os.O_APPEND | os.O_TRUNC}, syscall.EACCES)
	m.errno(req{Op: "truncate", Path: "log", Off: 0}, syscall.EACCES)
	// New files may be made and written.
	m.ok(req{Op: "write", Path: "new", Data: []byte("n"), Flags: os.O_CREATE | os.O_EXCL | os.O_WRONLY, Mode: 0o644})
	if b, _ := os.ReadFile(filepath.Join(root, "log")); string(b) != "one\ntwo\nthree\n" {
		t.Errorf("log after refusals: %q", b)
	}
	if ev := log.all(); len(ev) != 3 {
		t.Errorf("events: %+v, want 3", ev)
	}
}

func TestRevoke(t *testing.T) {
	alsoAsNobody(t)
	// A writable mount has a handle per open file; a read-only one reads
	// by node (the kernel sends no opens).
	t.Run("rw", func(t *testing.T) { testRevoke(t, All, os.O_RDWR) })
	t.Run("ro", func(t *testing.T) { testRevoke(t, ReadOnly, os.O_RDONLY) })
}

func testRevoke(t *testing.T, rights Rights, flags int) {
	root := t.TempDir()
	tree(t, root, map[string]string{"f": strings.Repeat("x", 8192), "g": "g"})
	m, _ := serveHost(t, root, rights)
	fd := int(m.ok(req{Op: "open", Path: "f", Flags: flags}).N)
	if a := m.ok(req{Op: "pread", FD: fd, N: 10}); string(a.Data) != "xxxxxxxxxx" {
		t.Fatalf("pread: %q", a.Data)
	}
	m.ok(req{Op: "mmap", FD: fd, N: 8192})
	if a := m.ok(req{Op: "mmapread", FD: fd}); len(a.Data) != 8192 {
		t.Fatalf("mmap read: %d bytes", len(a.Data))
	}
	m.ok(req{Op: "stat", Path: "g"})

	start := time.Now()
	if err := m.srv.Revoke(); err != nil {
		t.Fatal(err)
	}
	m.errno(req{Op: "pread", FD: fd, N: 10}, syscall.EIO)
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("revoked after %v, want within 100ms", d)
	}
	if flags == os.O_RDWR {
		m.errno(req{Op: "pwrite", FD: fd, Data: []byte("y")}, syscall.EIO)
	}
	if a := m.do(req{Op: "mmapread", FD: fd}); a.Err != errFault.Error() {
		t.Errorf("mmap'd page after revoke: %+v, want a fault", a)
	}
	m.errno(req{Op: "stat", Path: "g"}, syscall.EIO)
	m.errno(req{Op: "read", Path: "g"}, syscall.EIO)
	m.errno(req{Op: "stat", Path: "nonexistent"}, syscall.EIO)
	m.errno(req{Op: "readdir", Path: "."}, syscall.EIO)
	m.ok(req{Op: "close", FD: fd}) // close sends nothing the server could refuse
	if b, _ := os.ReadFile(filepath.Join(root, "f")); string(b) != strings.Repeat("x", 8192) {
		t.Errorf("the file changed")
	}
}

func TestClose(t *testing.T) {
	root := t.TempDir()
	tree(t, root, map[string]string{"f": "f"})
	m, _ := serveHost(t, root, ReadOnly)
	m.ok(req{Op: "read", Path: "f"})
	if err := m.srv.Close(); err != nil {
		t.Fatal(err)
	}
	m.errno(req{Op: "read", Path: "f"}, syscall.ENOTCONN)
	m.errno(req{Op: "stat", Path: "."}, syscall.ENOTCONN)
	if err := m.srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// slowFS delays Lstat of "slow" until released.
type slowFS struct {
	FS
	entered chan struct{}
	release chan struct{}
}

func (s slowFS) Lstat(ctx context.Context, name string) (unix.Stat_t, error) {
	if name == "slow" {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		select {
		case <-s.release:
		case <-ctx.Done():
			return unix.Stat_t{}, ctx.Err()
		}
	}
	return s.FS.Lstat(ctx, name)
}

// TestBadClients: a flood of requests is answered; a client that dies
// while its request is being served, and a mount that goes away, leave
// the server answering and then closed, without a hang.
func TestBadClients(t *testing.T) {
	alsoAsNobody(t)
	root := t.TempDir()
	tree(t, root, map[string]string{"f": "f", "slow": "s"})
	d, err := dir.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	slow := slowFS{FS: Host(d), entered: make(chan struct{}, 1), release: make(chan struct{})}
	s := NewServer(slow, Options{Cache: time.Nanosecond})
	m := mountServer(t, s)
	m.ok(req{Op: "flood", Path: "f", N: 64, Flags: 50})

	// The worker dies while the server holds its request.
	m.enc.Encode(req{Op: "stat", Path: "slow"})
	select {
	case <-slow.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request never came")
	}
	m.cmd.Process.Kill()
	// The kernel interrupts the request of a killed caller: the FS sees
	// its context end, and the caller can exit.
	exited := make(chan struct{})
	go func() { m.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		close(slow.release)
		t.Fatal("the killed client did not exit: its request was not interrupted")
	}
	close(slow.release)
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung after the client died")
	}
}

func TestParseRights(t *testing.T) {
	for in, want := range map[string]Rights{
		"ro": ReadOnly, "rw": All, "read,write": RightRead | RightWrite, "append, create": RightAppend | RightCreate,
		"": 0, "none": 0, "read,exec": ReadOnly,
	} {
		got, err := ParseRights(in)
		if err != nil || got != want {
			t.Errorf("ParseRights(%q) = %v, %v; want %v", in, got, err, want)
		}
		if back, err := ParseRights(got.String()); err != nil || back != got {
			t.Errorf("round trip of %v: %v %v", got, back, err)
		}
	}
	if _, err := ParseRights("read,fly"); err == nil {
		t.Error("ParseRights accepted an unknown right")
	}
	if All.String() != "read,write,append,create,delete,rename,link,setattr,xattr,exec" || Rights(0).String() != "none" {
		t.Errorf("String: %q %q", All, Rights(0))
	}
}

func TestIDMap(t *testing.T) {
	m := idMap{{Inside: 0, Outside: 1000, Size: 1}, {Inside: 1, Outside: 100000, Size: 65536}}
	for host, in := range map[uint32]uint32{1000: 0, 100000: 1, 100005: 6, 0: unmappedID, 999: unmappedID, 165536: unmappedID} {
		if got := m.inside(host); got != in {
			t.Errorf("inside(%d) = %d, want %d", host, got, in)
		}
	}
	if h, ok := m.outside(6); !ok || h != 100005 {
		t.Errorf("outside(6) = %d %v", h, ok)
	}
	if _, ok := m.outside(70000); ok {
		t.Error("outside of an unmapped ID")
	}
	if idMap(nil).inside(42) != 42 {
		t.Error("empty map is not the identity")
	}
	_ = []proc.IDMap(m)
}

// TestCoherence: a writable mount sees changes made outside it within
// WritableCache (docs/served.md, "Caching").
func TestCoherence(t *testing.T) {
	root := t.TempDir()
	tree(t, root, map[string]string{"f": "one"})
	m, _ := serveHost(t, root, All)
	m.ok(req{Op: "read", Path: "f"})
	m.errno(req{Op: "stat", Path: "later"}, syscall.ENOENT)
	tree(t, root, map[string]string{"f": "two, longer", "later": "here"})
	time.Sleep(WritableCache + 200*time.Millisecond)
	if a := m.ok(req{Op: "read", Path: "f"}); string(a.Data) != "two, longer" {
		t.Errorf("f after the cache timeout: %q", a.Data)
	}
	if a := m.ok(req{Op: "read", Path: "later"}); string(a.Data) != "here" {
		t.Errorf("a name made outside: %q", a.Data)
	}
	os.Remove(filepath.Join(root, "later"))
	time.Sleep(WritableCache + 200*time.Millisecond)
	m.errno(req{Op: "stat", Path: "later"}, syscall.ENOENT)
}

// TestRevokeLateAnswer: a request that passed the gate before Revoke and
// ends after its drain answers as it would, but what it answered is not
// left in the kernel's caches: a stat made after it fails with EIO. (On
// the kernel this was written on, 6.18, a lookup answered after the
// invalidation is not kept anyway; Revoke drops the caches again once
// the late requests are done, for the kernels and caches that keep it.)
func TestRevokeLateAnswer(t *testing.T) {
	root := t.TempDir()
	tree(t, root, map[string]string{"slow": "s"})
	d, err := dir.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	slow := slowFS{FS: Host(d), entered: make(chan struct{}, 1), release: make(chan struct{})}
	s := NewServer(slow, Options{Cache: time.Minute})
	m := mountServer(t, s)
	m.enc.Encode(req{Op: "stat", Path: "slow"})
	select {
	case <-slow.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request never came")
	}
	if err := s.Revoke(); err != nil {
		t.Fatal(err)
	}
	close(slow.release)
	var first resp
	if err := m.dec.Decode(&first); err != nil {
		t.Fatal(err)
	}
	if first.Err != "" {
		t.Fatalf("the late stat: %+v, want its answer", first)
	}
	time.Sleep(3 * lateAnswer)
	m.errno(req{Op: "stat", Path: "slow"}, syscall.EIO)
}

// TestInterruptedShortRequest: a signal to the caller while the server
// holds its request (the kernel then interrupts it) does not fail the
// call with EINTR when the request finishes within interruptGrace, as a
// kernel bind never gives EINTR there (Go's runtime signals its threads
// for preemption all the time; make gets SIGCHLD); one still running
// after the grace ends with EINTR, so that a caller stuck on an answer
// that does not come can be interrupted.
func TestInterruptedShortRequest(t *testing.T) {
	root := t.TempDir()
	tree(t, root, map[string]string{"slow1": "s", "slow2": "s"})
	d, err := dir.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	slow := slowNames{FS: Host(d), entered: make(chan struct{}, 8), release: make(chan struct{})}
	s := NewServer(slow, Options{Cache: time.Nanosecond})
	m := mountServer(t, s)
	stat := func(name string) chan resp {
		out := make(chan resp, 1)
		go func() { out <- m.do(req{Op: "lstat", Path: name}) }()
		select {
		case <-slow.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("the slow request never came")
		}
		// Go's runtime in the worker handles SIGURG (preemption): not
		// ignored, so the kernel interrupts the request, when the
		// signal goes to the thread that waits in it.
		tid := fuseWaiter(m.cmd.Process.Pid)
		if tid == 0 {
			slow.release <- struct{}{}
			<-out
			t.Skip("no thread of the worker is seen waiting for the FUSE server (wchan)")
		}
		unix.Tgkill(m.cmd.Process.Pid, tid, unix.SIGURG)
		return out
	}
	answer := func(out chan resp) resp {
		select {
		case a := <-out:
			return a
		case <-time.After(10 * time.Second):
			select {
			case slow.release <- struct{}{}:
			default:
			}
			t.Fatal("the interrupted request was not answered in 10 s")
			return resp{}
		}
	}
	out := stat("slow1")
	// Time for the interrupt to reach the server, well within the grace.
	time.Sleep(20 * time.Millisecond)
	select {
	case slow.release <- struct{}{}:
	case <-time.After(5 * time.Second):
		// The request ended already (EINTR, say): it waits no more.
	}
	if a := answer(out); a.Errno != 0 {
		t.Errorf("interrupted, answered within the grace: %s, want success", a.Err)
	}
	start := time.Now()
	out = stat("slow2")
	a := answer(out)
	if syscall.Errno(a.Errno) != syscall.EINTR {
		t.Errorf("interrupted, never answered: errno %d (%s), want EINTR", a.Errno, a.Err)
	}
	if d := time.Since(start); d < interruptGrace/2 || d > interruptGrace+5*time.Second {
		t.Errorf("EINTR after %v, want about %v", d, interruptGrace)
	}
}

// fuseWaiter returns a thread of process pid that waits in the kernel
// for a FUSE server's answer (its wchan says so), looking for up to 2 s;
// or 0.
func fuseWaiter(pid int) int {
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, task := range tasks {
			w, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/wchan", pid, task.Name()))
			if string(w) == "request_wait_answer" || strings.Contains(string(w), "fuse") {
				tid, _ := strconv.Atoi(task.Name())
				return tid
			}
		}
	}
	return 0
}

// slowNames is an FS whose Lstat of a name starting with "slow" waits
// for release, or for its context's end.
type slowNames struct {
	FS
	entered chan struct{}
	release chan struct{}
}

func (s slowNames) Lstat(ctx context.Context, name string) (unix.Stat_t, error) {
	if strings.HasPrefix(name, "slow") {
		s.entered <- struct{}{}
		select {
		case <-s.release:
		case <-ctx.Done():
			return unix.Stat_t{}, ctx.Err()
		}
	}
	return s.FS.Lstat(ctx, name)
}
