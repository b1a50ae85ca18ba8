package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/caplin-dev/caplin/netgrant"
	"github.com/caplin-dev/caplin/pidfd"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// A Sandbox is a confined process that Build or Template.NewSandbox made,
// ready to exec a program. Close it when done: that kills whatever is
// left in it. Run does all of that in one call.
//
// A Sandbox is safe for concurrent use: Kill and Close may be called while
// an Exec is under way (the Exec then fails, its process killed), and
// Execs, and Handle, run one at a time. Exec after Kill or Close fails
// with an error matching os.ErrClosed.
type Sandbox struct {
	spec  *Spec
	first *proc.Handle // the first process made, in the sandbox's namespaces
	init  *proc.Handle // caplin's init, pid 1, when the program is not
	// extra are processes of caplin's that the sandbox keeps besides
	// those: the one that joined UserNS or PIDNS, the one that holds the
	// lock files when there is no init of caplin's to.
	extra []*proc.Handle
	lim   *limiter
	ns    map[string]uint64
	// broker decides the program's connects (Spec.Connect); nil without.
	broker *netgrant.Broker
	// reapLater: Close kills and leaves the reaping to a goroutine.
	reapLater bool
	closeOnce sync.Once
	// started, if not nil, is called once, when Exec or Handle has made
	// the program's process (or failed to), or at Close if neither did:
	// a Template makes its next sandbox ahead then, not while this one's
	// program is being started (on a machine of few CPUs the two would
	// contend).
	started   func()
	startOnce sync.Once

	// execMu serializes what makes or execs the program's process (Exec,
	// Handle); close holds it while it frees the handles and files, so
	// that it never frees them under an Exec.
	execMu sync.Mutex
	// mu guards killed, and with execMu h, pending and files: those
	// change only with both held, so execMu's holder reads them freely,
	// and Kill, Pid and close read them under mu. matErr is execMu's
	// alone; ll, filter and inherited do not change once the sandbox is
	// made.
	mu     sync.Mutex
	killed bool         // Kill or Close was called: no more Exec
	h      *proc.Handle // the program's process; nil while pending

	// pending: the program's process is made by Exec, spawned from init
	// with the confinement and fds as its setup (proc.Handle.Spawn), so
	// that no fork copies anything. A template's sandboxes under caplin's
	// init are made so.
	pending bool
	files   map[int]*os.File // the program's fds while pending: ours, duplicates
	ll      *LandlockPolicy
	filter  []unix.SockFilter
	matErr  error // why the pending program's process could not be made
	// inherited: what the init applied to itself for the program to
	// inherit (initConfinement).
	inherited confinement

	// A LandlockOnly sandbox's: the directories that stand in for its
	// tmpfs mounts, which Kill and Close remove, and what it does
	// differently from a sandbox with namespaces (Differences). Neither
	// changes once the sandbox is made.
	standIns    []*standIn
	differences []string
}

// Differences says, one short phrase each, what a LandlockOnly sandbox
// does in place of what its Spec asks that needs a mount namespace, such
// as "/tmp is a private directory ($TMPDIR)" and "/proc is the host's
// read-only"; nil for a sandbox with namespaces. What no LandlockOnly
// sandbox has is LandlockOnlyLimits.
func (s *Sandbox) Differences() []string { return slices.Clone(s.differences) }

// removeStandIns removes the directories that stand in for tmpfs mounts,
// with everything in them.
func (s *Sandbox) removeStandIns() error {
	var errs []error
	for _, si := range s.standIns {
		errs = append(errs, si.remove())
	}
	return errors.Join(errs...)
}

// Run builds a sandbox from spec, runs the program path in it with
// arguments argv (as Exec does: spec's environment, files and PATH), waits
// for it to exit, and closes the sandbox: the one-shot use, as
// exec.Cmd.Run is for a plain process. A program that ran is not an error,
// whatever its exit: the State says how it ended (State.Success). When ctx
// is done first, the sandbox is killed and Run returns ctx's error.
func Run(ctx context.Context, spec *Spec, path string, argv []string, opts ...Option) (*pidfd.State, error) {
	sb, err := Build(ctx, spec, opts...)
	if err != nil {
		return nil, err
	}
	defer sb.Close()
	p, err := sb.Exec(ctx, path, argv)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	st, err := p.Wait(ctx)
	if err != nil {
		return nil, fmt.Errorf("sandbox: waiting for %s: %w", path, err)
	}
	return st, nil
}

