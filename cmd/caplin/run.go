package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/caplin-dev/caplin/pidfd"
	"github.com/caplin-dev/caplin/proc"
	"github.com/caplin-dev/caplin/sandbox"
	"golang.org/x/sys/unix"
)

const runSynopsis = "caplin run [flags] [--] CMD [ARGS...]"

const runHelp = `NAME
	caplin run - run a program in a process caplin builds

SYNOPSIS
	caplin run [flags] [--] CMD [ARGS...]

DESCRIPTION
	Builds a new process from empty, gives it caplin's standard input,
	output and error as fds 0, 1 and 2 and nothing else, sets it up as the
	flags say, executes CMD in it with ARGS, waits for it, and exits with
	its status.

	A CMD without a slash is looked up in caplin's own $PATH (not one set
	with --setenv) before anything else is done; a CMD found only through
	a relative $PATH entry such as "." is refused, as Go's os/exec does.
	A CMD with a slash is executed as it is, relative to --chdir DIR if
	given. "--" ends the flags; it may be left out when CMD does not start
	with a dash.

	The program does not outlive caplin: when caplin exits or dies, even
	by SIGKILL, the program and every process it started (double-forked
	daemons too) are killed. The program runs in a pid namespace caplin
	keeps for that purpose, so it sees its own pid numbering; without
	privilege that namespace sits in a user namespace that maps caplin's
	uid and gid to themselves (see "caplin doctor"), where set-user-ID
	programs such as sudo gain no privilege. --detached does without
	both.

OPTIONS
	Flags may be written with one dash or two. Environment flags apply in
	the order given, like bwrap's.

	--chdir DIR
		Run the program in directory DIR, looked up in the new process
		(after the namespaces are made). Default: caplin's working
		directory.
	--setenv NAME VALUE
		Set environment variable NAME to VALUE. --setenv=NAME=VALUE is
		the same. Repeatable.
	--unsetenv NAME
		Remove environment variable NAME. Repeatable.
	--clearenv
		Remove every environment variable set so far: the ones caplin
		was given, and those of earlier --setenv flags. So
		"--clearenv --setenv A b" leaves exactly A=b, while
		"--setenv A b --clearenv" leaves nothing (caplin warns).
		Default: the program gets caplin's environment.
	--unshare-user
		Run the program in a new user namespace. Without --uid and
		--gid it is uid 0 and gid 0 there, which are caplin's effective
		uid and gid outside: it has every capability over the
		namespaces made with it, and none outside.
	--uid N, --gid N
		With --unshare-user: the uid (gid) the program has inside the
		new user namespace, mapped to caplin's effective uid (gid)
		outside. Default 0.
	--unshare-pid
		New pid namespace: the program is its pid 1 (init). It must
		reap the orphans of its namespace, and the kernel delivers to
		it only the signals it has handlers for. So when caplin
		forwards a signal the program neither handles nor ignores, it
		kills the program (SIGKILL), as the default action would have,
		and exits with 128 + the forwarded signal's number.
	--unshare-net
		New network namespace: only a loopback interface, down.
	--unshare-ipc
		New System V IPC and POSIX message queue namespace.
	--unshare-uts
		New hostname and domain name namespace.
	--unshare-cgroup
		New cgroup namespace: the program's cgroup is its root.
	--unshare-mount
		New mount namespace (a copy of caplin's mounts).
	--detached
		Make the program in caplin's own pid namespace, as caplin's
		child, with no user namespace around it. It is still killed when
		caplin dies (a parent-death signal), but processes it starts may
		outlive caplin. Needed where unprivileged user namespaces are
		disabled.
	--profile FILE
		Build the program's process as a sandbox from the profile FILE
		(TOML; see the sandbox package for its keys): new user, mount,
		pid, ipc, uts and network namespaces, a root made only of the
		profile's mounts, Landlock with the same grants, no
		capabilities, the default seccomp filter and no_new_privs. CMD
		is looked up in the sandbox's own $PATH. The --unshare-*,
		--uid, --gid and --detached flags do not apply with it.
	--die-with-parent
		Kill the program when caplin dies. This is always so; the flag
		is accepted for bwrap's users.

	Namespaces other than the user namespace need privilege: root, or
	--unshare-user with them (or an unprivileged caller's default,
	which runs the program in a user namespace already).

SIGNALS
	SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to caplin are forwarded to the
	program. SIGINT and SIGQUIT typed at the terminal (^C, ^\) reach the
	program directly, since it is in caplin's process group; caplin does
	not send them a second time while it is in the terminal's foreground
	process group.

EXIT STATUS
	N        the program exited with status N
	128+N    the program was killed by signal N (130 for SIGINT, 143
	         for SIGTERM)
	2        usage error
	125      caplin failed: before the program ran (it could not make
	         the process, or --chdir failed), or in waiting for it
	126      CMD was found but could not be executed (permission denied,
	         not an executable format, a directory)
	127      CMD was not found

EXAMPLES
	caplin run -- ls -l /
	caplin run --clearenv --setenv PATH /usr/bin:/bin -- env
	caplin run --unshare-user --unshare-net -- ip link
	caplin run --unshare-user --uid 1000 --gid 1000 -- id
`

