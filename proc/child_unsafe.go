//go:build linux && (amd64 || arm64)

package proc

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The child side of the protocol. Everything in this file that runs after
// clone runs in a process that is a copy of one thread of a Go program: no
// runtime, no scheduler, no other threads, and locks that may be held
// forever. So, like syscall.forkAndExecInChild, the code here is nosplit (the
// stack cannot grow), norace and nocheckptr (no instrumentation calls into
// the runtime), takes no locks, allocates nothing and stores no Go pointers
// (a pointer store may call the GC write barrier). Memory it touches is the
// arena, which the parent maps before forking, and its own stack frame.

// The runtime's fork hooks, which it pushes to package syscall for
// syscall.forkAndExecInChild and promises to keep, signature and all, for
// the packages that link to them (go.dev/issue/67401); were one removed
// or renamed, the link would fail. What else they must do is
// listed in runtime.go, and checked there (checkForkHooks) where it can be.

// runtime_BeforeFork blocks every signal on the calling thread (saving the
// mask in its m) and poisons the goroutine's stack guard, so that nothing
// between it and the clone may grow the stack. Contract: callable nosplit
// from any goroutine, paired with AfterFork or AfterForkInChild.
//
//go:linkname runtime_BeforeFork syscall.runtime_BeforeFork
func runtime_BeforeFork()

// runtime_AfterFork, in the parent, restores the stack guard and the
// signal mask BeforeFork saved.
//
//go:linkname runtime_AfterFork syscall.runtime_AfterFork
func runtime_AfterFork()

// runtime_AfterForkInChild, in the child, resets every signal handler
// the runtime installed to the default (keeping those ignored) and
// restores the signal mask, without allocating or growing the stack: the
// child has no other thread, no scheduler and no heap it may use after.
//
//go:linkname runtime_AfterForkInChild syscall.runtime_AfterForkInChild
func runtime_AfterForkInChild()

// rawMsghdr and rawIovec have the layout of unix.Msghdr and unix.Iovec on
// 64-bit Linux with uintptr in place of pointers, so the child can fill them
// in without write barriers. TestRawLayout checks them against x/sys.
type rawMsghdr struct {
	name       uintptr
	namelen    uint32
	_          uint32
	iov        uintptr
	iovlen     uint64
	control    uintptr
	controllen uint64
	flags      int32
	_          int32
}

type rawIovec struct {
	base uintptr
	len  uint64
}

// The reply's control buffer (arenaCmsgOut) holds the fds a batch queues
// for its reply, a header and at most maxFDs of them. Between batches a
// reaper waits with it as scratch (awaitRequest): a sigset at 0, two
// pollfds at cmsgOutPoll, signalfd records read at cmsgOutSignals. During
// a batch, past the fds, a siginfo for tableOp at cmsgOutSiginfo.
const (
	cmsgOutPoll        = 16
	cmsgOutSignals     = 64
	cmsgOutSignalsSize = 8 * 128
	cmsgOutSiginfo     = 1536
)

// Offsets inside the arena's misc area.
const (
	miscRecvMsg  = arenaMisc + 0   // rawMsghdr for recvmsg
	miscSendMsg  = arenaMisc + 64  // rawMsghdr for sendmsg
	miscRecvIov  = arenaMisc + 128 // one rawIovec
	miscSendIov  = arenaMisc + 144 // two rawIovecs
	miscPidfd    = arenaMisc + 176 // int32 written by clone(CLONE_PIDFD)
	miscForkArgs = arenaMisc + 192 // forkArgs for the first fork
	miscState    = arenaMisc + 224 // childState
	miscScratch  = arenaMisc + 320 // two words nobody reads
	miscUnmap    = arenaMisc + 336 // count, then (addr, len) pairs
	maxUnmap     = (arenaMiscSize - 336 - 8 - (8 + 16*maxZero)) / 16
	miscZero     = arenaMisc + arenaMiscSize - (8 + 16*maxZero) // count, then (addr, len) pairs
	maxZero      = 2
)

// forkArgs is what a child needs from its parent at birth. The parent
// writes it into the arena before forking.
type forkArgs struct {
	flags  uint64 // clone flags
	ctrl   uint64 // the child's end of the control socket
	cflags uint64 // flagPdeathsig, flagReaper
	ranges uint64 // rangesUnmap, rangesDontFork, rangesZero: what to do with the ranges listed
}

// What is done with the ranges listed in the arena, bits of forkArgs.ranges.
const (
	// rangesUnmap: the child munmaps those at miscUnmap (a zygote: what it
	// does not need).
	rangesUnmap = 1 << iota
	// rangesDontFork: the parent marks those at miscUnmap MADV_DONTFORK
	// for the clone, so that the child does not get them (a Direct
	// child: the Go heap), and MADV_DOFORK again after it. The parent's
	// pages are then not made copy-on-write, which its every later write
	// to them would pay for, and the clone copies fewer page tables.
	rangesDontFork
	// rangesZero: the child zeroes those at miscZero (the caller's
	// command line and environment).
	rangesZero
)

// exitOrphaned is the status of a child server whose parent went away
// before the child was exec'd.
const exitOrphaned = 125

