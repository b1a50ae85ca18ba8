package rpc

import (
	"context"
	"io"
	"os"
)

// An ender is a Handler whose object can end on its own: when Done is
// closed, the server sends Err to the object's holder as the object's last
// message and closes the object (calls in flight fail with Err).
type ender interface {
	objectDone() <-chan struct{}
	objectErr() error
}

// Revocable wraps h in a caretaker (KeyKOS's name for it): the returned
// Handler serves calls with h until revoke is called. From then on every
// object served by it ends: its holder's calls in flight and later calls
// fail with ErrRevoked, handlers running see their context end, and the
// server closes the object's socket. revoke may be called more than once
// and from any goroutine.
//
// Revocation cuts the object, not what was already obtained through it:
// a descriptor a call returned (a file, a dirfd, another object) stays
// with its holder. To be able to cut those too, hand them out through
// revocable wrappers of their own (Revocable for objects made with
// Server.NewObject, RevocableStream for pipes and sockets).
func Revocable(h Handler) (_ Handler, revoke func()) {
	ctx, cancel := context.WithCancel(context.Background())
	c := &caretaker{h: h, rctx: ctx, done: ctx.Done()}
	if e, ok := h.(ender); ok {
		// The object ends when it is revoked or when what it takes care
		// of ends on its own (a Forward whose object ended), whichever
		// comes first.
		done := make(chan struct{})
		c.done, c.inner = done, e
		go func() {
			select {
			case <-ctx.Done():
			case <-e.objectDone():
			}
			close(done)
		}()
	}
	return c, cancel
}

type caretaker struct {
	h     Handler
	rctx  context.Context // ends at revocation
	done  <-chan struct{} // closed when the object is to end
	inner ender           // h, if it can end on its own
}

var errRevoked = &Error{Code: CodeRevoked, Text: "the object was revoked"}

// Close closes the handler it takes care of, if that is an io.Closer.
func (c *caretaker) Close() error {
	if cl, ok := c.h.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

func (c *caretaker) objectDone() <-chan struct{} { return c.done }
func (c *caretaker) objectErr() error {
	if c.rctx.Err() == nil && c.inner != nil {
		return c.inner.objectErr()
	}
	return errRevoked
}

func (c *caretaker) ServeCall(ctx context.Context, call *Call) (any, error) {
	if c.rctx.Err() != nil {
		return nil, errRevoked
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.rctx, cancel)
	defer stop()
	res, err := c.h.ServeCall(ctx, call)
	if c.rctx.Err() != nil {
		// Whatever the handler made, the caller may no longer have it.
		closeResult(res)
		return nil, errRevoked
	}
	return res, err
}

// Forward returns a Handler that passes every call on to the object c
// holds, as it came (arguments and descriptors are not decoded), and
// passes back its reply: serving it makes a new object that stands for
// c's. Wrapped in Revocable, it is a caretaker for an object this process
// holds but does not serve. When c's object ends, every object served by
// the forwarder ends with the same error. To see that end when it comes,
// with no call made, c reads its object from then on in a goroutine of
// its own, which each reply then wakes.
func Forward(c *Client) Handler {
	c.watch()
	return forwarder{c}
}

type forwarder struct{ c *Client }

func (f forwarder) objectDone() <-chan struct{} { return f.c.done }
func (f forwarder) objectErr() error {
	if err := f.c.Err(); err != nil {
		return err
	}
	return &Error{Code: CodeClosed, Text: "the forwarded object ended"}
}

// rawReply is a reply passed on as it came from another object.
type rawReply struct {
	body  []byte
	files []*os.File
}

func (f forwarder) ServeCall(ctx context.Context, call *Call) (any, error) {
	method, err := encMode.Marshal(call.Method)
	if err != nil {
		return nil, err
	}
	// The call's body after the method is the arguments and the list of
	// descriptor numbers, which the next receiver matches in the same
	// order as the descriptors: both pass on unchanged.
	files := call.files
	call.files, call.decoded = nil, true
	defer closeFiles(files) // sent: the kernel holds its own references
	m, err := f.c.roundTrip(ctx, call.Method, append(method, call.body...), files)
	if err != nil {
		return nil, err
	}
	if m.kind == kindError {
		return nil, decodeError(m.body, m.files)
	}
	return rawReply{body: m.body, files: m.files}, nil
}
