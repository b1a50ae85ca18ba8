package rpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// streamPair returns the two ends of an AF_UNIX SOCK_STREAM socket pair,
// non-blocking (so the files are in the netpoller and take deadlines)
// unless blocking is set.
func streamPair(t testing.TB, blocking bool) (*os.File, *os.File) {
	t.Helper()
	typ := unix.SOCK_STREAM | unix.SOCK_CLOEXEC
	if !blocking {
		typ |= unix.SOCK_NONBLOCK
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, typ, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b")
}

func revocable(t testing.TB, ctx context.Context, f *os.File) (*os.File, func()) {
	t.Helper()
	end, revoke, err := RevocableStream(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	return end, revoke
}

func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// control runs fn on f's descriptor.
func control(t testing.TB, f *os.File, fn func(fd int) error) error {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		t.Fatal(err)
	}
	return ferr
}

func shutWrite(t testing.TB, f *os.File) {
	t.Helper()
	if err := shutter(f)(); err != nil {
		t.Fatal(err)
	}
}

func nonblocking(t testing.TB, f *os.File) bool {
	t.Helper()
	var fl int
	if err := control(t, f, func(fd int) (err error) {
		fl, err = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return fl&unix.O_NONBLOCK != 0
}

// within runs fn in a goroutine and fails the test if it has not returned
// after d.
func within(t testing.TB, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// transfer writes data to w and then calls shut, while it reads r to EOF;
// it fails unless r read exactly data.
func transfer(w io.Writer, shut func() error, r io.Reader, data []byte) error {
	werr := make(chan error, 1)
	go func() {
		_, err := w.Write(data)
		if err == nil {
			err = shut()
		}
		werr <- err
	}()
	got, err := io.ReadAll(r)
	if werr := <-werr; err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("read %d bytes, want %d (equal prefix: %v)", len(got), len(data), bytes.HasPrefix(data, got))
	}
	return nil
}

// shutter returns a function that shuts the socket f down for writing.
func shutter(f *os.File) func() error {
	return func() error {
		rc, err := f.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_WR) }); err != nil {
			return err
		}
		return serr
	}
}

// Over a socket, bytes go both ways at once (more than the pipes in the
// middle hold, so splices are partial), and each side's EOF reaches the
// other. The caller closes f at once: the forwarder has its own copy.
func TestRevocableStreamSocket(t *testing.T) {
	a, b := streamPair(t, false)
	end, revoke := revocable(t, context.Background(), a)
	defer revoke()
	defer end.Close()
	defer b.Close()
	a.Close()
	end.SetDeadline(time.Now().Add(20 * time.Second))
	b.SetDeadline(time.Now().Add(20 * time.Second))

	up, down := randomBytes(3<<20+12345, 1), randomBytes(2<<20+777, 2)
	errs := make(chan error, 2)
	go func() { errs <- transfer(end, shutter(end), b, up) }()
	go func() { errs <- transfer(b, shutter(b), end, down) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// A pipe's read or write end: bytes flow one way, then EOF (which, for a
// write end, reaches f's reader once the caller has closed f too).
func TestRevocableStreamPipe(t *testing.T) {
	for _, readEnd := range []bool{true, false} {
		name := map[bool]string{true: "read end", false: "write end"}[readEnd]
		t.Run(name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			f := map[bool]*os.File{true: r, false: w}[readEnd]
			end, revoke := revocable(t, context.Background(), f)
			defer revoke()
			defer end.Close()
			f.Close()
			if readEnd {
				if n, err := end.Write([]byte("x")); err == nil {
					t.Errorf("write on a pipe's read end: %d, nil", n)
				}
				r = end
			} else {
				w = end
			}
			defer r.Close()
			r.SetDeadline(time.Now().Add(20 * time.Second))
			if err := transfer(w, w.Close, r, randomBytes(3<<20+1, 3)); err != nil {
				t.Error(err)
			}
		})
	}
}

// Half-close: EOF from f's peer reaches the holder while the holder can
// still write; the holder's EOF then reaches the peer, and the forwarder
// releases everything by itself.
func TestRevocableStreamHalfClose(t *testing.T) {
	before := openFDs(t)
	a, b := streamPair(t, false)
	end, _ := revocable(t, context.Background(), a)
	a.Close()
	end.SetDeadline(time.Now().Add(10 * time.Second))
	b.SetDeadline(time.Now().Add(10 * time.Second))

	shutWrite(t, b)
	within(t, 5*time.Second, "the holder's read", func() {
		if n, err := end.Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Errorf("holder read after the peer's EOF: %d, %v; want 0, EOF", n, err)
		}
	})
	if _, err := end.Write([]byte("after")); err != nil {
		t.Fatalf("the holder's write after the peer's EOF: %v", err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(b, buf); err != nil || string(buf) != "after" {
		t.Fatalf("peer read %q, %v", buf, err)
	}
	end.Close()
	if n, err := b.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("peer read after the holder closed: %d, %v; want 0, EOF", n, err)
	}
	b.Close()
	// Not revoked: the forwarder ends on its own.
	waitFDs(t, before)
}

// The holder closes its end while f's peer stays silent and open: the
// forwarder notices (it does not wait for f to speak) and ends.
func TestRevocableStreamHolderLeaves(t *testing.T) {
	t.Run("socket", func(t *testing.T) {
		a, b := streamPair(t, false)
		defer a.Close()
		defer b.Close()
		before := openFDs(t)
		end, _ := revocable(t, context.Background(), a)
		end.Close()
		b.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := b.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("peer read after the holder closed: %d, %v; want 0, EOF", n, err)
		}
		waitFDs(t, before)
	})
	t.Run("pipe", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		defer r.Close()
		before := openFDs(t)
		end, _ := revocable(t, context.Background(), r)
		end.Close()
		waitFDs(t, before)
	})
}