// at returns the address arena+off as a pointer. The arena is mmap'd
// memory outside the Go heap, so the GC never needs to know about it.
//
//go:nosplit
//go:norace
//go:nocheckptr
func at(arena, off uintptr) unsafe.Pointer { return ptr(arena + off) }

// ptr converts a child address to a pointer.
//
//go:nosplit
//go:norace
//go:nocheckptr
func ptr(u uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&u)) }

// forkChild clones the calling thread into a new single-threaded process
// that serves requests on a.ctrl. It returns in the parent only.
//
//go:nosplit
//go:norace
//go:nocheckptr
//go:noinline
func forkChild(arena uintptr) (pid uintptr, errno syscall.Errno) {
	a := (*forkArgs)(at(arena, miscForkArgs))
	runtime_BeforeFork()
	if a.ranges&rangesDontFork != 0 {
		applyListed(arena, unix.SYS_MADVISE, unix.MADV_DONTFORK)
	}
	pid, _, errno = syscall.RawSyscall6(unix.SYS_CLONE, uintptr(a.flags), 0, arena+miscPidfd, 0, 0, 0)
	if errno != 0 || pid != 0 {
		if a.ranges&rangesDontFork != 0 {
			applyListed(arena, unix.SYS_MADVISE, unix.MADV_DOFORK)
		}
		runtime_AfterFork()
		return pid, errno
	}
	runtime_AfterForkInChild()
	childStart(arena)
	serve(arena)
	return 0, 0 // not reached
}

// childStart unmaps or zeroes what the fork args list, empties the fd
// table and arms the parent-death signal. It returns before serve is called, so its
// frame is not part of the serving call chain.
//
//go:nosplit
//go:norace
//go:nocheckptr
//go:noinline
func childStart(arena uintptr) {
	a := (*forkArgs)(at(arena, miscForkArgs))
	if a.ranges&rangesZero != 0 {
		n := *(*uint64)(at(arena, miscZero))
		for i := uintptr(0); i < uintptr(n); i++ {
			r := (*[2]uint64)(at(arena, miscZero+8+16*i))
			for p := uintptr(r[0]); p < uintptr(r[0]+r[1]); p++ {
				*(*byte)(ptr(p)) = 0
			}
		}
	}
	if a.ranges&rangesUnmap != 0 {
		applyListed(arena, unix.SYS_MUNMAP, 0)
	}
	childInit(uintptr(a.ctrl), uintptr(a.cflags))
	st := (*childState)(at(arena, miscState))
	st.ctrl = a.ctrl
	startReaper(st, uintptr(a.cflags), 0)
}

// applyListed makes the system call nr (munmap, or madvise with advice)
// on each range listed at miscUnmap, but for the stack this code runs on:
// 64 KiB either side of a local, which the callers' frames, and those of
// the child's serving call chain, are within. Failures are ignored: a range
// a zygote fails to unmap, or one the parent fails to mark, is kept or
// copied, which is correct, only slower.
//
//go:nosplit
//go:norace
//go:nocheckptr
//go:noinline
func applyListed(arena, nr, advice uintptr) {
	var marker uintptr
	sp := uintptr(unsafe.Pointer(&marker))
	klo, khi := (sp-64<<10)&^4095, (sp+64<<10)&^4095
	n := *(*uint64)(at(arena, miscUnmap))
	for i := uintptr(0); i < uintptr(n); i++ {
		r := (*[2]uint64)(at(arena, miscUnmap+8+16*i))
		lo, hi := uintptr(r[0]), uintptr(r[0]+r[1])
		if hi <= klo || lo >= khi {
			syscall.RawSyscall(nr, lo, hi-lo, advice)
			continue
		}
		if lo < klo {
			syscall.RawSyscall(nr, lo, klo-lo, advice)
		}
		if hi > khi {
			syscall.RawSyscall(nr, khi, hi-khi, advice)
		}
	}
}

// childState is the server's mutable state, kept in the arena rather than
// on the stack: the whole nosplit call chain must fit in the stack guard.
type childState struct {
	ctrl   uint64 // the control socket
	nrecv  uint64 // fds received with the current request
	nsend  uint64 // fds queued for the reply
	forked uint64 // 1 in a child just made by opFork

	// opSpawn: the server sets spawned once its child has exec'd or
	// exited; the child sets spawnAt to the index of each op before it
	// runs it, and spawnErr to the errno of the one that failed.
	spawned  uint64
	spawnAt  uint64
	spawnErr uint64

	// serving: set by opServe in the new server's arena, for spawnChild
	// to start serving rather than run a spawn; cflags are its opFork
	// flags.
	serving uint64
	cflags  uint64

	// A reaper (flagReaper: a pid namespace's init) keeps a reap table
	// of reapEntries entries of its own, mapped as it starts, and reaps
	// its children as they exit: SIGCHLD is blocked (reaping is 1), and
	// while it waits for a request it reads it from a signalfd.
	reapTable uint64
	reaping   uint64
	mask      uint64 // a sigset for sigchld
}

// childInit gives a new child an empty fd table but for ctrl, and arms the
// parent-death signal.
//
//go:nosplit
//go:norace
//go:nocheckptr
func childInit(ctrl, cflags uintptr) {
	if ctrl > 0 {
		closeFDs(0, ctrl-1)
	}
	closeFDs(ctrl+1, ^uintptr(0)>>32)
	if cflags&uintptr(flagPdeathsig) != 0 {
		syscall.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0)
	}
}

