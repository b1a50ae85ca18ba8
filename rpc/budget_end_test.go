package rpc

import (
	"context"
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// onlyTree returns the tree of srv's objects, all of one tree.
func onlyTree(t *testing.T, srv *Server) *tree {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for sc := range srv.conns {
		return sc.t
	}
	t.Fatal("no object")
	return nil
}

func nConns(srv *Server) int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return len(srv.conns)
}

// TestRevokedObjectSettles: an object revoked while a reply with bulk is
// queued unread, whose peer then reads that reply (as rpc.Client does: up
// to its own reply) but not the object's last message, leaves nothing
// counted: the tree's calls do not wait for a last message nobody reads.
func TestRevokedObjectSettles(t *testing.T) {
	const size = 1 << 20
	srv := &Server{MaxTreeBulk: size}
	bh := newBudgetHandler()
	bh.size = size
	child, revoke := Revocable(bh)
	root := Methods{
		"sub": func(ctx context.Context, call *Call) (any, error) {
			return call.Server.NewObject(context.WithoutCancel(ctx), child)
		},
		"echo": func(ctx context.Context, call *Call) (any, error) { return "echo", nil },
	}
	c, _ := pairWith(t, srv, root)
	ctx := context.Background()
	var sub FD
	if err := c.Call(ctx, "sub", nil, &sub); err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	cfd := int(sub.File.Fd())
	callUnread(t, cfd, "bulk")
	// Revoked with the reply queued (not yet read).
	revoke()
	waitFor(t, "the child to end", func() bool { return nConns(srv) == 1 })
	// The peer reads its reply (and closes the memfd), as a client whose
	// caller waited for it does; it reads nothing more.
	p := &rawPeer{t: t, fd: cfd}
	if kind, id, e := p.reply(); kind != kindReply || id != 1 {
		t.Fatalf("reply: kind %d id %d %v", kind, id, e)
	}
	tr := onlyTree(t, srv)
	time.Sleep(300 * time.Millisecond) // several sweeps
	tr.mu.Lock()
	t.Logf("after the peer read its reply: unreadBulk=%d linger=%d lingerN=%d", tr.unreadBulk.Load(), len(tr.linger), srv.lingerN)
	tr.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := c.Call(cctx, "echo", nil, nil); err != nil {
		t.Errorf("a call on the root, the tree's peers having read every reply: %v", err)
	}
}

