package served

import (
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

	"github.com/caplin-dev/caplin/dir"
	"golang.org/x/sys/unix"
)

// unionOf3 makes a union of three Host members, A (not writable), B and
// C (writable), and returns it with their roots and Dirs. Each file
// holds its member's letter.
//
//	A: a both d/x ro/ ft
//	B: b both d/y w/ ft/q
//	C: c d/z cdir/
func unionOf3(t *testing.T) (FS, [3]string, [3]*dir.Dir) {
	t.Helper()
	var roots [3]string
	var dirs [3]*dir.Dir
	var members []UnionMember
	for i, names := range [][]string{
		{"a", "both", "d/x", "ro/", "ft"},
		{"b", "both", "d/y", "w/", "ft/q"},
		{"c", "d/z", "cdir/"},
	} {
		files := map[string]string{}
		for _, n := range names {
			files[n] = string(rune('A' + i))
		}
		roots[i] = t.TempDir()
		tree(t, roots[i], files)
		d, err := dir.Open(roots[i])
		if err != nil {
			t.Fatal(err)
		}
		dirs[i] = d
		members = append(members, UnionMember{FS: Host(d), Writable: i > 0})
	}
	return Union(members...), roots, dirs
}

func unionRead(t *testing.T, u FS, name string) string {
	t.Helper()
	f, err := u.OpenFile(context.Background(), name, os.O_RDONLY, 0)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func entryNames(ents []DirEntry) []string {
	var s []string
	for _, e := range ents {
		s = append(s, e.Name)
	}
	slices.Sort(s)
	return s
}

// TestUnionLookups: the first member that has a name wins, a directory
// lists every member's entries, and an error other than ENOENT stops the
// search.
func TestUnionLookups(t *testing.T) {
	u, roots, dirs := unionOf3(t)
	ctx := context.Background()
	for name, want := range map[string]string{"a": "A", "both": "A", "b": "B", "c": "C", "d/x": "A", "d/y": "B", "d/z": "C"} {
		if got := unionRead(t, u, name); got != want {
			t.Errorf("%s holds %q, want %q", name, got, want)
		}
	}
	for _, c := range []struct {
		dir  string
		want []string
	}{
		{".", []string{"a", "b", "both", "c", "cdir", "d", "ft", "ro", "w"}},
		{"d", []string{"x", "y", "z"}},
		{"cdir", nil},
	} {
		ents, err := u.ReadDir(ctx, c.dir)
		if err != nil || !slices.Equal(entryNames(ents), c.want) {
			t.Errorf("readdir %s = %v, %v; want %v", c.dir, entryNames(ents), err, c.want)
		}
	}
	// Inode numbers are the members' own, as fstat of an open file says.
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(roots[2], "c"), &st); err != nil {
		t.Fatal(err)
	}
	if got, err := u.Lstat(ctx, "c"); err != nil || got.Ino != st.Ino {
		t.Errorf("lstat c: ino %d, %v; want %d", got.Ino, err, st.Ino)
	}
	ents, _ := u.ReadDir(ctx, ".")
	for _, e := range ents {
		if e.Name == "c" && e.Ino != st.Ino {
			t.Errorf("readdir: c has ino %d, want %d", e.Ino, st.Ino)
		}
	}
	for _, c := range []struct {
		name  string
		errno syscall.Errno
	}{
		{"nowhere", unix.ENOENT},
		{"d/nowhere", unix.ENOENT},
		{"ft/q", unix.ENOTDIR}, // A's file ft hides B's directory
	} {
		if _, err := u.Lstat(ctx, c.name); !errors.Is(err, c.errno) {
			t.Errorf("lstat %s = %v, want %v", c.name, err, c.errno)
		}
	}
	if _, err := u.ReadDir(ctx, "a"); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("readdir of a file = %v, want ENOTDIR", err)
	}
	if _, err := u.ReadDir(ctx, "nowhere"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("readdir of nothing = %v, want ENOENT", err)
	}
	if err := u.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	for i, d := range dirs {
		if _, err := d.Lstat("."); !errors.Is(err, fs.ErrClosed) {
			t.Errorf("member %d after the union's close: %v, want fs.ErrClosed", i, err)
		}
	}
}

