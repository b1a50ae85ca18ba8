package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/proc"
	"github.com/caplin-dev/caplin/sandbox"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(envDaemon); path != "" {
		runDaemon(path)
	}
	if _, ok := os.LookupEnv("GORACE"); !ok {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	code := m.Run()
	proc.Shutdown(context.Background())
	os.Exit(code)
}

// testSpec is a sandbox that runs the system's programs and nothing else.
func testSpec() *sandbox.Spec {
	spec := &sandbox.Spec{Env: []string{"PATH=/usr/bin:/bin"}, BestEffort: true}
	for _, d := range []string{"/usr", "/bin", "/lib", "/lib64", "/sbin"} {
		spec.Mounts = append(spec.Mounts, sandbox.Mount{Kind: sandbox.ROBind, Source: d, Dest: d, Try: true})
	}
	spec.Mounts = append(spec.Mounts, sandbox.Mount{Kind: sandbox.Proc, Dest: "/proc"}, sandbox.Mount{Kind: sandbox.Dev, Dest: "/dev"})
	return spec
}

// shell is a request to run script with sh.
func shell(name, script string) *StartRequest {
	return &StartRequest{Name: name, Program: Program{Spec: testSpec(), Path: "sh", Argv: []string{"sh", "-c", script}}}
}

func newSup(t *testing.T, cfg Config) *Supervisor {
	t.Helper()
	s := New(cfg)
	t.Cleanup(func() { s.Close() })
	return s
}

// readUntil reads r until what it read contains want, for at most 10 s.
func readUntil(t *testing.T, r io.Reader, want string) string {
	t.Helper()
	var got bytes.Buffer
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			got.Write(buf[:n])
			if strings.Contains(got.String(), want) {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("reading for %q: %v; read %q", want, err, got.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no %q within 10 s", want)
	}
	return got.String()
}

func wait(t *testing.T, j *Job) *Exit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ex, err := j.Wait(ctx)
	if err != nil {
		t.Fatalf("waiting for %s: %v", j.Name(), err)
	}
	return ex
}

