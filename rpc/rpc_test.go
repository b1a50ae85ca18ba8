package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type echoArgs struct {
	Text string
	N    int
}

type echoResult struct {
	Text string
	N    int
}

type pipeArgs struct {
	W    FD
	Text string
}

type fileResult struct {
	F    FD
	Name string
}

// testHandler is a small service that exercises every kind of argument.
func testHandler(t testing.TB) Methods {
	return Methods{
		"echo": Method(func(ctx context.Context, a echoArgs) (echoResult, error) {
			return echoResult{Text: a.Text, N: a.N + 1}, nil
		}),
		// write writes Text to the pipe it was given, then closes it.
		"write": Method(func(ctx context.Context, a pipeArgs) (struct{}, error) {
			defer a.W.Close()
			if a.W.File == nil {
				return struct{}{}, Errorf(CodeInvalid, "no fd")
			}
			_, err := io.WriteString(a.W.File, a.Text)
			return struct{}{}, err
		}),
		// memfd returns a new memfd holding Text.
		"memfd": Method(func(ctx context.Context, a echoArgs) (fileResult, error) {
			fd, err := unix.MemfdCreate("rpc-test", unix.MFD_CLOEXEC)
			if err != nil {
				return fileResult{}, err
			}
			f := os.NewFile(uintptr(fd), "memfd")
			f.WriteString(a.Text)
			return fileResult{F: FD{File: f}, Name: "memfd"}, nil
		}),
		"stat": Method(func(ctx context.Context, path string) (int64, error) {
			fi, err := os.Stat(path)
			if err != nil {
				return 0, err
			}
			return fi.Size(), nil
		}),
		"sleep": Method(func(ctx context.Context, d time.Duration) (string, error) {
			select {
			case <-time.After(d):
				return "slept", nil
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}),
		// sub returns a new object served by the same methods.
		"sub": func(ctx context.Context, call *Call) (any, error) {
			return call.Server.NewObject(context.Background(), testHandler(t))
		},
		"panic": func(ctx context.Context, call *Call) (any, error) {
			panic("boom")
		},
	}
}

// pair starts a server for h on one end of a socket pair and returns a
// Client for the other end.
func pair(t testing.TB, h Handler) (*Client, *Server) {
	t.Helper()
	return pairWith(t, &Server{}, h)
}

// pairWith is pair with a given Server.
func pairWith(t testing.TB, srv *Server, h Handler) (*Client, *Server) {
	t.Helper()
	c, stop := newPair(t, srv, h)
	t.Cleanup(stop)
	return c, srv
}

// newPair is pairWith without the cleanup: stop closes the client and
// shuts the server down.
func newPair(t testing.TB, srv *Server, h Handler) (c *Client, stop func()) {
	t.Helper()
	c, err := NewClient(os.NewFile(uintptr(serveEnd(t, srv, h)), "client"), ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c, func() {
		c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}
}

// serveEnd serves h with srv on one end of a new socket pair, and returns
// the other end.
func serveEnd(t testing.TB, srv *Server, h Handler) int {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.ServeFile(context.Background(), os.NewFile(uintptr(fds[1]), "server"), h); err != nil {
		t.Fatal(err)
	}
	return fds[0]
}

func TestEcho(t *testing.T) {
	c, _ := pair(t, testHandler(t))
	var r echoResult
	if err := c.Call(context.Background(), "echo", echoArgs{Text: "hi", N: 41}, &r); err != nil {
		t.Fatal(err)
	}
	if r.Text != "hi" || r.N != 42 {
		t.Fatalf("echo = %+v", r)
	}
}

func TestFDToServer(t *testing.T) {
	c, _ := pair(t, testHandler(t))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := c.Call(context.Background(), "write", pipeArgs{W: FD{File: w}, Text: "through the fd"}, nil); err != nil {
		t.Fatal(err)
	}
	w.Close() // the caller keeps its own file
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "through the fd" {
		t.Fatalf("read %q, %v", b, err)
	}
}

func TestFDFromServer(t *testing.T) {
	c, _ := pair(t, testHandler(t))
	var r fileResult
	if err := c.Call(context.Background(), "memfd", echoArgs{Text: "in a memfd"}, &r); err != nil {
		t.Fatal(err)
	}
	defer r.F.Close()
	if r.F.File == nil || r.Name != "memfd" {
		t.Fatalf("result %+v", r)
	}
	b := make([]byte, 64)
	n, err := r.F.File.ReadAt(b, 0)
	if string(b[:n]) != "in a memfd" {
		t.Fatalf("read %q, %v", b[:n], err)
	}
	// The descriptor is close-on-exec on this side too.
	flags, err := unix.FcntlInt(r.F.File.Fd(), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("F_GETFD = %#x, %v; want FD_CLOEXEC", flags, err)
	}
}

func TestErrors(t *testing.T) {
	c, _ := pair(t, testHandler(t))
	ctx := context.Background()

	err := c.Call(ctx, "nope", nil, nil)
	if !errors.Is(err, ErrUnknownMethod) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("unknown method: %v", err)
	}
	err = c.Call(ctx, "stat", "/does/not/exist", new(int64))
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), "stat: stat /does/not/exist") {
		t.Errorf("stat of a missing file: %v", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeFailed || e.Method != "stat" {
		t.Errorf("stat error %#v", err)
	}
	// Wrong argument type: the handler never runs.
	err = c.Call(ctx, "echo", "a string", nil)
	if !errors.Is(err, ErrBadMessage) {
		t.Errorf("wrong argument type: %v", err)
	}
	// Unknown field: rejected, not silently dropped.
	err = c.Call(ctx, "echo", struct{ Text, Extra string }{"a", "b"}, nil)
	if !errors.Is(err, ErrBadMessage) {
		t.Errorf("unknown field: %v", err)
	}
	err = c.Call(ctx, "panic", nil, nil)
	if !errors.Is(err, &Error{Code: CodeFailed}) || !strings.Contains(err.Error(), "internal error") {
		t.Errorf("panic: %v", err)
	}
	err = c.Call(ctx, "write", pipeArgs{}, nil)
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("write without an fd: %v", err)
	}
	// The object still works after all that.
	var r echoResult
	if err := c.Call(ctx, "echo", echoArgs{N: 1}, &r); err != nil || r.N != 2 {
		t.Fatalf("echo after errors: %+v, %v", r, err)
	}
}

