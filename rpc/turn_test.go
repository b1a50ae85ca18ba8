package rpc

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
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

// bigHandler answers "big" at once and "slowbig" after 5ms, each with
// 60,000 bytes: a few such replies fill a socket's buffer.
func bigHandler() (Methods, string) {
	big := strings.Repeat("x", 60000)
	return Methods{
		"big": Method(func(ctx context.Context, a string) (string, error) {
			return big, nil
		}),
		"slowbig": Method(func(ctx context.Context, a string) (string, error) {
			time.Sleep(5 * time.Millisecond)
			return big, nil
		}),
	}, big
}

// waitAll waits for n calls' results on done.
func waitAll(t *testing.T, done chan error, n int) {
	t.Helper()
	for i := range n {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("call %d of %d never returned", i, n)
		}
	}
}

// TestGivenUpRepliesRead: replies to calls given up must still be read,
// or they fill the socket, the server blocks sending them and stops
// reading, and the next call blocks in its send with nobody reading.
func TestGivenUpRepliesRead(t *testing.T) {
	h, big := bigHandler()
	c, _ := pairWith(t, &Server{MaxConcurrent: 1}, h)
	var wg sync.WaitGroup
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
			defer cancel()
			c.Call(ctx, "slowbig", big, nil)
		}()
	}
	wg.Wait()
	done := make(chan error, 10)
	for range 10 {
		go func() { done <- c.Call(context.Background(), "slowbig", big, nil) }()
	}
	waitAll(t, done, 10)
}

// TestTurnNotToSender: a caller still blocked sending its call cannot
// read, so the read turn must not go to it while replies wait.
func TestTurnNotToSender(t *testing.T) {
	h, big := bigHandler()
	c, _ := pairWith(t, &Server{MaxConcurrent: 1}, h)
	const n = 40
	for range 10 {
		done := make(chan error, n)
		for range n {
			go func() { done <- c.Call(context.Background(), "big", big, nil) }()
		}
		waitAll(t, done, n)
	}
}

// TestLastMessageAfterGivenUp: after calls given up, an idle client still
// gets the server's last message (here the revocation), not a bare close:
// their replies did not fill the socket ahead of it.
func TestLastMessageAfterGivenUp(t *testing.T) {
	h, big := bigHandler()
	rh, revoke := Revocable(h)
	c, _ := pair(t, rh)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
			c.Call(ctx, "slowbig", big, nil)
			cancel()
		}()
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond) // the replies come
	revoke()
	time.Sleep(300 * time.Millisecond) // the client is idle meanwhile
	for deadline := time.Now().Add(10 * time.Second); c.Err() == nil && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if err := c.Err(); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Err after revocation: %v, want ErrRevoked", err)
	}
}

// TestGivenUpObjectCloses: an object returned in the reply to a call given
// up is closed when the reply comes, so the server stops serving it.
func TestGivenUpObjectCloses(t *testing.T) {
	srv := &Server{}
	made := make(chan struct{})
	h := Methods{
		"slowsub": func(ctx context.Context, call *Call) (any, error) {
			defer close(made)
			time.Sleep(20 * time.Millisecond)
			return call.Server.NewObject(context.Background(), testHandler(t))
		},
	}
	c, _ := pairWith(t, srv, h)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if err := c.Call(ctx, "slowsub", nil, new(FD)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call = %v, want DeadlineExceeded", err)
	}
	<-made
	for deadline := time.Now().Add(10 * time.Second); ; {
		srv.mu.Lock()
		n := len(srv.conns)
		srv.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d objects served long after the reply bringing one was given up, want 1", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
