package dir

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOperations runs each method once on an ordinary tree.
func TestOperations(t *testing.T) {
	alsoAsNobody(t)
	root := tempDir(t)
	writeTree(t, root, map[string]string{
		"a.txt":     "hello",
		"sub/b.txt": "bee",
		"sub/deep/": "",
		"link":      "->sub/b.txt",
	})
	d := mustOpen(t, root)

	b, err := d.ReadFile("a.txt")
	if err != nil || string(b) != "hello" {
		t.Fatalf("ReadFile = %q, %v", b, err)
	}
	if b, err := d.ReadFile("link"); err != nil || string(b) != "bee" {
		t.Fatalf("ReadFile(link) = %q, %v", b, err)
	}
	f, err := d.Open("sub/b.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(f)
	f.Close()
	if string(b) != "bee" {
		t.Fatalf("Open+Read = %q", b)
	}

	if err := d.WriteFile("new.txt", []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "new.txt")); string(b) != "new" {
		t.Fatalf("WriteFile wrote %q", b)
	}
	f, err = d.Create("c.txt")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("sea")
	f.Close()

	if err := d.Mkdir("m", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := d.Mkdir("m", 0o755); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Mkdir twice: %v", err)
	}
	if err := d.MkdirAll("m/x/y/z", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := d.MkdirAll("m/x/y/z", 0o755); err != nil {
		t.Fatalf("MkdirAll again: %v", err)
	}
	if err := d.MkdirAll("a.txt/q", 0o755); !errors.Is(err, unix.ENOTDIR) {
		t.Fatalf("MkdirAll under a file: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(root, "m/x/y/z")); err != nil || !fi.IsDir() {
		t.Fatalf("MkdirAll made %v, %v", fi, err)
	}

	if err := d.Symlink("../a.txt", "m/up"); err != nil {
		t.Fatal(err)
	}
	if s, err := d.Readlink("m/up"); err != nil || s != "../a.txt" {
		t.Fatalf("Readlink = %q, %v", s, err)
	}
	if b, err := d.ReadFile("m/up"); err != nil || string(b) != "hello" {
		t.Fatalf("ReadFile through a link = %q, %v", b, err)
	}
	fi, err := d.Lstat("m/up")
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 || fi.Name() != "up" {
		t.Fatalf("Lstat = %v, %v", fi, err)
	}
	fi, err = d.Stat("m/up")
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != 5 || fi.Name() != "up" {
		t.Fatalf("Stat = %v, %v", fi, err)
	}
	if fi, err := d.Lstat("link"); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("Lstat(link) = %v, %v", fi, err)
	}
	if fi, err := d.Stat("."); err != nil || !fi.IsDir() || fi.Name() != "." {
		t.Fatalf("Stat(.) = %v, %v", fi, err)
	}
	if fi, err := d.Lstat("sub/"); err != nil || !fi.IsDir() || fi.Name() != "sub" {
		t.Fatalf("Lstat(sub/) = %v, %v", fi, err)
	}

	if err := d.Link("a.txt", "m/hard"); err != nil {
		t.Fatal(err)
	}
	if b, _ := d.ReadFile("m/hard"); string(b) != "hello" {
		t.Fatalf("Link: %q", b)
	}
	if err := d.Rename("m/hard", "sub/moved"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat("m/hard"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat after Rename: %v", err)
	}
	if b, _ := d.ReadFile("sub/moved"); string(b) != "hello" {
		t.Fatalf("Rename: %q", b)
	}

	if err := d.Chmod("c.txt", 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(root, "c.txt")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("Chmod: mode %v", fi.Mode())
	}

	ents, err := d.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{"a.txt", "c.txt", "link", "m", "new.txt", "sub"}
	if !slices.Equal(names, want) {
		t.Fatalf("ReadDir = %v, want %v", names, want)
	}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Type() != e.Type() || info.Name() != e.Name() {
			t.Fatalf("entry %v: info %v", e, info)
		}
	}

	if err := d.Remove("c.txt"); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove("sub/deep"); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove("m"); !errors.Is(err, fs.ErrExist) { // ENOTEMPTY
		t.Fatalf("Remove of a full directory: %v", err)
	}
	if err := d.Remove("nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Remove(nope): %v", err)
	}
	if err := d.RemoveAll("m"); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveAll("m"); err != nil {
		t.Fatalf("RemoveAll of nothing: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "m")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("RemoveAll left %v", err)
	}
	// RemoveAll removes links, not what they point to.
	if err := d.Symlink("sub", "tosub"); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveAll("tosub"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat("sub/b.txt"); err != nil {
		t.Fatalf("RemoveAll followed a link: %v", err)
	}

	// Sub: a narrower Dir of a subdirectory.
	s, err := d.Sub("sub", ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if b, err := s.ReadFile("b.txt"); err != nil || string(b) != "bee" {
		t.Fatalf("Sub ReadFile = %q, %v", b, err)
	}
	if s.Rights() != ReadOnly || s.Mode() != Beneath || !strings.HasSuffix(s.Name(), "/sub") {
		t.Fatalf("Sub: %v", s)
	}
}

// TestOpenRefusesDirectories: no directory descriptor leaves a Dir.
func TestOpenRefusesDirectories(t *testing.T) {
	alsoAsNobody(t)
	root := tempDir(t)
	writeTree(t, root, map[string]string{"sub/x": "x", "l": "->sub"})
	d := mustOpen(t, root)
	for _, name := range []string{".", "sub", "sub/", "l", "sub/.."} {
		for _, flag := range []int{os.O_RDONLY, unix.O_RDONLY | unix.O_DIRECTORY, unix.O_PATH, unix.O_PATH | unix.O_DIRECTORY} {
			f, err := d.OpenFile(name, flag, 0)
			if !errors.Is(err, ErrIsDir) || !errors.Is(err, unix.EISDIR) {
				f.Close()
				t.Errorf("OpenFile(%q, %#x) = %v, want ErrIsDir", name, flag, err)
			}
		}
		if _, err := d.OpenFile(name, os.O_RDWR, 0); !errors.Is(err, unix.EISDIR) {
			t.Errorf("OpenFile(%q, O_RDWR) = %v, want EISDIR", name, err)
		}
	}
	// O_TMPFILE makes a file.
	f, err := d.OpenFile("sub", unix.O_TMPFILE|unix.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("O_TMPFILE: %v", err)
	}
	f.Close()
}

// TestClose: Close is idempotent, and afterwards every method fails with
// fs.ErrClosed; a concurrent Close never lets an operation use a reused
// descriptor number.
func TestClose(t *testing.T) {
	root := tempDir(t)
	writeTree(t, root, map[string]string{"f": "x", "d/": ""})
	d, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	s, err := d.Sub("d", All)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	calls := map[string]func() error{
		"Open":            func() error { _, err := d.Open("f"); return err },
		"OpenFile":        func() error { _, err := d.OpenFile("f", os.O_RDONLY, 0); return err },
		"Create":          func() error { _, err := d.Create("g"); return err },
		"OpenExec":        func() error { _, err := d.OpenExec("f"); return err },
		"Mkdir":           func() error { return d.Mkdir("m", 0o755) },
		"MkdirAll":        func() error { return d.MkdirAll("m/n", 0o755) },
		"Remove":          func() error { return d.Remove("f") },
		"RemoveAll":       func() error { return d.RemoveAll("f") },
		"Rename":          func() error { return d.Rename("f", "g") },
		"Link":            func() error { return d.Link("f", "g") },
		"Symlink":         func() error { return d.Symlink("f", "g") },
		"Readlink":        func() error { _, err := d.Readlink("f"); return err },
		"Stat":            func() error { _, err := d.Stat("f"); return err },
		"Lstat":           func() error { _, err := d.Lstat("f"); return err },
		"ReadDir":         func() error { _, err := d.ReadDir("."); return err },
		"ReadFile":        func() error { _, err := d.ReadFile("f"); return err },
		"WriteFile":       func() error { return d.WriteFile("f", nil, 0o644) },
		"Chmod":           func() error { return d.Chmod("f", 0o644) },
		"Sub":             func() error { _, err := d.Sub("d", All); return err },
		"Replace":         func() error { return d.Replace("f", nil, 0o644) },
		"Exchange":        func() error { return d.Exchange("f", "d") },
		"CreateExclusive": func() error { return d.CreateExclusive("g", nil, 0o644) },
		"Read":            func() error { _, _, err := d.Read("f"); return err },
		"StatVersion":     func() error { _, err := d.StatVersion("f"); return err },
		"CompareAndSwap":  func() error { _, err := d.CompareAndSwap("f", Version{}, nil); return err },
		"FS.Open":         func() error { _, err := d.FS().Open("f"); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, fs.ErrClosed) {
			t.Errorf("%s after Close: %v, want fs.ErrClosed", name, err)
		}
	}
	// The Sub made before Close has its own descriptor.
	if _, err := s.Stat("."); err != nil {
		t.Fatalf("Sub after parent Close: %v", err)
	}
	s.Close()

	// Close racing with operations: each either works on the right
	// directory or fails with ErrClosed.
	for range 50 {
		d, err := Open(root)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 20 {
					b, err := d.ReadFile("f")
					if err != nil && !errors.Is(err, fs.ErrClosed) {
						t.Errorf("ReadFile racing Close: %v", err)
					}
					if err == nil && string(b) != "x" {
						t.Errorf("ReadFile racing Close read %q", b)
					}
				}
			})
		}
		d.Close()
		wg.Wait()
	}
}

