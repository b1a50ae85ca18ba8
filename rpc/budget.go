package rpc

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/internal/fdctl"
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

	// held counts the descriptors the server holds for the tree: those
	// that came with calls not yet answered, and those of replies being
	// sent. A call that would take it past MaxTreeFDs is refused.
	held atomic.Int64
	// unreadFDs and unreadBulk count what replies the peers may not have
	// read yet carry: descriptors (in flight, charged to the server's
	// user) and the bytes of sealed memfds (Bulk: the server's memory).
	// Past MaxTreeFDs or MaxTreeBulk, the tree's calls wait before they
	// run until the peers read (trim, by SIOCOUTQ).
	unreadFDs  atomic.Int64
	unreadBulk atomic.Int64
	waits      atomic.Int64 // calls that had to wait for room, ever

	mu        sync.Mutex
	unread    map[*serverConn]*unread
	linger    map[int]*unread // ended objects' sockets (duplicates) with replies unread
	lastSweep time.Time
	// waitq are the calls waiting for room, first come first: each is let
	// run (its channel closed) only when there is room and the one let
	// run before it has replied or has run for admitGrace (a call that
	// waits for another, such as a wait for a signal sent in a later
	// call, must not hold the queue), so that calls let run at once do
	// not all add their replies past the budget.
	waitq      []*waiter
	admitted   int       // calls let run from waitq that have not replied yet
	admittedAt time.Time // when the last was let run
	last       *waiter   // the last let run
	sweeping   bool      // the sweeper runs
}

// unread is what was sent on one object and may not have been read yet.
type unread struct {
	fds, bytes int64
	rest       int // SIOCOUTQ once all but the last message is read
	// recent are the replies counted, oldest first; past maxRecent the
	// oldest are merged. A peer reads messages in order, so those it has
	// not read are the last sent, and no more of them than SIOCOUTQ can
	// hold at minQueued bytes each: the older ones are read (trim).
	recent []sentReply
}

// A sentReply is what one reply counted carries.
type sentReply struct{ fds, bytes int64 }

// maxRecent bounds unread.recent: past it, sent trims, and merges the
// two oldest if nothing could be trimmed.
const maxRecent = 64

// minQueued is the least a message adds to SIOCOUTQ: that of the shortest
// message the server sends, a header alone. 0 if it cannot be measured.
func minQueued() int { return queuedSize(headerLen) }

// trim uncounts the replies of u that its peer must have read, q bytes of
// messages being still queued (SIOCOUTQ), and reports whether none is left
// counted. t.mu is held.
func (t *tree) trim(u *unread, q int) bool {
	if q <= u.rest {
		t.uncount(u)
		u.fds, u.bytes, u.recent = 0, 0, u.recent[:0]
		return true
	}
	m := minQueued()
	if m <= 0 {
		return false
	}
	// If anything is unread the last message (newest) is too: the rest
	// are at most (q-rest)/m messages.
	keep := (q - u.rest + m - 1) / m
	if keep >= len(u.recent) {
		return false
	}
	for _, r := range u.recent[:len(u.recent)-keep] {
		u.fds -= r.fds
		u.bytes -= r.bytes
		t.unreadFDs.Add(-r.fds)
		t.unreadBulk.Add(-r.bytes)
	}
	u.recent = append(u.recent[:0], u.recent[len(u.recent)-keep:]...)
	return false // keep >= 1: q > rest
}

