package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/pidfd"
	"github.com/caplin-dev/caplin/sandbox"
	"github.com/caplin-dev/caplin/sandbox/bwrap"
	"golang.org/x/sys/unix"
)

// State is where a job is in its life.
type State string

// The states of a job.
const (
	// Running: its program runs.
	Running State = "running"
	// Backoff: its program ended and is to be started again (Restart)
	// once the backoff delay is over.
	Backoff State = "backoff"
	// Exited: its program ended and will not be started again. The job
	// stays, with how it ended, until it is removed.
	Exited State = "exited"
)

// Restart says when a job's program is started again after it ends.
type Restart int

// Restart policies.
const (
	// RestartNo: never (the default).
	RestartNo Restart = iota
	// RestartOnFailure: when it did not exit with status 0.
	RestartOnFailure
	// RestartAlways: whenever it ends, until the job is stopped.
	RestartAlways
)

// ParseRestart reads a restart policy by its name: no, on-failure,
// always.
func ParseRestart(s string) (Restart, error) {
	switch s {
	case "no", "":
		return RestartNo, nil
	case "on-failure":
		return RestartOnFailure, nil
	case "always":
		return RestartAlways, nil
	}
	return 0, fmt.Errorf("supervisor: restart policy %q: want no, on-failure or always", s)
}

// String returns the policy's name.
func (r Restart) String() string {
	switch r {
	case RestartOnFailure:
		return "on-failure"
	case RestartAlways:
		return "always"
	}
	return "no"
}

// The restart backoff: the first restart after a quick end waits
// minBackoff, each quick end after it twice as long, up to maxBackoff; a
// run that lasted steadyRun starts the count again. So a program that
// exits at once is started at most once per maxBackoff once it has
// failed a few times, and a program that fails now and then is restarted
// at once.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 30 * time.Second
	steadyRun  = 10 * time.Second
)

// Exit is how a job's program ended.
type Exit struct {
	// Code is its exit status as a shell reports it: N for exit(N),
	// 128+N for signal N; 125, 126 or 127 for a program that could not
	// be started (as caplin run's).
	Code int
	// Signal is the signal that killed it, or 0.
	Signal int `json:",omitempty"`
	// CoreDumped: it dumped core.
	CoreDumped bool `json:",omitempty"`
	// UserTime and SystemTime are the CPU time it used, and MaxRSS its
	// largest resident memory in bytes, where the kernel reported them
	// (rusage).
	UserTime, SystemTime time.Duration
	MaxRSS               int64 `json:",omitempty"`
	// Time is when it ended.
	Time time.Time
	// Stopped: it ended because the job was stopped.
	Stopped bool `json:",omitempty"`
	// Error says why the program could not be started, for codes 125 to
	// 127.
	Error string `json:",omitempty"`
}

// Program is what a job runs: a program in a sandbox.
type Program struct {
	// Spec is the sandbox, each run's built afresh from it (the job keeps
	// a copy). Its Files 0, 1 and 2 are the job's: the peer of its
	// pseudo-terminal, or its pipes.
	Spec *sandbox.Spec
	// Path is the program, looked up in the sandbox's PATH when it has no
	// slash, and Argv its arguments (Argv[0] the name it sees).
	Path string
	Argv []string
	// Summary is a one-line description of the sandbox, for listings.
	Summary string
	// Options are given to sandbox.Build.
	Options []sandbox.Option
	// Close, if set, is called once the job is removed: it releases what
	// Spec holds (a parsed command line's files, say).
	Close func() error
}

// A Job is a program the supervisor runs and keeps: with its terminal
// or pipes, its output's history, how it ended, and who watches it. Its
// methods are safe for concurrent use.
type Job struct {
	sup     *Supervisor
	name    string
	prog    Program
	tty     bool
	restart Restart

	// The job's terminal (tty) or pipes, made once and kept across its
	// runs, so that viewers stay attached when it restarts: out is what
	// the supervisor reads the program's output from (the terminal's
	// master, or the read end of its output pipe) and in what it writes
	// its input to (the master again, or the write end of its input
	// pipe). The program's ends are files, its fds 0 to 2. The supervisor
	// keeps its own copy of the program's ends, so that out never reads an
	// end of file or EIO between runs.
	out, in *os.File
	// inMu is held while one viewer's input is written to in, whole:
	// another's, after a lease change, does not land inside it.
	inMu  sync.Mutex
	files map[int]*os.File
	back  *scrollback

	mu       sync.Mutex
	state    State
	sb       *sandbox.Sandbox
	p        *pidfd.Process
	pid      int
	started  time.Time // of the current, or last, run
	created  time.Time
	restarts int
	exit     *Exit
	delay    time.Duration // the next backoff
	stopping bool
	stopped  chan struct{} // closed by Stop: no more runs
	done     chan struct{} // closed when the job has ended for good
	removed  bool
	size     Winsize
	att      attachments // attach.go
}

