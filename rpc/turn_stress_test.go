package rpc

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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

// randomCtx returns a context that ends after up to max, or never (and a
// nil cancel is never returned).
func randomCtx(r *rand.Rand, max time.Duration) (context.Context, context.CancelFunc, bool) {
	if r.IntN(3) == 0 {
		return context.Background(), func() {}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.Int64N(int64(max))))
	return ctx, cancel, true
}

// stress runs call from 8 goroutines for stressTime, each time with a
// source of randomness and a number no other call gets, and fails the test
// unless some calls were answered and some given up (call reports which).
func stress(t *testing.T, call func(r *rand.Rand, n int) (answered bool)) {
	end := time.Now().Add(stressTime())
	var ok, cancelled atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			for i := 0; time.Now().Before(end); i++ {
				if call(r, g<<32|i) {
					ok.Add(1)
				} else {
					cancelled.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d calls answered, %d given up", ok.Load(), cancelled.Load())
	if cancelled.Load() == 0 || ok.Load() == 0 {
		t.Errorf("no mix: %d answered, %d given up", ok.Load(), cancelled.Load())
	}
}

// TestTurnStress: callers race for the client's read turn while others
// give up at random moments (before sending, while sending, while
// reading, while being handed the turn), and Err reads between them.
func TestTurnStress(t *testing.T) {
	goroutines := runtime.NumGoroutine()
	fds := openFDs(t)
	c, stop := newPair(t, &Server{}, testHandler(t))
	stress(t, func(r *rand.Rand, n int) bool {
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
		if err != nil && !(mayEnd && errors.Is(err, ctx.Err())) {
			t.Errorf("call %d: %v", n, err)
		}
		return err == nil
	})
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
	var running, most, waiting, held atomic.Int64
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
		// there are workers but one: while the client lives, a server
		// whose running calls all wait for a cancel stalls, as the
		// cancels queue behind calls it does not read (see
		// Server.MaxConcurrent), and the check below that every cancel
		// reached its call could never pass. The client's close is seen
		// even then: hold, at the end, checks that.
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
		// hold returns only when cancelled, always.
		"hold": Method(func(ctx context.Context, n int) (int, error) {
			enter()
			defer running.Add(-1)
			held.Add(1)
			defer held.Add(-1)
			<-ctx.Done()
			return 0, ctx.Err()
		}),
	}
	c, stop := newPair(t, &Server{MaxConcurrent: maxConcurrent}, h)

	methods := []string{"fast", "fast", "fast", "slow", "spin", "wait"}
	stress(t, func(r *rand.Rand, n int) bool {
		method := methods[r.IntN(len(methods))]
		ctx, cancel, mayEnd := randomCtx(r, 3*time.Millisecond)
		if method == "wait" && !mayEnd {
			ctx, cancel = context.WithTimeout(context.Background(), time.Duration(r.IntN(2000))*time.Microsecond)
			mayEnd = true
		}
		var res int
		err := c.Call(ctx, method, n, &res)
		cancel()
		// A call given up fails with its context's error: the client's,
		// or the server's answer to the cancel.
		switch {
		case err == nil && res != n+1:
			t.Errorf("%s %d got the reply %d", method, n, res)
		case err != nil && !(mayEnd && (errors.Is(err, ctx.Err()) || errors.Is(err, context.DeadlineExceeded))):
			t.Errorf("%s %d: %v", method, n, err)
		}
		return err == nil
	})
	t.Logf("at most %d calls ran at once", most.Load())
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

	// Saturate the object with calls that wait only for their cancel,
	// more than it runs and queues, and close the client without
	// cancelling them: the server must see the close and end them all
	// before any Shutdown.
	var holders sync.WaitGroup
	for i := range 3*maxConcurrent + 2 {
		holders.Add(1)
		go func() {
			defer holders.Done()
			if err := c.Call(context.Background(), "hold", i, nil); !errors.Is(err, ErrClosed) {
				t.Errorf("hold %d after the client's close: %v, want ErrClosed", i, err)
			}
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); held.Load() != maxConcurrent; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d hold calls run, want %d", held.Load(), maxConcurrent)
		}
	}
	time.Sleep(20 * time.Millisecond) // the reader fills the queue and stops
	c.Close()
	holders.Wait()
	for deadline := time.Now().Add(10 * time.Second); running.Load() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls still run after the client closed a saturated object", running.Load())
		}
	}
	stop()
	if n := running.Load(); n != 0 {
		t.Errorf("%d calls still run after Shutdown", n)
	}
	waitGoroutines(t, goroutines)
	waitFDs(t, fds)
}
