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
// any order), and one goroutine reads the replies.
type Client struct {
	c    *conn
	opts ClientOptions

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan message
	err     error // set once: why the object is unusable
	done    chan struct{}
	// life ends when the client fails or is closed.
	life    context.Context
	endLife context.CancelFunc
}

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
		done:    make(chan struct{}),
	}
	c.life, c.endLife = context.WithCancel(context.Background())
	go c.readLoop()
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
	c.mu.Unlock()
	c.endLife()
	c.c.c.Close()
}

// Err returns why the object is unusable, or nil while it is usable.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *Client) readLoop() {
	reset := false
	for {
		m, err := c.c.recv()
		if err != nil {
			if errors.Is(err, unix.ECONNRESET) && !reset {
				// The server closed its end with our calls still unread
				// in it. The kernel reports that once, ahead of what the
				// server sent last (why it closed): read on to get it.
				reset = true
				continue
			}
			var re *recvError
			if errors.As(err, &re) {
				// A reply that broke a rule: fail that call alone.
				if re.id != 0 && (re.kind == kindReply || re.kind == kindError) {
					c.deliver(message{kind: kindError, id: re.id, body: encodeError(re.err)})
				}
				continue
			}
			if errors.Is(err, errEOF) {
				c.fail(&Error{Code: CodeClosed, Text: "the server closed the object"})
			} else {
				c.fail(&Error{Code: CodeClosed, Text: "connection: " + err.Error()})
			}
			c.failPending()
			return
		}
		switch {
		case m.kind == kindError && m.id == 0:
			// The object failed: its last message.
			c.fail(decodeError(m.body, m.files))
			c.failPending()
			return
		case m.kind == kindReply || m.kind == kindError:
			c.deliver(m)
		default:
			// Servers do not call clients in this protocol version.
			closeFiles(m.files)
		}
	}
}

func (c *Client) deliver(m message) {
	c.mu.Lock()
	ch, ok := c.pending[m.id]
	delete(c.pending, m.id)
	c.mu.Unlock()
	if !ok {
		closeFiles(m.files) // the caller gave up
		return
	}
	ch <- m
}

func (c *Client) failPending() {
	c.mu.Lock()
	p := c.pending
	c.pending = map[uint64]chan message{}
	c.mu.Unlock()
	for _, ch := range p {
		close(ch)
	}
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
// getting, any reply. It returns once the message is on the socket.
func (c *Client) Send(method string, args any) error {
	body, files, err := encodeCall(method, args)
	if err != nil {
		return fmt.Errorf("rpc: %s: %w", method, err)
	}
	if err := c.Err(); err != nil {
		return withMethod(err, method)
	}
	b := appendHeader(make([]byte, 0, headerLen+len(body)), kindCall, len(files), 0)
	if err := c.c.sendCtx(context.Background(), append(b, body...), files); err != nil {
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
	c.mu.Unlock()

	b := appendHeader(make([]byte, 0, headerLen+len(body)), kindCall, len(files), id)
	if err := c.c.sendCtx(ctx, append(b, body...), files); err != nil {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			// Not sent: there is nothing to cancel.
			return message{}, fmt.Errorf("rpc: %s: %w", method, err)
		}
		return message{}, c.sendError(method, err)
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return message{}, withMethod(c.Err(), method)
		}
		return m, nil
	case <-ctx.Done():
		c.mu.Lock()
		_, still := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if !still {
			// The reply raced the cancellation: drop it.
			if m, ok := <-ch; ok {
				closeFiles(m.files)
			}
		} else {
			// Best effort, and not waited for: a server that reads
			// nothing must not hold the caller, whose context has ended.
			// At once if it can be, so that it goes ahead of the
			// caller's next call.
			if msg := appendHeader(nil, kindCancel, 0, id); !c.c.trySend(msg) {
				go c.c.sendCtx(c.life, msg, nil)
			}
		}
		return message{}, fmt.Errorf("rpc: %s: %w", method, ctx.Err())
	}
}

func (c *Client) sendError(method string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return withMethod(e, method)
	}
	if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) {
		// The server end is closed; it may have said why in a last
		// message that the reader has yet to see. It ends soon.
		select {
		case <-c.done:
		case <-time.After(time.Second):
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
