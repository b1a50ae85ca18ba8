package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/sandbox"
	"github.com/caplin-dev/caplin/sandbox/bwrap"
	"golang.org/x/sys/unix"
)

// Warm sandboxes: caplin run --supervisor runs its program through the
// supervisor, which keeps a sandbox.Template per sandbox in use (the same
// options, from the same directory, by the same user) and makes each
// run's sandbox from it: the namespaces and the root are made once, and
// a run only takes the sandbox the template made ahead and execs in it.

// templateIdle is how long a template no run has used is kept; maxTemplates
// bounds how many are kept at once (the least recently used goes).
const (
	templateIdle = 2 * time.Minute
	maxTemplates = 16
)

// RunArgs are run's arguments: caplin run's command line, and the
// client's standard fds, which become the program's.
type RunArgs struct {
	CommandLine
	Stdin, Stdout, Stderr rpc.FD
	// Control is the server end of a socket pair the client made: the
	// supervisor serves the run's control object on it (signal), so that
	// the client can signal the program while run waits for it (a call
	// pipelined with run, with no round trip of its own).
	Control rpc.FD
	// Terminal makes Stdin, which must be a terminal, the program's
	// controlling terminal (sandbox.Spec.ControllingTerminal): for a
	// pseudo-terminal made for the run (caplin run --host's), whose ^C
	// and hangup must reach the program as at a login.
	Terminal bool `json:",omitempty"`
}

// RunResult is how a run ended, or why it did not.
type RunResult struct {
	// Code is the exit status caplin run gives: the program's, 128+N for
	// signal N, or caplin run's own for a program that did not start.
	Code int
	// Relayed is the signal, relayed to the program, that it died of (it
	// is the client's to die of too); 0 otherwise.
	Relayed int `json:",omitempty"`
	// Error says why the program did not start.
	Error string `json:",omitempty"`
	// Local: the supervisor cannot run this command line (it reaches the
	// client's process, or needs what a template cannot give); the client
	// runs it itself.
	Local string `json:",omitempty"`
}

// SignalRunArgs are the run control object's signal's arguments.
type SignalRunArgs struct{ Signal int }

// warm is the supervisor's templates, by key.
type warm struct {
	mu        sync.Mutex
	templates map[string]*warmTemplate
}

type warmTemplate struct {
	t    *sandbox.Template
	err  error         // why it could not be made
	made chan struct{} // closed once t or err is set
	used time.Time
	runs int // runs under way
}

// templateKey is what makes two runs' sandboxes the same: the parsed
// spec (not the command line's words: an edited profile gives another
// key), with the identity of every bind's source (a directory replaced
// at the same path gives another key too), and the user. The program's
// fds and environment are not in it: a template's sandboxes take their
// own.
func templateKey(uid, gid int, spec *sandbox.Spec) string {
	c := spec.Clone()
	var b strings.Builder
	fmt.Fprintf(&b, "%d:%d\x00", uid, gid)
	for _, m := range c.Mounts {
		perms := "-"
		if m.Perms != nil {
			perms = fmt.Sprintf("%o", uint32(*m.Perms))
		}
		src := ""
		var st unix.Stat_t
		if m.Source != "" && unix.Stat(m.Source, &st) == nil {
			src = fmt.Sprintf("%d:%d:%d", st.Dev, st.Ino, st.Ctim.Nano())
		}
		fmt.Fprintf(&b, "%d|%q|%q|%s|%v|%s|%d|%q|%q|%q|%v\x00", m.Kind, m.Source, m.Dest, src, m.Try, perms, m.Size, m.Data, m.Lower, m.Work, m.FD != nil || m.Server != nil)
	}
	c.Mounts, c.Files, c.Env = nil, nil, nil
	c.UserNS, c.UserNS2, c.PIDNS = nil, nil, nil
	fmt.Fprintf(&b, "%+v", *c)
	return b.String()
}

