package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/netgrant"
	"github.com/caplin-dev/caplin/proc"
	"github.com/caplin-dev/caplin/sandbox"
	"github.com/caplin-dev/caplin/sandbox/bwrap"
	"github.com/caplin-dev/caplin/supervisor"
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
	caplin's uid and gid, with no capabilities (and, when caplin runs as
	root, as an unprivileged user on the host: see --as-host-root); an
	empty environment; a new session; Landlock with the same file
	grants; a seccomp filter that refuses what sandboxes must (TIOCSTI,
	keyctl, bpf, io_uring, ptrace, mount, new user namespaces, ...); and
	no_new_privs. An init
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
		A minimal /dev: null, zero, full, random, urandom, tty, shm,
		and pts, a devpts of the sandbox's own (ptmx links to
		pts/ptmx), for programs that open pseudo-terminals.
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
	--overlay-src SRC
		A read-only layer (a host directory) of the next overlay;
		repeatable, from the bottom up.
	--overlay RWSRC WORKDIR DEST
		An overlay file system at DEST of the --overlay-src layers
		under the host directory RWSRC, which takes the writes;
		WORKDIR is an empty host directory on RWSRC's file system.
		Made in the sandbox's user namespace (Linux 5.11 or later).
	--tmp-overlay DEST
		The same, writes going to a tmpfs lost with the sandbox.
	--ro-overlay DEST
		The same, read-only, of two layers or more.
	--lock-file PATH
		Hold a shared lock (fcntl F_RDLCK) on the sandbox's file PATH
		while the sandbox lives. Not with --as-pid-1 in bwrap.

