// Package launcher serves the Launcher, a factory in KeyKOS's sense: an
// rpc object that holds a sandbox profile and builds confined processes
// (its products) from it for whoever holds the object, returning each
// product's pidfd and standard streams. The holder can then ask the
// Launcher for a confinement report of a product it built: what the
// kernel shows the process holds and is — descriptors, namespaces, ID
// maps, capabilities, no_new_privs, seccomp, cgroup — the Landlock rules
// the Launcher applied (which the kernel does not show), and whether any
// of it conveys authority beyond the profile (sandbox.Report.Check).
//
// The methods, with their argument and result types:
//
//	launch  LaunchArgs -> LaunchResult   build and start a product
//	report  uint64     -> ReportResult   the confinement report of product ID
//	wait    uint64     -> WaitResult     wait for product ID to exit
//
// A product is the object's: report and wait know only the products of
// the object they are called on (another ID is rpc.CodeInvalid), and when
// the object ends — its last holder closes it, or the server shuts down —
// the products still running are killed, with everything in their
// sandboxes. A product's processes live as long as its program: when the
// program exits, what it left running in its sandbox is killed.
//
// Like rpc/directory and rpc/connector, the Launcher is a package of its
// own above rpc: package rpc, the protocol, links no sandbox, proc or dir,
// so a program that only calls objects does not link them.
package launcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/caplin-dev/caplin/pidfd"
	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/sandbox"
	"github.com/fxamacker/cbor/v2"
	"golang.org/x/sys/unix"
)

// LaunchArgs are the arguments of a Launcher's launch.
type LaunchArgs struct {
	// Args are the program and its arguments: Args[0] is looked up in the
	// PATH of the profile's environment inside the sandbox (or is a path
	// there), and is the name the program sees. With Options.Program the
	// program is fixed, and Args are arguments added after Program's.
	Args []string
	// Stdin, Stdout and Stderr, if given, are the product's standard
	// input, output and error. Where one is not given the Launcher makes
	// a pipe and returns the caller's end in LaunchResult.
	Stdin, Stdout, Stderr rpc.FD
}

// LaunchResult is what a Launcher's launch returns.
type LaunchResult struct {
	// ID names the product in report and wait.
	ID uint64
	// Process is a pidfd of the product's program: its holder can signal
	// it and poll it for its exit (see package pidfd for who can read the
	// exit status; wait says it to every holder of the object).
	Process rpc.FD
	// Stdin, Stdout and Stderr are the caller's ends of the pipes the
	// Launcher made: the write end for Stdin, the read ends for the
	// others. Empty where the caller gave its own.
	Stdin, Stdout, Stderr rpc.FD
}

// ReportResult is what a Launcher's report returns.
type ReportResult struct {
	ID uint64
	// Report is what the kernel shows of the product's program, with
	// Report.Landlock from the Launcher's own records.
	Report *sandbox.Report
	// Findings are what in it conveys authority beyond the profile: none
	// for a product confined as its profile says.
	Findings []sandbox.Finding
	// FDsOmitted and FindingsOmitted count what was left out to keep
	// the reply within a message (at most 128 descriptors and 64
	// findings, fewer if they are long, the findings kept first;
	// targets and texts are cut to 256 bytes, at a character's start).
	FDsOmitted, FindingsOmitted int `cbor:",omitempty" json:",omitempty"`
}

// WaitResult is how a product's program ended.
type WaitResult struct {
	ID uint64
	// Code is its exit status, or -1 if a signal killed it.
	Code int
	// Signal is the signal that killed it, or 0.
	Signal int
}

// Options adjust a Launcher. The zero value is the defaults.
type Options struct {
	// Program, if not empty, is the program every product runs (Program[0],
	// looked up as LaunchArgs.Args[0] is) and its first arguments; the
	// caller's Args are appended. Empty: the caller names the program.
	Program []string
	// MaxRunning bounds the products one object has running at once;
	// launch beyond it fails with rpc.CodeDenied and EAGAIN. 0 means 16.
	MaxRunning int
	// Logger receives a line per product launched and ended (debug
	// level), and is given to the sandboxes it builds
	// (sandbox.WithLogger); nil means nothing is logged (the package
	// never logs to slog.Default).
	Logger *slog.Logger
}

// Limits on what one object keeps and one reply carries.
const (
	maxExited   = 256 // products that have exited, kept for wait and report
	maxFDs      = 128
	maxFindings = 64
	maxText     = 256
)

