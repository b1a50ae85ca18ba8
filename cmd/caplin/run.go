package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/caplin-dev/caplin/pidfd"
	"github.com/caplin-dev/caplin/probe"
	"github.com/caplin-dev/caplin/proc"
	"github.com/caplin-dev/caplin/sandbox"
	"github.com/caplin-dev/caplin/sandbox/bwrap"
	"golang.org/x/sys/unix"
)

const runSynopsis = "caplin run [OPTIONS] [--] CMD [ARGS...]"

const runHelp = `NAME
	caplin run - run a program in a sandbox that reaches only what it is given

SYNOPSIS
	caplin run [OPTIONS] [--] CMD [ARGS...]

DESCRIPTION
	Builds a new process from empty, gives it what the options grant and
	nothing else, executes CMD in it with ARGS, waits for it, and exits
	with its status.

	By default the program gets: an empty, read-only root file system;
	caplin's standard input, output and error as fds 0, 1 and 2, and no
	other fd; no network (a network namespace with no interface up); new
	user, mount, pid, IPC, UTS and cgroup namespaces, in which it runs as
	caplin's uid and gid, with no capabilities; an empty environment; a
	new session; Landlock with the same file grants; a seccomp filter
	that refuses what sandboxes must (TIOCSTI, keyctl, bpf, io_uring,
	ptrace, mount, new user namespaces, ...); and no_new_privs. An init
	of caplin's is pid 1 of its pid namespace and reaps orphans; the
	program is pid 2. It cannot outlive caplin: when caplin exits or
	dies, even by SIGKILL, everything in the sandbox is killed.

	Everything else is granted with options, which speak bubblewrap's
	language: file-system options apply in the order given, so a later
	one can cover, hide or make read-only what an earlier one granted.
	"--system" grants what most programs need to run.

	CMD is looked up inside the sandbox, in the PATH of the program's
	environment (default /usr/local/bin:/usr/bin:/bin). "--" ends the
	options; it may be left out when CMD does not start with a dash.

FILE SYSTEM (applied in order)
	--system
		Read-only /usr, /bin, /sbin, /lib* and a few files of /etc
		(the dynamic linker's cache, passwd, group, nsswitch.conf,
		localtime, CA certificates), /proc, a minimal /dev, and a tmpfs
		/tmp; PATH=/usr/local/bin:/usr/bin:/bin unless set.
	--ro-bind SRC DEST, --bind SRC DEST, --dev-bind SRC DEST
		Bind the host path SRC at DEST: read-only; writable; writable
		with device nodes usable. Sub-mounts of SRC come along.
	--ro-bind-try, --bind-try, --dev-bind-try SRC DEST
		The same, skipped when SRC does not exist.
	--ro-bind-fd FD DEST, --bind-fd FD DEST
		Bind what caplin's inherited fd FD refers to (a directory or
		file, O_PATH will do) at DEST: read-only; writable. The root of
		an export (caplin call S export PATH) is moved in as it is, its
		read-only included, so it serves one sandbox; any other fd is
		bound by its path, which must still lead to the same file.
	--tmpfs DEST
		An empty tmpfs (mode from --perms, default 0755; size from
		--size).
	--proc DEST
		A proc file system of the sandbox's pid namespace.
	--dev DEST
		A minimal /dev: null, zero, full, random, urandom, tty, shm.
	--mqueue DEST
		A POSIX message queue file system.
	--dir DEST
		A directory (mode from --perms, default 0755).
	--symlink TARGET DEST
		A symbolic link at DEST pointing to TARGET.
	--file FD DEST, --bind-data FD DEST, --ro-bind-data FD DEST
		A file holding what caplin reads from its fd FD: a plain file,
		a writable bind, a read-only bind (mode from --perms).
	--remount-ro DEST
		Make the mount at DEST (and those beneath it) read-only.
	--chmod OCTAL DEST
		Set the mode of DEST.
	--perms OCTAL, --size BYTES
		The mode and size (with K, M or G) of the next operation.

FDS
	--fd N=SPEC
		Give the program fd N: SPEC is PATH (opened read-only),
		rw:PATH (read-write), w:PATH (created or truncated, like >),
		a:PATH (appended, like >>), or inherit:M (caplin's fd M). N may
		be 0, 1 or 2 to replace caplin's standard fd. Repeatable.

NETWORK
	--net none|loopback|host
		none (default): no interface up. loopback: only lo, up.
		host: caplin's network (and the host's abstract sockets).
	--share-net
		Same as --net host.

PROCESS
	--chdir DIR
		The working directory inside. Default: caplin's own, if the
		grants make it visible at the same place, else /.
	--setenv NAME VALUE, --unsetenv NAME, --clearenv
		Change the environment, in order. --setenv=NAME=VALUE works
		too.
	--keep-env
		Start from caplin's environment instead of an empty one.
	--uid N, --gid N
		The IDs inside, mapped to caplin's. Default: caplin's own.
	--hostname NAME
		The hostname inside. Default "caplin".
	--argv0 NAME
		The program's argv[0]. Default CMD.
	--as-pid-1
		Make the program pid 1 of its namespace, with no init of
		caplin's. A pid 1 gets only the signals it handles: caplin
		kills it (SIGKILL) for a forwarded signal it does not handle,
		and exits with 128 + that signal.
	--cap-add CAP, --cap-drop CAP
		Keep capability CAP (e.g. CAP_NET_ADMIN, or ALL) inside the
		sandbox's user namespace; drop it again. Default: none.
	--allow-userns
		Let the program make user namespaces of its own.
	--seccomp FD, --add-seccomp-fd FD
		Also install the classic-BPF seccomp program read from FD.
	--profile FILE
		Start from the sandbox profile FILE (TOML; see "go doc
		github.com/caplin-dev/caplin/sandbox ParseProfile"). Options
		given on the command line apply after it: mounts are added
		after the profile's, the rest overrides.
	--best-effort
		Where the kernel cannot enforce part of the sandbox (no
		Landlock), drop it, saying what was dropped, instead of
		refusing (exit 122).
	--landlock-only
		Confine without namespaces, for kernels that do not let
		unprivileged users make user namespaces: file grants become
		Landlock rules on the host's own paths (binds must be at their
		source's path; --tmpfs, --proc, --symlink and the other options
		that make something are refused), the network is cut by seccomp
		(Unix sockets only) and Landlock, signals and abstract sockets
		by Landlock's scopes (Linux 6.12). The program still sees the
		host's processes, hostname and IPC, and background processes it
		starts can outlive caplin. What cannot be enforced is refused
		(exit 122) unless --best-effort.

LIMITS (for the sandbox's processes together)
	--max-pids N
		At most N processes and threads at once.
	--max-memory SIZE
		At most SIZE bytes of memory (with K, M or G); past it the
		kernel kills the largest process.
	--max-cpu N
		At most N CPUs' worth of time (0.5: half of one CPU).
	--max-files N
		At most N open files per process.
	Limits use a cgroup where one is delegated to caplin (v2, or v1 as
	root), rlimits otherwise (--max-pids: RLIMIT_NPROC, exact on Linux
	5.14 and later in the sandbox's user namespace). A limit that cannot
	be enforced is refused (exit 122) unless --best-effort, which says
	how it was weakened or that it was dropped.

STATUS FDS (bubblewrap's formats)
	--info-fd FD
		Write {"child-pid": N, "<ns>-namespace": INODE, ...} to FD once
		the sandbox is made.
	--json-status-fd FD
		Write the same on one line, then {"exit-code": N} at the end.
	--sync-fd FD
		Keep FD open while the sandbox runs.
	--block-fd FD
		Wait until FD has data or is at end of file before running CMD.
	--args FD
		Read more options, NUL-separated, from FD, in place.

COMPATIBILITY
	Accepted for bubblewrap's users, with nothing to do since caplin
	always does it: --unshare-all, --unshare-user, --unshare-user-try,
	--unshare-ipc, --unshare-pid, --unshare-net, --unshare-uts,
	--unshare-cgroup, --unshare-cgroup-try, --new-session,
	--die-with-parent, --disable-userns.
	"caplin bwrap" (or caplin invoked through a link named bwrap) takes
	bubblewrap's exact command line, with bubblewrap's defaults.

SIGNALS
	SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to caplin (^C and ^\ at the
	terminal included) are forwarded to the program.

EXIT STATUS
	N        the program exited with status N
	128+N    the program was killed by signal N
	2        usage error
	122      the kernel cannot enforce what was asked (without
	         --best-effort): one line says what
	125      caplin failed before the program ran: a grant failed (the
	         message names it), or the sandbox could not be made
	126      CMD was found but could not be executed
	127      CMD was not found in the sandbox

EXAMPLES
	caplin run --system -- sh -c 'ls /'
	caplin run --system --net loopback -- python3 -m http.server
	caplin run --system --bind "$PWD" /work --chdir /work -- make
	caplin run --system --fd 3=secret.txt -- sh -c 'cat <&3'
	caplin run --ro-bind /usr /usr --symlink usr/bin /bin \
		--symlink usr/lib /lib --symlink usr/lib64 /lib64 -- true
`