// TestUnionChanges: new names go to the first writable member that has
// the parent; changes to existing names go to the member that has them;
// rename and link across members fail with EXDEV.
func TestUnionChanges(t *testing.T) {
	ctx := context.Background()
	create := func(name string) func(FS) error {
		return func(u FS) error {
			f, err := u.OpenFile(ctx, name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err == nil {
				f.Close()
			}
			return err
		}
	}
	for _, c := range []struct {
		what  string
		op    func(FS) error
		errno syscall.Errno
		// exists and gone are "member:path" that must (not) exist after.
		exists, gone []string
	}{
		{what: "create at the top", op: create("new"), exists: []string{"B:new"}, gone: []string{"A:new", "C:new"}},
		{what: "create under C's directory", op: create("cdir/new"), exists: []string{"C:cdir/new"}},
		{what: "create under a merged directory", op: create("d/new"), exists: []string{"B:d/new"}},
		{what: "create under A's only", op: create("ro/new"), errno: unix.EROFS, gone: []string{"A:ro/new"}},
		{what: "create of an existing name", op: create("a"), errno: unix.EEXIST},
		{what: "create under nothing", op: create("nowhere/x"), errno: unix.EROFS},
		{what: "mkdir", op: func(u FS) error { return u.Mkdir(ctx, "w/sub", 0o755) }, exists: []string{"B:w/sub"}},
		{what: "mkdir of an existing name", op: func(u FS) error { return u.Mkdir(ctx, "c", 0o755) }, errno: unix.EEXIST},
		{what: "mknod", op: func(u FS) error { return u.Mknod(ctx, "cdir/fifo", unix.S_IFIFO|0o600, 0) }, exists: []string{"C:cdir/fifo"}},
		{what: "symlink", op: func(u FS) error { return u.Symlink(ctx, "a", "lnk") }, exists: []string{"B:lnk"}},
		{what: "symlink over A's name", op: func(u FS) error { return u.Symlink(ctx, "x", "a") }, errno: unix.EEXIST},
		{what: "unlink uncovers", op: func(u FS) error { return u.Unlink(ctx, "both") }, exists: []string{"B:both"}, gone: []string{"A:both"}},
		{what: "unlink in C", op: func(u FS) error { return u.Unlink(ctx, "d/z") }, gone: []string{"C:d/z"}},
		{what: "rmdir", op: func(u FS) error { return u.Rmdir(ctx, "cdir") }, gone: []string{"C:cdir"}},
		{what: "rmdir of a file", op: func(u FS) error { return u.Rmdir(ctx, "c") }, errno: unix.ENOTDIR},
		{what: "unlink of nothing", op: func(u FS) error { return u.Unlink(ctx, "nowhere") }, errno: unix.ENOENT},
		{what: "rename within B", op: func(u FS) error { return u.Rename(ctx, "b", "w/b2", 0) }, exists: []string{"B:w/b2"}, gone: []string{"B:b"}},
		{what: "rename within C", op: func(u FS) error { return u.Rename(ctx, "c", "cdir/c", 0) }, exists: []string{"C:cdir/c"}},
		{what: "rename from A to a new name", op: func(u FS) error { return u.Rename(ctx, "a", "a2", 0) }, errno: unix.EXDEV, exists: []string{"A:a"}},
		{what: "rename over another member's name", op: func(u FS) error { return u.Rename(ctx, "b", "c", 0) }, errno: unix.EXDEV, exists: []string{"B:b", "C:c"}},
		{what: "rename into C's directory", op: func(u FS) error { return u.Rename(ctx, "b", "cdir/b", 0) }, errno: unix.EXDEV},
		{what: "rename noreplace", op: func(u FS) error { return u.Rename(ctx, "b", "both", unix.RENAME_NOREPLACE) }, errno: unix.EEXIST},
		{what: "rename exchange", op: func(u FS) error { return u.Rename(ctx, "b", "d/y", unix.RENAME_EXCHANGE) }, exists: []string{"B:b", "B:d/y"}},
		{what: "rename of nothing", op: func(u FS) error { return u.Rename(ctx, "nowhere", "x", 0) }, errno: unix.ENOENT},
		{what: "link within B", op: func(u FS) error { return u.Link(ctx, "b", "w/l") }, exists: []string{"B:w/l", "B:b"}},
		{what: "link across", op: func(u FS) error { return u.Link(ctx, "b", "cdir/l") }, errno: unix.EXDEV},
		{what: "link over a name", op: func(u FS) error { return u.Link(ctx, "b", "c") }, errno: unix.EEXIST},
		{what: "truncate in A", op: func(u FS) error { return u.Truncate(ctx, "a", 0) }},
		{what: "chmod in C", op: func(u FS) error { return u.Chmod(ctx, "c", 0o600) }},
	} {
		t.Run(c.what, func(t *testing.T) {
			u, roots, _ := unionOf3(t)
			defer u.Close()
			err := c.op(u)
			if c.errno == 0 && err != nil || c.errno != 0 && !errors.Is(err, c.errno) {
				t.Fatalf("%v, want %v", err, c.errno)
			}
			check := func(spec string, want bool) {
				m, p, _ := strings.Cut(spec, ":")
				_, err := os.Lstat(filepath.Join(roots[m[0]-'A'], p))
				if (err == nil) != want {
					t.Errorf("%s: exists %v, want %v", spec, err == nil, want)
				}
			}
			for _, s := range c.exists {
				check(s, true)
			}
			for _, s := range c.gone {
				check(s, false)
			}
		})
	}
}

// TestUnionAttrs: attribute calls act on the member that has the name.
func TestUnionAttrs(t *testing.T) {
	u, roots, _ := unionOf3(t)
	defer u.Close()
	ctx := context.Background()
	if err := u.Chmod(ctx, "both", 0o600); err != nil {
		t.Fatal(err)
	}
	for i, want := range []fs.FileMode{0o600, 0o644} {
		fi, err := os.Lstat(filepath.Join(roots[i], "both"))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("member %d's both: %v, %v; want %v", i, fi.Mode(), err, want)
		}
	}
	ts := unix.Timespec{Sec: 1000}
	if err := u.Utimens(ctx, "d/y", nil, &ts); err != nil {
		t.Fatal(err)
	}
	if st, err := u.Lstat(ctx, "d/y"); err != nil || st.Mtim.Sec != 1000 {
		t.Errorf("d/y mtime %d, %v", st.Mtim.Sec, err)
	}
	if err := u.Truncate(ctx, "c", 0); err != nil {
		t.Fatal(err)
	}
	if st, err := u.Lstat(ctx, "c"); err != nil || st.Size != 0 {
		t.Errorf("c size %d after truncate, %v", st.Size, err)
	}
	if err := u.Symlink(ctx, "target", "w/l"); err != nil {
		t.Fatal(err)
	}
	if s, err := u.Readlink(ctx, "w/l"); err != nil || s != "target" {
		t.Errorf("readlink w/l = %q, %v", s, err)
	}
	if _, err := u.Statfs(ctx, "c"); err != nil {
		t.Errorf("statfs c: %v", err)
	}
	if _, err := u.Statfs(ctx, "nowhere"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("statfs of nothing = %v", err)
	}
	err := u.Setxattr(ctx, "b", "user.t", []byte("v"), 0)
	if errors.Is(err, unix.EOPNOTSUPP) {
		t.Skipf("no user xattrs on %s", roots[1])
	}
	if err != nil {
		t.Fatal(err)
	}
	if v, err := unix.Getxattr(filepath.Join(roots[1], "b"), "user.t", make([]byte, 8)); err != nil || v != 1 {
		t.Errorf("B's b: user.t %d bytes, %v", v, err)
	}
	if v, err := u.Getxattr(ctx, "b", "user.t"); err != nil || string(v) != "v" {
		t.Errorf("getxattr = %q, %v", v, err)
	}
	if l, err := u.Listxattr(ctx, "b"); err != nil || !slices.Contains(l, "user.t") {
		t.Errorf("listxattr = %q, %v", l, err)
	}
	if err := u.Removexattr(ctx, "b", "user.t"); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Getxattr(ctx, "b", "user.t"); !errors.Is(err, unix.ENODATA) {
		t.Errorf("getxattr after remove = %v", err)
	}
}
