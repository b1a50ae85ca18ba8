// Package fdmux multiplexes byte streams over one connection (a pair of
// pipes to ssh, say), each stream with a window of its own so that a slow
// reader of one holds up no other, and moves a stream's bytes between a
// pipe and the connection with splice(2) where it can, so that a forwarded
// pipe costs no copy through user memory on either side.
//
// It does what github.com/hashicorp/yamux does for remote (which used
// it), with two differences that are why it exists: yamux copies every
// byte three times on the receiving side (into a bufio buffer, into the
// stream's buffer, out to the reader) and once more on the sending side,
// which over ssh on a small machine cost a quarter of the throughput; and
// a stream here has a full Close (nothing more is read: what still
// arrives is dropped and its window given back, so a sender never waits
// for a reader that has gone) as well as a half-close (CloseWrite).
//
// # Wire format
//
// Frames of a 12-byte header, little-endian: u8 type, u8 flags, u16 zero,
// u32 stream id, u32 length; a data frame's body follows its header.
//
//	data    flags SYN (the first frame of a stream), FIN (its sender
//	        writes no more); length: the body's
//	window  length: bytes the sender of the frame has consumed, which the
//	        peer may send again
//	ping    flags ACK (a reply); length: echoed
//
// The side that dialled opens odd stream ids, the other even ones. Each
// side may have Config.Window bytes of a stream unconsumed at the other
// (both sides must use the same value); a peer that sends more is cut off.
// A connection from which nothing arrives for four keep-alive intervals
// (pings go both ways) is closed.
//
// # Splicing
//
// The fast paths need the connection's ends to be *os.File values in Go's
// poller (non-blocking), a pipe or a socket. [Stream.ReadFrom] from a pipe
// splices the pipe's bytes into the connection behind each frame's
// header; [Stream.WriteTo] to a pipe splices frames' bodies from the
// connection into the pipe while the pipe has room, and copies the rest
// (it is read into memory and written when the pipe drains, so the
// connection is never held up). Everything else is copied.
package fdmux

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Frame types and flags.
const (
	typeData   = 0
	typeWindow = 1
	typePing   = 2

	flagSYN = 1
	flagFIN = 2
	flagACK = 4
)

const hdrLen = 12

// MaxFrame bounds a data frame's body.
const MaxFrame = 1 << 20

// ErrClosed is returned by operations on a session that has ended, and on
// a stream after its Close.
var ErrClosed = errors.New("fdmux: closed")

// Config sets a session's parameters. The zero value is usable.
type Config struct {
	// Window is how many bytes of a stream may be sent and not yet
	// consumed by the receiver; 0 means 4 MiB. Both sides must agree.
	Window int
	// KeepAlive is the interval between pings; 0 means 15 s, negative
	// none (and no liveness check).
	KeepAlive time.Duration
}

// Session is one side of a multiplexed connection.
type Session struct {
	cfg    Config
	window int

	r      io.Reader
	rf     *os.File // r, when the fast paths may use it
	prefix []byte   // read before r
	w      io.Writer
	wf     *os.File // w, when the fast paths may use it
	closer []io.Closer

	wmu      sync.Mutex // frame writes
	fpR, fpW int        // the frame pipe (-1: none), with wmu held
	bpR, bpW int        // the body pipe, likewise

	mu      sync.Mutex
	streams map[uint32]*Stream
	nextID  uint32
	backlog []*Stream
	accepts chan struct{} // a token when backlog is non-empty
	credits map[uint32]int
	pings   []uint32 // pings to answer
	ctlWake chan struct{}

	done    chan struct{}
	dieOnce sync.Once
	err     error
	missed  atomic.Int32 // pings sent since a frame last arrived
}

