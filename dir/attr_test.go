package dir

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFinalNeverFollowed: the server operations act on a final symbolic
// link itself (or refuse it), never on its target, and stay confined.
func TestFinalNeverFollowed(t *testing.T) {
	alsoAsNobody(t)
	root := tempDir(t)
	outside := tempDir(t)
	writeTree(t, outside, map[string]string{"secret": "s"})
	writeTree(t, root, map[string]string{"f": "data", "link": "->f", "out": "->" + filepath.Join(outside, "secret"), "sub/x": "x", "e/": ""})
	d := mustOpen(t, root)
	lstat := func(p string) unix.Stat_t {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st
	}

	// Utimens on a link sets the link's times, not f's.
	before := lstat(filepath.Join(root, "f"))
	if err := d.Utimens("link", nil, &unix.Timespec{Sec: 12345}); err != nil {
		t.Fatal(err)
	}
	if st := lstat(filepath.Join(root, "link")); st.Mtim.Sec != 12345 {
		t.Errorf("link mtime %d, want 12345", st.Mtim.Sec)
	}
	if st := lstat(filepath.Join(root, "f")); st.Mtim != before.Mtim {
		t.Errorf("target's mtime changed through the link")
	}
	// nil atime is left alone (UTIME_OMIT).
	if st := lstat(filepath.Join(root, "link")); st.Atim != lstat(filepath.Join(root, "link")).Atim {
		t.Errorf("atime changed")
	}
	if err := d.Utimens(".", &unix.Timespec{Sec: 7}, &unix.Timespec{Sec: 8}); err != nil {
		t.Fatal(err)
	}
	if st := lstat(root); st.Atim.Sec != 7 || st.Mtim.Sec != 8 {
		t.Errorf("root times %v %v, want 7 8", st.Atim, st.Mtim)
	}

	// Lchown of the link (to the IDs it has: permitted to anyone owning it).
	if err := d.Lchown("out", os.Getuid(), os.Getgid()); err != nil {
		t.Errorf("lchown of a link out: %v", err)
	}
	if err := d.Lchown("sub/.", -1, os.Getgid()); err != nil {
		t.Errorf("lchown sub/.: %v", err)
	}

	// Truncate refuses links (ELOOP), directories (EISDIR) and escapes.
	if err := d.Truncate("out", 0); !errors.Is(err, unix.ELOOP) {
		t.Errorf("truncate link out: %v, want ELOOP", err)
	}
	if err := d.Truncate("sub", 0); !errors.Is(err, unix.EISDIR) {
		t.Errorf("truncate dir: %v, want EISDIR", err)
	}
	if err := d.Truncate("../x", 0); !errors.Is(err, ErrEscape) {
		t.Errorf("truncate ../x: %v, want ErrEscape", err)
	}
	if err := d.Truncate("f", 2); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "f")); string(b) != "da" {
		t.Errorf("after truncate: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "secret")); string(b) != "s" {
		t.Errorf("outside changed: %q", b)
	}

	// Unlink and Rmdir give unlinkat's distinct errnos.
	if err := d.Unlink("sub"); !errors.Is(err, unix.EISDIR) {
		t.Errorf("unlink dir: %v, want EISDIR", err)
	}
	if err := d.Rmdir("f"); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("rmdir file: %v, want ENOTDIR", err)
	}
	if err := d.Rmdir("sub"); !errors.Is(err, unix.ENOTEMPTY) {
		t.Errorf("rmdir full: %v, want ENOTEMPTY", err)
	}
	if err := d.Unlink("out"); err != nil {
		t.Errorf("unlink link: %v", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "secret")); err != nil {
		t.Errorf("unlinking a link removed its target: %v", err)
	}
	if err := d.Rmdir("e"); err != nil {
		t.Errorf("rmdir: %v", err)
	}

	// RenameFlags passes renameat2's flags.
	if err := d.RenameFlags("f", "link", unix.RENAME_NOREPLACE); !errors.Is(err, unix.EEXIST) {
		t.Errorf("rename noreplace: %v, want EEXIST", err)
	}
	if err := d.RenameFlags("f", "link", unix.RENAME_EXCHANGE); err != nil {
		t.Errorf("rename exchange: %v", err)
	}
	if st := lstat(filepath.Join(root, "f")); st.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("exchange did not swap")
	}

	// Mknod makes a FIFO (device nodes need CAP_MKNOD).
	if err := d.Mknod("p", unix.S_IFIFO|0o600, 0); err != nil {
		t.Fatal(err)
	}
	if st := lstat(filepath.Join(root, "p")); st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("mknod made mode %o", st.Mode)
	}
	if err := d.Truncate("p", 0); err == nil {
		t.Errorf("truncate of a FIFO succeeded")
	}

	// Statfs of a link does not follow it out.
	if _, err := d.Statfs("link"); err != nil {
		t.Errorf("statfs: %v", err)
	}
	if _, err := d.Statfs("../"); !errors.Is(err, ErrEscape) {
		t.Errorf("statfs ..: %v, want ErrEscape", err)
	}
}

