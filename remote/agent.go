package remote

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/internal/fdmux"
	"github.com/caplin-dev/caplin/pidfd"
	"github.com/caplin-dev/caplin/proc"
	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/supervisor"
	"golang.org/x/sys/unix"
)

// ServeOptions configure the agent's side.
type ServeOptions struct {
	// Doctor, if set, reports what this machine supports, for the host
	// object's doctor method (the caplin command's caplin doctor).
	Doctor func() string
	// Logger logs the agent's events (to its standard error, which ssh
	// brings back). Nil: slog.Default().
	Logger *slog.Logger
}

// Serve is the agent: it speaks caplin's protocol on in and out (ssh's
// channel) until the other side goes, serving the host object (see
// docs/remote.md). When it returns, the caller should exit: the
// processes the agent built are in proc's tree zygote's pid namespace,
// which dies with this process.
func Serve(ctx context.Context, in io.Reader, out io.WriteCloser, opts *ServeOptions) error {
	if opts == nil {
		opts = &ServeOptions{}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	// The connection splices to and from *os.File ends in the poller.
	if f, ok := in.(*os.File); ok {
		in = intoPoller(f)
	}
	if f, ok := out.(*os.File); ok {
		out = intoPoller(f)
	}
	for _, f := range []any{in, out} {
		if sc, ok := f.(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) { bigPipe(int(fd)) })
			}
		}
	}
	info := localInfo()
	js, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(out, "caplin-agent %d %d %s\n", minProto, maxProto, js); err != nil {
		return err
	}
	br := bufio.NewReaderSize(in, 64<<10)
	line, err := br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("remote agent: the client went before choosing a protocol: %w", err)
	}
	var proto int
	if _, err := fmt.Sscanf(line, "caplin-proto %d\n", &proto); err != nil || proto < minProto || proto > maxProto {
		return fmt.Errorf("remote agent: the client chose no protocol this agent speaks (%q)", strings.TrimSpace(line))
	}
	var closers []io.Closer
	if c, ok := in.(io.Closer); ok {
		closers = append(closers, c)
	}
	closers = append(closers, out)
	sess := fdmux.New(in, out, buffered(br), false, muxConfig(), closers...)
	defer sess.Close()
	m := newMux(sess, log)
	a := &agent{log: log, opts: opts, srv: &rpc.Server{Logger: log, MaxMessage: maxHandleMessage}}
	defer a.close()
	s, err := m.claim(1)
	if err != nil {
		return err
	}
	host, err := m.object(s, "host object")
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := a.srv.ServeFile(sctx, host, a.methods()); err != nil {
		return err
	}
	select {
	case <-sess.Done():
	case <-ctx.Done():
	}
	return nil
}

func localInfo() Info {
	var u unix.Utsname
	unix.Uname(&u)
	home, _ := os.UserHomeDir()
	host, _ := os.Hostname()
	v := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		v = bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v += " " + s.Value
			}
		}
	}
	return Info{
		Version: v, GOARCH: runtime.GOARCH, Kernel: unix.ByteSliceToString(u.Release[:]),
		Hostname: host, UID: os.Getuid(), GID: os.Getgid(), Home: home, Env: os.Environ(), Pid: os.Getpid(),
	}
}

// agent is the host object's state.
type agent struct {
	log  *slog.Logger
	opts *ServeOptions
	srv  *rpc.Server

	supOnce sync.Once
	sup     *supervisor.Supervisor
	svc     *supervisor.Service
}

func (a *agent) close() {
	if a.sup != nil {
		a.sup.Close()
	}
}

// The host object's methods' arguments and results.
type (
	// DialArgs name a Unix socket on the host whose object to reach.
	DialArgs struct{ Path string }
	// ObjectResult is a new object.
	ObjectResult struct{ Object rpc.FD }
	// DoctorResult is caplin doctor's report on the host.
	DoctorResult struct{ Text string }
	// SpawnArgs start a program on the host: Files[n] is its fd n (nil
	// for none); Path is looked up in Env's PATH when it has no slash.
	SpawnArgs struct {
		Path string
		Argv []string
		Env  []string
		Dir  string
		// Files may be nil entries.
		Files []rpc.FD
	}
	// SpawnResult is the process object and the process's pid on the
	// host.
	SpawnResult struct {
		Object rpc.FD
		Pid    int
	}
	// SignalArgs is a signal number.
	SignalArgs struct{ Signal int }
)

