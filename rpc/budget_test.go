package rpc

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/fdctl"
	"golang.org/x/sys/unix"
)

var fdctlControl = fdctl.Control

// fdsArgs carries descriptors in a call.
type fdsArgs struct{ F []FD }

// budgetHandler holds the descriptors of its "hold" calls until release is
// closed, returns the descriptors it was sent ("give"), returns size bytes
// of Bulk ("bulk"), and makes objects of its tree ("sub").
type budgetHandler struct {
	mu      sync.Mutex
	release chan struct{}
	holding atomic.Int64
	bulks   atomic.Int64
	size    int
}

func newBudgetHandler() *budgetHandler { return &budgetHandler{release: make(chan struct{})} }

func (h *budgetHandler) ServeCall(ctx context.Context, call *Call) (any, error) {
	switch call.Method {
	case "hold":
		h.mu.Lock()
		release := h.release
		h.mu.Unlock()
		h.holding.Add(1)
		defer h.holding.Add(-1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return "held", nil
	case "give":
		var a fdsArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		return a, nil
	case "bulk":
		h.bulks.Add(1)
		return Bulk("budget", make([]byte, h.size))
	case "sub":
		return call.Server.NewObject(context.WithoutCancel(ctx), h)
	case "root":
		return call.Server.NewObject(context.Background(), h)
	case "intree":
		return call.Server.NewObject(InTree(context.Background(), ctx), h)
	case "echo":
		return "echo", nil
	case "pipe":
		// The read end of a new pipe, non-blocking as Go's are; the
		// write end is closed.
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		w.Close()
		return FD{File: r}, nil
	}
	return nil, ErrUnknownMethod
}

// callMsg encodes call id of method carrying n descriptors (duplicates of
// w's), returning the message and the descriptors' files, which the
// caller closes once sent (sendFiles).
func callMsg(t *testing.T, id uint64, method string, w *os.File, n int) ([]byte, []*os.File) {
	t.Helper()
	var a fdsArgs
	for range n {
		fd, err := unix.FcntlInt(w.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		a.F = append(a.F, FD{File: os.NewFile(uintptr(fd), "w")})
	}
	body, files, err := encodeCall(method, a)
	if err != nil {
		t.Fatal(err)
	}
	return append(appendHeader(nil, kindCall, len(files), id), body...), files
}

// sendFiles sends msg with files on fd (flags as for sendmsg), then closes
// the files.
func sendFiles(fd int, msg []byte, files []*os.File, flags int) error {
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	err := unix.Sendmsg(fd, msg, oob, nil, flags)
	closeFiles(files)
	return err
}

// sendCall sends a call made by callMsg on p.
func (p *rawPeer) sendCall(msg []byte, files []*os.File) {
	p.t.Helper()
	if err := sendFiles(p.fd, msg, files, 0); err != nil {
		p.t.Fatalf("sendmsg: %v", err)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
	}
}

// noReply checks that nothing comes on p for d.
func (p *rawPeer) noReply(d time.Duration) {
	p.t.Helper()
	pfd := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	n, _ := unix.Poll(pfd, int(d/time.Millisecond))
	if n > 0 {
		kind, id, e := p.reply()
		p.t.Fatalf("a reply came (kind %d id %d error %v); want none while the tree is past its budget", kind, id, e)
	}
}

// TestTreeFDBudget: the descriptors held for one tree's calls are bounded
// by MaxTreeFDs, across the tree's objects: a call that would take it past
// fails with EMFILE and its descriptors are closed, a tree at its bound
// still reads (calls without descriptors, cancels), and another tree is
// not affected.
func TestTreeFDBudget(t *testing.T) {
	srv := &Server{MaxTreeFDs: 16}
	h := newBudgetHandler()
	p := rawPair(t, srv, h)
	// A second object of p's tree, made in a call.
	p.send(append(header(Version, kindCall, 0, 1), cborOf(t, "sub", nil)...))
	sub := &rawPeer{t: t, fd: recvObject(t, p.fd)}
	t.Cleanup(func() { unix.Close(sub.fd) })
	_, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	// 7 + 7 held, on two objects of the tree.
	p.sendCall(callMsg(t, 2, "hold", w, 7))
	sub.sendCall(callMsg(t, 3, "hold", w, 7))
	waitFor(t, "2 calls holding", func() bool { return h.holding.Load() == 2 })

	// 7 more would be 21 > 16: refused, its descriptors closed.
	rp, wfds := pipeWithEnds(t, 1)
	wf := os.NewFile(uintptr(wfds[0]), "w")
	p.sendCall(callMsg(t, 4, "hold", wf, 7))
	wf.Close()
	p.wantError(4, CodeFailed, "too many descriptors")
	wantAllClosed(t, rp)
	// Calls without descriptors still go (14 < 16).
	p.echo(5)

	// Another tree holds its own.
	q := rawPair(t, srv, h)
	q.sendCall(callMsg(t, 1, "hold", w, 14))
	waitFor(t, "3 calls holding", func() bool { return h.holding.Load() == 3 })
	q.echo(2)

	close(h.release)
	if kind, got, e := p.reply(); kind != kindReply || got != 2 {
		t.Fatalf("reply kind %d id %d %v, want the reply to 2", kind, got, e)
	}
	// Once the calls are answered, the tree has room again: a call of 16,
	// the bound, is taken.
	waitFor(t, "the holds to end", func() bool { return h.holding.Load() == 0 })
	h.mu.Lock()
	h.release = make(chan struct{})
	h.mu.Unlock()
	p.sendCall(callMsg(t, 6, "hold", w, 16))
	waitFor(t, "a call holding 16", func() bool { return h.holding.Load() == 1 })
	// At the bound the object still reads: a call without descriptors
	// runs, one with a descriptor is refused, and a cancel arrives (a
	// tree that read nothing at its bound would wait for ever for calls
	// that end only when cancelled).
	p.echo(7)
	p.sendCall(callMsg(t, 8, "hold", w, 1))
	p.wantError(8, CodeFailed, "too many descriptors")
	p.send(header(Version, kindCancel, 0, 6))
	if _, got, e := p.reply(); got != 6 {
		t.Fatalf("after the cancel of 6: a reply to %d (%v)", got, e)
	}
	p.sendCall(callMsg(t, 9, "give", w, 1))
	if kind, got, e := p.reply(); kind != kindReply || got != 9 {
		t.Fatalf("give after the cancel: kind %d id %d %v", kind, got, e)
	}
}

// echo makes an echo call and checks its reply.
func (p *rawPeer) echo(id uint64) {
	p.t.Helper()
	p.send(append(header(Version, kindCall, 0, id), cborOf(p.t, "echo", nil)...))
	if kind, got, e := p.reply(); kind != kindReply || got != id {
		p.t.Fatalf("echo %d: kind %d id %d error %v", id, kind, got, e)
	}
}

// TestManyObjectsFDs: a peer whose descriptor-carrying calls do not end
// (they wait, or their replies wait for a peer that reads none) on many
// objects of its tree makes the server hold at most the tree's budget, not
// (2×MaxConcurrent+1) × the descriptors of a call per object; once it
// goes, all are closed. (Few descriptors per call and few calls: the
// descriptors in flight in sockets count against the user's limit for
// every process of the user, other tests' too.)
func TestManyObjectsFDs(t *testing.T) {
	const budget, objects, perCall, calls = 64, 4, 8, 40
	srv := &Server{MaxTreeFDs: budget}
	h := newBudgetHandler()
	defer close(h.release)
	_, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	before := openFDs(t)
	root := serveEnd(t, srv, h)
	objs := []int{root}
	for i := range objects - 1 {
		p := &rawPeer{t: t, fd: root}
		p.send(append(header(Version, kindCall, 0, uint64(100+i)), cborOf(t, "sub", nil)...))
		objs = append(objs, recvObject(t, root))
	}
	sent := 0
	for _, o := range objs {
		for id := uint64(1); id <= calls; id++ {
			m, files := callMsg(t, id, "hold", w, perCall)
			if err := sendFiles(o, m, files, unix.MSG_DONTWAIT); err != nil {
				t.Fatalf("sending call %d: %v", id, err)
			}
			sent++
		}
	}
	time.Sleep(200 * time.Millisecond)
	held := openFDs(t) - before - len(objs)*2 // each object: its two ends
	t.Logf("%d calls of %d descriptors sent to %d objects; the server holds %d descriptors (budget %d)", sent, perCall, len(objs), held, budget)
	if held > budget+perCall {
		t.Errorf("the server holds %d descriptors for one tree, want at most %d", held, budget+perCall)
	}
	if n := srv.held.Load(); n > budget {
		t.Errorf("counted %d held, budget %d", n, budget)
	}
	for _, o := range objs {
		unix.Close(o)
	}
	waitFor(t, "the objects to end and their descriptors to close", func() bool {
		return openFDs(t) <= before && srv.held.Load() == 0
	})
}

// TestTreeBulkBudget: a peer that asks for bulk replies and reads none
// makes the server keep at most about MaxTreeBulk of them; once it reads
// them, the rest are served.
func TestTreeBulkBudget(t *testing.T) {
	const size = 256 << 10
	const budget = 4 << 20
	srv := &Server{MaxTreeBulk: budget}
	h := newBudgetHandler()
	h.size = size
	p := rawPair(t, srv, h)
	sent := 0
	for id := uint64(1); id <= 400; id++ {
		m := append(header(Version, kindCall, 0, id), cborOf(t, "bulk", nil)...)
		if err := unix.Sendmsg(p.fd, m, nil, nil, unix.MSG_DONTWAIT); err != nil {
			break
		}
		sent++
	}
	time.Sleep(300 * time.Millisecond)
	made := h.bulks.Load()
	t.Logf("%d bulk calls sent; %d replies made (%d KiB each, budget %d KiB)", sent, made, size>>10, budget>>10)
	// The budget, and the calls read before it was reached: MaxConcurrent
	// running, as many waiting.
	if max := int64(budget/size + 2*16 + 1); made > max {
		t.Errorf("%d bulk replies made with none read, want at most %d", made, max)
	}
	if made >= int64(sent) {
		t.Fatalf("every call was served with no reply read")
	}
	for range sent {
		if kind, _, e := p.reply(); kind != kindReply {
			t.Fatalf("bulk reply: %v", e)
		}
	}
	if n := h.bulks.Load(); n != int64(sent) {
		t.Errorf("%d bulk replies made, want %d", n, sent)
	}
}

// TestTreeObjects: MaxTreeObjects bounds the objects of one tree (made in
// its calls), not the server's others.
func TestTreeObjects(t *testing.T) {
	ctx := context.Background()
	srv := &Server{MaxTreeObjects: 2}
	h := newBudgetHandler()
	c, _ := pairWith(t, srv, h)
	var sub FD
	if err := c.Call(ctx, "sub", nil, &sub); err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var more FD
	if err := c.Call(ctx, "sub", nil, &more); !errors.Is(err, syscall.EAGAIN) {
		more.Close()
		t.Fatalf("a third object in the tree: %v, want EAGAIN", err)
	}
	// Nor with a context of the server's own that InTree puts in it.
	if err := c.Call(ctx, "intree", nil, &more); !errors.Is(err, syscall.EAGAIN) {
		more.Close()
		t.Fatalf("a third object in the tree, by InTree: %v, want EAGAIN", err)
	}
	// Objects made from no call root trees of their own.
	var root FD
	if err := c.Call(ctx, "root", nil, &root); err != nil {
		t.Fatalf("a new root: %v", err)
	}
	defer root.Close()
	c2, _ := pairWith(t, srv, h)
	var sub2 FD
	if err := c2.Call(ctx, "sub", nil, &sub2); err != nil {
		t.Fatalf("another tree's object: %v", err)
	}
	sub2.Close()
	// One of the tree's ends: room again.
	sub.Close()
	waitFor(t, "room in the tree", func() bool {
		var o FD
		err := c.Call(ctx, "sub", nil, &o)
		o.Close()
		return err == nil
	})
}

// recvObject reads a reply carrying one object on fd and returns it.
func recvObject(t *testing.T, fd int) int {
	t.Helper()
	o, ok := tryRecvObject(t, fd)
	if !ok {
		t.Fatal("a reply without an object")
	}
	return o
}

// callUnread sends call 1 of method on the raw socket fd and waits until
// its reply is queued there, leaving it unread.
func callUnread(t *testing.T, fd int, method string) {
	t.Helper()
	if err := unix.Sendmsg(fd, append(header(Version, kindCall, 0, 1), cborOf(t, method, nil)...), nil, nil, 0); err != nil {
		t.Fatal(err)
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, _ := unix.Poll(pfd, 5000); n != 1 {
		t.Fatalf("no reply to %s within 5s", method)
	}
}

// tryRecvObject reads a reply on fd and returns the object it carries, or
// false if it carries none (an error).
func tryRecvObject(t *testing.T, fd int) (int, bool) {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, _ := unix.Poll(pfd, 5000); n != 1 {
		t.Fatal("no reply within 5s")
	}
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	_, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
	if err != nil {
		t.Fatal(err)
	}
	files, err := parseRights(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 {
		closeFiles(files)
		return -1, false
	}
	o, err := unix.Dup(int(files[0].Fd()))
	if err != nil {
		t.Fatal(err)
	}
	files[0].Close()
	return o, true
}

// TestTreeBulkLinger: replies left unread in an object's socket after the
// object ended (its peer shut its writing down and kept the socket) still
// count against the tree's bulk budget, until the peer reads or closes.
func TestTreeBulkLinger(t *testing.T) {
	const size = 1 << 20
	srv := &Server{MaxTreeBulk: size}
	h := newBudgetHandler()
	h.size = size
	p := rawPair(t, srv, h)
	p.send(append(header(Version, kindCall, 0, 1), cborOf(t, "sub", nil)...))
	child := recvObject(t, p.fd)
	defer unix.Close(child)
	callUnread(t, child, "bulk")
	// The object ends (its peer will send nothing more), the reply stays
	// in the socket the peer keeps.
	unix.Shutdown(child, unix.SHUT_WR)
	waitFor(t, "the object to end", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.conns) == 1
	})
	// The tree is at its budget: a call waits.
	p.send(append(header(Version, kindCall, 0, 2), cborOf(t, "sub", nil)...))
	p.noReply(100 * time.Millisecond)
	if n := h.bulks.Load(); n != 1 {
		t.Fatalf("%d bulk replies made, want 1", n)
	}
	// The peer closes the socket, unread: the call goes on.
	unix.Close(child)
	o := recvObject(t, p.fd)
	unix.Close(o)
	waitFor(t, "the kept socket to be closed", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.lingerN == 0 && srv.held.Load() == 0
	})
}

// TestReplyKeepsBlockingMode: counting a reply's bulk leaves its
// descriptors' file descriptions as they are (os.File.Fd would make them
// blocking, for the receiver too).
func TestReplyKeepsBlockingMode(t *testing.T) {
	c, _ := pairWith(t, &Server{}, newBudgetHandler())
	var fd FD
	if err := c.Call(context.Background(), "pipe", nil, &fd); err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	var fl int
	if err := fdctlControl(fd.File, func(n int) (err error) {
		fl, err = unix.FcntlInt(uintptr(n), unix.F_GETFL, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if fl&unix.O_NONBLOCK == 0 {
		t.Errorf("the pipe's read end arrived in blocking mode (flags %#x); it was sent non-blocking", fl)
	}
}

// TestLingerBounded: the sockets the server keeps for ended objects whose
// replies wait unread count against MaxObjects, and no more are kept past
// it; the peer of one reads what was queued and then the end of file; and
// once the peers close their ends, the server closes its duplicates.
func TestLingerBounded(t *testing.T) {
	srv := &Server{MaxObjects: 3}
	defer srv.Shutdown(context.Background())
	h := newBudgetHandler()
	before := openFDs(t)
	var kept []int
	defer func() {
		for _, fd := range kept {
			unix.Close(fd)
		}
	}()
	for range 6 {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.ServeFile(context.Background(), os.NewFile(uintptr(fds[1]), "server"), h); err != nil {
			unix.Close(fds[0])
			continue // too many objects: the kept sockets count
		}
		kept = append(kept, fds[0])
		callUnread(t, fds[0], "pipe")
		unix.Shutdown(fds[0], unix.SHUT_WR)
		waitFor(t, "the object to end", func() bool {
			srv.mu.Lock()
			defer srv.mu.Unlock()
			return len(srv.conns) == 0
		})
	}
	srv.mu.Lock()
	n := srv.lingerN
	srv.mu.Unlock()
	extra := openFDs(t) - before - len(kept)
	t.Logf("%d peers kept their ends with a reply unread; the server keeps %d sockets (%d descriptors more)", len(kept), n, extra)
	if n > 3 || extra > 3 {
		t.Errorf("the server keeps %d sockets (%d descriptors), want at most MaxObjects (3)", n, extra)
	}
	// The peer reads the reply, then the end of file.
	p := &rawPeer{t: t, fd: kept[0]}
	if kind, _, e := p.reply(); kind != kindReply {
		t.Fatalf("the queued reply: %v", e)
	}
	buf := make([]byte, 64)
	if n, _, _, _, err := unix.Recvmsg(kept[0], buf, nil, 0); n != 0 || err != nil {
		t.Fatalf("after the queued reply: %d bytes, %v; want the end of file", n, err)
	}
	for _, fd := range kept {
		unix.Close(fd)
	}
	kept = nil
	waitFor(t, "the kept sockets to be closed", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.lingerN == 0 && openFDs(t) <= before
	})
}
