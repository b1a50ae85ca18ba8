package proc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/caplin-dev/caplin/pidfd"
	"golang.org/x/sys/unix"
)

// errClosed is what a Handle returns once Close was called on it:
// errors.Is(err, fs.ErrClosed) holds.
var errClosed = fmt.Errorf("proc: handle: %w", fs.ErrClosed)

// Errors a Handle returns once it can no longer serve calls.
var (
	// ErrExeced: the child has been replaced by Exec; use its Process.
	ErrExeced = errors.New("proc: child has exec'd")
	// ErrDead: the child died or stopped answering; errors.Is matches the
	// *DeadError that says how.
	ErrDead = errors.New("proc: child is gone")
)

// DeadError reports that the child went away during or before a call.
type DeadError struct {
	Op  string // the call that found it gone
	Err error  // how it went: a wait status or a socket error, if known
}

func (e *DeadError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("proc: %s: child is gone: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("proc: %s: child is gone", e.Op)
}

func (e *DeadError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrDead) true.
func (e *DeadError) Is(target error) bool { return target == ErrDead }

// BatchError reports the call of a batch that failed. The calls before it
// took effect; the ones after it did not run.
type BatchError struct {
	Index int   // the failing call's index in the batch
	Len   int   // calls in the batch
	Err   error // an *os.PathError or *os.SyscallError with the errno
}

func (e *BatchError) Error() string {
	return fmt.Sprintf("%v (call %d of %d)", e.Err, e.Index+1, e.Len)
}

func (e *BatchError) Unwrap() error { return e.Err }

// A Handle is a child process that runs system calls for its parent until
// it execs (Exec) or is closed (Close). Each call runs in the child as if the
// child had made it, with the child's credentials, namespaces, root, working
// directory and fd table.
//
// A Handle is safe for concurrent use: calls from many goroutines are
// serialized, one round trip at a time, in the order they take the handle.
// Calls that must follow each other without others in between belong in one
// Batch.
type Handle struct {
	mu sync.Mutex
	*owned
	ctrl      int         // the child's end of the control socket, as numbered in the child
	state     error       // nil while usable
	pidns     bool        // the child is the init of a pid namespace it was made in, and so a reaper: it reaps its children as they exit, keeping the statuses of those it tracks (startReaper)
	joinedPID atomic.Bool // the child joined a pid namespace for its children (JoinPIDNamespace)
	parent    *Handle     // the child's parent process, when it is not the caller
	spawner   bool        // the tree zygote: the parent of its children (no CLONE_PARENT)
	noPdeath  bool        // made with NoParentDeathSignal
	tls       uintptr     // a zygote's TLS slot, kept mapped (tlsKeep), for tests
	arena     uint64      // the child's arena when not the usual one (forkShared)
	cleanup   runtime.Cleanup

	// regions are arenas and stacks of ForkShared children that are gone,
	// kept in the child's memory for the next ones (at most maxSpare).
	regionsMu sync.Mutex
	regions   []uintptr

	req []byte // request buffer, arenaReqSize (at most maxKeptBuffer kept)
	rep []byte // reply buffer
	oob []byte // control buffer for received fds
}

// A Handle's request and reply buffers start at initialBuffer bytes and
// grow as its calls need; a buffer larger than maxKeptBuffer is not kept
// between calls.
const (
	initialBuffer = 1024
	maxKeptBuffer = 8 << 10
)

// owned is what a Handle holds that must not outlive it: its end of the
// control socket and, until it execs, the child. It lives apart from the
// Handle so that a Handle dropped without Close can still let go of it
// (runtime.AddCleanup): otherwise the child would wait for a request
// forever.
type owned struct {
	sock    int  // our end of the control socket; -1 when closed
	peer    Peer // the child's owner, for a peer handle (NewPeerHandle); sock is -1
	peerPid int  // a peer handle's child's pid, as its owner sees it
	proc    *pidfd.Process
	execed  bool   // the child exec'd: proc is the caller's now
	release func() // run once the child is gone (ForkShared frees its arena)
}

// drop is the cleanup of a Handle that was dropped without Close: it
// closes the control socket (a child that is still a server exits at its
// EOF) and kills and reaps a child that has not exec'd, as Close would.
// Reaping may take a round trip to the child's parent, so it runs on a
// goroutine of its own rather than hold up other cleanups.
func (o *owned) drop() {
	if o.peer != nil {
		go o.peer.Close()
		return
	}
	if o.sock >= 0 {
		unix.Close(o.sock)
		o.sock = -1
	}
	if o.execed {
		return
	}
	go func() {
		o.proc.Close()
		if o.release != nil {
			o.release()
		}
	}()
}

func newHandle(sock, ctrl int, p *pidfd.Process) *Handle {
	h := &Handle{
		owned: &owned{sock: sock, proc: p},
		ctrl:  ctrl,
		req:   make([]byte, 0, initialBuffer),
		rep:   make([]byte, initialBuffer),
		oob:   make([]byte, unix.CmsgSpace(4*maxFDs)),
	}
	h.cleanup = runtime.AddCleanup(h, (*owned).drop, h.owned)
	return h
}

// Pid returns the child's process ID in the caller's pid namespace: the
// number the caller finds it by in its /proc, as Process().Pid() and
// os.Process.Pid are. It makes no call. The child's own getpid(2), which
// the Getpid call runs in the child, counts in the child's pid namespace
// instead: a child of the tree zygote is 2 there, say, whatever its Pid.
func (h *Handle) Pid() int {
	if h.peer != nil {
		return h.peerPid
	}
	return h.proc.Pid()
}

// Process returns the child as a process handle, for signals and waiting.
// The Handle still owns it: Close closes it. A peer handle's child is
// its owner's (nil here).
func (h *Handle) Process() *pidfd.Process { return h.proc }

// Close ends the handle. A child that has not exec'd is killed and reaped.
// Close is idempotent; it returns nil once the child is gone. A Handle
// dropped without Close is closed when the garbage collector finds it
// unreachable, but when is not known: Close it.
func (h *Handle) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cleanup.Stop()
	if h.sock >= 0 {
		unix.Close(h.sock)
		h.sock = -1
	}
	if h.state == ErrExeced {
		return nil
	}
	h.state = errClosed
	var err error
	if h.proc != nil {
		err = h.proc.Close()
	}
	if h.peer != nil {
		err = h.peer.Close()
	}
	if h.release != nil {
		h.release()
		h.release = nil
	}
	return err
}