func TestNewObject(t *testing.T) {
	c, _ := pair(t, testHandler(t))
	var sub FD
	if err := c.Call(context.Background(), "sub", nil, &sub); err != nil {
		t.Fatal(err)
	}
	sc, err := NewClient(sub.File, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	var r echoResult
	if err := sc.Call(context.Background(), "echo", echoArgs{N: 9}, &r); err != nil || r.N != 10 {
		t.Fatalf("echo on the new object: %+v, %v", r, err)
	}
}

func TestCancel(t *testing.T) {
	c, _ := pair(t, testHandler(t))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var s string
	err := c.Call(ctx, "sleep", time.Hour, &s)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call = %v, want DeadlineExceeded", err)
	}
	if err := c.Call(context.Background(), "sleep", time.Millisecond, &s); err != nil || s != "slept" {
		t.Fatalf("sleep after a cancelled call: %q, %v", s, err)
	}
}

func TestConcurrent(t *testing.T) {
	c, _ := pair(t, testHandler(t))
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				var r echoResult
				if err := c.Call(context.Background(), "echo", echoArgs{N: g*1000 + i}, &r); err != nil || r.N != g*1000+i+1 {
					t.Errorf("echo %d: %+v, %v", g*1000+i, r, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
}

// TestSentinels: the sentinels are codes (constants no importer can
// change), an *Error matches the sentinel of its code and no other, and
// every closed error matches fs.ErrClosed.
func TestSentinels(t *testing.T) {
	for _, code := range []Code{ErrUnknownMethod, ErrBadMessage, ErrTooBig, ErrTooManyFDs, ErrRevoked, ErrClosed, ErrDenied, ErrInvalid} {
		e := error(&Error{Code: code, Text: "x", Method: "m"})
		if !errors.Is(e, code) || !errors.Is(fmt.Errorf("wrapped: %w", e), code) {
			t.Errorf("%v does not match its sentinel %v", e, code)
		}
		if errors.Is(e, CodeFailed) {
			t.Errorf("%v matches CodeFailed", e)
		}
		if got, want := errors.Is(e, fs.ErrClosed), code == CodeClosed; got != want {
			t.Errorf("errors.Is(%v (code %d), fs.ErrClosed) = %v", e, code, got)
		}
	}
	if !errors.Is(ErrClosed, fs.ErrClosed) || errors.Is(ErrDenied, fs.ErrClosed) {
		t.Error("the sentinels and fs.ErrClosed disagree")
	}
	if got := ErrDenied.Error(); got != "rpc: denied" {
		t.Errorf("ErrDenied.Error() = %q", got)
	}
	// A closed client's calls and Err match fs.ErrClosed.
	c, _ := pair(t, testHandler(t))
	c.Close()
	if err := c.Call(context.Background(), "echo", echoArgs{}, nil); !errors.Is(err, fs.ErrClosed) || !errors.Is(err, ErrClosed) {
		t.Errorf("call on a closed client: %v, want fs.ErrClosed", err)
	}
	if err := c.Err(); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("Err of a closed client: %v, want fs.ErrClosed", err)
	}
}

func TestServerGone(t *testing.T) {
	c, srv := pair(t, testHandler(t))
	done := make(chan error, 1)
	go func() { done <- c.Call(context.Background(), "sleep", time.Hour, new(string)) }()
	time.Sleep(20 * time.Millisecond)
	srv.Shutdown(context.Background())
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("call in flight when the server shut down: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("call in flight did not fail when the server shut down")
	}
	if err := c.Call(context.Background(), "echo", echoArgs{}, nil); !errors.Is(err, ErrClosed) || !errors.Is(err, fs.ErrClosed) {
		t.Fatalf("call after shutdown: %v", err)
	}
}

func TestFailObject(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(os.NewFile(uintptr(fds[0]), "client"), ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	Fail(os.NewFile(uintptr(fds[1]), "server"), &os.PathError{Op: "open", Path: "x", Err: syscall.ENOENT})
	err = c.Call(context.Background(), "echo", nil, nil)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "open x") {
		t.Fatalf("call on a failed object: %v", err)
	}
}

func TestNotSeqpacket(t *testing.T) {
	r, w, _ := os.Pipe()
	defer w.Close()
	if _, err := NewClient(r, ClientOptions{}); !errors.Is(err, syscall.ENOTSOCK) || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("NewClient(pipe) = %v", err)
	}
	fds, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	unix.Close(fds[1])
	if _, err := NewClient(os.NewFile(uintptr(fds[0]), "stream"), ClientOptions{}); err == nil || !strings.Contains(err.Error(), "SOCK_SEQPACKET") {
		t.Fatalf("NewClient(stream socket) = %v", err)
	}
}

