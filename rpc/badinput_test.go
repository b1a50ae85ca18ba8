package rpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"golang.org/x/sys/unix"
)

// A rawPeer is the client end of an object driven byte by byte, to send
// what no Client would.
type rawPeer struct {
	t  *testing.T
	fd int
}

// rawPair serves h on one end of a socket pair and returns the other end
// as a rawPeer.
func rawPair(t *testing.T, srv *Server, h Handler) *rawPeer {
	t.Helper()
	p := &rawPeer{t: t, fd: serveEnd(t, srv, h)}
	t.Cleanup(func() {
		unix.Close(p.fd)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return p
}

func header(version, kind byte, nfds int, id uint64) []byte {
	b := []byte{version, kind, 0, 0}
	binary.LittleEndian.PutUint16(b[2:], uint16(nfds))
	return binary.LittleEndian.AppendUint64(b, id)
}

func cborOf(t *testing.T, vs ...any) []byte {
	t.Helper()
	var b []byte
	for _, v := range vs {
		e, err := encMode.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, e...)
	}
	return b
}

func (p *rawPeer) send(msg []byte, fds ...int) {
	p.t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(p.fd, msg, oob, nil, 0); err != nil {
		p.t.Fatalf("sendmsg: %v", err)
	}
}

// reply reads one message and returns its kind, id and, for an error, the
// decoded *Error. It fails the test after 5s.
func (p *rawPeer) reply() (kind byte, id uint64, e *Error) {
	p.t.Helper()
	pfd := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, 5000)
	for err == unix.EINTR { // the runtime's preemption signals interrupt it
		n, err = unix.Poll(pfd, 5000)
	}
	if n != 1 || err != nil {
		p.t.Fatalf("no reply within 5s (poll %d, %v)", n, err)
	}
	buf := make([]byte, 1<<17)
	oob := make([]byte, unix.CmsgSpace(64*4))
	n, oobn, _, _, err := unix.Recvmsg(p.fd, buf, oob, 0)
	if err != nil {
		p.t.Fatalf("recvmsg: %v", err)
	}
	if oobn > 0 {
		files, _ := parseRights(oob[:oobn])
		closeFiles(files)
	}
	if n < headerLen {
		p.t.Fatalf("reply of %d bytes", n)
	}
	kind, id = buf[1], binary.LittleEndian.Uint64(buf[4:])
	if kind == kindError {
		e = decodeError(buf[headerLen:n], nil)
	}
	return kind, id, e
}

// wantError reads a reply and checks it is an error of code for call id.
func (p *rawPeer) wantError(id uint64, code Code, text string) {
	p.t.Helper()
	kind, gotID, e := p.reply()
	if kind != kindError || gotID != id || e == nil || e.Code != code || !strings.Contains(e.Text, text) {
		p.t.Fatalf("reply kind %d id %d error %v; want error %v %q for call %d", kind, gotID, e, code, text, id)
	}
}

// echoWorks makes a good call and checks its reply: the connection
// survived what came before.
func (p *rawPeer) echoWorks(id uint64) {
	p.t.Helper()
	p.send(append(header(Version, kindCall, 0, id), cborOf(p.t, "echo", echoArgs{Text: "ok", N: 1})...))
	kind, gotID, e := p.reply()
	if kind != kindReply || gotID != id {
		p.t.Fatalf("echo after bad input: kind %d id %d error %v", kind, gotID, e)
	}
}

// pipeWithEnds returns a pipe's read end and n descriptors of its write
// end. Once all of them are closed, the read end reads EOF: that is how a
// test sees that the server closed every descriptor it was sent.
func pipeWithEnds(t *testing.T, n int) (*os.File, []int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	t.Cleanup(func() { r.Close() })
	fds := make([]int, n)
	for i := range fds {
		if fds[i], err = unix.FcntlInt(w.Fd(), unix.F_DUPFD_CLOEXEC, 0); err != nil {
			t.Fatal(err)
		}
	}
	return r, fds
}

// sendAndForget sends a message carrying fds, then closes the test's
// copies of them.
func (p *rawPeer) sendAndForget(msg []byte, fds []int) {
	p.t.Helper()
	p.send(msg, fds...)
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// wantAllClosed checks that every write end of r's pipe is closed, ours
// and the server's copies.
func wantAllClosed(t *testing.T, r *os.File) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(r)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		r.Close()
		t.Fatal("the server kept descriptors it was sent (the pipe never reached EOF)")
	}
}