// arenaAt returns the address of the child's arena.
func (h *Handle) arenaAt() uint64 {
	if h.arena != 0 {
		return h.arena
	}
	return arenaBase()
}

// Results holds what a batch returned.
type Results struct {
	r     [][2]uint64
	files []*os.File
	sent  []int // call index of each received file
}

// Int returns the result of the call v refers to (r1 of the syscall).
func (r *Results) Int(v Val) int { return int(r.Uint(v)) }

// Uint returns the result of the call v refers to as an unsigned word.
func (r *Results) Uint(v Val) uint64 {
	switch {
	case r == nil:
		return 0
	case v.kind == valLit:
		return v.v
	case v.kind == valResult && v.v < uint64(len(r.r)):
		return r.r[v.v][0]
	case v.kind == valAux && v.v < uint64(len(r.r)):
		return r.r[v.v][1]
	}
	return 0
}

// File returns the file a TakeFile call v brought back, or nil. Each file
// is returned once; the caller owns it. Files never asked for are closed by
// Close.
func (r *Results) File(v Val) *os.File {
	if r == nil || v.kind != valResult {
		return nil
	}
	for i, idx := range r.sent {
		if uint64(idx) == v.v && r.files[i] != nil {
			f := r.files[i]
			r.files[i] = nil
			return f
		}
	}
	return nil
}

// Close closes the files of r that were not taken with File.
func (r *Results) Close() {
	if r == nil {
		return
	}
	for i, f := range r.files {
		if f != nil {
			f.Close()
			r.files[i] = nil
		}
	}
}