// TestStartWaitLogs starts a job that writes and exits: its output is
// kept after it ended, with its status, until it is removed.
func TestStartWaitLogs(t *testing.T) {
	testenv.AlsoAsNobody(t)
	s := newSup(t, Config{})
	ctx := context.Background()
	j, err := s.Start(ctx, shell("", "echo hello; echo oops >&2; exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	if j.Name() != "sh-1" {
		t.Errorf("name %q, want sh-1", j.Name())
	}
	ex := wait(t, j)
	if ex.Code != 3 || ex.Stopped {
		t.Errorf("exit %+v, want code 3", ex)
	}
	out, _ := io.ReadAll(j.Output(ctx, false))
	if string(out) != "hello\noops\n" {
		t.Errorf("output %q", out)
	}
	st := j.Status()
	if st.State != Exited || st.Pid != 0 || st.Exit == nil || st.Exit.Code != 3 {
		t.Errorf("status %+v", st)
	}
	if _, err := s.Start(ctx, shell("sh-1", "true")); !errors.Is(err, ErrExists) {
		t.Errorf("a second sh-1: %v, want ErrExists", err)
	}
	if err := s.Remove("sh-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Job("sh-1"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("removed job: %v", err)
	}
}

// TestStartFails: a program that is not there is a StartError with
// caplin run's status, and no job is kept.
func TestStartFails(t *testing.T) {
	s := newSup(t, Config{})
	req := shell("x", "")
	req.Program.Path, req.Program.Argv = "no-such-program", []string{"no-such-program"}
	_, err := s.Start(context.Background(), req)
	var se *StartError
	if !errors.As(err, &se) || se.Code != 127 {
		t.Fatalf("start: %v, want a StartError of code 127", err)
	}
	if len(s.Jobs()) != 0 {
		t.Errorf("jobs left: %d", len(s.Jobs()))
	}
	for _, name := range []string{"-x", ".x", "a/b", strings.Repeat("a", 65), "a b"} {
		if _, err := s.Start(context.Background(), shell(name, "true")); !errors.Is(err, unix.EINVAL) {
			t.Errorf("name %q: %v, want EINVAL", name, err)
		}
	}
}

// TestStopWholeTree: stop reaches a double-forked daemon that left the
// program's session, and the program, with SIGTERM; what ignores it is
// killed after the grace.
func TestStopWholeTree(t *testing.T) {
	testenv.AlsoAsNobody(t)
	s := newSup(t, Config{})
	ctx := context.Background()
	marker := "caplin-sup-test-" + strconv.Itoa(os.Getpid())
	// The daemon ignores TERM: only the KILL after the grace ends it.
	script := `(setsid sh -c 'trap "" TERM; sleep 1000; true' ` + marker + ` &) ; trap 'echo got-term; exit 7' TERM; echo up; while :; do sleep 0.05; done`
	j, err := s.Start(ctx, shell("tree", script))
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, j.Output(ctx, true), "up")
	if !testenv.Eventually(func() bool { return len(testenv.LivePids(match(marker))) >= 1 }) {
		t.Fatal("the daemon did not start")
	}
	start := time.Now()
	ex, err := j.Stop(ctx, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if ex.Code != 7 || !ex.Stopped {
		t.Errorf("exit %+v, want 7, stopped", ex)
	}
	if !testenv.Eventually(func() bool { return len(testenv.LivePids(match(marker))) == 0 }) {
		t.Errorf("the daemon outlived stop: %v", testenv.LivePids(match(marker)))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stop took %v", d)
	}
	out, _ := io.ReadAll(j.Output(ctx, false))
	if !strings.Contains(string(out), "got-term") {
		t.Errorf("output %q: the program did not get TERM", out)
	}
}

func match(marker string) func([]byte) bool {
	return func(cmdline []byte) bool { return bytes.Contains(cmdline, []byte(marker)) }
}

// TestTTY: a job with a terminal has it as its controlling terminal, at
// the size asked; an attached writer types into it and sees its echo,
// and a resize reaches the program.
func TestTTY(t *testing.T) {
	testenv.AlsoAsNobody(t)
	s := newSup(t, Config{})
	ctx := context.Background()
	req := shell("term", `stty size; tty >/dev/null && echo tty-ok; read line; echo "got:$line"; trap 'stty size' WINCH; echo ready; while :; do sleep 0.05; done`)
	req.TTY, req.Size = true, Winsize{Rows: 30, Cols: 100}
	j, err := s.Start(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	v, conn, err := j.Attach(AttachOptions{Write: true, Replay: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if !v.Writer() {
		t.Fatal("the only viewer has no lease")
	}
	readUntil(t, conn, "30 100")
	conn.Write([]byte("abc\n"))
	got := readUntil(t, conn, "ready")
	if !strings.Contains(got, "abc\r\n") || !strings.Contains(got, "got:abc") {
		t.Errorf("output %q: no echo of the input, or the program did not read it", got)
	}
	if ok, err := v.Resize(Winsize{Rows: 40, Cols: 120}); !ok || err != nil {
		t.Fatalf("resize: %v %v", ok, err)
	}
	readUntil(t, conn, "40 120")
	// The terminal is the controlling one: ^C in its input reaches the
	// program's process group.
	conn.Write([]byte{3})
	ex := wait(t, j)
	if ex.Signal != int(unix.SIGINT) {
		t.Errorf("exit %+v, want killed by SIGINT (^C)", ex)
	}
}

// TestViewers: two writers race for the lease and one wins; a viewer
// without it watches and its input is dropped; a viewer that does not
// read does not hold the program back, and when it reads again is told
// what it missed; a viewer that goes frees the lease.
func TestViewers(t *testing.T) {
	s := newSup(t, Config{Scrollback: 64 << 10})
	ctx := context.Background()
	req := shell("cat", `while read l; do echo "in:$l"; done`)
	j, err := s.Start(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	vs := make([]*Viewer, 2)
	conns := make([]*os.File, 2)
	for i := range vs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			vs[i], conns[i], err = j.Attach(AttachOptions{Write: true})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if vs[0].Writer() == vs[1].Writer() {
		t.Fatalf("leases: %v %v, want exactly one", vs[0].Writer(), vs[1].Writer())
	}
	w, r := 0, 1
	if vs[1].Writer() {
		w, r = 1, 0
	}
	conns[r].Write([]byte("from-watcher\n"))
	conns[w].Write([]byte("from-writer\n"))
	got := readUntil(t, conns[r], "in:from-writer")
	if strings.Contains(got, "from-watcher") {
		t.Errorf("the watcher's input reached the program: %q", got)
	}
	// The writer goes: the lease is free for the other.
	conns[w].Close()
	<-vs[w].Done()
	if !vs[r].Lease() {
		t.Error("the lease is not free after its holder went")
	}
	// A job that writes 1 MiB while a viewer reads nothing: it is not
	// held back, and the viewer learns what it lost.
	big, err := s.Start(ctx, shell("big", `head -c 1048576 /dev/zero | tr '\0' x; echo; echo done-writing`))
	if err != nil {
		t.Fatal(err)
	}
	_, lazy, err := big.Attach(AttachOptions{Replay: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer lazy.Close()
	if ex := wait(t, big); ex.Code != 0 {
		t.Fatalf("the writer: %+v", ex)
	}
	got = readUntil(t, lazy, "done-writing")
	if !strings.Contains(got, "bytes of output dropped") {
		t.Errorf("the lazy viewer was not told what it missed")
	}
	all, _ := io.ReadAll(big.Output(ctx, false))
	if len(all) != 64<<10 {
		t.Errorf("history %d bytes, want the bound %d", len(all), 64<<10)
	}
}

// TestRestart: on-failure starts a failing program again with a growing
// backoff, and stop ends it for good, also while it waits.
func TestRestart(t *testing.T) {
	s := newSup(t, Config{})
	ctx := context.Background()
	req := shell("flaky", "echo run; exit 1")
	req.Restart = RestartAlways
	j, err := s.Start(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1 * time.Second)
	// 100 + 200 + 400 ms of backoff fit in a second, the next 800 do
	// not: at most 3 restarts in the first second (4 with a slow clock),
	// however fast the program exits.
	if st := j.Status(); st.Restarts > 4 {
		t.Errorf("%d restarts in 1 s, want at most 4 (the backoff bounds the rate)", st.Restarts)
	}
	if !testenv.Eventually(func() bool { return j.Status().Restarts >= 2 }) {
		t.Errorf("%d restarts, want it started again", j.Status().Restarts)
	}
	ex, err := j.Stop(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !ex.Stopped {
		t.Errorf("exit %+v: not marked stopped", ex)
	}
	n := j.Status().Restarts
	time.Sleep(500 * time.Millisecond)
	if j.Status().Restarts != n || j.Status().State != Exited {
		t.Errorf("restarted after stop: %+v", j.Status())
	}
}

// TestFlood: starts past the bounds fail at once with EAGAIN.
func TestFlood(t *testing.T) {
	s := newSup(t, Config{MaxJobs: 3, MaxStarting: 2})
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, busy int
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Start(ctx, shell(fmt.Sprint("f", i), "sleep 100"))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, unix.EAGAIN):
				busy++
			default:
				t.Errorf("start %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if ok < 1 || ok > 3 || ok+busy != 8 {
		t.Errorf("%d started, %d refused; want 1 to 3 started and the rest refused", ok, busy)
	}
}

// TestValidName: job names are plain words, and "new", the job files'
// directory of jobs being built, is not one.
func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{"web": true, "a.b_c-1": true, "new": false, "news": true, "": false, ".x": false, "-x": false, "a/b": false, "a b": false} {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestDetachWhileInputBlocked: a viewer that detaches (closes its
// stream) while the job does not read its input (its pipe full) ends,
// leaves no goroutine behind, blocked writing its input to the job, and
// frees its writer lease.
func TestDetachWhileInputBlocked(t *testing.T) {
	s := newSup(t, Config{})
	ctx := context.Background()
	j, err := s.Start(ctx, shell("deaf", `exec sleep 100000`))
	if err != nil {
		t.Fatal(err)
	}
	v, conn, err := j.Attach(AttachOptions{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	inputs := func() int {
		// All of the goroutines' stacks: earlier tests' may fill a
		// small buffer.
		buf := make([]byte, 1<<20)
		for {
			if n := runtime.Stack(buf, true); n < len(buf) {
				return strings.Count(string(buf[:n]), "(*Viewer).input(")
			}
			buf = make([]byte, 2*len(buf))
		}
	}
	before := inputs()
	for until := time.Now().Add(5 * time.Second); before == 0 && time.Now().Before(until); before = inputs() {
		time.Sleep(10 * time.Millisecond) // the viewer's goroutines starting
	}
	if before == 0 {
		t.Fatal("no viewer input goroutine to see")
	}
	// More than the job's input pipe and the viewer's socket hold,
	// written without blocking, so that nothing of the test's holds the
	// stream open when it is closed.
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for range 50 {
		raw.Control(func(fd uintptr) {
			unix.SetNonblock(int(fd), true)
			for {
				if _, err := unix.Write(int(fd), chunk); err != nil {
					break
				}
			}
		})
		time.Sleep(10 * time.Millisecond)
	}
	// Detached as caplin attach detaches: its end closed.
	conn.Close()
	select {
	case <-v.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the viewer did not end when its stream was closed")
	}
	deadline := time.Now().Add(5 * time.Second)
	for inputs() >= before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := inputs(); n >= before {
		t.Errorf("%d viewer input goroutines after the detach, %d before", n, before)
	}
	// Its lease is free for the next viewer.
	v2, conn2, err := j.Attach(AttachOptions{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	if !v2.Writer() {
		t.Error("the next viewer did not get the writer lease")
	}
}