// TestAdmittedCallDoesNotHoldQueue: a call let run from the queue of calls
// waiting for room does not hold the queue for as long as it runs: a call
// queued behind it, which it waits for, runs once there is room.
func TestAdmittedCallDoesNotHoldQueue(t *testing.T) {
	const size = 1 << 20
	srv := &Server{MaxTreeBulk: size}
	bh := newBudgetHandler()
	bh.size = size
	ev := make(chan struct{})
	root := Methods{
		"sub": func(ctx context.Context, call *Call) (any, error) {
			return call.Server.NewObject(context.WithoutCancel(ctx), bh)
		},
		"wait": func(ctx context.Context, call *Call) (any, error) {
			select {
			case <-ev:
				return "woken", nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
		"signal": func(ctx context.Context, call *Call) (any, error) { close(ev); return "ok", nil },
		"echo":   func(ctx context.Context, call *Call) (any, error) { return "echo", nil },
	}
	c, _ := pairWith(t, srv, root)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sub FD
	if err := c.Call(ctx, "sub", nil, &sub); err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	cfd := int(sub.File.Fd())
	// The child's peer is slow: its bulk reply waits unread, the tree is
	// at its budget.
	callUnread(t, cfd, "bulk")
	var tr *tree
	srv.mu.Lock()
	for sc := range srv.conns {
		tr = sc.t
	}
	srv.mu.Unlock()
	waitFor(t, "the bulk counted", func() bool { return tr.unreadBulk.Load() == size })
	qlen := func() int { tr.mu.Lock(); defer tr.mu.Unlock(); return len(tr.waitq) }
	waitDone := make(chan error, 1)
	go func() { waitDone <- c.Call(ctx, "wait", nil, nil) }()
	waitFor(t, "wait to queue", func() bool { return qlen() == 1 })
	sigDone := make(chan error, 1)
	go func() { sigDone <- c.Call(ctx, "signal", nil, nil) }()
	waitFor(t, "signal to queue", func() bool { return qlen() == 2 })
	// The slow peer reads its reply: room.
	p := &rawPeer{t: t, fd: cfd}
	p.reply()
	select {
	case err := <-sigDone:
		t.Logf("signal ran: %v", err)
	case <-time.After(time.Second):
		tr.mu.Lock()
		t.Errorf("signal still waits 1s after room came back: hasRoom=%v admitted=%d waitq=%d", tr.hasRoom(), tr.admitted, len(tr.waitq))
		tr.mu.Unlock()
	}
	// Meanwhile a new call goes straight through.
	ectx, ecancel := context.WithTimeout(ctx, time.Second)
	defer ecancel()
	if err := c.Call(ectx, "echo", nil, nil); err != nil {
		t.Errorf("echo: %v", err)
	}
	cancel()
	<-waitDone
}

// TestLingerCountsInTree: an ended object's kept socket keeps its place in
// its tree's objects, so a tree bounded to 2 objects cannot keep all of
// MaxObjects and have other peers' objects refused.
func TestLingerCountsInTree(t *testing.T) {
	srv := &Server{MaxObjects: 6, MaxTreeObjects: 2}
	defer srv.Shutdown(context.Background())
	h := newBudgetHandler()
	p := rawPair(t, srv, h)
	var kept []int
	defer func() {
		for _, fd := range kept {
			unix.Close(fd)
		}
	}()
	for i := range 5 {
		p.send(append(header(Version, kindCall, 0, uint64(i+1)), cborOf(t, "sub", nil)...))
		child, ok := tryRecvObject(t, p.fd)
		if !ok {
			t.Logf("sub %d refused (the tree's kept sockets count)", i)
			break
		}
		kept = append(kept, child)
		callUnread(t, child, "pipe")
		unix.Shutdown(child, unix.SHUT_WR)
		waitFor(t, "the child to end", func() bool { return nConns(srv) == 1 })
	}
	srv.mu.Lock()
	n := srv.lingerN
	srv.mu.Unlock()
	t.Logf("tree bounded to 2 objects; server keeps %d of its sockets (MaxObjects 6)", n)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	if err := srv.ServeFile(context.Background(), os.NewFile(uintptr(fds[1]), "other"), h); err != nil {
		var e *Error
		if errors.As(err, &e) && e.Errno == syscall.EAGAIN {
			t.Errorf("another peer's object refused: %v", err)
		} else {
			t.Fatal(err)
		}
	}
}

// TestLingerTreesForgotten: the server forgets a tree once it keeps no
// socket, rather than every tree that ever kept one until Shutdown.
func TestLingerTreesForgotten(t *testing.T) {
	srv := &Server{}
	defer srv.Shutdown(context.Background())
	h := newBudgetHandler()
	for range 20 {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.ServeFile(context.Background(), os.NewFile(uintptr(fds[1]), "s"), h); err != nil {
			t.Fatal(err)
		}
		unix.Sendmsg(fds[0], append(header(Version, kindCall, 0, 1), cborOf(t, "pipe", nil)...), nil, nil, 0)
		pfd := []unix.PollFd{{Fd: int32(fds[0]), Events: unix.POLLIN}}
		unix.Poll(pfd, 5000)
		unix.Shutdown(fds[0], unix.SHUT_WR)
		waitFor(t, "end", func() bool {
			srv.mu.Lock()
			defer srv.mu.Unlock()
			return len(srv.conns) == 0 && srv.lingerN == 1
		})
		unix.Close(fds[0])
		waitFor(t, "unlinger", func() bool {
			srv.mu.Lock()
			defer srv.mu.Unlock()
			return srv.lingerN == 0
		})
	}
	srv.mu.Lock()
	n := len(srv.lingerTrees)
	srv.mu.Unlock()
	if n != 0 {
		t.Errorf("no socket kept, %d trees (and their maps) still in lingerTrees", n)
	}
}

// TestAdmitAfterLongCall: a call let run that goes on running (a long
// wait) holds the queue for admitGrace once, not each later call for
// admitGrace after the one before it, which replied at once: 10 quick
// calls queued behind it drain as fast as the sweeper lets them (before,
// 10 × 50 ms at least).
func TestAdmitAfterLongCall(t *testing.T) {
	srv := &Server{MaxTreeBulk: 10}
	tr := &tree{s: srv}
	tr.unreadBulk.Store(100) // past the budget
	longCtx, longCancel := context.WithCancel(context.Background())
	defer longCancel()
	admittedLong := make(chan struct{})
	go func() {
		w, err := tr.waitRoom(longCtx)
		if err != nil || w == nil {
			t.Errorf("the long call: %v %v", w, err)
			close(admittedLong)
			return
		}
		close(admittedLong)
		<-longCtx.Done()
		tr.replied(w)
	}()
	queued := func(n int) func() bool {
		return func() bool { tr.mu.Lock(); defer tr.mu.Unlock(); return len(tr.waitq) == n }
	}
	waitFor(t, "the long call to queue", queued(1))
	const n = 10
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := tr.waitRoom(context.Background())
			if err != nil {
				t.Error(err)
			}
			if w != nil {
				tr.replied(w) // replies at once
			}
		}()
	}
	waitFor(t, "the quick calls to queue", queued(n+1))
	tr.unreadBulk.Store(0) // room
	start := time.Now()
	<-admittedLong
	wg.Wait()
	d := time.Since(start)
	t.Logf("%d quick calls queued behind a long one drained in %v", n, d)
	if d >= n*admitGrace*9/10 {
		t.Errorf("%d quick calls took %v to drain behind a long one: each waited admitGrace (%v)", n, d, admitGrace)
	}
}

// TestUnreadFollowsReads: a client that reads its replies, 8 calls at a
// time each returning a descriptor, never makes its calls wait: what is
// counted unread follows what the client has read (the server trims it
// every maxRecent replies by SIOCOUTQ), rather than piling up until the
// bound and waiting for a moment when nothing at all is queued.
func TestUnreadFollowsReads(t *testing.T) {
	srv := &Server{MaxTreeFDs: 256}
	c, _ := pairWith(t, srv, newBudgetHandler())
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 250 {
				var fd FD
				if err := c.Call(ctx, "pipe", nil, &fd); err != nil {
					t.Error(err)
					return
				}
				fd.Close()
			}
		}()
	}
	wg.Wait()
	tr := onlyTree(t, srv)
	t.Logf("2,000 replies with a descriptor: %d calls waited; %d counted unread at the end", tr.waits.Load(), tr.unreadFDs.Load())
	if n := tr.waits.Load(); n != 0 {
		t.Errorf("%d calls of a client that reads every reply waited for room", n)
	}
}
