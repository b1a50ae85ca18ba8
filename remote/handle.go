package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/caplin-dev/caplin/proc"
	"github.com/caplin-dev/caplin/rpc"
)

// maxHandleMessage bounds a handle object's messages: a request is up to
// proc's 128 KiB, and so is a reply's output region.
const maxHandleMessage = 512 << 10

// ForkArgs are proc.Options as they cross: all of them but IDMapsBy, a
// function of the caller's.
type ForkArgs struct {
	NewUser, NewMount, NewPID, NewNet, NewIPC, NewUTS, NewCgroup bool
	UIDMap, GIDMap                                               []proc.IDMap
	AllowSetgroups, NoParentDeathSignal                          bool
	From                                                         proc.Origin
}

func forkArgs(o *proc.Options) (ForkArgs, error) {
	if o == nil {
		return ForkArgs{}, nil
	}
	if o.IDMapsBy != nil {
		return ForkArgs{}, errors.New("remote: Options.IDMapsBy is a function here: it cannot run on another host")
	}
	return ForkArgs{
		NewUser: o.NewUser, NewMount: o.NewMount, NewPID: o.NewPID, NewNet: o.NewNet, NewIPC: o.NewIPC, NewUTS: o.NewUTS, NewCgroup: o.NewCgroup,
		UIDMap: o.UIDMap, GIDMap: o.GIDMap, AllowSetgroups: o.AllowSetgroups, NoParentDeathSignal: o.NoParentDeathSignal, From: o.From,
	}, nil
}

func (a *ForkArgs) options() *proc.Options {
	return &proc.Options{
		NewUser: a.NewUser, NewMount: a.NewMount, NewPID: a.NewPID, NewNet: a.NewNet, NewIPC: a.NewIPC, NewUTS: a.NewUTS, NewCgroup: a.NewCgroup,
		UIDMap: a.UIDMap, GIDMap: a.GIDMap, AllowSetgroups: a.AllowSetgroups, NoParentDeathSignal: a.NoParentDeathSignal, From: a.From,
	}
}

// The handle object's messages.
type (
	// ForkResult is a new child: its handle object, and what encoding
	// its requests here needs.
	ForkResult struct {
		Object rpc.FD
		Info   proc.PeerInfo
	}
	// ExchangeArgs are one request of a peer handle's, and the files it
	// passes to the child.
	ExchangeArgs struct {
		Req   []byte
		Files []rpc.FD
	}
	// ExchangeResult is the child's reply and the files it sent back.
	ExchangeResult struct {
		Rep   []byte
		Files []rpc.FD
	}
	// ExecArgs exec a handle's child: the program at Path there, or,
	// with Exe, the executable sent from here (a sealed memfd).
	ExecArgs struct {
		Path      string
		Exe       rpc.FD
		Argv, Env []string
	}
)

// A Handle is a child on the host, built by system calls as a local
// proc.Handle is: the embedded *proc.Handle is a peer handle (see
// proc.NewPeerHandle) whose batches, results, memory and fds work as
// locally (its calls cross the connection, a round trip per batch; fds
// are forwarded). Fork (forkat), Spawn, SpawnPath, Exec, ExecPath and
// Close are this type's: they are done by the agent, which holds the
// child.
type Handle struct {
	*proc.Handle
	host *Host
	obj  *rpc.Client
}

// handlePeer carries a peer handle's requests to the agent's handle
// object.
type handlePeer struct{ obj *rpc.Client }

func (p handlePeer) Exchange(ctx context.Context, req []byte, files []*os.File) ([]byte, []*os.File, error) {
	a := ExchangeArgs{Req: req}
	for _, f := range files {
		a.Files = append(a.Files, rpc.NewFD(f))
	}
	var r ExchangeResult
	if err := p.obj.Call(ctx, "exchange", a, &r); err != nil {
		return nil, nil, err
	}
	got := make([]*os.File, 0, len(r.Files))
	for _, f := range r.Files {
		if f.File != nil {
			got = append(got, f.File)
		}
	}
	return r.Rep, got, nil
}

func (p handlePeer) Close() error { return p.obj.Close() }

func (h *Host) newHandle(r *ForkResult) (*Handle, error) {
	obj, err := rpc.NewClient(r.Object.File, rpc.ClientOptions{MaxMessage: maxHandleMessage})
	if err != nil {
		r.Object.Close()
		return nil, err
	}
	ph, err := proc.NewPeerHandle(handlePeer{obj}, r.Info)
	if err != nil {
		obj.Close()
		return nil, err
	}
	return &Handle{Handle: ph, host: h, obj: obj}, nil
}