// New starts a session over r and w; prefix holds bytes of the
// connection already read from r (by a handshake's buffered reader).
// client says whether this side dialled. Close closes closers (normally
// r and w). r and w get the fast paths if they are *os.File values in
// the poller.
func New(r io.Reader, w io.Writer, prefix []byte, client bool, cfg *Config, closers ...io.Closer) *Session {
	s := &Session{
		r: r, w: w, prefix: prefix, closer: closers,
		streams: map[uint32]*Stream{},
		accepts: make(chan struct{}, 1),
		credits: map[uint32]int{},
		ctlWake: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	if cfg != nil {
		s.cfg = *cfg
	}
	s.window = s.cfg.Window
	if s.window <= 0 {
		s.window = 4 << 20
	}
	if s.cfg.KeepAlive == 0 {
		s.cfg.KeepAlive = 15 * time.Second
	}
	if client {
		s.nextID = 1
	} else {
		s.nextID = 2
	}
	if f, ok := r.(*os.File); ok && inPoller(f) {
		s.rf = f
	}
	s.fpR, s.fpW, s.bpR, s.bpW = -1, -1, -1, -1
	if f, ok := w.(*os.File); ok && inPoller(f) {
		// The fast path of sending needs two pipes of its own.
		if fpR, fpW, ok := newPipe(); ok {
			if bpR, bpW, ok := newPipe(); ok {
				s.wf = f
				s.fpR, s.fpW, s.bpR, s.bpW = fpR, fpW, bpR, bpW
			} else {
				unix.Close(fpR)
				unix.Close(fpW)
			}
		}
	}
	go s.readLoop()
	go s.controlLoop()
	if s.cfg.KeepAlive > 0 {
		go s.keepAlive()
	}
	return s
}

// newPipe makes a pipe of the session's own, non-blocking, grown to 1
// MiB if the user's pipe allowance lets it (best effort).
func newPipe() (r, w int, ok bool) {
	var p [2]int
	if unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK) != nil {
		return -1, -1, false
	}
	unix.FcntlInt(uintptr(p[0]), unix.F_SETPIPE_SZ, 1<<20)
	return p[0], p[1], true
}