// startReaper makes the server of st a reaper if cflags has flagReaper:
// it maps its reap table (or empties the one at table, if not 0) and
// blocks SIGCHLD, so that awaitRequest reaps the children that exit while
// it waits for a request (the orphans of its pid namespace: nobody else
// would). Any other server forgets what it copied of its parent's, and
// unblocks SIGCHLD, which a reaper's children inherit blocked. Where the
// table cannot be mapped, the server is no reaper (tracking fails,
// ENOSPC).
//
//go:nosplit
//go:norace
//go:nocheckptr
//go:noinline
func startReaper(st *childState, cflags, table uintptr) {
	st.reapTable, st.reaping = 0, 0
	// A reaper's child inherits SIGCHLD blocked; a reaper without a
	// table (below) keeps it unblocked too.
	sigchld(st, unix.SIG_UNBLOCK)
	if cflags&uintptr(flagReaper) == 0 {
		return
	}
	if table != 0 {
		// A region used before: its pages read as zeroes again, or,
		// where madvise cannot (locked pages), its entries are freed.
		if _, _, e := syscall.RawSyscall(unix.SYS_MADVISE, table, reapTableSize, unix.MADV_DONTNEED); e != 0 {
			for k := uintptr(0); k < reapEntries; k++ {
				*(*int32)(ptr(table + reapScratch + k*reapEntrySize + 4)) = reapFree
			}
		}
	} else {
		var e syscall.Errno
		table, _, e = syscall.RawSyscall6(unix.SYS_MMAP, 0, reapTableSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
		if e != 0 {
			// No table: the server tracks nothing, reaps a child when
			// asked for it (tableOp), and orphans only with it.
			return
		}
	}
	st.reapTable = uint64(table)
	sigchld(st, unix.SIG_BLOCK)
	st.reaping = 1
}

// sigchld blocks or unblocks (how) SIGCHLD in the calling thread. The
// set is in st, not on the stack, which the nosplit chains bound.
//
//go:nosplit
//go:norace
//go:nocheckptr
//go:noinline
func sigchld(st *childState, how uintptr) {
	st.mask = 1 << (unix.SIGCHLD - 1)
	syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, how, uintptr(unsafe.Pointer(&st.mask)), 0, 8, 0, 0)
}

// closeFDs closes the descriptors from through to: with close_range, or,
// where that is refused (a caller's seccomp profile, as some container
// runtimes' are), one by one up to the hard limit of open files, so that
// a child never keeps its parent's descriptors silently.
//
//go:nosplit
//go:norace
//go:nocheckptr
func closeFDs(from, to uintptr) {
	// RawSyscall6 itself, not RawSyscall, which calls it: one frame
	// fewer on the child's nosplit stack.
	if _, _, e := syscall.RawSyscall6(unix.SYS_CLOSE_RANGE, from, to, 0, 0, 0, 0); e == 0 {
		return
	}
	var lim [2]uint64 // struct rlimit: cur, max
	max := uintptr(1 << 20)
	if _, _, e := syscall.RawSyscall6(unix.SYS_PRLIMIT64, 0, unix.RLIMIT_NOFILE, 0, uintptr(unsafe.Pointer(&lim)), 0, 0); e == 0 && lim[1] > 0 && lim[1] < uint64(max) {
		max = uintptr(lim[1])
	}
	if to >= max {
		to = max - 1
	}
	for fd := from; fd <= to; fd++ {
		syscall.RawSyscall6(unix.SYS_CLOSE, fd, 0, 0, 0, 0, 0)
	}
}

// serve is the child's request loop. It never returns: the process ends by
// exec, by an exit op, or when the control socket reaches EOF.
//
//go:nosplit
//go:norace
//go:nocheckptr
func serve(arena uintptr) {
	st := (*childState)(at(arena, miscState))
	for {
		if st.reaping != 0 {
			awaitRequest(arena)
		}
		nops := recvRequest(arena)
		rep := (*replyHeader)(at(arena, arenaReply))
		st.nsend, st.forked, st.spawned = 0, 0, 0
		for i := uintptr(0); i < nops; i++ {
			err := runOp(arena, i)
			if st.forked != 0 {
				break
			}
			if err != 0 {
				rep.errno = uint32(err)
				break
			}
			rep.ndone++
			if st.spawned != 0 {
				spawnResult(arena, nops)
				break
			}
		}
		if st.forked == 0 {
			sendReply(arena)
		}
	}
}

