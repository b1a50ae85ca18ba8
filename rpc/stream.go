package rpc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/internal/fdctl"
	"golang.org/x/sys/unix"
)

// RevocableStream returns a new descriptor, end, that behaves like f for
// reading and/or writing, and a revoke function that cuts the two apart: a
// raw byte stream handed out through end can be taken back, which f itself
// cannot once it has been sent.
//
// What end is depends on f:
//
//   - the read end of a pipe (or a FIFO opened for reading): end is the
//     read end of a new pipe, and what can be read from f is moved to it;
//   - the write end of a pipe (or a FIFO opened for writing): end is the
//     write end of a new pipe, and what is written to it is moved to f;
//   - a connected SOCK_STREAM socket (Unix, TCP or another family): end is
//     one end of a new AF_UNIX SOCK_STREAM socket pair, and bytes are
//     moved both ways. Only bytes cross: descriptors (SCM_RIGHTS) and
//     credentials sent on either side are dropped, not forwarded, and
//     end's peer (getpeername, SO_PEERCRED) is this process, not f's peer.
//
// Anything else (a regular file, a FIFO open for both reading and writing,
// a datagram or listening socket, a device) is refused with an error that
// names f and wraps unix.EINVAL (or unix.ENOTCONN for an unconnected
// socket).
//
// Data moves in the kernel, with splice(2) through a pipe of the
// forwarder's own, never through user-space buffers, by one goroutine per
// direction that waits for readiness in Go's netpoller and blocks no OS
// thread. A splice into a pipe or socket whose reader is gone raises
// SIGPIPE, which Go ignores unless the program asked for it with
// signal.Notify.
//
// An end of stream is passed on: when f reaches EOF, the holder of end
// reads EOF; when the holder shuts end down for writing or closes it, the
// forwarder shuts f's socket down for writing (for a pipe's write end it
// closes its own copy of f, and f's reader sees EOF once the caller has
// closed f too). The other direction goes on until it ends in turn or its
// destination is gone. When both are over, the forwarder closes what it
// holds by itself; calling revoke then is not needed, and harmless.
//
// revoke cuts end off at once and for good: the holder's writes fail with
// EPIPE, its reads return what the forwarder had already delivered into
// end's buffer (at most one pipe or socket buffer) and then EOF, never
// ECONNRESET, and nothing the holder writes reaches f any more. Bytes
// written to end and not yet delivered to f are dropped. revoke stops the
// forwarder even while it waits for data, closes every descriptor it
// holds, and returns when its goroutines have ended. It may be called any
// number of times, from any goroutine. The end of ctx revokes too: ctx
// bounds the forwarder's whole life (in a Handler, not the call's ctx,
// which ends as soon as the call returns).
// Revoking leaves f alone: it is not shut down, and the caller may go on
// using it or hand it on again.
//
// The caller keeps f: the forwarder works on a duplicate, so f may be
// closed as soon as RevocableStream returns (typical: once end is sent,
// the caller closes f and keeps only revoke). end is the caller's to send
// and close; its descriptor is in blocking mode if f was, non-blocking
// otherwise.
//
// File status flags live in the open file description, which f's
// duplicates (in this process and any other that received them) share.
// For a pipe RevocableStream changes none: splice's SPLICE_F_NONBLOCK
// makes every pipe operation non-blocking by itself. A socket, though,
// must be in non-blocking mode for splice not to block (a socket's own
// O_NONBLOCK is the only thing splice consults for it), so if f is a socket
// in blocking mode, RevocableStream sets O_NONBLOCK on it while it forwards
// and clears it again when the forwarder ends: meanwhile, other holders of
// that description that do blocking I/O on it would see EAGAIN. (Nobody
// else should read from f while it is forwarded anyway; they would take
// bytes meant for end.) Go's own sockets and pipes are always non-blocking,
// so for them nothing changes.
func RevocableStream(ctx context.Context, f *os.File) (end *os.File, revoke func(), err error) {
	end, revoke, _, err = RevocableStreamDone(ctx, f)
	return end, revoke, err
}

// RevocableStreamDone is RevocableStream that also returns done, closed
// once the forwarder has stopped (both directions over, revoke called or
// ctx ended) and has closed every descriptor it held: for a server that
// counts the streams it keeps.
func RevocableStreamDone(ctx context.Context, f *os.File) (end *os.File, revoke func(), done <-chan struct{}, err error) {
	end, fw, err := revocableStream(ctx, f)
	if err != nil {
		return nil, nil, nil, err
	}
	return end, func() { fw.stop(); <-fw.done }, fw.done, nil
}

