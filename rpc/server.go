package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A Handler answers the calls made on an object.
type Handler interface {
	// ServeCall handles one call and returns its result (encoded for the
	// caller; FDs in it are sent and then closed) or an error (sent as an
	// *Error: see Errorf and the Code values). Calls on one object may
	// run concurrently. ctx ends when the caller cancels the call,
	// the object's connection ends or the server shuts down.
	ServeCall(ctx context.Context, call *Call) (any, error)
}

// HandlerFunc makes a function a Handler.
type HandlerFunc func(ctx context.Context, call *Call) (any, error)

// ServeCall calls f.
func (f HandlerFunc) ServeCall(ctx context.Context, call *Call) (any, error) { return f(ctx, call) }

// A Call is one call as a Handler sees it.
type Call struct {
	// Method is the method's name.
	Method string

	// Peer is the credentials of the process at the other end of the
	// object's socket when it was connected or made (SO_PEERCRED): for an
	// object handed on, the process that made the socket pair, not
	// necessarily the one calling now. Nil if unknown.
	Peer *unix.Ucred

	// Server is the server that runs the handler, for handlers that
	// return new objects (Server.NewObject).
	Server *Server

	body    []byte
	files   []*os.File
	decoded bool
}

// Args decodes the call's arguments into ptr (a pointer to the type the
// method takes). The FDs found in it are the handler's to close;
// descriptors the call carried that ptr did not claim are closed. Args may be
// called once.
func (c *Call) Args(ptr any) error {
	if c.decoded {
		return errors.New("rpc: Args called twice")
	}
	c.decoded = true
	files := c.files
	c.files = nil
	return decodeBody(c.body, files, ptr)
}

// release closes the descriptors of a call whose arguments nobody decoded.
func (c *Call) release() {
	if !c.decoded {
		closeFiles(c.files)
		c.files = nil
	}
}

// Methods is a Handler that dispatches on the method's name; a name it
// does not have gets ErrUnknownMethod. Make its entries with Method.
type Methods map[string]func(ctx context.Context, call *Call) (any, error)

// ServeCall dispatches call.
func (m Methods) ServeCall(ctx context.Context, call *Call) (any, error) {
	f, ok := m[call.Method]
	if !ok {
		return nil, &Error{Code: CodeUnknownMethod, Text: fmt.Sprintf("unknown method %q", call.Method)}
	}
	return f(ctx, call)
}

// Method adapts a typed function to a Methods entry: the call's arguments
// are decoded into an A, and fn's R is the result.
func Method[A, R any](fn func(ctx context.Context, args A) (R, error)) func(context.Context, *Call) (any, error) {
	return func(ctx context.Context, call *Call) (any, error) {
		var a A
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		r, err := fn(ctx, a)
		if err != nil {
			return nil, err
		}
		return r, nil
	}
}