func TestReadDirEntries(t *testing.T) {
	root := tempDir(t)
	writeTree(t, root, map[string]string{"f": "", "l": "->f", "d/": "", "name\nwith newline": ""})
	d := mustOpen(t, root)
	ents, err := d.ReadDirEntries(".")
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(ents, func(a, b Dirent) int {
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	want := []struct {
		name string
		typ  uint8
	}{{"d", unix.DT_DIR}, {"f", unix.DT_REG}, {"l", unix.DT_LNK}, {"name\nwith newline", unix.DT_REG}}
	if len(ents) != len(want) {
		t.Fatalf("entries %v", ents)
	}
	for i, w := range want {
		var st unix.Stat_t
		unix.Lstat(filepath.Join(root, w.name), &st)
		if ents[i].Name != w.name || ents[i].Type != w.typ || ents[i].Ino != st.Ino {
			t.Errorf("entry %d: %+v, want %q type %d ino %d", i, ents[i], w.name, w.typ, st.Ino)
		}
	}
}

func TestXattr(t *testing.T) {
	alsoAsNobody(t)
	t.Run("xattrat", testXattr)
	t.Run("proc", func(t *testing.T) {
		testHooks.noXattrAt.Store(true)
		defer testHooks.noXattrAt.Store(false)
		testXattr(t)
	})
}

func testXattr(t *testing.T) {
	root := tempDir(t)
	writeTree(t, root, map[string]string{"f": "", "l": "->f", "d/": ""})
	d := mustOpen(t, root)
	if err := d.Setxattr("f", "user.k", []byte("v1"), 0); errors.Is(err, unix.EOPNOTSUPP) {
		t.Skip("no user xattrs here")
	} else if err != nil {
		t.Fatal(err)
	}
	if err := d.Setxattr("f", "user.k", []byte("v2"), unix.XATTR_CREATE); !errors.Is(err, unix.EEXIST) {
		t.Errorf("XATTR_CREATE of an existing attr: %v", err)
	}
	big := make([]byte, 1000)
	for i := range big {
		big[i] = byte(i)
	}
	if err := d.Setxattr("d/.", "user.big", big, 0); err != nil {
		t.Fatal(err)
	}
	if v, err := d.Getxattr("d", "user.big"); err != nil || string(v) != string(big) {
		t.Errorf("getxattr big: %d bytes, %v", len(v), err)
	}
	if v, err := d.Getxattr("f", "user.k"); err != nil || string(v) != "v1" {
		t.Errorf("getxattr: %q %v", v, err)
	}
	if names, err := d.Listxattr("f"); err != nil || !slices.Contains(names, "user.k") {
		t.Errorf("listxattr: %q %v", names, err)
	}
	// The link is not followed: f's attribute is not the link's.
	// (Without the *xattrat calls, a link's attributes are refused.)
	if _, err := d.Getxattr("l", "user.k"); !errors.Is(err, unix.ENODATA) && !(testHooks.noXattrAt.Load() && errors.Is(err, unix.EOPNOTSUPP)) {
		t.Errorf("getxattr through a link: %v, want ENODATA", err)
	}
	if err := d.Removexattr("f", "user.k"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Getxattr("f", "user.k"); !errors.Is(err, unix.ENODATA) {
		t.Errorf("after remove: %v", err)
	}
}
