package rpc

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRevocable(t *testing.T) {
	h, revoke := Revocable(testHandler(t))
	c, _ := pair(t, h)
	ctx := context.Background()
	var r echoResult
	if err := c.Call(ctx, "echo", echoArgs{N: 1}, &r); err != nil || r.N != 2 {
		t.Fatalf("echo before revocation: %+v, %v", r, err)
	}
	inFlight := make(chan error, 1)
	go func() { inFlight <- c.Call(ctx, "sleep", time.Hour, nil) }()
	time.Sleep(20 * time.Millisecond)
	revoke()
	select {
	case err := <-inFlight:
		if !errors.Is(err, ErrRevoked) || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("call in flight at revocation: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a call in flight did not end at revocation")
	}
	if err := c.Call(ctx, "echo", echoArgs{}, nil); !errors.Is(err, ErrRevoked) {
		t.Fatalf("call after revocation: %v", err)
	}
	// The object's last message (why it ended) may come a moment after
	// the replies to calls the caretaker refused.
	for deadline := time.Now().Add(5 * time.Second); c.Err() == nil && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if err := c.Err(); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Err after revocation: %v", err)
	}
	revoke() // a second time is harmless
}

// TestRevokeDropsResult checks that a result made by a handler that
// finished after revocation never reaches the caller: its descriptors are
// closed instead.
func TestRevokeDropsResult(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	started := make(chan struct{})
	var revoke func()
	var h Handler
	h, revoke = Revocable(Methods{"pipe": func(ctx context.Context, call *Call) (any, error) {
		close(started)
		<-ctx.Done()            // revocation ends the context...
		return FD{File: w}, nil // ...but the handler answers anyway
	}})
	c, _ := pair(t, h)
	done := make(chan error, 1)
	go func() {
		var fd FD
		err := c.Call(context.Background(), "pipe", nil, &fd)
		fd.Close()
		done <- err
	}()
	<-started
	revoke()
	if err := <-done; !errors.Is(err, ErrRevoked) {
		t.Fatalf("call = %v, want ErrRevoked", err)
	}
	// The write end was closed, not sent: the pipe reads EOF.
	if _, err := io.ReadAll(r); err != nil {
		t.Fatal(err)
	}
}

func TestForward(t *testing.T) {
	orig, origSrv := pair(t, testHandler(t))
	h, revoke := Revocable(Forward(orig))
	c, _ := pair(t, h)
	ctx := context.Background()

	var r echoResult
	if err := c.Call(ctx, "echo", echoArgs{Text: "via", N: 1}, &r); err != nil || r != (echoResult{"via", 2}) {
		t.Fatalf("echo through the forwarder: %+v, %v", r, err)
	}
	// A descriptor to the server, through two hops.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if err := c.Call(ctx, "write", pipeArgs{W: FD{File: pw}, Text: "two hops"}, nil); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if b, err := io.ReadAll(pr); string(b) != "two hops" {
		t.Fatalf("pipe read %q, %v", b, err)
	}
	// A descriptor from the server.
	var fr fileResult
	if err := c.Call(ctx, "memfd", echoArgs{Text: "back"}, &fr); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8)
	n, _ := fr.F.File.ReadAt(b, 0)
	fr.F.Close()
	if string(b[:n]) != "back" {
		t.Fatalf("memfd through the forwarder holds %q", b[:n])
	}
	// Errors keep their code and errno.
	err = c.Call(ctx, "stat", "/does/not/exist", nil)
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("stat through the forwarder: %v", err)
	}
	if err := c.Call(ctx, "nope", nil, nil); !errors.Is(err, ErrUnknownMethod) {
		t.Fatalf("unknown method through the forwarder: %v", err)
	}
	// Cancellation passes through: the original's handler sees it.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := c.Call(cctx, "sleep", time.Hour, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled call: %v", err)
	}

	// Revoking the forwarder cuts its holder off, not the original's.
	revoke()
	if err := c.Call(ctx, "echo", echoArgs{}, nil); !errors.Is(err, ErrRevoked) {
		t.Fatalf("call through a revoked forwarder: %v", err)
	}
	if err := orig.Call(ctx, "echo", echoArgs{}, nil); err != nil {
		t.Fatalf("the original after its forwarder was revoked: %v", err)
	}

	// When the original ends, a forwarder to it ends too, revocable or
	// not.
	c2, _ := pair(t, Forward(orig))
	h3, _ := Revocable(Forward(orig))
	c3, _ := pair(t, h3)
	origSrv.Shutdown(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for c2.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := c2.Call(ctx, "echo", echoArgs{}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("call through a forwarder whose original ended: %v", err)
	}
	for c3.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := c3.Err(); !errors.Is(err, ErrClosed) {
		t.Fatalf("a revocable forwarder whose original ended: Err = %v", err)
	}
}