// inPoller says whether f's reads and writes go through Go's poller (a
// file that is not cannot have deadlines).
func inPoller(f *os.File) bool {
	return f.SetDeadline(time.Time{}) == nil
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err says why the session ended (nil while it runs).
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// IsClosed says whether the session has ended.
func (s *Session) IsClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Close ends the session: the connection is closed, and every stream's
// operations fail with ErrClosed (bytes already received can still be
// read).
func (s *Session) Close() error {
	s.die(ErrClosed)
	return nil
}

func (s *Session) die(err error) {
	s.dieOnce.Do(func() {
		s.err = err
		close(s.done)
		for _, c := range s.closer {
			c.Close()
		}
		go func() {
			// Once no frame is being written (closing the connection
			// ended any write that waited).
			s.wmu.Lock()
			for _, fd := range []*int{&s.fpR, &s.fpW, &s.bpR, &s.bpW} {
				if *fd >= 0 {
					unix.Close(*fd)
					*fd = -1
				}
			}
			s.wmu.Unlock()
		}()
		s.mu.Lock()
		streams := s.streams
		s.streams = map[uint32]*Stream{}
		s.mu.Unlock()
		for _, st := range streams {
			st.mu.Lock()
			st.dead = true
			st.cond.Broadcast()
			st.mu.Unlock()
		}
	})
}

// Open opens a stream; the peer's Accept returns it.
func (s *Session) Open() (*Stream, error) {
	s.mu.Lock()
	if s.IsClosed() {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	id := s.nextID
	s.nextID += 2
	st := s.newStream(id)
	s.streams[id] = st
	s.mu.Unlock()
	if err := s.writeFrame(typeData, flagSYN, id, nil); err != nil {
		return nil, err
	}
	return st, nil
}

// Accept returns the next stream the peer opened.
func (s *Session) Accept() (*Stream, error) {
	for {
		s.mu.Lock()
		if len(s.backlog) > 0 {
			st := s.backlog[0]
			s.backlog = s.backlog[1:]
			if len(s.backlog) > 0 {
				s.signalAccept()
			}
			s.mu.Unlock()
			return st, nil
		}
		s.mu.Unlock()
		select {
		case <-s.accepts:
		case <-s.done:
			s.mu.Lock()
			n := len(s.backlog)
			s.mu.Unlock()
			if n == 0 {
				return nil, s.err
			}
		}
	}
}

func (s *Session) signalAccept() {
	select {
	case s.accepts <- struct{}{}:
	default:
	}
}

func (s *Session) newStream(id uint32) *Stream {
	st := &Stream{s: s, id: id, credit: s.window}
	st.cond.L = &st.mu
	return st
}

// writeFrame writes one frame, header and body together.
func (s *Session) writeFrame(typ, flags byte, id uint32, body []byte) error {
	// Small frames go in one write; a large body is not copied.
	var small [hdrLen + 4096]byte
	b := small[:hdrLen]
	if len(body) <= len(small)-hdrLen {
		b = append(b, body...)
		body = nil
	}
	putHeader(b, typ, flags, id, uint32(len(b)-hdrLen+len(body)))
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.write(b); err != nil || len(body) == 0 {
		return err
	}
	return s.write(body)
}

func (s *Session) write(b []byte) error {
	if s.IsClosed() {
		return s.err
	}
	if _, err := s.w.Write(b); err != nil {
		s.die(fmt.Errorf("fdmux: writing the connection: %w", err))
		return s.err
	}
	return nil
}

func putHeader(b []byte, typ, flags byte, id, n uint32) {
	b[0], b[1], b[2], b[3] = typ, flags, 0, 0
	binary.LittleEndian.PutUint32(b[4:], id)
	binary.LittleEndian.PutUint32(b[8:], n)
}

// credit queues n consumed bytes of stream id to be given back.
func (s *Session) credit(id uint32, n int) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	s.credits[id] += n
	s.mu.Unlock()
	s.wakeControl()
}

func (s *Session) wakeControl() {
	select {
	case s.ctlWake <- struct{}{}:
	default:
	}
}

// controlLoop writes window and ping frames: never from the reading
// loop, which must never wait for the connection's writing side (the
// peer's could be waiting for ours).
func (s *Session) controlLoop() {
	var b []byte
	for {
		select {
		case <-s.ctlWake:
		case <-s.done:
			return
		}
		s.mu.Lock()
		b = b[:0]
		for id, n := range s.credits {
			var h [hdrLen]byte
			putHeader(h[:], typeWindow, 0, id, uint32(n))
			b = append(b, h[:]...)
			delete(s.credits, id)
		}
		for _, p := range s.pings {
			var h [hdrLen]byte
			putHeader(h[:], typePing, flagACK, 0, p)
			b = append(b, h[:]...)
		}
		s.pings = s.pings[:0]
		s.mu.Unlock()
		if len(b) > 0 {
			s.wmu.Lock()
			err := s.write(b)
			s.wmu.Unlock()
			if err != nil {
				return
			}
		}
	}
}

// keepAlive pings, and ends a session from which nothing has arrived
// while it sent four pings (counted, not timed: a machine that slept
// has not lost its connection for that).
func (s *Session) keepAlive() {
	t := time.NewTicker(s.cfg.KeepAlive)
	defer t.Stop()
	var n uint32
	for {
		select {
		case <-t.C:
		case <-s.done:
			return
		}
		if s.missed.Add(1) > 4 {
			s.die(errors.New("fdmux: the connection stopped: nothing arrived over four keep-alive intervals"))
			return
		}
		n++
		// Not from here if a writer holds the connection (a frame in
		// the way is as good a sign of life as a ping).
		if s.wmu.TryLock() {
			var h [hdrLen]byte
			putHeader(h[:], typePing, 0, 0, n)
			s.write(h[:])
			s.wmu.Unlock()
		}
	}
}

// readFull reads exactly len(b) bytes of the connection.
func (s *Session) readFull(b []byte) error {
	if len(s.prefix) > 0 {
		n := copy(b, s.prefix)
		s.prefix = s.prefix[n:]
		b = b[n:]
	}
	if len(b) == 0 {
		return nil
	}
	for len(b) > 0 {
		n, err := s.r.Read(b)
		if n > 0 {
			s.missed.Store(0) // a body's bytes are signs of life too
			b = b[n:]
			continue
		}
		if err == nil {
			continue // as io.ReadFull does
		}
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}

// errProtocol ends a session whose peer broke the protocol.
type errProtocol string

func (e errProtocol) Error() string { return "fdmux: protocol error: " + string(e) }

func (s *Session) readLoop() {
	var hdr [hdrLen]byte
	for {
		if err := s.readFull(hdr[:]); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				// Not io.EOF itself: a stream's reader must not take a
				// connection cut for its stream's end.
				err = fmt.Errorf("fdmux: the connection ended: %w", io.ErrUnexpectedEOF)
			} else {
				err = fmt.Errorf("fdmux: reading the connection: %w", err)
			}
			s.die(err)
			return
		}
		s.missed.Store(0)
		typ, flags := hdr[0], hdr[1]
		id := binary.LittleEndian.Uint32(hdr[4:])
		n := binary.LittleEndian.Uint32(hdr[8:])
		var err error
		switch typ {
		case typeData:
			err = s.data(flags, id, int(n))
		case typeWindow:
			s.mu.Lock()
			st := s.streams[id]
			s.mu.Unlock()
			if st != nil {
				st.mu.Lock()
				st.credit += int(n)
				if st.credit > s.window {
					err = errProtocol("window beyond its size")
				}
				st.cond.Broadcast()
				st.mu.Unlock()
			}
		case typePing:
			if flags&flagACK == 0 {
				s.mu.Lock()
				if len(s.pings) < 64 {
					s.pings = append(s.pings, n)
				}
				s.mu.Unlock()
				s.wakeControl()
			}
		default:
			err = errProtocol(fmt.Sprintf("frame type %d", typ))
		}
		if err != nil {
			s.die(err)
			return
		}
	}
}

