package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// A Client holds one object: one end of a SOCK_SEQPACKET socket whose
// other end some server serves. Holding the socket is holding the
// capability; there is no other check.
//
// A Client is safe for concurrent use: calls from many goroutines are
// pipelined on the socket (each carries an id, and replies may come back in
// any order). No goroutine of its own reads the socket: a caller waiting
// for a reply reads it, one at a time, and hands the replies for other
// calls to their callers, so that a call's reply wakes no other goroutine
// on the way (see Forward for the exception).
type Client struct {
	c    *conn
	opts ClientOptions

	mu     sync.Mutex
	nextID uint64
	// pending holds the calls sent and not yet answered. Each channel has
	// room for one message: the call's reply, or the read turn (kindTurn),
	// and gets it only while the call is in pending; it is closed when the
	// object fails.
	pending map[uint64]chan message
	// unsent holds the pending calls still being sent: their callers
	// cannot read yet, so the turn does not go to them.
	unsent map[uint64]struct{}
	// orphans holds the calls given up after they were sent: their
	// replies are still to come, and someone reads them (drain), or they
	// would fill the socket, stop the server and hold their descriptors.
	orphans map[uint64]struct{}
	err     error // set once: why the object is unusable
	done    chan struct{}
	// reading is set while someone holds the read turn: the caller of
	// call reader, or (reader 0) Err or the background reader.
	reading bool
	reader  uint64
	// interrupted is set when the end of the reading caller's context
	// set the socket's read deadline to wake it.
	interrupted bool
	// background is set once a goroutine reads for good (watch);
	// wantsTurn is its signal while it waits for the turn.
	background bool
	wantsTurn  chan struct{}
	reset      bool // ECONNRESET was read; only the turn's holder uses it
	// life ends when the client fails or is closed.
	life    context.Context
	endLife context.CancelFunc
}

// kindTurn is never sent: a waiting call's channel gets it with the read
// turn.
const kindTurn = 0xff

// ClientOptions adjust a Client. The zero value is the defaults.
type ClientOptions struct {
	// MaxMessage is the largest reply accepted; 0 means DefaultMaxMessage.
	MaxMessage int
	// MaxFDs is the largest number of descriptors accepted in a reply;
	// 0 means DefaultMaxFDs.
	MaxFDs int
}

// NewClient returns a Client for the object at the end of the socket f,
// which it takes ownership of (f is closed when the Client is, and at once
// if NewClient fails). f must be a SOCK_SEQPACKET Unix socket.
func NewClient(f *os.File, opts ClientOptions) (*Client, error) {
	uc, err := unixConn(f)
	if err != nil {
		return nil, err
	}
	return newClient(uc, opts), nil
}

// Dial connects to the server listening on the Unix socket at path and
// returns a Client for the object it serves to new connections.
func Dial(ctx context.Context, path string, opts ClientOptions) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return nil, err
	}
	return newClient(c.(*net.UnixConn), opts), nil
}

// Options returns the options c was made with, for clients of the objects
// that arrive in its replies (a typed client's Sub, say).
func (c *Client) Options() ClientOptions { return c.opts }

// unixConn makes a *net.UnixConn of f, checking that it is a
// SOCK_SEQPACKET socket; f is closed in every case (net.FileConn dups it).
func unixConn(f *os.File) (*net.UnixConn, error) {
	if f == nil {
		return nil, errors.New("rpc: no socket (a nil *os.File)")
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("rpc: %s: %w", f.Name(), err)
	}
	var typ int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		typ, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
	}); err != nil {
		return nil, fmt.Errorf("rpc: %s: %w", f.Name(), err)
	}
	if errors.Is(serr, unix.ENOTSOCK) {
		return nil, fmt.Errorf("rpc: %s is not a socket: %w", f.Name(), serr)
	}
	if serr != nil {
		return nil, &os.SyscallError{Syscall: "getsockopt SO_TYPE " + f.Name(), Err: serr}
	}
	if typ != unix.SOCK_SEQPACKET {
		return nil, fmt.Errorf("rpc: %s is not a SOCK_SEQPACKET socket (type %d)", f.Name(), typ)
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("rpc: %s: %w", f.Name(), err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("rpc: %s is not a Unix socket", f.Name())
	}
	return uc, nil
}