// Exit is how a remote process ended.
type Exit struct {
	Pid    int // its pid on the host
	Code   int // exit status, or -1 if killed by a signal
	Signal int // the signal that killed it, or 0
}

// ExitCode is Code, or 128+Signal for a process killed by a signal (as
// a shell reports it).
func (e *Exit) ExitCode() int {
	if e.Signal != 0 {
		return 128 + e.Signal
	}
	return e.Code
}

func (e *Exit) String() string {
	if e.Signal != 0 {
		return "signal: " + syscall.Signal(e.Signal).String()
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

func exitOfState(st *pidfd.State) *Exit {
	return &Exit{Pid: st.Pid, Code: st.Code, Signal: int(st.Signal)}
}

func (a *agent) methods() rpc.Handler {
	return rpc.Methods{
		"dial": rpc.Method(func(ctx context.Context, d DialArgs) (ObjectResult, error) {
			var dl net.Dialer
			c, err := dl.DialContext(ctx, "unixpacket", d.Path)
			if err != nil {
				return ObjectResult{}, err
			}
			f, err := c.(*net.UnixConn).File()
			c.Close()
			if err != nil {
				return ObjectResult{}, err
			}
			return ObjectResult{Object: rpc.NewFD(f)}, nil
		}),
		"supervisor": rpc.Method(func(ctx context.Context, _ struct{}) (ObjectResult, error) {
			a.supOnce.Do(func() {
				a.sup = supervisor.New(supervisor.Config{Logger: a.log})
				a.svc = &supervisor.Service{Sup: a.sup, Server: a.srv}
			})
			me := &unix.Ucred{Pid: int32(os.Getpid()), Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid())}
			fd, err := a.srv.NewObject(context.WithoutCancel(ctx), a.svc.NewHandler(me))
			return ObjectResult{Object: fd}, err
		}),
		"doctor": rpc.Method(func(ctx context.Context, _ struct{}) (DoctorResult, error) {
			if a.opts.Doctor == nil {
				return DoctorResult{}, rpc.Errorf(rpc.CodeUnknownMethod, "this agent has no doctor")
			}
			return DoctorResult{Text: a.opts.Doctor()}, nil
		}),
		"spawn": rpc.Method(func(ctx context.Context, s SpawnArgs) (SpawnResult, error) {
			defer closeFDs(s.Files)
			p, err := spawn(ctx, &s)
			if err != nil {
				return SpawnResult{}, err
			}
			return a.serveProcess(ctx, p, processObject)
		}),
		"sandbox": rpc.Method(a.sandbox),
		"fork": rpc.Method(func(ctx context.Context, f ForkArgs) (ForkResult, error) {
			h, err := proc.Fork(ctx, f.options())
			if err != nil {
				return ForkResult{}, err
			}
			return a.handleObject(ctx, h)
		}),
		"run": rpc.Method(func(ctx context.Context, s SpawnArgs) (*Exit, error) {
			defer closeFDs(s.Files)
			p, err := spawn(ctx, &s)
			if err != nil {
				return nil, err
			}
			defer p.Close()
			st, err := p.Wait(ctx)
			if err != nil {
				return nil, err
			}
			return exitOfState(st), nil
		}),
	}
}

func closeFDs(fs []rpc.FD) {
	for _, f := range fs {
		f.Close()
	}
}

// spawn starts s's program with proc, in proc's tree (so it dies with
// the agent).
func spawn(ctx context.Context, s *SpawnArgs) (*pidfd.Process, error) {
	if len(s.Argv) == 0 {
		return nil, rpc.Errorf(rpc.CodeInvalid, "spawn: no argv")
	}
	path := s.Path
	if path == "" {
		path = s.Argv[0]
	}
	if !strings.Contains(path, "/") {
		found, err := lookPath(path, s.Env)
		if err != nil {
			return nil, err
		}
		path = found
	}
	var b proc.Batch
	for n, f := range s.Files {
		if f.File != nil {
			b.PutFile(f.File, n)
		}
	}
	if s.Dir != "" {
		b.Chdir(s.Dir)
	}
	return proc.SpawnPath(ctx, &proc.Options{}, &b, path, s.Argv, s.Env)
}

// serveProcess serves p as a process object made by obj (processObject,
// or one that also owns what p runs in).
func (a *agent) serveProcess(ctx context.Context, p *pidfd.Process, obj func(*pidfd.Process) rpc.Handler) (SpawnResult, error) {
	h := obj(p)
	fd, err := a.srv.NewObject(context.WithoutCancel(ctx), h)
	if err != nil {
		h.(io.Closer).Close()
		return SpawnResult{}, err
	}
	return SpawnResult{Object: fd, Pid: p.Pid()}, nil
}

// processObject serves a spawned process: wait, signal; closing the
// object kills the process if it still runs.
type procHandler struct {
	rpc.Methods
	p *pidfd.Process
}

func (h *procHandler) Close() error { return h.p.Close() }

func processObject(p *pidfd.Process) rpc.Handler {
	return &procHandler{p: p, Methods: rpc.Methods{
		"wait": rpc.Method(func(ctx context.Context, _ struct{}) (*Exit, error) {
			st, err := p.Wait(ctx)
			if err != nil {
				return nil, err
			}
			return exitOfState(st), nil
		}),
		"signal": rpc.Method(func(ctx context.Context, a SignalArgs) (struct{}, error) {
			return struct{}{}, p.Signal(syscall.Signal(a.Signal))
		}),
	}}
}

// lookPath finds a program without a slash in env's PATH, as a shell
// would (execvp's default when PATH is unset).
func lookPath(name string, env []string) (string, error) {
	dirs := "/usr/local/bin:/usr/bin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			dirs = v
		}
	}
	for _, d := range filepath.SplitList(dirs) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && unix.Access(p, unix.X_OK) == nil {
			return p, nil
		}
	}
	return "", &os.PathError{Op: "exec", Path: name, Err: fmt.Errorf("not found in PATH %s: %w", dirs, unix.ENOENT)}
}