func TestCallAny(t *testing.T) {
	c, _ := pair(t, testHandler(t))
	v, err := c.CallAny(context.Background(), "memfd", map[string]any{"Text": "any"})
	if err != nil {
		t.Fatal(err)
	}
	m, ok := v.(map[any]any)
	if !ok || m["Name"] != "memfd" {
		t.Fatalf("result %#v", v)
	}
	fd, ok := m["F"].(FD)
	if !ok || fd.File == nil {
		t.Fatalf("F = %#v, want an FD", m["F"])
	}
	defer fd.Close()
	b := make([]byte, 8)
	if n, _ := fd.File.ReadAt(b, 0); string(b[:n]) != "any" {
		t.Fatalf("memfd holds %q", b[:n])
	}
	if _, err := c.CallAny(context.Background(), "stat", "/does/not/exist"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("CallAny error: %v", err)
	}
}

func TestMaxConcurrent(t *testing.T) {
	const limit = 2
	b := newBlocker()
	c, _ := pairWith(t, &Server{MaxConcurrent: limit}, b)
	var wg sync.WaitGroup
	for i := 0; i < 3*limit; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Call(context.Background(), "block", nil, nil); err != nil {
				t.Error(err)
			}
		}()
	}
	// Give the calls beyond the bound time to start if they could.
	time.Sleep(100 * time.Millisecond)
	if n, _ := b.counts(); n != limit {
		t.Errorf("%d calls running, want MaxConcurrent = %d", n, limit)
	}
	close(b.release)
	wg.Wait()
	if _, most := b.counts(); most != limit {
		t.Errorf("at most %d calls ran at once, want %d", most, limit)
	}
}

