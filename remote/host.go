package remote

import (
	"context"
	"fmt"
	"os"
	"syscall"

	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/supervisor"
)

// A Cmd is a program to start on the host. Its zero environment is an
// empty one, as proc's is; Info().Env is the user's login environment
// there.
type Cmd struct {
	// Path is the program; without a slash it is looked up in Env's
	// PATH on the host. Empty: Args[0].
	Path string
	// Args is the argument vector, Args[0] included.
	Args []string
	// Env is the program's whole environment.
	Env []string
	// Dir is its working directory on the host. Empty: the agent's (the
	// user's home).
	Dir string
	// Files are its fds: Files[n] is fd n, nil for none. Each is
	// forwarded (docs/remote.md): a pipe's end becomes a pipe's end
	// there, a terminal a pseudo-terminal there, a socket a socket;
	// the caller keeps, and closes, its own.
	Files []*os.File
}

func (c *Cmd) args() SpawnArgs {
	a := SpawnArgs{Path: c.Path, Argv: c.Args, Env: c.Env, Dir: c.Dir}
	for _, f := range c.Files {
		a.Files = append(a.Files, rpc.NewFD(f))
	}
	return a
}

// A Process is a program started on the host. Closing it kills the
// program if it still runs; so does the end of the connection.
type Process struct {
	h   *Host
	obj *rpc.Client
	pid int
}

// Pid is the process's pid on the host.
func (p *Process) Pid() int { return p.pid }

// Wait waits for the process to end.
func (p *Process) Wait(ctx context.Context) (*Exit, error) {
	var e Exit
	if err := p.obj.Call(ctx, "wait", struct{}{}, &e); err != nil {
		return nil, p.h.fail(fmt.Sprintf("wait %d", p.pid), err)
	}
	return &e, nil
}

// Signal sends sig to the process.
func (p *Process) Signal(ctx context.Context, sig syscall.Signal) error {
	if err := p.obj.Call(ctx, "signal", SignalArgs{Signal: int(sig)}, nil); err != nil {
		return p.h.fail(fmt.Sprintf("signal %d", p.pid), err)
	}
	return nil
}

// Close kills the process if it still runs, and lets go of it.
func (p *Process) Close() error { return p.obj.Close() }

// Spawn starts c's program on the host, in the agent's process tree (it
// dies with the agent, and so with the connection), and returns it.
func (h *Host) Spawn(ctx context.Context, c *Cmd) (*Process, error) {
	var r SpawnResult
	if err := h.root.Call(ctx, "spawn", c.args(), &r); err != nil {
		return nil, h.fail("spawn "+c.name(), err)
	}
	obj, err := rpc.NewClient(r.Object.File, rpc.ClientOptions{})
	if err != nil {
		r.Object.Close()
		return nil, err
	}
	return &Process{h: h, obj: obj, pid: r.Pid}, nil
}

// Run starts c's program on the host and waits for it, in one round
// trip. A cancelled ctx kills it.
func (h *Host) Run(ctx context.Context, c *Cmd) (*Exit, error) {
	var e Exit
	if err := h.root.Call(ctx, "run", c.args(), &e); err != nil {
		return nil, h.fail("run "+c.name(), err)
	}
	return &e, nil
}

func (c *Cmd) name() string {
	if c.Path != "" {
		return c.Path
	}
	if len(c.Args) > 0 {
		return c.Args[0]
	}
	return "(no program)"
}

// Object connects to the rpc object listening on the Unix socket path on
// the host (caplin serve dir's, say) and returns this side's end of it,
// for rpc.NewClient: calls cross the connection, and descriptors in them
// are forwarded (objects as objects, files, pipes and sockets as streams:
// docs/remote.md).
func (h *Host) Object(ctx context.Context, path string) (*os.File, error) {
	var r ObjectResult
	if err := h.root.Call(ctx, "dial", DialArgs{Path: path}, &r); err != nil {
		return nil, h.fail(path, err)
	}
	return r.Object.File, nil
}

// Supervisor returns a client of a supervisor run by the agent, for
// sandboxes and jobs on the host (caplin run --host uses its run). Its
// jobs end with the connection.
func (h *Host) Supervisor(ctx context.Context) (*supervisor.Client, error) {
	var r ObjectResult
	if err := h.root.Call(ctx, "supervisor", struct{}{}, &r); err != nil {
		return nil, h.fail("supervisor", err)
	}
	c, err := rpc.NewClient(r.Object.File, rpc.ClientOptions{})
	if err != nil {
		r.Object.Close()
		return nil, err
	}
	return &supervisor.Client{Client: c}, nil
}

// Doctor returns caplin doctor's report on the host.
func (h *Host) Doctor(ctx context.Context) (string, error) {
	var r DoctorResult
	if err := h.root.Call(ctx, "doctor", struct{}{}, &r); err != nil {
		return "", h.fail("doctor", err)
	}
	return r.Text, nil
}

// fail names the host and what failed; once the connection is gone,
// that is the error (ErrClosed), rather than the object's end it made.
func (h *Host) fail(op string, err error) error {
	if h.sess.IsClosed() {
		return fmt.Errorf("remote: %s: %s: %w (ssh: %s)", h.dest, op, ErrClosed, h.sshState())
	}
	return fmt.Errorf("remote: %s: %s: %w", h.dest, op, err)
}