// recvRequest receives the next request and returns its op count, or 0
// with the reply's errno set if it is malformed. At EOF the process exits.
//
//go:nosplit
//go:norace
//go:nocheckptr
func recvRequest(arena uintptr) uintptr {
	st := (*childState)(at(arena, miscState))
	rmsg := (*rawMsghdr)(at(arena, miscRecvMsg))
	riov := (*rawIovec)(at(arena, miscRecvIov))
	hdr := (*reqHeader)(at(arena, 0))
	cin := (*unix.Cmsghdr)(at(arena, arenaCmsgIn))
	var n uintptr
	for {
		riov.base = arena
		riov.len = arenaReqSize
		*rmsg = rawMsghdr{iov: arena + miscRecvIov, iovlen: 1, control: arena + arenaCmsgIn, controllen: arenaCmsgSize}
		var e syscall.Errno
		n, _, e = syscall.RawSyscall(unix.SYS_RECVMSG, uintptr(st.ctrl), arena+miscRecvMsg, unix.MSG_CMSG_CLOEXEC)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 || n == 0 {
			syscall.RawSyscall(unix.SYS_EXIT_GROUP, exitOrphaned, 0, 0)
		}
		break
	}
	st.nrecv = 0
	if rmsg.controllen >= unix.SizeofCmsghdr && cin.Level == unix.SOL_SOCKET && cin.Type == unix.SCM_RIGHTS {
		st.nrecv = (cin.Len - unix.SizeofCmsghdr) / 4
	}
	// Received fds must not sit where the batch is about to dup3 to.
	for i := uintptr(0); i < uintptr(st.nrecv) && hdr.fdMin != 0; i++ {
		slot := (*int32)(at(arena, arenaCmsgIn+unix.SizeofCmsghdr+i*4))
		if uint64(*slot) < hdr.fdMin {
			nfd, _, e := syscall.RawSyscall(unix.SYS_FCNTL, uintptr(*slot), unix.F_DUPFD_CLOEXEC, uintptr(hdr.fdMin))
			if e == 0 {
				syscall.RawSyscall(unix.SYS_CLOSE, uintptr(*slot), 0, 0)
				*slot = int32(nfd)
			}
		}
	}
	rep := (*replyHeader)(at(arena, arenaReply))
	*rep = replyHeader{}
	nops := uintptr(hdr.nops)
	if nops > maxOps || n < reqHeaderSize+nops*wireOpSize || rmsg.flags&unix.MSG_CTRUNC != 0 {
		rep.errno = uint32(syscall.EINVAL)
		return 0
	}
	return nops
}

// awaitRequest waits, in a reaper, until its control socket has a
// request (or its end), reaping the children that exit meanwhile: their
// SIGCHLD, blocked, is read from a signalfd made for the wait and closed
// after it, so that no fd of the server's outlives it where the batches'
// calls could meet it. Where none can be made (no fd free), recvmsg
// waits alone, and children are reaped when a request asks.
//
//go:nosplit
//go:norace
//go:nocheckptr
//go:noinline
func awaitRequest(arena uintptr) {
	st := (*childState)(at(arena, miscState))
	// The control buffer of replies is free until the next one: the
	// mask, two struct pollfd, then signalfd_siginfo records read to
	// empty it.
	mask := (*uint64)(at(arena, arenaCmsgOut))
	*mask = 1 << (unix.SIGCHLD - 1)
	sfd, _, e := syscall.RawSyscall6(unix.SYS_SIGNALFD4, ^uintptr(0), arena+arenaCmsgOut, 8, unix.SFD_CLOEXEC|unix.SFD_NONBLOCK, 0, 0)
	if e != 0 {
		return
	}
	pfd := (*[2]rawPollFd)(at(arena, arenaCmsgOut+cmsgOutPoll))
	buf := arena + arenaCmsgOut + cmsgOutSignals
	for {
		pfd[0] = rawPollFd{fd: int32(st.ctrl), events: unix.POLLIN}
		pfd[1] = rawPollFd{fd: int32(sfd), events: unix.POLLIN}
		_, _, e := syscall.RawSyscall6(unix.SYS_PPOLL, arena+arenaCmsgOut+cmsgOutPoll, 2, 0, 0, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			break // recvmsg waits instead
		}
		if pfd[1].revents != 0 {
			for {
				_, _, e := syscall.RawSyscall(unix.SYS_READ, sfd, buf, cmsgOutSignalsSize)
				if e != 0 {
					break
				}
			}
			drainChildren(st, false)
		}
		if pfd[0].revents != 0 {
			break
		}
	}
	syscall.RawSyscall(unix.SYS_CLOSE, sfd, 0, 0)
}

type rawPollFd struct {
	fd      int32
	events  int16
	revents int16
}

// runOp resolves the arguments of op i in place and runs it. System calls
// run here; other kinds in their own functions, so that no frame on the
// serving chain is large (the whole chain must fit in the nosplit limit).
//
//go:nosplit
//go:norace
//go:nocheckptr
func runOp(arena, i uintptr) syscall.Errno {
	op := (*wireOp)(at(arena, reqHeaderSize+i*wireOpSize))
	if err := resolveArgs(arena, i, op); err != 0 {
		return err
	}
	res := (*[2]uint64)(at(arena, arenaReply+replyHeaderSize+i*16))
	switch op.kind {
	case opSyscall:
		if op.nr == unix.SYS_EXECVEAT || op.nr == unix.SYS_EXECVE {
			return execOp(arena, op, res)
		}
		return runSyscall(op, res)
	case opTrack, opReap:
		return reapOp(arena, op, res)
	case opSpawn:
		return spawnOp(arena, i, op, res)
	case opServe:
		return serveOp(arena, op, res)
	}
	return runSpecial(arena, op, res)
}