// New returns a Handler that serves a Launcher object building products
// from a copy of spec (Spec.Clone), so the caller may change spec once New
// returns (call New for each object: each has its own products).
// spec.Files are given to every product, and must leave fds 0, 1 and 2 to
// the Launcher.
func New(spec *sandbox.Spec, opts Options) (rpc.Handler, error) {
	if spec == nil {
		return nil, errors.New("launcher: no spec")
	}
	for n := range spec.Files {
		if n <= 2 {
			return nil, fmt.Errorf("launcher: the spec grants fd %d: fds 0, 1 and 2 are each launch's standard streams", n)
		}
	}
	if len(opts.Program) > 0 && opts.Program[0] == "" {
		return nil, errors.New("launcher: Options.Program names no program")
	}
	if opts.MaxRunning < 0 {
		return nil, fmt.Errorf("launcher: MaxRunning %d", opts.MaxRunning)
	}
	if opts.MaxRunning == 0 {
		opts.MaxRunning = 16
	}
	log := opts.Logger
	if log == nil {
		log = discard
	}
	return &launcher{spec: spec.Clone(), opts: opts, log: log, products: map[uint64]*product{}}, nil
}

// discard is the logger of a Launcher given none.
var discard = slog.New(slog.DiscardHandler)

type launcher struct {
	spec *sandbox.Spec
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	nextID   uint64
	products map[uint64]*product
	running  int
	exited   []uint64 // in the order they exited
	closed   bool
}

// A product is a process the launcher built.
type product struct {
	id     uint64
	p      *pidfd.Process
	expect *sandbox.Expectation
	done   chan struct{} // closed once the program has exited and its sandbox is gone
	state  *pidfd.State  // how it ended, when done; nil if that could not be learnt
}

func (l *launcher) ServeCall(ctx context.Context, call *rpc.Call) (any, error) {
	switch call.Method {
	case "launch":
		var a LaunchArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		return l.launch(ctx, &a)
	case "report":
		var id uint64
		if err := call.Args(&id); err != nil {
			return nil, err
		}
		return l.report(id)
	case "wait":
		var id uint64
		if err := call.Args(&id); err != nil {
			return nil, err
		}
		return l.wait(ctx, id)
	}
	return nil, rpc.Errorf(rpc.CodeUnknownMethod, "unknown method %q", call.Method)
}

// launch builds and starts a product. It closes the descriptors in a.
func (l *launcher) launch(ctx context.Context, a *LaunchArgs) (_ *LaunchResult, err error) {
	given := [3]*os.File{a.Stdin.File, a.Stdout.File, a.Stderr.File}
	defer closeAll(given[:])
	argv := append(slices.Clone(l.opts.Program), a.Args...)
	if len(argv) == 0 || argv[0] == "" {
		return nil, rpc.Errorf(rpc.CodeInvalid, "no program: Args is empty")
	}
	l.mu.Lock()
	switch {
	case l.closed:
		l.mu.Unlock()
		return nil, &rpc.Error{Code: rpc.CodeClosed, Text: "the launcher is closed"}
	case l.running >= l.opts.MaxRunning:
		l.mu.Unlock()
		return nil, &rpc.Error{Code: rpc.CodeDenied, Errno: syscall.EAGAIN, Text: fmt.Sprintf("%d processes running, the most this object may have", l.running)}
	}
	l.running++
	l.nextID++
	id := l.nextID
	l.mu.Unlock()
	defer func() {
		if err != nil {
			l.mu.Lock()
			l.running--
			l.mu.Unlock()
		}
	}()

	// The product's standard streams: the caller's, or pipes.
	var theirs, ours [3]*os.File
	defer func() {
		closeAll(theirs[:])
		if err != nil {
			closeAll(ours[:])
		}
	}()
	for i, f := range given {
		if f != nil {
			theirs[i], given[i] = f, nil
			continue
		}
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return nil, &os.SyscallError{Syscall: "pipe2", Err: err}
		}
		r, w := os.NewFile(uintptr(p[0]), "launch-pipe-r"), os.NewFile(uintptr(p[1]), "launch-pipe-w")
		if i == 0 {
			theirs[i], ours[i] = r, w
		} else {
			theirs[i], ours[i] = w, r
		}
	}
	spec := *l.spec
	spec.Files = make(map[int]*os.File, len(l.spec.Files)+3)
	for n, f := range l.spec.Files {
		spec.Files[n] = f
	}
	for i, f := range theirs {
		spec.Files[i] = f
	}
	expect, err := sandbox.Expect(&spec)
	if err != nil {
		return nil, err
	}
	sb, err := sandbox.Build(ctx, &spec, sandbox.WithLogger(l.log))
	if err != nil {
		return nil, err
	}
	closeAll(theirs[:]) // the sandbox has its own now
	p, err := sb.Exec(ctx, argv[0], argv)
	if err != nil {
		sb.Close()
		return nil, err // "exec PROGRAM: ..."
	}
	pf, err := p.File()
	if err != nil {
		p.Close()
		sb.Close()
		return nil, err
	}
	pr := &product{id: id, p: p, expect: expect, done: make(chan struct{})}
	l.mu.Lock()
	l.products[id] = pr
	l.mu.Unlock()
	l.log.Debug("launcher: launched", "id", id, "pid", p.Pid(), "program", argv[0])
	go l.reap(pr, sb)
	return &LaunchResult{ID: id, Process: rpc.FD{File: pf},
		Stdin: rpc.FD{File: ours[0]}, Stdout: rpc.FD{File: ours[1]}, Stderr: rpc.FD{File: ours[2]}}, nil
}