func (s *Session) data(flags byte, id uint32, n int) error {
	if n > MaxFrame {
		return errProtocol(fmt.Sprintf("a frame of %d bytes", n))
	}
	s.mu.Lock()
	st := s.streams[id]
	if flags&flagSYN != 0 {
		if st != nil || id == 0 || (id%2 == 1) == (s.nextID%2 == 1) {
			s.mu.Unlock()
			return errProtocol(fmt.Sprintf("stream %d opened twice or by the wrong side", id))
		}
		if !s.IsClosed() { // else die has taken the streams: drop it
			st = s.newStream(id)
			s.streams[id] = st
			s.backlog = append(s.backlog, st)
			s.signalAccept()
		}
	}
	s.mu.Unlock()
	if n > 0 {
		if err := s.deliver(st, n); err != nil {
			return err
		}
	}
	if flags&flagFIN != 0 && st != nil {
		st.mu.Lock()
		st.finRecv = true
		st.cond.Broadcast()
		st.maybeForget()
		st.mu.Unlock()
	}
	return nil
}

// deliver moves a data frame's n-byte body to its stream (st nil: a
// stream that has ended, whose bytes are dropped).
func (s *Session) deliver(st *Stream, n int) error {
	if st != nil {
		st.mu.Lock()
		st.unacked += n
		over := st.unacked > s.window
		st.mu.Unlock()
		if over {
			return errProtocol(fmt.Sprintf("stream %d sent beyond its window", st.id))
		}
	}
	for n > 0 {
		if st == nil {
			k, err := s.discard(n)
			if err != nil {
				return err
			}
			n -= k
			continue
		}
		k, how, err := s.spliceIn(st, n)
		if err != nil {
			return err
		}
		n -= k
		switch how {
		case spliced:
		case dropped:
			k, err := s.discard(n)
			if err != nil {
				return err
			}
			n -= k
			st.mu.Lock()
			st.unacked -= k
			st.mu.Unlock()
			s.credit(st.id, k)
		case buffered:
			if err := s.buffer(st, n); err != nil {
				return err
			}
			n = 0
		}
	}
	return nil
}

// What spliceIn says to do with the rest of a body.
const (
	spliced  = iota // go on splicing
	dropped         // the stream is closed: drop it
	buffered        // into the stream's buffer
)