// Name returns the job's name.
func (j *Job) Name() string { return j.name }

// Done returns a channel closed when the job has ended for good (its
// program exited and will not be started again).
func (j *Job) Done() <-chan struct{} { return j.done }

// newJob makes the job's terminal or pipes.
func newJob(s *Supervisor, name string, req *StartRequest) (_ *Job, err error) {
	j := &Job{
		sup: s, name: name, prog: req.Program, tty: req.TTY, restart: req.Restart,
		back: newScrollback(s.cfg.scrollback()), state: Running, created: time.Now(),
		stopped: make(chan struct{}), done: make(chan struct{}), delay: minBackoff,
	}
	j.prog.Spec = req.Program.Spec.Clone()
	j.prog.Argv = append([]string(nil), req.Program.Argv...)
	if j.tty {
		ws := req.Size
		if ws.Rows == 0 {
			ws.Rows = 24
		}
		if ws.Cols == 0 {
			ws.Cols = 80
		}
		master, peer, err := openPTY(ws)
		if err != nil {
			return nil, err
		}
		j.size = ws
		j.out, j.in = master, master
		j.files = map[int]*os.File{0: peer, 1: peer, 2: peer}
		return j, nil
	}
	inR, inW, err := pipe('w')
	if err != nil {
		return nil, err
	}
	outR, outW, err := pipe('r')
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	j.out, j.in = outR, inW
	j.files = map[int]*os.File{0: inR, 1: outW, 2: outW}
	return j, nil
}

// pipe makes a pipe for the program: the end the supervisor keeps
// (its read end when mine is "r", else its write end) non-blocking, in
// Go's poller; the program's end blocking, as pipes are to programs. The
// two ends are open file descriptions of their own, so each keeps its
// mode.
func pipe(mine byte) (r, w *os.File, err error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, nil, fmt.Errorf("supervisor: pipe: %w", err)
	}
	theirs := fds[1]
	if mine == 'w' {
		theirs = fds[0]
	}
	if err := unix.SetNonblock(theirs, false); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("supervisor: pipe: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "pipe"), os.NewFile(uintptr(fds[1]), "pipe"), nil
}

// begin starts reading the job's output.
func (j *Job) begin() {
	go j.readOutput()
}

// readOutput moves the program's output into the scrollback until the
// job is removed, never waiting for a viewer. It holds no buffer while it
// waits for output (a raw read, with a buffer from a pool): an idle job
// costs its goroutine's stack only.
func (j *Job) readOutput() {
	rc, err := j.out.SyscallConn()
	if err != nil {
		j.back.end()
		return
	}
	for {
		var n int
		var rerr error
		var buf *[]byte
		err := rc.Read(func(fd uintptr) bool {
			buf = readBuffers.Get().(*[]byte)
			n, rerr = unix.Read(int(fd), *buf)
			if rerr == unix.EAGAIN {
				readBuffers.Put(buf)
				return false // wait for output
			}
			return true
		})
		if rerr == unix.EINTR {
			readBuffers.Put(buf)
			continue
		}
		if n > 0 {
			p := (*buf)[:n]
			at := j.back.write(p)
			j.mu.Lock()
			vs := j.att.list
			j.mu.Unlock()
			for _, v := range vs {
				v.deliver(at, p)
			}
		}
		if buf != nil && (n > 0 || rerr != unix.EAGAIN) {
			readBuffers.Put(buf)
		}
		if err != nil || rerr != nil || n == 0 {
			// EIO from a terminal nobody holds, or the end of the pipe,
			// or the file closed: the job was removed.
			j.back.end()
			j.mu.Lock()
			vs := j.att.list
			j.mu.Unlock()
			for _, v := range vs {
				v.wake()
			}
			return
		}
	}
}