// Fork makes a child on the host, as proc.Fork does there (in the
// agent's tree: it dies with the connection), and returns its handle.
func (h *Host) Fork(ctx context.Context, opts *proc.Options) (*Handle, error) {
	a, err := forkArgs(opts)
	if err != nil {
		return nil, err
	}
	var r ForkResult
	if err := h.root.Call(ctx, "fork", a, &r); err != nil {
		return nil, h.fail("fork", err)
	}
	return h.newHandle(&r)
}

// Fork makes a child of hd's child, in its namespaces, on the host
// (proc.Handle.Fork: forkat).
func (hd *Handle) Fork(ctx context.Context, opts *proc.Options) (*Handle, error) {
	a, err := forkArgs(opts)
	if err != nil {
		return nil, err
	}
	var r ForkResult
	if err := hd.obj.Call(ctx, "fork", a, &r); err != nil {
		return nil, hd.host.fail(fmt.Sprintf("fork from %d", hd.Pid()), err)
	}
	return hd.host.newHandle(&r)
}

// Spawn makes a child of hd's child (Fork, with opts), runs setup in it
// and execs exe there, as proc.Handle.Spawn does, and returns the program
// as a process of the host's. It takes three round trips where a local
// Spawn takes one, and the child is a copy of hd's child rather than
// sharing its memory, so setup may hold any calls a batch may. A setup
// call that fails is a *proc.BatchError (Index counts in setup), and no
// process is left behind. setup may be nil; it is used up.
func (hd *Handle) Spawn(ctx context.Context, opts *proc.Options, setup *proc.Batch, exe *os.File, argv, env []string) (*Process, error) {
	return hd.spawn(ctx, opts, setup, func(c *Handle) (*Process, error) { return c.Exec(ctx, exe, argv, env) })
}

// SpawnPath is Spawn of the program at path, looked up in the new child
// after setup has run, as proc.Handle.SpawnPath does.
func (hd *Handle) SpawnPath(ctx context.Context, opts *proc.Options, setup *proc.Batch, path string, argv, env []string) (*Process, error) {
	return hd.spawn(ctx, opts, setup, func(c *Handle) (*Process, error) { return c.ExecPath(ctx, path, argv, env) })
}

// spawn forks a child of hd's, runs setup in it and execs it by exec;
// the child is killed if a step fails.
func (hd *Handle) spawn(ctx context.Context, opts *proc.Options, setup *proc.Batch, exec func(*Handle) (*Process, error)) (*Process, error) {
	c, err := hd.Fork(ctx, opts)
	if err != nil {
		return nil, err
	}
	if setup != nil {
		if _, err := c.Run(ctx, setup); err != nil {
			c.Close()
			return nil, err
		}
	}
	p, err := exec(c)
	if err != nil {
		c.Close()
	}
	return p, err
}

// ExecPath execs the program at path (looked up in the child, after its
// set-up) in hd's child, as proc.Handle.ExecPath does, and returns it as
// a process of the host's. The handle is used up.
func (hd *Handle) ExecPath(ctx context.Context, path string, argv, env []string) (*Process, error) {
	return hd.exec(ctx, ExecArgs{Path: path, Argv: argv, Env: env}, path)
}

// Exec execs the executable exe, a file of this host's, in hd's child,
// as proc.Handle.Exec does: its content is sent (a sealed memfd there,
// which the child execs by fd), so the host needs no copy of it. The
// handle is used up.
func (hd *Handle) Exec(ctx context.Context, exe *os.File, argv, env []string) (*Process, error) {
	data, err := io.ReadAll(io.NewSectionReader(exe, 0, 1<<40))
	if err != nil {
		return nil, fmt.Errorf("remote: exec %s: reading it: %w", exe.Name(), err)
	}
	bulk, err := rpc.Bulk(filepath.Base(exe.Name()), data)
	if err != nil {
		return nil, err
	}
	defer bulk.Close()
	return hd.exec(ctx, ExecArgs{Exe: bulk, Argv: argv, Env: env}, exe.Name())
}

func (hd *Handle) exec(ctx context.Context, a ExecArgs, name string) (*Process, error) {
	var r SpawnResult
	if err := hd.obj.Call(ctx, "exec", a, &r); err != nil {
		return nil, hd.host.fail("exec "+name, err)
	}
	obj, err := rpc.NewClient(r.Object.File, rpc.ClientOptions{})
	if err != nil {
		r.Object.Close()
		return nil, err
	}
	return &Process{h: hd.host, obj: obj, pid: r.Pid}, nil
}

// Close kills hd's child if it has not exec'd.
func (hd *Handle) Close() error { return hd.Handle.Close() }