// Run runs b in the child in one round trip; more than one when its data
// does not fit in one message, or when it has more calls or files than one
// message carries (about 500 calls, 253 files): it then runs in parts, in
// order, and a failing call stops it as in one. On failure the error is a
// *BatchError that names the failing call; Results still holds the results
// of the calls that ran.
func (h *Handle) Run(ctx context.Context, b *Batch) (*Results, error) {
	if b.err != nil {
		return nil, b.err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != nil {
		return nil, h.state
	}
	if b.needsParts() {
		return h.runParts(ctx, b)
	}
	return h.runLocked(ctx, b)
}

// runLocked encodes b, sends it and decodes the reply. h.mu is held.
func (h *Handle) runLocked(ctx context.Context, b *Batch) (*Results, error) {
	calls := b.calls
	// Move the control socket out of the way of any fd the batch creates at
	// a fixed number.
	fdMin := b.fdsBelow - 1
	for _, c := range calls {
		if c.fixedFD && c.newfd > fdMin {
			fdMin = c.newfd
		}
	}
	moved := false
	// In a spawn the fixed fds are the new child's, which has a copy of
	// the control socket it does not need.
	if fdMin >= 0 && !b.spawn {
		for _, c := range calls {
			if c.fixedFD && c.newfd == h.ctrl {
				moved = true
			}
		}
	}
	nops := len(calls)
	if moved {
		nops++
	}
	dataBase := uint64(reqHeaderSize + nops*wireOpSize)
	// Lay out the blobs; spill those that do not fit into child memory.
	addrs := make([]uint64, len(b.blobs))
	off := dataBase
	var spill []int
	for i, bl := range b.blobs {
		if off+uint64(bl.size) > arenaReqSize && bl.out == nil && !b.spawn {
			spill = append(spill, i)
			continue
		}
		addrs[i] = h.arenaAt() + off
		off += uint64(bl.size+7) &^ 7
	}
	if off > arenaReqSize {
		return nil, fmt.Errorf("proc: batch has %d bytes of output buffers: at most %d", off-dataBase, arenaReqSize-dataBase)
	}
	var freeSpill [][2]uint64
	defer func() {
		for _, s := range freeSpill {
			h.rawRun(context.Background(), func(e *encoder) { e.op(opSyscall, 0, unix.SYS_MUNMAP, s[0], s[1]) })
		}
	}()
	for _, i := range spill {
		bl := b.blobs[i]
		addr, err := h.allocLocked(ctx, bl.size)
		if err != nil {
			return nil, err
		}
		freeSpill = append(freeSpill, [2]uint64{uint64(addr), uint64(bl.size)})
		buf := make([]byte, bl.size)
		bl.fill(uint64(addr), buf)
		if err := h.writeMemLocked(ctx, addr, buf); err != nil {
			return nil, err
		}
		addrs[i] = uint64(addr)
	}

	// The request's size is known: one buffer of it, not a doubling
	// series of ever larger ones, each fresh memory to fault in.
	if cap(h.req) < int(off) {
		h.req = make([]byte, 0, off)
	}
	e := &encoder{buf: h.req[:reqHeaderSize]}
	if moved {
		e.op(opMoveCtrl, 0, 0, uint64(fdMin+1))
	}
	resolve := func(v Val) (uint16, uint64) {
		switch v.kind {
		case valResult:
			if moved {
				return srcResult, v.v + 1
			}
			return srcResult, v.v
		case valAux:
			if moved {
				return srcAux, v.v + 1
			}
			return srcAux, v.v
		case valData:
			return srcLit, addrs[v.v]
		case valDataOff:
			return srcLit, addrs[v.v&0xffffffff] + v.v>>32
		case valRecvFD:
			return srcRecvFD, v.v
		}
		return srcLit, v.v
	}
	for _, c := range calls {
		var w wireOp
		w.kind, w.flags, w.nr, w.okErr = c.kind, c.flags, uint64(c.nr), uint32(c.okErr)
		for j, a := range c.args {
			w.src[j], w.args[j] = resolve(a)
		}
		e.wire(&w)
	}
	// Output region: from the first output blob to the end of the last.
	var outLo, outHi uint64
	for i, bl := range b.blobs {
		if bl.out == nil {
			continue
		}
		if outHi == 0 || addrs[i] < outLo {
			outLo = addrs[i]
		}
		if end := addrs[i] + uint64(bl.size); end > outHi {
			outHi = end
		}
	}
	e.grow(int(off))
	// The buffer is reused: blobs start zeroed, as their fill functions
	// expect (a msghdr's name and flags, say, are left as they are).
	clear(e.buf[dataBase:off])
	for i, bl := range b.blobs {
		if base := h.arenaAt(); addrs[i] >= base && addrs[i] < base+arenaReqSize {
			o := addrs[i] - base
			bl.fill(addrs[i], e.buf[o:o+uint64(bl.size)])
		}
	}
	hdr := e.buf[:reqHeaderSize]
	binary.LittleEndian.PutUint32(hdr[0:], uint32(nops))
	binary.LittleEndian.PutUint32(hdr[4:], uint32(len(b.files)))
	if outHi > outLo {
		binary.LittleEndian.PutUint64(hdr[8:], outLo)
		binary.LittleEndian.PutUint64(hdr[16:], outHi-outLo)
	} else {
		binary.LittleEndian.PutUint64(hdr[8:], 0)
		binary.LittleEndian.PutUint64(hdr[16:], 0)
	}
	binary.LittleEndian.PutUint64(hdr[24:], uint64(fdMin+1))

	noReply := len(calls) > 0 && calls[len(calls)-1].flags&flagNoReply != 0
	var (
		ndone   int
		errno   syscall.Errno
		results [][2]uint64
		out     []byte
		files   []*os.File
	)
	err := withFDs(b.files, nil, func(fds []int) (err error) {
		ndone, errno, results, out, files, err = h.roundTrip(ctx, e.buf, fds, nops, int(outHi-outLo), noReply, b.announced)
		return err
	})
	if err != nil {
		return nil, err
	}
	if moved && ndone > 0 {
		h.ctrl = int(results[0][0])
		results = results[1:]
		ndone--
	} else if moved {
		closeAll(files)
		return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC (moving the control socket)", errno)
	}
	res := &Results{r: results}
	// Received files belong to opSendFD calls, in order.
	for i := 0; i < ndone && len(res.sent) < len(files); i++ {
		if calls[i].kind == opSendFD || calls[i].kind == opSpawn || calls[i].kind == opServe {
			res.sent = append(res.sent, i)
		}
	}
	res.files = files
	if ndone < len(calls) {
		if !b.spawn { // a spawn's caller takes the pidfd of its failed child
			res.Close()
		}
		c := calls[ndone]
		return res, &BatchError{Index: ndone, Len: len(calls), Err: callError(c, errno, res)}
	}
	if outHi > outLo {
		for i, bl := range b.blobs {
			if bl.out != nil {
				o := addrs[i] - outLo
				bl.out(out[o : o+uint64(bl.size)])
			}
		}
	}
	return res, nil
}

// callError builds the error for failed call c.
func callError(c call, errno syscall.Errno, res *Results) error {
	switch {
	case c.path != "":
		return &os.PathError{Op: c.name, Path: c.path, Err: errno}
	case c.hasFD && (c.fd.kind == valLit || res != nil):
		return &os.SyscallError{Syscall: fmt.Sprintf("%s fd %d", c.name, int(res.Uint(c.fd))), Err: errno}
	}
	return os.NewSyscallError(c.name, errno)
}

// encoder appends wire ops to a request.
type encoder struct {
	buf []byte
}

// grow sets the request's length to n bytes, keeping what it holds.
func (e *encoder) grow(n int) {
	if cap(e.buf) < n {
		nb := make([]byte, n, n+n/4)
		copy(nb, e.buf)
		e.buf = nb
		return
	}
	e.buf = e.buf[:n]
}

func (e *encoder) wire(w *wireOp) {
	var b [wireOpSize]byte
	binary.LittleEndian.PutUint32(b[0:], w.kind)
	binary.LittleEndian.PutUint32(b[4:], w.flags)
	binary.LittleEndian.PutUint64(b[8:], w.nr)
	for j := 0; j < 6; j++ {
		binary.LittleEndian.PutUint64(b[16+8*j:], w.args[j])
		binary.LittleEndian.PutUint16(b[64+2*j:], w.src[j])
	}
	binary.LittleEndian.PutUint32(b[76:], w.okErr)
	e.buf = append(e.buf, b[:]...)
}

// op appends an op whose arguments are all literals.
func (e *encoder) op(kind uint32, flags uint32, nr uintptr, args ...uint64) {
	w := wireOp{kind: kind, flags: flags, nr: uint64(nr)}
	copy(w.args[:], args)
	e.wire(&w)
}

// rawRun sends a request of literal ops built by fill, with no data, and
// returns the results. h.mu is held.
func (h *Handle) rawRun(ctx context.Context, fill func(*encoder)) ([][2]uint64, error) {
	e := &encoder{buf: h.req[:reqHeaderSize]}
	clear(e.buf)
	fill(e)
	n := (len(e.buf) - reqHeaderSize) / wireOpSize
	binary.LittleEndian.PutUint32(e.buf[0:], uint32(n))
	ndone, errno, res, _, files, err := h.roundTrip(ctx, e.buf, nil, n, 0, false, nil)
	closeAll(files)
	if err != nil {
		return nil, err
	}
	if ndone < n {
		return res, errno
	}
	return res, nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// roundTrip sends one request and reads its reply. A child that goes away
// marks the handle dead; a request whose last op execs (noReply) succeeds on
// EOF and marks the handle exec'd. With announced, the reply may be
// preceded by a spawned child's announcement: a message of announceSize
// bytes carrying its pidfd, which goes to announced.
func (h *Handle) roundTrip(ctx context.Context, req []byte, fds []int, nops, outLen int, noReply bool, announced func(*os.File)) (ndone int, errno syscall.Errno, results [][2]uint64, out []byte, files []*os.File, err error) {
	var rep []byte
	if h.peer != nil {
		rep, files, err = h.peerExchange(ctx, req, fds, noReply, announced)
	} else {
		rep, files, err = h.exchange(ctx, req, fds, nops, outLen, noReply, announced)
	}
	if err != nil || rep == nil {
		if err == nil { // exec'd
			return nops, 0, make([][2]uint64, nops), nil, nil, nil
		}
		return 0, 0, nil, nil, nil, err
	}
	ndone, errno, results, out, err = h.parseReply(ctx, rep, nops)
	if cap(h.rep) > maxKeptBuffer {
		h.rep = make([]byte, initialBuffer) // out keeps the one it is in
	}
	if err != nil {
		closeAll(files)
		return 0, 0, nil, nil, nil, err
	}
	if ndone == nops && errno != 0 {
		// Every op ran, but the reply could not carry what was asked
		// (the fds to send back, or the out region).
		closeAll(files)
		return 0, 0, nil, nil, nil, &os.SyscallError{Syscall: "sendmsg (the child's reply)", Err: errno}
	}
	return ndone, errno, results, out, files, nil
}

// exchange sends one request on the control socket and returns the reply
// message (in h.rep) and the files that came with it; a nil reply with no
// error is an exec that happened (noReply).
func (h *Handle) exchange(ctx context.Context, req []byte, fds []int, nops, outLen int, noReply bool, announced func(*os.File)) (rep []byte, files []*os.File, err error) {
	if h.sock < 0 {
		return nil, nil, errClosed
	}
	if cap(req) > cap(h.req) {
		h.req = req[:0] // keep the grown buffer for the next request
	}
	// A buffer grown for a large batch (a sandbox's set-up, tens of KiB)
	// is not kept: a handle held long after it (a supervisor holds one
	// per running job) would pin it for nothing.
	defer func() {
		if cap(h.req) > maxKeptBuffer {
			h.req = make([]byte, 0, initialBuffer)
		}
	}()
	if need := replyHeaderSize + 16*nops + outLen; len(h.rep) < need {
		h.rep = make([]byte, need)
	}
	if ctx.Done() != nil {
		// A cancelled call kills the child: there is no other way to
		// interrupt a system call it is blocked in.
		stop := context.AfterFunc(ctx, func() { h.proc.Kill() })
		defer stop()
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for {
		err = unix.Sendmsg(h.sock, req, oob, nil, unix.MSG_NOSIGNAL)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, nil, h.dead(ctx, "sendmsg", err)
	}
	var n, oobn, flags int
	for {
		n, oobn, flags, _, err = unix.Recvmsg(h.sock, h.rep, h.oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if oobn > 0 {
			files, err = parseFiles(h.oob[:oobn], err)
		}
		if err == nil && announced != nil && n == announceSize && len(files) == 1 {
			announced(files[0])
			announced, files = nil, nil
			continue
		}
		break
	}
	if err != nil {
		closeAll(files)
		return nil, nil, h.dead(ctx, "recvmsg", err)
	}
	if n == 0 {
		closeAll(files)
		if noReply && ctx.Err() == nil {
			h.state = ErrExeced
			h.execed = true
			unix.Close(h.sock)
			h.sock = -1
			return nil, nil, nil
		}
		return nil, nil, h.dead(ctx, "recvmsg", nil)
	}
	if flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0 {
		closeAll(files)
		return nil, nil, h.dead(ctx, "recvmsg", fmt.Errorf("malformed reply (%d bytes, flags %#x)", n, flags))
	}
	return h.rep[:n], files, nil
}

// parseReply decodes a reply to a request of nops ops.
func (h *Handle) parseReply(ctx context.Context, rep []byte, nops int) (ndone int, errno syscall.Errno, results [][2]uint64, out []byte, err error) {
	n := len(rep)
	if n < replyHeaderSize {
		return 0, 0, nil, nil, h.dead(ctx, "recvmsg", fmt.Errorf("malformed reply (%d bytes)", n))
	}
	ndone = int(binary.LittleEndian.Uint32(rep[0:]))
	errno = syscall.Errno(binary.LittleEndian.Uint32(rep[4:]))
	if ndone > nops || n < replyHeaderSize+16*ndone {
		return 0, 0, nil, nil, h.dead(ctx, "recvmsg", fmt.Errorf("malformed reply (%d of %d ops)", ndone, nops))
	}
	if ndone < nops && errno == 0 {
		errno = syscall.EIO
	}
	results = make([][2]uint64, ndone)
	for i := range results {
		results[i][0] = binary.LittleEndian.Uint64(rep[replyHeaderSize+16*i:])
		results[i][1] = binary.LittleEndian.Uint64(rep[replyHeaderSize+16*i+8:])
	}
	return ndone, errno, results, rep[replyHeaderSize+16*ndone:], nil
}

// parseFiles turns received SCM_RIGHTS into files, closing everything if any
// control message is malformed.
func parseFiles(oob []byte, err error) ([]*os.File, error) {
	msgs, perr := unix.ParseSocketControlMessage(oob)
	var files []*os.File
	for _, m := range msgs {
		fds, ferr := unix.ParseUnixRights(&m)
		if ferr != nil {
			if perr == nil {
				perr = ferr
			}
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("fd %d from child", fd)))
		}
	}
	if err == nil {
		err = perr
	}
	return files, err
}

// withFDs calls fn with the fd numbers of files, holding each file open
// (and leaving its blocking mode alone, unlike Fd) until fn returns.
func withFDs(files []*os.File, fds []int, fn func([]int) error) error {
	if len(files) == 0 {
		return fn(fds)
	}
	rc, err := files[0].SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if cerr := rc.Control(func(fd uintptr) { ferr = withFDs(files[1:], append(fds, int(fd)), fn) }); cerr != nil {
		return cerr
	}
	return ferr
}

// dead marks the handle unusable after the child went away and returns the
// error for the call that found out.
func (h *Handle) dead(ctx context.Context, op string, err error) error {
	if h.sock >= 0 {
		unix.Close(h.sock)
		h.sock = -1
	}
	if cerr := ctx.Err(); cerr != nil {
		h.state = &DeadError{Op: op, Err: cerr}
		return cerr
	}
	if err == nil && h.proc != nil {
		if st, _ := h.proc.TryWait(); st != nil {
			err = st
		}
	}
	de := &DeadError{Op: op, Err: err}
	h.state = de
	return de
}