` + servedHelp + `
FDS
	--fd N=SPEC
		Give the program fd N: SPEC is PATH (opened read-only),
		rw:PATH (read-write), w:PATH (created or truncated, like >),
		a:PATH (appended, like >>), or inherit:M (caplin's fd M). N may
		be 0, 1 or 2 to replace caplin's standard fd. Repeatable.

NETWORK
	--net none|loopback|host
		none (default): no interface up. loopback: only lo, up.
		host: caplin's network (and the host's abstract sockets),
		with the host's /etc/resolv.conf, hosts, nsswitch.conf and
		host.conf read-only (bound before the options' mounts, so
		they may cover them) unless the options bind / or provide
		/etc or that file themselves.
	--share-net
		Same as --net host.
	--connect RULE
		Let the program connect where RULE says, beyond its own
		network (with --net none, it gets loopback): HOST:PORTS,
		*.DOMAIN:PORTS (names under DOMAIN), ADDR:PORTS,
		CIDR:PORTS ([...] around IPv6), or unix:PATH (a host Unix
		socket, made from outside). PORTS is 443, 8000-8099 or *.
		Repeatable. Every connect(2) is trapped (seccomp user
		notification); caplin makes each one a rule allows itself,
		on the host's network, and gives the program the connected
		socket in place of its own. One no rule allows fails with
		EACCES (a datagram socket's with ENETUNREACH); one to a
		loopback address stays on the sandbox's own loopback. A
		HOST is allowed the addresses the host's resolver gives
		for it (when caplin starts, and again on a miss, at most
		once a second). Needs Linux 5.9. --events reports every
		connect allowed or refused.
		The program's /etc/resolv.conf names a resolver of caplin's
		in the sandbox, which answers names some HOST rule allows
		(A and AAAA, from the host's resolver; localhost is the
		loopback) and refuses the rest; what it answers, a rule for
		the name then allows.
		With --landlock-only (no namespaces) caplin connects the
		program's own socket; there is no loopback of the
		sandbox's (unruled loopback connects fail, EACCES), TCP
		binds fail, and caplin's resolver answers any DNS query to
		port 53: a datagram socket is a stand-in that reaches only
		it (others: ENETUNREACH), and glibc is asked to use TCP
		(RES_OPTIONS=use-vc), as it ignores UDP answers from
		elsewhere than its nameserver; musl's resolver gets none.
	--add-host NAME=ADDRESS
		Give NAME the address ADDRESS, for --connect's rules and the
		sandbox's resolver, in place of the host's resolver's
		answer. Repeatable; several addresses may be given a name.

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
		The IDs inside, mapped to caplin's outside (to the host user of
		--as-host-root's description when caplin is root). Default:
		caplin's own.
	--as-host-root
		When caplin runs as root, map the sandbox's user to the host's
		root, as bubblewrap does: what it makes in writable binds is
		root's, and root's files in what is bound are open to it. By
		default root is not root inside: the sandbox's user and group
		are, on the host, root's first subordinate range where
		/etc/subuid and /etc/subgid allot one (IDs 0 and up inside map
		to it), else nobody (uid and gid 65534); root's supplementary
		groups are dropped. The program then reads and writes bound
		files under their own permissions as that user, and a bind
		whose source it may not reach or read (root's 0700 home, say)
		fails (exit 125), naming the source. For other users the
		sandbox is caplin's own user either way.
	--keep-session
		Leave the program in caplin's session and process group, with
		caplin's controlling terminal: the terminal sends it ^C and ^Z
		itself, and an interactive shell inside gets job control. (The
		filter refuses TIOCSTI either way.)
	--kill-after DURATION
		How long the program has to stop after caplin is asked to stop
		(SIGTERM, SIGHUP) before the whole sandbox is killed (SIGKILL):
		seconds, or a duration such as 500ms. Default 10s; 0: at once.
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
	--assert-userns-disabled
		Fail unless the program cannot make user namespaces (it is so
		unless --allow-userns).
	--userns FD, --pidns FD
		Join the user namespace, or the pid namespace, that caplin's fd
		FD names (/proc/PID/ns/user, .../pid) instead of making one:
		with --pidns, the sandbox's pid namespace is made inside it.
		--uid and --gid do not apply with --userns.
	--userns2 FD
		Move the program to the user namespace FD names once the
		sandbox is built (one nested in --userns's, say).
	--userns-block-fd FD
		With --info-fd: make the user namespace without ID maps,
		report the sandbox's first process on --info-fd, and wait
		for data or end of file on FD while the caller writes its
		/proc/PID/uid_map and gid_map.
	--exec-label LABEL, --file-label LABEL
		Fail, as bubblewrap does without SELinux: caplin labels
		nothing.
	--seccomp FD, --add-seccomp-fd FD
		Also install the classic-BPF seccomp program read from FD.
	--profile FILE
		Start from the sandbox profile FILE (TOML; every key, its
		type and default, with an example: docs/profiles.md in
		caplin's source, https://github.com/caplin-dev/caplin/blob/
		main/docs/profiles.md). Options given on the command line
		apply after it: mounts are added after the profile's, the
		rest overrides.
	--supervisor
		Run through the user's supervisor (caplin supervisor; one is
		started if none runs), as with $CAPLIN_SUPERVISOR set: it
		keeps the sandbox of each set of options warm (a template:
		the namespaces and the root made once, each run getting
		fresh mounts, pid namespace and confinement of its own) and
		runs the program in it with caplin run's standard fds;
		caplin relays the signals it gets and its terminal's size
		changes, and exits as the program did. What reaches this
		process (--fd N=inherit:M, status fds, --serve-*, --events,
		--landlock-only, --keep-session, --require,
		--die-with-parent) is done here instead, and --supervisor
		says so in a line; a sandbox a template cannot take
		(--connect, overlays, --as-pid-1 ...) is built afresh by the
		supervisor. Runs with the same options share the template's
		user, UTS, cgroup and network namespaces (with --net
		loopback, one loopback: one run can reach another's
		listener) and its read-only root.
	--host HOST
		Run the program on HOST (an ssh destination, reached with the
		user's ssh or $CAPLIN_SSH: see caplin remote), in a sandbox
		built there from the same options by caplin's agent (uploaded
		once per caplin version). caplin's standard fds are forwarded:
		a pipe stays a pipe and a file becomes one, a terminal becomes
		a pseudo-terminal there that is the program's controlling
		terminal (this one raw meanwhile, its size changes following,
		^C reaching the program as a key); the signals caplin gets are
		relayed, and caplin exits as the program did. Paths in the
		options are HOST's; the program's environment is the user's
		login environment there (and TERM, with a terminal). What
		reaches this process (--fd N=inherit:M, status fds, --serve-*,
		--events, --landlock-only, --keep-session, --require,
		--die-with-parent) is refused. When the connection drops, the
		program is killed there.
	--agent PATH
		With --host: upload PATH as the agent, a caplin built for
		HOST's architecture when it is not this one's.
	--best-effort
		Where the kernel cannot enforce part of the sandbox (no
		Landlock), drop it, saying what was dropped, instead of
		refusing (exit 122).
	--landlock-only
		Confine without namespaces, as caplin run does by itself
		where user namespaces are not allowed (see WITHOUT USER
		NAMESPACES): file grants become Landlock rules on the host's
		own paths (binds must be at their source's path; --symlink,
		--dir and the other options that make something are
		refused), the network is cut by seccomp (Unix sockets only)
		and Landlock, signals by Landlock's scopes (Linux 6.12).
		Every connect is trapped and made by caplin (Landlock's file
		rules do not reach connect): to a Unix socket at or beneath
		a grant only (EACCES elsewhere), to no abstract socket (EPERM;
		with --net host, any); where a container's seccomp profile
		refuses what the trap needs (pidfd_getfd), socket(2) is
		refused instead (socketpair works). Unix datagram sockets
		(of socketpair too) are refused (EACCES): a datagram's
		address is not trapped, and could name the host's sockets.
		--system works: its --tmpfs /tmp becomes
		a private directory (mode 0700, in caplin's $TMPDIR or /tmp)
		that the program's $TMPDIR names, removed when the sandbox
		ends, while the host's /tmp stays out of reach; --proc /proc
		is the host's /proc, read-only (other processes' command
		lines and status show; their fds, memory and environment do
		not); --dev grants the host's null, zero, full, random,
		urandom and tty (no /dev/shm). A tmpfs elsewhere, a proc
		elsewhere, a bind without device access of /dev or of a tree
		holding it (--ro-bind / /: Landlock alone would let device
		nodes open), and a mount inside an earlier grant that would
		show more than it (--dev-bind / / then --tmpfs /tmp) are
		refused. The program still sees the host's processes,
		hostname and IPC, and background processes it starts can
		outlive caplin. What cannot be enforced is refused (exit
		122) unless --best-effort.
	--require LAYER,...
		Refuse to run (exit 122) rather than without the layers named:
		userns (the user, mount, pid, IPC, UTS, cgroup and network
		namespaces, and the private root made in them), landlock
		(which --best-effort would otherwise drop on a kernel without
		it), seccomp (every sandbox has its filter; accepted so that a
		list can say so), or all. It may be given more than once.

LIMITS (for the sandbox's processes together)
	--max-pids N
		At most N processes and threads at once.
	--max-memory SIZE
		At most SIZE bytes of memory (with K, M or G); past it the
		kernel kills the largest process, and caplin says so
		("killed: out of memory").
	--max-cpu N
		At most N CPUs' worth of time (0.5: half of one CPU).
	--max-files N
		At most N open files per process.
	Limits use a cgroup where one is delegated to caplin (v2, or v1 as
	root), rlimits otherwise (--max-pids: RLIMIT_NPROC, exact on Linux
	5.14 and later in the sandbox's user namespace; without one of its
	own, with --landlock-only, it would count all the user's processes,
	and through --supervisor's template all its runs'). A limit that
	cannot be enforced is refused (exit 122) unless --best-effort, which
	says how it was weakened or that it was dropped.

WITHOUT USER NAMESPACES
	Where user namespaces are not allowed (AppArmor's restriction on
	Ubuntu 23.10 and later, a container's seccomp profile such as
	Docker's default one, user.max_user_namespaces=0, Debian's
	kernel.unprivileged_userns_clone=0, or a kernel without them),
	caplin run builds the strongest sandbox it can without them:
	Landlock, seccomp, no_new_privs and rlimits, as --landlock-only
	does. It says so in one line on stderr: why namespaces are not
	allowed, what the sandbox lacks and does differently ("/tmp is
	a private directory ($TMPDIR)", "/proc is the host's
	read-only"), and the fix (for AppArmor, a profile that "caplin
	doctor" prints in full). So --system runs there. What cannot be
	had without a mount namespace (a tmpfs elsewhere than /tmp,
	binds elsewhere than their source, ...) is named, and refused
	(exit 122) unless --best-effort, which runs without it. --require userns refuses to
	run there instead (exit 122). "caplin bwrap" does not fall back:
	it fails as bubblewrap does, saying why.

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
	--level-prefix
		Start caplin's messages with their syslog level: <3> for
		errors, <4> for warnings.

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
	terminal included) reach the program as a terminal's would: its
	whole process group gets them, so ^C stops a shell script and the
	command it waits for. (With --keep-session the terminal sends ^C
	and ^\ to the program itself.) SIGTERM and SIGHUP ask it to stop:
	if it has not --kill-after later (default 10s), or when another
	signal comes, the whole sandbox is killed. ^C alone never kills:
	shells and editors handle it and go on. When the program dies of
	the SIGINT, SIGTERM or SIGHUP it was relayed, caplin dies of it
	too, so that a calling script stops there as it would have.

EXIT STATUS
	N        the program exited with status N
	128+N    the program was killed by signal N (for a relayed SIGINT,
	         SIGTERM or SIGHUP caplin is killed by it too, which a shell
	         shows as 128+N: 130, 143, 129)
	137      the sandbox was killed: the program had not stopped
	         --kill-after a SIGTERM or SIGHUP, or a second signal came
	2        usage error
	122      the kernel cannot enforce what was asked (without
	         --best-effort), or a layer --require names is not
	         allowed here: one line says what
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

// cmdRun runs caplin run: through the user's supervisor with
// --supervisor or $CAPLIN_SUPERVISOR set (supervised.go), where it can
// be, else here.
func cmdRun(args []string) int {
	args, host, agent, err := hostFlag(args)
	if err != nil {
		usageError("caplin run", "caplin run [OPTIONS] -- CMD [ARGS...]", err.Error())
		return exitUsage
	}
	if host != "" {
		args, _ = supervisorFlag(args)
		return runRemote(args, host, agent)
	}
	args, viaFlag := supervisorFlag(args)
	if viaFlag || os.Getenv("CAPLIN_SUPERVISOR") != "" && os.Getenv("CAPLIN_SUPERVISOR") != "0" {
		if code, ok := runSupervised(args, viaFlag); ok {
			return code
		}
	}
	return runSandbox(args, runMode)
}

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
	// levelPrefix is --level-prefix: messages start with their syslog
	// level, "<3>" for errors and "<4>" for warnings.
	levelPrefix bool
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
		if fe := new(sandbox.FUSEUnavailableError); errors.As(err, &fe) {
			return m.fail(exitUnenforceable, "%v", err) // no --best-effort drops a served mount
		}
		if len(spec.Connect) > 0 && errors.Is(err, sandbox.ErrUnenforceable) && (spec.LandlockOnly || errors.Is(err, errors.ErrUnsupported)) {
			return m.fail(exitUnenforceable, "%v", err) // no --best-effort drops a grant
		}
		if errors.Is(err, sandbox.ErrUnenforceable) {
			return m.fail(exitUnenforceable, "%v (--best-effort drops what cannot be enforced)", err)
		}
		if errors.Is(err, unix.EACCES) && spec.HostIDs != (sandbox.HostIDs{}) {
			return m.fail(m.failure, "%v: make it readable by that user, or --as-host-root runs the sandbox as the host's root", err)
		}
		return m.fail(m.failure, "%v", err)
	},
	execFailed: func(m mode, path string, err error, spec *sandbox.Spec) int {
		code, msg := bwrap.ExecStatus(path, err)
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
		return m.fail(m.failure, "%s", bwrap.Message(err))
	},
	execFailed: func(m mode, path string, err error, spec *sandbox.Spec) int {
		_, msg := bwrap.ExecStatus(path, err)
		return m.fail(m.failure, "execvp %s: %s", path, msg)
	},
}

// fail prints the mode's name and the message, and returns code.
func (m mode) fail(code int, format string, a ...any) int {
	m.print(3, fmt.Sprintf(format, a...))
	return code
}

// warn prints a warning: after "warning: " in caplin run, as bubblewrap
// does in caplin bwrap.
func (m mode) warn(msg string) {
	if m.dialect != bwrap.Bubblewrap {
		msg = "warning: " + msg
	}
	m.print(4, msg)
}

// print prints one message line of syslog level: the one place messages
// of caplin run and caplin bwrap are printed, so that --level-prefix
// applies to all.
func (m mode) print(level int, msg string) {
	prefix := ""
	if m.levelPrefix {
		prefix = "<" + strconv.Itoa(level) + ">"
	}
	fmt.Fprintf(os.Stderr, "%s%s: %s\n", prefix, m.name, msg)
}

// runSandbox carries out a command line of mode m: it makes the sandbox,
// runs the program in it, waits for it, and returns the exit status.
func runSandbox(args []string, m mode) int {
	// The signals to relay are asked for while the command line is read
	// and the sandbox built: a process's first signal.Notify starts a
	// thread for the signal mask and hands it each signal in turn, which
	// would otherwise come before the sandbox. Until the program is
	// started a signal does what it would do to any program: caplin dies
	// of it, and the sandbox it was building with it (its processes die
	// with their parent; its mounts are its mount namespace's).
	sigs := make(chan os.Signal, 8)
	notified := make(chan struct{})
	go func() {
		defer close(notified)
		notifyForwarded(sigs)
	}()
	so := &servedOpts{} // served.go
	cmd, spec, code := m.parse(args, so.extras())
	if cmd == nil {
		<-notified
		signal.Stop(sigs)
		select {
		case sig := <-sigs:
			// Caught while the command line was read, for a program
			// that will not run: caplin dies of it itself.
			dieOf(sig.(syscall.Signal))
			return 128 + int(sig.(syscall.Signal))
		default:
		}
		return code
	}
	// Dying of the signal the program died of, once the rest is done,
	// tells a calling shell what ^C did: a script stops there.
	var relayed syscall.Signal
	defer func() { dieOf(relayed) }()
	defer cmd.Close()
	// The servers end after the sandbox (closed by a later defer), whose
	// mounts they serve.
	defer so.close()
	m.levelPrefix = cmd.LevelPrefix
	if err := so.check(spec); err != nil {
		return m.usage(m, err.Error())
	}
	if cmd.DieWithParent {
		// caplin dies with its parent, and the sandbox with caplin, as
		// bubblewrap does. (The signal is the process's, whichever
		// thread asks: the kernel sends it to the whole group.)
		if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
			return m.fail(m.failure, "--die-with-parent: prctl(PR_SET_PDEATHSIG): %v", err)
		}
	}
	ctx := context.Background()
	if spec.Direct {
		go proc.Prepare(ctx, &proc.Options{From: proc.Direct}) // meanwhile
	}
	if err := so.open(ctx); err != nil {
		return m.fail(m.failure, "%v", err)
	}
	// The signals stay caught until caplin exits (there is no
	// signal.Stop): one that comes while the sandbox is taken down, after
	// the program, does not cut that short and leave its processes to
	// init; and stopping would hand each signal to the runtime's thread
	// again, on the way out.

	// The supervisor's sockets: caplin's broker makes a Landlock-only
	// sandbox's connects, so the supervisor would see caplin as the
	// caller, not the confined program, and serve it.
	opts := []sandbox.Option{sandbox.WithRefusedSockets(filepath.Dir(supervisorSocket()), filepath.Dir(supervisor.SocketPath()))}
	if so.evlog != nil && (len(spec.Connect) > 0 || spec.LandlockOnly) {
		opts = append(opts, sandbox.WithConnectEvents(func(e netgrant.Event) { so.evlog.Add(e) }))
	}
	if len(cmd.Hosts) > 0 {
		opts = append(opts, sandbox.WithConnectLookup(cmd.Lookup()))
	}
	reported := false
	if cmd.UsernsBlock != nil {
		// bubblewrap's --userns-block-fd: the user namespace is made
		// without maps; its first process is reported, and the maps are
		// the caller's to write until the fd gives a byte or EOF.
		opts = append(opts, sandbox.WithIDMapsBy(func(ctx context.Context, pid int) error {
			reportStarted(cmd, pid, spec, namespacesOf(pid))
			reported = true
			var b [1]byte
			cmd.UsernsBlock.Read(b[:])
			cmd.UsernsBlock.Close()
			return nil
		}))
	}
	sb, code := m.build(ctx, cmd, spec, opts...) // fallback.go
	if sb == nil {
		return code
	}
	// On the way out the sandbox is closed: its init is killed and
	// reaped (main then ends the zygote a sandbox without an init of
	// caplin's was forked from), so that caplin leaves no child of its
	// own for init to reap.
	defer sb.Close()
	if err := so.start(sb); err != nil {
		return m.fail(m.failure, "%v", err)
	}
	if !reported {
		reportStarted(cmd, sb.InitPid(), spec, sb.Namespaces())
	}
	if cmd.Block != nil {
		var b [1]byte
		cmd.Block.Read(b[:])
		cmd.Block.Close()
	}
	<-notified // before the program runs, whose signals are relayed
	p, err := sb.Exec(ctx, cmd.Path, cmd.Argv)
	if err != nil {
		return m.execFailed(m, cmd.Path, err, spec)
	}
	end, err := sandbox.Relay{KillAfter: cmd.KillAfter}.Wait(ctx, sb, p, sigs)
	if err != nil {
		return m.fail(m.failure, "waiting for %s: %v", cmd.Path, err)
	}
	code, relayed = end.Code, end.Relayed
	reportOOM(m, sb, spec, code)
	if cmd.JSONStatus != nil {
		bwrap.WriteExit(cmd.JSONStatus, code)
		cmd.JSONStatus.Close()
	}
	if cmd.Sync != nil {
		cmd.Sync.Close()
	}
	return code
}

