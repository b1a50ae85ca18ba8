package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/caplin-dev/caplin/pidfd"
	"github.com/caplin-dev/caplin/probe"
	"github.com/caplin-dev/caplin/sandbox"
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

func cmdRun(args []string) int { return runCommand(args, false) }

// runCommand runs caplin run, or caplin bwrap when bwrap is set.
func runCommand(args []string, bwrap bool) int {
	name, failCode := "caplin run", exitFailure
	if bwrap {
		name, failCode = "bwrap", 1
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(os.Stderr, name+": "+format+"\n", a...)
		return code
	}
	cfg, err := parseRunArgs(args, bwrap)
	var help *helpRequest
	var ue *usageErr
	switch {
	case errors.As(err, &help):
		switch {
		case help.what == "--version" && bwrap:
			fmt.Println("bubblewrap 0.8.0 (caplin " + caplinVersion() + ")")
		case help.what == "--version":
			return cmdVersion(nil)
		case bwrap:
			fmt.Print(bwrapHelp)
		default:
			fmt.Print(runHelp)
		}
		return exitOK
	case errors.As(err, &ue) && !bwrap:
		usageError(name, runSynopsis, ue.msg)
		return exitUsage
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "bwrap: %s\n", ue.msg)
		return 1
	case err != nil:
		return fail(failCode, "%v", err)
	}
	defer cfg.closeFiles()
	for _, w := range cfg.warnings {
		fmt.Fprintf(os.Stderr, "%s: warning: %s\n", name, w)
	}
	spec, err := cfg.spec()
	if err != nil {
		var ue *usageErr
		if errors.As(err, &ue) {
			if bwrap {
				return fail(1, "%s", ue.msg)
			}
			usageError(name, runSynopsis, ue.msg)
			return exitUsage
		}
		return fail(failCode, "%v", err)
	}

	// The signals to forward: those caplin was not started ignoring (under
	// nohup, say).
	var fwd []os.Signal
	for _, sig := range []syscall.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT} {
		if !signal.Ignored(sig) {
			fwd = append(fwd, sig)
		}
	}
	sigs := make(chan os.Signal, 8)
	if len(fwd) > 0 { // no signals would mean all of them
		signal.Notify(sigs, fwd...)
		defer signal.Stop(sigs)
	}

	ctx := context.Background()
	sb, err := sandbox.Build(ctx, spec)
	if err != nil {
		if errors.Is(err, sandbox.ErrUnenforceable) && !bwrap {
			return fail(exitUnenforceable, "%v (--best-effort drops what cannot be enforced)", err)
		}
		if !spec.LandlockOnly && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EACCES)) {
			if r := probe.UserNS(ctx); !r.OK {
				hint := " (--landlock-only confines without them)"
				if bwrap {
					hint = ""
				}
				return fail(failCode, "%v: no user namespaces here: %s%s", err, r.Detail, hint)
			}
		}
		return fail(failCode, "%v", err)
	}
	// The sandbox is closed on the way out when something fails; when the
	// program has run, it is only killed: caplin exits at once, and the
	// kernel takes the namespaces down in the background.
	closeSandbox := true
	defer func() {
		if closeSandbox {
			sb.Close()
		}
	}()
	info := cfg.infoJSON(sb, spec)
	if cfg.infoFD != nil {
		fmt.Fprintf(cfg.infoFD, "{\n    %s\n}\n", strings.Join(info, ",\n    "))
		cfg.infoFD.Close()
	}
	if cfg.jsonFD != nil {
		fmt.Fprintf(cfg.jsonFD, "{ %s }\n", strings.Join(info, ", "))
	}
	if cfg.blockFD != nil {
		var b [1]byte
		cfg.blockFD.Read(b[:])
		cfg.blockFD.Close()
	}
	argv := append([]string(nil), cfg.argv...)
	if cfg.argv0 != "" {
		argv[0] = cfg.argv0
	}
	p, err := sb.Exec(ctx, cfg.argv[0], argv)
	if err != nil {
		code, msg := execStatus(cfg.argv[0], err)
		if code == exitNotFound && len(spec.Mounts) == 0 && !bwrap {
			msg += " (the sandbox has only what the options grant, and they grant no files: --system grants the usual programs)"
		}
		if bwrap {
			code = 1
			msg = "execvp " + cfg.argv[0] + ": " + msg
		}
		return fail(code, "%s", msg)
	}

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
		return fail(failCode, "waiting for %s: %v", cfg.argv[0], err)
	}
	code := st.ExitCode()
	if sig := escalated.Load(); sig != 0 && st.Signal == unix.SIGKILL {
		code = 128 + int(sig)
	}
	if cfg.jsonFD != nil {
		fmt.Fprintf(cfg.jsonFD, "{ \"exit-code\": %d }\n", code)
		cfg.jsonFD.Close()
	}
	if cfg.syncFD != nil {
		cfg.syncFD.Close()
	}
	// Without limits there is nothing to clean up that the kernel does
	// not; a limit's cgroup must be removed once its processes are gone.
	if spec.Limits == (sandbox.Limits{}) {
		sb.Kill()
		closeSandbox = false
	}
	return code
}