func newClient(uc *net.UnixConn, opts ClientOptions) *Client {
	c := &Client{
		c:       newConn(uc, opts.MaxMessage, opts.MaxFDs),
		opts:    opts,
		pending: map[uint64]chan message{},
		unsent:  map[uint64]struct{}{},
		orphans: map[uint64]struct{}{},
		done:    make(chan struct{}),
	}
	c.life, c.endLife = context.WithCancel(context.Background())
	return c
}

// Close closes the object; calls in flight fail with ErrClosed. Closing
// the socket is how the server learns the object is no longer wanted.
func (c *Client) Close() error {
	c.fail(&Error{Code: CodeClosed, Text: "client closed"})
	return nil
}

// fail marks the client unusable with err, wakes every pending call and
// closes the socket. Only the first call has an effect.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	close(c.done)
	c.failPending()
	c.mu.Unlock()
	c.endLife()
	c.c.c.Close()
}

// failPending wakes every pending call: its channel is closed. c.mu is
// held.
func (c *Client) failPending() {
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
}

// Err returns why the object is unusable, or nil while it is usable. When
// no caller is reading the socket, Err first reads what waits on it
// without waiting for more: that is how it learns, with no call made,
// that the server closed the object or sent its last message.
func (c *Client) Err() error {
	c.mu.Lock()
	if c.err != nil || c.reading {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.reading, c.reader = true, 0
	c.mu.Unlock()
	for {
		m, err, ok := c.c.tryRecv()
		if !ok || c.dispatch(m, err, 0) == over {
			break
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.passTurn()
	}
	return c.err
}

// watch starts a goroutine that reads the object from now on, as soon as
// no caller does, so that the object's end is seen when it comes: for
// Forward, whose server ends its own objects then.
func (c *Client) watch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.background || c.err != nil {
		return
	}
	c.background = true
	var turn chan struct{}
	if c.reading {
		turn = make(chan struct{}, 1)
		c.wantsTurn = turn
	} else {
		c.reading, c.reader = true, 0
	}
	go func() {
		if turn != nil {
			select {
			case <-turn:
			case <-c.done:
				return
			}
		}
		for {
			m, err := c.c.recv()
			if c.dispatch(m, err, 0) == over {
				return
			}
		}
	}()
}

// passTurn gives up the read turn, which the caller holds: to the
// background reader if it waits for it, else to a call that waits for its
// reply, else to a drain goroutine if replies to calls given up are due,
// else to nobody. c.mu is held.
func (c *Client) passTurn() {
	if c.interrupted {
		c.c.c.SetReadDeadline(time.Time{})
		c.interrupted = false
	}
	c.reader = 0
	if c.wantsTurn != nil {
		c.wantsTurn <- struct{}{}
		c.wantsTurn = nil
		return
	}
	for id, ch := range c.pending {
		if _, ok := c.unsent[id]; ok {
			continue
		}
		c.reader = id
		ch <- message{kind: kindTurn} // empty: it is pending
		return
	}
	if len(c.orphans) > 0 && c.err == nil {
		go c.drain()
		return
	}
	c.reading = false
}

// drain reads, holding the turn, until no reply to a call given up is due,
// then passes the turn on.
func (c *Client) drain() {
	for {
		c.mu.Lock()
		if len(c.orphans) == 0 || c.err != nil {
			if c.err == nil {
				c.passTurn()
			}
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		m, err := c.c.recv()
		if c.dispatch(m, err, 0) == over {
			return
		}
	}
}

// interrupt wakes the caller of call id if it reads, by setting the
// socket's read deadline: its context has ended.
func (c *Client) interrupt(id uint64) {
	c.mu.Lock()
	if c.reading && c.reader == id && !c.interrupted {
		c.interrupted = true
		c.c.c.SetReadDeadline(time.Unix(1, 0))
	}
	c.mu.Unlock()
}

// What dispatch did with a message.
const (
	other = iota // handed it on, or dropped it
	mine         // it is the reply sought
	over         // the object is over: the client failed
)

// dispatch acts on what the holder of the read turn read (m or err): the
// reply to call own is the holder's (mine); another reply goes to its
// caller; the object's last message, or the connection's end, fails the
// client.
func (c *Client) dispatch(m message, err error, own uint64) int {
	if err != nil {
		var re *recvError
		switch {
		case errors.Is(err, unix.ECONNRESET) && !c.reset:
			// The server closed its end with our calls still unread in
			// it. The kernel reports that once, ahead of what the server
			// sent last (why it closed): read on to get it.
			c.reset = true
			return other
		case errors.As(err, &re):
			// A reply that broke a rule: fail that call alone.
			if re.id == 0 || (re.kind != kindReply && re.kind != kindError) {
				return other
			}
			m = message{kind: kindError, id: re.id, body: encodeError(re.err)}
		case errors.Is(err, errEOF):
			c.fail(&Error{Code: CodeClosed, Text: "the server closed the object"})
			return over
		default:
			c.fail(&Error{Code: CodeClosed, Text: "connection: " + err.Error()})
			return over
		}
	}
	switch {
	case m.kind == kindError && m.id == 0:
		// The object failed: its last message.
		c.fail(decodeError(m.body, m.files))
		return over
	case m.kind != kindReply && m.kind != kindError:
		// Servers do not call clients in this protocol version.
		closeFiles(m.files)
		return other
	case own != 0 && m.id == own:
		return mine
	}
	c.mu.Lock()
	ch, ok := c.pending[m.id]
	delete(c.pending, m.id)
	delete(c.orphans, m.id)
	if ok {
		ch <- m // empty: it is pending, and the turn is ours
	}
	c.mu.Unlock()
	if !ok {
		closeFiles(m.files) // the caller gave up
	}
	return other
}

// Call calls method on the object with args and decodes the reply into
// result (a pointer, or nil to ignore it). FDs in args are sent (the caller
// keeps its files); FDs in result are the caller's to close. A failure the
// server reports comes back as an *Error. If ctx ends first, Call returns
// ctx's error: if the call was sent, it tells the server to cancel it; if
// it was still waiting to be sent (a server that reads nothing fills the
// socket), it was not sent at all.
func (c *Client) Call(ctx context.Context, method string, args, result any) error {
	body, files, err := encodeCall(method, args)
	if err != nil {
		return fmt.Errorf("rpc: %s: %w", method, err)
	}
	m, err := c.roundTrip(ctx, method, body, files)
	if err != nil {
		return err
	}
	return c.finish(method, m, result)
}

// Send calls method on the object with args without waiting for, or
// getting, any reply. It returns once the message is on the socket, which
// a server that reads nothing may never let it be: SendContext bounds the
// wait.
func (c *Client) Send(method string, args any) error {
	return c.SendContext(context.Background(), method, args)
}

// SendContext is Send, giving up when ctx ends (its error) if the message
// is not on the socket by then: nothing of it was sent.
func (c *Client) SendContext(ctx context.Context, method string, args any) error {
	body, files, err := encodeCall(method, args)
	if err != nil {
		return fmt.Errorf("rpc: %s: %w", method, err)
	}
	if err := c.Err(); err != nil {
		return withMethod(err, method)
	}
	b := appendHeader(make([]byte, 0, headerLen+len(body)), kindCall, len(files), 0)
	if err := c.c.sendCtx(ctx, append(b, body...), files); err != nil {
		return c.sendError(method, err)
	}
	return nil
}

func encodeCall(method string, args any) ([]byte, []*os.File, error) {
	b, err := encMode.Marshal(method)
	if err != nil {
		return nil, nil, err
	}
	return encodeBody(b, args)
}

func (c *Client) roundTrip(ctx context.Context, method string, body []byte, files []*os.File) (message, error) {
	ch := make(chan message, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return message{}, withMethod(err, method)
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.unsent[id] = struct{}{}
	c.mu.Unlock()

	b := appendHeader(make([]byte, 0, headerLen+len(body)), kindCall, len(files), id)
	if err := c.c.sendCtx(ctx, append(b, body...), files); err != nil {
		c.abandon(id, ch)
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			// Not sent: there is nothing to cancel.
			return message{}, fmt.Errorf("rpc: %s: %w", method, err)
		}
		return message{}, c.sendError(method, err)
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { c.interrupt(id) })
		defer stop()
	}
	c.mu.Lock()
	delete(c.unsent, id)
	_, waits := c.pending[id]
	lead := waits && !c.reading && c.err == nil
	if lead {
		c.reading, c.reader = true, id
	}
	c.mu.Unlock()
	for {
		if lead {
			return c.lead(ctx, method, id, ch)
		}
		select {
		case m, ok := <-ch:
			if !ok {
				return message{}, withMethod(c.Err(), method)
			}
			if m.kind != kindTurn {
				return m, nil
			}
			lead = true
		case <-ctx.Done():
			return message{}, c.giveUp(ctx, method, id, ch)
		}
	}
}

// lead reads, holding the read turn, until the reply to call id comes,
// handing the other replies to their callers, then passes the turn on.
func (c *Client) lead(ctx context.Context, method string, id uint64, ch chan message) (message, error) {
	for {
		if ctx.Err() != nil {
			return message{}, c.giveUp(ctx, method, id, ch)
		}
		m, err := c.c.recv()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// interrupt woke us: see the context at the top.
			c.mu.Lock()
			if c.interrupted {
				c.c.c.SetReadDeadline(time.Time{})
				c.interrupted = false
			}
			c.mu.Unlock()
			continue
		}
		switch c.dispatch(m, err, id) {
		case mine:
			c.mu.Lock()
			delete(c.pending, id)
			c.passTurn()
			c.mu.Unlock()
			return m, nil
		case over:
			return message{}, withMethod(c.Err(), method)
		}
	}
}