// Revoking a socket cuts the holder off while bytes it wrote are stuck in
// the forwarder (f's peer is not reading and f is full): the holder's
// blocked write fails with EPIPE, its read returns EOF (not ECONNRESET,
// which closing a socket with unread bytes would give), nothing of what it
// wrote reaches f's peer, and f itself is untouched.
func TestRevocableStreamRevokeSocket(t *testing.T) {
	a, b := streamPair(t, false)
	defer a.Close() // the caller keeps f
	defer b.Close()
	end, revoke := revocable(t, context.Background(), a)
	defer end.Close()
	end.SetDeadline(time.Now().Add(10 * time.Second))
	b.SetDeadline(time.Now().Add(10 * time.Second))

	// Both ways work.
	buf := make([]byte, 5)
	if _, err := b.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(end, buf[:2]); err != nil || string(buf[:2]) != "hi" {
		t.Fatalf("holder read %q, %v", buf[:2], err)
	}
	if _, err := end.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(b, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("peer read %q, %v", buf, err)
	}

	// Fill f, so that the forwarder can move nothing more to it.
	var filler []byte
	chunk := bytes.Repeat([]byte("f"), 4096)
	for {
		var n int
		err := control(t, a, func(fd int) (err error) {
			n, err = unix.Write(fd, chunk)
			return err
		})
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		filler = append(filler, chunk[:n]...)
	}
	// The holder writes until its socket takes no more: the forwarder's
	// end of the pair then has bytes queued that it cannot move on.
	data := randomBytes(4<<20, 5)
	writeErr := make(chan error, 1)
	go func() {
		_, err := end.Write(data)
		writeErr <- err
	}()
	for i := 0; ; i++ {
		var pfd []unix.PollFd
		control(t, end, func(fd int) error {
			pfd = []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			_, err := unix.Poll(pfd, 0)
			return err
		})
		if pfd[0].Revents&unix.POLLOUT == 0 {
			break
		}
		if i == 500 {
			t.Fatal("the holder's socket never filled")
		}
		time.Sleep(10 * time.Millisecond)
	}

	within(t, time.Second, "revoke", revoke)
	select {
	case err := <-writeErr:
		if !errors.Is(err, syscall.EPIPE) {
			t.Errorf("the holder's blocked write: %v; want EPIPE", err)
		}
	case <-time.After(time.Second):
		t.Fatal("the holder's blocked write did not fail within 1s of revoke")
	}
	if n, err := end.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("the holder's read after revoke: %d, %v; want 0, EOF", n, err)
	}
	if n, err := end.Write([]byte("more")); !errors.Is(err, syscall.EPIPE) {
		t.Errorf("the holder's write after revoke: %d, %v; want EPIPE", n, err)
	}

	// f's peer gets exactly what f itself wrote, and f is the caller's
	// still.
	b.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	got, err := io.ReadAll(b)
	if !errors.Is(err, os.ErrDeadlineExceeded) || !bytes.Equal(got, filler) {
		t.Fatalf("peer read %d bytes (%v); want exactly the %d f wrote", len(got), err, len(filler))
	}
	if _, err := a.Write([]byte("mine")); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	got, err = io.ReadAll(b)
	if string(got) != "mine" || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("peer read %q, %v; want exactly what f wrote", got, err)
	}
	revoke() // again: harmless
}

