package main

import "path/filepath"

// bwrapUsage is bubblewrap's first line of --help, which its callers (and
// its own test suite) look for: "usage: " and the name it was run by.
func bwrapUsage(argv0 string) string {
	name := argv0
	if filepath.Base(argv0) != "bwrap" {
		name = "caplin bwrap"
	}
	return "usage: " + name + " [OPTIONS...] [--] COMMAND [ARGS...]\n"
}

const bwrapHelp = `NAME
	caplin bwrap - bubblewrap's command line, carried out by caplin

SYNOPSIS
	caplin bwrap [OPTIONS] [--] COMMAND [ARGS...]
	bwrap [OPTIONS] [--] COMMAND [ARGS...]   (caplin through a link named bwrap)

DESCRIPTION
	Takes bubblewrap's (bwrap 0.8) command line and output formats, so
	that programs that call bubblewrap can use caplin instead. The
	options are those of "caplin run" (see "caplin help run") that
	bubblewrap has, with bubblewrap's defaults rather than caplin run's:

	  - the caller's environment, uid and gid (as root, the sandbox's
	    user is the host's root, with --uid too; caplin run maps it to
	    an unprivileged one), working directory (when the grants show
	    it) and session (--new-session makes a new one);
	  - a writable root;
	  - the caller's network, pid, IPC, UTS and cgroup namespaces unless
	    --unshare-net (only lo, up), --unshare-pid, --unshare-ipc,
	    --unshare-uts, --unshare-cgroup or --unshare-all ask for new ones;
	  - nested user namespaces allowed unless --disable-userns.

	What caplin does whatever the options say, unlike bubblewrap: the
	sandbox always has a user and a mount namespace and a root built from
	the options; its seccomp filter always refuses TIOCSTI, keyctl, bpf,
	io_uring, ptrace and the like, and, with --disable-userns, the mount
	calls too; and the program always dies with caplin
	(--die-with-parent is the only behaviour). Without --unshare-pid the
	program shares the pid namespace of caplin's reaper, not the
	caller's: it sees no process outside, and its /proc (from --proc, or
	a bind of /proc or /) is of that namespace, with sys, sysrq-trigger,
	irq and bus read-only. As under bubblewrap, a caller of uid 0 keeps
	its capabilities (in the sandbox's user namespace) unless --cap-drop
	says otherwise. Landlock applies the same file grants only with
	--disable-userns: it would refuse the mounts of the sandboxes nested
	in this one that bubblewrap allows. docs/bwrap.md lists every
	difference, and why.

	Where user namespaces are not allowed, caplin bwrap fails (status
	1) as bubblewrap does there, with a message that says why and what
	would fix it: it does not fall back to a sandbox without namespaces
	as "caplin run" does, since the programs that call bubblewrap count
	on its namespaces (a private /tmp, binds at other paths) and choose
	for themselves what to do when it fails.

	Also bubblewrap's: --overlay-src SRC with --overlay RWSRC WORKDIR
	DEST, --tmp-overlay DEST or --ro-overlay DEST (overlayfs in the
	sandbox's user namespace, Linux 5.11 or later); --userns FD,
	--userns2 FD and --pidns FD (join those namespaces instead of making
	them); --userns-block-fd FD (with --info-fd: the user namespace is
	made without ID maps, for the caller to write before a byte or EOF on
	FD); --assert-userns-disabled; --lock-file PATH (a shared lock held
	while the sandbox lives); --level-prefix ("<3>" before errors, "<4>"
	before warnings). --exec-label and --file-label fail as bubblewrap
	does where SELinux is absent: caplin labels nothing.

EXIT STATUS
	The command's status; 128+N when it was killed by signal N; 1 when
	bwrap itself fails, with a message starting "bwrap: ".
`