// reap waits for pr's program to exit, then takes down its sandbox and
// records how it ended.
func (l *launcher) reap(pr *product, sb *sandbox.Sandbox) {
	st, err := pr.p.Wait(context.Background())
	if err != nil {
		l.log.Debug("launcher: no exit status", "id", pr.id, "err", err)
	}
	sb.Close() // kills what the program left in it
	pr.p.Close()
	l.mu.Lock()
	pr.state = st
	l.running--
	l.exited = append(l.exited, pr.id)
	if len(l.exited) > maxExited {
		delete(l.products, l.exited[0])
		l.exited = l.exited[1:]
	}
	l.mu.Unlock()
	close(pr.done)
	if st != nil {
		l.log.Debug("launcher: ended", "id", pr.id, "status", st.String())
	}
}

// product returns product id of this object.
func (l *launcher) product(method string, id uint64) (*product, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pr := l.products[id]
	if pr == nil {
		return nil, rpc.Errorf(rpc.CodeInvalid, "%s %d: not a process this launcher object built", method, id)
	}
	return pr, nil
}

// exitedError is the error for a product whose program has exited.
func exitedError(method string, pr *product) error {
	return &rpc.Error{Code: rpc.CodeFailed, Errno: syscall.ESRCH, Text: fmt.Sprintf("%s %d: the process has exited", method, pr.id)}
}

func (l *launcher) report(id uint64) (*ReportResult, error) {
	pr, err := l.product("report", id)
	if err != nil {
		return nil, err
	}
	select {
	case <-pr.done:
		return nil, exitedError("report", pr)
	default:
	}
	r, err := sandbox.Inspect(pr.p)
	if err != nil {
		if errors.Is(err, os.ErrProcessDone) || pr.p.Exited() {
			return nil, exitedError("report", pr)
		}
		return nil, fmt.Errorf("report %d: %w", id, err)
	}
	r.Landlock = pr.expect.Landlock
	// An empty list rather than none: "no findings" is the answer.
	res := &ReportResult{ID: id, Report: r, Findings: append([]sandbox.Finding{}, r.Check(pr.expect)...)}
	if err := trim(res); err != nil {
		return nil, err
	}
	return res, nil
}

// replyBudget is the most a report's encoding may take: a message less
// room for the reply's header.
const replyBudget = rpc.DefaultMaxMessage - 1<<10

// trim keeps res within a message, whatever the product holds: at most
// maxFDs descriptors and maxFindings findings, strings cut to maxText
// bytes, and then, the findings first, as many of each as the message
// has room for. What it leaves out it counts in FDsOmitted and
// FindingsOmitted. It fails if the rest of the report alone is too large.
func trim(res *ReportResult) error {
	r := res.Report
	for i := range r.FDs {
		cut(&r.FDs[i].Target)
		if s := r.FDs[i].Socket; s != nil {
			cut(&s.Local)
			cut(&s.Peer)
		}
	}
	for i := range res.Findings {
		cut(&res.Findings[i].Text)
	}
	fds, findings := r.FDs, res.Findings
	r.FDs, res.Findings = nil, []sandbox.Finding{}
	// The two counts, should they be set, and the arrays' heads as
	// long as they can be.
	used := encodedSize(res) + len("FDsOmitted") + len("FindingsOmitted") + 4*9
	keep := func(n, most int, size func(int) int) int {
		k := 0
		for ; k < n && k < most; k++ {
			s := size(k)
			if used+s > replyBudget {
				break
			}
			used += s
		}
		return k
	}
	nf := keep(len(findings), maxFindings, func(i int) int { return encodedSize(findings[i]) })
	nd := keep(len(fds), maxFDs, func(i int) int { return encodedSize(fds[i]) })
	res.Findings, res.FindingsOmitted = findings[:nf], len(findings)-nf
	r.FDs, res.FDsOmitted = fds[:nd], len(fds)-nd
	if n := encodedSize(res); n > replyBudget {
		return rpc.Errorf(rpc.CodeTooBig, "report %d: %d bytes without its descriptors and findings, more than a message holds", res.ID, n)
	}
	return nil
}