// spliceIn splices up to n bytes of the connection towards st's sink,
// if it has one and nothing is in its buffer: into the sink while it
// has room and its overflow pipe is empty, else into the overflow pipe
// (WriteTo moves them on); "buffered" once neither has room.
func (s *Session) spliceIn(st *Stream, n int) (k, how int, err error) {
	st.mu.Lock()
	switch {
	case st.closed:
		st.mu.Unlock()
		return 0, dropped, nil
	case st.sink == nil || st.buffered() > 0 || len(s.prefix) > 0 || s.rf == nil:
		st.mu.Unlock()
		return 0, buffered, nil
	}
	st.mu.Unlock()
	rc, e := s.rf.SyscallConn()
	if e != nil {
		return 0, buffered, nil
	}
	how = buffered
	var serr error
	// The callback returns false to wait for the connection.
	e = rc.Read(func(rfd uintptr) bool {
		// st.mu is held while the sink and the overflow pipe are used:
		// WriteTo unsets them so before it returns.
		st.mu.Lock()
		defer st.mu.Unlock()
		switch {
		case st.closed:
			how = dropped
			return true
		case st.sink == nil || st.buffered() > 0:
			return true
		}
		// empty says whether an EAGAIN was the connection's.
		empty := func() bool {
			avail, _ := unix.IoctlGetInt(int(rfd), unix.TIOCINQ)
			return avail == 0
		}
		if st.overflow == 0 {
			m, err := 0, error(nil)
			if cerr := st.sink.Control(func(wfd uintptr) {
				var m64 int64
				m64, err = unix.Splice(int(rfd), nil, int(wfd), nil, n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
				m = int(m64)
			}); cerr != nil {
				err = cerr // the sink was closed: as a failed write
			}
			switch {
			case m > 0:
				k, how = m, spliced
				st.sunk += int64(m)
				st.consumed(m)
				s.missed.Store(0)
				return true
			case err == unix.EAGAIN:
				if empty() {
					return false
				}
				// The sink is full: the overflow pipe, below.
			case err == nil:
				serr = io.ErrUnexpectedEOF
				return true
			default:
				// The sink failed (its reader went): the bytes go to
				// the buffer, and WriteTo returns the error.
				st.sinkErr = err
				return true
			}
		}
		if st.ovW < 0 {
			if st.ovTried {
				return true
			}
			st.ovTried = true
			r, w, ok := newPipe()
			if !ok {
				return true
			}
			st.ovR, st.ovW = r, w
		}
		m, err := unix.Splice(int(rfd), nil, st.ovW, nil, n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case m > 0:
			k, how = int(m), spliced
			st.overflow += int(m)
			st.cond.Broadcast()
			s.missed.Store(0)
		case err == unix.EAGAIN:
			if empty() {
				return false
			}
			// The overflow pipe is full too: the buffer.
		case err == nil:
			serr = io.ErrUnexpectedEOF
		}
		return true
	})
	if e == nil {
		e = serr
	}
	if e != nil {
		return k, how, fmt.Errorf("fdmux: reading the connection: %w", e)
	}
	return k, how, nil
}

// buffer reads n bytes of the connection into st's buffer: a queue of
// pooled chunks. Only the reading loop adds to it, at the last chunk's
// end, and the stream's reader only takes from the front, recycling a
// chunk once it is used up and not the last: so the bytes are read in
// without the lock, while the reader may be writing out the front.
func (s *Session) buffer(st *Stream, n int) error {
	for n > 0 {
		st.mu.Lock()
		if len(st.chunks) == 0 || cap(st.chunks[len(st.chunks)-1].b) == len(st.chunks[len(st.chunks)-1].b) {
			st.chunks = append(st.chunks, newChunk(n))
		}
		c := st.chunks[len(st.chunks)-1]
		c.filling = true
		l := len(c.b)
		k := min(n, cap(c.b)-l)
		st.mu.Unlock()
		if err := s.readFull(c.b[l : l+k]); err != nil {
			return fmt.Errorf("fdmux: reading the connection: %w", err)
		}
		n -= k
		st.mu.Lock()
		c.filling = false
		if st.closed {
			st.unacked -= k
			s.credit(st.id, k)
		} else {
			c.b = c.b[:l+k]
			st.nbuf += k
			st.cond.Broadcast()
		}
		st.mu.Unlock()
	}
	return nil
}

// chunk is part of a stream's buffer: b[off:] is unread; filling while
// the reading loop reads into it without the lock.
type chunk struct {
	b       []byte
	off     int
	filling bool
}

// Chunks come in two sizes, pooled: small for a small frame (a message
// relayed, a key typed), large for bulk.
const (
	smallChunk = 16 << 10
	largeChunk = 256 << 10
)

var (
	smallChunks = sync.Pool{New: func() any { b := make([]byte, smallChunk); return &b }}
	largeChunks = sync.Pool{New: func() any { b := make([]byte, largeChunk); return &b }}
)

func newChunk(n int) *chunk {
	if n <= smallChunk {
		return &chunk{b: (*smallChunks.Get().(*[]byte))[:0]}
	}
	return &chunk{b: (*largeChunks.Get().(*[]byte))[:0]}
}

// discard reads and drops up to n bytes of the connection.
func (s *Session) discard(n int) (int, error) {
	var b [16 << 10]byte
	k := min(n, len(b))
	if err := s.readFull(b[:k]); err != nil {
		return 0, fmt.Errorf("fdmux: reading the connection: %w", err)
	}
	return k, nil
}

// Stream is one multiplexed stream: an io.ReadWriteCloser, with
// CloseWrite for a half-close. Reads and writes may run at once, but
// not two reads or two writes.
type Stream struct {
	s  *Session
	id uint32

	mu   sync.Mutex
	cond sync.Cond

	// receiving
	chunks   []*chunk // received, not yet read
	nbuf     int      // bytes in them
	unacked  int      // received and not given back
	pending  int      // consumed and not yet given back
	finRecv  bool     // the peer writes no more
	sink     syscall.RawConn
	sinkErr  error
	sunk     int64 // spliced into the sink
	ovR, ovW int   // the overflow pipe, once the sink has filled
	ovTried  bool  // made (or failed to be)
	overflow int   // bytes in it

	// sending
	credit  int
	writing int // writes under way (CloseWrite waits for them)
	finSent bool

	closed    bool // Close: nothing more is read
	dead      bool // the session ended
	forgotten bool
}

// ID is the stream's id, the same on both sides.
func (st *Stream) ID() uint32 { return st.id }

func (st *Stream) buffered() int { return st.nbuf }

// front is the unread part of the buffer's first chunk (nil if none),
// with st.mu held.
func (st *Stream) front() []byte {
	for len(st.chunks) > 0 {
		c := st.chunks[0]
		if c.off < len(c.b) {
			return c.b[c.off:]
		}
		if c.filling {
			return nil
		}
		st.recycle(c)
		st.chunks = st.chunks[1:]
	}
	st.chunks = nil
	return nil
}

func (st *Stream) recycle(c *chunk) {
	b := c.b[:cap(c.b)]
	c.b = nil
	if cap(b) == smallChunk {
		smallChunks.Put(&b)
	} else {
		largeChunks.Put(&b)
	}
}

// consumed gives back k bytes of window, in batches, with st.mu held.
func (st *Stream) consumed(k int) {
	st.pending += k
	if st.pending >= st.s.window/8 {
		n := st.pending
		st.pending = 0
		st.unacked -= n
		st.s.credit(st.id, n)
	}
}

// take removes k read bytes from the buffer's front, with st.mu held.
func (st *Stream) take(k int) {
	c := st.chunks[0]
	c.off += k
	st.nbuf -= k
	if c.off == len(c.b) && !c.filling {
		st.recycle(c)
		st.chunks = st.chunks[1:]
		if len(st.chunks) == 0 {
			st.chunks = nil
		}
	}
	st.consumed(k)
}

// Read reads what the peer wrote; io.EOF after the peer's CloseWrite or
// Close and everything before it.
func (st *Stream) Read(p []byte) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for {
		if st.closed {
			return 0, ErrClosed
		}
		if st.buffered() > 0 {
			k := copy(p, st.front())
			st.take(k)
			return k, nil
		}
		if st.finRecv {
			return 0, io.EOF
		}
		if st.dead {
			return 0, st.s.err
		}
		st.cond.Wait()
	}
}

