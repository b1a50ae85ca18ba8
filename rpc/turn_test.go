package rpc

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// The client has no reader goroutine: a caller reads the replies, and
// passes the read turn on when it leaves. These tests make it leave in
// each way while others wait.

// TestReadTurnLeaderCancelled: the caller that reads gives up (its context
// ends) while another waits for a reply; the other must get the turn and
// its reply, or it would wait for ever.
func TestReadTurnLeaderCancelled(t *testing.T) {
	c, _ := pair(t, testHandler(t))
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { first <- c.Call(ctx, "sleep", time.Hour, new(string)) }()
	waitReading(t, c)

	second := make(chan error, 1)
	var s string
	go func() { second <- c.Call(context.Background(), "sleep", 100*time.Millisecond, &s) }()
	waitPending(t, c, 2)
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v, want context.Canceled", err)
	}
	select {
	case err := <-second:
		if err != nil || s != "slept" {
			t.Fatalf("waiting call: %q, %v", s, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting call never got its reply: the read turn was lost")
	}
	if err := c.Call(context.Background(), "echo", echoArgs{N: 1}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestReadTurnStress makes calls from many goroutines, many of them given
// up at random moments: as the reader, while waiting, while being handed
// the turn. Every call must end with its own reply or its context's error.
func TestReadTurnStress(t *testing.T) {
	c, _ := pair(t, testHandler(t))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range 300 {
				if r.IntN(2) == 0 {
					var res echoResult
					n := g*1000 + i
					if err := c.Call(context.Background(), "echo", echoArgs{N: n}, &res); err != nil || res.N != n+1 {
						t.Errorf("echo %d: %+v, %v", n, res, err)
						return
					}
					continue
				}
				d := time.Duration(r.IntN(2000)) * time.Microsecond
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.IntN(2000))*time.Microsecond)
				var s string
				err := c.Call(ctx, "sleep", d, &s)
				cancel()
				if !(err == nil && s == "slept") && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("sleep %v: %q, %v", d, s, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := c.Call(context.Background(), "echo", echoArgs{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestErrWithoutCalls: with no call made, Err learns that the server
// ended the object.
func TestErrWithoutCalls(t *testing.T) {
	c, srv := pair(t, testHandler(t))
	if err := c.Call(context.Background(), "echo", echoArgs{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("Err of a live object: %v", err)
	}
	srv.Shutdown(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for c.Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("Err stayed nil after the server shut down")
		}
		time.Sleep(time.Millisecond)
	}
	if err := c.Err(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Err = %v, want ErrClosed", err)
	}
}

// waitReading waits until a caller of c holds the read turn.
func waitReading(t *testing.T, c *Client) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		c.mu.Lock()
		r := c.reading && c.reader != 0
		c.mu.Unlock()
		if r {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no caller took the read turn")
		}
		time.Sleep(time.Millisecond)
	}
}