// A Server serves objects: each connection made to a listener it serves,
// and each object a handler makes with NewObject, is one socket with one
// Handler. The zero value is ready to use with the defaults.
type Server struct {
	// Logger receives one line per connection error and failed message;
	// nil means nothing is logged (the package never logs to
	// slog.Default).
	Logger *slog.Logger
	// MaxConcurrent bounds the calls one object runs at once, and as many
	// again wait their turn; a peer that sends more waits (its socket's
	// buffer fills and its sends block): backpressure, not unbounded
	// queues. 0 means 16. The calls run on that many goroutines at most,
	// made as needed and kept until the object goes. A call cancelled
	// while it waits never runs. A call runs on the goroutine that read
	// it, which reads nothing more while the call runs unless it runs
	// longer than about a millisecond: then another goroutine reads on,
	// so a slow call delays the object's other calls by that much at most.
	// While the server reads nothing, it reads no cancel either: an
	// object whose running calls all wait for their cancellation, with as
	// many calls again waiting, stalls while its peer is alive, as the
	// cancels queue behind calls it does not read, until one of its calls
	// ends by itself. Only that object stalls (the peer's other objects,
	// and the server's, go on). It still sees the peer close its end (or
	// shut its writing down), and the server's Shutdown and the end of
	// its context: it then ends as on any close, its calls' contexts end
	// and its handler is closed, so a peer that crashes or goes holds
	// nothing in the server.
	MaxConcurrent int
	// MaxObjects bounds the objects the server serves at once: the
	// connections it accepts and the objects its handlers make. 0 means
	// 4096. Beyond it, a new connection gets an object-level error
	// (CodeFailed, EAGAIN) and is closed, and NewObject and ServeFile
	// fail with that error, until some object ends. What one peer can
	// make the server hold is bounded per tree of objects (below).
	MaxObjects int
	// MaxMessage and MaxFDs bound each message a peer sends; 0 means
	// DefaultMaxMessage and DefaultMaxFDs.
	MaxMessage int
	MaxFDs     int

	// MaxTreeObjects, MaxTreeFDs and MaxTreeBulk bound what one tree of
	// objects makes the server hold. A connection Serve accepts, and an
	// object ServeFile or NewObject serves with a context that comes from
	// no call, roots a tree; an object ServeFile or NewObject serves with
	// a call's context (or one made from it, as context.WithoutCancel
	// does, or one InTree gives) joins the tree of the object called. So
	// a tree is what one
	// peer's connection or object led to, whoever holds its objects now,
	// and a peer that holds only objects it was given cannot take more
	// than its trees' budgets.
	//
	// MaxTreeObjects bounds the tree's objects at once; 0 means
	// MaxObjects. Beyond it, objects fail to be made as beyond MaxObjects.
	//
	// MaxTreeFDs bounds, each on its own, the descriptors the server
	// holds for the tree's calls (those that came with calls not yet
	// answered, and those of replies being sent), and those in replies
	// the tree's peers have not read yet (in flight, they count against
	// the server user's RLIMIT_NOFILE); 0 means 1024. A call whose
	// descriptors would take the first past the bound fails with
	// CodeFailed and EMFILE, its descriptors closed. While the second is
	// past it, the tree's calls wait before they run until the peers
	// read (the server sees SIOCOUTQ reach 0) or their calls are
	// cancelled, and then run one at a time (each once the one before
	// has replied or run for 50 ms) while there is room; the
	// objects still read meanwhile (up to MaxConcurrent calls waiting as
	// many again each), so cancels arrive.
	//
	// MaxTreeBulk bounds the bytes of sealed memfds (Bulk) in replies the
	// tree's peers have not read yet, which are the server's memory; 0
	// means 64 MiB. Past it, the tree's calls wait in the same way. Calls
	// running when it is reached still add their replies. Replies left
	// unread in an ended object's socket still count, for as long as its
	// peer keeps them: the server keeps a duplicate of the socket, shut
	// down both ways, to tell when they are gone, and such sockets count
	// against MaxObjects and MaxTreeObjects. Memfds a peer has read and
	// keeps open are its own, bounded by its descriptor limit.
	MaxTreeObjects int
	MaxTreeFDs     int
	MaxTreeBulk    int64
	// MaxHeldFDs bounds the descriptors held, as for MaxTreeFDs, for all
	// the server's trees together: a call whose descriptors would take
	// the server past it fails the same way. 0 means half the process's
	// RLIMIT_NOFILE when the server first needs it, which leaves the
	// rest to the handlers' own files and to accepting.
	MaxHeldFDs int

	held     atomic.Int64 // descriptors held, as counted for MaxHeldFDs
	heldOnce sync.Once
	heldMax  int64
	// lingerTrees are the trees that may keep ended objects' sockets,
	// closed at Shutdown, and lingerN counts those sockets, which count
	// against MaxObjects (guarded by mu).
	lingerTrees map[*tree]struct{}
	lingerN     int

	mu       sync.Mutex
	conns    map[*serverConn]struct{}
	lns      map[net.Listener]struct{}
	shutdown bool
	wg       sync.WaitGroup
}

// discard is the logger of a server given none.
var discard = slog.New(slog.DiscardHandler)

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return discard
}