// WriteTo writes what the peer writes to w until the peer's CloseWrite
// or Close. A pipe in the poller gets frames spliced into it: straight
// from the connection while it has room, and through a pipe of the
// stream's own (the overflow) while it has not, so that the connection
// goes on; only what neither has room for is copied through memory.
func (st *Stream) WriteTo(w io.Writer) (total int64, err error) {
	var sink syscall.RawConn
	if f, ok := w.(*os.File); ok && st.s.rf != nil && isPipe(f) && inPoller(f) {
		sink, _ = f.SyscallConn()
	}
	if sink != nil {
		st.mu.Lock()
		// The overflow pipe is made when the sink first fills: most
		// streams never need one (a pipe's size counts against the
		// user's pipe-user-pages-soft).
		st.sink, st.sunk, st.ovR, st.ovW, st.ovTried = sink, 0, -1, -1, false
		st.mu.Unlock()
		defer func() {
			// The reading loop uses the sink and the overflow pipe with
			// st.mu held: once they are unset here, it no longer does.
			st.mu.Lock()
			st.sink = nil
			total += st.sunk
			st.sunk = 0
			if st.ovR >= 0 {
				unix.Close(st.ovR)
				unix.Close(st.ovW)
				st.ovR, st.ovW = -1, -1
			}
			if st.overflow > 0 && !st.closed {
				// Lost with the pipe (the sink failed): given back.
				st.unacked -= st.overflow
				st.s.credit(st.id, st.overflow)
			}
			st.overflow = 0
			st.consumed(0)
			st.mu.Unlock()
		}()
	}
	st.mu.Lock()
	for {
		if st.closed {
			st.mu.Unlock()
			return total, ErrClosed
		}
		if st.sinkErr != nil {
			err := st.sinkErr
			st.mu.Unlock()
			return total, &os.PathError{Op: "splice", Path: w.(*os.File).Name(), Err: err}
		}
		if st.overflow > 0 {
			n, fd := st.overflow, st.ovR
			st.mu.Unlock()
			k, err := moveOverflow(fd, sink, n)
			st.mu.Lock()
			if st.closed {
				continue // Close gave its window back
			}
			st.overflow -= k
			total += int64(k)
			st.consumed(k)
			if err != nil {
				st.sinkErr = err
			}
			continue
		}
		if st.buffered() > 0 {
			front := st.front()
			st.mu.Unlock()
			k, err := w.Write(front)
			st.mu.Lock()
			if st.closed {
				continue
			}
			total += int64(k)
			st.take(k)
			if err != nil {
				st.mu.Unlock()
				return total, err
			}
			continue
		}
		if st.finRecv {
			st.mu.Unlock()
			return total, nil
		}
		if st.dead {
			st.mu.Unlock()
			return total, st.s.err
		}
		st.cond.Wait()
	}
}