// template returns the warm template of key, making it from spec the
// first time; a spec a template cannot take gives a nil template.
func (s *Supervisor) template(ctx context.Context, key string, spec *sandbox.Spec, opts []sandbox.Option) (*warmTemplate, error) {
	w := &s.warm
	w.mu.Lock()
	if w.templates == nil {
		w.templates = map[string]*warmTemplate{}
		go s.sweepTemplates()
	}
	wt := w.templates[key]
	switch {
	case wt != nil:
		wt.runs++
		wt.used = time.Now()
		w.mu.Unlock()
	case len(w.templates) >= maxTemplates && !s.evictTemplate():
		// Every template is in use: this run's sandbox is built for it
		// alone.
		w.mu.Unlock()
		wt = &warmTemplate{made: make(chan struct{}), runs: 1}
		close(wt.made)
		return wt, nil
	default:
		// Counted as used, and by this run, while it is made: no sweep
		// or eviction takes it meanwhile.
		wt = &warmTemplate{made: make(chan struct{}), runs: 1, used: time.Now()}
		w.templates[key] = wt
		w.mu.Unlock()
		tspec := spec.Clone()
		tspec.Files = nil
		wt.t, wt.err = sandbox.NewTemplate(s.ctx, tspec, opts...)
		if wt.err != nil {
			s.log.Info("no template for this sandbox: built for each run", "err", wt.err)
		}
		close(wt.made)
	}
	select {
	case <-wt.made:
	case <-ctx.Done():
		s.doneWith(wt)
		return nil, ctx.Err()
	}
	return wt, nil
}

// doneWith says a run no longer uses wt.
func (s *Supervisor) doneWith(wt *warmTemplate) {
	s.warm.mu.Lock()
	wt.runs--
	wt.used = time.Now()
	s.warm.mu.Unlock()
}

// evictTemplate closes the least recently used template no run uses,
// and reports whether there was one. The caller holds warm.mu.
func (s *Supervisor) evictTemplate() bool {
	var oldest string
	for k, wt := range s.warm.templates {
		if wt.runs == 0 && (oldest == "" || wt.used.Before(s.warm.templates[oldest].used)) {
			oldest = k
		}
	}
	wt := s.warm.templates[oldest]
	if wt == nil {
		return false
	}
	delete(s.warm.templates, oldest)
	go func() {
		<-wt.made
		if wt.t != nil {
			wt.t.Close()
		}
	}()
	return true
}

// sweepTemplates closes the templates left unused for templateIdle,
// until the supervisor ends; then all of them.
func (s *Supervisor) sweepTemplates() {
	t := time.NewTicker(templateIdle / 4)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			s.warm.mu.Lock()
			ts := s.warm.templates
			s.warm.templates = map[string]*warmTemplate{}
			s.warm.mu.Unlock()
			for _, wt := range ts {
				<-wt.made
				if wt.t != nil {
					wt.t.Close()
				}
			}
			return
		case <-t.C:
		}
		s.warm.mu.Lock()
		for k, wt := range s.warm.templates {
			if wt.runs == 0 && time.Since(wt.used) > templateIdle {
				delete(s.warm.templates, k)
				go func() {
					<-wt.made
					if wt.t != nil {
						wt.t.Close()
					}
				}()
			}
		}
		s.warm.mu.Unlock()
	}
}

// parseRun reads a caplin run command line for a run through the
// supervisor; a reason (RunResult.Local) for one the client must run
// itself.
func parseRun(cl *CommandLine) (*bwrap.Command, *sandbox.Spec, string) {
	cmd, spec, err := parseClient(cl, nil)
	if err != nil {
		return nil, nil, err.Error()
	}
	local := func(why string) (*bwrap.Command, *sandbox.Spec, string) {
		cmd.Close()
		return nil, nil, why
	}
	if why := callerOnly(cmd); why != "" {
		return local(why)
	}
	switch {
	case spec.LandlockOnly:
		return local("--landlock-only")
	case spec.SameSession:
		return local("the caller's session")
	case cmd.Require != 0:
		return local("--require")
	}
	return cmd, spec, ""
}

