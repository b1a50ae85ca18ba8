package proc

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

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

// recordFDTable records in b the fd table that the fd-table tests expect
// after exec: /dev/null at 0 and 2, a pipe's write end at 1, /etc/hostname
// at 7 (opened without close-on-exec, then moved), and a close-on-exec fd
// that must not survive. It returns that table, as fdTable reads it.
func recordFDTable(t *testing.T, b *Batch) map[string]string {
	t.Helper()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { devnull.Close() })
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	b.PutFile(devnull, 0)
	b.PutFile(w, 1)
	b.PutFile(devnull, 2)
	f := b.Openat(AtFDCWD(), "/etc/hostname", unix.O_RDONLY, 0) // not close-on-exec
	b.Dup3(f, 7, 0)
	b.CloseFD(f)
	b.Openat(AtFDCWD(), "/etc/passwd", unix.O_RDONLY|unix.O_CLOEXEC, 0) // gone at exec
	pipeID := fdTable(t, "/proc/self/fd")[strconv.Itoa(int(w.Fd()))]
	return map[string]string{"0": "/dev/null", "1": pipeID, "2": "/dev/null", "7": "/etc/hostname"}
}