// readBuffers are the output readers' buffers, taken for a read only.
var readBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// run builds the sandbox and starts the program in it; on failure it
// returns how the run ended (the codes caplin run gives).
func (j *Job) run(ctx context.Context) (*sandbox.Sandbox, *pidfd.Process, *Exit) {
	spec := j.prog.Spec.Clone()
	spec.Files = map[int]*os.File{}
	for n, f := range j.prog.Spec.Files {
		if n > 2 {
			spec.Files[n] = f
		}
	}
	for n, f := range j.files {
		spec.Files[n] = f
	}
	spec.ControllingTerminal = j.tty
	sb, err := sandbox.Build(ctx, spec, j.prog.Options...)
	if err != nil {
		code := 125
		if errors.Is(err, sandbox.ErrUnenforceable) {
			code = 122
		}
		return nil, nil, &Exit{Code: code, Time: time.Now(), Error: err.Error()}
	}
	p, err := sb.Exec(ctx, j.prog.Path, j.prog.Argv)
	if err != nil {
		sb.Close()
		code, msg := bwrap.ExecStatus(j.prog.Path, err)
		return nil, nil, &Exit{Code: code, Time: time.Now(), Error: msg}
	}
	return sb, p, nil
}

// supervise waits for each run to end and starts the next as the restart
// policy says, until the job ends for good.
func (j *Job) supervise(sb *sandbox.Sandbox, p *pidfd.Process) {
	for {
		var ex *Exit
		if p != nil {
			st, err := p.Wait(context.Background())
			ex = exitOf(st, err)
			// What the program left running in its sandbox goes with it.
			sb.Close()
		}
		j.mu.Lock()
		if ex == nil {
			ex = j.exit // a failed start, recorded by the caller
		}
		j.exit, j.sb, j.p = ex, nil, nil
		ex.Stopped = j.stopping
		again := !j.stopping && (j.restart == RestartAlways || j.restart == RestartOnFailure && ex.Code != 0)
		if !again {
			j.state = Exited
			j.mu.Unlock()
			j.sup.log.Info("job ended", "name", j.name, "code", ex.Code)
			j.closeProgramEnds()
			close(j.done)
			j.sup.ended(j)
			return
		}
		if time.Since(j.started) >= steadyRun {
			j.delay = minBackoff
		}
		delay := j.delay
		j.delay = min(2*j.delay, maxBackoff)
		j.state = Backoff
		j.mu.Unlock()
		j.sup.log.Info("job restarts", "name", j.name, "code", ex.Code, "in", delay)

		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-j.stopped:
			t.Stop()
		}
		j.mu.Lock()
		if j.stopping {
			j.exit.Stopped = true
			j.state = Exited
			j.mu.Unlock()
			j.closeProgramEnds()
			close(j.done)
			j.sup.ended(j)
			return
		}
		j.restarts++
		j.started = time.Now()
		j.state = Running
		j.mu.Unlock()
		var failed *Exit
		sb, p, failed = j.run(j.sup.ctx)
		j.mu.Lock()
		if failed != nil {
			j.exit, j.pid = failed, 0
			j.sup.log.Warn("job restart failed", "name", j.name, "err", failed.Error)
		} else {
			j.sb, j.p, j.pid = sb, p, p.Pid()
			if j.stopping {
				// Stopped while it started: it ends now.
				sb.Kill()
			}
		}
		j.mu.Unlock()
	}
}

// exitOf makes an Exit of how a run's program ended.
func exitOf(st *pidfd.State, err error) *Exit {
	ex := &Exit{Time: time.Now()}
	if err != nil || st == nil {
		// Its sandbox's init, which reaps it, was killed first (Kill,
		// Stop after the grace, the supervisor's Close): so was it.
		ex.Code, ex.Signal = 128+int(unix.SIGKILL), int(unix.SIGKILL)
		return ex
	}
	ex.Code, ex.Signal, ex.CoreDumped = st.ExitCode(), int(st.Signal), st.CoreDumped
	if st.Rusage != nil {
		ex.UserTime, ex.SystemTime = st.UserTime(), st.SystemTime()
		ex.MaxRSS = st.Rusage.Maxrss << 10 // the kernel counts KiB
	}
	return ex
}

