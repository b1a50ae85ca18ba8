package dir

import (
	"os"
	"path/filepath"
	"testing"
)

func TestVersionText(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "f"), []byte("x"), 0o644)
	d, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, v, err := d.Read("f")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := v.MarshalText()
	w, err := ParseVersion(string(b))
	if err != nil || w != v {
		t.Fatalf("round trip of %s: %v %v", b, w, err)
	}
	if z, err := ParseVersion("none"); err != nil || !z.IsZero() {
		t.Errorf("none: %v %v", z, err)
	}
	for _, bad := range []string{"", "v1:", "v2:1:2:3:4:ab", "v1:1:2:3:4:zz", "v1:x:2:3:4:ab", "v1:0:0:0:0:"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) accepted", bad)
		}
	}
	// A version that went through text still guards a CompareAndSwap.
	if _, err := d.CompareAndSwap("f", w, []byte("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CompareAndSwap("f", w, []byte("z")); err == nil {
		t.Error("CompareAndSwap with a stale version from text succeeded")
	}
}
