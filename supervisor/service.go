package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/rpc"
	"golang.org/x/sys/unix"
)

// Rights are what a job object lets its holder do. An owner object has
// them all; Borrow makes objects with fewer.
type Rights uint8

// The rights of job objects.
const (
	// RightWatch: logs, and attach to watch (and what RightStatus gives).
	RightWatch Rights = 1 << iota
	// RightInput: attach with the writer lease (type into the job).
	RightInput
	// RightSignal: signal, stop and kill every process of the job.
	RightSignal
	// RightOwn: the owner's. Borrowed objects never have it.
	RightOwn
	// RightStatus: status and wait, and nothing of the job's terminal or
	// output: with RightSignal, an object that can stop a job and learn
	// how it ended without seeing what it does.
	RightStatus

	// RightsAll is an owner's.
	RightsAll = RightStatus | RightWatch | RightInput | RightSignal | RightOwn
)

var rightNames = []struct {
	r    Rights
	name string
}{{RightStatus, "status"}, {RightWatch, "watch"}, {RightInput, "input"}, {RightSignal, "signal"}, {RightOwn, "own"}}

// Names returns the rights' names.
func (r Rights) Names() []string {
	var ns []string
	for _, n := range rightNames {
		if r&n.r != 0 {
			ns = append(ns, n.name)
		}
	}
	return ns
}

// String returns the names joined by commas.
func (r Rights) String() string { return strings.Join(r.Names(), ",") }

// ParseRights reads rights by name: status, watch, input, signal, own,
// or all.
func ParseRights(names []string) (Rights, error) {
	var r Rights
	for _, name := range names {
		for _, w := range strings.Split(name, ",") {
			if w == "all" {
				r |= RightsAll
				continue
			}
			i := slices.IndexFunc(rightNames, func(n struct {
				r    Rights
				name string
			}) bool {
				return n.name == w
			})
			if i < 0 {
				return 0, fmt.Errorf("supervisor: right %q: want status, watch, input, signal, own or all", w)
			}
			r |= rightNames[i].r
		}
	}
	return r, nil
}

// The methods of a supervisor object (what a client connected to the
// supervisor's socket holds), with their arguments and results:
//
//	start   CommandLine -> StartResult  start a job (ParseCommandLine)
//	run     RunArgs     -> RunResult    run a program as caplin run does, from a warm template
//	list    -           -> []Status     the jobs in the table
//	get     NameArgs    -> FD           an owner object of the job
//	remove  NameArgs    -> -            remove an ended job
//
// The methods of a job object, and the right each needs:
//
//	status  -           -> Status       status (or watch)
//	wait    -           -> Exit         status (or watch): when the job has ended for good
//	logs    LogsArgs    -> FD           watch: a pipe of its output history
//	attach  AttachArgs  -> AttachResult watch (input for the writer lease)
//	signal  SignalArgs  -> -            signal
//	stop    StopArgs    -> Exit         signal
//	borrow  BorrowArgs  -> FD           any: an object with fewer rights
//	revoke  -           -> -            any: cut the objects borrowed from this one
//	rights  -           -> []string     any
//
// An attachment's control object (AttachResult.Control):
//
//	resize  Winsize     -> bool         the terminal's size, if it is the viewer's to set
//	lease   -           -> bool         take the writer lease if free (needs input)
//	release -           -> -            give it up

// StartResult is what start returns: the job, or why it did not start.
type StartResult struct {
	Name string `json:",omitempty"`
	Pid  int    `json:",omitempty"`
	// Job is an owner object of the job.
	Job rpc.FD
	// Code and Error, when Error is not empty, say why the job did not
	// start, with the exit status caplin run would give (2 for a bad
	// command line).
	Code  int    `json:",omitempty"`
	Error string `json:",omitempty"`
}

// NameArgs names a job.
type NameArgs struct{ Name string }

// LogsArgs are logs' arguments.
type LogsArgs struct {
	// Follow: after the history, what the job writes, until it is
	// removed or the reader closes the pipe.
	Follow bool
}

// AttachArgs are attach's arguments (see AttachOptions).
type AttachArgs struct {
	Size   Winsize
	Write  bool
	Replay int64
}

// AttachResult is what attach returns.
type AttachResult struct {
	// Stream is the viewer's end of its stream socket.
	Stream rpc.FD
	// Control is the attachment's control object.
	Control rpc.FD
	// Writer says whether the viewer holds the writer lease.
	Writer bool
}

