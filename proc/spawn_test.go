package proc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/pidfd"
	"golang.org/x/sys/unix"
)

// openExe opens an executable for Spawn, or skips.
func openExe(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// spawnOutput spawns sh -c script with stdout on a pipe, through spawn,
// and returns what it printed and its exit status.
func spawnOutput(t *testing.T, spawn func(*Batch, *os.File, []string) (*pidfd.Process, error), script string) (string, int) {
	t.Helper()
	sh := openExe(t, "/bin/sh")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var b Batch
	b.PutFile(w, 1)
	p, err := spawn(&b, sh, []string{"sh", "-c", script})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	out, _ := io.ReadAll(r)
	st, err := p.Wait(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return string(out), st.Code
}

func TestSpawnFDTable(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	sleep := openExe(t, "/bin/sleep")
	var b Batch
	want := recordFDTable(t, &b)
	p, err := Spawn(ctx, nil, &b, sleep, []string{"sleep", "100"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	resolved, _ := filepath.EvalSymlinks("/bin/sleep")
	waitSleeping(t, p.Pid(), resolved)
	got := fdTable(t, fmt.Sprintf("/proc/%d/fd", p.Pid()))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("fd table after spawn = %v, want exactly %v", got, want)
	}
}

func TestSpawnRunsAndExits(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	out, code := spawnOutput(t, func(b *Batch, exe *os.File, argv []string) (*pidfd.Process, error) {
		return Spawn(ctx, nil, b, exe, argv, []string{"X=y"})
	}, `echo "$X $0"; exit 3`)
	if out != "y sh\n" || code != 3 {
		t.Errorf("spawned sh printed %q and exited %d, want %q and 3", out, code, "y sh\n")
	}
	// Detached: the caller is the parent, in its own pid namespace.
	out, code = spawnOutput(t, func(b *Batch, exe *os.File, argv []string) (*pidfd.Process, error) {
		return Spawn(ctx, &Options{From: Detached}, b, exe, argv, nil)
	}, `cut -d' ' -f4 /proc/$$/stat`)
	if out != strconv.Itoa(os.Getpid())+"\n" || code != 0 {
		t.Errorf("detached spawn's parent: %q (exit %d), want %d", out, code, os.Getpid())
	}
}

func TestSpawnFailures(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	trueExe := openExe(t, "/bin/true")
	plain := filepath.Join(sharedTempDir(t), "plain")
	if err := os.WriteFile(plain, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	pf, err := os.Open(plain)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	// The zygote exists from here on.
	if _, err := treeZygote.get(ctx); err != nil {
		t.Fatal(err)
	}
	before := openFDs(t)

	// A failed exec: an *os.PathError, as from Exec.
	_, err = Spawn(ctx, nil, nil, pf, []string{"plain"}, nil)
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Op != "execveat" || !errors.Is(err, unix.EACCES) {
		t.Errorf("spawn of a non-executable: %v, want execveat PathError EACCES", err)
	}

	// A failing setup call: a *BatchError that counts in the setup.
	var b Batch
	b.Getpid()
	b.Openat(AtFDCWD(), "/nonexistent/file", unix.O_RDONLY, 0)
	_, err = Spawn(ctx, nil, &b, trueExe, []string{"true"}, nil)
	var be *BatchError
	if !errors.As(err, &be) || be.Index != 1 || be.Len != 2 || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "/nonexistent/file") {
		t.Errorf("spawn with a failing setup: %v, want BatchError at 1 of 2, ENOENT naming the path", err)
	}

	// Setups Spawn refuses: calls that are not system calls, or are not
	// on its allow-list: those on the memory the child shares with its
	// parent, and any it does not know, such as one a newer kernel adds;
	// and calls that pass an address (Ptr).
	for name, rec := range map[string]func(*Batch){
		"takefile":       func(b *Batch) { b.TakeFile(Int(0)) },
		"munmap":         func(b *Batch) { b.Munmap(Uint(1<<20), 4096) },
		"raw mmap":       func(b *Batch) { b.Syscall(unix.SYS_MMAP, Int(0), Int(4096), Int(0), Int(0), Int(-1), Int(0)) },
		"mseal":          func(b *Batch) { b.Syscall(unix.SYS_MSEAL, Uint(1<<20), Int(4096), Int(0)) },
		"rt_sigaction":   func(b *Batch) { b.Syscall(unix.SYS_RT_SIGACTION, Int(10), Int(0), Int(0), Int(8)) },
		"a future call":  func(b *Batch) { b.Syscall(999, Int(0)) },
		"dumpable":       func(b *Batch) { b.Prctl(unix.PR_SET_DUMPABLE, Int(0), Int(0), Int(0), Int(0)) },
		"a future prctl": func(b *Batch) { b.Prctl(999, Int(0), Int(0), Int(0), Int(0)) },
		// read is allowed, but not into an address of the caller's
		// choosing: it could be the parent's memory the child shares.
		"read to an address": func(b *Batch) { b.Syscall(unix.SYS_READ, Int(0), Ptr(1<<20), Int(8)) },
	} {
		var b Batch
		rec(&b)
		if _, err := Spawn(ctx, nil, &b, trueExe, []string{"true"}, nil); err == nil || !strings.Contains(err.Error(), "proc: spawn: setup call 0") {
			t.Errorf("spawn with %s in its setup: %v, want it refused", name, err)
		}
	}
	if _, err := Spawn(ctx, nil, nil, nil, []string{"x"}, nil); !errors.Is(err, syscall.EBADF) {
		t.Errorf("spawn of a nil file: %v, want EBADF", err)
	}
	if _, err := Spawn(ctx, nil, nil, trueExe, []string{"a\x00b"}, nil); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("spawn with a NUL in argv: %v, want EINVAL", err)
	}

	// Nothing is left behind, and the zygote still works.
	p, err := Spawn(ctx, nil, nil, trueExe, []string{"true"}, nil)
	if err != nil {
		t.Fatalf("spawn after the failures: %v", err)
	}
	if st, err := p.Wait(ctx); err != nil || !st.Success() {
		t.Errorf("spawn after the failures: %v %v", st, err)
	}
	p.Close()
	if after := openFDs(t); len(after) > len(before) {
		t.Errorf("fds before the failures %v, after %v", before, after)
	}
	if z := zombies(); len(z) > 0 {
		t.Errorf("zombies left: %v", z)
	}
}

// TestSpawnCancel cancels a spawn whose setup blocks (opening a FIFO no
// one writes to): the child dies, not the zygote, which the next spawn
// shows.
func TestSpawnCancel(t *testing.T) {
	alsoAsNobody(t)
	trueExe := openExe(t, "/bin/true")
	fifo := filepath.Join(sharedTempDir(t), "fifo")
	if err := unix.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	zh, err := treeZygote.get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var b Batch
	b.Openat(AtFDCWD(), fifo, unix.O_RDONLY, 0)
	_, err = Spawn(ctx, nil, &b, trueExe, []string{"true"}, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("spawn blocked in its setup: %v, want deadline exceeded", err)
	}
	if zh2, _ := treeZygote.get(context.Background()); zh2 != zh {
		t.Errorf("the zygote was replaced after a cancelled spawn")
	}
	p, err := Spawn(context.Background(), nil, nil, trueExe, []string{"true"}, nil)
	if err != nil {
		t.Fatalf("spawn after a cancelled one: %v", err)
	}
	if st, err := p.Wait(context.Background()); err != nil || !st.Success() {
		t.Errorf("spawn after a cancelled one: %v %v", st, err)
	}
	p.Close()
	if z := zombies(); len(z) > 0 {
		t.Errorf("zombies left: %v", z)
	}
}

// TestSpawnFromHandle spawns inside a handle that is a pid namespace's
// init (the fast way, the handle waits) and inside a plain one (the slow
// way: its parent, the zygote, must track the child first).
func TestSpawnFromHandle(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, &Options{NewPID: true, NewUser: os.Getuid() != 0})
	out, code := spawnOutput(t, func(b *Batch, exe *os.File, argv []string) (*pidfd.Process, error) {
		return h.Spawn(ctx, nil, b, exe, argv, nil)
	}, `echo $$ $PPID`)
	if out != "2 1\n" || code != 0 {
		t.Errorf("spawned in a pid namespace's init: %q (exit %d), want pid 2 and parent 1", out, code)
	}
	if _, err := h.Getpid(ctx); err != nil {
		t.Errorf("handle after spawning from it: %v", err)
	}
	// SpawnPath looks the path up in the child, after its setup.
	var cd Batch
	cd.Chdir("/")
	p, err := h.SpawnPath(ctx, nil, &cd, "bin/sh", []string{"sh", "-c", "exit 6"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := p.Wait(ctx); err != nil || st.Code != 6 {
		t.Errorf("SpawnPath of a path relative to the setup's directory: %v %v, want exit 6", st, err)
	}
	p.Close()
	var pe *os.PathError
	if _, err := h.SpawnPath(ctx, nil, nil, "/nonexistent/prog", []string{"x"}, nil); !errors.As(err, &pe) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("SpawnPath of a missing file: %v, want a PathError ENOENT", err)
	}
	plain := fork(t, nil)
	out, code = spawnOutput(t, func(b *Batch, exe *os.File, argv []string) (*pidfd.Process, error) {
		return plain.Spawn(ctx, nil, b, exe, argv, nil)
	}, `exit 5`)
	if out != "" || code != 5 {
		t.Errorf("spawned in a plain handle: %q (exit %d), want exit 5", out, code)
	}
	// NewUser takes the slow way too: the ID maps are written from outside.
	out, code = spawnOutput(t, func(b *Batch, exe *os.File, argv []string) (*pidfd.Process, error) {
		return Spawn(ctx, &Options{NewUser: true}, b, exe, argv, nil)
	}, `id -u`)
	if out != "0\n" || code != 0 {
		t.Errorf("spawned in a new user namespace: %q (exit %d), want uid 0", out, code)
	}
}

// TestSpawnCredentialsLeaveZygoteDumpable changes the child's uid in its
// setup. The kernel makes the memory undumpable then, and the child
// shares the zygote's until it execs: the zygote must be dumpable again
// after, or the /proc files of everything it forks would be root's.
func TestSpawnCredentialsLeaveZygoteDumpable(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("changing uid needs root")
	}
	ctx := context.Background()
	trueExe := openExe(t, "/bin/true")
	dumpable := func() int {
		zh, err := treeZygote.get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var q Batch
		d := q.Prctl(unix.PR_GET_DUMPABLE, Int(0), Int(0), Int(0), Int(0))
		res, err := zh.Run(ctx, &q)
		if err != nil {
			t.Fatal(err)
		}
		return res.Int(d)
	}
	// The test binary may be undumpable already (os/exec with a
	// Credential, as AlsoAsNobody uses, does that to its caller), and the
	// zygote with it: make the zygote dumpable first.
	zh, err := treeZygote.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var set Batch
	set.Prctl(unix.PR_SET_DUMPABLE, Int(1), Int(0), Int(0), Int(0))
	if _, err := zh.Run(ctx, &set); err != nil {
		t.Fatal(err)
	}
	if d := dumpable(); d != 1 {
		t.Fatalf("zygote's dumpable before: %d", d)
	}
	var b Batch
	b.Setresuid(65534, 65534, 65534)
	p, err := Spawn(ctx, nil, &b, trueExe, []string{"true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Wait(ctx)
	p.Close()
	if d := dumpable(); d != 1 {
		t.Errorf("zygote's dumpable after a spawn that changed uid: %d, want 1", d)
	}
}

// TestZygoteKeepsTLS checks that the zygote kept the page its forking
// thread's TLS slot is on: without it, opSpawn's child and the zygote
// fault on the g register's reload around the assembly that switches
// stacks — only sometimes, as the slot lives in the Go heap.
func TestZygoteKeepsTLS(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the slot is read only on amd64")
	}
	zh, err := treeZygote.get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if zh.tls == 0 {
		t.Fatal("the zygote's TLS slot was not found")
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", zh.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(maps), "\n") {
		lo, rest, _ := strings.Cut(line, "-")
		hi, _, _ := strings.Cut(rest, " ")
		l, err1 := strconv.ParseUint(lo, 16, 64)
		h, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 == nil && err2 == nil && uint64(zh.tls-8) >= l && uint64(zh.tls) <= h {
			return
		}
	}
	t.Errorf("the zygote's TLS slot %#x is not mapped in it:\n%s", zh.tls-8, maps)
}

func TestSpawnNoLeaks(t *testing.T) {
	alsoAsNobody(t)
	n := 10000
	if testing.Short() || raceBuild { // under race, Spawn forks: TestNoLeaks covers that
		n = 500
	}
	ctx := context.Background()
	trueExe := openExe(t, "/bin/true")
	cycle := func() {
		p, err := Spawn(ctx, nil, nil, trueExe, []string{"true"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := p.Wait(ctx); err != nil || !st.Success() {
			t.Fatal(st, err)
		}
		p.Close()
	}
	cycle()
	before := openFDs(t)
	for i := 0; i < n; i++ {
		cycle()
	}
	if after := openFDs(t); len(after) > len(before) {
		t.Errorf("after %d spawns the caller has %d fds, before %d: %v", n, len(after), len(before), after)
	}
	if z := zombies(); len(z) > 0 {
		t.Errorf("zombies left: %v", z)
	}
}

// TestSpawnSetns enters another user namespace in a spawn's setup: the
// child shares its parent's memory until it execs, and setns into a user
// namespace, which a threaded process may not do, works from it.
func TestSpawnSetns(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, &Options{NewUser: true})
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", h.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	out, code := spawnOutput(t, func(b *Batch, exe *os.File, argv []string) (*pidfd.Process, error) {
		b.Setns(b.PutFile(ns, -1), unix.CLONE_NEWUSER)
		return Spawn(ctx, nil, b, exe, argv, nil)
	}, `id -u`)
	if out != "0\n" || code != 0 {
		t.Errorf("spawned into another user namespace: %q (exit %d), want uid 0", out, code)
	}
}
