package remote

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/caplin-dev/caplin/pidfd"
	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/sandbox"
	"github.com/fxamacker/cbor/v2"
)

// SandboxArgs build a sandbox on the host: the spec (CBOR, without its
// files), the program's fds (fd n is Files[FDs[n]]: a file given at two
// numbers crosses once), and the program.
type SandboxArgs struct {
	Spec  []byte
	FDs   map[int]int
	Files []rpc.FD
	Path  string
	Argv  []string
}

// encodeSpec is spec as it crosses: everything but descriptors, which
// are forwarded (Files) or cannot cross (the rest: refused).
func encodeSpec(spec *sandbox.Spec) (*SandboxArgs, error) {
	switch {
	case spec.UserNS != nil, spec.UserNS2 != nil, spec.PIDNS != nil:
		return nil, errors.New("remote: a sandbox's UserNS, UserNS2 and PIDNS are namespaces of this host: they cannot be used on another")
	}
	for _, m := range spec.Mounts {
		if m.FD != nil || m.Server != nil {
			return nil, fmt.Errorf("remote: mount %s: its source is a descriptor or a server of this host's, which cannot be used on another", m.Dest)
		}
	}
	c := spec.Clone()
	a := &SandboxArgs{}
	ns := make([]int, 0, len(c.Files))
	for n := range c.Files {
		ns = append(ns, n)
	}
	sort.Ints(ns)
	a.FDs = map[int]int{}
	index := map[*os.File]int{}
	for _, n := range ns {
		f := c.Files[n]
		if f == nil {
			continue
		}
		i, ok := index[f]
		if !ok {
			i = len(a.Files)
			index[f] = i
			a.Files = append(a.Files, rpc.NewFD(f))
		}
		a.FDs[n] = i
	}
	c.Files = nil
	b, err := cbor.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("remote: encoding the sandbox's spec: %w", err)
	}
	a.Spec = b
	return a, nil
}

func decodeSpec(a *SandboxArgs) (*sandbox.Spec, error) {
	var spec sandbox.Spec
	if err := cbor.Unmarshal(a.Spec, &spec); err != nil {
		return nil, rpc.Errorf(rpc.CodeInvalid, "sandbox: the spec: %v", err)
	}
	spec.Files = map[int]*os.File{}
	for n, i := range a.FDs {
		if i < 0 || i >= len(a.Files) || n < 0 {
			return nil, rpc.Errorf(rpc.CodeInvalid, "sandbox: fd %d is file %d of %d", n, i, len(a.Files))
		}
		if f := a.Files[i].File; f != nil {
			spec.Files[n] = f
		}
	}
	return &spec, nil
}

// Sandbox builds spec's sandbox on the host (sandbox.Build there: its
// paths are the host's, and its Files are forwarded from here), execs
// path in it with argv, and returns the program as a process of the
// host's; closing the Process kills the sandbox, as does the end of the
// connection. Descriptors of this host's other than Files (UserNS,
// PIDNS, a Mount's FD or Server) cannot be used there and are refused.
func (h *Host) Sandbox(ctx context.Context, spec *sandbox.Spec, path string, argv []string) (*Process, error) {
	a, err := encodeSpec(spec)
	if err != nil {
		return nil, err
	}
	a.Path, a.Argv = path, argv
	var r SpawnResult
	if err := h.root.Call(ctx, "sandbox", a, &r); err != nil {
		return nil, h.fail("sandbox "+path, err)
	}
	obj, err := rpc.NewClient(r.Object.File, rpc.ClientOptions{})
	if err != nil {
		r.Object.Close()
		return nil, err
	}
	return &Process{h: h, obj: obj, pid: r.Pid}, nil
}

// sandboxed is a program in a sandbox the agent built: closing its
// object kills the sandbox.
type sandboxed struct {
	*procHandler
	sb *sandbox.Sandbox
}

func (s *sandboxed) Close() error {
	s.procHandler.Close()
	return s.sb.Close()
}

func (a *agent) sandbox(ctx context.Context, x SandboxArgs) (SpawnResult, error) {
	defer closeFDs(x.Files)
	spec, err := decodeSpec(&x)
	if err != nil {
		return SpawnResult{}, err
	}
	sb, err := sandbox.Build(ctx, spec)
	if err != nil {
		return SpawnResult{}, err
	}
	p, err := sb.Exec(ctx, x.Path, x.Argv)
	if err != nil {
		sb.Close()
		return SpawnResult{}, err
	}
	return a.serveProcess(ctx, p, func(p *pidfd.Process) rpc.Handler {
		return &sandboxed{procHandler: processObject(p).(*procHandler), sb: sb}
	})
}