// moveOverflow splices n bytes (there are at least that many) from the
// overflow pipe into the sink, waiting for room in it.
func moveOverflow(fd int, sink syscall.RawConn, n int) (int, error) {
	k := 0
	var serr error
	err := sink.Write(func(wfd uintptr) bool {
		for k < n {
			m, err := unix.Splice(fd, nil, int(wfd), nil, n-k, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			switch {
			case m > 0:
				k += int(m)
				continue
			case err == unix.EAGAIN:
				return k > 0 // wait for room if nothing moved yet
			case err == nil:
				serr = io.ErrUnexpectedEOF
			default:
				serr = err
			}
			return true
		}
		return true
	})
	if err == nil {
		err = serr
	}
	return k, err
}

func isPipe(f *os.File) bool {
	var st unix.Stat_t
	ok := false
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			ok = unix.Fstat(int(fd), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFIFO
		})
	}
	return ok
}

// waitCredit waits until the stream may send, and takes up to n bytes
// of its window.
func (st *Stream) waitCredit(n int) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for {
		switch {
		case st.finSent || st.closed:
			return 0, ErrClosed
		case st.dead:
			return 0, st.s.err
		case st.credit > 0:
			k := min(n, st.credit, MaxFrame)
			st.credit -= k
			st.writing++
			return k, nil
		}
		st.cond.Wait()
	}
}

// wrote ends a write waitCredit let start, giving back the part of its
// window (unused) it did not send.
func (st *Stream) wrote(unused int) {
	st.mu.Lock()
	st.writing--
	st.credit += unused
	st.cond.Broadcast()
	st.mu.Unlock()
}

// Write sends p to the peer, waiting for window as it needs.
func (st *Stream) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		k, err := st.waitCredit(len(p) - done)
		if err != nil {
			return done, err
		}
		err = st.s.writeFrame(typeData, 0, st.id, p[done:done+k])
		st.wrote(0)
		if err != nil {
			return done, err
		}
		done += k
	}
	return done, nil
}

// ReadFrom sends what r holds until it ends. A pipe in the poller is
// spliced into the connection.
func (st *Stream) ReadFrom(r io.Reader) (int64, error) {
	f, ok := r.(*os.File)
	if !ok || st.s.wf == nil || !isPipe(f) || !inPoller(f) {
		b := make([]byte, 64<<10)
		var total int64
		for {
			n, err := r.Read(b)
			if n > 0 {
				k, werr := st.Write(b[:n])
				total += int64(k)
				if werr != nil {
					return total, werr
				}
			}
			if err == io.EOF {
				return total, nil
			}
			if err != nil {
				return total, err
			}
		}
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	wrc, err := st.s.wf.SyscallConn()
	if err != nil {
		return 0, err
	}
	var total int64
	for {
		// Wait for bytes (or the pipe's end), then for window.
		avail, eof := 0, false
		if err := rc.Read(func(fd uintptr) bool {
			avail, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ)
			if avail > 0 {
				return true
			}
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if n, _ := unix.Poll(pfd, 0); n > 0 && pfd[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
				eof = true
				return true
			}
			return false
		}); err != nil {
			return total, err
		}
		if eof {
			return total, nil
		}
		k, err := st.waitCredit(avail)
		if err != nil {
			return total, err
		}
		m, err := st.spliceOut(rc, wrc, k)
		st.wrote(k - m)
		total += int64(m)
		if err != nil {
			return total, err
		}
	}
}