// envOp is one environment flag, applied in command-line order.
type envOp struct {
	kind        byte // 'c' clear, 's' set, 'u' unset
	name, value string
}

// runConfig is a parsed caplin run command line.
type runConfig struct {
	opts     proc.Options
	chdir    string
	env      []envOp
	uid, gid int // -1 when not given
	// dieWithParent is always true: --die-with-parent=false is refused.
	dieWithParent bool
	argv          []string
	warnings      []string
	profile       string // a sandbox profile: build the process with sandbox.Build
}

// clearenvFlag, setenvFlag and unsetenvFlag record environment flags in
// order.
type (
	clearenvFlag struct{ ops *[]envOp }
	setenvFlag   struct{ ops *[]envOp }
	unsetenvFlag struct{ ops *[]envOp }
)

func (f clearenvFlag) String() string   { return "false" }
func (f clearenvFlag) IsBoolFlag() bool { return true }
func (f clearenvFlag) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	if v {
		*f.ops = append(*f.ops, envOp{kind: 'c'})
	}
	return nil
}

func (f setenvFlag) String() string { return "" }
func (f setenvFlag) Set(s string) error {
	name, value, ok := strings.Cut(s, "=")
	if !ok {
		return errors.New("want NAME VALUE or NAME=VALUE")
	}
	if err := checkEnvName(name); err != nil {
		return err
	}
	*f.ops = append(*f.ops, envOp{kind: 's', name: name, value: value})
	return nil
}

func (f unsetenvFlag) String() string { return "" }
func (f unsetenvFlag) Set(s string) error {
	if err := checkEnvName(s); err != nil {
		return err
	}
	*f.ops = append(*f.ops, envOp{kind: 'u', name: s})
	return nil
}

func checkEnvName(name string) error {
	if name == "" || strings.ContainsAny(name, "=\x00") {
		return fmt.Errorf("bad environment variable name %q", name)
	}
	return nil
}

// runFlags returns the flag set of caplin run, filling cfg.
func runFlags(cfg *runConfig) *flag.FlagSet {
	fs := newFlags("run")
	fs.StringVar(&cfg.chdir, "chdir", "", "working directory")
	fs.Var(setenvFlag{&cfg.env}, "setenv", "set NAME VALUE")
	fs.Var(unsetenvFlag{&cfg.env}, "unsetenv", "unset NAME")
	fs.Var(clearenvFlag{&cfg.env}, "clearenv", "clear the environment")
	fs.BoolVar(&cfg.opts.NewUser, "unshare-user", false, "new user namespace")
	fs.BoolVar(&cfg.opts.NewPID, "unshare-pid", false, "new pid namespace")
	fs.BoolVar(&cfg.opts.NewNet, "unshare-net", false, "new network namespace")
	fs.BoolVar(&cfg.opts.NewIPC, "unshare-ipc", false, "new IPC namespace")
	fs.BoolVar(&cfg.opts.NewUTS, "unshare-uts", false, "new UTS namespace")
	fs.BoolVar(&cfg.opts.NewCgroup, "unshare-cgroup", false, "new cgroup namespace")
	fs.BoolVar(&cfg.opts.NewMount, "unshare-mount", false, "new mount namespace")
	fs.BoolVar(&cfg.opts.Detached, "detached", false, "no pid namespace of caplin's")
	fs.BoolVar(&cfg.dieWithParent, "die-with-parent", true, "always so")
	fs.IntVar(&cfg.uid, "uid", -1, "uid in the new user namespace")
	fs.IntVar(&cfg.gid, "gid", -1, "gid in the new user namespace")
	fs.StringVar(&cfg.profile, "profile", "", "sandbox profile (TOML)")
	return fs
}

