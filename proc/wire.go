package proc

// The control protocol between a Handle (the parent) and its child server.
//
// Every process built by this package owns one SOCK_SEQPACKET socket, its
// control socket, and an arena: a fixed region of memory mapped in the parent
// before the first fork, so it sits at the same address in every process
// forked from it. A request is one message received at the start of the arena:
//
//	reqHeader | nops × wireOp | data
//
// The data area holds the bytes that calls point at (paths, structs, argv
// arrays); since the parent knows where the arena is, it passes absolute
// addresses as literal arguments. Outputs (a stat buffer, a read buffer) are
// written by the kernel into the data area and sent back. Fds carried by the
// request (SCM_RIGHTS) land in the child's table and are referred to by
// index. A reply is one message:
//
//	replyHeader | nops × [2]uint64 results | out region
//
// with any fds the batch asked to send attached as SCM_RIGHTS. The child runs
// ops in order and stops at the first that fails.
//
// All sizes are fixed so that the child, which may not allocate, never
// parses anything of variable shape but the op array.

const (
	arenaReqSize   = 128 << 10 // request: header, ops and data
	arenaReplySize = 8 << 10   // reply header and results
	arenaCmsgSize  = 2 << 10   // one control buffer, for ≤ maxFDs fds
	arenaMiscSize  = 4 << 10   // msghdr and iovecs, munmap list
	arenaStackSize = 16 << 10  // the stack of a child made by opSpawn

	arenaReply   = arenaReqSize
	arenaCmsgIn  = arenaReply + arenaReplySize
	arenaCmsgOut = arenaCmsgIn + arenaCmsgSize
	arenaMisc    = arenaCmsgOut + arenaCmsgSize
	arenaStack   = arenaMisc + arenaMiscSize
	arenaSize    = arenaStack + arenaStackSize

	// maxOps is the most calls one message (one round trip) carries.
	maxOps = (arenaReplySize - replyHeaderSize) / 16
	// maxFDs is the most fds one message carries each way (the kernel's
	// SCM_MAX_FD is 253).
	maxFDs = 253

	// A reap table (in a pid namespace's init that builds processes) is a
	// scratch area for waitid, then entries: pid, state, si_code,
	// si_status, struct rusage.
	reapScratch   = 512
	reapEntrySize = 160
	// reapEntries is how many processes a reaper tracks at once: built
	// processes that have not been waited for.
	reapEntries   = 1024
	reapTableSize = reapScratch + reapEntries*reapEntrySize
	reapFree      = 0
	reapTracked   = 1
	reapExited    = 2

	reqHeaderSize   = 32
	replyHeaderSize = 16
	wireOpSize      = 80
)

// reqHeader starts every request.
type reqHeader struct {
	nops   uint32 // ops that follow
	nfds   uint32 // fds attached as SCM_RIGHTS
	outPtr uint64 // child address of the region to send back after the results
	outLen uint64 // its length; 0 for none
	fdMin  uint64 // move received fds to numbers ≥ fdMin before the ops run
}

// Op kinds: what the child does with one wireOp.
const (
	opSyscall  uint32 = iota // r0, r1 = syscall(nr, args...)
	opSendFD                 // attach args[0] to the reply; flagCloseAfter closes it once sent
	opFork                   // clone(args[0]) a new server on ctrl fd args[1]; r0 = pid, r1 = pidfd
	opCopy                   // copy args[2] bytes from args[1] to args[0]
	opMoveCtrl               // move the control socket to the lowest free fd ≥ args[0]; r0 = new fd
	opStore                  // store args[1] at address args[0], args[2] bytes wide (4 or 8)
	opValue                  // r0 = args[0]: what an argument resolved to (a received fd's number)
	opTrack                  // in the reaper's own table: track child args[2]
	opReap                   // from the reaper's own table: copy child args[2]'s exit entry to args[3]; r0 = 1 if it has exited
	// opSpawn clones with flags args[0] plus CLONE_VM|CLONE_VFORK: the new
	// child shares the server's memory and runs, on the arena's stack, the
	// ops after this one, the last of which execs; the server waits until
	// it has exec'd or exited. Tracks the child in the server's reap
	// table if args[1] is not 0. r0 = pid, r1 = pidfd, which the reply
	// carries. The reply's ndone and errno are the child's.
	opSpawn
	// opServe clones with flags args[0] plus CLONE_VM: a new server that
	// shares this one's memory and serves on fd args[2] with the arena at
	// args[1], followed by its own stack (sharedStackSize), both in this
	// server's memory. cflags as opFork's. r0 = pid, r1 = pidfd, which the
	// reply carries.
	opServe
)

// sharedStackSize is the stack of a server made by opServe.
const sharedStackSize = 64 << 10

// Op flags.
const (
	flagCloseAfter uint32 = 1 << iota // opSendFD: close the fd after the reply is sent
	flagNoReply                       // the op replaces or ends the process (execve, exit)
	flagPdeathsig                     // opFork: the new child gets PR_SET_PDEATHSIG(SIGKILL)
	flagNoDrain                       // opTrack: track without reaping exited children first
	flagRetryAgain                    // opSyscall: run again while it fails with EAGAIN (a few times)
	flagReaper                        // opFork, opServe, a first fork: the new child is a reaper (a pid namespace's init: startReaper)
)

// Argument sources: where the child takes each argument of an op from.
const (
	srcLit    uint16 = iota // args[i] as it is
	srcResult               // r0 of op index args[i]
	srcAux                  // r1 of op index args[i]
	srcRecvFD               // the fd received in this message at index args[i]
)

// wireOp is one call. Its layout is the wire format: 80 bytes, no padding
// the compiler could choose.
type wireOp struct {
	kind  uint32
	flags uint32
	nr    uint64
	args  [6]uint64
	src   [6]uint16
	okErr uint32 // opSyscall: an errno that counts as success, with r0 = -errno
}

type replyHeader struct {
	ndone uint32 // ops that completed
	errno uint32 // errno of op ndone when ndone < nops
	_     uint64
}