// spliceOut sends a frame of what the pipe rc holds, up to k bytes, and
// says how many it sent: the bytes are first spliced into the session's
// body pipe (so that the header can say how many there are: another
// reader of the pipe may have taken some, and rc may have been closed),
// then, behind their header, into its frame pipe, and from there into
// the connection in one splice, so that the peer (ssh) finds header and
// body at once rather than waking for a header alone. An error before
// the header is written leaves the session as it was; after, it ends it.
func (st *Stream) spliceOut(rc, wrc syscall.RawConn, k int) (int, error) {
	s := st.s
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.IsClosed() {
		return 0, s.err
	}
	if s.fpW < 0 {
		return 0, errors.New("fdmux: no frame pipe")
	}
	var m int
	var serr error
	if err := rc.Control(func(rfd uintptr) {
		n, err := unix.Splice(int(rfd), nil, s.bpW, nil, k, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		m = max(int(n), 0)
		if err != nil && err != unix.EAGAIN {
			serr = err
		}
	}); err != nil {
		return 0, err
	}
	if m == 0 {
		return 0, serr
	}
	var h [hdrLen]byte
	putHeader(h[:], typeData, 0, st.id, uint32(m))
	err := s.frame(wrc, h[:], m)
	if err != nil {
		// The frame is cut short: the connection cannot go on.
		s.die(fmt.Errorf("fdmux: splicing into the connection: %w", err))
		return 0, s.err
	}
	return m, nil
}

// frame puts header h and the n bytes of the body pipe together in the
// frame pipe and splices them into the connection, with wmu held.
func (s *Session) frame(wrc syscall.RawConn, h []byte, n int) error {
	if _, err := unix.Write(s.fpW, h); err != nil {
		return err
	}
	in := len(h)
	for n > 0 {
		m, err := unix.Splice(s.bpR, nil, s.fpW, nil, n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case m > 0:
			n -= int(m)
			in += int(m)
			continue
		case err == unix.EAGAIN:
			// The frame pipe is full (the body pipe holds n): out with
			// what it holds.
			if _, err := spliceAll(s.fpR, wrc, in); err != nil {
				return err
			}
			in = 0
			continue
		case err == nil:
			return io.ErrUnexpectedEOF
		default:
			return err
		}
	}
	_, err := spliceAll(s.fpR, wrc, in)
	return err
}

// spliceAll splices n bytes (which it holds) from the pipe fd into the
// connection wrc, waiting for room.
func spliceAll(fd int, wrc syscall.RawConn, n int) (int, error) {
	done := 0
	var serr error
	for done < n && serr == nil {
		err := wrc.Write(func(wfd uintptr) bool {
			m, err := unix.Splice(fd, nil, int(wfd), nil, n-done, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			switch {
			case m > 0:
				done += int(m)
			case err == unix.EAGAIN:
				return false
			case err == nil:
				serr = io.ErrUnexpectedEOF
			default:
				serr = err
			}
			return true
		})
		if err != nil && serr == nil {
			serr = err
		}
	}
	return done, serr
}

// CloseWrite tells the peer nothing more is written (its reads end with
// io.EOF); reads go on.
func (st *Stream) CloseWrite() error {
	st.mu.Lock()
	if st.finSent || st.dead {
		st.mu.Unlock()
		return nil
	}
	st.finSent = true
	st.cond.Broadcast()
	// No frame may follow the FIN: a write under way (another
	// goroutine's) goes first.
	for st.writing > 0 && !st.dead {
		st.cond.Wait()
	}
	st.maybeForget()
	st.mu.Unlock()
	return st.s.writeFrame(typeData, flagFIN, st.id, nil)
}

// Close ends the stream: CloseWrite, and nothing more is read (what is
// buffered and what still arrives is dropped, its window given back).
func (st *Stream) Close() error {
	st.mu.Lock()
	if !st.closed {
		st.closed = true
		n := st.buffered() + st.pending + st.overflow
		// (Dropped, not recycled: the reading loop may be filling the
		// last chunk, and WriteTo writing out the first.)
		st.chunks, st.nbuf, st.pending, st.overflow = nil, 0, 0, 0
		st.unacked -= n
		st.s.credit(st.id, n)
		st.cond.Broadcast()
		st.maybeForget()
	}
	st.mu.Unlock()
	return st.CloseWrite()
}

// maybeForget drops the stream from its session once both sides are
// done with it, with st.mu held.
func (st *Stream) maybeForget() {
	if st.closed && st.finSent && st.finRecv && !st.forgotten {
		st.forgotten = true
		s := st.s
		go func() {
			s.mu.Lock()
			if s.streams[st.id] == st {
				delete(s.streams, st.id)
			}
			delete(s.credits, st.id)
			s.mu.Unlock()
		}()
	}
}
