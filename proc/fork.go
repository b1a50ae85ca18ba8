package proc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/internal/fdctl"
	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/pidfd"
	"golang.org/x/sys/unix"
)

// Options say how to make a child. The zero Options make a child in all of
// its parent's namespaces, with its parent's credentials, root and working
// directory, an empty fd table, and kill-on-close.
type Options struct {
	// New namespaces for the child. NewUser without privilege needs the
	// kernel to allow unprivileged user namespaces (`caplin doctor` says).
	// A child with NewPID is its namespace's init: it reaps the orphans
	// given to it as they exit, and keeps the statuses of the children
	// made in it until their Processes are waited for (it keeps SIGCHLD
	// blocked while it serves; a program it execs, or that is spawned
	// from it, gets it unblocked).
	NewUser, NewMount, NewPID, NewNet, NewIPC, NewUTS, NewCgroup bool

	// UIDMap and GIDMap map IDs in a new user namespace to IDs in the
	// parent's. Nil maps, with NewUser, map 0 to the creator's effective
	// ID: the child sees itself as root, and what it creates is owned by
	// the caller outside. Mapping more than one ID needs privilege.
	UIDMap, GIDMap []IDMap

	// IDMapsBy, with NewUser, writes the new user namespace's ID maps in
	// proc's place: it is called with the child's pid, as the caller sees
	// it, once the child is made and before Fork returns, for the caller
	// (or a tool it runs, such as newuidmap) to write /proc/PID/uid_map,
	// gid_map and setgroups; UIDMap, GIDMap and AllowSetgroups are then not
	// used. Its error fails the fork.
	IDMapsBy func(ctx context.Context, pid int) error

	// AllowSetgroups leaves setgroups(2) enabled in a new user namespace.
	// By default "deny" is written to /proc/PID/setgroups, which an
	// unprivileged caller must do before writing a GID map anyway.
	AllowSetgroups bool

	// NoParentDeathSignal leaves out PR_SET_PDEATHSIG(SIGKILL). By default
	// a child is killed when the Go process that made it dies; see the
	// package documentation for the limits of that.
	NoParentDeathSignal bool

	// From says where the child comes from: which process forks it, whose
	// child it is, and how it dies with its owner. The zero value,
	// InTree, is the shared kill-on-close tree zygote. It counts for the
	// package-level Fork, Spawn and SpawnPath; a Handle's own Fork and
	// Spawn make the child inside the handle.
	From Origin
}

// Origin says where a child comes from (Options.From).
type Origin uint8

const (
	// InTree, the zero Origin, forks the child from the caller's tree
	// zygote, inside that zygote's pid namespace (and, without
	// CAP_SYS_ADMIN, its user namespace): when the caller dies, the child
	// and everything it forked, double-forked daemons included, die with
	// it. See the package documentation.
	InTree Origin = iota

	// Detached forks the child from a zygote that lives in the caller's
	// namespaces, as the caller's own child (CLONE_PARENT), in the
	// caller's pid and user namespaces. The child is still killed when
	// the caller dies (unless NoParentDeathSignal), but processes it
	// forks can outlive the caller. It needs no user namespace.
	Detached

	// Direct forks the child from the caller itself, with no zygote: one
	// fork and one process fewer, which suits a short-lived caller with a
	// small heap, such as a command-line tool. The cost of the fork grows
	// with the caller's memory (its page tables are copied), which the
	// zygotes avoid; the Go heap is not given to the child (MADV_DONTFORK
	// for the clone), so the caller's heap is not write-protected for
	// copy-on-write by it. As with Detached the child is the caller's own, in
	// the caller's namespaces but those asked for; it is killed when the
	// caller dies (unless NoParentDeathSignal), and so is everything in a
	// pid namespace it is the init of (NewPID).
	Direct
)

// String names o as the constant that spells it.
func (o Origin) String() string {
	switch o {
	case InTree:
		return "InTree"
	case Detached:
		return "Detached"
	case Direct:
		return "Direct"
	}
	return fmt.Sprintf("Origin(%d)", uint8(o))
}

// IDMap is one line of a uid_map or gid_map: Size IDs starting at Inside in
// the new namespace are IDs starting at Outside in the parent namespace.
type IDMap struct {
	Inside, Outside, Size int
}

// cloneFlags returns the clone flags for o.
func (o *Options) cloneFlags() uintptr {
	f := uintptr(unix.SIGCHLD) | unix.CLONE_PIDFD
	for _, ns := range []struct {
		on   bool
		flag uintptr
	}{
		{o.NewUser, unix.CLONE_NEWUSER}, {o.NewMount, unix.CLONE_NEWNS}, {o.NewPID, unix.CLONE_NEWPID},
		{o.NewNet, unix.CLONE_NEWNET}, {o.NewIPC, unix.CLONE_NEWIPC}, {o.NewUTS, unix.CLONE_NEWUTS},
		{o.NewCgroup, unix.CLONE_NEWCGROUP},
	} {
		if ns.on {
			f |= ns.flag
		}
	}
	return f
}