// Status is what a listing shows of a job.
type Status struct {
	Name  string
	State State
	// Pid is its program's process ID in the supervisor's pid namespace,
	// 0 when none runs.
	Pid int `json:",omitempty"`
	// Argv is what it runs.
	Argv []string
	// Created is when the job was started; Started when its current (or
	// last) run was.
	Created, Started time.Time
	// CPU is the CPU time its program has used, with that of its reaped
	// children; Memory its program's resident memory in bytes. Both 0
	// when none runs.
	CPU    time.Duration `json:",omitempty"`
	Memory int64         `json:",omitempty"`
	// Restarts counts the runs after the first.
	Restarts int
	Restart  string
	TTY      bool `json:",omitempty"`
	// Summary describes its sandbox in one line.
	Summary string
	// Exit is how its last run ended; nil while the first runs.
	Exit *Exit `json:",omitempty"`
	// Viewers counts who is attached; Writer says whether one of them
	// types.
	Viewers int  `json:",omitempty"`
	Writer  bool `json:",omitempty"`
}

// Status returns the job's status now.
func (j *Job) Status() Status {
	j.mu.Lock()
	st := Status{
		Name: j.name, State: j.state, Argv: append([]string(nil), j.prog.Argv...),
		Created: j.created, Started: j.started, Restarts: j.restarts, Restart: j.restart.String(),
		TTY: j.tty, Summary: j.prog.Summary, Viewers: len(j.att.viewers), Writer: j.att.writer != nil,
	}
	if j.exit != nil {
		ex := *j.exit
		st.Exit = &ex
	}
	if j.state == Running && j.p != nil {
		st.Pid = j.pid
	}
	j.mu.Unlock()
	if st.Pid > 0 {
		st.CPU, st.Memory = usage(st.Pid)
	}
	return st
}

// usage reads the CPU time (its own and its reaped children's) and the
// resident memory of process pid from /proc/PID/stat; zeros if it cannot.
func usage(pid int) (time.Duration, int64) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0
	}
	// The fields after the command's name, from field 3 (state) on.
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 22 {
		return 0, 0
	}
	var ticks int64
	for _, k := range []int{14, 15, 16, 17} { // utime stime cutime cstime
		n, _ := strconv.ParseInt(f[k-3], 10, 64)
		ticks += n
	}
	rss, _ := strconv.ParseInt(f[24-3], 10, 64)
	// USER_HZ is 100 on every architecture Linux runs Go on.
	return time.Duration(ticks) * (time.Second / 100), rss * int64(os.Getpagesize())
}

// Signal sends sig to the job's program alone.
func (j *Job) Signal(sig syscall.Signal) error {
	j.mu.Lock()
	p := j.p
	j.mu.Unlock()
	if p == nil {
		return fmt.Errorf("supervisor: job %s: signal %v: %w", j.name, sig, os.ErrProcessDone)
	}
	if err := p.Signal(sig); err != nil {
		return fmt.Errorf("supervisor: job %s: signal %v: %w", j.name, sig, err)
	}
	return nil
}

// SignalAll sends sig to every process of the job's sandbox: the program
// and all it started, double-forked daemons included
// (sandbox.Sandbox.SignalAll). In a sandbox without an init of caplin's
// (the program is pid 1) the program's process group gets it, and SIGKILL
// kills the whole sandbox.
func (j *Job) SignalAll(ctx context.Context, sig syscall.Signal) error {
	j.mu.Lock()
	sb, p := j.sb, j.p
	j.mu.Unlock()
	if sb == nil {
		return fmt.Errorf("supervisor: job %s: signal %v: %w", j.name, sig, os.ErrProcessDone)
	}
	if sig == unix.SIGKILL {
		return sb.Kill()
	}
	err := sb.SignalAll(ctx, sig)
	if errors.Is(err, sandbox.ErrNoInit) {
		err = p.SignalGroup(sig)
	}
	if err != nil && !errors.Is(err, os.ErrProcessDone) && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("supervisor: job %s: %w", j.name, err)
	}
	return nil
}

// Stop ends the job for good: no more restarts; SIGTERM to every process
// of its sandbox, then, if the program has not ended grace later (0: the
// supervisor's Config.StopGrace), SIGKILL to all of them. It returns how
// the program ended. A job that has ended already is left as it is.
func (j *Job) Stop(ctx context.Context, grace time.Duration) (*Exit, error) {
	if grace <= 0 {
		grace = j.sup.cfg.stopGrace()
	}
	sb := j.markStopping()
	if sb != nil {
		j.SignalAll(ctx, unix.SIGTERM)
		// The KILL after the grace comes whether or not the caller waits
		// for it: a stop that was asked is carried out.
		go func() {
			t := time.NewTimer(grace)
			defer t.Stop()
			select {
			case <-j.done:
			case <-t.C:
				sb.Kill()
			}
		}()
	}
	return j.Wait(ctx)
}