// TestShutdownDeadline: peers that read nothing cannot make Shutdown take
// much longer than one of them would.
func TestShutdownDeadline(t *testing.T) {
	srv := &Server{}
	h := Methods{"echo": Method(func(ctx context.Context, a echoArgs) (echoResult, error) { return echoResult(a), nil })}
	for range 20 {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fds[0])
		if err := srv.ServeFile(context.Background(), os.NewFile(uintptr(fds[1]), "server"), h); err != nil {
			t.Fatal(err)
		}
		// Fill the server's send buffer: calls whose replies nobody reads.
		msg := append(appendHeader(nil, kindCall, 0, 1), must(encMode.Marshal("echo"))...)
		msg = append(msg, must(encMode.Marshal(echoArgs{Text: strings.Repeat("x", 4000)}))...)
		for range 200 {
			if unix.Sendmsg(fds[0], msg, nil, nil, unix.MSG_DONTWAIT) != nil {
				break
			}
		}
	}
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Shutdown with 20 peers that read nothing took %v", d)
	}
}

// TestCallContextWhileSendBlocks: a server that reads nothing fills the
// socket, and a call's send then blocks; the call still ends with its
// context, having sent nothing, and its context's end interrupts no other
// caller's send, which goes on once the server reads.
func TestCallContextWhileSendBlocks(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	server := fds[1]
	defer unix.Close(server)
	c, err := NewClient(os.NewFile(uintptr(fds[0]), "client"), ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Fill the socket: calls whose contexts end while they wait for
	// replies that never come, until the socket has no room for another
	// such message.
	big := strings.Repeat("x", 32<<10)
	filled := false
	for i := 0; i < 1000 && !filled; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		start := time.Now()
		err := c.Call(ctx, "echo", big, nil)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("call %d: %v, want DeadlineExceeded", i, err)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("call %d took %v: its context did not end it", i, time.Since(start))
		}
		// A probe past the client (which sends through a duplicate
		// of fds[0], closed by NewClient).
		rc, _ := c.c.c.SyscallConn()
		rc.Control(func(fd uintptr) {
			_, err = unix.SendmsgN(int(fd), []byte(big), nil, nil, unix.MSG_DONTWAIT)
		})
		filled = errors.Is(err, unix.EAGAIN)
	}
	if !filled {
		t.Fatal("the socket never filled")
	}
	// Now a long call waits to send, and a short one behind it ends.
	long, cancelLong := context.WithCancel(context.Background())
	longErr := make(chan error, 1)
	go func() { longErr <- c.Call(long, "last", nil, nil) }()
	time.Sleep(20 * time.Millisecond)
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Call(short, "echo", "x", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("short call: %v, want DeadlineExceeded", err)
	}
	select {
	case err := <-longErr:
		t.Fatalf("the long call ended with the short one's context: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	// The server reads: the long call's message goes, after the rest.
	buf := make([]byte, 64<<10)
	oob := make([]byte, 256)
	sawLast := false
	deadline := time.Now().Add(10 * time.Second)
	for !sawLast && time.Now().Before(deadline) {
		n, _, _, _, err := unix.Recvmsg(server, buf, oob, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		sawLast = strings.Contains(string(buf[:n]), "last")
	}
	if !sawLast {
		t.Fatal("the long call's message never arrived")
	}
	cancelLong()
	if err := <-longErr; !errors.Is(err, context.Canceled) {
		t.Errorf("long call: %v, want Canceled", err)
	}
}

// ctxBlocker is a Handler whose calls run until their context ends,
// counting the calls that started, by their argument.
type ctxBlocker struct {
	mu      sync.Mutex
	started map[string]bool
	ch      chan string
}

func (b *ctxBlocker) ServeCall(ctx context.Context, call *Call) (any, error) {
	var name string
	if err := call.Args(&name); err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.started[name] = true
	b.mu.Unlock()
	b.ch <- name
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestCancelWhileSaturated: with every worker of an object busy on calls
// that run until cancelled, the server still reads the cancels: a
// cancelled running call makes room for one that waited, and a call
// cancelled while it waited never runs.
func TestCancelWhileSaturated(t *testing.T) {
	const limit = 2
	b := &ctxBlocker{started: map[string]bool{}, ch: make(chan string, 16)}
	c, _ := pairWith(t, &Server{MaxConcurrent: limit}, b)
	call := func(name string) (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Call(ctx, "block", name, nil) }()
		return cancel, done
	}
	cancelA, doneA := call("a")
	cancelB, doneB := call("b")
	defer cancelB()
	for range limit {
		<-b.ch
	}
	cancelC, doneC := call("c") // waits for a worker
	defer cancelC()
	time.Sleep(20 * time.Millisecond)
	cancelD, doneD := call("d") // waits too
	time.Sleep(50 * time.Millisecond)
	cancelD()
	if err := <-doneD; !errors.Is(err, context.Canceled) {
		t.Errorf("d: %v", err)
	}
	cancelA()
	if err := <-doneA; !errors.Is(err, context.Canceled) {
		t.Errorf("a: %v", err)
	}
	select {
	case name := <-b.ch:
		if name != "c" {
			t.Errorf("%q started in the place of a, want c", name)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a's cancel did not reach the server: c never started")
	}
	cancelB()
	cancelC()
	<-doneB
	<-doneC
	// Once b and c have gone, d would start if it were still waiting.
	time.Sleep(50 * time.Millisecond)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started["d"] {
		t.Error("d, cancelled while it waited, ran")
	}
}

// TestMaxObjects: a server serves at most MaxObjects objects at once;
// beyond them NewObject fails and a new connection is told why and closed,
// and the server goes on serving the rest, and more once some end.
func TestMaxObjects(t *testing.T) {
	ctx := context.Background()
	srv := &Server{MaxObjects: 2}
	c, _ := pairWith(t, srv, testHandler(t))
	o, err := srv.NewObject(ctx, testHandler(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.NewObject(ctx, testHandler(t)); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("a third object: %v, want EAGAIN", err)
	}
	// A listener's connections count too.
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, ln, func(*unix.Ucred) Handler { return testHandler(t) })
	d, err := Dial(ctx, sock, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var r echoResult
	if err := d.Call(ctx, "echo", echoArgs{Text: "x"}, &r); !errors.Is(err, syscall.EAGAIN) || !strings.Contains(err.Error(), "too many objects") {
		t.Errorf("call on a connection past MaxObjects: %v", err)
	}
	if err := c.Call(ctx, "echo", echoArgs{Text: "still"}, &r); err != nil || r.Text != "still" {
		t.Errorf("an object served before: %+v, %v", r, err)
	}
	// One ends: there is room again.
	o.File.Close()
	var d2 *Client
	for range 500 {
		if d2, err = Dial(ctx, sock, ClientOptions{}); err != nil {
			t.Fatal(err)
		}
		if err = d2.Call(ctx, "echo", echoArgs{Text: "x"}, &r); err == nil {
			break
		}
		d2.Close()
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("after an object ended: %v", err)
	}
	d2.Close()
}

// TestSlowCallDoesNotBlock: a call that runs long on the worker that read
// it must not stop the object's other calls from being read and run.
func TestSlowCallDoesNotBlock(t *testing.T) {
	c, _ := pair(t, testHandler(t))
	slow := make(chan error, 1)
	go func() { slow <- c.Call(context.Background(), "sleep", time.Hour, new(string)) }()
	waitPending(t, c, 1)
	time.Sleep(10 * time.Millisecond) // the slow call runs
	quick := make(chan error, 1)
	go func() { quick <- c.Call(context.Background(), "echo", echoArgs{}, nil) }()
	select {
	case err := <-quick:
		if err != nil {
			t.Fatal(err)
		}
	case err := <-slow:
		t.Fatalf("the slow call ended first: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("a call made while a slow one ran was not answered")
	}
}

// waitPending waits until n calls of c wait for replies.
func waitPending(t *testing.T, c *Client, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		c.mu.Lock()
		p := len(c.pending)
		c.mu.Unlock()
		if p >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d calls pending, want %d", p, n)
		}
		time.Sleep(time.Millisecond)
	}
}