// execOp runs op, an execve or execveat: in a reaper, with SIGCHLD
// unblocked, as the program is to have it, and blocked again if it fails.
//
//go:nosplit
//go:norace
//go:nocheckptr
//go:noinline
func execOp(arena uintptr, op *wireOp, res *[2]uint64) syscall.Errno {
	st := (*childState)(at(arena, miscState))
	if st.reaping == 0 {
		return runSyscall(op, res)
	}
	sigchld(st, unix.SIG_UNBLOCK)
	err := runSyscall(op, res)
	// The exec failed: a SIGCHLD that came meanwhile was dropped (an
	// init's default), so what it announced is reaped now.
	sigchld(st, unix.SIG_BLOCK)
	drainChildren(st, false)
	return err
}

// runSyscall runs op, a system call, and stores its result in res.
//
//go:nosplit
//go:norace
//go:nocheckptr
func runSyscall(op *wireOp, res *[2]uint64) syscall.Errno {
	a := &op.args
	r0, r1, err := syscall.RawSyscall6(uintptr(op.nr), uintptr(a[0]), uintptr(a[1]), uintptr(a[2]), uintptr(a[3]), uintptr(a[4]), uintptr(a[5]))
	for try := 0; err == syscall.EAGAIN && op.flags&flagRetryAgain != 0 && try < 100; try++ {
		r0, r1, err = syscall.RawSyscall6(uintptr(op.nr), uintptr(a[0]), uintptr(a[1]), uintptr(a[2]), uintptr(a[3]), uintptr(a[4]), uintptr(a[5]))
	}
	if err == 0 {
		res[0], res[1] = uint64(r0), uint64(r1)
	} else if uint32(err) == op.okErr {
		res[0], res[1] = uint64(-int64(err)), 0
		err = 0
	}
	return err
}

// resolveArgs resolves the arguments of op i in place: results of earlier
// ops and received fds become their values.
//
//go:nosplit
//go:norace
//go:nocheckptr
func resolveArgs(arena, i uintptr, op *wireOp) syscall.Errno {
	st := (*childState)(at(arena, miscState))
	for j := 0; j < 6; j++ {
		v := op.args[j]
		switch op.src[j] {
		case srcLit:
		case srcResult, srcAux:
			if v >= uint64(i) {
				return syscall.EINVAL
			}
			r := (*[2]uint64)(at(arena, arenaReply+replyHeaderSize+uintptr(v)*16))
			if op.src[j] == srcResult {
				v = r[0]
			} else {
				v = r[1]
			}
		case srcRecvFD:
			if v >= st.nrecv {
				return syscall.EINVAL
			}
			v = uint64(*(*int32)(at(arena, arenaCmsgIn+unix.SizeofCmsghdr+uintptr(v)*4)))
		default:
			return syscall.EINVAL
		}
		op.args[j] = v
	}
	return 0
}

// runSpecial runs the op kinds other than system calls and reaping.
//
//go:nosplit
//go:norace
//go:nocheckptr
func runSpecial(arena uintptr, op *wireOp, res *[2]uint64) syscall.Errno {
	st := (*childState)(at(arena, miscState))
	a := &op.args
	var r0, r1 uintptr
	var err syscall.Errno
	switch op.kind {
	case opSendFD:
		if st.nsend >= maxFDs {
			return syscall.ETOOMANYREFS
		}
		// Send a duplicate, closed once sent: later ops of the batch may
		// close the fd, and a bad fd fails this op, not the whole reply.
		r1, _, err = syscall.RawSyscall(unix.SYS_FCNTL, uintptr(a[0]), unix.F_DUPFD_CLOEXEC, 0)
		if err != 0 {
			return err
		}
		*(*int32)(at(arena, arenaCmsgOut+unix.SizeofCmsghdr+uintptr(st.nsend)*4)) = int32(r1)
		st.nsend++
		if op.flags&flagCloseAfter != 0 {
			syscall.RawSyscall(unix.SYS_CLOSE, uintptr(a[0]), 0, 0)
		}
		r0, r1 = uintptr(a[0]), 0
	case opCopy:
		for k := uintptr(0); k < uintptr(a[2]); k++ {
			*(*byte)(ptr(uintptr(a[0]) + k)) = *(*byte)(ptr(uintptr(a[1]) + k))
		}
	case opStore:
		if a[2] == 4 {
			*(*uint32)(ptr(uintptr(a[0]))) = uint32(a[1])
		} else {
			*(*uint64)(ptr(uintptr(a[0]))) = a[1]
		}
	case opValue:
		r0 = uintptr(a[0])
	case opMoveCtrl:
		r0, _, err = syscall.RawSyscall(unix.SYS_FCNTL, uintptr(st.ctrl), unix.F_DUPFD_CLOEXEC, uintptr(a[0]))
		if err == 0 {
			syscall.RawSyscall(unix.SYS_CLOSE, uintptr(st.ctrl), 0, 0)
			st.ctrl = uint64(r0)
		}
	case opFork:
		*(*int32)(at(arena, miscPidfd)) = -1
		r0, _, err = syscall.RawSyscall6(unix.SYS_CLONE, uintptr(a[0]), 0, arena+miscPidfd, 0, 0, 0)
		if err == 0 && r0 == 0 {
			// The new child: a fresh server on its own socket.
			childInit(uintptr(a[1]), uintptr(op.flags))
			st.ctrl = a[1]
			startReaper(st, uintptr(op.flags), 0)
			st.forked = 1
			return 0
		}
		r1 = uintptr(*(*int32)(at(arena, miscPidfd)))
	default:
		return syscall.ENOSYS
	}
	if err == 0 {
		res[0], res[1] = uint64(r0), uint64(r1)
	}
	return err
}