// spec turns the command line into a sandbox spec.
func (c *runConfig) spec() (*sandbox.Spec, error) {
	spec := &sandbox.Spec{}
	if c.profile != "" {
		if c.bwrap {
			return nil, usagef("--profile is caplin run's")
		}
		p, err := sandbox.LoadProfile(c.profile)
		if err != nil {
			return nil, err
		}
		spec = p
	} else {
		spec.UID, spec.GID = os.Geteuid(), os.Getegid()
	}
	if c.system {
		spec.Mounts = append(spec.Mounts, sandbox.SystemMounts()...)
	}
	spec.Mounts = append(spec.Mounts, c.mounts...)
	if c.uid >= 0 {
		spec.UID = c.uid
	}
	if c.gid >= 0 {
		spec.GID = c.gid
	}
	if c.hostname != "" {
		spec.Hostname = c.hostname
	}
	spec.BestEffort = spec.BestEffort || c.bestEffort
	spec.LandlockOnly = spec.LandlockOnly || c.landlockOnly
	for _, l := range []struct{ dst, src *int }{{&spec.Limits.Pids, &c.limits.Pids}, {&spec.Limits.NoFile, &c.limits.NoFile}} {
		if *l.src != 0 {
			*l.dst = *l.src
		}
	}
	if c.limits.Memory != 0 {
		spec.Limits.Memory = c.limits.Memory
	}
	if c.limits.CPU != 0 {
		spec.Limits.CPU = c.limits.CPU
	}

	// The environment.
	var base []string
	switch {
	case c.bwrap || c.keepEnv:
		base = os.Environ()
	case c.profile != "":
		base = spec.Env
	}
	env := buildEnv(base, c.env)
	if c.system && !hasVar(env, "PATH") {
		env = append(env, "PATH=/usr/local/bin:/usr/bin:/bin")
	}
	spec.Env = env

	// The fds: caplin's standard ones (a closed one stays closed), then
	// the grants.
	spec.Files = map[int]*os.File{}
	for fd, f := range []*os.File{os.Stdin, os.Stdout, os.Stderr} {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			spec.Files[fd] = f
		}
	}
	for n, f := range c.fds {
		spec.Files[n] = f
	}

	// Namespaces and the rest: bubblewrap shares what is not unshared;
	// caplin run shares nothing but what --net host or --share-net asks.
	if c.bwrap {
		spec.WritableRoot = true
		spec.SharePID = !c.unshare["pid"]
		spec.ShareIPC = !c.unshare["ipc"]
		spec.ShareUTS = !c.unshare["uts"]
		spec.ShareCgroup = !c.unshare["cgroup"]
		spec.Net = sandbox.NetHost
		if c.unshare["net"] {
			spec.Net = sandbox.NetLoopback // bubblewrap brings lo up
		}
		spec.SameSession = !c.newSession
		spec.Seccomp.AllowUserNamespaces = !c.disableUserns
		if c.hostname != "" && spec.ShareUTS {
			return nil, usagef("Specifying --hostname requires --unshare-uts")
		}
	} else {
		switch {
		case c.net != "" && c.shareNet && c.net != "host":
			return nil, usagef("--share-net and --net %s disagree", c.net)
		case c.shareNet || c.net == "host":
			spec.Net = sandbox.NetHost
		case c.net == "loopback":
			spec.Net = sandbox.NetLoopback
		case c.net == "none":
			spec.Net = sandbox.NetNone
		}
		if c.allowUserns {
			spec.Seccomp.AllowUserNamespaces = true
		}
	}
	spec.AsPID1 = spec.AsPID1 || c.asPID1
	// A command's heap is small: forking from it directly saves making
	// a zygote. But then only the parent-death signal of the sandbox's
	// pid 1 ties the sandbox to caplin's life, so pid 1 must be caplin's
	// init: a program that is pid 1 itself (or shares caplin's pid
	// namespace) could clear its own signal and outlive a SIGKILLed
	// caplin. Those get the zygote, whose death ends its pid namespace
	// and every one nested in it.
	spec.Direct = !spec.AsPID1 && !spec.SharePID
	if err := c.caps(spec); err != nil {
		return nil, err
	}
	spec.SeccompFilters = append(spec.SeccompFilters, c.seccomp...)

	// The working directory: as asked, or caplin's own where the grants
	// show it at the same place, else /.
	switch {
	case c.chdir != "":
		spec.Dir = c.chdir
	case spec.Dir == "":
		if wd, err := os.Getwd(); err == nil && visible(spec.Mounts, wd) {
			spec.Dir = wd
		}
	}
	return spec, nil
}