// exitUnenforceable: the kernel cannot enforce what was asked.
const exitUnenforceable = 122

// cmdRun runs caplin run.
func cmdRun(args []string) int { return runSandbox(args, runMode) }

// cmdBwrap runs caplin bwrap (caplin through a link named bwrap too).
func cmdBwrap(args []string) int { return runSandbox(args, bwrapMode) }

// mode is what caplin run and caplin bwrap do differently: the dialect of
// their command line, the name their messages start with, the exit status
// of caplin's own failures, and how they report the failures whose words
// or statuses differ. The library (package bwrap) decides what the sandbox
// gets; a mode only speaks.
type mode struct {
	dialect bwrap.Dialect
	name    string
	failure int
	// help prints what --help or --version asks for.
	help func(h *bwrap.Help) int
	// usage reports a bad command line.
	usage func(m mode, msg string) int
	// buildFailed reports that the sandbox could not be made.
	buildFailed func(ctx context.Context, m mode, err error, spec *sandbox.Spec) int
	// execFailed reports that the program could not be executed.
	execFailed func(m mode, path string, err error, spec *sandbox.Spec) int
}

// runMode speaks as caplin run: a usage error is status 2 with the
// synopsis, an unenforceable sandbox 122, caplin's other failures 125, and
// the messages hint at the option that would help.
var runMode = mode{
	dialect: bwrap.CaplinRun, name: "caplin run", failure: exitFailure,
	help: func(h *bwrap.Help) int {
		if h.Version {
			return cmdVersion(nil)
		}
		fmt.Print(runHelp)
		return exitOK
	},
	usage: func(m mode, msg string) int {
		usageError(m.name, runSynopsis, msg)
		return exitUsage
	},
	buildFailed: func(ctx context.Context, m mode, err error, spec *sandbox.Spec) int {
		if errors.Is(err, sandbox.ErrUnenforceable) {
			return m.fail(exitUnenforceable, "%v (--best-effort drops what cannot be enforced)", err)
		}
		if detail, missing := userNSMissing(ctx, err, spec); missing {
			return m.fail(m.failure, "%v: no user namespaces here: %s (--landlock-only confines without them)", err, detail)
		}
		return m.fail(m.failure, "%v", err)
	},
	execFailed: func(m mode, path string, err error, spec *sandbox.Spec) int {
		code, msg := execStatus(path, err)
		if code == exitNotFound && len(spec.Mounts) == 0 {
			msg += " (the sandbox has only what the options grant, and they grant no files: --system grants the usual programs)"
		}
		return m.fail(code, "%s", msg)
	},
}