// TestNoFDLeak: operations, failed ones included, close what they open.
func TestNoFDLeak(t *testing.T) {
	alsoAsNobody(t)
	root := tempDir(t)
	writeTree(t, root, map[string]string{"f": "x", "d/e": "y", "l": "->/etc/passwd"})
	d := mustOpen(t, root)
	before := openFDs(t)
	for range 10 {
		d.ReadFile("f")
		d.ReadFile("l")
		d.ReadFile("../x")
		d.Stat("d/e")
		d.Lstat("d/e")
		d.Lstat("d/..")
		d.ReadDir("d")
		d.Readlink("l")
		d.Readlink("d/../l")
		d.Mkdir("d/m", 0o755)
		d.Remove("d/m")
		d.MkdirAll("d/m/n", 0o755)
		d.RemoveAll("d/m")
		d.Rename("f", "g")
		d.Rename("g", "f")
		d.Replace("r", []byte("r"), 0o644)
		_, v, _ := d.Read("r")
		d.CompareAndSwap("r", v, []byte("s"))
		d.CompareAndSwap("r", v, []byte("s"))
		d.CreateExclusive("r", nil, 0o644)
		d.Exchange("f", "r")
		d.Chmod("f", 0o644)
		if f, err := d.Open("f"); err == nil {
			f.Close()
		}
		d.Open(".")
		s, _ := d.Sub("d", ReadOnly)
		s.Close()
	}
	if after := openFDs(t); after != before {
		t.Fatalf("open descriptors: %d before, %d after", before, after)
	}
}

