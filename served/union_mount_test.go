package served

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/caplin-dev/caplin/dir"
)

// TestUnionMounted serves a union of a writable upper directory and a
// lower one, mounted: programs see both, make new files in the upper
// one, and get EXDEV for a rename out of the lower one (mv then copies).
func TestUnionMounted(t *testing.T) {
	alsoAsNobody(t)
	upper, lower := t.TempDir(), t.TempDir()
	tree(t, upper, map[string]string{"both": "upper", "sub/": ""})
	tree(t, lower, map[string]string{"both": "lower", "old": "lower", "sub/inner": "lower", "only/": ""})
	var members []UnionMember
	for i, root := range []string{upper, lower} {
		d, err := dir.Open(root)
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, UnionMember{FS: Host(d), Writable: i == 0})
	}
	m := mountServer(t, NewServer(Union(members...), Options{Dest: "/u"}))

	for name, want := range map[string]string{"both": "upper", "old": "lower", "sub/inner": "lower"} {
		if a := m.ok(req{Op: "read", Path: name}); string(a.Data) != want {
			t.Errorf("read %s: %q, want %q", name, a.Data, want)
		}
	}
	a := m.ok(req{Op: "readdir", Path: "sub"})
	if !slices.Contains(a.Names, "inner") {
		t.Errorf("readdir sub: %q", a.Names)
	}
	m.ok(req{Op: "write", Path: "sub/new", Data: []byte("n"), Flags: os.O_CREATE | os.O_EXCL | os.O_WRONLY, Mode: 0o640})
	if fi, err := os.Stat(filepath.Join(upper, "sub", "new")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("sub/new in the upper directory: %v, %v", fi, err)
	}
	m.ok(req{Op: "mkdir", Path: "made", Mode: 0o750})
	if fi, err := os.Stat(filepath.Join(upper, "made")); err != nil || !fi.IsDir() {
		t.Errorf("made in the upper directory: %v", err)
	}
	m.errno(req{Op: "rename", Path: "old", Path2: "renamed"}, syscall.EXDEV)
	m.errno(req{Op: "write", Path: "only/x", Data: []byte("x"), Flags: os.O_CREATE | os.O_WRONLY, Mode: 0o644}, syscall.EROFS)
	m.ok(req{Op: "rename", Path: "sub/new", Path2: "made/new"})
	// Removing the upper name uncovers the lower one.
	m.ok(req{Op: "unlink", Path: "both"})
	if a := m.ok(req{Op: "read", Path: "both"}); string(a.Data) != "lower" {
		t.Errorf("both after unlinking the upper one: %q", a.Data)
	}
}
