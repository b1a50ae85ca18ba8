package main

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestPrintableMode: a Directory's stat gives an fs.FileMode, its getattr
// (which has an Nlink) a stat(2) st_mode; both print as ls does.
func TestPrintableMode(t *testing.T) {
	for _, c := range []struct {
		in   map[any]any
		want string
	}{
		{map[any]any{"Mode": uint64(1<<31 | 0o755)}, "drwxr-xr-x"}, // fs.ModeDir
		{map[any]any{"Mode": uint64(unix.S_IFDIR | 0o755), "Nlink": uint64(2)}, "drwxr-xr-x"},
		{map[any]any{"Mode": uint64(unix.S_IFLNK | 0o777), "Nlink": uint64(1)}, "Lrwxrwxrwx"},
	} {
		out := printable(c.in, nil).(map[string]any)
		if out["Mode"] != c.want {
			t.Errorf("%v prints its Mode as %v, want %s", c.in, out["Mode"], c.want)
		}
	}
}