// TestFromFile makes a Dir of an open directory, which stays the caller's.
func TestFromFile(t *testing.T) {
	alsoAsNobody(t)
	root := tempDir(t)
	writeTree(t, root, map[string]string{"f": "x"})
	f, err := os.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	d, err := FromFile(f, InRoot, ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	defer d.Close()
	if b, err := d.ReadFile("/../f"[1:]); err != nil || string(b) != "x" {
		t.Fatalf("ReadFile = %q, %v", b, err)
	}
	if d.Mode() != InRoot || d.Rights() != ReadOnly {
		t.Fatalf("FromFile options: %v", d)
	}
	if _, err := FromFile(nil); !errors.Is(err, fs.ErrInvalid) {
		t.Fatalf("FromFile(nil) = %v", err)
	}
	g, _ := os.Open(filepath.Join(root, "f"))
	defer g.Close()
	if _, err := FromFile(g); !errors.Is(err, unix.ENOTDIR) {
		t.Fatalf("FromFile(file) = %v", err)
	}
}

// TestNoOpenat2 plays a kernel without openat2: everything fails with
// ErrNoOpenat2, and nothing is resolved another way.
func TestNoOpenat2(t *testing.T) {
	root := tempDir(t)
	writeTree(t, root, map[string]string{"f": "x"})
	d := mustOpen(t, root)
	f, _ := os.Open(root)
	defer f.Close()

	old := sysOpenat2
	sysOpenat2 = func(int, string, *unix.OpenHow) (int, error) { return -1, unix.ENOSYS }
	defer func() { sysOpenat2 = old }()

	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrNoOpenat2) || !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("%s = %v, want ErrNoOpenat2", what, err)
		} else if !strings.Contains(err.Error(), "Linux 5.6") {
			t.Errorf("%s: message %q does not say what is needed", what, err)
		}
	}
	_, err := d.ReadFile("f")
	check("ReadFile", err)
	_, err = d.Stat("f")
	check("Stat", err)
	err = d.Mkdir("sub/x", 0o755)
	check("Mkdir", err)
	_, err = d.Sub(".", All)
	check("Sub", err)
	_, err = FromFile(f)
	check("FromFile", err)
	_, _, err = d.Read("f")
	check("Read", err)
	// Open probes once per process: the probe itself is tested through the
	// function it runs.
	_, err = openat2(unix.AT_FDCWD, ".", unix.O_PATH, 0, Beneath)
	check("openat2", err)
}