// missing reports whether path is certainly not there for a pending
// program: looked up by the init, which has the program's root and mounts
// (Landlock, if the init has taken it on, does not restrict a stat), so
// what the init cannot find, the program cannot either (a spawn that fails
// costs more than a stat).
func (s *Sandbox) missing(ctx context.Context, path string) bool {
	var b proc.Batch
	var st unix.Stat_t
	b.Fstatat(proc.AtFDCWD(), path, &st, 0)
	_, err := s.init.Run(ctx, &b)
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)
}

// Namespaces returns the inode numbers of the sandbox's namespaces, by
// their names in /proc/PID/ns ("mnt", "net", "pid", "user", ...): those it
// shares with the caller too.
func (s *Sandbox) Namespaces() map[string]uint64 {
	m := make(map[string]uint64, len(s.ns))
	for k, v := range s.ns {
		m[k] = v
	}
	return m
}

// Handle returns the handle of the process that will exec the program, for
// more set-up before Exec. It is confined already: Landlock, seccomp and
// the capability drop apply to what it runs.
//
// A template's sandbox under caplin's init makes that process only when
// it execs the program, in the same round trip, unless Handle asks for it
// first: Handle makes it then, at the cost of a fork. It returns nil if
// that fails (and Exec returns the error), after Exec spawned the
// program, and after Kill or Close.
func (s *Sandbox) Handle() *proc.Handle {
	// The template's refill, once this returns and execMu is free: it
	// takes the template's lock, which nothing holds while waiting for
	// a sandbox's.
	defer s.startedNow()
	s.execMu.Lock()
	defer s.execMu.Unlock()
	if s.isKilled() {
		return nil
	}
	if s.pending {
		s.materialize(context.Background())
	}
	return s.program()
}

// program returns the program's process, nil while pending.
func (s *Sandbox) program() *proc.Handle {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.h
}

// isKilled reports whether Kill or Close was called.
func (s *Sandbox) isKilled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.killed
}

// made records that the pending program's process is made (h, nil when
// a spawn exec'd it), and closes the fds kept for it. The caller holds
// execMu.
func (s *Sandbox) made(h *proc.Handle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.h, s.pending = h, false
	s.closeFiles()
}

// Pid returns the program's process ID, as seen from the caller: 0 for a
// template's sandbox under caplin's init before Exec or Handle has made
// the program's process.
func (s *Sandbox) Pid() int {
	h := s.program()
	if h == nil {
		return 0
	}
	return h.Pid()
}

// materialize makes the pending program's process by forking it from the
// init and confining it, as Build does. The caller holds execMu.
func (s *Sandbox) materialize(ctx context.Context) error {
	if s.matErr != nil {
		return s.matErr
	}
	prog, err := s.init.Fork(ctx, nil)
	if err != nil {
		s.matErr = fmt.Errorf("sandbox: forking the program's process: %w", err)
		return s.matErr
	}
	r, err := recordProgram(s.spec, s.files, s.lim, s.ll, s.filter, s.inherited)
	if err == nil {
		if _, err = prog.Run(ctx, &r.b); err != nil {
			err = r.explain(err)
		}
	}
	if err != nil {
		prog.Close()
		s.matErr = err
		return err
	}
	s.made(prog)
	return nil
}

// closeFiles closes the fds kept for a pending program. The caller holds
// mu, and execMu or knows no Exec is under way.
func (s *Sandbox) closeFiles() {
	for _, f := range s.files {
		f.Close()
	}
	s.files = nil
}

// spawn execs path in a new process that the init spawns, confined by
// its setup (proc.Handle.SpawnPath). It reports whether the exec failed
// on the file (an *os.PathError) rather than in the setup. The caller
// holds execMu.
func (s *Sandbox) spawn(ctx context.Context, path string, argv []string) (*pidfd.Process, error) {
	r, err := recordProgram(s.spec, s.files, s.lim, s.ll, s.filter, s.inherited)
	if err != nil {
		return nil, err
	}
	p, err := s.init.SpawnPath(ctx, nil, &r.b, path, argv, s.spec.Env)
	if err != nil {
		var be *proc.BatchError
		if errors.As(err, &be) {
			return nil, r.explain(err)
		}
		return nil, err
	}
	s.made(nil)
	return p, nil
}