// SignalArgs are signal's arguments.
type SignalArgs struct {
	Signal int
	// All: to every process of the job's sandbox, not the program alone.
	All bool
}

// StopArgs are stop's arguments.
type StopArgs struct {
	// Grace is how long after SIGTERM the job is killed; 0 the
	// supervisor's default.
	Grace time.Duration
}

// BorrowArgs are borrow's arguments.
type BorrowArgs struct {
	// Rights are the rights' names (see ParseRights); those the object
	// borrowed from does not have are not granted.
	Rights []string
}

// Service serves a Supervisor's objects over rpc.
type Service struct {
	Sup *Supervisor
	// Server is the rpc server that serves the objects the service makes.
	Server *rpc.Server
}

// NewHandler returns the Handler of a supervisor object for a client
// whose credentials are peer: one of the supervisor's own user (its
// effective uid), or a handler that refuses every call for anyone else.
func (sv *Service) NewHandler(peer *unix.Ucred) rpc.Handler {
	refuse := func(format string, a ...any) rpc.Handler {
		msg := fmt.Sprintf(format, a...)
		return rpc.HandlerFunc(func(context.Context, *rpc.Call) (any, error) {
			return nil, rpc.Errorf(rpc.CodeDenied, "%s", msg)
		})
	}
	switch {
	case peer == nil:
		return refuse("this supervisor serves uid %d only, and the caller is unknown", os.Geteuid())
	case int(peer.Uid) != os.Geteuid():
		return refuse("this supervisor serves uid %d only, and the caller is uid %d", os.Geteuid(), peer.Uid)
	}
	if err := TrustedPeer(int(peer.Pid)); err != nil {
		return refuse("%v", err)
	}
	return rpc.Methods{
		"start": rpc.Method(func(ctx context.Context, cl CommandLine) (StartResult, error) {
			cl.UID, cl.GID = int(peer.Uid), int(peer.Gid)
			return sv.start(ctx, &cl)
		}),
		"run": rpc.Method(func(ctx context.Context, a RunArgs) (RunResult, error) {
			a.UID, a.GID = int(peer.Uid), int(peer.Gid)
			return sv.run(ctx, &a)
		}),
		"list": rpc.Method(func(ctx context.Context, _ struct{}) ([]Status, error) {
			var sts []Status
			for _, j := range sv.Sup.Jobs() {
				sts = append(sts, j.Status())
			}
			return sts, nil
		}),
		"get": rpc.Method(func(ctx context.Context, a NameArgs) (rpc.FD, error) {
			j, err := sv.Sup.Job(a.Name)
			if err != nil {
				return rpc.FD{}, wireErr(err)
			}
			return sv.owner(ctx, j)
		}),
		"remove": rpc.Method(func(ctx context.Context, a NameArgs) (struct{}, error) {
			return struct{}{}, wireErr(sv.Sup.Remove(a.Name))
		}),
	}
}

// start parses and starts a command line.
func (sv *Service) start(ctx context.Context, cl *CommandLine) (StartResult, error) {
	req, err := ParseCommandLine(cl)
	if err != nil {
		var ue *UsageError
		if errors.As(err, &ue) {
			return StartResult{Code: 2, Error: ue.Msg}, nil
		}
		return StartResult{}, err
	}
	j, err := sv.Sup.Start(ctx, req)
	if err != nil {
		req.Program.Close()
		var se *StartError
		if errors.As(err, &se) {
			return StartResult{Code: se.Code, Error: se.Msg}, nil
		}
		return StartResult{}, wireErr(err)
	}
	obj, err := sv.owner(ctx, j)
	if err != nil {
		return StartResult{}, err
	}
	return StartResult{Name: j.name, Pid: j.Status().Pid, Job: obj}, nil
}

// wireErr turns the package's errors into rpc errors with their errnos.
func wireErr(err error) error {
	if err == nil {
		return nil
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		code := rpc.CodeFailed
		if errno == unix.EINVAL {
			code = rpc.CodeInvalid
		}
		return &rpc.Error{Code: code, Errno: errno, Text: err.Error()}
	}
	return err
}

// A node is one job object: the job, the rights it grants, and the
// objects borrowed from it, which revoke cuts (and theirs in turn), as
// does the object's end.
type node struct {
	job    *Job
	rights Rights
	parent *node // the object it was borrowed from; nil for an owner's
	// ctx ends when the object is revoked (or the supervisor ends): what
	// was obtained through it that runs on (a logs follower) ends too.
	ctx    context.Context
	cancel context.CancelFunc
	// cut, for a borrowed object, revokes it (rpc.Revocable).
	cut func()

	mu       sync.Mutex
	borrowed []*node
	viewers  []*Viewer
	revoked  bool
}