// reapOp runs opTrack and opReap on the server's reap table (st). Both
// first reap every child that has exited (drainChildren). opTrack then
// tracks child args[2]; opReap copies its entry to args[3] if it has
// exited (r0 = 1) and frees it.
//
//go:nosplit
//go:norace
//go:nocheckptr
func reapOp(arena uintptr, op *wireOp, res *[2]uint64) syscall.Errno {
	st := (*childState)(at(arena, miscState))
	if op.flags&flagNoDrain == 0 {
		drainChildren(st, true)
	}
	// A siginfo's room, past the fds a batch queues for its reply.
	return tableOp(st, op.kind, int32(op.args[2]), uintptr(op.args[3]), arena+arenaCmsgOut+cmsgOutSiginfo, res)
}

// tableOp runs opTrack or opReap (kind) of child pid on the reap table,
// without reaping first; opReap's entry goes to out. A reaper that could
// not map its table tracks nothing, and opReap reaps pid itself
// (waitid(P_PID)), with scratch, 128 bytes, for its siginfo.
//
//go:nosplit
//go:norace
//go:nocheckptr
//go:noinline
func tableOp(st *childState, kind uint32, pid int32, out, scratch uintptr, res *[2]uint64) syscall.Errno {
	res[0] = 0
	table := uintptr(st.reapTable)
	if table == 0 {
		if kind == opReap {
			*(*int32)(ptr(scratch + 16)) = 0
			_, _, e := syscall.RawSyscall6(unix.SYS_WAITID, unix.P_PID, uintptr(pid), scratch, unix.WEXITED|unix.WNOHANG, out+16, 0)
			if e == 0 && *(*int32)(ptr(scratch + 16)) == pid {
				*(*int32)(ptr(out)) = pid
				*(*int32)(ptr(out + 4)) = reapExited
				*(*int32)(ptr(out + 8)) = *(*int32)(ptr(scratch + 8))
				*(*int32)(ptr(out + 12)) = *(*int32)(ptr(scratch + 24))
				res[0] = 1
			}
		}
		return 0
	}
	free := ^uintptr(0)
	for k := uintptr(0); k < reapEntries; k++ {
		ent := table + reapScratch + k*reapEntrySize
		state := *(*int32)(ptr(ent + 4))
		if state == reapFree {
			if free == ^uintptr(0) {
				free = ent
			}
			continue
		}
		if *(*int32)(ptr(ent)) != pid {
			continue
		}
		if kind == opReap && state == reapExited {
			for w := uintptr(0); w < reapEntrySize; w += 8 {
				*(*uint64)(ptr(out + w)) = *(*uint64)(ptr(ent + w))
			}
			*(*int32)(ptr(ent + 4)) = reapFree
			res[0] = 1
		}
		return 0 // tracked already, or reaped now
	}
	if kind == opReap {
		return 0
	}
	if free == ^uintptr(0) {
		return syscall.ENOSPC
	}
	*(*int32)(ptr(free)) = pid
	*(*int32)(ptr(free + 4)) = reapTracked
	return 0
}

// drainChildren reaps the children of a reaper's that have exited. With
// all (a request that tracks or reaps), every one: the statuses of
// tracked ones are kept in the reap table, the others' (a pid namespace's
// init is the parent of every orphan in it) dropped. Without (a SIGCHLD
// while it waits), the orphans only, until the first tracked child that
// has exited: that one stays a zombie, its pid its own, until its
// Process is waited for (whoever made it reads its pid from its pidfd,
// which a reaped process no longer has), and the orphans behind it until
// the next request.
//
//go:nosplit
//go:norace
//go:nocheckptr
//go:noinline
func drainChildren(st *childState, all bool) {
	table := uintptr(st.reapTable)
	if table == 0 {
		return
	}
	si, ru := table, table+128
	flags := uintptr(unix.WEXITED | unix.WNOHANG)
	if !all {
		flags |= unix.WNOWAIT
	}
	for {
		*(*int32)(ptr(si + 16)) = 0
		_, _, e := syscall.RawSyscall6(unix.SYS_WAITID, unix.P_ALL, 0, si, flags, ru, 0)
		pid := *(*int32)(ptr(si + 16))
		if e != 0 || pid == 0 {
			return
		}
		tracked := ^uintptr(0)
		for k := uintptr(0); k < reapEntries; k++ {
			ent := table + reapScratch + k*reapEntrySize
			if *(*int32)(ptr(ent)) == pid && *(*int32)(ptr(ent + 4)) == reapTracked {
				tracked = ent
				break
			}
		}
		if !all {
			if tracked != ^uintptr(0) {
				return
			}
			syscall.RawSyscall6(unix.SYS_WAITID, unix.P_PID, uintptr(pid), si, unix.WEXITED|unix.WNOHANG, ru, 0)
			continue
		}
		if tracked != ^uintptr(0) {
			*(*int32)(ptr(tracked + 4)) = reapExited
			*(*int32)(ptr(tracked + 8)) = *(*int32)(ptr(si + 8))
			*(*int32)(ptr(tracked + 12)) = *(*int32)(ptr(si + 24))
			for w := uintptr(0); w < reapEntrySize-16; w += 8 {
				*(*uint64)(ptr(tracked + 16 + w)) = *(*uint64)(ptr(ru + w))
			}
		}
	}
}