// bwrapMode speaks as bubblewrap does: every failure of its own is status
// 1, with bubblewrap's words.
var bwrapMode = mode{
	dialect: bwrap.Bubblewrap, name: "bwrap", failure: 1,
	help: func(h *bwrap.Help) int {
		if h.Version {
			fmt.Println("bubblewrap 0.8.0 (caplin " + caplinVersion() + ")")
		} else {
			fmt.Print(bwrapUsage(os.Args[0]), "\n", bwrapHelp)
		}
		return exitOK
	},
	usage: func(m mode, msg string) int { return m.fail(m.failure, "%s", msg) },
	buildFailed: func(ctx context.Context, m mode, err error, spec *sandbox.Spec) int {
		if detail, missing := userNSMissing(ctx, err, spec); missing {
			return m.fail(m.failure, "%v: no user namespaces here: %s", err, detail)
		}
		return m.fail(m.failure, "%v", err)
	},
	execFailed: func(m mode, path string, err error, spec *sandbox.Spec) int {
		_, msg := execStatus(path, err)
		return m.fail(m.failure, "execvp %s: %s", path, msg)
	},
}

// fail prints the mode's name and the message, and returns code.
func (m mode) fail(code int, format string, a ...any) int {
	fmt.Fprintf(os.Stderr, "%s: %s\n", m.name, fmt.Sprintf(format, a...))
	return code
}