// f's peer stops reading (shutdown SHUT_RD): the holder's writes soon fail
// with EPIPE rather than fill a buffer nobody reads, and the other
// direction goes on.
func TestRevocableStreamPeerStopsReading(t *testing.T) {
	a, b := streamPair(t, false)
	defer b.Close()
	end, revoke := revocable(t, context.Background(), a)
	defer revoke()
	defer end.Close()
	a.Close()
	end.SetDeadline(time.Now().Add(10 * time.Second))
	if err := control(t, b, func(fd int) error { return unix.Shutdown(fd, unix.SHUT_RD) }); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		_, err := end.Write([]byte("x"))
		if errors.Is(err, syscall.EPIPE) {
			break
		}
		if err != nil || i == 1000 {
			t.Fatalf("the holder's write %d after f's peer stopped reading: %v; want EPIPE by now", i, err)
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := b.Write([]byte("still")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(end, buf); err != nil || string(buf) != "still" {
		t.Errorf("holder read %q, %v", buf, err)
	}
}

// Revoking a pipe's read end: the holder reads EOF, and what is written to
// f afterwards stays in f for the caller.
func TestRevocableStreamRevokePipeRead(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	end, revoke := revocable(t, context.Background(), r)
	defer end.Close()
	w.Write([]byte("x"))
	buf := make([]byte, 8)
	if n, err := end.Read(buf); n != 1 || err != nil {
		t.Fatalf("holder read %q, %v", buf[:n], err)
	}
	within(t, time.Second, "revoke", revoke)
	w.Write([]byte("more"))
	if n, err := end.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("the holder's read after revoke: %q, %v; want EOF", buf[:n], err)
	}
	r.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := r.Read(buf); string(buf[:n]) != "more" {
		t.Errorf("the caller's read of f: %q, %v; want %q", buf[:n], err, "more")
	}
}

// Revoking a pipe's write end: the holder's writes fail with EPIPE and
// nothing more reaches f's reader.
func TestRevocableStreamRevokePipeWrite(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	end, revoke := revocable(t, context.Background(), w)
	defer end.Close()
	end.Write([]byte("x"))
	buf := make([]byte, 8)
	if n, err := r.Read(buf); string(buf[:n]) != "x" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	within(t, time.Second, "revoke", revoke)
	if n, err := end.Write([]byte("more")); !errors.Is(err, syscall.EPIPE) {
		t.Errorf("the holder's write after revoke: %d, %v; want EPIPE", n, err)
	}
	w.Write([]byte("mine"))
	r.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	got, err := io.ReadAll(r)
	if string(got) != "mine" || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("f's reader got %q, %v; want exactly what f wrote", got, err)
	}
}