// run runs a caplin run command line through the supervisor: the
// program in a sandbox of a warm template, with the client's standard
// fds, relaying the signals the client sends on the control object,
// until it ends or the client goes (ctx: then it is killed).
func (sv *Service) run(ctx context.Context, a *RunArgs) (RunResult, error) {
	defer func() {
		for _, f := range []rpc.FD{a.Stdin, a.Stdout, a.Stderr, a.Control} {
			f.Close()
		}
	}()
	s := sv.Sup
	t0 := time.Now()
	cmd, spec, why := parseRun(&a.CommandLine)
	if why != "" {
		return RunResult{Local: why}, nil
	}
	defer cmd.Close()
	var opts []sandbox.Option
	if len(cmd.Hosts) > 0 {
		opts = append(opts, sandbox.WithConnectLookup(cmd.Lookup()))
	}
	files := map[int]*os.File{}
	for n, f := range spec.Files {
		files[n] = f
	}
	for n, fd := range []rpc.FD{a.Stdin, a.Stdout, a.Stderr} {
		if fd.File != nil {
			files[n] = fd.File
		}
	}
	spec.Files = files
	spec.ControllingTerminal = a.Terminal

	var sb *sandbox.Sandbox
	var err error
	wt, err := s.template(ctx, templateKey(a.UID, a.GID, spec), spec, opts)
	if err != nil {
		return RunResult{}, err
	}
	defer s.doneWith(wt)
	if wt.t != nil {
		sb, err = wt.t.NewSandbox(ctx, files, spec.Env)
	} else {
		sb, err = sandbox.Build(ctx, spec, opts...)
	}
	if err != nil {
		var ne interface{ Fix() string }
		if errors.As(err, &ne) {
			// No user namespaces here: the client's own fallback says so.
			return RunResult{Local: err.Error()}, nil
		}
		code := 125
		if errors.Is(err, sandbox.ErrUnenforceable) {
			code = 122
		}
		return RunResult{Code: code, Error: cmd.Explain(err).Error()}, nil
	}
	defer sb.Close()
	t1 := time.Now()
	p, err := sb.Exec(ctx, cmd.Path, cmd.Argv)
	if err != nil {
		code, msg := bwrap.ExecStatus(cmd.Path, err)
		return RunResult{Code: code, Error: msg}, nil
	}
	sigs := make(chan os.Signal, 8)
	if a.Control.File != nil {
		ctl := rpc.Methods{
			"signal": rpc.Method(func(ctx context.Context, a SignalRunArgs) (struct{}, error) {
				sig := syscall.Signal(a.Signal)
				if !slices.Contains(sandbox.RelayedSignals(), os.Signal(sig)) {
					// Not a request to stop (SIGWINCH, say): to the
					// program's group, as a terminal sends it.
					p.SignalGroup(sig)
					return struct{}{}, nil
				}
				select {
				case sigs <- sig:
				default:
				}
				return struct{}{}, nil
			}),
		}
		f := a.Control.File
		a.Control.File = nil
		sv.Server.ServeFile(ctx, f, ctl)
	}
	t2 := time.Now()
	end, err := sandbox.Relay{KillAfter: cmd.KillAfter}.Wait(ctx, sb, p, sigs)
	s.log.Debug("run", "argv", cmd.Argv, "warm", wt.t != nil, "sandbox", t1.Sub(t0), "exec", t2.Sub(t1), "ran", time.Since(t2))
	if err != nil {
		// The client went: the program goes with it, as with caplin run.
		sb.Kill()
		p.Close()
		return RunResult{}, err
	}
	return RunResult{Code: end.Code, Relayed: int(end.Relayed)}, nil
}
