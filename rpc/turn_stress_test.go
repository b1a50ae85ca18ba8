package rpc

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests run the client's read turn and the server's workers and
// watchdog for a bounded time (2s, 300ms with -short) under whatever
// scheduling the machine gives (run them with -race): many callers, calls
// cancelled at random moments, slow and fast calls mixed. Every call that
// was not cancelled must get its own reply, every cancelled one its own
// reply or its context's error, and nothing may be left behind:
// goroutines, descriptors, calls running in the server.

// stressTime is how long a stress test runs.
func stressTime() time.Duration {
	if testing.Short() {
		return 300 * time.Millisecond
	}
	return 2 * time.Second
}

// stressPair is pairWith without the cleanup: stop closes the client,
// shuts the server down, and fails the test if that takes long.
func stressPair(t *testing.T, srv *Server, h Handler) (c *Client, stop func()) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.ServeFile(context.Background(), os.NewFile(uintptr(fds[1]), "server"), h); err != nil {
		t.Fatal(err)
	}
	c, err = NewClient(os.NewFile(uintptr(fds[0]), "client"), ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c, func() {
		c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}
}

// randomCtx returns a context that ends after up to max, or never (and a
// nil cancel is never returned).
func randomCtx(r *rand.Rand, max time.Duration) (context.Context, context.CancelFunc, bool) {
	if r.IntN(3) == 0 {
		return context.Background(), func() {}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.Int64N(int64(max))))
	return ctx, cancel, true
}