// TestBadInput: every kind of bad input fails with an *fs.PathError that
// names it, and none panics.
func TestBadInput(t *testing.T) {
	alsoAsNobody(t)
	root := tempDir(t)
	writeTree(t, root, map[string]string{"f": "x", "d/": ""})
	d := mustOpen(t, root)
	long := strings.Repeat("a/", unix.PathMax/2) + "b"
	cases := []struct {
		name string
		want error
	}{
		{"", ErrEmptyPath},
		{"a\x00b", ErrNUL},
		{"\x00", ErrNUL},
		{long, ErrPathTooLong},
		{"/etc/passwd", ErrAbsolute},
		{"/", ErrAbsolute},
		{"//f", ErrAbsolute},
	}
	for _, c := range cases {
		ops := map[string]error{}
		_, ops["Open"] = d.Open(c.name)
		_, ops["OpenFile"] = d.OpenFile(c.name, os.O_RDWR|os.O_CREATE, 0o644)
		_, ops["Stat"] = d.Stat(c.name)
		_, ops["Lstat"] = d.Lstat(c.name)
		_, ops["ReadDir"] = d.ReadDir(c.name)
		_, ops["ReadFile"] = d.ReadFile(c.name)
		_, ops["Readlink"] = d.Readlink(c.name)
		_, ops["Sub"] = d.Sub(c.name, ReadOnly)
		ops["Mkdir"] = d.Mkdir(c.name, 0o755)
		ops["MkdirAll"] = d.MkdirAll(c.name, 0o755)
		ops["Remove"] = d.Remove(c.name)
		ops["RemoveAll"] = d.RemoveAll(c.name)
		ops["WriteFile"] = d.WriteFile(c.name, nil, 0o644)
		ops["Chmod"] = d.Chmod(c.name, 0o644)
		ops["Replace"] = d.Replace(c.name, nil, 0o644)
		ops["CreateExclusive"] = d.CreateExclusive(c.name, nil, 0o644)
		_, _, ops["Read"] = d.Read(c.name)
		_, ops["StatVersion"] = d.StatVersion(c.name)
		_, ops["CompareAndSwap"] = d.CompareAndSwap(c.name, Version{}, nil)
		for op, err := range ops {
			var pe *fs.PathError
			if !errors.As(err, &pe) || pe.Path != c.name || !errors.Is(err, c.want) || !errors.Is(err, fs.ErrInvalid) {
				t.Errorf("%s(%.20q) = %v, want *fs.PathError of %v", op, c.name, err, c.want)
			}
		}
		two := map[string]error{
			"Rename old":   d.Rename(c.name, "g"),
			"Rename new":   d.Rename("f", c.name),
			"Link old":     d.Link(c.name, "g"),
			"Link new":     d.Link("f", c.name),
			"Symlink new":  d.Symlink("f", c.name),
			"Exchange a":   d.Exchange(c.name, "f"),
			"Exchange b":   d.Exchange("f", c.name),
			"Symlink from": nil,
		}
		if c.want != ErrAbsolute {
			two["Symlink from"] = d.Symlink(c.name, "g")
		}
		for op, err := range two {
			if op == "Symlink from" && err == nil && c.want == ErrAbsolute {
				continue
			}
			var le *os.LinkError
			if !errors.As(err, &le) || !errors.Is(err, c.want) {
				t.Errorf("%s(%.20q) = %v, want *os.LinkError of %v", op, c.name, err, c.want)
			}
		}
	}
	// Absolute symlink targets are fine to store.
	if err := d.Symlink("/etc/passwd", "abs"); err != nil {
		t.Fatalf("Symlink to an absolute target: %v", err)
	}
	// Widening rights.
	ro, err := d.Sub("d", ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	for _, r := range []Rights{RightWrite, ReadOnly | RightExec, All, Rights(1 << 20)} {
		_, err := ro.Sub(".", r)
		var re *RightsError
		if !errors.As(err, &re) || !errors.Is(err, fs.ErrPermission) {
			t.Errorf("Sub widening to %v = %v, want *RightsError", r, err)
		}
	}
	// Bad paths to Open itself.
	for _, p := range []string{"", "a\x00", long + long} {
		if _, err := Open(p); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("Open(%.20q) = %v, want fs.ErrInvalid", p, err)
		}
	}
	if _, err := Open(filepath.Join(root, "f")); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("Open(file) = %v, want ENOTDIR", err)
	}
	// A nil Dir.
	var nilDir *Dir
	if _, err := nilDir.Open("f"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("nil Dir: %v", err)
	}
	if err := nilDir.Close(); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("nil Dir Close: %v", err)
	}
	// Names of NAME_MAX+1 bytes: the kernel's ENAMETOOLONG.
	if _, err := d.Stat(strings.Repeat("x", 256)); !errors.Is(err, unix.ENAMETOOLONG) {
		t.Errorf("Stat(256 bytes) = %v", err)
	}
	// Final elements that cannot be made or removed.
	for _, name := range []string{".", "..", "d/..", "d/."} {
		if err := d.Mkdir(name, 0o755); err == nil {
			t.Errorf("Mkdir(%q) succeeded", name)
		}
		if err := d.Remove(name); err == nil {
			t.Errorf("Remove(%q) succeeded", name)
		}
		if err := d.RemoveAll(name); err == nil {
			t.Errorf("RemoveAll(%q) succeeded", name)
		}
		if err := d.Replace(name, nil, 0o644); err == nil {
			t.Errorf("Replace(%q) succeeded", name)
		}
	}
}