// runSandbox carries out a command line of mode m: it makes the sandbox,
// runs the program in it, waits for it, and returns the exit status.
func runSandbox(args []string, m mode) int {
	cmd, spec, code := m.parse(args)
	if cmd == nil {
		return code
	}
	defer cmd.Close()
	ctx := context.Background()
	if spec.Direct {
		go proc.Prepare(ctx, &proc.Options{From: proc.Direct}) // meanwhile
	}
	sigs := notifyForwarded()
	defer signal.Stop(sigs)

	sb, err := sandbox.Build(ctx, spec, sandbox.WithLogger(slog.Default()))
	if err != nil {
		return m.buildFailed(ctx, m, err, spec)
	}
	// On the way out the sandbox is closed: its init is killed and
	// reaped (main then ends the zygote a sandbox without an init of
	// caplin's was forked from), so that caplin leaves no child of its
	// own for init to reap.
	defer sb.Close()
	reportStarted(cmd, sb, spec)
	if cmd.Block != nil {
		var b [1]byte
		cmd.Block.Read(b[:])
		cmd.Block.Close()
	}
	p, err := sb.Exec(ctx, cmd.Path, cmd.Argv)
	if err != nil {
		return m.execFailed(m, cmd.Path, err, spec)
	}
	code, err = wait(ctx, p, sigs, spec)
	if err != nil {
		return m.fail(m.failure, "waiting for %s: %v", cmd.Path, err)
	}
	if cmd.JSONStatus != nil {
		bwrap.WriteExit(cmd.JSONStatus, code)
		cmd.JSONStatus.Close()
	}
	if cmd.Sync != nil {
		cmd.Sync.Close()
	}
	return code
}

// parse reads the command line and the spec of its sandbox. On failure it
// reports it and returns a nil command and the exit status.
func (m mode) parse(args []string) (*bwrap.Command, *sandbox.Spec, int) {
	cmd, err := bwrap.Parse(args, m.dialect, nil)
	if err != nil {
		return nil, nil, m.parseFailed(err)
	}
	for _, w := range cmd.Warnings {
		fmt.Fprintf(os.Stderr, "%s: warning: %s\n", m.name, w)
	}
	spec, err := cmd.Spec()
	if err != nil {
		cmd.Close()
		return nil, nil, m.parseFailed(err)
	}
	// A command's heap is small: forking from it directly saves making
	// a zygote. But then only the parent-death signal of the sandbox's
	// pid 1 ties the sandbox to caplin's life, so pid 1 must be caplin's
	// init: a program that is pid 1 itself (or shares caplin's pid
	// namespace) could clear its own signal and outlive a SIGKILLed
	// caplin. Those get the zygote, whose death ends its pid namespace
	// and every one nested in it.
	spec.Direct = !spec.AsPID1 && !spec.SharePID
	return cmd, spec, 0
}

// parseFailed reports an error of bwrap.Parse or Command.Spec.
func (m mode) parseFailed(err error) int {
	var help *bwrap.Help
	var e *bwrap.Error
	switch {
	case errors.As(err, &help):
		return m.help(help)
	case errors.As(err, &e) && e.Usage:
		return m.usage(m, e.Error())
	}
	return m.fail(m.failure, "%v", err)
}