// joinSetenv rewrites each "--setenv NAME VALUE" before the end of the flags
// as "--setenv NAME=VALUE", the one-argument form the flag package can
// parse. It knows which of fs's flags take a value so that a value that
// looks like "--setenv" is left alone.
func joinSetenv(fs *flag.FlagSet, args []string) ([]string, error) {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			return append(out, args[i:]...), nil
		}
		name := strings.TrimPrefix(a[1:], "-")
		if strings.Contains(name, "=") {
			out = append(out, a)
			continue
		}
		if name == "setenv" {
			if i+2 >= len(args) {
				return nil, errors.New("flag needs two arguments: --setenv NAME VALUE")
			}
			if err := checkEnvName(args[i+1]); err != nil {
				return nil, fmt.Errorf("--setenv: %v", err)
			}
			out = append(out, a, args[i+1]+"="+args[i+2])
			i += 2
			continue
		}
		out = append(out, a)
		if f := fs.Lookup(name); f != nil && i+1 < len(args) {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !b.IsBoolFlag() {
				out = append(out, args[i+1])
				i++
			}
		}
	}
	return out, nil
}

// parseRun parses the arguments of caplin run. It returns nil and the exit
// status when the command should not go on (help, or a usage error, which
// it has reported).
func parseRun(args []string) (*runConfig, int) {
	cfg := &runConfig{}
	fs := runFlags(cfg)
	joined, err := joinSetenv(fs, args)
	if err != nil {
		usageError(fs.Name(), runSynopsis, err.Error())
		return nil, exitUsage
	}
	if code := parse(fs, joined, runHelp, runSynopsis); code >= 0 {
		return nil, code
	}
	cfg.argv = fs.Args()
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var msg string
	switch {
	case len(cfg.argv) == 0 || cfg.argv[0] == "":
		msg = "no command given"
	case set["uid"] && cfg.uid < 0, set["gid"] && cfg.gid < 0:
		msg = "--uid and --gid take an ID of 0 or more"
	case (set["uid"] || set["gid"]) && !cfg.opts.NewUser:
		msg = "--uid and --gid need --unshare-user"
	case !cfg.dieWithParent:
		msg = "--die-with-parent=false: the program always dies with caplin"
	}
	if msg != "" {
		usageError(fs.Name(), runSynopsis, msg)
		return nil, exitUsage
	}
	if cfg.uid >= 0 {
		cfg.opts.UIDMap = []proc.IDMap{{Inside: cfg.uid, Outside: os.Geteuid(), Size: 1}}
	}
	if cfg.gid >= 0 {
		cfg.opts.GIDMap = []proc.IDMap{{Inside: cfg.gid, Outside: os.Getegid(), Size: 1}}
	}
	var pending []string
	for _, op := range cfg.env {
		switch op.kind {
		case 's':
			pending = append(pending, op.name)
		case 'u':
		case 'c':
			if len(pending) > 0 {
				cfg.warnings = append(cfg.warnings, fmt.Sprintf("--clearenv discards the earlier --setenv %s (environment flags apply in order)", strings.Join(pending, ", ")))
				pending = nil
			}
		}
	}
	return cfg, -1
}

