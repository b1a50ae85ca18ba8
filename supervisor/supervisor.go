package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Config adjusts a Supervisor. The zero value is the defaults.
type Config struct {
	// Logger receives a line per job started, restarted and ended; nil
	// means nothing is logged (the package never logs to slog.Default).
	Logger *slog.Logger
	// MaxJobs bounds the jobs in the table, running or ended (until
	// removed); a start beyond it fails with ErrTooMany. 0 means 4096.
	MaxJobs int
	// MaxStarting bounds the starts under way at once: a flood of starts
	// fails fast with ErrTooMany rather than queueing. 0 means 32.
	MaxStarting int
	// Scrollback bounds the output history kept per job, in bytes; the
	// oldest is dropped beyond it. 0 means 256 KiB.
	Scrollback int
	// StopGrace is how long Stop waits, after SIGTERM, before it kills.
	// 0 means 10 s.
	StopGrace time.Duration
}

func (c *Config) maxJobs() int     { return cmp0(c.MaxJobs, 4096) }
func (c *Config) maxStarting() int { return cmp0(c.MaxStarting, 32) }
func (c *Config) scrollback() int  { return cmp0(c.Scrollback, 256<<10) }
func (c *Config) stopGrace() time.Duration {
	if c.StopGrace <= 0 {
		return 10 * time.Second
	}
	return c.StopGrace
}

func cmp0(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// ErrTooMany is the error of a start past Config.MaxJobs or
// Config.MaxStarting. It matches unix.EAGAIN.
var ErrTooMany = fmt.Errorf("supervisor: too many jobs or starts at once: %w", unix.EAGAIN)

// ErrExists is the error of a start with a name the table has. It
// matches unix.EEXIST.
var ErrExists = fmt.Errorf("supervisor: a job of that name exists: %w", unix.EEXIST)

// ErrNotFound is the error for a name the table does not have. It
// matches unix.ENOENT.
var ErrNotFound = fmt.Errorf("supervisor: no such job: %w", unix.ENOENT)

// ErrRunning is the error of removing a job that has not ended. It
// matches unix.EBUSY.
var ErrRunning = fmt.Errorf("supervisor: the job has not ended (stop it first): %w", unix.EBUSY)

// A Supervisor runs jobs: programs in sandboxes, kept by name, that
// outlive whoever started them and are owned through handles. Every
// process of its jobs dies with the Supervisor's process, however it
// ends (the sandboxes are caplin's, kill-on-close).
type Supervisor struct {
	cfg    Config
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	jobs     map[string]*Job
	starting int
	seq      int
	closed   bool

	warm warm // run.go
}

// New returns a Supervisor with no jobs.
func New(cfg Config) *Supervisor {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Supervisor{cfg: cfg, log: log, ctx: ctx, cancel: cancel, jobs: map[string]*Job{}}
}

// StartRequest is what Start starts.
type StartRequest struct {
	// Name is the job's name in the table: up to 64 letters, digits,
	// '.', '_' and '-', not starting with '.' or '-'. Empty: the
	// program's base name and a number ("sleep-3").
	Name string
	// Program is what runs, and in which sandbox.
	Program Program
	// TTY gives the program a pseudo-terminal of Size (24x80 where 0) as
	// its fds 0 to 2 and controlling terminal; without, its input is a
	// pipe that viewers write to and its output and errors one pipe.
	TTY  bool
	Size Winsize
	// Restart says when the program is started again after it ends.
	Restart Restart
}

// ValidName reports whether name may name a job. "new" may not: it is
// the job files' directory of jobs being built (package jobfs).
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > 64 || name[0] == '.' || name[0] == '-' || name == "new" {
		return false
	}
	for _, c := range []byte(name) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Start starts a job: builds the sandbox and execs the program in it,
// and returns once it runs. A program that cannot be started is an error
// of type *StartError, with the exit status caplin run would give (the
// job is not kept).
func (s *Supervisor) Start(ctx context.Context, req *StartRequest) (*Job, error) {
	if req.Program.Spec == nil || req.Program.Path == "" || len(req.Program.Argv) == 0 {
		return nil, errors.New("supervisor: start: no program")
	}
	switch sp := req.Program.Spec; {
	case sp.LandlockOnly:
		return nil, fmt.Errorf("supervisor: start: a job needs a pid namespace of its own, so that stopping it reaches every process it started (not LandlockOnly): %w", unix.EINVAL)
	case sp.SharePID:
		return nil, fmt.Errorf("supervisor: start: a job needs a pid namespace of its own, so that stopping it reaches every process it started (not SharePID): %w", unix.EINVAL)
	case sp.SameSession:
		return nil, fmt.Errorf("supervisor: start: a job has a session of its own (not SameSession): %w", unix.EINVAL)
	}
	if req.Name != "" && !ValidName(req.Name) {
		return nil, fmt.Errorf("supervisor: start: job name %q: want up to 64 letters, digits, '.', '_' and '-', not starting with '.' or '-', and not \"new\": %w", req.Name, unix.EINVAL)
	}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return nil, fmt.Errorf("supervisor: start: shutting down: %w", unix.ESHUTDOWN)
	case s.starting >= s.cfg.maxStarting():
		n := s.starting
		s.mu.Unlock()
		return nil, fmt.Errorf("%w (%d starts under way)", ErrTooMany, n)
	case len(s.jobs) >= s.cfg.maxJobs(): // the starting ones' names included
		n := len(s.jobs)
		s.mu.Unlock()
		return nil, fmt.Errorf("%w (%d jobs; caplin rm removes ended ones)", ErrTooMany, n)
	}
	name := req.Name
	if name == "" {
		base := sanitize(path.Base(req.Program.Argv[0]))
		for {
			s.seq++
			name = base + "-" + strconv.Itoa(s.seq)
			if s.jobs[name] == nil {
				break
			}
		}
	}
	if _, ok := s.jobs[name]; ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrExists, name)
	}
	// The name is held while the job starts: a nil entry.
	s.jobs[name] = nil
	s.starting++
	s.mu.Unlock()

	j, err := s.start(ctx, name, req)
	s.mu.Lock()
	s.starting--
	if err != nil || s.closed {
		delete(s.jobs, name)
		closed := s.closed
		s.mu.Unlock()
		if err == nil && closed {
			j.Stop(context.Background(), time.Nanosecond)
			j.remove()
			return nil, fmt.Errorf("supervisor: start: shutting down: %w", unix.ESHUTDOWN)
		}
		return nil, err
	}
	s.jobs[name] = j
	s.mu.Unlock()
	s.log.Info("job started", "name", name, "pid", j.pid, "argv", req.Program.Argv)
	return j, nil
}