// newNode makes the node of an object of j with rights, borrowed from
// parent (nil for an owner's object); a borrowed one's handler is
// revocable from the start.
func (sv *Service) newNode(j *Job, rights Rights, parent *node) (*node, rpc.Handler) {
	n := &node{job: j, rights: rights, parent: parent}
	n.ctx, n.cancel = context.WithCancel(sv.Sup.ctx)
	// The caretaker (rpc.Revocable) goes outside: the server learns from
	// it that the object was revoked, and it closes what it takes care of.
	var h rpc.Handler = &nodeHandler{Handler: sv.handler(n), n: n}
	if parent != nil {
		h, n.cut = rpc.Revocable(h)
	}
	return n, h
}

// nodeHandler is a node's handler, told when its object ends.
type nodeHandler struct {
	rpc.Handler
	n *node
}

// Close is called when the object ends (its holder closed it, or it was
// revoked): what runs on through it stops, what was lent through it
// (borrowed objects, and theirs, and viewers attached through them) is
// cut, and the object it was borrowed from forgets it. Were what it lent
// left running, no revoke could reach it any more: its lender's revoke
// goes through the objects it lent, and this one is gone.
func (h *nodeHandler) Close() error {
	h.n.revokeSelf()
	if p := h.n.parent; p != nil {
		p.mu.Lock()
		p.borrowed = slices.DeleteFunc(p.borrowed, func(b *node) bool { return b == h.n })
		p.mu.Unlock()
	}
	return nil
}

// revokeBorrowed cuts n's borrowed objects and theirs, and the viewers
// attached through them.
func (n *node) revokeBorrowed() {
	n.mu.Lock()
	bs := n.borrowed
	n.borrowed = nil
	n.mu.Unlock()
	for _, b := range bs {
		b.revokeSelf()
	}
}

// revokeSelf cuts n itself: its object, its viewers, its logs followers
// and its borrowed objects.
func (n *node) revokeSelf() {
	n.mu.Lock()
	n.revoked = true
	vs := n.viewers
	n.viewers = nil
	n.mu.Unlock()
	n.cancel()
	if n.cut != nil {
		n.cut()
	}
	for _, v := range vs {
		v.Close()
	}
	n.revokeBorrowed()
}

// owner serves a new owner object of j, for the caller of the call ctx
// belongs to.
func (sv *Service) owner(ctx context.Context, j *Job) (rpc.FD, error) {
	_, h := sv.newNode(j, RightsAll, nil)
	return sv.Server.NewObject(sv.objectContext(ctx), h)
}

// objectContext is the context of an object made in the call ctx belongs
// to: it lives until its holder closes it or the supervisor ends, not
// with the call, and counts against the budgets of the caller's tree of
// objects (rpc.Server.MaxTreeFDs).
func (sv *Service) objectContext(ctx context.Context) context.Context {
	return rpc.InTree(sv.Sup.ctx, ctx)
}

// needStatus fails unless n has RightStatus or RightWatch (which
// includes it).
func (n *node) needStatus(method string) error {
	if n.rights&(RightStatus|RightWatch) == 0 {
		return rpc.Errorf(rpc.CodeDenied, "%s needs the status or watch right; this object has %s", method, n.rights)
	}
	return nil
}

// need fails unless n has r.
func (n *node) need(r Rights, method string) error {
	if n.rights&r != r {
		return rpc.Errorf(rpc.CodeDenied, "%s needs the %s right; this object has %s", method, r, n.rights)
	}
	return nil
}

