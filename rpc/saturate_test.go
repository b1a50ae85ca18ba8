package rpc

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A cancelWaiter is a handler whose calls all wait for their context to
// end, counting those that run and those that saw their context end, and
// which records its Close.
type cancelWaiter struct {
	running, ended atomic.Int64
	closeOnce      sync.Once
	closed         chan struct{}
}

func newCancelWaiter() *cancelWaiter { return &cancelWaiter{closed: make(chan struct{})} }

func (h *cancelWaiter) ServeCall(ctx context.Context, call *Call) (any, error) {
	h.running.Add(1)
	defer h.running.Add(-1)
	<-ctx.Done()
	h.ended.Add(1)
	return nil, ctx.Err()
}

func (h *cancelWaiter) Close() error {
	h.closeOnce.Do(func() { close(h.closed) })
	return nil
}

// saturate sends calls on the raw socket fd (a peer with no Client, as a
// crashed one would be) until an object served with MaxConcurrent 2 is
// saturated: 2 calls run, 2 wait their turn, one more is read and held,
// and the rest wait unread, so the reader never reaches the end of file.
// It returns once the 2 run.
func saturate(t *testing.T, fd int, h *cancelWaiter) {
	t.Helper()
	body, _, err := encodeCall("wait", nil)
	if err != nil {
		t.Fatal(err)
	}
	for id := uint64(1); id <= 10; id++ {
		msg := append(appendHeader(nil, kindCall, 0, id), body...)
		if err := unix.Sendmsg(fd, msg, nil, nil, 0); err != nil {
			t.Fatalf("sending call %d: %v", id, err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); h.running.Load() != 2; {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls run, want 2", h.running.Load())
		}
		time.Sleep(time.Millisecond)
	}
	// Let the reader fill the queue and block for room (more calls than
	// fit are sent, so it does whatever the timing).
	time.Sleep(20 * time.Millisecond)
}

// waitEnded checks that the object served by h ended within 10s of start:
// its handler closed, its running calls' contexts ended, nothing of it
// left in srv.
func waitEnded(t *testing.T, srv *Server, h *cancelWaiter, start time.Time) {
	t.Helper()
	select {
	case <-h.closed:
		t.Logf("the object ended %v after", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatalf("the handler was not closed: the saturated object is held (%d calls run)", h.running.Load())
	}
	if n := h.running.Load(); n != 0 {
		t.Errorf("%d calls still run after the handler's Close", n)
	}
	if n := h.ended.Load(); n != 2 {
		t.Errorf("%d calls saw their context end, want the 2 that ran", n)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		srv.mu.Lock()
		n := len(srv.conns)
		srv.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server still serves %d objects", n)
		}
	}
}

// TestSaturatedEndLeak: a peer fills an object with calls that wait for
// their cancellation, more than it runs and queues, and then closes its end
// without cancelling any (as a crashed client does), or shuts its writing
// down, or the server shuts down. The server reads nothing meanwhile
// (backpressure), yet must see each and end the object: its calls'
// contexts end, its handler is closed, and its goroutines and descriptors
// go, in the first two cases without a Shutdown.
func TestSaturatedEndLeak(t *testing.T) {
	for _, how := range []string{"close", "shutdown-write", "server-shutdown"} {
		t.Run(how, func(t *testing.T) {
			goroutines := runtime.NumGoroutine()
			fds := openFDs(t)
			srv := &Server{MaxConcurrent: 2}
			h := newCancelWaiter()
			fd := serveEnd(t, srv, h)
			saturate(t, fd, h)
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			switch how {
			case "close":
				unix.Close(fd)
			case "shutdown-write":
				// The peer still reads, but will send nothing more: the
				// end of file, as a close is, for the reader.
				if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
					t.Fatal(err)
				}
			case "server-shutdown":
				// The peer lives, but reads and sends nothing.
				if err := srv.Shutdown(ctx); err != nil {
					t.Fatalf("Shutdown of a saturated object: %v", err)
				}
			}
			waitEnded(t, srv, h, start)
			waitGoroutines(t, goroutines)
			if how == "close" {
				waitFDs(t, fds)
			} else {
				waitFDs(t, fds+1) // the peer's end, still open
				unix.Close(fd)
			}
			if err := srv.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown after the object ended: %v", err)
			}
		})
	}
}