var errShutdown = &Error{Code: CodeClosed, Text: "server shutting down"}

// Serve accepts connections on ln and serves each with the Handler
// newHandler returns for it (closed when the connection ends if it is an
// io.Closer), until ctx ends, Shutdown is called or ln
// fails. It returns nil after Shutdown or the end of ctx.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener, newHandler func(peer *unix.Ucred) Handler) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		ln.Close()
		return errShutdown
	}
	if s.lns == nil {
		s.lns = map[net.Listener]struct{}{}
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
	}()
	// A temporary accept error (out of descriptors, say) is retried after
	// a pause, 5ms doubling to 1s as net/http's Server does, and logged
	// once per run of them: a server that exited on it would end every
	// object it serves.
	var delay time.Duration
	failures, refused := 0, 0
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || s.isShutdown() {
				return nil
			}
			if !temporaryAccept(err) {
				return fmt.Errorf("rpc: accept: %w", err)
			}
			failures++
			if delay == 0 {
				delay = 5 * time.Millisecond
				s.logger().Warn("rpc: accept failed; retrying", "err", err)
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil
			}
			continue
		}
		if delay != 0 {
			s.logger().Info("rpc: accepting again", "failures", failures)
			delay, failures = 0, 0
		}
		peer := peerCred(c)
		h := newHandler(peer)
		if err := s.serve(ctx, c, h, peer); err != nil {
			var e *Error
			if errors.As(err, &e) && e.Errno == syscall.EAGAIN {
				// Too many objects: this one is refused, saying why;
				// the server goes on.
				if refused++; refused == 1 || refused%1000 == 0 {
					s.logger().Warn("rpc: connection refused", "err", err, "refused", refused)
				}
				c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				c.Write(lastMessage(e))
				c.Close()
				if cl, ok := h.(io.Closer); ok {
					cl.Close()
				}
				continue
			}
			c.Close()
			return nil
		}
	}
}

// temporaryAccept reports whether err, from accept, is one that passes:
// a shortage of descriptors or memory, or a connection that went before
// it was accepted.
func temporaryAccept(err error) bool {
	for _, e := range []syscall.Errno{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.ECONNABORTED, unix.EINTR, unix.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *Server) maxObjects() int {
	if s.MaxObjects > 0 {
		return s.MaxObjects
	}
	return 4096
}

func (s *Server) isShutdown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

// ServeFile serves h on the socket f (which it takes ownership of) until
// the peer closes it, ctx ends or the server shuts down. It returns at
// once; the object is served in the background. If h is an io.Closer, it
// is closed when the object ends (and not if ServeFile fails).
func (s *Server) ServeFile(ctx context.Context, f *os.File, h Handler) error {
	uc, err := unixConn(f)
	if err != nil {
		return err
	}
	if err := s.serve(ctx, uc, h, peerCred(uc)); err != nil {
		uc.Close()
		return err
	}
	return nil
}

// NewObject makes a new object served by h and returns the caller's end of
// it, to be returned in a result (which closes it once sent) or handed on.
// If h is an io.Closer, it is closed when the object ends.
func (s *Server) NewObject(ctx context.Context, h Handler) (FD, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return FD{}, &os.SyscallError{Syscall: "socketpair", Err: err}
	}
	client := os.NewFile(uintptr(fds[0]), "rpc-object")
	if err := s.ServeFile(ctx, os.NewFile(uintptr(fds[1]), "rpc-object"), h); err != nil {
		client.Close()
		return FD{}, err
	}
	return FD{File: client}, nil
}