// handler returns the methods of job object n.
func (sv *Service) handler(n *node) rpc.Handler {
	j := n.job
	return rpc.Methods{
		"status": rpc.Method(func(ctx context.Context, _ struct{}) (Status, error) {
			if err := n.needStatus("status"); err != nil {
				return Status{}, err
			}
			return j.Status(), nil
		}),
		"wait": rpc.Method(func(ctx context.Context, _ struct{}) (*Exit, error) {
			if err := n.needStatus("wait"); err != nil {
				return nil, err
			}
			return j.Wait(ctx)
		}),
		"logs": rpc.Method(func(ctx context.Context, a LogsArgs) (rpc.FD, error) {
			if err := n.need(RightWatch, "logs"); err != nil {
				return rpc.FD{}, err
			}
			return sv.logs(n, a.Follow)
		}),
		"attach": rpc.Method(func(ctx context.Context, a AttachArgs) (AttachResult, error) {
			if err := n.need(RightWatch, "attach"); err != nil {
				return AttachResult{}, err
			}
			if a.Write && n.rights&RightInput == 0 {
				a.Write = false // watches
			}
			return sv.attach(ctx, n, a)
		}),
		"signal": rpc.Method(func(ctx context.Context, a SignalArgs) (struct{}, error) {
			if err := n.need(RightSignal, "signal"); err != nil {
				return struct{}{}, err
			}
			sig := syscall.Signal(a.Signal)
			if a.Signal <= 0 || a.Signal > 64 {
				return struct{}{}, rpc.Errorf(rpc.CodeInvalid, "signal %d: want 1 to 64", a.Signal)
			}
			if a.All {
				return struct{}{}, wireErr(j.SignalAll(ctx, sig))
			}
			return struct{}{}, wireErr(j.Signal(sig))
		}),
		"stop": rpc.Method(func(ctx context.Context, a StopArgs) (*Exit, error) {
			if err := n.need(RightSignal, "stop"); err != nil {
				return nil, err
			}
			return j.Stop(ctx, a.Grace)
		}),
		"borrow": rpc.Method(func(ctx context.Context, a BorrowArgs) (rpc.FD, error) {
			r, err := ParseRights(a.Rights)
			if err != nil {
				return rpc.FD{}, rpc.Errorf(rpc.CodeInvalid, "%v", err)
			}
			// Revocable before it is known to n: a revoke from now on
			// cuts it, even before its holder has it.
			b, h := sv.newNode(j, r&n.rights&^RightOwn, n)
			n.mu.Lock()
			if n.revoked {
				n.mu.Unlock()
				return rpc.FD{}, rpc.ErrRevoked
			}
			n.borrowed = append(n.borrowed, b)
			n.mu.Unlock()
			fd, err := sv.Server.NewObject(sv.objectContext(ctx), h)
			if err != nil {
				h.(io.Closer).Close()
			}
			return fd, err
		}),
		"revoke": rpc.Method(func(ctx context.Context, _ struct{}) (struct{}, error) {
			n.revokeBorrowed()
			return struct{}{}, nil
		}),
		"rights": rpc.Method(func(ctx context.Context, _ struct{}) ([]string, error) {
			return n.rights.Names(), nil
		}),
	}
}

// logs returns the read end of a pipe the job's output history is
// written to, and with follow what comes after.
func (sv *Service) logs(n *node, follow bool) (rpc.FD, error) {
	j := n.job
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return rpc.FD{}, wireErr(fmt.Errorf("supervisor: logs: pipe: %w", err))
	}
	if err := unix.SetNonblock(fds[1], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return rpc.FD{}, wireErr(err)
	}
	r, w := os.NewFile(uintptr(fds[0]), "logs"), os.NewFile(uintptr(fds[1]), "logs")
	// The follower ends with the object it came through (revoked).
	ctx, cancel := context.WithCancel(n.ctx)
	go func() {
		defer cancel()
		defer w.Close()
		out := j.Output(ctx, follow)
		if follow {
			// The reader's going shows as a failed write, which only
			// comes with output; a watcher of the pipe ends the
			// follower sooner.
			go func() {
				waitHangup(ctx, w)
				cancel()
			}()
		}
		io.Copy(w, out)
	}()
	return rpc.NewFD(r), nil
}

