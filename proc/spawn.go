package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"syscall"

	"github.com/caplin-dev/caplin/pidfd"
	"golang.org/x/sys/unix"
)

// Spawn makes a child as Fork does, runs setup in it and execs exe there,
// as Run and Exec would, in one round trip, and without a copy of anyone's
// memory: the new child shares its parent's memory, as after vfork(2),
// until it execs, and its parent waits meanwhile. It is the cheapest way
// to start a program: about what os/exec costs.
//
// argv[0] is the name the program sees. env is the program's whole
// environment, as with Exec: nil means an empty environment, not the
// caller's as in os/exec (pass os.Environ() for that), so that nothing
// of the caller's reaches a program it did not hand over on purpose.
//
// setup may be nil. It may hold system calls only (no TakeFile, WriteMem or
// other calls that act on the child's server), and only those on an
// allow-list of calls that act on the child's own fds, files, mounts,
// sockets, credentials, namespaces, limits and confinement (Landlock,
// seccomp, the prctl options for capabilities, no_new_privs and the like):
// none that act on memory (mmap, munmap, mprotect, brk, madvise, mlock
// and the like, and prctl's memory options), which would act on the
// parent's, nor any a new kernel adds; and no call may pass an address
// (Ptr): a call's buffers must be the batch's own data (In, Out, CString
// and the typed calls'), not memory the parent uses. Spawn refuses another
// batch. Fds put with PutFile are the program's: the exec'd program keeps
// the fds setup installs without close-on-exec, and nothing else.
//
// A setup call that fails is a *BatchError whose Index counts in setup; a
// failed exec is an *os.PathError, as from Exec. Either way no process is
// left behind. A ctx done before the child's exec has been reported kills
// the child (by its pidfd, even if it exec'd in the meantime), reaps it,
// and makes Spawn return ctx's error; once Spawn has returned a Process,
// ctx no longer matters to it.
//
// The child's parent waits for it, from the clone to the exec: a setup
// call that blocks (opening a FIFO, say) holds up every Fork and Spawn
// through the same zygote or handle until it returns or ctx is done.
//
// Spawn falls back to Fork, Run and Exec (the same result, at the cost of
// a fork) where the child cannot share its parent's memory: with NewUser
// (the ID maps are written from outside while the child waits), Direct, a
// setup too large for one message, from inside a handle whose child is
// neither a pid namespace's init nor a zygote (the child's parent, the
// zygote, must track it before it can exit), under the race detector, and
// on arm64, for which the switch to the child's stack is not written yet.
func Spawn(ctx context.Context, opts *Options, setup *Batch, exe *os.File, argv, env []string) (*pidfd.Process, error) {
	return spawnFrom(ctx, opts, setup, execTarget{exe: exe}, argv, env)
}

// SpawnPath is Spawn of the executable at path, looked up in the new
// child after setup has run (with the root, working directory and mount
// namespace it leaves), as ExecPath does. It does not search $PATH.
func SpawnPath(ctx context.Context, opts *Options, setup *Batch, path string, argv, env []string) (*pidfd.Process, error) {
	return spawnFrom(ctx, opts, setup, execTarget{path: path}, argv, env)
}

// spawnFrom is Spawn of target from where opts say.
func spawnFrom(ctx context.Context, opts *Options, setup *Batch, target execTarget, argv, env []string) (*pidfd.Process, error) {
	if opts == nil {
		opts = &Options{}
	}
	if opts.From == Direct || !spawnVM || raceBuild || opts.NewUser {
		return spawnSlow(ctx, nil, opts, setup, target, argv, env)
	}
	return throughZygote(ctx, opts, func(z *Handle, top bool) (*pidfd.Process, error) {
		return z.spawn(ctx, opts, setup, target, argv, env, top)
	})
}

// Spawn is Spawn from inside h: the new child is made as h.Fork makes
// one, in h's namespaces, with its credentials, root and working
// directory. h itself waits while the child sets up.
func (h *Handle) Spawn(ctx context.Context, opts *Options, setup *Batch, exe *os.File, argv, env []string) (*pidfd.Process, error) {
	if opts == nil {
		opts = &Options{}
	}
	return h.spawn(ctx, opts, setup, execTarget{exe: exe}, argv, env, false)
}

// SpawnPath is Spawn from inside h of the executable at path, looked up
// in the new child after setup has run (with the root, working directory
// and mount namespace it leaves). It does not search $PATH.
func (h *Handle) SpawnPath(ctx context.Context, opts *Options, setup *Batch, path string, argv, env []string) (*pidfd.Process, error) {
	if opts == nil {
		opts = &Options{}
	}
	return h.spawn(ctx, opts, setup, execTarget{path: path}, argv, env, false)
}