// InitPid returns the process ID, as the caller sees it, of the sandbox's
// first process, the one its namespaces were made for: caplin's init when
// there is one, else the program's.
func (s *Sandbox) InitPid() int { return s.first.Pid() }

// Exec runs the program path in the sandbox with arguments argv (argv[0]
// is the name it sees) and the spec's environment, and returns it as a
// Process. A path without a slash is looked up in the PATH of the spec's
// environment, or in /usr/local/bin:/usr/bin:/bin, inside the sandbox;
// relative PATH entries are skipped. Wait for the Process before closing
// the Sandbox: under caplin's init, the init reaps it.
//
// A failed exec is an *os.PathError; the Sandbox is still usable then.
func (s *Sandbox) Exec(ctx context.Context, path string, argv []string) (*pidfd.Process, error) {
	// The template's refill, once this returns and execMu is free: it
	// takes the template's lock, which nothing holds while waiting for
	// a sandbox's.
	defer s.startedNow()
	s.execMu.Lock()
	defer s.execMu.Unlock()
	if s.isKilled() {
		return nil, fmt.Errorf("sandbox: exec %s: %w", path, os.ErrClosed)
	}
	exec := func(path string) (*pidfd.Process, error) {
		if s.matErr != nil { // Handle could not make the process
			return nil, s.matErr
		}
		if s.pending {
			return s.spawn(ctx, path, argv)
		}
		if s.h == nil { // the spawn is done
			return nil, proc.ErrExeced
		}
		return s.h.ExecPath(ctx, path, argv, s.spec.Env)
	}
	if strings.Contains(path, "/") {
		return exec(path)
	}
	dirs := "/usr/local/bin:/usr/bin:/bin"
	for _, kv := range s.spec.Env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			dirs = v
		}
	}
	var first error
	for _, dir := range strings.Split(dirs, ":") {
		if dir == "" || dir[0] != '/' {
			continue // a relative entry would be looked up in the working directory
		}
		// Each miss is a failed execveat, after which the handle is still
		// usable (or, pending, a spawn that failed and left nothing).
		cand := strings.TrimSuffix(dir, "/") + "/" + path
		if s.pending && s.missing(ctx, cand) {
			continue
		}
		p, err := exec(cand)
		if err == nil {
			return p, nil
		}
		var pe *os.PathError
		switch {
		case !errors.As(err, &pe):
			return nil, err // not the exec's own failure: the process is gone, say
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		case errors.Is(err, unix.EACCES):
			if first == nil {
				first = err // like execvp: go on, and report it if nothing is found
			}
		default:
			return nil, err
		}
	}
	if first != nil {
		return nil, first
	}
	return nil, &os.PathError{Op: "exec", Path: path, Err: unix.ENOENT}
}

// ErrNoInit is what SignalAll returns for a sandbox without an init of
// caplin's (AsPID1, SharePID, LandlockOnly): nothing in it can reach
// every process of the sandbox, and only of the sandbox, with a signal.
var ErrNoInit = errors.New("sandbox: no init of caplin's to signal every process from (AsPID1, SharePID or LandlockOnly)")

// SignalAll sends sig to every process in the sandbox but caplin's init:
// the program, its children, and what left its process group or session
// (a double-forked daemon). The init sends it, with kill(2) of -1, which
// the kernel confines to the init's pid namespace and those nested in it:
// no process outside the sandbox is reached, and no pid number is used,
// so none can have been reused. It returns nil when no process was left
// to signal, and ErrNoInit for a sandbox without an init of caplin's
// (Kill still ends those whole). After Kill or Close it returns an error
// matching os.ErrClosed. ctx's values are used, not its end: the signal
// is sent in one round trip to the init, which is not cut short.
func (s *Sandbox) SignalAll(ctx context.Context, sig syscall.Signal) error {
	s.mu.Lock()
	killed := s.killed
	s.mu.Unlock()
	if killed {
		return fmt.Errorf("sandbox: signal %v: %w", sig, os.ErrClosed)
	}
	if s.init == nil {
		return ErrNoInit
	}
	var b proc.Batch
	b.Tolerate(b.Kill(proc.Int(-1), sig), unix.ESRCH)
	// Not cancelled with ctx: a call to a process's handle that is cut
	// short kills the process, and this one is the sandbox's init. The
	// init answers at once.
	if _, err := s.init.Run(context.WithoutCancel(ctx), &b); err != nil {
		return fmt.Errorf("sandbox: signal %v to every process: %w", sig, err)
	}
	return nil
}