// waitHangup returns when the pipe w's reader has gone (its write end
// polls POLLERR) or ctx ends.
func waitHangup(ctx context.Context, w *os.File) {
	sc, err := w.SyscallConn()
	if err != nil {
		return
	}
	for ctx.Err() == nil {
		if polled(sc, 0, unix.POLLERR|unix.POLLHUP) {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// polled reports whether the descriptor of sc, polled now for events,
// has any of want.
func polled(sc syscall.RawConn, events, want int16) bool {
	got := false
	sc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
		n, _ := unix.Poll(fds, 0)
		got = n > 0 && fds[0].Revents&want != 0
	})
	return got
}

// attach attaches a viewer through n and returns its stream and control
// object.
func (sv *Service) attach(ctx context.Context, n *node, a AttachArgs) (AttachResult, error) {
	n.mu.Lock()
	revoked := n.revoked
	n.mu.Unlock()
	if revoked {
		return AttachResult{}, rpc.ErrRevoked
	}
	// The control object is cut when the viewer ends (detached, or
	// revoked with the object it came through): it acts on that viewer
	// only, and only while it lasts.
	var v *Viewer
	ctl, cutCtl := rpc.Revocable(rpc.Methods{
		"resize": rpc.Method(func(ctx context.Context, ws Winsize) (bool, error) {
			ok, err := v.Resize(ws)
			return ok, wireErr(err)
		}),
		"lease": rpc.Method(func(ctx context.Context, _ struct{}) (bool, error) {
			if err := n.need(RightInput, "lease"); err != nil {
				return false, err
			}
			return v.Lease(), nil
		}),
		"release": rpc.Method(func(ctx context.Context, _ struct{}) (struct{}, error) {
			v.Release()
			return struct{}{}, nil
		}),
	})
	opts := AttachOptions(a)
	v, stream, err := n.job.attach(opts, n.rights&RightInput != 0, func() {
		cutCtl()
		// Forget the viewers that have ended, this one among them.
		n.mu.Lock()
		n.viewers = slices.DeleteFunc(n.viewers, func(x *Viewer) bool {
			select {
			case <-x.gone:
				return true
			default:
				return false
			}
		})
		n.mu.Unlock()
	})
	if err != nil {
		return AttachResult{}, wireErr(err)
	}
	n.mu.Lock()
	if n.revoked {
		n.mu.Unlock()
		v.Close()
		stream.Close()
		return AttachResult{}, rpc.ErrRevoked
	}
	n.viewers = append(n.viewers, v)
	n.mu.Unlock()
	control, err := sv.Server.NewObject(sv.objectContext(ctx), ctl)
	if err != nil {
		v.Close()
		stream.Close()
		return AttachResult{}, err
	}
	return AttachResult{Stream: rpc.NewFD(stream), Control: control, Writer: v.Writer()}, nil
}

// TrustedPeer returns nil if process pid (as this process numbers it),
// of the supervisor's own user, may use it: it is in the supervisor's
// user namespace (a sandbox of the same user, a job say, that was given
// the socket's directory or the files must not reach past its sandbox
// through them), and no more confined than the supervisor (a sandbox
// without a user namespace of its own, Landlock, which needs
// no_new_privs, or a seccomp filter the supervisor has not: its jobs
// would have what it has not). Else an error says which.
func TrustedPeer(pid int) error {
	if !sameUserNS(pid) {
		return fmt.Errorf("this supervisor serves processes of its own user namespace only, and the caller (pid %d) is in another, or gone", pid)
	}
	if moreConfined(pid) {
		return fmt.Errorf("this supervisor serves processes no more confined than itself, and the caller (pid %d) has no_new_privs or a seccomp filter it has not", pid)
	}
	return nil
}

// moreConfined reports whether process pid is confined in a way this
// process is not, as /proc says: no_new_privs (which Landlock needs of an
// unprivileged process), a seccomp mode, or more seccomp filters; or
// whether that cannot be told (the process is gone).
func moreConfined(pid int) bool {
	theirs, ok := confinementOf(strconv.Itoa(pid))
	ours, ok2 := confinementOf("self")
	if !ok || !ok2 {
		return true
	}
	for i := range theirs {
		if theirs[i] > ours[i] {
			return true
		}
	}
	return false
}

// confinementOf returns the NoNewPrivs, Seccomp and Seccomp_filters
// fields of /proc/PID/status (0 where a kernel has no such field).
func confinementOf(pid string) ([3]int, bool) {
	var c [3]int
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return c, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		key, val, found := strings.Cut(line, ":")
		if !found {
			continue
		}
		i := slices.Index([]string{"NoNewPrivs", "Seccomp", "Seccomp_filters"}, key)
		if i < 0 {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(val))
		if err != nil {
			return c, false
		}
		c[i] = n
	}
	return c, true
}

// sameUserNS reports whether process pid (as this process numbers it) is
// in this process's user namespace.
func sameUserNS(pid int) bool {
	var theirs, ours unix.Stat_t
	if pid <= 0 || unix.Stat(fmt.Sprintf("/proc/%d/ns/user", pid), &theirs) != nil || unix.Stat("/proc/self/ns/user", &ours) != nil {
		return false
	}
	return theirs.Ino == ours.Ino && theirs.Dev == ours.Dev
}