func revocableStream(ctx context.Context, f *os.File) (end *os.File, _ *streamForwarder, err error) {
	if f == nil {
		return nil, nil, fmt.Errorf("rpc: RevocableStream: nil file: %w", unix.EINVAL)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("rpc: RevocableStream %s: %w", f.Name(), err)
	}
	fd, err := fdctl.DupFile(f)
	if err != nil {
		return nil, nil, fmt.Errorf("rpc: RevocableStream %s: %w", f.Name(), err)
	}
	fw := &streamForwarder{f: fd, sock: -1, fds: []int{fd}, done: make(chan struct{})}
	holder := -1 // the descriptor end will be
	defer func() {
		if err != nil {
			if holder >= 0 {
				unix.Close(holder)
			}
			fw.release()
		}
	}()
	kind, nonblock, err := streamKind(fd, f.Name())
	if err != nil {
		return nil, nil, err
	}
	switch kind {
	case pipeReadEnd, pipeWriteEnd:
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return nil, nil, &os.SyscallError{Syscall: "pipe2", Err: err}
		}
		if kind == pipeReadEnd {
			holder = p[0]
			fw.fds = append(fw.fds, p[1])
			err = fw.addDirection(fd, p[1], false)
		} else {
			holder = p[1]
			fw.fds = append(fw.fds, p[0])
			err = fw.addDirection(p[0], fd, false)
		}
	case streamSocket:
		sp, serr := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if serr != nil {
			return nil, nil, &os.SyscallError{Syscall: "socketpair", Err: serr}
		}
		holder, fw.sock = sp[1], sp[0]
		fw.fds = append(fw.fds, sp[0])
		if err := unix.SetNonblock(fw.sock, true); err != nil {
			return nil, nil, &os.SyscallError{Syscall: "fcntl O_NONBLOCK", Err: err}
		}
		if !nonblock {
			if err := unix.SetNonblock(fd, true); err != nil {
				return nil, nil, &os.SyscallError{Syscall: "fcntl O_NONBLOCK", Err: err}
			}
			fw.restoreBlocking = true
		}
		if err = fw.addDirection(fd, fw.sock, true); err == nil {
			err = fw.addDirection(fw.sock, fd, true)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	if nonblock {
		if err := unix.SetNonblock(holder, true); err != nil {
			return nil, nil, &os.SyscallError{Syscall: "fcntl O_NONBLOCK", Err: err}
		}
	}
	end = os.NewFile(uintptr(holder), "revocable:"+f.Name())

	fw.stopCtx = context.AfterFunc(ctx, fw.stop)
	fw.running.Store(int32(len(fw.dirs)))
	for _, d := range fw.dirs {
		go fw.run(d)
	}
	return end, fw, nil
}

type streamKindT int

const (
	pipeReadEnd streamKindT = iota
	pipeWriteEnd
	streamSocket
)

// streamKind says what the descriptor fd (a duplicate of the file called
// name) is, and whether its open file description is non-blocking.
func streamKind(fd int, name string) (kind streamKindT, nonblock bool, err error) {
	refuse := func(what string, errno unix.Errno) (streamKindT, bool, error) {
		return 0, false, fmt.Errorf("rpc: RevocableStream: %s is %s, not a pipe or a connected stream socket: %w", name, what, errno)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, false, &os.PathError{Op: "fstat", Path: name, Err: err}
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return 0, false, &os.PathError{Op: "fcntl F_GETFL", Path: name, Err: err}
	}
	nonblock = fl&unix.O_NONBLOCK != 0
	if fl&unix.O_PATH != 0 {
		return refuse("an O_PATH descriptor", unix.EINVAL)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO:
		switch fl & unix.O_ACCMODE {
		case unix.O_RDONLY:
			return pipeReadEnd, nonblock, nil
		case unix.O_WRONLY:
			return pipeWriteEnd, nonblock, nil
		}
		return refuse("a FIFO open for both reading and writing (which way to forward is ambiguous)", unix.EINVAL)
	case unix.S_IFSOCK:
		typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil {
			return 0, false, &os.PathError{Op: "getsockopt SO_TYPE", Path: name, Err: err}
		}
		if typ != unix.SOCK_STREAM {
			return refuse(fmt.Sprintf("a socket of type %d", typ), unix.EINVAL)
		}
		if l, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && l != 0 {
			return refuse("a listening socket", unix.EINVAL)
		}
		if _, err := unix.Getpeername(fd); errors.Is(err, unix.ENOTCONN) {
			return refuse("an unconnected socket", unix.ENOTCONN)
		}
		return streamSocket, nonblock, nil
	case unix.S_IFREG:
		return refuse("a regular file", unix.EINVAL)
	case unix.S_IFDIR:
		return refuse("a directory", unix.EINVAL)
	case unix.S_IFCHR:
		return refuse("a character device", unix.EINVAL)
	}
	return refuse(fmt.Sprintf("a file of mode %#o", st.Mode&unix.S_IFMT), unix.EINVAL)
}

// A streamForwarder moves bytes between f (its duplicate) and the end it handed
// out, in one direction per goroutine.
type streamForwarder struct {
	fds             []int // every descriptor held, but the directions' epoll instances
	f               int   // the duplicate of f
	sock            int   // for a socket: the forwarder's end of the pair; else -1
	restoreBlocking bool  // f's description was made non-blocking, to be undone
	dirs            []*direction

	running atomic.Int32 // directions not yet over
	stopped atomic.Bool  // revoked (or ctx ended)
	stopCtx func() bool
	done    chan struct{} // closed when everything is released
}

// A direction moves bytes from src to dst: splice src → mid, then
// mid → dst until mid is empty, again and again. The pipe in the middle
// makes EAGAIN unambiguous (a splice between two pipes, or to a full
// socket, cannot say which side was not ready) and is what splice needs
// between two sockets.
type direction struct {
	fw       *streamForwarder
	src, dst int
	sockets  bool   // src and dst are sockets (else pipes)
	mid      [2]int // the pipe in the middle: read end, write end
	chunk    int    // mid's capacity
	pending  int    // bytes in mid
	// ep is an epoll instance of the direction's own that holds src and
	// dst; it is pollable, so the goroutine waits for it in Go's netpoller.
	// One instance lets it wait for "src readable, or dst gone" at once
	// (a holder that closes its end is noticed while f is silent), and
	// f's descriptor need not be in non-blocking mode to be waited for.
	ep      *os.File
	rc      syscall.RawConn
	writing bool // ep waits for dst to be writable (else for src to be readable)
	outcome outcome
}

type outcome int

const (
	stillRunning outcome = iota
	srcEnded             // EOF on src, or it failed
	dstGone              // dst accepts no more
	revoked
)

// addDirection sets up a direction from src to dst.
func (fw *streamForwarder) addDirection(src, dst int, sockets bool) error {
	d := &direction{fw: fw, src: src, dst: dst, sockets: sockets, mid: [2]int{-1, -1}}
	if err := unix.Pipe2(d.mid[:], unix.O_CLOEXEC); err != nil {
		return &os.SyscallError{Syscall: "pipe2", Err: err}
	}
	fw.fds = append(fw.fds, d.mid[0], d.mid[1])
	chunk, err := unix.FcntlInt(uintptr(d.mid[1]), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return &os.SyscallError{Syscall: "fcntl F_GETPIPE_SZ", Err: err}
	}
	d.chunk = chunk
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return &os.SyscallError{Syscall: "epoll_create1", Err: err}
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return &os.SyscallError{Syscall: "fcntl O_NONBLOCK", Err: err}
	}
	d.ep = os.NewFile(uintptr(epfd), "rpc-stream-epoll")
	fw.dirs = append(fw.dirs, d) // released with the forwarder from here on
	// A deadline can be set only on a file in the netpoller.
	if err := d.ep.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("rpc: RevocableStream: epoll descriptor not pollable: %w", err)
	}
	rc, err := d.ep.SyscallConn()
	if err != nil {
		return err
	}
	d.rc = rc
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, src, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		return &os.SyscallError{Syscall: "epoll_ctl", Err: err}
	}
	// With no events asked for, epoll still reports EPOLLERR and EPOLLHUP.
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, dst, &unix.EpollEvent{}); err != nil {
		return &os.SyscallError{Syscall: "epoll_ctl", Err: err}
	}
	return nil
}