// start makes the job and its first run.
func (s *Supervisor) start(ctx context.Context, name string, req *StartRequest) (*Job, error) {
	j, err := newJob(s, name, req)
	if err != nil {
		return nil, err
	}
	j.begin()
	j.started = time.Now()
	sb, p, failed := j.run(s.ctx)
	if failed != nil {
		j.prog.Close = nil // the caller's still
		j.remove()
		return nil, &StartError{Code: failed.Code, Msg: failed.Error}
	}
	j.sb, j.p, j.pid = sb, p, p.Pid()
	go j.supervise(sb, p)
	return j, nil
}

// StartError is a program that could not be started, with the exit
// status caplin run gives it: 122 a sandbox the kernel cannot enforce,
// 125 one that could not be built, 126 a program that cannot be
// executed, 127 one not found.
type StartError struct {
	Code int
	Msg  string
}

func (e *StartError) Error() string { return e.Msg }

// sanitize makes s a job name's beginning.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	for len(b) > 0 && (b[0] == '.' || b[0] == '-') {
		b = b[1:]
	}
	if len(b) > 48 {
		b = b[:48]
	}
	if len(b) == 0 {
		return "job"
	}
	return string(b)
}

// Job returns the job of that name, or ErrNotFound.
func (s *Supervisor) Job(name string) (*Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[name]
	if j == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return j, nil
}

// Jobs returns the jobs in the table, oldest first.
func (s *Supervisor) Jobs() []*Job {
	s.mu.Lock()
	js := make([]*Job, 0, len(s.jobs))
	for _, j := range s.jobs {
		if j != nil {
			js = append(js, j)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(js, func(a, b *Job) int { return a.created.Compare(b.created) })
	return js
}

// Remove takes an ended job out of the table and frees what it holds:
// its history, how it ended, its terminal. A job still running is
// ErrRunning.
func (s *Supervisor) Remove(name string) error {
	s.mu.Lock()
	j := s.jobs[name]
	s.mu.Unlock()
	if j == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return s.remove(j)
}

// remove takes j out of the table if it is still there and has ended.
func (s *Supervisor) remove(j *Job) error {
	name := j.name
	s.mu.Lock()
	if s.jobs[name] != j {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	select {
	case <-j.done:
	default:
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrRunning, name)
	}
	delete(s.jobs, name)
	s.mu.Unlock()
	j.remove()
	return nil
}

// RemoveJob is Remove of j itself: nothing, and ErrNotFound, if the job
// of j's name in the table is another (j was removed, and a new job
// took its name).
func (s *Supervisor) RemoveJob(j *Job) error {
	s.mu.Lock()
	if s.jobs[j.name] != j {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, j.name)
	}
	s.mu.Unlock()
	return s.remove(j)
}

// ended is told that a job ended for good.
func (s *Supervisor) ended(j *Job) {}

// Shutdown stops every job (Job.Stop, at once for all, each with grace,
// or Config.StopGrace when 0), waits for them to end or ctx to end
// (then kills what is left), and frees them. Start fails from then on.
func (s *Supervisor) Shutdown(ctx context.Context, grace time.Duration) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, j := range s.Jobs() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := j.Stop(ctx, grace); err != nil {
				j.SignalAll(context.Background(), unix.SIGKILL)
				<-j.done
			}
		}()
	}
	wg.Wait()
	return s.Close()
}

// Close kills every job's processes at once (SIGKILL to each sandbox)
// and frees them.
func (s *Supervisor) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	for _, j := range s.Jobs() {
		if sb := j.markStopping(); sb != nil {
			sb.Kill()
		}
	}
	for _, j := range s.Jobs() {
		<-j.done
		j.remove()
	}
	s.mu.Lock()
	clear(s.jobs)
	s.mu.Unlock()
	s.cancel()
	return nil
}