// queuedSize is what a lone message of n bytes adds to SIOCOUTQ (its
// buffer's true size), measured on a socket pair of its own.
func queuedSize(n int) int {
	if v, ok := queuedSizes.Load(n); ok {
		return v.(int)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if unix.Sendmsg(fds[0], make([]byte, n), nil, nil, unix.MSG_DONTWAIT) != nil {
		return 0
	}
	q, err := unix.IoctlGetInt(fds[0], unix.SIOCOUTQ)
	if err != nil {
		return 0
	}
	queuedSizes.Store(n, q)
	return q
}

var queuedSizes sync.Map

// lastSent notes that the last message sent on sc, after every reply,
// queues q bytes.
func (t *tree) lastSent(sc *serverConn, q int) {
	t.mu.Lock()
	u := t.unread[sc]
	if u == nil {
		// The socket may be kept already: its close raced the send.
		u = sc.kept
	}
	if u != nil {
		u.rest = q
	}
	t.mu.Unlock()
}

type waiter struct {
	ch   chan struct{}
	done bool // replied, or cancelled; t.mu
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

// InTree returns a context that carries ctx's values and deadline and
// whose objects join the tree of the call callCtx belongs to (see
// Server.MaxTreeObjects): for a handler that makes an object which must
// outlive the call, with ctx of the server's own, and still counts against
// the budgets of the peer it is made for.
func InTree(ctx, callCtx context.Context) context.Context {
	if t, _ := callCtx.Value(treeKey{}).(*tree); t != nil {
		return context.WithValue(ctx, treeKey{}, t)
	}
	return ctx
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
	if sc.t.held.Add(k) > sc.s.maxTreeFDs() {
		sc.t.held.Add(-k)
		return false
	}
	if sc.s.held.Add(k) > sc.s.maxHeldFDs() {
		sc.s.held.Add(-k)
		sc.t.held.Add(-k)
		return false
	}
	return true
}

// holdFDs counts n descriptors held whatever the budget (a reply's, which
// exist already), and putFDs uncounts n.
func (t *tree) holdFDs(n int) {
	t.held.Add(int64(n))
	t.s.held.Add(int64(n))
}

func (t *tree) putFDs(n int) {
	if n != 0 {
		t.held.Add(-int64(n))
		t.s.held.Add(-int64(n))
	}
}

// errTooManyFDs answers a call whose descriptors would take its tree or
// the server past their budget.
func errTooManyFDs() *Error {
	return &Error{Code: CodeFailed, Errno: syscall.EMFILE, Text: "too many descriptors held for this peer's calls; call again once earlier calls are answered"}
}

// bulkBytes returns the bytes of the sealed memfds among files: the bulk
// data a reply carries, whose memory stays the server's until the peer
// reads the reply and closes them. It leaves the files as they are (no
// Fd, which would make their descriptions blocking for every holder).
func bulkBytes(files []*os.File) int64 {
	var n int64
	for _, f := range files {
		fdctl.Control(f, func(fd int) error {
			seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
			if err != nil || seals&unix.F_SEAL_WRITE == 0 {
				return nil
			}
			var st unix.Stat_t
			if unix.Fstat(fd, &st) == nil {
				n += st.Size
			}
			return nil
		})
	}
	return n
}

// sendReply sends a reply on sc: its descriptors are counted as held while
// it is sent, and then, with its bulk, as unread until the peer has read
// it.
func (sc *serverConn) sendReply(body []byte, files []*os.File) error {
	if len(files) == 0 {
		return sc.c.send(body, nil)
	}
	t := sc.t
	t.holdFDs(len(files))
	n := bulkBytes(files)
	// Counted in the order queued: trim keeps the last counted as the
	// unread ones, so two replies must not be counted the other way round.
	sc.countMu.Lock()
	defer sc.countMu.Unlock()
	err := sc.c.send(body, files)
	t.putFDs(len(files))
	if err == nil {
		// Counted once sent, and in the order sent (countMu): a trim
		// in between can only count it for longer than needed, never
		// drop it.
		t.sent(sc, int64(len(files)), n)
	}
	return err
}

// sent counts fds descriptors and n bytes of bulk sent on sc as unread.
func (t *tree) sent(sc *serverConn, fds, n int64) {
	t.mu.Lock()
	if t.unread == nil {
		t.unread = map[*serverConn]*unread{}
	}
	u := t.unread[sc]
	if u == nil {
		u = &unread{}
		t.unread[sc] = u
	}
	if len(u.recent) >= maxRecent {
		// One look at the queue every maxRecent replies keeps the count
		// close to what is unread, with no sweep.
		t.trim(u, sc.c.unsent())
		if len(u.recent) >= maxRecent {
			u.recent[1].fds += u.recent[0].fds
			u.recent[1].bytes += u.recent[0].bytes
			u.recent = append(u.recent[:0], u.recent[1:]...)
		}
	}
	u.fds += fds
	u.bytes += n
	u.recent = append(u.recent, sentReply{fds, n})
	t.unreadFDs.Add(fds)
	t.unreadBulk.Add(n)
	t.mu.Unlock()
}

// uncount drops what u counted. t.mu is held.
func (t *tree) uncount(u *unread) {
	t.unreadFDs.Add(-u.fds)
	t.unreadBulk.Add(-u.bytes)
}

// settle trims what sc counts to what its peer may not have read (an
// object about to send its last message, which an idle peer may never
// read, settles first, so that the count it leaves is only what may really
// be unread).
func (t *tree) settle(sc *serverConn) {
	t.mu.Lock()
	if u := t.unread[sc]; u != nil && t.trim(u, sc.c.unsent()) {
		delete(t.unread, sc)
	}
	t.mu.Unlock()
}

// end is called as sc's socket is about to close: what its peer has not
// read yet stays queued to it, holding its descriptors and memory, so a
// duplicate of the socket is kept to tell when the peer has read it or
// gone, shut down both ways (the peer reads what is queued, then the end
// of file, and can send nothing more). The kept sockets count against
// MaxObjects; past it, or once the server shuts down, none is kept and
// the counts are dropped.
func (t *tree) end(sc *serverConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	u := t.unread[sc]
	if u == nil {
		return
	}
	delete(t.unread, sc)
	if t.trim(u, sc.c.unsent()) {
		return
	}
	fd := -1
	if rc, err := sc.c.c.SyscallConn(); err == nil {
		rc.Control(func(s uintptr) { fd, _ = fdctl.Dup(int(s)) })
	}
	if fd < 0 {
		t.uncount(u)
		return
	}
	if !t.s.lingering(t) {
		unix.Close(fd)
		t.uncount(u)
		return
	}
	unix.Shutdown(fd, unix.SHUT_RDWR)
	if t.linger == nil {
		t.linger = map[int]*unread{}
	}
	t.linger[fd] = u
	sc.kept = u
	t.startSweeper()
}

// ended drops what sc, now closed and with no reply left to send, still
// counts: a reply sent after end, while the socket closed.
func (t *tree) ended(sc *serverConn) {
	t.mu.Lock()
	if u := t.unread[sc]; u != nil {
		delete(t.unread, sc)
		t.uncount(u)
	}
	t.mu.Unlock()
}

// sweep trims what each object counts to what its peer may not have read
// (by SIOCOUTQ, the bytes of its messages still queued), and closes the
// kept sockets of ended objects whose peer has read all or gone. t.mu is
// held.
func (t *tree) sweep() {
	t.lastSweep = time.Now()
	for sc, u := range t.unread {
		if t.trim(u, sc.c.unsent()) {
			delete(t.unread, sc)
		}
	}
	for fd, u := range t.linger {
		n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
		if err != nil {
			n = 0
		}
		if t.trim(u, n) {
			unix.Close(fd)
			delete(t.linger, fd)
			t.s.unlinger(t)
		}
	}
}

// closeLinger closes the kept sockets, as the server shuts down.
func (t *tree) closeLinger() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for fd, u := range t.linger {
		unix.Close(fd)
		delete(t.linger, fd)
		t.uncount(u)
		t.s.unlinger(t)
	}
}

// hasRoom reports whether the tree's calls may run: its peers have not
// left more unread than the budgets allow.
func (t *tree) hasRoom() bool {
	return t.unreadFDs.Load() < t.s.maxTreeFDs() && t.unreadBulk.Load() < t.s.maxTreeBulk()
}

// sweepEvery is how often the sweeper looks while calls wait for room,
// and lingerEvery while it looks only for ended objects' peers.
const (
	admitGrace  = 50 * time.Millisecond // a call let run that has not replied by then no longer holds the others
	sweepEvery  = 5 * time.Millisecond
	lingerEvery = 100 * time.Millisecond
)

// waitRoom waits until the tree's peers have read enough of what was sent
// for a call to run, or ctx ends (the call's: it is cancelled, or its
// object ends). Meanwhile its object goes on reading, so cancels arrive.
// If admitted, the call was let run from the queue, and the caller calls
// replied once it has replied.
func (t *tree) waitRoom(ctx context.Context) (admitted *waiter, err error) {
	if t.hasRoom() {
		return nil, nil
	}
	t.mu.Lock()
	t.sweep()
	if t.hasRoom() && len(t.waitq) == 0 {
		t.mu.Unlock()
		return nil, nil
	}
	t.waits.Add(1)
	w := &waiter{ch: make(chan struct{})}
	ch := w.ch
	t.waitq = append(t.waitq, w)
	t.startSweeper()
	t.mu.Unlock()
	select {
	case <-ch:
		if ctx.Err() == nil {
			return w, nil
		}
		// Let run just as it was cancelled: a cancelled call never
		// runs, and the next goes instead.
		t.replied(w)
		return nil, ctx.Err()
	case <-ctx.Done():
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, c := range t.waitq {
		if c == w {
			t.waitq = append(t.waitq[:i], t.waitq[i+1:]...)
			return nil, ctx.Err()
		}
	}
	// Let run just as it was cancelled: the next one goes instead.
	w.done = true
	t.admitted--
	t.admitNext()
	return nil, ctx.Err()
}

// replied is called once a call waitRoom admitted has replied: the next
// waiting call may run, if there is room.
func (t *tree) replied(w *waiter) {
	t.mu.Lock()
	w.done = true
	t.admitted--
	t.admitNext()
	t.mu.Unlock()
}

// admitNext lets the first waiting call run, unless one let run has not
// replied yet or there is no room. t.mu is held.
func (t *tree) admitNext() {
	if len(t.waitq) == 0 || t.last != nil && !t.last.done && time.Since(t.admittedAt) < admitGrace {
		return
	}
	if !t.hasRoom() {
		if time.Since(t.lastSweep) < time.Millisecond {
			return
		}
		if t.sweep(); !t.hasRoom() {
			return
		}
	}
	w := t.waitq[0]
	t.waitq = t.waitq[1:]
	t.admitted++
	t.admittedAt = time.Now()
	t.last = w
	close(w.ch)
}

// startSweeper starts the sweeper unless it runs. t.mu is held.
func (t *tree) startSweeper() {
	if !t.sweeping {
		t.sweeping = true
		go t.sweeper()
	}
}

// sweeper sweeps while calls wait for room (every sweepEvery, letting the
// first run when there is room) or ended objects' sockets are kept (every
// lingerEvery), and stops when neither.
func (t *tree) sweeper() {
	timer := time.NewTimer(sweepEvery)
	defer timer.Stop()
	for {
		t.mu.Lock()
		t.sweep()
		t.admitNext()
		every := sweepEvery
		if len(t.waitq) == 0 {
			if len(t.linger) == 0 || t.s.isShutdown() {
				t.sweeping = false
				t.mu.Unlock()
				return
			}
			every = lingerEvery
		}
		t.mu.Unlock()
		timer.Reset(every)
		<-timer.C
	}
}