// Revoke returns promptly while the forwarder is waiting for data, and so
// does the holder's read blocked at that moment; the end of ctx does the
// same.
func TestRevocableStreamRevokeBlocked(t *testing.T) {
	kinds := []struct {
		name string
		make func(t *testing.T) (f, peer *os.File)
	}{
		{"socket", func(t *testing.T) (*os.File, *os.File) { return streamPair(t, false) }},
		{"blocking-socket", func(t *testing.T) (*os.File, *os.File) { return streamPair(t, true) }},
		{"pipe", func(t *testing.T) (*os.File, *os.File) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			return r, w
		}},
	}
	for _, k := range kinds {
		for _, how := range []string{"revoke", "ctx"} {
			t.Run(k.name+"/"+how, func(t *testing.T) {
				f, peer := k.make(t)
				defer f.Close()
				defer peer.Close()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				end, revoke := revocable(t, ctx, f)
				defer end.Close()
				// One byte through, so that the forwarder has been
				// running and is now waiting for more.
				peer.Write([]byte("x"))
				if n, err := end.Read(make([]byte, 1)); n != 1 {
					t.Fatalf("holder read: %v", err)
				}
				time.Sleep(10 * time.Millisecond) // not an assertion: lets it park
				readDone := make(chan error, 1)
				go func() {
					n, err := end.Read(make([]byte, 1))
					if n != 0 {
						err = errors.New("read a byte nobody sent")
					}
					readDone <- err
				}()
				if how == "revoke" {
					within(t, time.Second, "revoke", revoke)
				} else {
					cancel()
				}
				select {
				case err := <-readDone:
					if err != io.EOF {
						t.Errorf("the holder's blocked read: %v; want EOF", err)
					}
				case <-time.After(time.Second):
					t.Fatal("the holder's blocked read did not end within 1s")
				}
				within(t, time.Second, "revoke", revoke)
			})
		}
	}
	t.Run("socket-streaming", func(t *testing.T) {
		a, b := streamPair(t, false)
		defer a.Close()
		defer b.Close()
		end, revoke := revocable(t, context.Background(), a)
		defer end.Close()
		writeErr, readDone := make(chan error, 1), make(chan struct{})
		go func() {
			data := make([]byte, 64<<10)
			for {
				if _, err := end.Write(data); err != nil {
					writeErr <- err
					return
				}
			}
		}()
		var got int
		go func() {
			defer close(readDone)
			buf := make([]byte, 64<<10)
			for {
				n, err := b.Read(buf)
				got += n
				if err != nil {
					return
				}
			}
		}()
		time.Sleep(50 * time.Millisecond) // not an assertion: lets bytes flow
		within(t, time.Second, "revoke", revoke)
		select {
		case err := <-writeErr:
			if !errors.Is(err, syscall.EPIPE) {
				t.Errorf("the holder's write: %v; want EPIPE", err)
			}
		case <-time.After(time.Second):
			t.Fatal("the holder's write did not fail within 1s of revoke")
		}
		b.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		<-readDone
		if got == 0 {
			t.Error("no bytes flowed before revoke")
		}
	})
	t.Run("pipe-write-full", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		end, revoke := revocable(t, context.Background(), w)
		defer end.Close()
		writeErr := make(chan error, 1)
		go func() {
			_, err := end.Write(make([]byte, 4<<20)) // more than the pipes hold: blocks
			writeErr <- err
		}()
		within(t, time.Second, "revoke", revoke)
		select {
		case err := <-writeErr:
			if !errors.Is(err, syscall.EPIPE) {
				t.Errorf("the holder's blocked write: %v; want EPIPE", err)
			}
		case <-time.After(time.Second):
			t.Fatal("the holder's blocked write did not end within 1s")
		}
	})
}

// revoke may be called from many goroutines at once, and again.
func TestRevocableStreamRevokeConcurrent(t *testing.T) {
	a, b := streamPair(t, false)
	defer a.Close()
	defer b.Close()
	end, revoke := revocable(t, context.Background(), a)
	defer end.Close()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(revoke)
	}
	within(t, time.Second, "8 concurrent revokes", wg.Wait)
	revoke()
}

// A blocking pipe keeps its mode (splice needs none for pipes); a
// blocking socket is non-blocking while forwarded and blocking again after.
// end is in f's mode.
func TestRevocableStreamBlockingModes(t *testing.T) {
	t.Run("pipe", func(t *testing.T) {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		r, w := os.NewFile(uintptr(p[0]), "r"), os.NewFile(uintptr(p[1]), "w")
		defer r.Close()
		defer w.Close()
		end, revoke := revocable(t, context.Background(), r)
		defer end.Close()
		if nonblocking(t, r) || nonblocking(t, end) {
			t.Errorf("non-blocking: f %v, end %v; want neither", nonblocking(t, r), nonblocking(t, end))
		}
		w.Write([]byte("abc"))
		buf := make([]byte, 3)
		if _, err := io.ReadFull(end, buf); err != nil || string(buf) != "abc" {
			t.Fatalf("read %q, %v", buf, err)
		}
		revoke()
		if nonblocking(t, r) {
			t.Error("f non-blocking after revoke")
		}
	})
	t.Run("socket", func(t *testing.T) {
		a, b := streamPair(t, true)
		defer a.Close()
		defer b.Close()
		end, revoke := revocable(t, context.Background(), a)
		defer end.Close()
		if !nonblocking(t, a) || nonblocking(t, end) {
			t.Errorf("non-blocking: f %v, end %v; want f only", nonblocking(t, a), nonblocking(t, end))
		}
		data := randomBytes(1<<20, 6)
		go end.Write(data)
		got := make([]byte, len(data))
		if _, err := io.ReadFull(b, got); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes, %v", len(got), err)
		}
		revoke()
		if nonblocking(t, a) {
			t.Error("f still non-blocking after revoke")
		}
	})
}