// Wait waits for the job to end for good and returns how its program
// ended; for a job that has ended, at once.
func (j *Job) Wait(ctx context.Context) (*Exit, error) {
	select {
	case <-j.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	ex := *j.exit
	return &ex, nil
}

// Output returns a reader of the job's output from its oldest byte kept:
// what it has written, and, with follow, what it writes from then on
// until it is removed or ctx ends. Without follow it ends at what was
// there when it was called.
func (j *Job) Output(ctx context.Context, follow bool) io.Reader {
	head, tail := j.back.span()
	return &outputReader{ctx: ctx, back: j.back, off: head, stop: tail, follow: follow}
}

// outputReader is Output's reader.
type outputReader struct {
	ctx    context.Context
	back   *scrollback
	off    int64
	stop   int64
	follow bool
}

func (r *outputReader) Read(p []byte) (int, error) {
	if !r.follow {
		if r.off >= r.stop {
			return 0, io.EOF
		}
		if int64(len(p)) > r.stop-r.off {
			p = p[:r.stop-r.off]
		}
	}
	n, next, _, ok, err := r.back.read(r.ctx, r.off, p)
	r.off = next
	if err != nil {
		return n, err
	}
	if !ok {
		return n, io.EOF
	}
	return n, nil
}

// remove frees what the job holds once it has ended: its terminal or
// pipes, its viewers, what its Program holds.
func (j *Job) remove() {
	j.mu.Lock()
	if j.removed {
		j.mu.Unlock()
		return
	}
	j.removed = true
	viewers := j.att.all()
	j.mu.Unlock()
	for _, v := range viewers {
		v.close()
	}
	j.closeProgramEnds()
	j.in.Close()
	if j.out != j.in {
		j.out.Close()
	}
	j.back.end()
	if j.prog.Close != nil {
		j.prog.Close()
	}
}

// OutputStart returns the offset of the oldest byte of output kept, for
// ReadOutput.
func (j *Job) OutputStart() int64 {
	head, _ := j.back.span()
	return head
}

// ReadOutput reads the job's output from offset off on into p, waiting
// for some while there is none and the job is kept; it returns how many
// bytes it read and the offset to read from next (past what was dropped
// before the reader got to it). At the end of the output (the job
// removed) it returns io.EOF; when ctx ends first, ctx's error.
func (j *Job) ReadOutput(ctx context.Context, off int64, p []byte) (int, int64, error) {
	n, next, _, ok, err := j.back.read(ctx, off, p)
	if err == nil && !ok {
		err = io.EOF
	}
	return n, next, err
}

// Env returns the program's environment.
func (j *Job) Env() []string { return append([]string(nil), j.prog.Spec.Env...) }

// Input writes p to the job's terminal or input pipe, as a viewer with
// the writer lease would.
func (j *Job) Input(p []byte) error {
	j.mu.Lock()
	removed := j.removed
	j.mu.Unlock()
	if removed {
		return fmt.Errorf("supervisor: job %s: input: %w", j.name, os.ErrClosed)
	}
	_, err := j.in.Write(p)
	return err
}

// closeProgramEnds closes the supervisor's copies of the program's ends
// of its terminal or pipes, once the job has ended for good: the output
// reader then reads what is left and sees the end, and so do the readers
// of the output (attach, logs -f, the stdout file).
func (j *Job) closeProgramEnds() {
	seen := map[*os.File]bool{}
	for _, f := range j.files {
		if !seen[f] {
			seen[f] = true
			f.Close()
		}
	}
}

// InputFile returns a new file for the job's input (its terminal, or the
// write end of its input pipe): a descriptor of its own, in Go's poller,
// so that its writes can be given a deadline without touching the job's
// other writers'. The caller closes it.
func (j *Job) InputFile() (*os.File, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.removed {
		return nil, fmt.Errorf("supervisor: job %s: input: %w", j.name, os.ErrClosed)
	}
	fd, err := unix.FcntlInt(j.in.Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("supervisor: job %s: input: %w", j.name, err)
	}
	return os.NewFile(uintptr(fd), "input"), nil
}

// markStopping ends the job's restarts and returns its running sandbox,
// if any.
func (j *Job) markStopping() *sandbox.Sandbox {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.stopping {
		j.stopping = true
		close(j.stopped)
	}
	return j.sb
}
