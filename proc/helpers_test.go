package proc

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/caplin-dev/caplin/internal/testenv"
)

var (
	alsoAsNobody  = testenv.AlsoAsNobody
	sharedTempDir = testenv.SharedTempDir
)

const envNobody = testenv.EnvNobody

// openFDs lists this process's open fds.
func openFDs(t *testing.T) map[string]string {
	t.Helper()
	return fdTable(t, "/proc/self/fd")
}

// fdTable reads an fd directory: fd number → link target.
func fdTable(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // the fd ReadDir itself used, now closed
		}
		m[e.Name()] = target
	}
	return m
}
