package rpc

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A tree is the objects one root object led to: the root is a connection
// Serve accepted, or an object ServeFile or NewObject served with a context
// that came from no call; an object served with a call's context (or one
// made from it) joins the tree of the object called. What a peer can make
// the server hold is bounded per tree (Server.MaxTreeObjects, MaxTreeFDs,
// MaxTreeBulk), so that one peer that stops reading cannot take what the
// server's other peers need.
type tree struct {
	s       *Server
	objects int // guarded by s.mu

	// fds counts the descriptors the server holds for the tree's calls:
	// those that came with calls not yet answered, and those of replies
	// being sent.
	fds atomic.Int64
	// bulk counts the bytes of sealed memfds (Bulk) sent in replies that
	// the peers may not have read yet: unread, their memory is the
	// server's. It is the sum of unread.
	bulk atomic.Int64

	mu     sync.Mutex
	unread map[*serverConn]int64
}

type treeKey struct{}

// treeOf returns the tree of s's object whose call ctx belongs to, or nil
// (a call of another server's roots a tree in s).
func (s *Server) treeOf(ctx context.Context) *tree {
	if t, _ := ctx.Value(treeKey{}).(*tree); t != nil && t.s == s {
		return t
	}
	return nil
}

const (
	defaultMaxTreeFDs  = 1024
	defaultMaxTreeBulk = 64 << 20
)

func (s *Server) maxTreeObjects() int {
	if s.MaxTreeObjects > 0 {
		return s.MaxTreeObjects
	}
	return s.maxObjects()
}

func (s *Server) maxTreeFDs() int64 {
	if s.MaxTreeFDs > 0 {
		return int64(s.MaxTreeFDs)
	}
	return defaultMaxTreeFDs
}

func (s *Server) maxTreeBulk() int64 {
	if s.MaxTreeBulk > 0 {
		return s.MaxTreeBulk
	}
	return defaultMaxTreeBulk
}

// maxHeldFDs is MaxHeldFDs, or half the descriptors the process may open
// (its RLIMIT_NOFILE when the server first asks), leaving the rest to
// the handlers' own files and to accepting.
func (s *Server) maxHeldFDs() int64 {
	if s.MaxHeldFDs > 0 {
		return int64(s.MaxHeldFDs)
	}
	s.heldOnce.Do(func() {
		s.heldMax = 512
		var rl unix.Rlimit
		if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Cur/2 > 512 {
			s.heldMax = int64(min(rl.Cur/2, 1<<30))
		}
	})
	return s.heldMax
}

// takeFDs counts n descriptors a call brought, and reports false, having
// counted nothing, if they would take the tree past MaxTreeFDs or the
// server past MaxHeldFDs: the call is then refused (errTooManyFDs).
func (sc *serverConn) takeFDs(n int) bool {
	k := int64(n)
	if sc.t.fds.Add(k) > sc.s.maxTreeFDs() {
		sc.t.fds.Add(-k)
		return false
	}
	if sc.s.held.Add(k) > sc.s.maxHeldFDs() {
		sc.s.held.Add(-k)
		sc.t.fds.Add(-k)
		return false
	}
	return true
}

// holdFDs counts n descriptors held whatever the budget (a reply's, which
// exist already), and putFDs uncounts n.
func (sc *serverConn) holdFDs(n int) {
	sc.t.fds.Add(int64(n))
	sc.s.held.Add(int64(n))
}

func (sc *serverConn) putFDs(n int) {
	if n != 0 {
		sc.t.fds.Add(-int64(n))
		sc.s.held.Add(-int64(n))
	}
}

// errTooManyFDs answers a call whose descriptors would take its tree or
// the server past their budget.
func (sc *serverConn) errTooManyFDs() *Error {
	return &Error{Code: CodeFailed, Errno: syscall.EMFILE, Text: "too many descriptors held for this peer's calls; call again once earlier calls are answered"}
}

// bulkBytes returns the bytes of the sealed memfds among files: the bulk
// data a reply carries, whose memory stays the server's until the peer
// reads the reply and closes them.
func bulkBytes(files []*os.File) int64 {
	var n int64
	for _, f := range files {
		fd := int(f.Fd())
		seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
		if err != nil || seals&unix.F_SEAL_WRITE == 0 {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil {
			n += st.Size
		}
	}
	return n
}

// addBulk counts n bytes of bulk sent (or about to be) on sc.
func (t *tree) addBulk(sc *serverConn, n int64) {
	t.mu.Lock()
	if t.unread == nil {
		t.unread = map[*serverConn]int64{}
	}
	t.unread[sc] += n
	t.bulk.Add(n)
	t.mu.Unlock()
}

// forget drops what sc still counts, as it ends. Replies still queued to
// its peer are then the peer's: they go when the peer closes its end.
func (t *tree) forget(sc *serverConn) {
	t.mu.Lock()
	if n, ok := t.unread[sc]; ok {
		delete(t.unread, sc)
		t.bulk.Add(-n)
	}
	t.mu.Unlock()
}

// sweep uncounts the bulk of each object whose peer has read every message
// sent to it (SIOCOUTQ, the bytes of its messages still queued, is 0).
func (t *tree) sweep() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for sc, n := range t.unread {
		if sc.c.unsent() == 0 {
			delete(t.unread, sc)
			t.bulk.Add(-n)
		}
	}
}

// room reports whether sc's tree is within its budgets, so that sc may
// read another call.
func (sc *serverConn) room() bool {
	if sc.t.fds.Load() >= sc.s.maxTreeFDs() {
		return false
	}
	if max := sc.s.maxTreeBulk(); sc.t.bulk.Load() >= max {
		sc.t.sweep()
		return sc.t.bulk.Load() < max
	}
	return true
}

// budgetPoll is how often an object whose tree is past its budget looks
// again (and for its peer's hang-up).
const budgetPoll = 5 * time.Millisecond

// waitBudget waits until sc's tree is within its budgets, and reports
// false if the object goes first. Meanwhile nobody reads it, as when it is
// saturated (waitRoom), so it looks for the peer's hang-up itself.
func (w *workers) waitBudget() bool {
	sc := w.sc
	if sc.room() {
		return true
	}
	t := time.NewTimer(budgetPoll)
	defer t.Stop()
	for {
		select {
		case <-sc.ctx.Done():
			return false
		case <-t.C:
		}
		if sc.c.peerGone() {
			sc.cancel()
			return false
		}
		if sc.room() {
			return true
		}
		t.Reset(budgetPoll)
	}
}
