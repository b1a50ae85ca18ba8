package dir

import (
	"os"
	"testing"

	"github.com/caplin-dev/caplin/internal/testenv"
)

var (
	alsoAsNobody = testenv.AlsoAsNobody
	openFDs      = testenv.OpenFDs
	// writeTree makes files under a root (see testenv.WriteTree).
	writeTree = testenv.WriteTree
)

// envTmp, if set, is where tempDir makes its directories.
const envTmp = "CAPLIN_DIR_TMP"

// tempDir returns a new directory for a test, in $CAPLIN_DIR_TMP if set,
// else on tmpfs (/dev/shm) where there is one, so that the fsyncs of the
// atomic operations cost nothing; else t.TempDir. The layout is created by
// the caller.
func tempDir(t testing.TB) string {
	t.Helper()
	base := os.Getenv(envTmp)
	if st, err := os.Stat("/dev/shm"); base == "" && err == nil && st.IsDir() {
		if f, err := os.CreateTemp("/dev/shm", "probe"); err == nil {
			f.Close()
			os.Remove(f.Name())
			base = "/dev/shm"
		}
	}
	if base == "" {
		return t.TempDir()
	}
	d, err := os.MkdirTemp(base, "caplin-dir-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// mustOpen opens a Dir for a test and closes it when the test ends.
func mustOpen(t testing.TB, path string, opts ...Option) *Dir {
	t.Helper()
	d, err := Open(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}