// giveUp ends call id when its context ends: it drops the reply if one
// came, passes the read turn on if it holds it, and else tells the server
// to cancel the call.
func (c *Client) giveUp(ctx context.Context, method string, id uint64, ch chan message) error {
	if !c.abandon(id, ch) {
		// Best effort, and not waited for: a server that reads nothing
		// must not hold the caller, whose context has ended. At once if
		// it can be, so that it goes ahead of the caller's next call.
		if msg := appendHeader(nil, kindCancel, 0, id); !c.c.trySend(msg) {
			go c.c.sendCtx(c.life, msg, nil)
		}
	}
	return fmt.Errorf("rpc: %s: %w", method, ctx.Err())
}

// abandon takes call id out of pending: its caller no longer waits. It
// drops the reply if it came, else marks it due if the call was sent (an
// orphan), and passes the read turn on if the caller holds it or was being
// handed it, or gives it to a drain goroutine if nobody reads. It reports
// whether nothing is left to cancel: the reply came, or the object failed.
func (c *Client) abandon(id uint64, ch chan message) (answered bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, unsent := c.unsent[id]
	delete(c.unsent, id)
	if _, waits := c.pending[id]; waits && !unsent && c.err == nil {
		c.orphans[id] = struct{}{}
	}
	delete(c.pending, id)
	select {
	case m, ok := <-ch:
		if !ok {
			return true
		}
		if m.kind != kindTurn {
			closeFiles(m.files)
			return true
		}
	default:
	}
	switch {
	case c.reading && c.reader == id:
		c.passTurn()
	case !c.reading && len(c.orphans) > 0 && c.err == nil:
		c.reading, c.reader = true, 0
		go c.drain()
	}
	return c.err != nil
}

func (c *Client) sendError(method string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return withMethod(e, method)
	}
	if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) {
		// The server end is closed; it may have said why in a last
		// message still unread. Err reads it unless another caller is
		// reading, and then that caller sees the end soon.
		if c.Err() == nil {
			select {
			case <-c.done:
			case <-time.After(time.Second):
			}
		}
	}
	if cerr := c.Err(); cerr != nil {
		return withMethod(cerr, method)
	}
	return fmt.Errorf("rpc: %s: send: %w", method, err)
}

func (c *Client) finish(method string, m message, result any) error {
	if m.kind == kindError {
		e := decodeError(m.body, m.files)
		e.Method = method
		return e
	}
	if err := decodeBody(m.body, m.files, result); err != nil {
		return withMethod(err, method)
	}
	return nil
}

func withMethod(err error, method string) error {
	var e *Error
	if errors.As(err, &e) {
		w := *e
		w.Method = method
		return &w
	}
	return fmt.Errorf("rpc: %s: %w", method, err)
}
