package dir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/fstest"
)

// nsFixture binds four Dirs:
//
//	.               top: a.txt, lib/hidden (hidden by the binding at lib), etc/
//	lib             two: both (="two"), only2; then, After, three: both (="three"), only3, sub/x
//	mnt/deep/point  four: p.txt
func nsFixture(t *testing.T) (*MountTable, map[string]*Dir) {
	t.Helper()
	base := tempDir(t)
	writeTree(t, base, map[string]string{
		"top/a.txt":       "top-a",
		"top/lib/hidden":  "should not show",
		"top/etc/conf":    "conf",
		"two/both":        "two",
		"two/only2":       "2",
		"two/sub/y":       "two-y",
		"three/both":      "three",
		"three/only3":     "3",
		"three/sub/x":     "three-x",
		"three/sub/y":     "three-y",
		"four/p.txt":      "p",
		"four/link":       "->p.txt",
		"four/dir/inside": "in",
	})
	ds := map[string]*Dir{}
	for _, n := range []string{"top", "two", "three", "four"} {
		ds[n] = mustOpen(t, filepath.Join(base, n))
	}
	var ns MountTable
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ns.Bind("/", ds["top"], BindReplace))
	must(ns.Bind("lib", ds["three"], BindReplace))
	must(ns.Bind("lib", ds["two"], BindBefore))
	must(ns.Bind("/mnt/deep/point/", ds["four"], BindAfter))
	return &ns, ds
}

func TestNamespace(t *testing.T) {
	alsoAsNobody(t)
	ns, ds := nsFixture(t)
	read := map[string]string{
		"a.txt":                "top-a",
		"etc/conf":             "conf",
		"lib/both":             "two", // first in the union wins
		"lib/only2":            "2",
		"lib/only3":            "3",
		"lib/sub/x":            "three-x", // a directory both have: merged
		"lib/sub/y":            "two-y",
		"mnt/deep/point/p.txt": "p",
		"mnt/deep/point/link":  "p",
	}
	for name, want := range read {
		b, err := ns.ReadFile(name)
		if err != nil || string(b) != want {
			t.Errorf("ReadFile(%s) = %q, %v; want %q", name, b, err, want)
		}
		b, err = fs.ReadFile(struct{ fs.FS }{ns}, name) // through Open
		if err != nil || string(b) != want {
			t.Errorf("Open+Read(%s) = %q, %v; want %q", name, b, err, want)
		}
	}
	if _, err := ns.ReadFile("lib/hidden"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("lib/hidden shows through the binding: %v", err)
	}
	dirs := map[string][]string{
		".":              {"a.txt", "etc", "lib", "mnt"},
		"lib":            {"both", "only2", "only3", "sub"},
		"lib/sub":        {"x", "y"},
		"mnt":            {"deep"},
		"mnt/deep":       {"point"},
		"mnt/deep/point": {"dir", "link", "p.txt"},
	}
	for name, want := range dirs {
		ents, err := ns.ReadDir(name)
		if err != nil {
			t.Errorf("ReadDir(%s): %v", name, err)
			continue
		}
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		if !slices.Equal(got, want) {
			t.Errorf("ReadDir(%s) = %v, want %v", name, got, want)
		}
	}
	if fi, err := ns.Stat("mnt/deep"); err != nil || !fi.IsDir() || fi.Name() != "deep" || fi.Mode() != fs.ModeDir|0o555 {
		t.Errorf("Stat(mnt/deep) = %v, %v", fi, err)
	}
	if fi, err := ns.Stat("lib"); err != nil || !fi.IsDir() || fi.Name() != "lib" {
		t.Errorf("Stat(lib) = %v, %v", fi, err)
	}
	for _, name := range []string{"nope", "lib/nope", "mnt/nope", "mnt/deep/point/nope"} {
		if _, err := ns.Stat(name); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Stat(%s) = %v", name, err)
		}
		if _, err := ns.Open(name); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Open(%s) = %v", name, err)
		}
	}
	for _, name := range []string{"", "/a.txt", "../x", "lib/../a.txt", "a\x00"} {
		if _, err := ns.Open(name); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("Open(%q) = %v, want fs.ErrInvalid", name, err)
		}
	}
	// Errors name the MountTable path.
	_, err := ns.ReadFile("lib/sub")
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Path != "lib/sub" {
		t.Errorf("ReadFile(lib/sub) = %v", err)
	}

	// Resolve and OpenFile.
	d, rest, err := ns.Resolve("lib/only3")
	if err != nil || d != ds["three"] || rest != "only3" {
		t.Errorf("Resolve(lib/only3) = %v, %q, %v", d, rest, err)
	}
	d, rest, err = ns.Resolve("lib/new")
	if err != nil || d != ds["two"] || rest != "new" {
		t.Errorf("Resolve(lib/new) = %v, %q, %v", d, rest, err)
	}
	f, err := ns.OpenFile("lib/made", os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := ds["two"].Stat("made"); err != nil {
		t.Errorf("OpenFile(O_CREATE) did not create in the first Dir: %v", err)
	}

	// Unbind.
	if err := ns.Unbind("lib", ds["two"]); err != nil {
		t.Fatal(err)
	}
	if b, _ := ns.ReadFile("lib/both"); string(b) != "three" {
		t.Errorf("after Unbind, lib/both = %q", b)
	}
	if err := ns.Unbind("lib", ds["two"]); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("second Unbind = %v", err)
	}
	if err := ns.Unbind("lib", nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := ns.ReadFile("lib/hidden"); string(b) != "should not show" {
		t.Errorf("after unbinding lib, lib/hidden = %q", b)
	}
	if err := ns.Bind("bad/../x", ds["two"], BindReplace); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Bind(bad/../x) = %v", err)
	}
	if err := ns.Bind("x", nil, BindReplace); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Bind(nil) = %v", err)
	}
}