// sendReply sends the reply to the current request, then closes the fds
// sent with flagCloseAfter. If the parent is gone the process exits.
//
//go:nosplit
//go:norace
//go:nocheckptr
func sendReply(arena uintptr) {
	st := (*childState)(at(arena, miscState))
	smsg := (*rawMsghdr)(at(arena, miscSendMsg))
	siov := (*[2]rawIovec)(at(arena, miscSendIov))
	hdr := (*reqHeader)(at(arena, 0))
	rep := (*replyHeader)(at(arena, arenaReply))
	cout := (*unix.Cmsghdr)(at(arena, arenaCmsgOut))
	siov[0] = rawIovec{base: arena + arenaReply, len: uint64(replyHeaderSize + 16*uintptr(rep.ndone))}
	siov[1] = rawIovec{base: uintptr(hdr.outPtr), len: hdr.outLen}
	*smsg = rawMsghdr{iov: arena + miscSendIov, iovlen: 2}
	if rep.errno != 0 {
		smsg.iovlen = 1 // no out region after a failure
	}
	if st.nsend > 0 {
		cout.Level = unix.SOL_SOCKET
		cout.Type = unix.SCM_RIGHTS
		cout.Len = unix.SizeofCmsghdr + 4*st.nsend
		smsg.control = arena + arenaCmsgOut
		smsg.controllen = unix.SizeofCmsghdr + (4*st.nsend+7)&^7
	}
	var e syscall.Errno
	for {
		_, _, e = syscall.RawSyscall(unix.SYS_SENDMSG, uintptr(st.ctrl), arena+miscSendMsg, unix.MSG_NOSIGNAL)
		if e != syscall.EINTR {
			break
		}
	}
	if e != 0 && e != syscall.EPIPE && e != syscall.ECONNRESET && e != syscall.EBADF {
		// A bad out region, or fds the parent cannot take: send the
		// results alone, with the errno.
		rep.errno = uint32(e)
		smsg.iovlen = 1
		smsg.control, smsg.controllen = 0, 0
		_, _, e = syscall.RawSyscall(unix.SYS_SENDMSG, uintptr(st.ctrl), arena+miscSendMsg, unix.MSG_NOSIGNAL)
	}
	// The fds sent were duplicates made for sending.
	for i := uintptr(0); i < uintptr(st.nsend); i++ {
		syscall.RawSyscall(unix.SYS_CLOSE, uintptr(*(*int32)(at(arena, arenaCmsgOut+unix.SizeofCmsghdr+i*4))), 0, 0)
	}
	if e != 0 {
		syscall.RawSyscall(unix.SYS_EXIT_GROUP, exitOrphaned, 0, 0)
	}
}

// spawnOp runs opSpawn, op i, in the server. The child it clones shares
// the server's memory and runs the rest of the request (spawnChild) while
// the server waits (CLONE_VFORK): nothing is copied, so the fork costs the
// same as vfork(2), and the child leaves the memory as it execs.
//
//go:nosplit
//go:norace
//go:nocheckptr
func spawnOp(arena, i uintptr, op *wireOp, res *[2]uint64) syscall.Errno {
	st := (*childState)(at(arena, miscState))
	if st.nsend >= maxFDs {
		return syscall.ETOOMANYREFS
	}
	dumpable, _, _ := syscall.RawSyscall(unix.SYS_PRCTL, unix.PR_GET_DUMPABLE, 0, 0)
	st.spawnAt, st.spawnErr = uint64(i+1), 0
	*(*int32)(at(arena, miscPidfd)) = -1
	flags := uintptr(op.args[0]) | unix.CLONE_VM | unix.CLONE_VFORK
	pid, err := rawCloneVM(flags, arena+arenaSize, arena+miscPidfd, arena)
	if err != 0 {
		return err
	}
	// The child has exec'd or exited. Credential changes in it may have
	// made the shared memory undumpable, which the server's own
	// children would inherit.
	if d, _, _ := syscall.RawSyscall(unix.SYS_PRCTL, unix.PR_GET_DUMPABLE, 0, 0); d != dumpable {
		syscall.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, dumpable, 0)
	}
	pidfd := *(*int32)(at(arena, miscPidfd))
	res[0], res[1] = uint64(pid), uint64(pidfd)
	// The fds that came with the request were for the child: it has its
	// copies.
	for k := uintptr(0); k < uintptr(st.nrecv); k++ {
		syscall.RawSyscall(unix.SYS_CLOSE, uintptr(*(*int32)(at(arena, arenaCmsgIn+unix.SizeofCmsghdr+k*4))), 0, 0)
	}
	st.nrecv = 0
	// The pidfd goes back with the reply, and is closed once sent.
	*(*int32)(at(arena, arenaCmsgOut+unix.SizeofCmsghdr+uintptr(st.nsend)*4)) = pidfd
	st.nsend++
	if op.args[1] != 0 {
		// Tracked, with a scratch slot for a result nobody reads. No
		// children are reaped first: the program may have exited
		// already, and its status is kept only once it is tracked.
		tableOp(st, opTrack, int32(pid), 0, 0, (*[2]uint64)(at(arena, miscScratch)))
	}
	st.spawned = 1
	return 0
}

