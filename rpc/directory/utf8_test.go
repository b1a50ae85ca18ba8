package directory

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/caplin-dev/caplin/dir"
)

// TestDirectoryNonUTF8Name reads a directory holding a file whose name is
// not UTF-8 ("\xff": a Linux name may be any bytes but '/' and NUL), and
// stats and opens the file by that name: strings go through the wire as
// the bytes they are.
func TestDirectoryNonUTF8Name(t *testing.T) {
	d, root := dirPair(t, dir.All)
	ctx := context.Background()
	const name = "\xff"
	if err := os.WriteFile(filepath.Join(root, name), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ents, err := d.ReadDir(ctx, ".")
	if err != nil {
		t.Fatalf("ReadDir: %v", err)
	}
	found := false
	for _, e := range ents {
		found = found || e.Name == name
	}
	if !found {
		t.Errorf("ReadDir: %q; want %q among them", ents, name)
	}
	st, err := d.Stat(ctx, name, false)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if st.Name != name || st.Size != 1 {
		t.Errorf("Stat: %+v; want name %q, size 1", st, name)
	}
	f, err := d.Open(ctx, name, os.O_RDONLY, 0)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if s := readAllClose(t, f); s != "x" {
		t.Errorf("read %q; want %q", s, "x")
	}
}
