package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/rpc"
	"golang.org/x/sys/unix"
)

// serveClient serves a supervisor object of s to this process's own
// user and returns a client of it.
func serveClient(t *testing.T, s *Supervisor) *Client {
	t.Helper()
	srv := &rpc.Server{}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	svc := &Service{Sup: s, Server: srv}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	me := &unix.Ucred{Pid: int32(os.Getpid()), Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid())}
	if err := srv.ServeFile(context.Background(), os.NewFile(uintptr(fds[0]), "sup"), svc.NewHandler(me)); err != nil {
		t.Fatal(err)
	}
	c, err := rpc.NewClient(os.NewFile(uintptr(fds[1]), "sup"), rpc.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &Client{c}
}

func startOver(t *testing.T, c *Client, cl *CommandLine) *Handle {
	t.Helper()
	res, h, err := c.Start(context.Background(), cl)
	if err != nil || res.Error != "" {
		t.Fatalf("start: %v %+v", err, res)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func termSizeOf(t *testing.T, j *Job) Winsize {
	t.Helper()
	ws, err := unix.IoctlGetWinsize(int(j.in.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		t.Fatal(err)
	}
	return Winsize{Rows: ws.Row, Cols: ws.Col}
}

// TestAttachFaults: viewers of no size or a tiny one, and a client that
// goes in the middle of an attachment while the job writes fast.
func TestAttachFaults(t *testing.T) {
	testenv.AlsoAsNobody(t)
	s := newSup(t, Config{})
	c := serveClient(t, s)
	ctx := context.Background()
	cl := startLine("chatty", "while :; do echo chatter; done")
	cl.Args = append([]string{"--tty"}, cl.Args...)
	h := startOver(t, c, cl)
	j, err := s.Job("chatty")
	if err != nil {
		t.Fatal(err)
	}
	if ws := termSizeOf(t, j); ws != (Winsize{24, 80}) {
		t.Errorf("a job started with no size: %v, want 24x80", ws)
	}

	// A viewer with no size changes nothing; a tiny one gets its size.
	a, err := h.Attach(ctx, AttachArgs{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Writer {
		t.Fatal("no lease for the only viewer")
	}
	if ws := termSizeOf(t, j); ws != (Winsize{24, 80}) {
		t.Errorf("after a viewer of size 0x0: %v, want 24x80", ws)
	}
	if ok, err := a.Resize(ctx, Winsize{Rows: 1, Cols: 1}); !ok || err != nil {
		t.Fatalf("resize 1x1: %v %v", ok, err)
	}
	if ws := termSizeOf(t, j); ws != (Winsize{1, 1}) {
		t.Errorf("after a resize to 1x1: %v", ws)
	}
	if ok, _ := a.Resize(ctx, Winsize{}); !ok {
		t.Error("a 0x0 resize from the writer was refused")
	}
	if ws := termSizeOf(t, j); ws != (Winsize{1, 1}) {
		t.Errorf("after a 0x0 resize: %v, want 1x1 kept", ws)
	}

	// Another client watches; the writer's client goes mid-stream,
	// without detaching.
	b, err := h.Attach(ctx, AttachArgs{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Writer {
		t.Fatal("a second writer got the lease")
	}
	if ok, _ := b.Resize(ctx, Winsize{Rows: 50, Cols: 50}); ok {
		t.Error("a watcher set the size")
	}
	readUntil(t, a.Stream, "chatter")
	a.Stream.Close()
	a.Control.Close()
	if !testenv.Eventually(func() bool { st := j.Status(); return st.Viewers == 1 && !st.Writer }) {
		t.Fatalf("the gone viewer stays: %+v", j.Status())
	}
	if ok, err := b.Lease(ctx); !ok || err != nil {
		t.Errorf("the lease after its holder went: %v %v", ok, err)
	}
	if st := j.Status(); st.State != Running {
		t.Errorf("the job after its viewer went: %v", st.State)
	}
}

// TestCloseRevokesLent: closing a borrowed object cuts what was borrowed
// from it, and the viewers attached through it: else no revoke could
// reach them (the lender's goes through the object that was closed).
func TestCloseRevokesLent(t *testing.T) {
	s := newSup(t, Config{})
	c := serveClient(t, s)
	ctx := context.Background()
	h := startOver(t, c, startLine("svc", "echo started; sleep 1000"))
	b1, err := h.Borrow(ctx, "watch", "signal")
	if err != nil {
		t.Fatal(err)
	}
	b2, err := b1.Borrow(ctx, "watch", "signal")
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	a, err := b1.Attach(ctx, AttachArgs{Replay: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	readUntil(t, a.Stream, "started")
	b1.Close()
	if !testenv.Eventually(func() bool {
		_, err := b2.Status(ctx)
		return errors.Is(err, rpc.ErrRevoked)
	}) {
		_, err := b2.Status(ctx)
		t.Errorf("an object borrowed from a closed one: %v, want ErrRevoked", err)
	}
	a.Stream.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, a.Stream); err != nil {
		t.Errorf("a viewer attached through a closed object: %v, want its end", err)
	}
	// The owner's object still works.
	if _, err := h.Status(ctx); err != nil {
		t.Errorf("the owner's status: %v", err)
	}
}

// TestBorrowRevoke: a borrowed object has no more than the rights asked
// and its lender's; revoke cuts it, its attachments and what was
// borrowed from it.
func TestBorrowRevoke(t *testing.T) {
	s := newSup(t, Config{})
	c := serveClient(t, s)
	ctx := context.Background()
	h := startOver(t, c, startLine("svc", "echo started; sleep 1000"))
	w, err := h.Borrow(ctx, "watch", "input")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if r, _ := w.Rights(ctx); strings.Join(r, ",") != "watch,input" {
		t.Errorf("borrowed rights %v", r)
	}
	if err := w.Signal(ctx, int(unix.SIGTERM), true); !errors.Is(err, rpc.ErrDenied) {
		t.Errorf("signal without the right: %v, want ErrDenied", err)
	}
	if _, err := w.Stop(ctx, 0); !errors.Is(err, rpc.ErrDenied) {
		t.Errorf("stop without the right: %v, want ErrDenied", err)
	}
	// Borrowing more than it has gives no more.
	ww, err := w.Borrow(ctx, "all")
	if err != nil {
		t.Fatal(err)
	}
	defer ww.Close()
	if r, _ := ww.Rights(ctx); strings.Join(r, ",") != "watch,input" {
		t.Errorf("re-borrowed rights %v, want no more than watch,input", r)
	}
	a, err := w.Attach(ctx, AttachArgs{Write: true, Replay: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	readUntil(t, a.Stream, "started")
	logs, err := w.Logs(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	readUntil(t, logs, "started")
	// A watcher may not set the terminal's size, even with no writer.
	wo, err := h.Borrow(ctx, "watch")
	if err != nil {
		t.Fatal(err)
	}
	defer wo.Close()
	wa, err := wo.Attach(ctx, AttachArgs{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer wa.Close()
	if wa.Writer {
		t.Error("a watch-only object's viewer got the writer lease")
	}
	if ok, _ := wa.Resize(ctx, Winsize{Rows: 11, Cols: 22}); ok {
		t.Error("a watch-only object's viewer set the size")
	}
	if ok, _ := wa.Lease(ctx); ok {
		t.Error("a watch-only object's viewer took the lease")
	}

	if err := h.Revoke(ctx); err != nil {
		t.Fatal(err)
	}
	// What was obtained through the revoked objects ends too: the
	// follower of its logs, its attachments' control objects.
	logs.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, logs); err != nil {
		t.Errorf("the revoked object's logs: %v, want their end", err)
	}
	if _, err := a.Resize(ctx, Winsize{Rows: 33, Cols: 44}); err == nil {
		t.Error("a revoked attachment's control object still works")
	}
	if _, err := w.Status(ctx); !errors.Is(err, rpc.ErrRevoked) {
		t.Errorf("status after revoke: %v, want ErrRevoked", err)
	}
	if _, err := ww.Status(ctx); !errors.Is(err, rpc.ErrRevoked) {
		t.Errorf("what was borrowed from it, after revoke: %v, want ErrRevoked", err)
	}
	a.Stream.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, a.Stream); err != nil {
		t.Errorf("the revoked attachment's stream: %v, want its end", err)
	}
	// The owner goes on.
	if st, err := h.Status(ctx); err != nil || st.State != Running {
		t.Errorf("the owner after revoke: %+v %v", st, err)
	}
}

// TestNoLeaks: start, stop and remove cycles leave no fds, goroutines,
// children or memory behind in the supervisor. 10,000 cycles (300 with
// -short, 1,000 under the race detector).
func TestNoLeaks(t *testing.T) {
	n := 10000
	switch {
	case testing.Short():
		n = 300
	case raceEnabled:
		n = 1000
	}
	s := newSup(t, Config{})
	ctx := context.Background()
	cycle := func(i int) {
		req := shell(fmt.Sprint("c", i), "sleep 1000")
		req.TTY = i%2 == 0
		j, err := s.Start(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			v, conn, err := j.Attach(AttachOptions{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			conn.Close()
			<-v.Done()
		}
		if _, err := j.Stop(ctx, time.Second); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(j.Name()); err != nil {
			t.Fatal(err)
		}
	}
	// Warm up: the zygote, the runtime's threads and pools.
	for i := range 20 {
		cycle(i)
	}
	fds, gs := testenv.OpenFDs(t), runtime.NumGoroutine()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	for i := 20; i < 20+n; i++ {
		cycle(i)
	}
	t.Logf("%d cycles in %v (%v each)", n, time.Since(start), time.Since(start)/time.Duration(n))
	testenv.WaitFDs(t, fds)
	if !testenv.Eventually(func() bool { return runtime.NumGoroutine() <= gs }) {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d, were %d\n%s", runtime.NumGoroutine(), gs, buf[:runtime.Stack(buf, true)])
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 2<<20 {
		t.Errorf("the heap grew by %d KiB over %d cycles", grown>>10, n)
	}
	if len(s.Jobs()) != 0 {
		t.Errorf("%d jobs left", len(s.Jobs()))
	}
	// No child is left unreaped: every process of every job was waited
	// for.
	var si unix.Siginfo
	if err := unix.Waitid(unix.P_ALL, 0, &si, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err == nil && si.Signo != 0 {
		t.Errorf("a zombie child is left: %+v", si)
	}
}

// TestRunWarm: runs through the supervisor use one template per sandbox
// and get their standard fds; a signal sent on the control object
// reaches the program, which dies of it as at a terminal.
func TestRunWarm(t *testing.T) {
	testenv.AlsoAsNobody(t)
	s := newSup(t, Config{})
	c := serveClient(t, s)
	ctx := context.Background()
	run := func(script string, ctl *os.File, out *os.File) RunResult {
		t.Helper()
		cl := startLine("", script).Args[2:] // without --name
		a := RunArgs{CommandLine: CommandLine{Args: cl, Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/"}}
		if out != nil {
			a.Stdout = rpc.NewFD(out)
		}
		if ctl != nil {
			a.Control = rpc.NewFD(ctl)
		}
		var res RunResult
		if err := c.Call(ctx, "run", a, &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if res := run(fmt.Sprintf("echo run %d; exit %d", i, i), nil, w); res.Code != i || res.Error != "" || res.Local != "" {
			t.Errorf("run %d: %+v", i, res)
		}
	}
	w.Close()
	out, _ := io.ReadAll(r)
	if string(out) != "run 0\nrun 1\nrun 2\n" {
		t.Errorf("output %q", out)
	}
	s.warm.mu.Lock()
	n := len(s.warm.templates)
	s.warm.mu.Unlock()
	if n != 1 {
		t.Errorf("%d templates for one sandbox, want 1", n)
	}

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := rpc.NewClient(os.NewFile(uintptr(fds[0]), "ctl"), rpc.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	go func() {
		time.Sleep(300 * time.Millisecond)
		ctl.Call(ctx, "signal", SignalRunArgs{Signal: int(unix.SIGINT)}, nil)
	}()
	res := run("sleep 100", os.NewFile(uintptr(fds[1]), "ctl"), nil)
	if res.Code != 130 || res.Relayed != int(unix.SIGINT) {
		t.Errorf("a run sent SIGINT: %+v, want code 130, relayed SIGINT", res)
	}
	// What a template cannot give is the client's to run.
	cl := CommandLine{Args: []string{"--keep-session", "--system", "--", "true"}, Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/"}
	var lres RunResult
	if err := c.Call(ctx, "run", RunArgs{CommandLine: cl}, &lres); err != nil || lres.Local == "" {
		t.Errorf("--keep-session: %+v %v, want Local", lres, err)
	}
}