// handleObject serves h (a child of the agent's) as a handle object:
// exchange (a peer handle's requests), fork, exec; closing it closes h.
func (a *agent) handleObject(ctx context.Context, h *proc.Handle) (ForkResult, error) {
	fd, err := a.srv.NewObject(context.WithoutCancel(ctx), &handleHandler{h: h, Methods: rpc.Methods{
		"exchange": rpc.Method(func(ctx context.Context, x ExchangeArgs) (ExchangeResult, error) {
			defer closeFDs(x.Files)
			files := make([]*os.File, 0, len(x.Files))
			for _, f := range x.Files {
				if f.File != nil {
					files = append(files, f.File)
				}
			}
			rep, got, err := h.Exchange(ctx, x.Req, files)
			if err != nil {
				return ExchangeResult{}, err
			}
			r := ExchangeResult{Rep: rep}
			for _, f := range got {
				r.Files = append(r.Files, rpc.NewFD(f))
			}
			return r, nil
		}),
		"fork": rpc.Method(func(ctx context.Context, f ForkArgs) (ForkResult, error) {
			c, err := h.Fork(ctx, f.options())
			if err != nil {
				return ForkResult{}, err
			}
			return a.handleObject(ctx, c)
		}),
		"exec": rpc.Method(func(ctx context.Context, x ExecArgs) (SpawnResult, error) {
			defer x.Exe.Close()
			var p *pidfd.Process
			var err error
			if x.Exe.File != nil {
				p, err = h.Exec(ctx, x.Exe.File, x.Argv, x.Env)
			} else {
				p, err = h.ExecPath(ctx, x.Path, x.Argv, x.Env)
			}
			if err != nil {
				return SpawnResult{}, err
			}
			return a.serveProcess(ctx, p, processObject)
		}),
	}})
	if err != nil {
		h.Close()
		return ForkResult{}, err
	}
	return ForkResult{Object: fd, Info: h.PeerInfo()}, nil
}

type handleHandler struct {
	rpc.Methods
	h *proc.Handle
}

func (hh *handleHandler) Close() error { return hh.h.Close() }

// intoPoller returns f in Go's poller (non-blocking), as the connection's
// fast paths want it: f itself if it is, else a duplicate, f's descriptor
// then standing for /dev/null if it is a standard one (nothing should
// find another file there) and closed if not. Only this process holds
// the open file of ssh's channel, so its status flags are ours to change.
func intoPoller(f *os.File) *os.File {
	if f.SetDeadline(time.Time{}) == nil {
		return f
	}
	fd := rawFD(f)
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return f
	}
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return f
	}
	if fd <= 2 {
		if null, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0); err == nil {
			unix.Dup3(null, fd, 0)
			unix.Close(null)
		}
	} else {
		f.Close()
	}
	return os.NewFile(uintptr(nfd), f.Name())
}