// execTarget is what a spawn execs: an open file, or a path.
type execTarget struct {
	exe  *os.File
	path string
}

func (t execTarget) name() string {
	if t.exe != nil {
		return t.exe.Name()
	}
	return t.path
}

// spawnSlow is Spawn by Fork (from h, or from the zygote when h is nil),
// Run and Exec.
func spawnSlow(ctx context.Context, h *Handle, opts *Options, setup *Batch, target execTarget, argv, env []string) (*pidfd.Process, error) {
	if err := checkSpawn(setup, target); err != nil {
		return nil, err
	}
	var c *Handle
	var err error
	if h == nil {
		c, err = Fork(ctx, opts)
	} else {
		c, err = h.Fork(ctx, opts)
	}
	if err != nil {
		return nil, err
	}
	if setup != nil && len(setup.calls)+len(setup.files) > 0 {
		res, err := c.Run(ctx, setup)
		if err != nil {
			c.Close()
			return nil, err
		}
		res.Close()
	}
	var p *pidfd.Process
	if target.exe != nil {
		p, err = c.Exec(ctx, target.exe, argv, env)
	} else {
		p, err = c.ExecPath(ctx, target.path, argv, env)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return p, nil
}

// setupCalls are the system calls a Spawn setup may make: those that act
// on the child's own fds, files, credentials, namespaces, limits and
// confinement, which it does not share with its parent. It is an
// allow-list, not a list of what to refuse, so that a call a new kernel
// adds (one that maps, protects or seals memory, say, which in the child
// would act on its parent's) is refused until it is judged and added
// here. What it leaves out: every call on memory (mmap, munmap, mprotect,
// brk, madvise, mlock, shmat, userfaultfd, mseal and the like), making
// processes or threads, signal handlers and the thread's own runtime
// state (rt_sigaction, sigaltstack, set_tid_address, arch_prctl), exec
// (Spawn's own last step) and exit. The map is made on first use: a
// command that never spawns does not pay for it at start-up.
var setupCalls = sync.OnceValue(func() map[uintptr]bool {
	return map[uintptr]bool{
		// Files and fds.
		unix.SYS_OPENAT: true, unix.SYS_OPENAT2: true, unix.SYS_CLOSE: true, unix.SYS_CLOSE_RANGE: true,
		unix.SYS_DUP: true, unix.SYS_DUP3: true, unix.SYS_FCNTL: true, unix.SYS_IOCTL: true,
		unix.SYS_READ: true, unix.SYS_WRITE: true, unix.SYS_PREAD64: true, unix.SYS_PWRITE64: true,
		unix.SYS_READV: true, unix.SYS_WRITEV: true, unix.SYS_LSEEK: true, unix.SYS_FTRUNCATE: true,
		unix.SYS_FSYNC: true, unix.SYS_FDATASYNC: true, unix.SYS_FLOCK: true, unix.SYS_PIPE2: true,
		unix.SYS_EVENTFD2: true, unix.SYS_MEMFD_CREATE: true,
		unix.SYS_FSTAT: true, unix.SYS_NEWFSTATAT: true, unix.SYS_STATX: true, unix.SYS_FSTATFS: true,
		unix.SYS_STATFS: true, unix.SYS_FACCESSAT: true, unix.SYS_FACCESSAT2: true,
		unix.SYS_READLINKAT: true, unix.SYS_GETDENTS64: true, unix.SYS_GETCWD: true,
		unix.SYS_CHDIR: true, unix.SYS_FCHDIR: true, unix.SYS_CHROOT: true, unix.SYS_UMASK: true,
		unix.SYS_MKDIRAT: true, unix.SYS_MKNODAT: true, unix.SYS_SYMLINKAT: true, unix.SYS_LINKAT: true,
		unix.SYS_UNLINKAT: true, unix.SYS_RENAMEAT2: true, unix.SYS_TRUNCATE: true,
		unix.SYS_FCHMOD: true, unix.SYS_FCHMODAT: true, unix.SYS_FCHMODAT2: true,
		unix.SYS_FCHOWN: true, unix.SYS_FCHOWNAT: true, unix.SYS_UTIMENSAT: true,
		// Mounts.
		unix.SYS_MOUNT: true, unix.SYS_UMOUNT2: true, unix.SYS_PIVOT_ROOT: true,
		unix.SYS_OPEN_TREE: true, unix.SYS_MOVE_MOUNT: true, unix.SYS_MOUNT_SETATTR: true,
		unix.SYS_FSOPEN: true, unix.SYS_FSCONFIG: true, unix.SYS_FSMOUNT: true, unix.SYS_FSPICK: true,
		// Sockets.
		unix.SYS_SOCKET: true, unix.SYS_SOCKETPAIR: true, unix.SYS_BIND: true, unix.SYS_CONNECT: true,
		unix.SYS_LISTEN: true, unix.SYS_SETSOCKOPT: true, unix.SYS_GETSOCKOPT: true,
		unix.SYS_SENDMSG: true, unix.SYS_RECVMSG: true, unix.SYS_SENDTO: true, unix.SYS_RECVFROM: true,
		unix.SYS_SHUTDOWN: true,
		// Credentials and identity.
		unix.SYS_SETUID: true, unix.SYS_SETGID: true, unix.SYS_SETREUID: true, unix.SYS_SETREGID: true,
		unix.SYS_SETRESUID: true, unix.SYS_SETRESGID: true, unix.SYS_SETGROUPS: true,
		unix.SYS_SETFSUID: true, unix.SYS_SETFSGID: true, unix.SYS_CAPSET: true, unix.SYS_CAPGET: true,
		unix.SYS_GETPID: true, unix.SYS_GETPPID: true, unix.SYS_GETTID: true,
		unix.SYS_GETUID: true, unix.SYS_GETEUID: true, unix.SYS_GETGID: true, unix.SYS_GETEGID: true,
		unix.SYS_GETRESUID: true, unix.SYS_GETRESGID: true, unix.SYS_GETGROUPS: true,
		// Sessions, namespaces, limits, scheduling.
		unix.SYS_SETSID: true, unix.SYS_SETPGID: true,
		unix.SYS_UNSHARE: true, unix.SYS_SETNS: true, unix.SYS_SETHOSTNAME: true, unix.SYS_SETDOMAINNAME: true,
		unix.SYS_PRLIMIT64: true, unix.SYS_SETRLIMIT: true, unix.SYS_SETPRIORITY: true,
		unix.SYS_SCHED_SETAFFINITY: true, unix.SYS_SCHED_SETSCHEDULER: true, unix.SYS_IOPRIO_SET: true,
		// Confinement.
		unix.SYS_PRCTL: true, unix.SYS_SECCOMP: true, // prctl: the options in setupPrctl only
		unix.SYS_LANDLOCK_CREATE_RULESET: true, unix.SYS_LANDLOCK_ADD_RULE: true, unix.SYS_LANDLOCK_RESTRICT_SELF: true,
		// Processes, by fd or pid, without making any.
		unix.SYS_PIDFD_OPEN: true, unix.SYS_PIDFD_GETFD: true, unix.SYS_PIDFD_SEND_SIGNAL: true,
		unix.SYS_KILL: true, unix.SYS_UNAME: true,
	}
})

// setupPrctl are the prctl options a Spawn setup may use: they act on the
// thread's credentials, capabilities, name and parent-death signal, not
// on the memory (PR_SET_MM, PR_SET_DUMPABLE, PR_SET_VMA and the like are
// not here, nor any option a new kernel adds). Made on first use.
var setupPrctl = sync.OnceValue(func() map[uint64]bool {
	return map[uint64]bool{
		unix.PR_SET_NO_NEW_PRIVS: true, unix.PR_GET_NO_NEW_PRIVS: true,
		unix.PR_CAPBSET_DROP: true, unix.PR_CAPBSET_READ: true, unix.PR_CAP_AMBIENT: true,
		unix.PR_SET_KEEPCAPS: true, unix.PR_GET_KEEPCAPS: true,
		unix.PR_SET_SECUREBITS: true, unix.PR_GET_SECUREBITS: true,
		unix.PR_SET_PDEATHSIG: true, unix.PR_GET_PDEATHSIG: true,
		unix.PR_SET_NAME: true, unix.PR_GET_NAME: true,
		unix.PR_SET_CHILD_SUBREAPER: true, unix.PR_GET_DUMPABLE: true,
		unix.PR_SET_SECCOMP: true, unix.PR_GET_SECCOMP: true,
	}
})

// checkSpawn checks Spawn's arguments.
func checkSpawn(setup *Batch, target execTarget) error {
	if target.exe == nil && target.path == "" {
		return &os.PathError{Op: "execveat", Path: "<nil>", Err: syscall.EBADF}
	}
	if setup == nil {
		return nil
	}
	if setup.err != nil {
		return setup.err
	}
	for i, c := range setup.calls {
		switch {
		case c.kind == opStore && c.args[0].kind == valDataOff:
			// A store into the batch's own data (a struct's fd field):
			// request memory, which is the child's while it sets up.
		case c.kind != opSyscall:
			return fmt.Errorf("proc: spawn: setup call %d (%s) is not a system call", i, c.name)
		case slices.ContainsFunc(c.args[:], func(v Val) bool { return v.addr }):
			return fmt.Errorf("proc: spawn: setup call %d (%s) passes an address (proc.Ptr): the child shares its parent's memory while it sets up, so its calls may point only into the batch's own data (In, Out, CString): make it in a Run after Fork", i, c.name)
		case !setupCalls()[c.nr]:
			return fmt.Errorf("proc: spawn: setup call %d (%s) is not one a spawn's setup may make (it may act on memory, which the child shares with its parent): make it in a Run after Fork", i, c.name)
		case c.nr == unix.SYS_PRCTL && (c.args[0].kind != valLit || !setupPrctl()[c.args[0].v]):
			return fmt.Errorf("proc: spawn: setup call %d (%s) is not one a spawn's setup may make (it may act on memory, which the child shares with its parent): make it in a Run after Fork", i, c.name)
		}
	}
	return nil
}

// announceSize is the size of the message in which a child of opSpawn
// sends its own pidfd to the caller, ahead of its server's reply (which is
// at least replyHeaderSize bytes).
const announceSize = 8

// spawn is Spawn from inside h. top says h is the plain zygote, whose
// children share the caller's pid namespace.
func (h *Handle) spawn(ctx context.Context, opts *Options, setup *Batch, target execTarget, argv, env []string, top bool) (_ *pidfd.Process, err error) {
	if h.peer != nil {
		return nil, ErrPeer
	}
	if err := checkSpawn(setup, target); err != nil {
		return nil, err
	}
	if err := checkNUL(target.name(), target.path, argv, env); err != nil {
		return nil, err
	}
	flags, parent := h.childParent(opts)
	parentIsUs := parent == nil
	if !spawnVM || raceBuild || opts.NewUser || opts.From == Direct || (parent != nil && parent != h && parent.pidns) {
		// A child whose status another process keeps must be tracked
		// there before it can exit: that takes the slow way.
		return spawnSlow(ctx, h, opts, setup, target, argv, env)
	}

	var b Batch
	b.spawn = true
	track := 0
	if parent == h && h.pidns {
		track = 1
	}
	spawned := b.add(call{kind: opSpawn, name: "clone", args: [6]Val{Uint(uint64(flags)), Int(track)}})
	// Where ctx can be cancelled, the new child starts by sending its own
	// pidfd to the caller on its copy of the server's control socket
	// (close-on-exec: gone once it execs), ahead of the server's reply,
	// so that a cancelled ctx kills it by that pidfd, never by a pid that
	// could name another process by then. Its number in the server's fd
	// table is filled in under h.mu.
	announce := -1
	if ctx.Done() != nil {
		self := b.sys("pidfd_open", unix.SYS_PIDFD_OPEN, b.sys("getpid", unix.SYS_GETPID), Int(0))
		b.Sendmsg(Int(-1), make([]byte, announceSize), []Val{self}, 0)
		announce = len(b.calls) - 1
	}
	base := len(b.calls)
	if setup != nil {
		b.blobs = append(b.blobs, setup.blobs...)
		b.files = append(b.files, setup.files...)
		for _, c := range setup.calls {
			c.args = shiftVals(c.args, base, len(b.blobs)-len(setup.blobs))
			c.fd = shiftVal(c.fd, base, 0)
			b.calls = append(b.calls, c)
		}
	}
	if !opts.NoParentDeathSignal {
		b.Prctl(unix.PR_SET_PDEATHSIG, Int(int(unix.SIGKILL)), Int(0), Int(0), Int(0))
	}
	dirfd, path, atFlags := AtFDCWD(), target.path, 0
	if target.exe != nil {
		dirfd, path, atFlags = b.PutFile(target.exe, -1), "", unix.AT_EMPTY_PATH
	}
	b.add(call{kind: opSyscall, nr: unix.SYS_EXECVEAT, name: "execveat", path: target.name(),
		args: [6]Val{dirfd, b.cstring("execveat", path), b.stringArray(argv), b.stringArray(env), Int(atFlags)}})
	if b.err != nil {
		return nil, b.err
	}
	if !b.fits() {
		return spawnSlow(ctx, h, opts, setup, target, argv, env)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	h.mu.Lock()
	if h.state != nil {
		h.mu.Unlock()
		return nil, h.state
	}
	// A cancelled ctx kills the child, not h, by the pidfd the child
	// announces (which may come after ctx is done).
	var kill spawnKiller
	if announce >= 0 {
		b.calls[announce].args[0] = Int(h.ctrl)
		b.calls[announce].fd = Int(h.ctrl)
		b.announced = kill.announced
		stop := context.AfterFunc(ctx, kill.kill)
		defer stop()
	}
	res, err := h.runLocked(context.WithoutCancel(ctx), &b)
	cancelled := kill.done()
	h.mu.Unlock()

	if res == nil || len(res.r) == 0 {
		if be, ok := err.(*BatchError); ok && be.Index == 0 {
			return nil, fmt.Errorf("proc: spawn: %w", be.Err)
		}
		return nil, err
	}
	pidfdFile := res.File(spawned)
	res.files = nil
	if pidfdFile == nil {
		// Without its pidfd the child cannot be waited for; it exits by
		// itself if it has not exec'd.
		return nil, fmt.Errorf("proc: spawn: child's pidfd did not arrive (%v)", err)
	}
	pfd, derr := takePidfd(pidfdFile)
	if derr != nil {
		return nil, derr
	}
	innerPid := res.Int(spawned)
	outerPid := 0
	if parentIsUs && top {
		outerPid = innerPid
	}
	p, perr := pidfd.New(pfd, outerPid, reaperFor(parent, innerPid))
	if perr != nil {
		return nil, perr
	}
	if err == nil && !cancelled {
		return p, nil
	}
	// The child failed before it exec'd, and exits, or ctx was done and it
	// was killed, perhaps just after it exec'd: reap it.
	p.Close()
	if cancelled {
		return nil, fmt.Errorf("proc: spawn: %w", ctx.Err())
	}
	var be *BatchError
	if !errors.As(err, &be) {
		return nil, err
	}
	if cerr := ctx.Err(); cerr != nil {
		return nil, fmt.Errorf("proc: spawn: %w", cerr)
	}
	last := len(b.calls) - 1
	switch {
	case be.Index == last:
		return nil, be.Err // the exec's *os.PathError
	case errors.Is(be.Err, syscall.ECHILD):
		return nil, fmt.Errorf("proc: spawn: the child died in %s", b.calls[be.Index].name)
	case be.Index >= base && setup != nil && be.Index < base+len(setup.calls):
		be.Index -= base
		be.Len = len(setup.calls)
		return nil, be
	}
	return nil, fmt.Errorf("proc: spawn: %w", be.Err)
}

// shiftVals renumbers the results and blobs that args refer to, for calls
// moved to index base and on, with blobs moved by blobs.
func shiftVals(args [6]Val, base, blobs int) [6]Val {
	for i, v := range args {
		args[i] = shiftVal(v, base, blobs)
	}
	return args
}

func shiftVal(v Val, base, blobs int) Val {
	switch v.kind {
	case valResult, valAux:
		v.v += uint64(base)
	case valData:
		v.v += uint64(blobs)
	case valDataOff:
		v.v += uint64(blobs)
	}
	return v
}

// fits reports whether b goes in one message, blobs and all.
func (b *Batch) fits() bool {
	if len(b.calls) > maxOps-1 || len(b.files) > maxFDs {
		return false
	}
	off := reqHeaderSize + len(b.calls)*wireOpSize
	for _, bl := range b.blobs {
		off += (bl.size + 7) &^ 7
	}
	return off <= arenaReqSize
}

// spawnKiller kills a child of opSpawn by the pidfd it announces, once
// ctx is done: the pidfd may come before or after that.
type spawnKiller struct {
	mu        sync.Mutex
	pidfd     *os.File
	cancelled bool // ctx was done before the reply
	over      bool // the reply came: nothing more to kill
}

// announced takes the child's pidfd, from roundTrip.
func (k *spawnKiller) announced(f *os.File) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.over {
		f.Close()
		return
	}
	k.pidfd = f
	if k.cancelled {
		k.signal()
	}
}

// kill runs when ctx is done.
func (k *spawnKiller) kill() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.over {
		return
	}
	k.cancelled = true
	if k.pidfd != nil {
		k.signal()
	}
}

// signal kills the child. k.mu is held and k.pidfd is set.
func (k *spawnKiller) signal() {
	unix.PidfdSendSignal(int(k.pidfd.Fd()), unix.SIGKILL, nil, 0)
}

// done ends k once the reply has come, closing the pidfd, and reports
// whether ctx was done (and the child killed) before.
func (k *spawnKiller) done() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.over = true
	if k.pidfd != nil {
		k.pidfd.Close()
		k.pidfd = nil
	}
	return k.cancelled
}
