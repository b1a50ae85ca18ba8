package dir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// accessMode returns the open flags of f's descriptor (fcntl F_GETFL).
func accessMode(t *testing.T, f *os.File) int {
	t.Helper()
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fl
}

// TestReadOnlyNeverWritable: a read-only Dir, by every route, yields no
// descriptor that can write: not by open flags, not by reopening through
// /proc/self/fd (through the Dir), not by an O_PATH descriptor.
func TestReadOnlyNeverWritable(t *testing.T) {
	alsoAsNobody(t)
	root := tempDir(t)
	writeTree(t, root, map[string]string{"f": "original", "sub/g": "g", "link": "->f"})
	// World-writable, so that only the Dir's rights stand in the way.
	for _, p := range []string{"f", "sub/g"} {
		os.Chmod(filepath.Join(root, p), 0o666)
	}
	full := mustOpen(t, root)
	ro, err := full.Sub(".", ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	roExec, err := full.Sub(".", RightRead|RightExec)
	if err != nil {
		t.Fatal(err)
	}
	defer roExec.Close()

	writeFlags := []int{
		os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_RDONLY | os.O_APPEND,
		os.O_WRONLY | os.O_APPEND, os.O_RDWR | os.O_CREATE, os.O_WRONLY | os.O_CREATE | os.O_EXCL,
		os.O_RDWR | os.O_CREATE | os.O_TRUNC, unix.O_TMPFILE | os.O_RDWR, unix.O_ACCMODE,
		// O_TMPFILE with O_CREAT, which the kernel refuses: were
		// O_CREAT dropped for want of RightCreate, a plain O_TMPFILE
		// would make a writable file.
		unix.O_TMPFILE | os.O_CREATE | os.O_WRONLY, unix.O_TMPFILE | os.O_CREATE | os.O_RDWR,
		os.O_RDWR | unix.O_NOFOLLOW, os.O_RDWR | unix.O_DIRECTORY,
	}
	for _, d := range []*Dir{ro, roExec} {
		for _, name := range []string{"f", "link", "sub/g", "new", "sub/../f", "."} {
			for _, flag := range writeFlags {
				f, err := d.OpenFile(name, flag, 0o666)
				var re *RightsError
				if err == nil {
					f.Close()
					t.Errorf("%v: OpenFile(%q, %#x) succeeded", d.Rights(), name, flag)
				} else if !errors.As(err, &re) || !errors.Is(err, fs.ErrPermission) {
					t.Errorf("%v: OpenFile(%q, %#x) = %v, want *RightsError", d.Rights(), name, flag, err)
				}
			}
		}
		// Every other writing method.
		for op, err := range map[string]error{
			"WriteFile":       d.WriteFile("f", []byte("x"), 0o666),
			"Create":          func() error { _, err := d.Create("f"); return err }(),
			"Replace":         d.Replace("f", []byte("x"), 0o666),
			"CreateExclusive": d.CreateExclusive("new", []byte("x"), 0o666),
			"CompareAndSwap":  func() error { _, err := d.CompareAndSwap("f", Version{}, []byte("x")); return err }(),
			"Chmod":           d.Chmod("f", 0o777),
			"Mkdir":           d.Mkdir("m", 0o777),
			"MkdirAll":        d.MkdirAll("m/n", 0o777),
			"Remove":          d.Remove("f"),
			"RemoveAll":       d.RemoveAll("sub"),
			"Rename":          d.Rename("f", "g"),
			"Link":            d.Link("f", "h"),
			"Symlink":         d.Symlink("f", "h"),
			"Exchange":        d.Exchange("f", "sub"),
		} {
			if !errors.Is(err, unix.EPERM) {
				t.Errorf("%v: %s = %v, want EPERM", d.Rights(), op, err)
			}
		}
		// Reads work, and give read-only descriptors.
		for _, name := range []string{"f", "link", "sub/g"} {
			f, err := d.Open(name)
			if err != nil {
				t.Fatal(err)
			}
			if fl := accessMode(t, f); fl&unix.O_ACCMODE != unix.O_RDONLY || fl&unix.O_PATH != 0 {
				t.Errorf("Open(%q) gave flags %#x", name, fl)
			}
			if _, err := f.Write([]byte("x")); err == nil {
				t.Errorf("wrote through Open(%q)", name)
			}
			f.Close()
		}
	}

	// O_PATH: never from a Dir without RightExec.
	for _, flag := range []int{unix.O_PATH, unix.O_PATH | unix.O_NOFOLLOW, unix.O_PATH | os.O_RDWR} {
		if _, err := ro.OpenFile("f", flag, 0); !errors.Is(err, unix.EPERM) {
			t.Errorf("read-only OpenFile(O_PATH %#x) = %v, want EPERM", flag, err)
		}
	}
	if _, err := ro.OpenExec("f"); !errors.Is(err, unix.EPERM) {
		t.Errorf("read-only OpenExec = %v, want EPERM", err)
	}
	// With Exec, an O_PATH descriptor: it neither reads nor writes, and the
	// Dir will not reopen it through /proc.
	pf, err := roExec.OpenExec("f")
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	if fl := accessMode(t, pf); fl&unix.O_PATH == 0 {
		t.Fatalf("OpenExec gave flags %#x, want O_PATH", fl)
	}
	if _, err := unix.Write(int(pf.Fd()), []byte("x")); err != unix.EBADF {
		t.Errorf("write to the O_PATH descriptor: %v, want EBADF", err)
	}

	// Reopening descriptors the Dir gave out, through a Dir that reaches
	// /proc: refused as magic links, whatever the rights.
	rf, err := ro.Open("f")
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	for _, mode := range []Mode{Beneath, InRoot} {
		slash := mustOpen(t, "/", mode) // every right
		for _, fd := range []uintptr{rf.Fd(), pf.Fd()} {
			name := "proc/self/fd/" + strconv.Itoa(int(fd))
			for _, flag := range []int{os.O_RDONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC} {
				if f, err := slash.OpenFile(name, flag, 0); !errors.Is(err, unix.ELOOP) {
					f.Close()
					t.Errorf("%v: OpenFile(%s, %#x) = %v, want ELOOP", mode, name, flag, err)
				}
			}
		}
		// A link in the tree to the magic link, too.
		lname := "proclink-" + mode.String()
		if err := full.Symlink("/proc/self/fd/"+strconv.Itoa(int(rf.Fd())), lname); err != nil {
			t.Fatal(err)
		}
		// ELOOP for the magic link; in Beneath mode the absolute link is refused first.
		if f, err := slash.OpenFile(filepath.Join(root, lname)[1:], os.O_RDWR, 0); !errors.Is(err, unix.ELOOP) && !errors.Is(err, ErrEscape) {
			f.Close()
			t.Errorf("%v: OpenFile through a link to a magic link = %v, want ELOOP", mode, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(root, "f")); string(b) != "original" {
		t.Fatalf("f was changed: %q", b)
	}
}

// TestAmbientReopen documents the limit of rights: the holder of any
// descriptor who can reach /proc with its own authority can reopen it with
// the access the file's mode bits allow. The Dir cannot prevent that;
// Landlock or a mount namespace without /proc can.
func TestAmbientReopen(t *testing.T) {
	root := tempDir(t)
	writeTree(t, root, map[string]string{"f": "x"})
	os.Chmod(filepath.Join(root, "f"), 0o666)
	d := mustOpen(t, root, ReadOnly)
	f, err := d.Open("f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no ambient /proc reopen here: %v", err)
	}
	w.Close()
	t.Log("as documented: a read-only descriptor was reopened for writing through the process's own /proc, outside the Dir")
}

// TestRightsMatrix: each operation needs exactly the rights its
// documentation names: it fails with EPERM, changing nothing, without any
// one of them, and succeeds with them alone.
func TestRightsMatrix(t *testing.T) {
	alsoAsNobody(t)
	type opCase struct {
		name string
		need Rights
		call func(d *Dir) error
	}
	ops := []opCase{
		{"Open", RightRead, func(d *Dir) error { f, err := d.Open("f"); f.Close(); return err }},
		{"ReadFile", RightRead, func(d *Dir) error { _, err := d.ReadFile("f"); return err }},
		{"ReadDir", RightRead, func(d *Dir) error { _, err := d.ReadDir("sub"); return err }},
		{"Readlink", RightRead, func(d *Dir) error { _, err := d.Readlink("link"); return err }},
		{"Read", RightRead, func(d *Dir) error { _, _, err := d.Read("f"); return err }},
		{"StatVersion", RightRead, func(d *Dir) error { _, err := d.StatVersion("f"); return err }},
		{"FS.Open", RightRead, func(d *Dir) error {
			f, err := d.FS().Open("sub")
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"Stat", 0, func(d *Dir) error { _, err := d.Stat("f"); return err }},
		{"Lstat", 0, func(d *Dir) error { _, err := d.Lstat("link"); return err }},
		{"Sub", 0, func(d *Dir) error { s, err := d.Sub("sub", 0); s.Close(); return err }},
		{"OpenFile O_WRONLY", RightWrite, func(d *Dir) error { f, err := d.OpenFile("f", os.O_WRONLY, 0); f.Close(); return err }},
		{"OpenFile O_RDWR", RightRead | RightWrite, func(d *Dir) error { f, err := d.OpenFile("f", os.O_RDWR, 0); f.Close(); return err }},
		{"OpenFile O_APPEND", RightRead | RightWrite, func(d *Dir) error { f, err := d.OpenFile("f", os.O_APPEND, 0); f.Close(); return err }},
		{"WriteFile existing", RightWrite, func(d *Dir) error { return d.WriteFile("f", []byte("w"), 0o644) }},
		{"WriteFile new", RightWrite | RightCreate, func(d *Dir) error { return d.WriteFile("new", []byte("w"), 0o644) }},
		{"OpenFile O_CREAT|O_EXCL|O_WRONLY", RightCreate, func(d *Dir) error {
			f, err := d.OpenFile("new", os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			f.Close()
			return err
		}},
		{"OpenFile O_TMPFILE", RightCreate, func(d *Dir) error {
			f, err := d.OpenFile("sub", unix.O_TMPFILE|os.O_WRONLY, 0o644)
			f.Close()
			return err
		}},
		{"Create", RightRead | RightWrite | RightCreate, func(d *Dir) error { f, err := d.Create("new"); f.Close(); return err }},
		{"OpenExec", RightExec, func(d *Dir) error { f, err := d.OpenExec("f"); f.Close(); return err }},
		{"Mkdir", RightCreate, func(d *Dir) error { return d.Mkdir("m", 0o755) }},
		{"MkdirAll", RightCreate, func(d *Dir) error { return d.MkdirAll("m/n", 0o755) }},
		{"Symlink", RightCreate, func(d *Dir) error { return d.Symlink("f", "l2") }},
		{"Link", RightCreate, func(d *Dir) error { return d.Link("f", "l2") }},
		{"CreateExclusive", RightCreate, func(d *Dir) error { return d.CreateExclusive("new", []byte("c"), 0o644) }},
		{"Remove", RightDelete, func(d *Dir) error { return d.Remove("f") }},
		{"RemoveAll", RightDelete, func(d *Dir) error { return d.RemoveAll("sub") }},
		{"Rename", RightCreate | RightDelete, func(d *Dir) error { return d.Rename("f", "g") }},
		{"Exchange", RightCreate | RightDelete, func(d *Dir) error { return d.Exchange("f", "sub") }},
		{"Chmod", RightSetAttr, func(d *Dir) error { return d.Chmod("f", 0o600) }},
		{"Lchown", RightSetAttr, func(d *Dir) error { return d.Lchown("link", -1, -1) }},
		{"Utimens", RightSetAttr, func(d *Dir) error { return d.Utimens("f", nil, &unix.Timespec{Sec: 1}) }},
		{"Truncate", RightWrite, func(d *Dir) error { return d.Truncate("f", 0) }},
		{"Mknod", RightCreate, func(d *Dir) error { return d.Mknod("fifo", unix.S_IFIFO|0o600, 0) }},
		{"Unlink", RightDelete, func(d *Dir) error { return d.Unlink("f") }},
		{"Rmdir", RightDelete, func(d *Dir) error { return d.Rmdir("empty") }},
		{"RenameFlags", RightCreate | RightDelete, func(d *Dir) error { return d.RenameFlags("f", "g", unix.RENAME_NOREPLACE) }},
		{"Statfs", 0, func(d *Dir) error { _, err := d.Statfs("f"); return err }},
		{"ReadDirEntries", RightRead, func(d *Dir) error { _, err := d.ReadDirEntries("sub"); return err }},
		{"Listxattr", RightRead, func(d *Dir) error { _, err := d.Listxattr("f"); return err }},
		{"Setxattr", RightSetAttr, func(d *Dir) error { return d.Setxattr("f", "user.t", []byte("v"), 0) }},
		{"Removexattr", RightSetAttr, func(d *Dir) error {
			err := d.Removexattr("f", "user.t")
			if errors.Is(err, unix.ENODATA) {
				return nil // permitted, and there was nothing to remove
			}
			return err
		}},
		{"Replace", RightWrite | RightCreate, func(d *Dir) error { return d.Replace("f", []byte("r"), 0o644) }},
		{"CompareAndSwap", RightWrite | RightCreate, func(d *Dir) error {
			_, err := d.CompareAndSwap("new", Version{}, []byte("c"))
			return err
		}},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			fresh := func(r Rights) (*Dir, string) {
				root := tempDir(t)
				writeTree(t, root, map[string]string{"f": "f", "sub/x": "x", "link": "->f", "empty/": ""})
				return mustOpen(t, root, r), root
			}
			if err := op.call(func() *Dir { d, _ := fresh(op.need); return d }()); err != nil {
				t.Fatalf("with %v: %v", op.need, err)
			}
			for _, r := range rightNames {
				if op.need&r.Bits == 0 {
					continue
				}
				d, root := fresh(All &^ r.Bits)
				before := treeString(t, root)
				err := op.call(d)
				var re *RightsError
				if !errors.As(err, &re) || !errors.Is(err, fs.ErrPermission) {
					t.Errorf("without %s: %v, want *RightsError", r.Name, err)
				}
				if after := treeString(t, root); after != before {
					t.Errorf("without %s the tree changed:\n%s\n%s", r.Name, before, after)
				}
			}
		})
	}
}

// treeString lists a tree: names, modes and contents.
func treeString(t *testing.T, root string) string {
	t.Helper()
	var s string
	filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, _ := os.Lstat(p)
		c, _ := os.ReadFile(p)
		s += p + " " + fi.Mode().String() + " " + string(c) + "\n"
		return nil
	})
	return s
}