// Kill kills every process in the sandbox (SIGKILL) and returns without
// waiting for them to go: the kernel takes its namespaces down in the
// background. It suits a caller about to exit; Close still has to reap.
//
// It may be called while an Exec is under way, which then fails. After
// Close it does nothing and returns nil.
func (s *Sandbox) Kill() error {
	s.mu.Lock()
	s.killed = true
	h := s.h
	s.mu.Unlock()
	if s.execMu.TryLock() {
		// No Exec is using the fds kept for the program: they are of no
		// use now. (Under an Exec, close frees them.)
		s.mu.Lock()
		s.closeFiles()
		s.mu.Unlock()
		s.execMu.Unlock()
	}
	if s.first == nil {
		return s.removeStandIns()
	}
	if h != nil && h != s.first {
		h.Process().Kill()
	}
	for _, x := range s.extra {
		x.Process().Kill()
	}
	err := s.first.Process().Kill()
	if errors.Is(err, fs.ErrClosed) {
		err = nil // closed already: nothing is left to kill
	}
	// A caller that kills rather than closes is about to exit: what the
	// sandbox made on the host goes now. (A process still dying might
	// yet write there; Close tries again.)
	return errors.Join(err, s.removeStandIns())
}

// Close kills every process left in the sandbox and frees what it holds.
// It is idempotent. The servers of its FUSE mounts are the caller's and
// stay open: the mounts go with the sandbox's mount namespace, and the
// kernel then ends their connections (their servers' reads fail with
// ENODEV), which the caller may wait for before closing them. A template's sandbox without limits is sent SIGKILL
// and the rest is done in the background: the template reaps its
// processes.
func (s *Sandbox) Close() error {
	var err error
	defer s.startedNow()
	s.closeOnce.Do(func() {
		if s.reapLater && s.lim == nil {
			// A template's sandbox: its init is the template's child,
			// which reaps it; killing it takes the whole sandbox down,
			// and the template's reaping need not hold the caller up.
			s.Kill()
			go s.close()
			return
		}
		err = s.close()
	})
	return err
}

// startedNow calls started, once.
func (s *Sandbox) startedNow() {
	if s.started != nil {
		s.startOnce.Do(s.started)
	}
}

func (s *Sandbox) close() error {
	if !s.execMu.TryLock() {
		// An Exec is under way: kill it, so that it ends, and wait for it
		// before freeing what it uses.
		s.Kill()
		s.execMu.Lock()
	}
	defer s.execMu.Unlock()
	s.mu.Lock()
	s.killed = true
	s.closeFiles()
	h := s.h
	s.h = nil // Handle returns nil from now on
	s.mu.Unlock()
	var err error
	if h != nil && h != s.first {
		h.Close()
	}
	if s.first != nil {
		err = s.first.Close()
	}
	// The helpers last: with a pid namespace joined (PIDNS), the first
	// process is reaped through one of them.
	for _, x := range s.extra {
		x.Close()
	}
	if s.broker != nil {
		s.broker.Close()
	}
	if s.lim != nil {
		if e := s.lim.close(); err == nil {
			err = e
		}
	}
	if e := s.removeStandIns(); err == nil {
		err = e
	}
	return err
}

// setFirst records h as the sandbox's first process, which Close ends,
// and puts it in the limits' cgroups, if any, before it makes another.
func (sb *Sandbox) setFirst(h *proc.Handle, lim *limiter) error {
	sb.first = h
	if lim == nil {
		return nil
	}
	return lim.attach(h.Pid())
}