// buildEnv applies ops, in order, to base.
func buildEnv(base []string, ops []envOp) []string {
	env := append([]string(nil), base...)
	without := func(name string) []string {
		out := env[:0]
		for _, kv := range env {
			if k, _, _ := strings.Cut(kv, "="); k != name {
				out = append(out, kv)
			}
		}
		return out
	}
	for _, op := range ops {
		switch op.kind {
		case 'c':
			env = env[:0]
		case 'u':
			env = without(op.name)
		case 's':
			env = append(without(op.name), op.name+"="+op.value)
		}
	}
	return env
}

// execInPath execs name, searched for in the $PATH of env (or the usual
// one) inside the sandbox: each miss is a failed execveat, after which the
// handle is still usable.
func execInPath(ctx context.Context, h *proc.Handle, name string, argv, env []string) (*pidfd.Process, string, error) {
	dirs := "/usr/local/bin:/usr/bin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			dirs = v
		}
	}
	var first error
	for _, dir := range strings.Split(dirs, ":") {
		if dir == "" || dir[0] != '/' {
			continue // a relative entry would be looked up in the working directory
		}
		path := dir + "/" + name
		p, err := h.ExecPath(ctx, path, argv, env)
		if err == nil {
			return p, path, nil
		}
		if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) && first == nil {
			first = err
		}
	}
	if first != nil {
		return nil, name, first
	}
	return nil, name, &os.PathError{Op: "exec", Path: name, Err: unix.ENOENT}
}

// resolve finds the executable for argv0: a name without a slash through
// $PATH. It returns the exit status and a message when it cannot.
func resolve(argv0 string) (string, int, error) {
	if strings.Contains(argv0, "/") {
		return argv0, exitOK, nil
	}
	path, err := exec.LookPath(argv0)
	switch {
	case err == nil:
		return path, exitOK, nil
	case errors.Is(err, exec.ErrDot):
		return "", exitNotFound, fmt.Errorf("%s: found only as %s, through a relative $PATH entry; refusing (run it as ./%s)", argv0, path, argv0)
	}
	return "", exitNotFound, fmt.Errorf("%s: command not found in $PATH", argv0)
}

// execStatus maps an exec failure to the exit status and message for it.
func execStatus(path string, err error) (int, string) {
	// execveat's own failure is an *os.PathError; anything else (the
	// child gone, say) is caplin's.
	var pe *os.PathError
	var errno syscall.Errno
	if !errors.As(err, &pe) || !errors.As(pe.Err, &errno) {
		return exitFailure, err.Error()
	}
	if errno == unix.ENOENT {
		msg := fmt.Sprintf("%s: no such file or directory", path)
		if _, serr := os.Stat(path); serr == nil {
			msg += " (the file is there: is the interpreter on its #! line, or its dynamic loader, missing?)"
		}
		return exitNotFound, msg
	}
	return exitNoExec, fmt.Sprintf("cannot execute %s: %v", path, errno)
}