// Fail sends err as the object-level failure on the socket f (the server
// end of an object the caller asked to be made, as in a pipelined Open) and
// closes f: the client's calls on its end then fail with err. The socket
// may be a peer's, with its buffer full: Fail does not wait for room, and
// then closes f without the message (the client sees its object end).
func Fail(f *os.File, err error) {
	defer f.Close()
	uc, cerr := unixConn(f)
	if cerr != nil {
		return
	}
	defer uc.Close()
	rc, rerr := uc.SyscallConn()
	if rerr != nil {
		return
	}
	msg := lastMessage(err)
	rc.Write(func(fd uintptr) bool {
		unix.SendmsgN(int(fd), msg, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		return true // once: never wait for room
	})
}

// lastMessage is an object's last message, which says why it failed.
func lastMessage(err error) []byte {
	return append(appendHeader(nil, kindError, 0, 0), encodeError(toWire(err))...)
}

// Shutdown stops accepting connections, closes every object the server
// serves (calls in flight see their ctx end) and waits for the handlers to
// return, or for ctx to end.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	for ln := range s.lns {
		ln.Close()
	}
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	trees := s.lingerTrees
	s.lingerTrees = nil
	s.mu.Unlock()
	for t := range trees {
		t.closeLinger()
	}
	// Each object's holder is told why first, so that a handler that
	// answers its cancelled call in the moment before the socket closes
	// ("context canceled") is not what the caller sees.
	// All at once: each may wait a little for a peer that reads nothing.
	var ending sync.WaitGroup
	for _, c := range conns {
		ending.Add(1)
		go func() {
			defer ending.Done()
			c.end(errShutdown)
		}()
	}
	ending.Wait()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// lingering counts one more ended object's socket kept by t, for
// Shutdown to close, and reports false, counting nothing, if the server
// shuts down or keeps MaxObjects such sockets already. t.mu is held (it is
// taken before s.mu).
func (s *Server) lingering(t *tree) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown || s.lingerN >= s.maxObjects() {
		return false
	}
	if s.lingerTrees == nil {
		s.lingerTrees = map[*tree]struct{}{}
	}
	s.lingerTrees[t] = struct{}{}
	s.lingerN++
	t.objects++ // the kept socket keeps its object's place in the tree
	return true
}

// unlinger uncounts a kept socket, closed. t.mu is held.
func (s *Server) unlinger(t *tree) {
	s.mu.Lock()
	s.lingerN--
	t.objects--
	if len(t.linger) == 0 {
		delete(s.lingerTrees, t)
	}
	s.mu.Unlock()
}