// TestNamespaceFSTest runs testing/fstest on a MountTable with unions,
// deep bindings and directories that exist only on the way to them.
func TestNamespaceFSTest(t *testing.T) {
	alsoAsNobody(t)
	ns, _ := nsFixture(t)
	if err := fstest.TestFS(ns, "a.txt", "etc/conf", "lib/both", "lib/only2", "lib/only3", "lib/sub/x", "lib/sub/y", "mnt/deep/point/p.txt", "mnt/deep/point/link", "mnt/deep/point/dir/inside"); err != nil {
		t.Fatal(err)
	}
	var empty MountTable
	if _, err := empty.Open("."); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("empty MountTable Open(.) = %v", err)
	}
}

// TestNamespaceRights: a MountTable applies each Dir's rights.
func TestNamespaceRights(t *testing.T) {
	alsoAsNobody(t)
	base := tempDir(t)
	writeTree(t, base, map[string]string{"ro/f": "ro", "rw/g": "rw"})
	ro := mustOpen(t, filepath.Join(base, "ro"), ReadOnly)
	rw := mustOpen(t, filepath.Join(base, "rw"))
	var ns MountTable
	ns.Bind("u", ro, BindReplace)
	ns.Bind("u", rw, BindAfter)
	if _, err := ns.OpenFile("u/f", os.O_RDWR, 0); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("OpenFile(u/f, O_RDWR) = %v, want EPERM", err)
	}
	// A new file goes to the first Dir that may create.
	f, err := ns.OpenFile("u/new", os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := os.Stat(filepath.Join(base, "rw/new")); err != nil {
		t.Errorf("new file not in rw: %v", err)
	}
}

// TestNamespaceConcurrent binds and unbinds while others resolve.
func TestNamespaceConcurrent(t *testing.T) {
	ns, ds := nsFixture(t)
	var binder, readers sync.WaitGroup
	stop := make(chan struct{})
	binder.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			ns.Bind("extra", ds["four"], BindAfter)
			ns.Unbind("extra", nil)
		}
	})
	for range 2 {
		readers.Go(func() {
			for range 500 {
				if b, err := ns.ReadFile("a.txt"); err != nil || string(b) != "top-a" {
					t.Errorf("ReadFile = %q, %v", b, err)
				}
				ns.ReadDir(".")
				ns.Stat("extra/p.txt")
			}
		})
	}
	readers.Wait()
	close(stop)
	binder.Wait()
}