// spawnResult sets the reply's ndone and errno to what the child of
// opSpawn did with ops spawnAt and on: all of them, if it reached the last
// (which execs) without an error; else the errno of the one that failed,
// or ECHILD for the one it died in.
//
//go:nosplit
//go:norace
//go:nocheckptr
func spawnResult(arena, nops uintptr) {
	st := (*childState)(at(arena, miscState))
	rep := (*replyHeader)(at(arena, arenaReply))
	switch {
	case st.spawnErr != 0:
		rep.ndone, rep.errno = uint32(st.spawnAt), uint32(st.spawnErr)
	case uintptr(st.spawnAt) < nops-1:
		rep.ndone, rep.errno = uint32(st.spawnAt), uint32(syscall.ECHILD)
	default:
		rep.ndone = uint32(nops)
	}
}

// spawnChild is the child of opSpawn, entered from rawCloneVM on the
// arena's stack. It runs the request's ops from spawnAt on, and exits if
// one fails; the last execs. Only system calls may run here: other op
// kinds act on the server's state, which the child shares.
//
//lint:ignore U1000 called from rawCloneVM's assembly
//go:nosplit
//go:norace
//go:nocheckptr
func spawnChild(arena uintptr) {
	st := (*childState)(at(arena, miscState))
	if st.serving != 0 {
		// A server made by opServe, on its own stack and arena.
		st.serving = 0
		childInit(uintptr(st.ctrl), uintptr(st.cflags))
		// Its reap table is in its region, after its stack: one mapped
		// here would outlive it in the memory it shares.
		startReaper(st, uintptr(st.cflags), arena+arenaSize+sharedStackSize)
		serve(arena)
	}
	if st.reaping != 0 {
		// A reaper's child, about to exec: SIGCHLD as it was.
		sigchld(st, unix.SIG_UNBLOCK)
	}
	hdr := (*reqHeader)(at(arena, 0))
	for k := uintptr(st.spawnAt); k < uintptr(hdr.nops); k++ {
		st.spawnAt = uint64(k)
		op := (*wireOp)(at(arena, reqHeaderSize+k*wireOpSize))
		err := syscall.EINVAL
		switch op.kind {
		case opSyscall:
			if err = resolveArgs(arena, k, op); err == 0 {
				err = runSyscall(op, (*[2]uint64)(at(arena, arenaReply+replyHeaderSize+k*16)))
			}
		case opStore:
			// Into the request's own data, where Spawn allows it.
			if err = resolveArgs(arena, k, op); err == 0 {
				err = storeOp(arena, op)
			}
		}
		if err != 0 {
			st.spawnErr = uint64(err)
			break
		}
	}
	syscall.RawSyscall(unix.SYS_EXIT, 127, 0, 0)
}

// storeOp runs opStore in a child of opSpawn: only into the request's
// data area, which Spawn checks too.
//
//go:nosplit
//go:norace
//go:nocheckptr
func storeOp(arena uintptr, op *wireOp) syscall.Errno {
	a := &op.args
	if uintptr(a[0]) < arena || uintptr(a[0])+8 > arena+arenaReqSize {
		return syscall.EFAULT
	}
	if a[2] == 4 {
		*(*uint32)(ptr(uintptr(a[0]))) = uint32(a[1])
	} else {
		*(*uint64)(ptr(uintptr(a[0]))) = a[1]
	}
	return 0
}

// serveOp runs opServe: it clones a server that shares this one's memory
// and serves on its own arena and stack, which the caller allocated in it.
// This server goes on at once; the two share no state.
//
//go:nosplit
//go:norace
//go:nocheckptr
func serveOp(arena uintptr, op *wireOp, res *[2]uint64) syscall.Errno {
	st := (*childState)(at(arena, miscState))
	if st.nsend >= maxFDs {
		return syscall.ETOOMANYREFS
	}
	na := uintptr(op.args[1])
	nst := (*childState)(at(na, miscState))
	*nst = childState{ctrl: op.args[2], serving: 1, cflags: uint64(op.flags)}
	*(*int32)(at(arena, miscPidfd)) = -1
	pid, err := rawCloneVM(uintptr(op.args[0])|unix.CLONE_VM, na+arenaSize+sharedStackSize, arena+miscPidfd, na)
	if err != 0 {
		return err
	}
	pidfd := *(*int32)(at(arena, miscPidfd))
	res[0], res[1] = uint64(pid), uint64(pidfd)
	*(*int32)(at(arena, arenaCmsgOut+unix.SizeofCmsghdr+uintptr(st.nsend)*4)) = pidfd
	st.nsend++
	return 0
}
