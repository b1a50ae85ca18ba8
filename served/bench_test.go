package served

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkCalls measures lstat, open+close, open+read+close of a small
// file and open+8×512 B writes+close through a served mount (read-only and
// writable) and on the directory itself, in the mount worker: go test
// ./served -run - -bench Calls. The worker's own ns per call is the
// "ns/call" metric.
func BenchmarkCalls(b *testing.B) {
	root := b.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("hello, world\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, rights := range []Rights{ReadOnly, All} {
		name := "rw"
		if rights == ReadOnly {
			name = "ro"
		}
		b.Run(name, func(b *testing.B) {
			m, _ := serveHost(b, root, rights)
			ops := []string{"lstat", "open", "read"}
			if rights == All {
				ops = append(ops, "write")
			}
			for _, op := range ops {
				for _, where := range []string{"served", "direct"} {
					path := "f"
					if where == "direct" {
						path = filepath.Join(root, "f")
					}
					b.Run(op+"/"+where, func(b *testing.B) {
						a := m.ok(req{Op: "bench", Path: path, Path2: op, N: b.N})
						b.ReportMetric(float64(a.N), "ns/call")
					})
				}
			}
		})
	}
}