// TestTurnStress: callers race for the client's read turn while others
// give up at random moments (before sending, while sending, while
// reading, while being handed the turn), and Err reads between them.
func TestTurnStress(t *testing.T) {
	goroutines := runtime.NumGoroutine()
	fds := openFDs(t)
	c, stop := stressPair(t, &Server{}, testHandler(t))

	end := time.Now().Add(stressTime())
	var ok, cancelled atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			for i := 0; time.Now().Before(end); i++ {
				n := g<<32 | i
				ctx, cancel, mayEnd := randomCtx(r, 500*time.Microsecond)
				var err error
				switch r.IntN(4) {
				case 0, 1:
					var res echoResult
					err = c.Call(ctx, "echo", echoArgs{N: n}, &res)
					if err == nil && res.N != n+1 {
						t.Errorf("echo %d got the reply %d", n, res.N)
					}
				case 2:
					// A reply carrying a descriptor: the client closes it
					// if the caller gave up.
					var res fileResult
					want := string(rune('a' + r.IntN(26)))
					err = c.Call(ctx, "memfd", echoArgs{Text: want}, &res)
					if err == nil {
						b := make([]byte, 2)
						k, _ := res.F.File.ReadAt(b, 0)
						if string(b[:k]) != want {
							t.Errorf("memfd %q holds %q", want, b[:k])
						}
						res.F.Close()
					}
				case 3:
					var s string
					err = c.Call(ctx, "sleep", time.Duration(r.IntN(300))*time.Microsecond, &s)
					if err == nil && s != "slept" {
						t.Errorf("sleep got %q", s)
					}
				}
				cancel()
				switch {
				case err == nil:
					ok.Add(1)
				case mayEnd && errors.Is(err, ctx.Err()):
					cancelled.Add(1)
				default:
					t.Errorf("call %d: %v", n, err)
				}
				if r.IntN(50) == 0 {
					if err := c.Err(); err != nil {
						t.Errorf("Err: %v", err)
					}
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d calls answered, %d given up", ok.Load(), cancelled.Load())
	if cancelled.Load() == 0 || ok.Load() == 0 {
		t.Errorf("no mix: %d answered, %d given up", ok.Load(), cancelled.Load())
	}
	var res echoResult
	if err := c.Call(context.Background(), "echo", echoArgs{N: 1}, &res); err != nil || res.N != 2 {
		t.Fatalf("echo after the stress: %+v, %v", res, err)
	}
	stop()
	waitGoroutines(t, goroutines)
	waitFDs(t, fds)
}

// TestServerStress: a server with few workers runs fast calls, slow calls
// that yield, calls that hold the CPU without yielding (which the
// watchdog must take the read turn from), and calls that wait until
// cancelled, from callers that give up at random. Every answer must be
// the caller's own, no more than MaxConcurrent calls may run at once, and
// every cancel must reach its call while the others run.
func TestServerStress(t *testing.T) {
	goroutines := runtime.NumGoroutine()
	fds := openFDs(t)
	const maxConcurrent = 3
	var running, most, waiting atomic.Int64
	enter := func() {
		n := running.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
	}
	h := Methods{
		"fast": Method(func(ctx context.Context, n int) (int, error) {
			enter()
			defer running.Add(-1)
			return n + 1, nil
		}),
		"slow": Method(func(ctx context.Context, n int) (int, error) {
			enter()
			defer running.Add(-1)
			select {
			case <-time.After(time.Duration(n%2000) * time.Microsecond):
			case <-ctx.Done():
			}
			return n + 1, nil
		}),
		// spin holds the worker that read it (it runs inline) without
		// blocking, so only the watchdog lets others read meanwhile.
		"spin": Method(func(ctx context.Context, n int) (int, error) {
			enter()
			defer running.Add(-1)
			for end := time.Now().Add(time.Duration(n%3000) * time.Microsecond); time.Now().Before(end); {
			}
			return n + 1, nil
		}),
		// wait returns only when cancelled, unless as many calls wait as
		// there are workers but one: a server whose running calls all wait
		// for a cancel stops, as the cancels queue behind calls it does
		// not read (see Server.MaxConcurrent).
		"wait": Method(func(ctx context.Context, n int) (int, error) {
			enter()
			defer running.Add(-1)
			defer waiting.Add(-1)
			if waiting.Add(1) >= maxConcurrent {
				return n + 1, nil
			}
			<-ctx.Done()
			return 0, ctx.Err()
		}),
	}
	c, stop := stressPair(t, &Server{MaxConcurrent: maxConcurrent}, h)

	end := time.Now().Add(stressTime())
	var ok, cancelled atomic.Int64
	var wg sync.WaitGroup
	methods := []string{"fast", "fast", "fast", "slow", "spin", "wait"}
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			for i := 0; time.Now().Before(end); i++ {
				n := g<<32 | i
				method := methods[r.IntN(len(methods))]
				ctx, cancel, mayEnd := randomCtx(r, 3*time.Millisecond)
				if method == "wait" && !mayEnd {
					ctx, cancel = context.WithTimeout(context.Background(), time.Duration(r.IntN(2000))*time.Microsecond)
					mayEnd = true
				}
				var res int
				err := c.Call(ctx, method, n, &res)
				cancel()

				switch {
				case err == nil && res == n+1:
					ok.Add(1)
				case err == nil:
					t.Errorf("%s %d got the reply %d", method, n, res)
				case mayEnd && (errors.Is(err, ctx.Err()) || errors.Is(err, context.DeadlineExceeded)):
					// The client gave up, or the server answered the
					// cancel with the call's context error.
					cancelled.Add(1)
				default:
					t.Errorf("%s %d: %v", method, n, err)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d calls answered, %d given up, at most %d ran at once", ok.Load(), cancelled.Load(), most.Load())
	if m := most.Load(); m > maxConcurrent {
		t.Errorf("%d calls ran at once, want at most %d", m, maxConcurrent)
	}
	// Every cancel reached its call: none waits any more.
	for deadline := time.Now().Add(10 * time.Second); waiting.Load() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls still wait for a cancel the server never read", waiting.Load())
		}
		time.Sleep(time.Millisecond)
	}
	var res int
	if err := c.Call(context.Background(), "fast", 1, &res); err != nil || res != 2 {
		t.Fatalf("fast call after the stress: %d, %v", res, err)
	}
	stop()
	if n := running.Load(); n != 0 {
		t.Errorf("%d calls still run after Shutdown", n)
	}
	waitGoroutines(t, goroutines)
	waitFDs(t, fds)
}