// cut shortens *s to at most maxText bytes and a "…", cutting before a
// rune rather than through one: a valid UTF-8 string stays valid. (Bytes
// that are not UTF-8 are kept as they are; the wire carries them.)
func cut(s *string) {
	if len(*s) <= maxText {
		return
	}
	i := maxText
	for j := 0; j < utf8.UTFMax-1 && i > 0 && !utf8.RuneStart((*s)[i]); j++ {
		i--
	}
	*s = (*s)[:i] + "…"
}

// encodedSize is the length of v's encoding (a little more than the
// real one if it cannot be encoded).
func encodedSize(v any) int {
	b, err := cbor.Marshal(v)
	if err != nil {
		return replyBudget + 1
	}
	return len(b)
}

func (l *launcher) wait(ctx context.Context, id uint64) (*WaitResult, error) {
	pr, err := l.product("wait", id)
	if err != nil {
		return nil, err
	}
	select {
	case <-pr.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if pr.state == nil {
		return nil, fmt.Errorf("wait %d: the process exited; the kernel did not say how", id)
	}
	return &WaitResult{ID: id, Code: pr.state.Code, Signal: int(pr.state.Signal)}, nil
}

// Close kills the products still running when the object ends, and waits
// (up to 5 seconds) for them to go.
func (l *launcher) Close() error {
	l.mu.Lock()
	l.closed = true
	var live []*product
	for _, pr := range l.products {
		select {
		case <-pr.done:
		default:
			live = append(live, pr)
		}
	}
	l.mu.Unlock()
	for _, pr := range live {
		pr.p.Kill()
	}
	timeout := time.After(5 * time.Second)
	for _, pr := range live {
		select {
		case <-pr.done:
		case <-timeout:
			l.log.Warn("launcher: products still going 5s after SIGKILL", "id", pr.id)
			return nil
		}
	}
	return nil
}

func closeAll(fs []*os.File) {
	for i, f := range fs {
		if f != nil {
			f.Close()
			fs[i] = nil
		}
	}
}

// A Client is a typed client for a Launcher object.
type Client struct {
	// Client is the object. Closing it kills the products it built.
	*rpc.Client
}

// A Product is a process a Launcher built, as its client holds it.
type Product struct {
	// ID names it in Report and Wait.
	ID uint64
	// Process is its program. Closing it kills it (pidfd.Process is
	// kill-on-close); Release lets go without. Its exit status is for
	// Client.Wait to tell (the caller is not the program's parent).
	Process *pidfd.Process
	// Stdin, Stdout and Stderr are the caller's ends of the pipes the
	// Launcher made, nil where the caller gave its own. The caller closes
	// them.
	Stdin, Stdout, Stderr *os.File
}

// Launch asks the Launcher to build and start a product running args (see
// LaunchArgs), with the given standard streams where not nil (they stay
// the caller's to close) and pipes elsewhere.
func (c Client) Launch(ctx context.Context, args []string, stdin, stdout, stderr *os.File) (*Product, error) {
	var res LaunchResult
	if err := c.Call(ctx, "launch", LaunchArgs{Args: args, Stdin: rpc.NewFD(stdin), Stdout: rpc.NewFD(stdout), Stderr: rpc.NewFD(stderr)}, &res); err != nil {
		return nil, err
	}
	pr := &Product{ID: res.ID, Stdin: res.Stdin.File, Stdout: res.Stdout.File, Stderr: res.Stderr.File}
	fail := func(err error) (*Product, error) {
		res.Process.Close()
		closeAll([]*os.File{pr.Stdin, pr.Stdout, pr.Stderr})
		return nil, err
	}
	if res.Process.File == nil {
		return fail(rpc.Errorf(rpc.CodeBadMessage, "launch: the reply carried no pidfd"))
	}
	p, err := pidfd.FromFile(res.Process.File)
	if err != nil {
		return fail(fmt.Errorf("launch: %w", err))
	}
	pr.Process = p
	return pr, nil
}

// Report returns the confinement report of product id.
func (c Client) Report(ctx context.Context, id uint64) (*ReportResult, error) {
	var res ReportResult
	if err := c.Call(ctx, "report", id, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Wait waits for product id's program to exit and returns how it ended.
func (c Client) Wait(ctx context.Context, id uint64) (*WaitResult, error) {
	var res WaitResult
	if err := c.Call(ctx, "wait", id, &res); err != nil {
		return nil, err
	}
	return &res, nil
}
