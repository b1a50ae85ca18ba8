package dir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzPathValidation feeds arbitrary paths to the path checks and to Dirs:
// nothing panics, what the checks accept has the properties they promise,
// and no lookup through a Dir, in either mode, reaches the file outside it
// or makes anything outside it.
func FuzzPathValidation(f *testing.F) {
	for _, s := range []string{
		"", ".", "..", "a", "a/", "a/b", "/", "//", "/a", "a//b", "./a", "a/.", "a/..",
		"../secret", "../../secret", "a/../../secret", "up/secret", "abs", "abs/secret",
		"dotdot/secret", "proc", "a\x00b", "\x00", strings.Repeat("a", 256),
		strings.Repeat("a/", 2100), strings.Repeat("../", 1400) + "secret", "ü/…/\xff",
		"f/", "f/.", "f/..", "dir/../f", "dir/./f", "dir//f//",
	} {
		f.Add(s)
	}
	top := f.TempDir()
	root := filepath.Join(top, "root")
	scratch := filepath.Join(top, "scratch")
	outside := filepath.Join(top, "outside")
	for _, p := range []string{root + "/dir", scratch, outside} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			f.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644)
	os.WriteFile(filepath.Join(top, "secret"), []byte("secret"), 0o644)
	os.WriteFile(filepath.Join(root, "f"), []byte("f"), 0o644)
	os.Symlink("../outside", filepath.Join(root, "up"))
	os.Symlink(outside, filepath.Join(root, "abs"))
	os.Symlink("..", filepath.Join(root, "dotdot"))
	os.Symlink("/proc/self/root", filepath.Join(root, "proc"))
	var secretInos []uint64
	for _, p := range []string{filepath.Join(outside, "secret"), filepath.Join(top, "secret"), outside, top} {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			f.Fatal(err)
		}
		secretInos = append(secretInos, st.Ino)
	}
	listing := func() string {
		a, _ := os.ReadDir(top)
		b, _ := os.ReadDir(outside)
		var s []string
		for _, e := range append(a, b...) {
			s = append(s, e.Name())
		}
		return strings.Join(s, ",")
	}
	before := listing()

	ro, err := Open(root, ReadOnly)
	if err != nil {
		f.Fatal(err)
	}
	roIn, err := Open(root, InRoot, ReadOnly)
	if err != nil {
		f.Fatal(err)
	}
	rw, err := Open(scratch)
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, name string) {
		err := checkPath(name)
		if err == nil {
			if name == "" || strings.IndexByte(name, 0) >= 0 || len(name) >= unix.PathMax || name[0] == '/' {
				t.Fatalf("checkPath accepted %q", name)
			}
			parent, base, plain := splitPath(name)
			if parent == "" || base == "" {
				t.Fatalf("splitPath(%q) = %q, %q", name, parent, base)
			}
			if plain && (strings.Contains(base, "/") || base == "." || base == "..") {
				t.Fatalf("splitPath(%q): %q is not plain", name, base)
			}
			if !strings.HasSuffix(name, base) {
				t.Fatalf("splitPath(%q): base %q", name, base)
			}
		} else if !errors.Is(err, fs.ErrInvalid) {
			t.Fatalf("checkPath(%q) = %v, not fs.ErrInvalid", name, err)
		}
		_, ferr := fsPath("open", name)
		if (ferr == nil) != (fs.ValidPath(name) && err == nil) {
			t.Fatalf("fsPath(%q) = %v", name, ferr)
		}

		for _, d := range []*Dir{ro, roIn} {
			for _, fi := range []func(string) (fs.FileInfo, error){d.Stat, d.Lstat} {
				info, err := fi(name)
				if err == nil && slices.Contains(secretInos, info.Sys().(*unix.Stat_t).Ino) {
					t.Fatalf("%v: %q reached outside", d.Mode(), name)
				}
			}
			if b, err := d.ReadFile(name); err == nil && string(b) == "secret" {
				t.Fatalf("%v: ReadFile(%q) read the secret", d.Mode(), name)
			}
			d.ReadDir(name)
			d.Readlink(name)
			if s, err := d.Sub(name, ReadOnly); err == nil {
				if info, err := s.Stat("."); err == nil && slices.Contains(secretInos, info.Sys().(*unix.Stat_t).Ino) {
					t.Fatalf("%v: Sub(%q) is outside", d.Mode(), name)
				}
				s.Close()
			}
		}
		if err := rw.Mkdir(name, 0o755); err == nil {
			rw.Remove(name)
		}
		if err := rw.WriteFile(name, nil, 0o644); err == nil {
			rw.Remove(name)
		}
		if after := listing(); after != before {
			t.Fatalf("%q made something outside: %s", name, after)
		}
	})
}
