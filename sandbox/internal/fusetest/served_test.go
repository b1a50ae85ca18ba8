package fusetest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/internal/testenv"
	. "github.com/caplin-dev/caplin/sandbox"
	"github.com/caplin-dev/caplin/served"
)

// TestServedServer mounts package served's Server of a host directory,
// read-only: the program reads what is there and cannot write, as root
// and as uid 65534.
func TestServedServer(t *testing.T) {
	testenv.AlsoAsNobodyWithFUSE(t)
	tree := testenv.SharedTempDir(t)
	if err := os.WriteFile(filepath.Join(tree, "f"), []byte("served\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := dir.Open(tree)
	if err != nil {
		t.Fatal(err)
	}
	srv := served.NewServer(served.Host(d), served.Options{Rights: served.ReadOnly, Dest: "/s"})
	defer srv.Close()
	spec := baseSpec()
	spec.Mounts = append(spec.Mounts, Mount{Kind: FUSE, Dest: "/s", Server: srv})
	out, code := run(t, spec, `cat /s/f; (echo x > /s/new) 2>/dev/null && echo LEAK-written; :`)
	if code != 0 || out != "served\n" {
		t.Errorf("the program: status %d, output %q", code, out)
	}
	if _, err := os.Stat(filepath.Join(tree, "new")); err == nil {
		t.Errorf("the program wrote in a read-only serve")
	}
}