// notifyForwarded returns a channel of the signals to forward to the
// program: those caplin was not started ignoring (under nohup, say).
func notifyForwarded() chan os.Signal {
	var fwd []os.Signal
	for _, sig := range []syscall.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT} {
		if !signal.Ignored(sig) {
			fwd = append(fwd, sig)
		}
	}
	sigs := make(chan os.Signal, 8)
	if len(fwd) > 0 { // no signals would mean all of them
		signal.Notify(sigs, fwd...)
	}
	return sigs
}

// userNSMissing reports whether Build failed with err because this
// machine lets caplin make no user namespace, and the probe's word on
// why.
func userNSMissing(ctx context.Context, err error, spec *sandbox.Spec) (string, bool) {
	if spec.LandlockOnly || !(errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EACCES)) {
		return "", false
	}
	if r := probe.UserNS(ctx); !r.OK {
		return r.Detail, true
	}
	return "", false
}

// reportStarted writes bubblewrap's report of the sandbox made to
// --info-fd (which it then closes) and --json-status-fd.
func reportStarted(cmd *bwrap.Command, sb *sandbox.Sandbox, spec *sandbox.Spec) {
	if cmd.Info == nil && cmd.JSONStatus == nil {
		return
	}
	info := bwrap.NewInfo(sb.InitPid(), spec, sb.Namespaces())
	if cmd.Info != nil {
		bwrap.WriteInfo(cmd.Info, info)
		cmd.Info.Close()
	}
	if cmd.JSONStatus != nil {
		bwrap.WriteStatus(cmd.JSONStatus, info)
	}
}

// wait waits for the program p, forwarding the signals on sigs to it, and
// returns its exit status: 128+N for a signal N, the signal caplin turned
// into SIGKILL for a pid 1 included.
func wait(ctx context.Context, p *pidfd.Process, sigs <-chan os.Signal, spec *sandbox.Spec) (int, error) {
	var escalated atomic.Int32 // a signal caplin turned into SIGKILL
	done := make(chan struct{})
	forwarded := make(chan struct{})
	pid1 := spec.AsPID1 && !spec.SharePID
	go func() {
		defer close(forwarded)
		forward(p, sigs, done, pid1, spec.SameSession, &escalated)
	}()
	st, err := p.Wait(ctx)
	close(done)
	<-forwarded
	if err != nil {
		return 0, err
	}
	code := st.ExitCode()
	if sig := escalated.Load(); sig != 0 && st.Signal == unix.SIGKILL {
		code = 128 + int(sig)
	}
	return code, nil
}

// execStatus maps an exec failure to the exit status and message for it.
func execStatus(path string, err error) (int, string) {
	// execveat's own failure is an *os.PathError; anything else (the
	// process gone, say) is caplin's.
	var pe *os.PathError
	var errno syscall.Errno
	if !errors.As(err, &pe) || !errors.As(pe.Err, &errno) {
		return exitFailure, err.Error()
	}
	if errno == unix.ENOENT {
		if !strings.Contains(path, "/") {
			return exitNotFound, fmt.Sprintf("%s: command not found in the sandbox's PATH", path)
		}
		return exitNotFound, fmt.Sprintf("%s: no such file or directory in the sandbox (or its #! interpreter or dynamic loader is missing there)", path)
	}
	return exitNoExec, fmt.Sprintf("cannot execute %s: %v", path, errno)
}

// forward sends the signals caplin receives to the program until done is
// closed. pid1 says the program is the init of a pid namespace, which the
// kernel shields from signals it neither handles nor ignores: those become
// SIGKILL, recorded in escalated. sameSession says the program shares
// caplin's terminal, which sends ^C and ^\ to it directly.
func forward(p *pidfd.Process, sigs <-chan os.Signal, done <-chan struct{}, pid1, sameSession bool, escalated *atomic.Int32) {
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
		if pid1 && !handles(p.Pid(), sig) {
			escalated.Store(int32(sig))
			p.Signal(unix.SIGKILL)
			continue
		}
		if sameSession && (sig == unix.SIGINT || sig == unix.SIGQUIT) && inForeground() {
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
