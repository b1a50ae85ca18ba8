package rpc

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
)

// openFDs and waitFDs count the descriptors this process holds.
var (
	openFDs = testenv.OpenFDs
	waitFDs = testenv.WaitFDs
)

// TestNoFDLeak makes 100,000 calls of every kind, good and failing, with
// descriptors both ways, and checks that the process (client and server
// both live in it) holds as many descriptors after as before, and that the
// server's goroutines are gone after shutdown.
func TestNoFDLeak(t *testing.T) {
	calls := 100_000
	if testing.Short() {
		calls = 10_000
	}
	goroutines := runtime.NumGoroutine()
	before := openFDs(t)

	srv := &Server{}
	c, _ := pairWith(t, srv, testHandler(t))
	ctx := context.Background()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() { // drain what the "write" calls put in the pipe
		b := make([]byte, 4096)
		for {
			if _, err := r.Read(b); err != nil {
				return
			}
		}
	}()
	for i := range calls {
		var err error
		switch i % 10 {
		case 0, 1:
			var res echoResult
			err = c.Call(ctx, "echo", echoArgs{Text: "x", N: i}, &res)
		case 2:
			err = c.Call(ctx, "write", pipeArgs{W: FD{File: w}, Text: "x"}, nil)
		case 3:
			var res fileResult
			if err = c.Call(ctx, "memfd", echoArgs{Text: "x"}, &res); err == nil {
				res.F.Close()
			}
		case 4: // a result with an fd, decoded into a type without one
			err = c.Call(ctx, "memfd", echoArgs{Text: "x"}, nil)
		case 5: // unknown method, carrying an fd
			if err = c.Call(ctx, "nope", pipeArgs{W: FD{File: w}}, nil); errors.Is(err, ErrUnknownMethod) {
				err = nil
			}
		case 6: // arguments of the wrong type, carrying an fd
			if err = c.Call(ctx, "echo", pipeArgs{W: FD{File: w}}, nil); errors.Is(err, ErrBadMessage) {
				err = nil
			}
		case 7: // a handler that fails
			if err = c.Call(ctx, "stat", "/does/not/exist", nil); errors.Is(err, os.ErrNotExist) {
				err = nil
			}
		case 8: // a new object, used once and closed
			var sub FD
			if err = c.Call(ctx, "sub", nil, &sub); err == nil {
				var sc *Client
				if sc, err = NewClient(sub.File, ClientOptions{}); err == nil {
					err = sc.Call(ctx, "echo", echoArgs{}, nil)
					sc.Close()
				}
			}
		case 9: // a call given up on
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if err = c.Call(cctx, "sleep", time.Hour, nil); errors.Is(err, context.Canceled) {
				err = nil
			}
		}
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	w.Close()
	c.Close()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	r.Close()
	// The server closes a new object's socket when its reader sees EOF,
	// which may be a moment after Shutdown has returned for objects the
	// client closed last; give it that moment.
	waitFDs(t, before)
	waitGoroutines(t, goroutines)
}

// waitGoroutines waits up to 5s for the process to run at most want
// goroutines, and shows them all if it does not.
func waitGoroutines(t testing.TB, want int) {
	t.Helper()
	for range 500 {
		if runtime.NumGoroutine() <= want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	t.Errorf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
}

// A blocker is a handler that counts the calls running in it and holds
// each until release is closed, for tests of how many run at once.
type blocker struct {
	mu            sync.Mutex
	running, most int
	release       chan struct{}
}

func newBlocker() *blocker { return &blocker{release: make(chan struct{})} }

func (b *blocker) ServeCall(ctx context.Context, call *Call) (any, error) {
	b.mu.Lock()
	b.running++
	b.most = max(b.most, b.running)
	b.mu.Unlock()
	<-b.release
	b.mu.Lock()
	b.running--
	b.mu.Unlock()
	return 1, nil
}

// counts returns the calls running now and the most that ran at once.
func (b *blocker) counts() (running, most int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.running, b.most
}

// TestBadResultClosed: a handler's result that cannot be sent (the same
// descriptor twice) still has its descriptors closed.
func TestBadResultClosed(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := Methods{"twice": func(ctx context.Context, call *Call) (any, error) {
		return []FD{{File: w}, {File: w}}, nil
	}}
	c, _ := pair(t, h)
	if err := c.Call(context.Background(), "twice", nil, nil); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("call = %v, want an error about the descriptor sent twice", err)
	}
	wantAllClosed(t, r)
}