func peerCred(c *net.UnixConn) *unix.Ucred {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var cred *unix.Ucred
	rc.Control(func(fd uintptr) {
		cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	return cred
}

// A serverConn is one object being served.
type serverConn struct {
	s      *Server
	c      *conn
	h      Handler
	peer   *unix.Ucred
	t      *tree
	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	calls map[uint64]context.CancelFunc

	closeOnce sync.Once
	// kept is what the tree keeps counting for this object's socket once
	// it has ended (guarded by the tree's mu).
	kept *unread

	// sendMu: replies take it shared, end exclusively, so that nothing is
	// queued after the last message (ending set).
	sendMu sync.RWMutex
	// countMu: a reply with descriptors holds it from its send to its
	// count, so that replies are counted in the order they were queued.
	countMu sync.Mutex
	ending  bool
}

// closeConn closes the object's socket, once; first its tree keeps a
// duplicate if replies wait unread in it.
func (sc *serverConn) closeConn() {
	sc.closeOnce.Do(func() {
		sc.t.end(sc)
		sc.c.c.Close()
	})
}

func (s *Server) serve(ctx context.Context, uc *net.UnixConn, h Handler, peer *unix.Ucred) error {
	t := s.treeOf(ctx)
	root := t == nil
	if root {
		t = &tree{s: s}
	}
	cctx, cancel := context.WithCancel(context.WithValue(ctx, treeKey{}, t))
	sc := &serverConn{
		s: s, c: newConn(uc, s.MaxMessage, s.MaxFDs), h: h, peer: peer, t: t,
		ctx: cctx, cancel: cancel, calls: map[uint64]context.CancelFunc{},
	}
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		cancel()
		return errShutdown
	}
	if s.conns == nil {
		s.conns = map[*serverConn]struct{}{}
	}
	if max := s.maxObjects(); len(s.conns)+s.lingerN >= max {
		s.mu.Unlock()
		cancel()
		return &Error{Code: CodeFailed, Errno: syscall.EAGAIN, Text: fmt.Sprintf("too many objects (the server serves at most %d)", max)}
	}
	if max := s.maxTreeObjects(); !root && t.objects >= max {
		s.mu.Unlock()
		cancel()
		return &Error{Code: CodeFailed, Errno: syscall.EAGAIN, Text: fmt.Sprintf("too many objects made from this peer's (at most %d)", max)}
	}
	t.objects++
	s.conns[sc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go sc.loop()
	return nil
}

// A job is one call handed to a worker.
type job struct {
	ctx    context.Context
	cancel context.CancelFunc
	call   *Call
	id     uint64
	nfds   int // descriptors the call brought, counted in its tree
}

func (sc *serverConn) loop() {
	defer sc.s.wg.Done()
	stop := context.AfterFunc(sc.ctx, sc.closeConn)
	max := sc.s.MaxConcurrent
	if max <= 0 {
		max = 16
	}
	w := &workers{sc: sc, max: max, turn: make(chan struct{}, 1), waiting: make(chan job, max), room: make(chan struct{}, 1)}
	defer func() {
		stop()
		sc.cancel()
		// A worker may hold the read turn, blocked in a read from a peer
		// that sends nothing more: end reads (replies may still go out)
		// so that it sees the end and returns.
		sc.c.c.CloseRead()
		w.wg.Wait()
		w.drain()
		sc.closeConn()
		sc.t.ended(sc)
		if c, ok := sc.h.(io.Closer); ok {
			if err := c.Close(); err != nil {
				sc.s.logger().Debug("rpc: closing an object's handler", "err", err)
			}
		}
		sc.s.mu.Lock()
		delete(sc.s.conns, sc)
		sc.t.objects--
		sc.s.mu.Unlock()
	}()
	if e, ok := sc.h.(ender); ok {
		go func() {
			select {
			case <-e.objectDone():
				sc.end(e.objectErr())
			case <-sc.ctx.Done():
			}
		}()
	}
	w.wg.Add(1)
	w.work(true)
}

// workers run an object's calls: at most max goroutines, made as needed
// and kept until the object goes (a goroutine per call would start each
// call on a small new stack and grow it: a fifth of a call's CPU time).
//
// They take turns reading the socket, one at a time (the turn). The one
// that reads a call runs it itself, on the goroutine that read it, and
// keeps the turn while it runs: most calls are short, and handing the
// turn or the call to another goroutine would wake it, which the Go
// scheduler often does on another CPU at a cost larger than a short
// call's. If the call runs long (a tick of the watchdog, inlineTick, has
// passed twice at most), the watchdog passes the turn to an idle worker
// or a new one, so that cancels and other calls are read meanwhile. When
// all max run calls, a call read waits its turn in waiting (as many
// again) and the reader goes on reading, so that cancels still arrive;
// past that it waits for room, and reads nothing meanwhile:
// backpressure.
type workers struct {
	sc      *serverConn
	max     int
	turn    chan struct{} // the read turn, when an idle worker is to take it
	waiting chan job      // calls read while all max workers ran calls
	room    chan struct{} // a worker took a call from waiting, or stopped running
	wg      sync.WaitGroup

	mu      sync.Mutex
	idle    int // workers waiting for the turn
	running int // workers running calls: at most max (one more reads)
	// inline is set while the turn's holder runs a call: nobody reads.
	inline bool
	// seq counts the calls run inline, for the watchdog to tell a call
	// that ran a whole tick from one that began during it.
	seq      uint64
	watching bool // the watchdog runs
}

// inlineTick is how often the watchdog looks at a call run by the worker
// that holds the turn: a call that runs longer than two ticks delays the
// reading of the object's next messages by at most that.
const inlineTick = time.Millisecond

// work is one worker: it runs calls that wait, else waits for the turn
// (unless it holds it already) and reads, until the object goes.
func (w *workers) work(hasTurn bool) {
	defer w.wg.Done()
	ctx := w.sc.ctx
	for {
		if !hasTurn {
			w.mu.Lock()
			if ctx.Err() != nil {
				w.mu.Unlock()
				return
			}
			w.idle++
			w.mu.Unlock()
			select {
			case <-w.turn:
			case <-ctx.Done():
			}
			w.mu.Lock()
			w.idle--
			w.mu.Unlock()
			if ctx.Err() != nil {
				return
			}
		}
		j, ok := w.sc.read()
		if !ok {
			// The object is over: the others see its context end.
			w.sc.cancel()
			return
		}
		if !w.queue(j) {
			return
		}
		if w.running == w.max {
			// Queued, and the turn is still this worker's.
			w.mu.Unlock()
			hasTurn = true
			continue
		}
		w.running++
		w.inline = true
		w.seq++
		if !w.watching {
			w.watching = true
			w.wg.Add(1)
			go w.watch(w.seq)
		}
		w.mu.Unlock()
		hasTurn = false
		for {
			w.sc.do(j)
			w.mu.Lock()
			if w.inline {
				// The turn was not passed on: nobody read meanwhile, so
				// no call waits. Read on.
				w.inline = false
				w.running--
				w.mu.Unlock()
				hasTurn = true
				break
			}
			select {
			case j = <-w.waiting:
				w.mu.Unlock()
				select {
				case w.room <- struct{}{}:
				default:
				}
				continue
			default:
			}
			w.running--
			select {
			case w.room <- struct{}{}:
			default:
			}
			w.mu.Unlock()
			break
		}
	}
}

// passTurn gives the turn to an idle worker, or to a new one. w.mu is
// held.
func (w *workers) passTurn() {
	if w.idle > 0 {
		w.turn <- struct{}{} // room for one: there is one turn
	} else {
		w.wg.Add(1)
		go w.work(true)
	}
}

// watch is the watchdog: each tick, if the call run by the holder of the
// turn is the one it saw running at the last tick, it passes the turn on.
// It stops after a tick with no call run that way, or when the object
// goes.
//
// last is the call running inline when it starts.
func (w *workers) watch(last uint64) {
	defer w.wg.Done()
	t := time.NewTimer(inlineTick)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-w.sc.ctx.Done():
			w.mu.Lock()
			w.watching = false
			w.mu.Unlock()
			return
		}
		w.mu.Lock()
		if w.seq == last {
			if !w.inline {
				w.watching = false
				w.mu.Unlock()
				return
			}
			w.inline = false
			if w.sc.ctx.Err() == nil {
				w.passTurn()
			}
		}
		last = w.seq
		w.mu.Unlock()
		t.Reset(inlineTick)
	}
}