// The arena is mapped once per process, before the first fork, and kept:
// every child finds it at the same address.
var (
	arenaOnce sync.Once
	arenaAddr uintptr
	arenaErr  error
)

func arenaBase() uint64 { return uint64(arenaAddr) }

func mapArena() error {
	arenaOnce.Do(func() {
		b, err := unix.Mmap(-1, 0, arenaSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			arenaErr = os.NewSyscallError("mmap arena", err)
			return
		}
		setArena(b)
	})
	return arenaErr
}

// A zygote is a child forked once, early, by a thread that never exits;
// it drops the mappings of its parent's that it does not need, so forking
// from it costs the same whatever the size of the caller.
//
// There are two. The tree zygote (the default) is the init of a pid
// namespace of its own (made in a user namespace of its own when the caller
// lacks CAP_SYS_ADMIN). Every Fork is a fork of it, so it is the parent of
// the processes the caller builds, and, as the namespace's init, of every
// orphan there. It reaps them all as they exit (a reaper, as every handle
// forked with NewPID is: startReaper) and keeps the statuses of tracked
// processes in a reap table until their Process is waited for. As an init
// it cannot be signalled from inside its namespace (the processes built
// cannot kill it), nor by a terminal's ^C: an init gets only the signals it
// has handlers for, but for SIGKILL and SIGSTOP from outside. When the
// caller dies, the tree zygote gets the parent-death signal, and the kernel
// kills everything in its pid namespace: every process built, and
// everything they forked, double-forked daemons included.
//
// The plain zygote (Detached) lives in the caller's namespaces and
// clones with CLONE_PARENT, so the caller is the parent of every child; the
// children get only the parent-death signal.
//
// Both are forked by the forker thread, so the parent-death signal, which
// fires when the parent *thread* exits (go.dev/issue/27505), fires only
// when the whole process dies.
type zygote struct {
	mu       sync.Mutex
	h        *Handle
	tree     bool
	req      chan chan zygoteResult
	building *zygoteBuild // the build under way, if any
}

type zygoteResult struct {
	h   *Handle
	err error
}

// zygoteBuild is one attempt at making a zygote, which every caller that
// needs the zygote meanwhile waits for.
type zygoteBuild struct {
	done chan struct{}
	err  error // set before done is closed
}

// zygoteBuildTime bounds a zygote's making: a few round trips to a fresh
// child, which never take long unless something is badly wrong.
const zygoteBuildTime = time.Minute

var (
	plainZygote = &zygote{}
	treeZygote  = &zygote{tree: true}
)

// Prepare makes, ahead of time, the zygote that Fork and Spawn with opts
// use, which the first of them would otherwise make (once per process and
// zygote: a fork and a few round trips). It returns once the zygote
// serves, or with ctx's error when ctx is done first; the zygote is then
// still being made for the next caller. Options.From = Direct needs no
// zygote: Prepare then readies what the first Direct fork would (the
// thread it forks from, the memory it shares with its children, the
// runtime's poller that its child's Process waits through, the reading of
// the mappings the child is not given), which a command can have done on
// another CPU while it does something else.
func Prepare(ctx context.Context, opts *Options) error {
	if opts == nil {
		opts = &Options{}
	}
	if opts.From == Direct {
		if err := mapArena(); err != nil {
			return err
		}
		if _, err := argRanges(); err != nil {
			return err
		}
		onForkerThread(func() {})
		startPoller()
		if m, err := readMappings(); err == nil {
			preparedMaps.Store(m)
		}
		return checkForkHooks()
	}
	zy, err := zygoteFor(opts.From)
	if err != nil {
		return err
	}
	_, err = zy.get(ctx)
	return err
}

// startPoller starts the runtime's poller, which the first pidfd a
// Process is made from would otherwise start (an epoll instance and an
// eventfd, set up once per process), by registering an eventfd with it.
func startPoller() {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return // the first Process starts it
	}
	os.NewFile(uintptr(fd), "eventfd").Close()
}

