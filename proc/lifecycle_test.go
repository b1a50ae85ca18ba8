package proc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/pidfd"
	"golang.org/x/sys/unix"
)

// pidfdReaped reports whether the process behind pidfd f has been reaped:
// the kernel shows "Pid: -1" for it then (a zombie still has its pid).
func pidfdReaped(t *testing.T, f *os.File) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), "\nPid:\t-1\n")
}

// forkAndDrop forks a child with opts and drops its Handle without
// closing it. It returns a pidfd of the child's own.
func forkAndDrop(t *testing.T, opts *Options) *os.File {
	t.Helper()
	h, err := Fork(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Getpid(context.Background()); err != nil {
		t.Fatal(err)
	}
	f, err := h.Process().File()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestDroppedHandle drops a Handle without closing it: once the garbage
// collector finds it, its child is killed and reaped, rather than left
// waiting for a request forever.
func TestDroppedHandle(t *testing.T) {
	alsoAsNobody(t)
	for name, opts := range map[string]*Options{
		"tree":     nil,
		"detached": {From: Detached},
		"direct":   {From: Direct},
	} {
		t.Run(name, func(t *testing.T) {
			f := forkAndDrop(t, opts)
			defer f.Close()
			deadline := time.Now().Add(10 * time.Second)
			for !pidfdReaped(t, f) {
				if time.Now().After(deadline) {
					fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}
					n, _ := unix.Poll(fds, 0)
					t.Fatalf("the child of a dropped Handle is still there (exited: %v)", n > 0)
				}
				runtime.GC()
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// TestSpawnCancelKillsByPidfd cancels spawns whose setup blocks reading a
// pipe: each child is killed (the pipe loses its last reader) and reaped
// (no zombie), the caller keeps no fd of it, and the zygote goes on.
func TestSpawnCancelKillsByPidfd(t *testing.T) {
	alsoAsNobody(t)
	trueExe := openExe(t, "/bin/true")
	for name, opts := range map[string]*Options{
		"tree":     nil,
		"detached": {From: Detached},
	} {
		t.Run(name, func(t *testing.T) {
			spawnTrue := func() {
				t.Helper()
				p, err := Spawn(context.Background(), opts, nil, trueExe, []string{"true"}, nil)
				if err != nil {
					t.Fatal(err)
				}
				if st, err := p.Wait(context.Background()); err != nil || !st.Success() {
					t.Errorf("spawn: %v %v", st, err)
				}
				p.Close()
			}
			spawnTrue() // the zygote's fds are there before counting
			before := openFDs(t)
			var p [2]int // a blocking pipe, which os.Pipe does not make
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			r, w := os.NewFile(uintptr(p[0]), "r"), os.NewFile(uintptr(p[1]), "w")
			defer w.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			var b Batch
			b.Read(b.PutFile(r, -1), make([]byte, 1))
			_, err := Spawn(ctx, opts, &b, trueExe, []string{"true"}, nil)
			r.Close()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("spawn blocked in its setup: %v, want deadline exceeded", err)
			}
			if _, err := w.Write([]byte("x")); !errors.Is(err, unix.EPIPE) {
				t.Errorf("write to the pipe the cancelled child read: %v, want EPIPE (the child is gone)", err)
			}
			w.Close()
			if z := zombies(); len(z) > 0 {
				t.Errorf("zombies left: %v", z)
			}
			if after := openFDs(t); len(after) > len(before) {
				t.Errorf("fds before the cancelled spawn %v, after %v", before, after)
			}
			spawnTrue() // the zygote serves on
		})
	}
}

// TestSpawnPath spawns by path without a Handle, from every origin: the
// path is looked up after the setup (a relative path from the directory
// it changed to), and a nil environment is an empty one.
func TestSpawnPath(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	if os.Getenv("HOME") == "" {
		t.Setenv("HOME", "/")
	}
	for name, opts := range map[string]*Options{
		"tree":     nil,
		"detached": {From: Detached},
		"direct":   {From: Direct},
	} {
		t.Run(name, func(t *testing.T) {
			out, code := spawnOutput(t, func(b *Batch, _ *os.File, argv []string) (*pidfd.Process, error) {
				b.Chdir("/")
				return SpawnPath(ctx, opts, b, "bin/sh", argv, nil)
			}, `printf %s "${HOME-unset}"; exit 6`)
			if code != 6 {
				t.Errorf("SpawnPath of a path relative to the setup's directory: exit %d, want 6", code)
			}
			if out != "unset" {
				t.Errorf("HOME in a program spawned with a nil env: %q, want unset", out)
			}
			var pe *os.PathError
			if _, err := SpawnPath(ctx, opts, nil, "/nonexistent/prog", []string{"x"}, nil); !errors.As(err, &pe) || !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("SpawnPath of a missing file: %v, want a PathError ENOENT", err)
			}
		})
	}
}

// TestWaitLetsGoOfPidfd spawns 100 programs and only waits for each: the
// caller holds no more fds after than before, since a Process lets go of
// its pidfd once Wait has reaped it.
func TestWaitLetsGoOfPidfd(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	trueExe := openExe(t, "/bin/true")
	spawnWait := func() {
		t.Helper()
		p, err := Spawn(ctx, nil, nil, trueExe, []string{"true"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := p.Wait(ctx); err != nil || !st.Success() {
			t.Fatal(st, err)
		}
		if st, err := p.Wait(ctx); err != nil || !st.Success() {
			t.Fatalf("a second Wait: %v %v", st, err)
		}
	}
	spawnWait() // the zygote's fds are there before counting
	before := openFDs(t)
	for i := 0; i < 100; i++ {
		spawnWait()
	}
	if after := openFDs(t); len(after) > len(before) {
		t.Errorf("after 100 spawns waited for but not closed, %d fds, before %d: %v", len(after), len(before), after)
	}
}

// TestPrepare makes zygotes ahead of time, and checks that a caller
// whose ctx is done while a zygote is being made gets its own error,
// while the zygote is made all the same for the next caller.
func TestPrepare(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	for _, from := range []Origin{InTree, Detached, Direct} {
		if err := Prepare(ctx, &Options{From: from}); err != nil {
			t.Errorf("Prepare from %v: %v", from, err)
		}
	}
	if err := Prepare(ctx, &Options{From: Direct + 1}); err == nil {
		t.Errorf("Prepare from an unknown origin: no error")
	}

	z := &zygote{tree: true} // a zygote of the test's own, not yet made
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := z.get(cancelled); err != context.Canceled {
		t.Fatalf("a zygote asked for with a cancelled ctx: %v, want context.Canceled itself", err)
	}
	h, err := z.get(ctx)
	if err != nil {
		t.Fatalf("the zygote after a caller gave up on it: %v", err)
	}
	defer h.Close()
	c, err := h.forkat(ctx, &Options{}, false, 0, nil)
	if err != nil {
		t.Fatalf("fork from the zygote: %v", err)
	}
	defer c.Close()
	if pid, err := c.Getpid(ctx); err != nil || pid != 2 {
		t.Errorf("a child of the tree zygote: pid %d %v, want 2 (the zygote is 1)", pid, err)
	}
}