// spliceFlags: SPLICE_F_NONBLOCK makes the pipe side of every splice
// non-blocking whatever its descriptor's mode (and an AF_UNIX source's
// read too). SPLICE_F_MOVE is left out: kernels ignore it since 2.6.21.
const spliceFlags = unix.SPLICE_F_NONBLOCK

// step moves as much as it can without blocking. It returns false to wait
// for ep to be readable (src readable or dst gone, or dst writable,
// as d.writing says) and true when the direction is over.
func (d *direction) step(epfd uintptr) bool {
	for {
		if d.fw.stopped.Load() {
			d.outcome = revoked
			return true
		}
		if d.pending > 0 {
			n, err := unix.Splice(d.mid[0], nil, d.dst, nil, d.pending, spliceFlags)
			switch {
			case err == unix.EAGAIN:
				return d.await(int(epfd), true)
			case err == unix.EINTR:
			case err != nil || n == 0:
				d.outcome = dstGone
				return true
			default:
				d.pending -= int(n)
			}
			continue
		}
		n, err := unix.Splice(d.src, nil, d.mid[1], nil, d.chunk, spliceFlags)
		switch {
		case err == unix.EAGAIN:
			if d.await(int(epfd), false) {
				return true
			}
			// Before waiting for src, see that somebody still takes
			// what would come: a holder that closed its end must not
			// keep the forwarder waiting on a silent f.
			pfd := []unix.PollFd{{Fd: int32(d.dst)}}
			if n, _ := unix.Poll(pfd, 0); n > 0 && pfd[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0 {
				d.outcome = dstGone
				return true
			}
			return false
		case err == unix.EINTR:
		case err != nil || n == 0:
			d.outcome = srcEnded
			return true
		default:
			d.pending = int(n)
		}
	}
}

// await points ep at dst's writability (writing) or src's readability,
// and returns true (the direction is over) if it cannot. A change of mode
// that finds the new condition already true makes ep readable at once, so
// no wakeup is lost between the splice's EAGAIN and the wait.
func (d *direction) await(epfd int, writing bool) bool {
	if d.writing == writing {
		return false
	}
	srcEv, dstEv := uint32(unix.EPOLLIN), uint32(0)
	if writing {
		srcEv, dstEv = 0, unix.EPOLLOUT
	}
	if unix.EpollCtl(epfd, unix.EPOLL_CTL_MOD, d.src, &unix.EpollEvent{Events: srcEv}) != nil ||
		unix.EpollCtl(epfd, unix.EPOLL_CTL_MOD, d.dst, &unix.EpollEvent{Events: dstEv}) != nil {
		d.outcome = srcEnded // cannot happen: both are registered
		return true
	}
	d.writing = writing
	return false
}

// run runs direction d until it is over, passes its end on, and releases
// the forwarder if d was the last direction running.
func (fw *streamForwarder) run(d *direction) {
	if err := d.rc.Read(d.step); err != nil {
		// The deadline stop set: revoked.
		d.outcome = revoked
	}
	switch d.outcome {
	case srcEnded:
		// Pass EOF on. A pipe's write end is closed on release, which
		// follows at once (a pipe has one direction).
		if d.sockets {
			unix.Shutdown(d.dst, unix.SHUT_WR)
		}
	case dstGone:
		// Writes to the forwarder's end now fail with EPIPE instead of
		// filling a buffer nobody reads.
		if d.src == fw.sock {
			unix.Shutdown(d.src, unix.SHUT_RD)
		}
	}
	if fw.running.Add(-1) == 0 {
		fw.release()
	}
}

// stop revokes: it wakes the directions, which end and release the
// forwarder (release cuts the holder off).
func (fw *streamForwarder) stop() {
	if !fw.stopped.CompareAndSwap(false, true) {
		return
	}
	past := time.Unix(1, 0)
	for _, d := range fw.dirs {
		d.ep.SetReadDeadline(past) // wakes a wait; fails harmlessly once closed
	}
}

// release closes everything the forwarder holds, once its directions
// have ended (or were never started).
func (fw *streamForwarder) release() {
	if fw.stopCtx != nil {
		fw.stopCtx()
	}
	for _, d := range fw.dirs {
		d.ep.Close()
	}
	if fw.sock >= 0 {
		// Closing an AF_UNIX stream socket with unread bytes in its
		// queue makes the peer's next read fail with ECONNRESET. Shut it
		// (nothing more can arrive) and drop what the holder sent that
		// was never forwarded, so the holder reads a plain EOF.
		unix.Shutdown(fw.sock, unix.SHUT_RDWR)
		buf := make([]byte, 16<<10)
		for {
			if n, err := unix.Read(fw.sock, buf); n <= 0 || err != nil {
				break
			}
		}
	}
	if fw.restoreBlocking {
		unix.SetNonblock(fw.f, false)
	}
	for _, fd := range fw.fds {
		unix.Close(fd)
	}
	close(fw.done)
}