// parse reads the command line, with the options of extra (caplin run's
// served directories), and the spec of its sandbox. On failure it reports
// it and returns a nil command and the exit status.
func (m mode) parse(args []string, extra map[string]bwrap.Extra) (*bwrap.Command, *sandbox.Spec, int) {
	cmd, err := bwrap.ParseExtra(args, m.dialect, nil, extra)
	if err != nil {
		var e *bwrap.Error
		m.levelPrefix = errors.As(err, &e) && e.LevelPrefix
		return nil, nil, m.parseFailed(err)
	}
	m.levelPrefix = cmd.LevelPrefix
	for _, w := range cmd.Warnings {
		m.warn(w)
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

// notifyForwarded has the signals to relay to the program delivered on
// sigs: sandbox.RelayedSignals but those caplin was not started ignoring
// (under nohup, say).
func notifyForwarded(sigs chan<- os.Signal) {
	var fwd []os.Signal
	for _, sig := range sandbox.RelayedSignals() {
		if !signal.Ignored(sig) {
			fwd = append(fwd, sig)
		}
	}
	if len(fwd) > 0 { // no signals would mean all of them
		signal.Notify(sigs, fwd...)
	}
}

// dieOf makes caplin die of sig, when it is one the Go runtime lets a
// program die of (SIGINT, SIGTERM, SIGHUP; SIGQUIT would dump goroutines),
// so that its caller sees what it would have seen of the program. It
// returns if it cannot; caplin then exits with 128+sig.
func dieOf(sig syscall.Signal) {
	if sig != unix.SIGINT && sig != unix.SIGTERM && sig != unix.SIGHUP {
		return
	}
	signal.Reset(sig)
	unix.Kill(os.Getpid(), sig)
	time.Sleep(100 * time.Millisecond) // for the signal to land
}

// reportStarted writes bubblewrap's report of the sandbox made, whose
// first process is pid and whose namespaces' inode numbers are ns, to
// --info-fd (which it then closes) and --json-status-fd.
func reportStarted(cmd *bwrap.Command, pid int, spec *sandbox.Spec, ns map[string]uint64) {
	if cmd.Info == nil && cmd.JSONStatus == nil {
		return
	}
	info := bwrap.NewInfo(pid, spec, ns)
	if cmd.Info != nil {
		bwrap.WriteInfo(cmd.Info, info)
		cmd.Info.Close()
	}
	if cmd.JSONStatus != nil {
		bwrap.WriteStatus(cmd.JSONStatus, info)
	}
}

// namespacesOf returns the inode numbers of the namespaces of process pid
// that are not caplin's own, by their names in /proc/PID/ns: those made
// for a sandbox whose first process is pid, so far.
func namespacesOf(pid int) map[string]uint64 {
	ns := map[string]uint64{}
	for _, name := range []string{"cgroup", "ipc", "mnt", "net", "pid", "user", "uts"} {
		var theirs, ours unix.Stat_t
		if unix.Stat("/proc/"+strconv.Itoa(pid)+"/ns/"+name, &theirs) == nil &&
			(unix.Stat("/proc/self/ns/"+name, &ours) != nil || ours.Ino != theirs.Ino) {
			ns[name] = theirs.Ino
		}
	}
	return ns
}