func TestBadInput(t *testing.T) {
	srv := &Server{MaxMessage: 1024, MaxFDs: 4}
	p := rawPair(t, srv, testHandler(t))
	parent := t
	run := func(name string, f func(t *testing.T)) {
		parent.Run(name, func(t *testing.T) {
			p.t = t
			defer func() { p.t = parent }()
			f(t)
		})
	}

	run("short", func(t *testing.T) {
		p.send([]byte{1, 2, 3})
		p.echoWorks(1)
	})
	run("empty body", func(t *testing.T) {
		p.send(header(Version, kindCall, 0, 2))
		p.wantError(2, CodeBadMessage, "method name")
		p.echoWorks(3)
	})
	run("version", func(t *testing.T) {
		p.send(append(header(9, kindCall, 0, 4), cborOf(t, "echo", echoArgs{})...))
		p.wantError(4, CodeVersion, "version 9")
		p.echoWorks(5)
	})
	run("too big", func(t *testing.T) {
		for _, size := range []int{1025, 1 << 16} {
			msg := append(header(Version, kindCall, 0, 6), cborOf(t, "echo", echoArgs{Text: strings.Repeat("x", size)})...)
			p.send(msg)
			p.wantError(6, CodeTooBig, "larger than 1024")
		}
		p.echoWorks(7)
	})
	run("too many fds", func(t *testing.T) {
		r, fds := pipeWithEnds(t, 5)
		p.sendAndForget(append(header(Version, kindCall, 5, 8), cborOf(t, "write", pipeArgs{Text: "x"}, []int{0, 1, 2, 3, 4})...), fds)
		p.wantError(8, CodeTooManyFDs, "5 descriptors")
		wantAllClosed(t, r)
		p.echoWorks(9)
	})
	run("fd count mismatch", func(t *testing.T) {
		r, fds := pipeWithEnds(t, 2)
		p.sendAndForget(append(header(Version, kindCall, 3, 10), cborOf(t, "write", pipeArgs{Text: "x"}, []int{0, 1})...), fds)
		p.wantError(10, CodeBadMessage, "header says 3")
		wantAllClosed(t, r)
		p.echoWorks(11)
	})
	run("fd list missing", func(t *testing.T) {
		r, fds := pipeWithEnds(t, 1)
		p.sendAndForget(append(header(Version, kindCall, 1, 12), cborOf(t, "write", pipeArgs{Text: "x"})...), fds)
		p.wantError(12, CodeBadMessage, "descriptor list")
		wantAllClosed(t, r)
		p.echoWorks(13)
	})
	run("fd tag out of range", func(t *testing.T) {
		// The args name descriptor 7 of a list that has one entry.
		r, fds := pipeWithEnds(t, 1)
		args := cborOf(t, map[string]any{"W": rawFDTag(7), "Text": "x"})
		p.sendAndForget(append(append(header(Version, kindCall, 1, 14), cborOf(t, "write")...), append(args, cborOf(t, []int{3})...)...), fds)
		p.wantError(14, CodeBadMessage, "")
		wantAllClosed(t, r)
		p.echoWorks(15)
	})
	run("fds to a method that takes none", func(t *testing.T) {
		r, fds := pipeWithEnds(t, 2)
		p.sendAndForget(append(header(Version, kindCall, 2, 16), cborOf(t, "echo", echoArgs{}, []int{5, 6})...), fds)
		if kind, id, e := p.reply(); kind != kindReply || id != 16 {
			t.Fatalf("echo with stray fds: kind %d id %d %v", kind, id, e)
		}
		wantAllClosed(t, r)
	})
	run("fds to an unknown method", func(t *testing.T) {
		r, fds := pipeWithEnds(t, 1)
		p.sendAndForget(append(header(Version, kindCall, 1, 17), cborOf(t, "nope", nil, []int{5})...), fds)
		p.wantError(17, CodeUnknownMethod, "nope")
		wantAllClosed(t, r)
	})
	run("malformed cbor", func(t *testing.T) {
		for i, body := range [][]byte{
			{0xff},                          // a break out of nowhere
			{0x64, 'e', 'c'},                // truncated text
			append(cborOf(t, "echo"), 0x5f), // indefinite length: forbidden
			append(cborOf(t, "echo"), 0xa1, 0x64, 'T', 'e', 'x', 't'),     // map without its value
			append(cborOf(t, "echo", echoArgs{}), 0x00),                   // trailing bytes
			cborOf(t, 42, echoArgs{}),                                     // method is not text
			append(cborOf(t, "echo"), bytes.Repeat([]byte{0x81}, 100)...), // nested too deep
		} {
			id := uint64(100 + i)
			p.send(append(header(Version, kindCall, 0, id), body...))
			p.wantError(id, CodeBadMessage, "")
		}
		p.echoWorks(18)
	})
	run("unknown kind", func(t *testing.T) {
		p.send(append(header(Version, 77, 0, 19), cborOf(t, "echo", echoArgs{})...))
		p.wantError(19, CodeBadMessage, "kind 77")
		// A reply or cancel for a call that does not exist is ignored.
		p.send(header(Version, kindReply, 0, 20))
		p.send(header(Version, kindCancel, 0, 21))
		p.echoWorks(22)
	})
	run("one-way bad messages get no reply", func(t *testing.T) {
		p.send(append(header(9, kindCall, 0, 0), cborOf(t, "echo", echoArgs{})...))
		p.send(append(header(Version, kindCall, 0, 0), 0xff))
		p.send(append(header(Version, kindCall, 0, 0), cborOf(t, "nope", nil)...))
		p.echoWorks(23) // the next message is its reply, not an error
	})
}