// queue takes w.mu and, if all max workers run calls, puts j in waiting
// (under the lock: each of them looks there, under the lock, before it
// stops), waiting for room if there is none. It returns with w.mu held,
// or false, with j dropped and the lock not held, if the object goes
// first.
func (w *workers) queue(j job) bool {
	w.mu.Lock()
	var t *time.Timer
	for w.running == w.max {
		select {
		case w.waiting <- j:
			if t != nil {
				t.Stop()
			}
			return true
		default:
		}
		w.mu.Unlock()
		if !w.waitRoom(&t) {
			j.cancel()
			j.call.release()
			w.sc.t.putFDs(j.nfds)
			return false
		}
		w.mu.Lock()
	}
	if t != nil {
		t.Stop()
	}
	return true
}

// hangupPoll is how often a saturated object (see waitRoom) looks for its
// peer's hang-up.
const hangupPoll = 10 * time.Millisecond

// waitRoom waits for room in waiting, and reports false if the object goes
// first. Meanwhile the object is saturated: nobody reads, so the end of
// file that would tell the reader of the peer's close waits behind unread
// messages, and calls that wait for their cancellation would wait for
// ever, holding the object. So while it waits it asks the socket every
// hangupPoll (poll(2), which sees the hang-up past the unread messages)
// and, once the peer has closed its end or shut its writing down, ends the
// object as the reader would at the end of file: every call's context
// ends. This costs nothing while the object is not saturated. *t is the
// timer it uses, made on first use, for the caller to stop.
func (w *workers) waitRoom(t **time.Timer) bool {
	ctx := w.sc.ctx
	for {
		if *t == nil {
			*t = time.NewTimer(hangupPoll)
		} else {
			(*t).Reset(hangupPoll)
		}
		select {
		case <-w.room:
			return true
		case <-ctx.Done():
			return false
		case <-(*t).C:
			if w.sc.c.peerGone() {
				if ctx.Err() == nil {
					w.sc.s.logger().Debug("rpc: connection ended while the object was saturated")
				}
				w.sc.cancel()
				return false
			}
		}
	}
}