// A TCP connection is forwarded both ways like a Unix socket.
func TestRevocableStreamTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no loopback TCP: %v", err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.(*net.TCPConn).File()
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	end, revoke := revocable(t, context.Background(), f)
	defer revoke()
	defer end.Close()
	f.Close()
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	defer peer.Close()
	peer.SetDeadline(time.Now().Add(20 * time.Second))
	end.SetDeadline(time.Now().Add(20 * time.Second))

	up, down := randomBytes(1<<20+3, 7), randomBytes(1<<20+5, 8)
	errs := make(chan error, 2)
	go func() { errs <- transfer(end, shutter(end), peer, up) }()
	go func() { errs <- transfer(peer, peer.(*net.TCPConn).CloseWrite, end, down) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// Only bytes cross: a descriptor the holder sends along does not reach f's
// peer (it would be a capability smuggled past the forwarder).
func TestRevocableStreamDropsRights(t *testing.T) {
	a, b := streamPair(t, false)
	defer b.Close()
	end, revoke := revocable(t, context.Background(), a)
	defer revoke()
	defer end.Close()
	a.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	if err := control(t, end, func(fd int) error {
		return unix.Sendmsg(fd, []byte("with fd"), unix.UnixRights(int(devnull.Fd())), nil, 0)
	}); err != nil {
		t.Fatal(err)
	}
	shutWrite(t, end)
	buf, oob := make([]byte, 64), make([]byte, unix.CmsgSpace(4*4))
	var n, oobn int
	var got []byte
	for {
		var err error
		for {
			err = control(t, b, func(fd int) (err error) {
				n, oobn, _, _, err = unix.Recvmsg(fd, buf, oob, 0)
				return err
			})
			if err != unix.EAGAIN {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		if oobn != 0 {
			files, _ := parseRights(oob[:oobn])
			closeFiles(files)
			t.Fatalf("f's peer received %d bytes of control data (%d descriptors)", oobn, len(files))
		}
		if n == 0 {
			break
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "with fd" {
		t.Errorf("peer got %q", got)
	}
}

// What is not a pipe or a connected stream socket is refused, naming f,
// and the failure leaks nothing.
func TestRevocableStreamRefuses(t *testing.T) {
	dir := t.TempDir()
	open := func(t *testing.T, path string, flag int) *os.File {
		f, err := os.OpenFile(path, flag, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	socket := func(t *testing.T, typ int) *os.File {
		fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return os.NewFile(uintptr(fd), "socket")
	}
	cases := []struct {
		name  string
		make  func(t *testing.T) *os.File
		errno unix.Errno
		say   string
	}{
		{"regular file", func(t *testing.T) *os.File {
			return open(t, filepath.Join(dir, "file"), os.O_RDWR|os.O_CREATE)
		}, unix.EINVAL, "regular file"},
		{"directory", func(t *testing.T) *os.File { return open(t, dir, os.O_RDONLY) }, unix.EINVAL, "directory"},
		{"device", func(t *testing.T) *os.File { return open(t, os.DevNull, os.O_RDWR) }, unix.EINVAL, "character device"},
		{"fifo read-write", func(t *testing.T) *os.File {
			path := filepath.Join(dir, "fifo")
			if err := unix.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
			return open(t, path, os.O_RDWR)
		}, unix.EINVAL, "both reading and writing"},
		{"seqpacket", func(t *testing.T) *os.File {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(fds[1])
			return os.NewFile(uintptr(fds[0]), "seqpacket")
		}, unix.EINVAL, "type"},
		{"unconnected", func(t *testing.T) *os.File { return socket(t, unix.SOCK_STREAM) }, unix.ENOTCONN, "unconnected"},
		{"listening", func(t *testing.T) *os.File {
			f := socket(t, unix.SOCK_STREAM)
			control(t, f, func(fd int) error {
				if err := unix.Bind(fd, &unix.SockaddrUnix{Name: filepath.Join(dir, "sock")}); err != nil {
					return err
				}
				return unix.Listen(fd, 1)
			})
			return f
		}, unix.EINVAL, "listening"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := c.make(t)
			defer f.Close()
			before := openFDs(t)
			end, revoke, err := RevocableStream(context.Background(), f)
			if end != nil || revoke != nil {
				t.Errorf("got an end or a revoke with error %v", err)
			}
			if !errors.Is(err, c.errno) || !strings.Contains(err.Error(), f.Name()) || !strings.Contains(err.Error(), c.say) {
				t.Errorf("error %v; want %v, naming %s and saying %q", err, c.errno, f.Name(), c.say)
			}
			if after := openFDs(t); after != before {
				t.Errorf("%d descriptors before, %d after", before, after)
			}
		})
	}
	t.Run("done ctx", func(t *testing.T) {
		r, w, _ := os.Pipe()
		defer r.Close()
		defer w.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, err := RevocableStream(ctx, r); !errors.Is(err, context.Canceled) {
			t.Errorf("error %v; want context.Canceled", err)
		}
	})
}

// 200 forwarders of every kind, revoked or ending on their own in every
// way, leave no descriptor and no goroutine behind.
func TestRevocableStreamNoLeak(t *testing.T) {
	goroutines := runtime.NumGoroutine()
	before := openFDs(t)
	buf := make([]byte, 16)
	for i := range 200 {
		switch i % 6 {
		case 0: // socket, revoked
			a, b := streamPair(t, i%12 == 0)
			end, revoke := revocable(t, context.Background(), a)
			a.Close()
			b.Write([]byte("x"))
			io.ReadFull(end, buf[:1])
			revoke()
			end.Close()
			b.Close()
		case 1: // socket, both sides end
			a, b := streamPair(t, false)
			end, _ := revocable(t, context.Background(), a)
			a.Close()
			end.Write([]byte("x"))
			end.Close()
			io.ReadAll(b)
			b.Close()
		case 2: // socket, f's peer leaves first
			a, b := streamPair(t, false)
			end, _ := revocable(t, context.Background(), a)
			a.Close()
			b.Close()
			io.ReadAll(end)
			end.Close()
		case 3: // pipe read end, writer ends
			r, w, _ := os.Pipe()
			end, _ := revocable(t, context.Background(), r)
			r.Close()
			w.Write([]byte("x"))
			w.Close()
			io.ReadAll(end)
			end.Close()
		case 4: // pipe write end, holder ends
			r, w, _ := os.Pipe()
			end, _ := revocable(t, context.Background(), w)
			w.Close()
			end.Write([]byte("x"))
			end.Close()
			io.ReadAll(r)
			r.Close()
		case 5: // pipe, ctx ends
			r, w, _ := os.Pipe()
			ctx, cancel := context.WithCancel(context.Background())
			end, _ := revocable(t, ctx, w)
			w.Close()
			cancel()
			io.ReadAll(r) // EOF once the forwarder has let go of its copy
			r.Close()
			end.Close()
		}
	}
	waitFDs(t, before)
	waitGoroutines(t, goroutines)
}

// BenchmarkRevocableStream measures throughput from a writer to a reader
// straight through a socket pair or a pipe, and through a forwarder.
func BenchmarkRevocableStream(b *testing.B) {
	for _, kind := range []string{"socket", "pipe"} {
		for _, via := range []string{"direct", "forwarded"} {
			b.Run(kind+"/"+via, func(b *testing.B) {
				var w, r *os.File
				if kind == "socket" {
					w, r = streamPair(b, false)
				} else {
					var err error
					if r, w, err = os.Pipe(); err != nil {
						b.Fatal(err)
					}
				}
				if via == "forwarded" {
					end, revoke := revocable(b, context.Background(), w)
					defer revoke()
					w.Close()
					w = end
				}
				const chunk = 128 << 10
				data := make([]byte, chunk)
				done := make(chan int64)
				go func() {
					n, _ := io.Copy(io.Discard, r)
					done <- n
				}()
				b.SetBytes(chunk)
				cpu0 := cpuTime(b)
				b.ResetTimer()
				for range b.N {
					if _, err := w.Write(data); err != nil {
						b.Fatal(err)
					}
				}
				w.Close()
				if n := <-done; n != int64(b.N)*chunk {
					b.Fatalf("read %d bytes, want %d", n, int64(b.N)*chunk)
				}
				b.StopTimer()
				// CPU time (user and system, all threads) is steadier than
				// throughput on a busy machine.
				b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(int64(b.N)*chunk), "cpu-ns/B")
				r.Close()
			})
		}
	}
}

// cpuTime returns the CPU time the process has used, user and system.
func cpuTime(tb testing.TB) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