// TestSubNarrows: rights only narrow along a chain of Subs.
func TestSubNarrows(t *testing.T) {
	alsoAsNobody(t)
	root := tempDir(t)
	writeTree(t, root, map[string]string{"a/b/c/f": "f"})
	d := mustOpen(t, root, RightRead|RightWrite|RightCreate)
	a, err := d.Sub("a", RightRead|RightWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Sub("b", RightRead|RightCreate); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("Sub regained Create: %v", err)
	}
	b, err := a.Sub("b", RightRead)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Sub("c", RightRead|RightWrite); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("Sub regained Write: %v", err)
	}
	// A Sub is confined to its own directory.
	if _, err := b.ReadFile("../b/c/f"); !errors.Is(err, ErrEscape) {
		t.Fatalf("Sub reached its parent: %v", err)
	}
	inr, err := Open(root, InRoot)
	if err != nil {
		t.Fatal(err)
	}
	defer inr.Close()
	s, err := inr.Sub("a/b", ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Mode() != InRoot {
		t.Fatal("Sub changed the mode")
	}
	if b, err := s.ReadFile("../../../c/f"); err != nil || string(b) != "f" {
		t.Fatalf("InRoot Sub: ReadFile(../../../c/f) = %q, %v", b, err)
	}
}

func TestParseRights(t *testing.T) {
	for _, r := range []Rights{0, RightRead, ReadOnly, ReadWrite, All, RightRead | RightExec, RightWrite | RightSetAttr} {
		got, err := ParseRights(r.String())
		if err != nil || got != r {
			t.Errorf("ParseRights(%q) = %v, %v; want %v", r.String(), got, err, r)
		}
	}
	for s, want := range map[string]Rights{"ro": ReadOnly, "rw": ReadWrite, "all": All, "read,exec": RightRead | RightExec, " read | write ": RightRead | RightWrite, "": 0} {
		if got, err := ParseRights(s); err != nil || got != want {
			t.Errorf("ParseRights(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	if _, err := ParseRights("read|fly"); err == nil || !strings.Contains(err.Error(), `"fly"`) {
		t.Errorf("ParseRights(read|fly) = %v", err)
	}
}