// drain drops the calls left waiting once every worker has gone: they
// never run.
func (w *workers) drain() {
	for {
		select {
		case j := <-w.waiting:
			j.cancel()
			j.call.release()
			w.sc.t.putFDs(j.nfds)
		default:
			return
		}
	}
}

// read reads messages until a call, answering or acting on the others
// (cancels, bad messages) itself. It returns false when the connection
// is over.
func (sc *serverConn) read() (job, bool) {
	for {
		m, err := sc.c.recv()
		if err != nil {
			var re *recvError
			if errors.As(err, &re) {
				sc.s.logger().Debug("rpc: bad message", "err", re.err.Text, "code", re.err.Code.String())
				if re.kind == kindCall && re.id != 0 {
					sc.reply(re.id, nil, re.err)
				}
				continue
			}
			if !errors.Is(err, errEOF) && sc.ctx.Err() == nil {
				sc.s.logger().Debug("rpc: connection ended", "err", err)
			}
			return job{}, false
		}
		switch m.kind {
		case kindCall:
		case kindCancel:
			sc.mu.Lock()
			if cancel, ok := sc.calls[m.id]; ok {
				cancel()
			}
			sc.mu.Unlock()
			closeFiles(m.files)
			continue
		case kindReply, kindError:
			// Clients are not called in this protocol version; answering
			// a reply could start two broken peers answering each other.
			closeFiles(m.files)
			continue
		default:
			closeFiles(m.files)
			if m.id != 0 {
				sc.reply(m.id, nil, Errorf(CodeBadMessage, "unexpected message kind %d", m.kind))
			}
			continue
		}
		var method string
		rest, err := decMode.UnmarshalFirst(m.body, &method)
		if err != nil {
			closeFiles(m.files)
			if m.id != 0 {
				sc.reply(m.id, nil, Errorf(CodeBadMessage, "method name: %v", err))
			}
			continue
		}
		if len(m.files) > 0 && !sc.takeFDs(len(m.files)) {
			closeFiles(m.files)
			if m.id != 0 {
				sc.reply(m.id, nil, errTooManyFDs())
			}
			continue
		}
		call := &Call{Method: method, Peer: sc.peer, Server: sc.s, body: rest, files: m.files}
		cctx, cancel := context.WithCancel(sc.ctx)
		if m.id != 0 {
			sc.mu.Lock()
			sc.calls[m.id] = cancel
			sc.mu.Unlock()
		}
		return job{ctx: cctx, cancel: cancel, call: call, id: m.id, nfds: len(m.files)}, true
	}
}

// end sends err as the object's last message and closes it.
func (sc *serverConn) end(err error) {
	// A peer that reads nothing must not hold the server up: its last
	// message is sent if there is room for it soon.
	sc.c.c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	sc.sendMu.Lock()
	if !sc.ending {
		sc.ending = true
		// The replies blocked above may have used the deadline up: the
		// last message gets its own.
		sc.c.c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		sc.t.settle(sc)
		msg := lastMessage(err)
		before := sc.c.unsent()
		if sc.c.send(msg, nil) == nil {
			q := queuedSize(len(msg))
			if q == 0 {
				// Not measured (out of descriptors, say): what the
				// queue grew by, which the peer reading meanwhile can
				// only make less (counting more as unread, never less).
				q = max(sc.c.unsent()-before, 0)
			}
			sc.t.lastSent(sc, q)
		}
	}
	sc.sendMu.Unlock()
	sc.cancel()
}

