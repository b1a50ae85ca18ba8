package dir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	workers["bench-cas"] = benchCASWorker
	workers["bench-flock"] = benchFlockWorker
}

// BenchmarkDirOpen opens and closes a file through a Dir (openat2,
// RESOLVE_BENEATH, and the fstat that keeps directories in).
func BenchmarkDirOpen(b *testing.B) {
	root := b.TempDir()
	writeTree(b, root, map[string]string{"a/b/file": "x"})
	d := mustOpen(b, root)
	for b.Loop() {
		f, err := d.Open("a/b/file")
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// BenchmarkOSOpen opens and closes the same file with os.Open.
func BenchmarkOSOpen(b *testing.B) {
	root := b.TempDir()
	writeTree(b, root, map[string]string{"a/b/file": "x"})
	path := filepath.Join(root, "a/b/file")
	for b.Loop() {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// benchCASWorker increments the counter "n" in envRoot envOps times with
// Read and CompareAndSwap, once its standard input says go; it prints the
// number of CompareAndSwaps it lost.
func benchCASWorker() error {
	d, err := Open(os.Getenv(envRoot))
	if err != nil {
		return err
	}
	n, _ := strconv.Atoi(os.Getenv(envOps))
	waitReady()
	lost := 0
	for range n {
		for {
			b, v, err := d.Read("n")
			if err != nil {
				return err
			}
			c, _ := strconv.Atoi(string(b))
			if _, err = d.CompareAndSwap("n", v, strconv.AppendInt(nil, int64(c+1), 10)); err == nil {
				break
			}
			if !errors.Is(err, ErrVersionMismatch) {
				return err
			}
			lost++
		}
	}
	fmt.Println(lost)
	return nil
}

// benchFlockWorker increments the counter in the file "n" in envRoot
// envOps times the classic way: flock(LOCK_EX), read, write in place,
// fsync, unlock.
func benchFlockWorker() error {
	fd, err := unix.Open(filepath.Join(os.Getenv(envRoot), "n"), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	n, _ := strconv.Atoi(os.Getenv(envOps))
	waitReady()
	buf := make([]byte, 32)
	for range n {
		if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
			return err
		}
		m, err := unix.Pread(fd, buf, 0)
		if err != nil {
			return err
		}
		c, _ := strconv.Atoi(string(buf[:m]))
		out := strconv.AppendInt(nil, int64(c+1), 10)
		if _, err := unix.Pwrite(fd, out, 0); err != nil {
			return err
		}
		if err := unix.Ftruncate(fd, int64(len(out))); err != nil {
			return err
		}
		if err := unix.Fsync(fd); err != nil {
			return err
		}
		if err := unix.Flock(fd, unix.LOCK_UN); err != nil {
			return err
		}
	}
	fmt.Println(0)
	return nil
}

// benchContention runs b.N increments of one counter split over 4 worker
// processes and reports increments per second; only the increments are
// timed, not the processes' start.
func benchContention(b *testing.B, worker string) {
	const procs = 4
	root := tempDir(b)
	if err := os.WriteFile(filepath.Join(root, "n"), []byte("0"), 0o644); err != nil {
		b.Fatal(err)
	}
	per := (b.N + procs - 1) / procs
	ps := startWorkers(b, worker, procs, envRoot+"="+root, envOps+"="+strconv.Itoa(per))
	b.ResetTimer()
	start := time.Now()
	outs := goAndWait(b, ps)
	lost := 0
	for _, out := range outs {
		l, _ := strconv.Atoi(strings.TrimSpace(string(out)))
		lost += l
	}
	elapsed := time.Since(start)
	b.StopTimer()
	c, _ := os.ReadFile(filepath.Join(root, "n"))
	if got, _ := strconv.Atoi(string(c)); got != per*procs {
		b.Fatalf("counter %s, want %d", c, per*procs)
	}
	b.ReportMetric(float64(per*procs)/elapsed.Seconds(), "incr/s")
	b.ReportMetric(float64(lost)/float64(per*procs), "lost/incr")
}

// BenchmarkCompareAndSwapContention: 4 processes increment one counter
// with Read and CompareAndSwap (retrying lost races).
func BenchmarkCompareAndSwapContention(b *testing.B) { benchContention(b, "bench-cas") }

// BenchmarkFlockRMWContention: 4 processes increment one counter with
// flock, read, write in place and fsync.
func BenchmarkFlockRMWContention(b *testing.B) { benchContention(b, "bench-flock") }