// visible reports whether the host directory dir appears at the same path
// in a sandbox with mounts ms: inside a bind of a source at its own path,
// not covered by a later mount.
func visible(ms []sandbox.Mount, dir string) bool {
	in := func(p, root string) bool {
		return p == root || strings.HasPrefix(p, strings.TrimSuffix(root, "/")+"/")
	}
	ok := false
	for _, m := range ms {
		dest := filepath.Clean(m.Dest)
		switch {
		case (m.Kind == sandbox.ROBind || m.Kind == sandbox.Bind || m.Kind == sandbox.DevBind) && in(dir, dest):
			ok = filepath.Clean(m.Source) == dest
		case m.Kind != sandbox.RemountRO && m.Kind != sandbox.Chmod && in(dir, dest):
			ok = false
		}
	}
	return ok
}

// caps applies --cap-add and --cap-drop, in order.
func (c *runConfig) caps(spec *sandbox.Spec) error {
	keep := map[int]bool{}
	for _, n := range spec.Caps {
		keep[n] = true
	}
	apply := func(names []string, on bool) error {
		for _, name := range names {
			if strings.EqualFold(name, "ALL") {
				for _, i := range sandbox.AllCaps() {
					keep[i] = on
				}
				continue
			}
			n, err := sandbox.ParseCap(name)
			if err != nil {
				return usagef("%v", err)
			}
			keep[n] = on
		}
		return nil
	}
	if err := apply(c.capAdd, true); err != nil {
		return err
	}
	if err := apply(c.capDrop, false); err != nil {
		return err
	}
	spec.Caps = spec.Caps[:0]
	for n, on := range keep {
		if on {
			spec.Caps = append(spec.Caps, n)
		}
	}
	return nil
}

func hasVar(env []string, name string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, name+"=") {
			return true
		}
	}
	return false
}

// infoJSON returns the members of bubblewrap's --info-fd object: the pid
// of the sandbox's first process, then the inode of each namespace made
// for it, by name.
func (c *runConfig) infoJSON(sb *sandbox.Sandbox, spec *sandbox.Spec) []string {
	out := []string{fmt.Sprintf("\"child-pid\": %d", sb.InitPid())}
	for _, ns := range []struct {
		name string
		made bool
	}{
		{"cgroup", !spec.ShareCgroup}, {"ipc", !spec.ShareIPC}, {"mnt", true},
		{"net", spec.Net != sandbox.NetHost}, {"pid", !spec.SharePID}, {"uts", !spec.ShareUTS},
	} {
		if !ns.made {
			continue
		}
		out = append(out, fmt.Sprintf("\"%s-namespace\": %d", ns.name, sb.Namespaces()[ns.name]))
	}
	return out
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