// do runs one call and sends its reply.
func (sc *serverConn) do(j job) {
	var res any
	var err error
	cerr := j.ctx.Err()
	if cerr == nil {
		// The object's end reaches the calls' contexts one by one: a
		// call that waited must not start because its own was not yet
		// reached.
		cerr = sc.ctx.Err()
	}
	var admitted *waiter
	if cerr == nil {
		// The tree's peers may have left too much unread: the call
		// waits (its object reads on, so a cancel still arrives).
		admitted, cerr = sc.t.waitRoom(j.ctx)
	}
	if admitted != nil {
		defer sc.t.replied(admitted)
	}
	if cerr != nil {
		// Cancelled while it waited for a worker or for room, or the
		// object ended meanwhile: it never runs.
		j.call.release()
		err = cerr
	} else {
		res, err = sc.run(j.ctx, j.call)
	}
	if j.id != 0 {
		sc.mu.Lock()
		delete(sc.calls, j.id)
		sc.mu.Unlock()
	}
	j.cancel()
	sc.t.putFDs(j.nfds)
	if j.id == 0 {
		if err != nil {
			sc.s.logger().Debug("rpc: one-way call failed", "method", j.call.Method, "err", err)
		}
		closeResult(res)
		return
	}
	sc.reply(j.id, res, err)
}

// run calls the handler, turning a panic into an error so that one bad
// call cannot take the server down.
func (sc *serverConn) run(ctx context.Context, call *Call) (res any, err error) {
	defer call.release()
	defer func() {
		if p := recover(); p != nil {
			sc.s.logger().Error("rpc: handler panicked", "method", call.Method, "panic", p)
			res, err = nil, Errorf(CodeFailed, "internal error")
		}
	}()
	return sc.h.ServeCall(ctx, call)
}

// reply sends the result or error of call id, then closes the result's
// files.
func (sc *serverConn) reply(id uint64, res any, err error) {
	defer closeResult(res)
	sc.sendMu.RLock()
	defer sc.sendMu.RUnlock()
	if sc.ending {
		return // the last message was sent: the caller learns from it
	}
	if err != nil {
		sc.s.logger().Debug("rpc: call failed", "id", id, "err", err)
	}
	if err == nil {
		var body []byte
		var files []*os.File
		var eerr error
		if raw, ok := res.(rawReply); ok {
			body = append(appendHeader(make([]byte, 0, headerLen+len(raw.body)), kindReply, 0, id), raw.body...)
			files = raw.files
		} else {
			body, files, eerr = encodeBody(appendHeader(make([]byte, 0, 256), kindReply, 0, id), res)
		}
		if eerr == nil {
			body[2], body[3] = byte(len(files)), byte(len(files)>>8)
			serr := sc.sendReply(body, files)
			if serr == nil || !errors.As(serr, new(*Error)) {
				return // sent, or the connection is gone
			}
			err = serr
		} else {
			err = Errorf(CodeFailed, "encoding the result: %v", eerr)
		}
	}
	sc.c.send(append(appendHeader(nil, kindError, 0, id), encodeError(toWire(err))...), nil)
}

// closeResult closes the files in a handler's result.
func closeResult(res any) {
	if res == nil {
		return
	}
	if raw, ok := res.(rawReply); ok {
		closeFiles(raw.files)
		return
	}
	// Every FD the walker reaches is closed, even in a result that
	// could not be sent (one holding a descriptor twice, say): that is
	// when closing matters most.
	rv := reflect.ValueOf(res)
	if w := walkerFor(rv.Type()); w != nil {
		w(rv, func(fv reflect.Value) error {
			if fd := fv.Interface().(FD); fd.File != nil {
				fd.File.Close()
			}
			return nil
		})
	}
}