// TestFileNames: files opened through a Dir carry the name given.
func TestFileNames(t *testing.T) {
	root := tempDir(t)
	writeTree(t, root, map[string]string{"d/f": "x"})
	d := mustOpen(t, root)
	f, err := d.Open("d/f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Name() != "d/f" {
		t.Fatalf("Name = %q", f.Name())
	}
	fi, err := f.Stat()
	if err != nil || fi.Name() != "f" {
		t.Fatalf("Stat = %v, %v", fi, err)
	}
	if !bytes.Equal([]byte(Rights(0).String()), []byte("none")) || All.String() != "read|write|create|delete|exec|setattr" {
		t.Fatalf("Rights.String: %q %q", Rights(0), All)
	}
}

// TestChmod changes modes through fchmodat2 and, as on kernels before 6.6,
// through the descriptor's /proc entry; links are followed, confined.
func TestChmod(t *testing.T) {
	alsoAsNobody(t)
	for _, route := range []string{"fchmodat2", "proc"} {
		t.Run(route, func(t *testing.T) {
			if route == "proc" {
				testHooks.noFchmodat2.Store(true)
				defer testHooks.noFchmodat2.Store(false)
			}
			root := tempDir(t)
			writeTree(t, root, map[string]string{"f": "x", "d/": "", "l": "->f", "out": "->../x"})
			d := mustOpen(t, root)
			for name, mode := range map[string]fs.FileMode{"f": 0o600, "d": 0o700, "d/": 0o750, "l": 0o640} {
				if err := d.Chmod(name, mode); err != nil {
					t.Fatalf("Chmod(%s): %v", name, err)
				}
				target := strings.TrimSuffix(name, "/")
				if name == "l" {
					target = "f"
				}
				fi, _ := os.Stat(filepath.Join(root, target))
				if fi.Mode().Perm() != mode {
					t.Fatalf("Chmod(%s, %v) made %v", name, mode, fi.Mode())
				}
			}
			if err := d.Chmod("out", 0o777); !errors.Is(err, ErrEscape) {
				t.Fatalf("Chmod through an escaping link = %v", err)
			}
			if err := d.Chmod("missing", 0o777); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Chmod(missing) = %v", err)
			}
			// Lchmod changes files as Chmod does, and refuses a final
			// link, whose target stays as it was.
			if err := d.Lchmod("f", 0o604); err != nil {
				t.Fatalf("Lchmod(f): %v", err)
			}
			if err := d.Lchmod("l", 0o777); !errors.Is(err, unix.EOPNOTSUPP) {
				t.Fatalf("Lchmod of a link = %v, want EOPNOTSUPP", err)
			}
			if fi, _ := os.Stat(filepath.Join(root, "f")); fi.Mode().Perm() != 0o604 {
				t.Fatalf("Lchmod of a link to f changed f to %v", fi.Mode())
			}
		})
	}
}
