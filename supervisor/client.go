package supervisor

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/caplin-dev/caplin/rpc"
	"golang.org/x/sys/unix"
)

// A Client is a typed client of a supervisor object: the connection to
// a supervisor's socket.
type Client struct{ *rpc.Client }

// Dial connects to the supervisor listening at path (SocketPath's, say),
// after checking the socket's directory (CheckDir), and checks that the
// process listening there is of the caller's own uid (SO_PEERCRED): a
// client hands its supervisor its environment, its command lines and,
// for caplin run --supervisor, its terminal.
func Dial(ctx context.Context, path string) (*Client, error) {
	if err := CheckDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return nil, err
	}
	uc := conn.(*net.UnixConn)
	f, err := uc.File()
	uc.Close()
	if err != nil {
		return nil, err
	}
	cred, err := unix.GetsockoptUcred(int(f.Fd()), unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("supervisor: %s: SO_PEERCRED: %w", path, err)
	}
	if int(cred.Uid) != os.Geteuid() {
		f.Close()
		return nil, fmt.Errorf("supervisor: %s is served by uid %d, not by this user (%d): %w", path, cred.Uid, os.Geteuid(), unix.EPERM)
	}
	c, err := rpc.NewClient(f, rpc.ClientOptions{})
	if err != nil {
		return nil, err
	}
	return &Client{c}, nil
}

// Start asks the supervisor to start the job cl describes. A job that
// did not start comes back with StartResult.Error and Code set, and no
// error; the Handle is nil then. Otherwise the Handle is an owner object
// of the job, which the caller closes (closing it leaves the job
// running: the supervisor keeps it).
func (c *Client) Start(ctx context.Context, cl *CommandLine) (*StartResult, *Handle, error) {
	var res StartResult
	if err := c.Call(ctx, "start", cl, &res); err != nil {
		return nil, nil, err
	}
	if res.Job.File == nil {
		return &res, nil, nil
	}
	h, err := NewHandle(res.Job.File)
	return &res, h, err
}

// List returns the jobs in the supervisor's table.
func (c *Client) List(ctx context.Context) ([]Status, error) {
	return rpc.Invoke[[]Status](ctx, c.Client, "list", struct{}{})
}

// Get returns an owner object of the job of that name.
func (c *Client) Get(ctx context.Context, name string) (*Handle, error) {
	fd, err := rpc.Invoke[rpc.FD](ctx, c.Client, "get", NameArgs{name})
	if err != nil {
		return nil, err
	}
	return NewHandle(fd.File)
}

// Remove removes an ended job from the table.
func (c *Client) Remove(ctx context.Context, name string) error {
	return c.Call(ctx, "remove", NameArgs{name}, nil)
}

// A Handle is a typed client of a job object.
type Handle struct{ *rpc.Client }

// NewHandle returns a Handle for the job object at the end of f (which it
// takes, as rpc.NewClient does).
func NewHandle(f *os.File) (*Handle, error) {
	c, err := rpc.NewClient(f, rpc.ClientOptions{})
	if err != nil {
		return nil, err
	}
	return &Handle{c}, nil
}

// Status returns the job's status.
func (h *Handle) Status(ctx context.Context) (Status, error) {
	return rpc.Invoke[Status](ctx, h.Client, "status", struct{}{})
}

// Wait waits for the job to end for good and returns how it ended.
func (h *Handle) Wait(ctx context.Context) (*Exit, error) {
	return rpc.Invoke[*Exit](ctx, h.Client, "wait", struct{}{})
}

// Signal sends sig to the job's program, or with all to every process of
// its sandbox.
func (h *Handle) Signal(ctx context.Context, sig int, all bool) error {
	return h.Call(ctx, "signal", SignalArgs{Signal: sig, All: all}, nil)
}

// Stop stops the job (Job.Stop) and returns how it ended.
func (h *Handle) Stop(ctx context.Context, grace time.Duration) (*Exit, error) {
	return rpc.Invoke[*Exit](ctx, h.Client, "stop", StopArgs{Grace: grace})
}

// Logs returns a pipe of the job's output history, and with follow what
// comes after. The caller closes it.
func (h *Handle) Logs(ctx context.Context, follow bool) (*os.File, error) {
	fd, err := rpc.Invoke[rpc.FD](ctx, h.Client, "logs", LogsArgs{Follow: follow})
	return fd.File, err
}

// Attached is an attachment as its client holds it: the stream, and the
// control object.
type Attached struct {
	// Stream is read for the job's output and written for its input.
	Stream *os.File
	// Control resizes, and takes or gives up the writer lease.
	Control *rpc.Client
	// Writer says whether this viewer holds the writer lease.
	Writer bool
}

// Close detaches.
func (a *Attached) Close() error {
	a.Control.Close()
	return a.Stream.Close()
}

// Resize sets the job's terminal size, if it is this viewer's to set.
func (a *Attached) Resize(ctx context.Context, ws Winsize) (bool, error) {
	return rpc.Invoke[bool](ctx, a.Control, "resize", ws)
}

// Lease takes the writer lease if it is free.
func (a *Attached) Lease(ctx context.Context) (bool, error) {
	return rpc.Invoke[bool](ctx, a.Control, "lease", struct{}{})
}

// Attach attaches to the job.
func (h *Handle) Attach(ctx context.Context, a AttachArgs) (*Attached, error) {
	res, err := rpc.Invoke[AttachResult](ctx, h.Client, "attach", a)
	if err != nil {
		return nil, err
	}
	ctl, err := rpc.NewClient(res.Control.File, rpc.ClientOptions{})
	if err != nil {
		res.Stream.Close()
		return nil, err
	}
	return &Attached{Stream: res.Stream.File, Control: ctl, Writer: res.Writer}, nil
}

// Borrow returns an object of the job with rights (names, see
// ParseRights), at most this one's, never RightOwn.
func (h *Handle) Borrow(ctx context.Context, rights ...string) (*Handle, error) {
	fd, err := rpc.Invoke[rpc.FD](ctx, h.Client, "borrow", BorrowArgs{Rights: rights})
	if err != nil {
		return nil, err
	}
	return NewHandle(fd.File)
}

// Revoke cuts the objects borrowed from this one, and theirs.
func (h *Handle) Revoke(ctx context.Context) error {
	return h.Call(ctx, "revoke", struct{}{}, nil)
}

// Rights returns the names of the object's rights.
func (h *Handle) Rights(ctx context.Context) ([]string, error) {
	return rpc.Invoke[[]string](ctx, h.Client, "rights", struct{}{})
}