// rawFDTag is an FD as it looks on the wire, for a test to forge.
type rawFDTag uint32

func (n rawFDTag) MarshalCBOR() ([]byte, error) {
	return encMode.Marshal(cbor.Tag{Number: fdTag, Content: uint32(n)})
}

// TestCtrunc checks a message whose descriptors the kernel truncated: the
// receiver's control buffer here is made too small on purpose.
func TestCtrunc(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	uc, err := unixConn(os.NewFile(uintptr(fds[1]), "receiver"))
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(uc, 0, 0)
	defer c.c.Close()
	c.oob = make([]byte, unix.CmsgSpace(2*4))
	r, ends := pipeWithEnds(t, 5)
	p := &rawPeer{t: t, fd: fds[0]}
	p.sendAndForget(append(header(Version, kindCall, 5, 3), cborOf(t, "write", nil, []int{0, 1, 2, 3, 4})...), ends)
	_, err = c.recv()
	var re *recvError
	if !errors.As(err, &re) || re.err.Code != CodeTooManyFDs || re.id != 3 || !strings.Contains(re.err.Text, "MSG_CTRUNC") {
		t.Fatalf("recv = %v, want a CodeTooManyFDs recvError for call 3", err)
	}
	wantAllClosed(t, r) // the two that arrived were closed
}

// TestPeerVanishes checks that a call in flight sees its context end when
// the caller goes away, and that the server then forgets the object.
func TestPeerVanishes(t *testing.T) {
	srv := &Server{}
	ended := make(chan error, 1)
	h := Methods{"wait": func(ctx context.Context, call *Call) (any, error) {
		<-ctx.Done()
		ended <- ctx.Err()
		return nil, ctx.Err()
	}}
	p := &rawPeer{t: t, fd: serveEnd(t, srv, h)}
	p.send(append(header(Version, kindCall, 0, 1), cborOf(t, "wait", nil)...))
	time.Sleep(10 * time.Millisecond)
	unix.Close(p.fd)
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's context did not end when the peer vanished")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after the peer vanished: %v", err)
	}
}

// TestFlood checks backpressure: a peer that sends calls faster than the
// handler runs them fills its socket buffer and blocks, rather than making
// the server queue without bound; once the handler is released every call
// is answered.
func TestFlood(t *testing.T) {
	b := newBlocker()
	srv := &Server{MaxConcurrent: 2}
	p := rawPair(t, srv, b)
	sent := 0
	for {
		msg := append(header(Version, kindCall, 0, uint64(sent+1)), cborOf(t, "slow", nil)...)
		err := unix.Sendmsg(p.fd, msg, nil, nil, unix.MSG_DONTWAIT)
		if errors.Is(err, syscall.EAGAIN) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sent++
		if sent > 1_000_000 {
			t.Fatal("a million calls queued without backpressure")
		}
	}
	time.Sleep(20 * time.Millisecond)
	if _, most := b.counts(); most > 2 {
		t.Errorf("%d calls ran at once, MaxConcurrent is 2", most)
	}
	t.Logf("%d calls sent before the socket pushed back", sent)
	close(b.release)
	seen := map[uint64]bool{}
	for range sent {
		kind, id, e := p.reply()
		if kind != kindReply {
			t.Fatalf("reply to %d: kind %d, %v", id, kind, e)
		}
		seen[id] = true
	}
	if len(seen) != sent {
		t.Fatalf("%d distinct replies to %d calls", len(seen), sent)
	}
}
