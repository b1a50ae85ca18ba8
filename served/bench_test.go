package served

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLatency reports the latency of lstat, open+close and
// open+read+close of a small file through a served mount next to the same
// calls on the directory itself. It measures; it asserts nothing but that
// the calls work. Run it with -run TestLatency -v.
func TestLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("measures")
	}
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("hello, world\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, rights := range []Rights{ReadOnly, All} {
		m, _ := serveHost(t, root, rights)
		for _, op := range []string{"lstat", "open", "read"} {
			served := m.ok(req{Op: "bench", Path: "f", Path2: op, N: benchN}).N
			direct := m.ok(req{Op: "bench", Path: filepath.Join(root, "f"), Path2: op, N: benchN}).N
			t.Logf("%-8s %-6s served %6d ns, direct %6d ns, ratio %.1f", rights, op, served, direct, float64(served)/float64(direct))
		}
	}
}

// benchN is the rounds of each measurement.
const benchN = 20000