func cmdRun(args []string) int {
	cfg, code := parseRun(args)
	if cfg == nil {
		return code
	}
	for _, w := range cfg.warnings {
		fmt.Fprintf(os.Stderr, "caplin run: warning: %s\n", w)
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "caplin run: "+format+"\n", a...)
		return code
	}
	var spec *sandbox.Spec
	if cfg.profile != "" {
		var err error
		if spec, err = sandbox.LoadProfile(cfg.profile); err != nil {
			return fail(exitFailure, "%v", err)
		}
	}
	path := cfg.argv[0]
	if spec == nil {
		// Without a profile the program sees caplin's files: look it up
		// here. A sandbox's files are its own: it is looked up inside.
		var code int
		var err error
		if path, code, err = resolve(cfg.argv[0]); err != nil {
			return fail(code, "%v", err)
		}
	}
	env := buildEnv(os.Environ(), cfg.env)

	// The signals to forward: those caplin was not started ignoring (under
	// nohup, say), which the program then ignores as well.
	var fwd []os.Signal
	for _, sig := range []syscall.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT} {
		if !signal.Ignored(sig) {
			fwd = append(fwd, sig)
		}
	}
	// The program's reaper (proc's tree zygote) is the init of its pid
	// namespace, so ^C at the terminal, which reaches caplin's whole
	// process group, does not touch it.
	sigs := make(chan os.Signal, 8)
	if len(fwd) > 0 { // no signals would mean all of them
		signal.Notify(sigs, fwd...)
		defer signal.Stop(sigs)
	}
	ctx := context.Background()
	var h *proc.Handle
	var err error
	if spec != nil {
		h, err = sandbox.Build(ctx, spec)
	} else {
		h, err = proc.Fork(ctx, &cfg.opts)
	}
	if err != nil {
		hint := ""
		if errors.Is(err, unix.EPERM) && !cfg.opts.NewUser && cfg.opts.Detached {
			hint = " (new namespaces need privilege: add --unshare-user)"
		}
		return fail(exitFailure, "%v%s", err, hint)
	}
	defer h.Close()

	var b proc.Batch
	for fd, f := range []*os.File{os.Stdin, os.Stdout, os.Stderr} {
		// A closed standard fd stays closed in the program.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			b.PutFile(f, fd)
		}
	}
	if cfg.chdir != "" {
		b.Chdir(cfg.chdir)
	}
	if _, err := h.Run(ctx, &b); err != nil {
		var be *proc.BatchError
		if errors.As(err, &be) {
			err = be.Err
		}
		return fail(exitFailure, "setting up the process: %v", err)
	}

	var p *pidfd.Process
	if spec != nil && !strings.Contains(path, "/") {
		p, path, err = execInPath(ctx, h, path, cfg.argv, env)
	} else {
		p, err = h.ExecPath(ctx, path, cfg.argv, env)
	}
	if err != nil {
		code, msg := execStatus(path, err)
		return fail(code, "%s", msg)
	}
	defer p.Close()

	var escalated atomic.Int32 // a signal caplin turned into SIGKILL
	done := make(chan struct{})
	forwarded := make(chan struct{})
	go func() {
		defer close(forwarded)
		forward(p, sigs, done, cfg.opts.NewPID, &escalated)
	}()
	st, err := p.Wait(ctx)
	close(done)
	<-forwarded
	if err != nil {
		return fail(exitFailure, "waiting for %s: %v", cfg.argv[0], err)
	}
	if sig := escalated.Load(); sig != 0 && st.Signal == unix.SIGKILL {
		return 128 + int(sig)
	}
	return st.ExitCode()
}

// forward sends the signals caplin receives to the program until done is
// closed. init says the program is the init of a pid namespace, which the
// kernel shields from signals it neither handles nor ignores: those become
// SIGKILL, recorded in escalated.
func forward(p *pidfd.Process, sigs <-chan os.Signal, done <-chan struct{}, init bool, escalated *atomic.Int32) {
	for {
		var s os.Signal
		select {
		case <-done:
			return
		case s = <-sigs:
		}
		sig, ok := s.(syscall.Signal)
		if !ok {
			continue
		}
		if init && !handles(p.Pid(), sig) {
			escalated.Store(int32(sig))
			p.Signal(unix.SIGKILL)
			continue
		}
		if (sig == unix.SIGINT || sig == unix.SIGQUIT) && inForeground() {
			continue // the terminal sent it to the program too
		}
		p.Signal(sig)
	}
}

// handles reports whether process pid has a handler for sig or ignores
// it, from the SigCgt and SigIgn masks of /proc/PID/status. It says yes
// when it cannot tell.
func handles(pid int, sig syscall.Signal) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return true
	}
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if k != "SigCgt" && k != "SigIgn" {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil || mask&(1<<(uint(sig)-1)) != 0 {
			return true
		}
		found++
	}
	return found < 2
}

// inForeground reports whether caplin's process group is the foreground
// process group of the terminal on its standard input, output or error,
// so that the keyboard's signals reach every process in it.
func inForeground() bool {
	for fd := 0; fd <= 2; fd++ {
		if pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP); err == nil {
			return pgrp == unix.Getpgrp()
		}
	}
	return false
}
