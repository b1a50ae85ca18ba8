package dir

import (
	"errors"
	"io/fs"
	"slices"
	"testing"
	"testing/fstest"
)

var fsTree = map[string]string{
	"a.txt":          "a",
	"empty":          "",
	"dir/b.txt":      "bb",
	"dir/sub/c.txt":  "ccc",
	"dir/emptydir/":  "",
	"many/01":        "1",
	"many/02":        "2",
	"many/03":        "3",
	"many/04":        "4",
	"many/05":        "5",
	"link-to-a":      "->a.txt",
	"dir/link-c":     "->sub/c.txt",
	"dir/link-dir":   "->sub",
	"dir/sub/.dot":   "hidden",
	"odd name ✓.txt": "utf-8",
}

var fsFiles = []string{
	"a.txt", "empty", "dir/b.txt", "dir/sub/c.txt", "many/01", "many/05",
	"link-to-a", "dir/link-c", "dir/sub/.dot", "odd name ✓.txt",
}

// TestFSTestFS runs testing/fstest on a Dir's FS, in both modes, and on
// its Sub.
func TestFSTestFS(t *testing.T) {
	alsoAsNobody(t)
	root := tempDir(t)
	writeTree(t, root, fsTree)
	for _, mode := range []Mode{Beneath, InRoot} {
		d := mustOpen(t, root, mode, ReadOnly)
		if err := fstest.TestFS(d.FS(), fsFiles...); err != nil {
			t.Fatalf("%v: %v", mode, err)
		}
		sub, err := fs.Sub(d.FS(), "dir")
		if err != nil {
			t.Fatal(err)
		}
		if err := fstest.TestFS(sub, "b.txt", "sub/c.txt", "link-c"); err != nil {
			t.Fatalf("%v Sub: %v", mode, err)
		}
	}
	// Unlike fs.Sub's default, which prefixes names, a Dir's FS Sub is a Dir
	// of its own: links cannot climb out of it (so fstest, which expects
	// every listed link to open, is run above on a tree without climbing
	// links).
	writeTree(t, root, map[string]string{"dir/sub/up": "->../b.txt"})
	d := mustOpen(t, root)
	if b, err := fs.ReadFile(d.FS(), "dir/sub/up"); err != nil || string(b) != "bb" {
		t.Fatalf("ReadFile(dir/sub/up) = %q, %v", b, err)
	}
	sub, err := fs.Sub(d.FS(), "dir/sub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.ReadFile(sub, "up"); !errors.Is(err, ErrEscape) {
		t.Fatalf("Sub followed a link out of itself: %v", err)
	}
}

// TestFSNames: io/fs names are checked by fs.ValidPath rules before the
// kernel sees them.
func TestFSNames(t *testing.T) {
	alsoAsNobody(t)
	root := tempDir(t)
	writeTree(t, root, fsTree)
	fsys := mustOpen(t, root).FS()
	for _, name := range []string{"", "/a.txt", "./a.txt", "dir/../a.txt", "..", "dir/", "dir//b.txt", "a\x00", "dir/."} {
		if _, err := fsys.Open(name); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("Open(%q) = %v, want fs.ErrInvalid", name, err)
		}
		if _, err := fsys.ReadFile(name); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("ReadFile(%q) = %v, want fs.ErrInvalid", name, err)
		}
		if _, err := fsys.Stat(name); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("Stat(%q) = %v, want fs.ErrInvalid", name, err)
		}
		if _, err := fsys.ReadDir(name); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("ReadDir(%q) = %v, want fs.ErrInvalid", name, err)
		}
		if _, err := fsys.Sub(name); !errors.Is(err, fs.ErrInvalid) && name != "" {
			t.Errorf("Sub(%q) = %v, want fs.ErrInvalid", name, err)
		}
	}
	// Escaping links are still refused after translation.
	writeTree(t, root, map[string]string{"out": "->/etc/passwd"})
	if _, err := fsys.ReadFile("out"); !errors.Is(err, ErrEscape) {
		t.Errorf("ReadFile(out) = %v, want ErrEscape", err)
	}
	// fs.WalkDir sees everything.
	var seen []string
	fs.WalkDir(fsys, ".", func(p string, _ fs.DirEntry, err error) error {
		if err == nil {
			seen = append(seen, p)
		}
		return nil
	})
	for _, f := range fsFiles {
		if !slices.Contains(seen, f) {
			t.Errorf("WalkDir missed %s", f)
		}
	}
}