// Shutdown ends the zygotes this process made, if any, and reaps them: the
// tree zygote's end kills every process still in its pid namespace. A
// command calls it before it exits, so that it leaves no child behind for
// init to reap. Handles and Processes of children forked through a zygote
// are of no use after it; a later Fork or Spawn makes a new zygote. It
// returns ctx's error if ctx is done before a zygote is reaped.
func Shutdown(ctx context.Context) error {
	var first error
	for _, z := range []*zygote{treeZygote, plainZygote} {
		if err := z.shutdown(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// shutdown kills z's zygote, if it has one, and waits until it is reaped.
func (z *zygote) shutdown(ctx context.Context) error {
	z.mu.Lock()
	h := z.h
	z.h = nil
	z.mu.Unlock()
	if h == nil {
		return nil
	}
	p := h.Process()
	p.Kill()
	_, err := p.Wait(ctx)
	h.Close()
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// get returns a live zygote handle, making one if needed. The zygote is
// made apart from ctx, so that one caller's cancelled ctx does not fail
// it for the others: a caller whose ctx is done stops waiting and gets
// ctx's error.
func (z *zygote) get(ctx context.Context) (*Handle, error) {
	z.mu.Lock()
	if z.h != nil {
		z.h.mu.Lock()
		ok := z.h.state == nil
		z.h.mu.Unlock()
		if ok {
			h := z.h
			z.mu.Unlock()
			return h, nil
		}
		z.h.Close()
		z.h = nil
	}
	b := z.building
	if b == nil {
		b = &zygoteBuild{done: make(chan struct{})}
		z.building = b
		go z.build(b)
	}
	z.mu.Unlock()
	select {
	case <-b.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if b.err != nil {
		return nil, b.err
	}
	return z.get(ctx)
}

// build makes the zygote, for b's waiters.
func (z *zygote) build(b *zygoteBuild) {
	ctx, cancel := context.WithTimeout(context.Background(), zygoteBuildTime)
	defer cancel()
	h, err := z.make(ctx)
	name := "plain zygote"
	if z.tree {
		name = "tree zygote"
	}
	if err != nil {
		err = fmt.Errorf("proc: starting the %s: %w", name, err)
	}
	z.mu.Lock()
	z.h = h
	z.building = nil
	b.err = err
	z.mu.Unlock()
	close(b.done)
}

// make forks a zygote and readies it.
func (z *zygote) make(ctx context.Context) (*Handle, error) {
	z.mu.Lock()
	if z.req == nil {
		z.req = make(chan chan zygoteResult)
		go z.forker(z.req)
	}
	req := z.req
	z.mu.Unlock()
	c := make(chan zygoteResult)
	req <- c
	r := <-c
	if r.err != nil {
		return nil, r.err
	}
	h := r.h
	if err := scrubArgs(ctx, h); err != nil {
		h.Close()
		return nil, err
	}
	if z.tree {
		// The tree zygote is the parent of the processes built in it, and
		// of every orphan there: it reaps them all as they exit, and
		// keeps the statuses of the ones Processes wait for in a table
		// of its own (startReaper).
		h.spawner = true
	}
	return h, nil
}

// scrubArgs zeroes, in zygote h, the caller's command line and environment,
// which the zygote's copy of the caller's memory still holds: every process
// forked from it would show them in /proc/PID/cmdline and environ until it
// execs, and the init of a sandbox never does. (A Direct child zeroes
// its copy itself as it starts: see forkDirect.)
func scrubArgs(ctx context.Context, h *Handle) error {
	rs, err := argRanges()
	if err != nil {
		return err
	}
	for _, r := range rs {
		if err := h.WriteMem(ctx, uintptr(r[0]), make([]byte, r[1])); err != nil {
			return fmt.Errorf("zeroing the command line: %w", err)
		}
	}
	return nil
}

// argRanges returns where this process's command line and environment are
// in its memory, as (address, length) pairs, from fields 48 to 51 of
// /proc/self/stat (arg_start, arg_end, env_start, env_end); none where the
// kernel does not say. They are read once: they do not move.
var argRanges = sync.OnceValues(func() ([][2]uint64, error) {
	b, err := kernel.ReadFile("/proc/self/stat")
	if err != nil {
		return nil, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil, errors.New("/proc/self/stat: no command name")
	}
	// The first field after the command name is field 3.
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 51-2 {
		return nil, nil // an old kernel without them: nothing to find them by
	}
	var rs [][2]uint64
	for _, r := range [][2]string{{f[48-3], f[49-3]}, {f[50-3], f[51-3]}} {
		start, err1 := strconv.ParseUint(r[0], 10, 64)
		end, err2 := strconv.ParseUint(r[1], 10, 64)
		if err1 != nil || err2 != nil || end <= start || end-start > 1<<20 {
			continue
		}
		rs = append(rs, [2]uint64{start, end - start})
	}
	return rs, nil
})

// forker runs on a locked OS thread that never exits.
func (z *zygote) forker(req chan chan zygoteResult) {
	runtime.LockOSThread()
	for c := range req {
		h, err := forkZygote(z.tree)
		c <- zygoteResult{h, err}
	}
}

// arenaMu serializes the use of the arena's fork arguments and pidfd
// slot by the threads that fork.
var arenaMu sync.Mutex

// directForker is the locked thread that forks children of the caller
// itself (Direct).
var directForker struct {
	once sync.Once
	req  chan func()
}

// onForkerThread runs fn on a locked OS thread that never exits, so that
// the parent-death signal of the children it forks fires only when the
// whole process dies.
func onForkerThread(fn func()) {
	directForker.once.Do(func() {
		directForker.req = make(chan func())
		go func() {
			runtime.LockOSThread()
			for f := range directForker.req {
				f()
			}
		}()
	})
	done := make(chan struct{})
	directForker.req <- func() { fn(); close(done) }
	<-done
}

// forkDirect forks a child of the caller itself (Direct).
func forkDirect(ctx context.Context, opts *Options) (_ *Handle, err error) {
	if err := mapArena(); err != nil {
		return nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	if err := checkForkHooks(); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, err
	}
	var cflags uint64
	if !opts.NoParentDeathSignal {
		cflags = uint64(flagPdeathsig)
	}
	if opts.NewPID {
		cflags |= uint64(flagReaper)
	}
	// The child zeroes its copy of the caller's command line and
	// environment itself, as it starts: see scrubArgs.
	scrub, err := argRanges()
	if err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("proc: fork: %w", err)
	}
	var pid uintptr
	var pfd int32
	var errno syscall.Errno
	onForkerThread(func() {
		what := uint64(rangesZero)
		noFork := dontForkRanges()
		if len(noFork) > 0 {
			what |= rangesDontFork
		}
		arenaMu.Lock()
		defer arenaMu.Unlock()
		writeForkArgs(forkArgs{flags: uint64(opts.cloneFlags()), ctrl: uint64(fds[1]), cflags: cflags, ranges: what}, noFork, scrub)
		syscall.ForkLock.Lock()
		pid, errno = forkChild(arenaAddr)
		syscall.ForkLock.Unlock()
		pfd = readPidfd()
	})
	unix.Close(fds[1])
	if errno != 0 {
		unix.Close(fds[0])
		return nil, fmt.Errorf("proc: fork: %w", os.NewSyscallError("clone", errno))
	}
	p, err := pidfd.New(int(pfd), int(pid), nil)
	if err != nil {
		unix.Close(fds[0])
		return nil, err
	}
	h := newHandle(fds[0], fds[1], p)
	h.pidns = opts.NewPID
	h.noPdeath = opts.NoParentDeathSignal
	defer func() {
		if err != nil {
			h.Close()
			if cerr := ctx.Err(); cerr != nil {
				err = cerr // the caller's cancellation, not the step it cut short
			}
		}
	}()
	if opts.NewUser && opts.IDMapsBy != nil {
		if err := opts.IDMapsBy(ctx, int(pid)); err != nil {
			return nil, fmt.Errorf("proc: fork: %w", err)
		}
	} else if opts.NewUser {
		uidMap, gidMap := opts.UIDMap, opts.GIDMap
		if uidMap == nil {
			uidMap = []IDMap{{0, os.Geteuid(), 1}}
		}
		if gidMap == nil {
			gidMap = []IDMap{{0, os.Getegid(), 1}}
		}
		if err := h.writeIDMaps(ctx, nil, true, int(pid), uidMap, gidMap, opts.AllowSetgroups); err != nil {
			return nil, fmt.Errorf("proc: fork: %w", err)
		}
	}
	return h, nil
}

// dontForkRanges returns the mappings a Direct child forked from the
// calling (forker) thread need not get: those a zygote unmaps (the Go
// heap), but for the arena and what directKeep lists. It returns none where
// they cannot be told, or are too many to list, and in a cgo build, where
// the thread's m (which the runtime's fork hook in the child reads) is
// not beside its TLS slot: the child then gets everything, which is
// correct, only slower.
//
// The mappings are those Prepare read, if it did since the last Direct
// fork: a mapping made since then is left out, so the child gets it, which
// is correct too; none is taken away meanwhile, as the Go runtime does not
// unmap (and the ranges to keep are found afresh). Else they are read now.
func dontForkRanges() [][2]uint64 {
	keep, err := directKeep()
	if err != nil {
		return nil
	}
	m := preparedMaps.Swap(nil)
	if m == nil {
		if m, err = readMappings(); err != nil {
			return nil
		}
	}
	ranges := m.ranges(append([][2]uintptr{{arenaAddr, arenaSize}}, keep...))
	if m.cgo || len(ranges) > maxUnmap || checkUnmap(ranges) != nil {
		return nil
	}
	return ranges
}

// forkZygote forks a zygote from the calling (forker) thread.
func forkZygote(tree bool) (*Handle, error) {
	if err := mapArena(); err != nil {
		return nil, err
	}
	flags := uint64(unix.SIGCHLD | unix.CLONE_PIDFD)
	userns := false
	if tree {
		flags |= unix.CLONE_NEWPID
		if !kernel.HasCap(unix.CAP_SYS_ADMIN) {
			flags |= unix.CLONE_NEWUSER
			userns = true
		}
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	// The zygote keeps the arena, and its stack (forkChild skips that).
	tls, err := tlsKeep()
	if err == nil {
		err = checkForkHooks()
	}
	if err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, err
	}
	ranges, err := unmapRanges(append([][2]uintptr{{arenaAddr, arenaSize}}, tls...))
	if err != nil || len(ranges) > maxUnmap {
		ranges = nil // keep everything: correct, only slower
	} else if err := checkUnmap(ranges); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, err
	}
	arenaMu.Lock()
	writeForkArgs(forkArgs{
		flags:  flags,
		ctrl:   uint64(fds[1]),
		cflags: uint64(flagPdeathsig) | uint64(flagReaper)*boolWord(tree),
		ranges: uint64(rangesUnmap) * boolWord(len(ranges) > 0),
	}, ranges, nil)
	syscall.ForkLock.Lock()
	pid, errno := forkChild(arenaAddr)
	syscall.ForkLock.Unlock()
	pfd := readPidfd()
	arenaMu.Unlock()
	unix.Close(fds[1])
	if errno != 0 {
		unix.Close(fds[0])
		if tree {
			ns := "CLONE_NEWPID"
			if userns {
				ns = "CLONE_NEWUSER|CLONE_NEWPID"
			}
			return nil, fmt.Errorf("kill-on-close needs a pid namespace, and clone(%s) failed: %w (are unprivileged user namespaces disabled? `caplin doctor` tells; Options.From = Detached does without)", ns, errno)
		}
		return nil, os.NewSyscallError("clone", errno)
	}
	p, err := pidfd.New(int(pfd), int(pid), nil)
	if err != nil {
		unix.Close(fds[0])
		return nil, err
	}
	h := newHandle(fds[0], fds[1], p)
	h.pidns = tree
	if len(tls) > 0 {
		h.tls = tls[0][0] + 4096
	}
	if userns {
		// The zygote's user namespace maps the caller's IDs to themselves,
		// so what the built processes do is done as the caller.
		id := []IDMap{{os.Geteuid(), os.Geteuid(), 1}}
		gid := []IDMap{{os.Getegid(), os.Getegid(), 1}}
		if err := h.writeIDMaps(context.Background(), nil, true, int(pid), id, gid, false); err != nil {
			h.Close()
			return nil, err
		}
	}
	return h, nil
}

// unmapRanges lists the mappings of this process the zygote can drop,
// but for the parts that overlap keep (the zygote's stack is in the heap
// too; forkChild keeps that). In a pure Go build those are all anonymous
// mappings (the Go heap, which is what grows with the caller, and the
// runtime's own) but the binary's bss, where compiler instrumentation keeps
// counters. In a cgo or race build libc's thread stacks and TLS are
// anonymous mappings too, and the child still runs with them, so only the
// Go heap goes: the run of adjacent anonymous mappings around a heap object.
func unmapRanges(keep [][2]uintptr) ([][2]uint64, error) {
	m, err := readMappings()
	if err != nil {
		return nil, err
	}
	return m.ranges(keep), nil
}

// mappings are this process's mappings as unmapRanges sees them: which
// are anonymous (but for the binary's bss), narrowed in a cgo (or race)
// build, whose libc keeps the g in its own TLS rather than in the m, to
// the run around the Go heap.
type mappings struct {
	maps []mapping
	cgo  bool
}

type mapping struct {
	start, end uint64
	anon       bool
}

// preparedMaps holds the mappings Prepare read for the next Direct fork
// (dontForkRanges), which reading them would hold up.
var preparedMaps atomic.Pointer[mappings]

// readMappings reads this process's mappings from /proc/self/maps.
func readMappings() (*mappings, error) {
	b, err := kernel.ReadFile("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	exe, _ := os.Readlink("/proc/self/exe")
	exe = strings.TrimSuffix(exe, " (deleted)")
	var maps []mapping
	cgo := false
	var prevEnd uint64
	prevExe := false
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		path := ""
		if len(fields) >= 6 {
			path = strings.TrimSuffix(strings.Join(fields[5:], " "), " (deleted)")
		}
		isExe := path != "" && path == exe
		followsExe := prevExe && start == prevEnd
		prevEnd, prevExe = end, isExe || followsExe
		if strings.Contains(path, ".so") {
			cgo = true
		}
		maps = append(maps, mapping{start, end, path == "" && !followsExe})
	}
	if cgo {
		// Keep only the run of anonymous mappings holding the heap.
		probe := uint64(heapAddr())
		at := -1
		for i, m := range maps {
			if m.start <= probe && probe < m.end {
				at = i
			}
		}
		if at < 0 || !maps[at].anon {
			return &mappings{cgo: cgo}, nil
		}
		lo, hi := at, at
		for lo > 0 && maps[lo-1].anon && maps[lo-1].end == maps[lo].start {
			lo--
		}
		for hi+1 < len(maps) && maps[hi+1].anon && maps[hi+1].start == maps[hi].end {
			hi++
		}
		maps = maps[lo : hi+1]
	}
	return &mappings{maps: maps, cgo: cgo}, nil
}

// ranges returns the anonymous mappings of ms but for the parts that
// overlap keep.
func (ms *mappings) ranges(keep [][2]uintptr) [][2]uint64 {
	var out [][2]uint64
	for _, m := range ms.maps {
		if !m.anon {
			continue
		}
		// Split the mapping around the ranges to keep.
		segs := [][2]uint64{{m.start, m.end}}
		for _, k := range keep {
			klo := uint64(k[0]) &^ 4095
			khi := (uint64(k[0]) + uint64(k[1]) + 4095) &^ 4095
			var next [][2]uint64
			for _, s := range segs {
				if khi <= s[0] || klo >= s[1] {
					next = append(next, s)
					continue
				}
				if klo > s[0] {
					next = append(next, [2]uint64{s[0], klo})
				}
				if khi < s[1] {
					next = append(next, [2]uint64{khi, s[1]})
				}
			}
			segs = next
		}
		for _, s := range segs {
			out = append(out, [2]uint64{s[0], s[1] - s[0]})
		}
	}
	return out
}

func boolWord(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// Fork makes a new child and returns a handle to it. The child is a fresh,
// single-threaded process that runs calls for the handle and holds no fd
// of the caller's but its control socket (which is close-on-exec). The
// caller is the child's parent. On error no child is left behind.
func Fork(ctx context.Context, opts *Options) (*Handle, error) {
	if opts == nil {
		opts = &Options{}
	}
	if opts.From == Direct {
		return forkDirect(ctx, opts)
	}
	return throughZygote(ctx, opts, func(z *Handle, top bool) (*Handle, error) {
		return z.forkat(ctx, opts, top, 0, nil)
	})
}

// throughZygote runs fn with the zygote opts ask for (zygoteFor) and whether its children are the caller's
// (top). A zygote found dead is made again, once.
func throughZygote[T any](ctx context.Context, opts *Options, fn func(z *Handle, top bool) (T, error)) (T, error) {
	zy, err := zygoteFor(opts.From)
	if err != nil {
		var zero T
		return zero, err
	}
	for try := 0; ; try++ {
		z, err := zy.get(ctx)
		if err != nil {
			var zero T
			return zero, err
		}
		v, err := fn(z, !zy.tree)
		if errors.Is(err, ErrDead) && try == 0 {
			continue // the zygote died (it never should); make another, once
		}
		return v, err
	}
}

// zygoteFor returns the zygote that children from from are forked by:
// the tree one for InTree, the plain one for Detached.
func zygoteFor(from Origin) (*zygote, error) {
	switch from {
	case InTree:
		return treeZygote, nil
	case Detached:
		return plainZygote, nil
	}
	return nil, fmt.Errorf("proc: no zygote for Options.From %v", from)
}

// Fork makes a new child from inside h: it is a copy of h's child, in its
// namespaces, with its credentials, root and working directory, and an
// empty fd table but for its own control socket. This is forkat: h may be
// inside user, mount or pid namespaces the caller is not in.
//
// The new child gets h's child's parent (CLONE_PARENT): the tree zygote,
// which reaps it for its Process, or, for a detached h, the caller. If h's
// child is the init of a pid namespace (Options.NewPID), which cannot use
// CLONE_PARENT, h's child is the parent, and waiting for the new child's
// Process asks h to reap it, so h must stay open until then.
func (h *Handle) Fork(ctx context.Context, opts *Options) (*Handle, error) {
	if opts == nil {
		opts = &Options{}
	}
	return h.forkat(ctx, opts, false, 0, nil)
}

// ForkAfter is Fork, with the calls of pre run first in h's child, in the
// same round trip: a step h's child takes before it forks (taking other
// IDs, making a namespace its children are to share) then costs no round
// trip of its own. If a call of pre fails, nothing is forked, and the
// error is a *BatchError whose Index is that call's in pre. pre is used up,
// as by Run; it may be empty or nil.
func (h *Handle) ForkAfter(ctx context.Context, pre *Batch, opts *Options) (*Handle, error) {
	if opts == nil {
		opts = &Options{}
	}
	if pre != nil && pre.spawn {
		return nil, errors.New("proc: ForkAfter: pre is a spawn's setup")
	}
	return h.forkat(ctx, opts, false, 0, pre)
}

// forkat makes the child of Fork, or, with a shared region (an arena and a
// stack allocated in h's child's memory), of ForkShared: a server that
// shares that memory and serves on that arena (opServe). The calls of pre,
// if any, run first in h's child (ForkAfter).
func (h *Handle) forkat(ctx context.Context, opts *Options, top bool, shared uintptr, pre *Batch) (_ *Handle, err error) {
	if h.peer != nil {
		return nil, ErrPeer
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	ours := fds[0]
	defer func() {
		if err != nil {
			unix.Close(ours)
		}
	}()
	theirs := os.NewFile(uintptr(fds[1]), "ctrl")
	defer theirs.Close()

	// Default ID maps name the IDs the handle runs as.
	uidMap, gidMap := opts.UIDMap, opts.GIDMap
	if opts.NewUser && opts.IDMapsBy == nil && (uidMap == nil || gidMap == nil) {
		uid, gid := os.Geteuid(), os.Getegid()
		if !top {
			// The IDs h's child has once pre has run.
			if pre != nil && pre.Len() > 0 {
				if _, err := h.Run(ctx, pre); err != nil {
					return nil, err
				}
				pre = nil
			}
			var b Batch
			u, g := b.Geteuid(), b.Getegid()
			r, err := h.Run(ctx, &b)
			if err != nil {
				return nil, err
			}
			uid, gid = r.Int(u), r.Int(g)
		}
		if uidMap == nil {
			uidMap = []IDMap{{0, uid, 1}}
		}
		if gidMap == nil {
			gidMap = []IDMap{{0, gid, 1}}
		}
	}

	flags, parent := h.childParent(opts)
	parentIsUs := parent == nil
	var cflags uint32
	if !opts.NoParentDeathSignal {
		cflags |= flagPdeathsig
	}
	if opts.NewPID {
		cflags |= flagReaper
	}
	b := pre.continued()
	npre := b.Len()
	ctrl := b.PutFile(theirs, -1)
	ctrlNum := b.add(call{kind: opValue, name: "value", args: [6]Val{ctrl}})
	var pid, pfd Val
	if shared != 0 {
		// opServe sends the pidfd with the reply itself.
		pid = b.add(call{kind: opServe, flags: cflags, name: "clone", args: [6]Val{Uint(uint64(flags)), Ptr(shared), ctrl}})
		pfd = pid
	} else {
		pid = b.add(call{kind: opFork, flags: cflags, name: "clone", args: [6]Val{Uint(uint64(flags)), ctrl}})
		pfd = b.takeAndClose(Val{kind: valAux, v: pid.v})
	}
	b.CloseFD(ctrl)
	if h.pidns && parent == h {
		b.add(call{kind: opTrack, name: "track", args: [6]Val{Int(0), Int(0), pid}})
	}
	res, err := h.Run(ctx, &b)
	if err != nil {
		var be *BatchError
		if errors.As(err, &be) && be.Index < npre {
			return nil, err // a call of pre: no child
		}
		if errors.As(err, &be) && be.Index == int(pid.v) {
			// clone failed: no child. Name the namespaces asked for.
			return nil, fmt.Errorf("proc: fork: %w", be.Err)
		}
		if res != nil && len(res.r) > int(pid.v) {
			// The child exists but the batch failed after the clone: kill
			// it by pid through the handle, and reap it if it is ours (a
			// zygote reaps its own, tracked or not).
			h.Run(context.Background(), killBatch(res.Int(pid)))
			if parentIsUs {
				var ws unix.WaitStatus
				unix.Wait4(res.Int(pid), &ws, 0, nil)
			}
			res.Close()
		}
		return nil, err
	}
	pidfdFile := res.File(pfd)
	if pidfdFile == nil {
		return nil, fmt.Errorf("proc: fork: child's pidfd did not arrive")
	}
	fd, err := takePidfd(pidfdFile)
	if err != nil {
		return nil, err
	}
	innerPid := res.Int(pid)
	reap := reaperFor(parent, innerPid)
	// A child whose parent keeps a reap table is tracked there, so its
	// status is kept for its Process when its parent reaps it.
	if parent != nil && parent.pidns && parent != h {
		var t Batch
		t.add(call{kind: opTrack, name: "track", args: [6]Val{Int(0), Int(0), Int(innerPid)}})
		if _, err := parent.Run(ctx, &t); err != nil {
			h.Run(context.Background(), killBatch(innerPid))
			unix.Close(fd)
			return nil, fmt.Errorf("proc: fork: tracking the child in its parent: %w", err)
		}
	}
	// The pid as the caller sees it: the same number when the handle shares
	// our pid namespace; else pidfd.New reads it from the pidfd.
	outerPid := 0
	if parentIsUs && top {
		outerPid = innerPid
	}
	p, err := pidfd.New(fd, outerPid, reap)
	if err != nil {
		return nil, err
	}
	child := newHandle(ours, res.Int(ctrlNum), p)
	child.arena = h.arena // a fork serves where its parent did
	if shared != 0 {
		child.arena = uint64(shared)
	}
	child.pidns = opts.NewPID
	child.noPdeath = opts.NoParentDeathSignal
	child.parent = parent
	defer func() {
		if err != nil {
			child.cleanup.Stop()
			child.sock = -1 // closed by the deferred close of ours
			p.Close()
		}
	}()
	if opts.NewUser && opts.IDMapsBy != nil {
		if err := opts.IDMapsBy(ctx, p.Pid()); err != nil {
			return nil, fmt.Errorf("proc: fork: %w", err)
		}
	} else if opts.NewUser {
		// A child writes its own maps unless they need a privilege over
		// the parent namespace's IDs that it lacks (and the caller has):
		// then the caller writes them, as for a child of its own.
		byUs := top || callerWritesMaps(opts.AllowSetgroups, uidMap, gidMap)
		if err := child.writeIDMaps(ctx, h, byUs, p.Pid(), uidMap, gidMap, opts.AllowSetgroups); err != nil {
			return nil, fmt.Errorf("proc: fork: %w", err)
		}
	}
	return child, nil
}

// callerWritesMaps reports whether the caller writes the ID maps of a
// child made inside a handle: maps that a process may not write for
// itself (more than its own ID, setgroups allowed), when the caller has
// the privilege to (CAP_SETUID and CAP_SETGID; the handle must then be in
// the caller's user namespace, as the tree zygote of such a caller is).
func callerWritesMaps(setgroups bool, uidMap, gidMap []IDMap) bool {
	self := func(m []IDMap, id int) bool { return len(m) == 1 && m[0].Size == 1 && m[0].Outside == id }
	if !setgroups && self(uidMap, os.Geteuid()) && self(gidMap, os.Getegid()) {
		return false
	}
	return kernel.HasCap(unix.CAP_SETUID) && kernel.HasCap(unix.CAP_SETGID)
}

// JoinPIDNamespace makes the children h's child forks from now on (Fork,
// Spawn) be born in the pid namespace ns, an open /proc/PID/ns/pid, by
// setns(2) in h's child, which itself stays where it is. The kernel lets a
// process make no sibling in another pid namespace (CLONE_PARENT), so h's
// child is their parent from then on: waiting for one asks h to reap it,
// and h must stay open until then. h's child needs CAP_SYS_ADMIN in its
// own user namespace and in the one that owns ns (setns(2)): it may have
// joined that one first, say.
func (h *Handle) JoinPIDNamespace(ctx context.Context, ns *os.File) error {
	if h.peer != nil {
		return ErrPeer
	}
	var b Batch
	fd := b.PutFile(ns, -1)
	b.Setns(fd, unix.CLONE_NEWPID)
	b.CloseFD(fd)
	if _, err := h.Run(ctx, &b); err != nil {
		return err
	}
	h.joinedPID.Store(true)
	return nil
}

// childParent returns the clone flags for a child made inside h with opts,
// and the child's parent: with CLONE_PARENT, the parent of h's child (nil
// for the caller); without it (h's child is a pid namespace's init, or the
// tree zygote), h's child itself.
func (h *Handle) childParent(opts *Options) (uintptr, *Handle) {
	flags := opts.cloneFlags()
	if h.pidns || h.spawner || h.joinedPID.Load() {
		return flags, h
	}
	return flags | unix.CLONE_PARENT, h.parent
}

// takePidfd turns the pidfd a server sent for its new child into an fd
// of the caller's own, close-on-exec, for pidfd.New, and closes f.
func takePidfd(f *os.File) (int, error) {
	fd, err := fdctl.Dup(int(f.Fd()))
	f.Close()
	return fd, err
}

// reaperFor returns how a Process waits for child pid of parent: through
// parent, or, when the caller is the parent (nil), by itself.
func reaperFor(parent *Handle, pid int) pidfd.Reaper {
	if parent == nil {
		return nil
	}
	return func(ctx context.Context) (*pidfd.State, error) { return parent.reap(ctx, pid) }
}

func killBatch(pid int) *Batch {
	var b Batch
	b.Kill(Int(pid), syscall.SIGKILL)
	return &b
}

// reap reaps, inside h, h's child pid, which has exited.
func (h *Handle) reap(ctx context.Context, pid int) (*pidfd.State, error) {
	if h.pidns {
		var b Batch
		ent := make([]byte, reapEntrySize)
		found := b.add(call{kind: opReap, name: "reap", args: [6]Val{Int(0), Int(0), Int(pid), b.Out(ent)}})
		res, err := h.Run(ctx, &b)
		if err != nil {
			return nil, err
		}
		if res.Int(found) != 1 {
			return nil, fmt.Errorf("proc: reap %d: no exit status (was it waited for elsewhere?)", pid)
		}
		code, status := int32(binary.NativeEndian.Uint32(ent[8:])), int32(binary.NativeEndian.Uint32(ent[12:]))
		return pidfd.NewState(pid, code, status, rusageFrom(ent[16:])), nil
	}
	var b Batch
	info := make([]byte, 128)
	ru := make([]byte, sizeofRusage)
	b.sys("waitid", unix.SYS_WAITID, Int(unix.P_PID), Int(pid), b.Out(info), Int(unix.WEXITED), b.Out(ru))
	if _, err := h.Run(ctx, &b); err != nil {
		return nil, err
	}
	code, status := siginfoCodeStatus(info)
	return pidfd.NewState(pid, code, status, rusageFrom(ru)), nil
}

// writeIDMaps writes the new child's uid and gid maps. For a child of the
// zygote the caller writes /proc/PID/*_map itself (any map its privilege
// allows); a child made inside another handle writes its own maps through
// /proc/self, which the kernel allows for one line that maps the ID it runs
// as.
func (c *Handle) writeIDMaps(ctx context.Context, parent *Handle, top bool, pid int, uidMap, gidMap []IDMap, setgroups bool) error {
	sg := "deny"
	if setgroups {
		sg = "allow"
	}
	files := []struct{ name, data string }{
		{"setgroups", sg},
		{"uid_map", formatIDMap(uidMap)},
		{"gid_map", formatIDMap(gidMap)},
	}
	if top {
		for _, f := range files {
			path := "/proc/" + strconv.Itoa(pid) + "/" + f.name
			if err := writeProcFile(path, f.data); err != nil {
				return fmt.Errorf("writing %s: %w", f.name, err)
			}
		}
		return nil
	}
	var b Batch
	for _, f := range files {
		path := "/proc/self/" + f.name
		fd := b.Openat(AtFDCWD(), path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		b.Write(fd, []byte(f.data))
		b.CloseFD(fd)
	}
	if _, err := c.Run(ctx, &b); err != nil {
		return fmt.Errorf("writing ID maps: %w", err)
	}
	return nil
}

// writeProcFile writes data to the existing file path in one write, with
// plain system calls: a /proc file needs no buffering and no poller, which
// os.WriteFile would register it with.
func writeProcFile(path, data string) error {
	var fd int
	var err error
	for {
		fd, err = unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	n, err := unix.Write(fd, []byte(data))
	if err == nil && n < len(data) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

func formatIDMap(m []IDMap) string {
	var sb strings.Builder
	for _, l := range m {
		fmt.Fprintf(&sb, "%d %d %d\n", l.Inside, l.Outside, l.Size)
	}
	return sb.String()
}
