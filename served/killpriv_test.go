package served

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestWriteDropsSetID: a write, a truncation and an O_TRUNC open through
// the mount by a caller without CAP_FSETID (the worker is root only in a
// user namespace of its own) drop the set-user-ID bit, and the
// set-group-ID bit of a group-executable file, as on a local file system;
// the server does it itself where the host would not (it runs as root).
func TestWriteDropsSetID(t *testing.T) {
	alsoAsNobody(t)
	root := t.TempDir()
	m, _ := serveHost(t, root, All)
	for _, tc := range []struct {
		name string
		r    req
	}{
		{"write", req{Op: "write", Flags: os.O_WRONLY, Data: []byte("x")}},
		{"trunc-open", req{Op: "write", Flags: os.O_WRONLY | os.O_TRUNC}},
		{"truncate", req{Op: "truncate", Off: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := filepath.Join(root, tc.name)
			if err := os.WriteFile(host, []byte("hello"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Chmod(host, 0o6755); err != nil {
				t.Fatal(err)
			}
			r := tc.r
			r.Path = tc.name
			m.ok(r)
			var st unix.Stat_t
			if err := unix.Stat(host, &st); err != nil {
				t.Fatal(err)
			}
			if got := st.Mode & 0o7777; got != 0o755 {
				t.Errorf("mode after %s through the mount = %#o, want 0755", tc.name, got)
			}
		})
	}
}
