package remote

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/internal/fdmux"
	"github.com/caplin-dev/caplin/internal/pty"
	"golang.org/x/sys/unix"
)

// How a descriptor crosses the connection. Each forwarded descriptor
// gets a stream of its own, so that a slow reader of one holds up no
// other (fdmux gives every stream its own window).
const (
	kindRefused = iota // cannot cross: the receiver gets a dead object
	kindObject         // a SOCK_SEQPACKET socket: messages and their fds, relayed
	kindStream         // bytes both ways: the receiver gets a stream socket
	kindReader         // bytes to the receiver: it gets a pipe's read end
	kindWriter         // bytes from the receiver: it gets a pipe's write end
	kindTTY            // a terminal: the receiver gets a pseudo-terminal of its own
	kindSame           // the same descriptor as an earlier one of the message
	kindBulk           // a sealed memfd (rpc.Bulk): copied whole and sealed again
)

var kindNames = [...]string{"refused", "object", "stream", "reader", "writer", "terminal", "same", "bulk"}

// maxBulk bounds a sealed memfd copied across.
const maxBulk = 256 << 20

// maxRelayed bounds one relayed message (rpc's default is 64 KiB).
const maxRelayed = 1 << 20

// mux is one side of the connection: the fdmux session, and the streams
// the peer opened that a message has not claimed yet.
type mux struct {
	sess *fdmux.Session
	log  *slog.Logger

	mu      sync.Mutex
	arrived map[uint32]*fdmux.Stream
	waiting map[uint32]chan *fdmux.Stream
}

// claimTimeout bounds the wait for a stream a message names (it is
// opened before the message is sent, so it is normally there).
const claimTimeout = 30 * time.Second

func newMux(sess *fdmux.Session, log *slog.Logger) *mux {
	m := &mux{sess: sess, log: log, arrived: map[uint32]*fdmux.Stream{}, waiting: map[uint32]chan *fdmux.Stream{}}
	go m.accept()
	return m
}

func (m *mux) accept() {
	for {
		s, err := m.sess.Accept()
		if err != nil {
			m.mu.Lock()
			for id, s := range m.arrived {
				s.Close()
				delete(m.arrived, id)
			}
			m.mu.Unlock()
			return
		}
		id := s.ID()
		m.mu.Lock()
		if ch, ok := m.waiting[id]; ok {
			delete(m.waiting, id)
			ch <- s
		} else {
			m.arrived[id] = s
		}
		m.mu.Unlock()
	}
}

// claim returns the stream the peer opened with id, waiting for it.
func (m *mux) claim(id uint32) (*fdmux.Stream, error) {
	m.mu.Lock()
	if s, ok := m.arrived[id]; ok {
		delete(m.arrived, id)
		m.mu.Unlock()
		return s, nil
	}
	if _, dup := m.waiting[id]; dup {
		m.mu.Unlock()
		return nil, fmt.Errorf("remote: stream %d claimed twice", id)
	}
	ch := make(chan *fdmux.Stream, 1)
	m.waiting[id] = ch
	m.mu.Unlock()
	t := time.NewTimer(claimTimeout)
	defer t.Stop()
	select {
	case s := <-ch:
		return s, nil
	case <-m.sess.Done():
	case <-t.C:
	}
	m.mu.Lock()
	delete(m.waiting, id)
	m.mu.Unlock()
	select {
	case s := <-ch:
		return s, nil
	default:
	}
	return nil, fmt.Errorf("remote: stream %d: %w", id, ErrClosed)
}

// classify says how the descriptor f crosses, and why not if it cannot.
func classify(f *os.File) (kind int, why string) {
	var st unix.Stat_t
	fd := rawFD(f)
	if err := unix.Fstat(fd, &st); err != nil {
		return kindRefused, "fstat: " + err.Error()
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFSOCK:
		typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil {
			return kindRefused, "getsockopt SO_TYPE: " + err.Error()
		}
		switch typ {
		case unix.SOCK_SEQPACKET:
			if dom, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); dom == unix.AF_UNIX {
				return kindObject, ""
			}
			return kindRefused, "a SOCK_SEQPACKET socket that is not AF_UNIX"
		case unix.SOCK_STREAM:
			return kindStream, ""
		}
		return kindRefused, "a datagram socket"
	case unix.S_IFDIR:
		return kindRefused, "a directory"
	case unix.S_IFCHR:
		if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
			return kindTTY, ""
		}
	case unix.S_IFREG:
		if seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0); err == nil && seals&unix.F_SEAL_WRITE != 0 {
			return kindBulk, ""
		}
	case unix.S_IFIFO:
	default:
		// pidfds, eventfds, epoll, mounts (anonymous inodes and O_PATH)
		return kindRefused, "not a file, pipe, socket or terminal"
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return kindRefused, "fcntl F_GETFL: " + err.Error()
	}
	if fl&unix.O_PATH != 0 {
		return kindRefused, "an O_PATH descriptor"
	}
	switch fl & unix.O_ACCMODE {
	case unix.O_RDONLY:
		return kindReader, ""
	case unix.O_WRONLY:
		return kindWriter, ""
	}
	return kindStream, ""
}

// fdRef is one descriptor of a relayed message, as it crosses.
type fdRef struct {
	kind int
	id   uint32
}

// send starts forwarding f (which it takes) and says how the peer finds
// it. A descriptor that cannot cross is logged and closed, and the peer
// gets a dead object in its place: the message still arrives.
func (m *mux) send(f *os.File) fdRef {
	kind, why := classify(f)
	if kind == kindRefused {
		m.log.Warn("remote: a descriptor cannot cross the connection: the receiver gets a closed socket in its place", "fd", f.Name(), "why", why)
		f.Close()
		return fdRef{kind: kindRefused}
	}
	s, err := m.sess.Open()
	if err != nil {
		f.Close()
		return fdRef{kind: kindRefused}
	}
	switch kind {
	case kindObject:
		uc, err := unixConn(f)
		if err != nil {
			s.Close()
			return fdRef{kind: kindRefused}
		}
		go m.relay(uc, s)
	case kindStream:
		go pumpBoth(pollable(f), s)
	case kindReader:
		go pumpOut(pollable(f), s)
	case kindWriter:
		go pumpIn(s, pollable(f))
	case kindTTY:
		go m.ttySender(pollable(f), s)
	case kindBulk:
		go func() {
			defer f.Close()
			defer s.Close()
			io.Copy(s, io.NewSectionReader(f, 0, maxBulk))
		}()
	}
	return fdRef{kind: kind, id: s.ID()}
}

// receive makes the descriptor that stands for ref on this side, and
// starts forwarding it.
func (m *mux) receive(ref fdRef) (*os.File, error) {
	if ref.kind == kindRefused {
		return deadObject()
	}
	s, err := m.claim(ref.id)
	if err != nil {
		return nil, err
	}
	switch ref.kind {
	case kindObject:
		return m.object(s, "remote object")
	case kindStream:
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			s.Close()
			return nil, &os.SyscallError{Syscall: "socketpair", Err: err}
		}
		unix.SetNonblock(fds[1], true)
		go pumpBoth(os.NewFile(uintptr(fds[1]), "remote stream"), s)
		return os.NewFile(uintptr(fds[0]), "remote stream"), nil
	case kindReader, kindWriter:
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			s.Close()
			return nil, &os.SyscallError{Syscall: "pipe2", Err: err}
		}
		bigPipe(p[0])
		if ref.kind == kindReader {
			unix.SetNonblock(p[1], true)
			go pumpIn(s, os.NewFile(uintptr(p[1]), "remote pipe"))
			return os.NewFile(uintptr(p[0]), "remote pipe"), nil
		}
		unix.SetNonblock(p[0], true)
		go pumpOut(os.NewFile(uintptr(p[0]), "remote pipe"), s)
		return os.NewFile(uintptr(p[1]), "remote pipe"), nil
	case kindTTY:
		master, peer, err := pty.Open(0, 0)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("remote: a terminal for a forwarded one: %w", err)
		}
		// The sender's first frame is the terminal's size: the program
		// must not start on a terminal of size 0x0 (stty size, curses),
		// so the terminal is handed on once it is applied, or after a
		// second at most.
		first := make(chan struct{})
		go ttyReceiver(master, s, first)
		select {
		case <-first:
		case <-time.After(time.Second):
		}
		return peer, nil
	case kindBulk:
		defer s.Close()
		fd, err := unix.MemfdCreate("remote bulk", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			return nil, &os.SyscallError{Syscall: "memfd_create", Err: err}
		}
		f := os.NewFile(uintptr(fd), "remote bulk")
		if _, err := io.Copy(f, io.LimitReader(s, maxBulk)); err != nil {
			f.Close()
			return nil, fmt.Errorf("remote: copying a sealed memfd: %w", err)
		}
		const seals = unix.F_SEAL_WRITE | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
			f.Close()
			return nil, &os.SyscallError{Syscall: "fcntl F_ADD_SEALS", Err: err}
		}
		return f, nil
	}
	s.Close()
	return nil, fmt.Errorf("remote: unknown descriptor kind %d", ref.kind)
}

// object returns this side's end of the object whose messages come and
// go on s: one end of a new socket pair, the other relayed. s is closed
// if it fails.
func (m *mux) object(s *fdmux.Stream, name string) (*os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		s.Close()
		return nil, &os.SyscallError{Syscall: "socketpair", Err: err}
	}
	uc, err := unixConn(os.NewFile(uintptr(fds[1]), "relay"))
	if err != nil {
		unix.Close(fds[0])
		s.Close()
		return nil, err
	}
	go m.relay(uc, s)
	return os.NewFile(uintptr(fds[0]), name), nil
}

// deadObject is what stands for a descriptor that could not cross: one
// end of a socket pair whose other end is closed, so that calls on it
// fail and reads from it end at once.
func deadObject() (*os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, &os.SyscallError{Syscall: "socketpair", Err: err}
	}
	unix.Close(fds[1])
	return os.NewFile(uintptr(fds[0]), "descriptor that could not cross"), nil
}

func unixConn(f *os.File) (*net.UnixConn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, errors.New("remote: not a Unix socket")
	}
	return uc, nil
}

// rawFD is f's descriptor number, without Fd's side effect of making
// the open file blocking (it may be shared: a terminal, a shell's pipe,
// another process's socket). It is valid while f is open.
func rawFD(f *os.File) int {
	n := -1
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { n = int(fd) })
	}
	return n
}

// restored holds the file status flags pollable changed, by file.
var restored sync.Map // *os.File -> int

// pollable returns f, made non-blocking so that its reads and writes go
// through Go's poller and closing it ends them; its file status flags
// are put back when closeFile closes it, since the open file may be
// shared (a terminal, a shell's pipe). A regular file is left as it is.
func pollable(f *os.File) *os.File {
	fd := rawFD(f)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
		return f
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NONBLOCK != 0 {
		return f // in the poller already (os.NewFile saw it non-blocking)
	}
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return f
	}
	f.Close()
	unix.SetNonblock(nfd, true)
	p := os.NewFile(uintptr(nfd), f.Name())
	restored.Store(p, fl)
	return p
}

// closeFile closes f, first putting back the flags pollable changed.
func closeFile(f *os.File) {
	if fl, ok := restored.LoadAndDelete(f); ok {
		if rc, err := f.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETFL, fl.(int)) })
		}
	}
	f.Close()
}

// copyBuf is a pump's buffer: large, so that a stream's bytes cross in
// few frames and system calls (a pipe takes up to 1 MiB: bigPipe).
const copyBuf = 256 << 10

var bufs = sync.Pool{New: func() any { b := make([]byte, copyBuf); return &b }}

// pump copies src to dst with a pooled buffer, or with the stream's
// fast paths: splice(2) between it and a pipe. (io.Copy would not find
// them from a file: *os.File's WriteTo hides the file from the stream's
// ReadFrom.)
func pump(dst io.Writer, src io.Reader) (int64, error) {
	if s, ok := dst.(*fdmux.Stream); ok {
		return s.ReadFrom(src)
	}
	if s, ok := src.(*fdmux.Stream); ok {
		return s.WriteTo(dst)
	}
	b := bufs.Get().(*[]byte)
	defer bufs.Put(b)
	return io.CopyBuffer(dst, src, *b)
}

// bigPipe grows the pipe fd to 1 MiB (the unprivileged limit by
// default), for throughput: best effort.
func bigPipe(fd int) {
	unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, 1<<20)
}

// pumpOut copies f to s until f ends (then s is closed for writing) or
// the peer goes.
func pumpOut(f *os.File, s *fdmux.Stream) {
	go func() {
		// The peer never writes here: its reads end when it closes.
		io.Copy(io.Discard, s)
		closeFile(f)
	}()
	pump(s, f)
	s.Close()
	closeFile(f)
}

// pumpIn copies s to f until the peer closes it, then closes f.
//
// A pipe is grown to 1 MiB first (best effort; a pipe's capacity is not
// part of what it means): the stream splices into it while it has room,
// and buffers when it has not, which costs copies and a hand-off.
func pumpIn(s *fdmux.Stream, f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			var st unix.Stat_t
			if unix.Fstat(int(fd), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFIFO {
				bigPipe(int(fd))
			}
		})
	}
	pump(f, s)
	closeFile(f)
	s.Close() // a write here failed, or the peer closed: either way, done
}

// pumpBoth copies both ways, each direction ending on its own (a
// half-close), and closes f when both have.
func pumpBoth(f *os.File, s *fdmux.Stream) {
	done := make(chan struct{})
	go func() {
		pump(f, s)
		if rc, err := f.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_WR) })
		}
		close(done)
	}()
	pump(s, f)
	s.CloseWrite()
	<-done
	s.Close()
	closeFile(f)
}

// Terminals: the sender's side reads its terminal and sends what it
// reads in frames, with the terminal's size in frames of its own whenever
// it changes (SIGWINCH); what the receiver's pseudo-terminal writes comes
// back unframed.
const (
	ttyData = iota
	ttySize
)

func (m *mux) ttySender(f *os.File, s *fdmux.Stream) {
	var wmu sync.Mutex
	frame := func(typ byte, p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		var h [5]byte
		h[0] = typ
		binary.LittleEndian.PutUint32(h[1:], uint32(len(p)))
		if _, err := s.Write(h[:]); err != nil {
			return err
		}
		_, err := s.Write(p)
		return err
	}
	sendSize := func() {
		rc, err := f.SyscallConn()
		if err != nil {
			return
		}
		var ws *unix.Winsize
		rc.Control(func(fd uintptr) { ws, _ = unix.IoctlGetWinsize(int(fd), unix.TIOCGWINSZ) })
		if ws != nil {
			var p [4]byte
			binary.LittleEndian.PutUint16(p[0:], ws.Row)
			binary.LittleEndian.PutUint16(p[2:], ws.Col)
			frame(ttySize, p[:])
		}
	}
	sendSize()
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-winch:
				sendSize()
			case <-stop:
				return
			}
		}
	}()
	back := make(chan struct{})
	go func() {
		// What the program writes to its terminal.
		io.Copy(f, s)
		close(back)
	}()
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := f.Read(buf)
			if n > 0 && frame(ttyData, buf[:n]) != nil {
				return
			}
			if err != nil {
				s.CloseWrite()
				return
			}
		}
	}()
	<-back
	signal.Stop(winch)
	close(stop)
	s.Close()
	closeFile(f)
}

// ttyReceiver serves the terminal master for the stream s: what s sends
// is written to it, or sets its size; what it reads goes to s. first is
// closed once the first frame has been acted on, or s has ended.
func ttyReceiver(master *os.File, s *fdmux.Stream, first chan struct{}) {
	var once sync.Once
	firstDone := func() { once.Do(func() { close(first) }) }
	defer firstDone()
	go func() {
		// The program's output; EIO once every peer fd is closed.
		io.Copy(s, master)
		s.CloseWrite()
		master.Close()
	}()
	defer s.Close()
	var h [5]byte
	buf := make([]byte, 32<<10)
	for {
		if _, err := io.ReadFull(s, h[:]); err != nil {
			break
		}
		n := int(binary.LittleEndian.Uint32(h[1:]))
		if n > len(buf) {
			break
		}
		if _, err := io.ReadFull(s, buf[:n]); err != nil {
			break
		}
		switch h[0] {
		case ttyData:
			if _, err := master.Write(buf[:n]); err != nil {
				s.Close()
				return
			}
		case ttySize:
			if n == 4 {
				if rc, err := master.SyscallConn(); err == nil {
					rc.Control(func(fd uintptr) {
						pty.SetSize(int(fd), binary.LittleEndian.Uint16(buf[0:]), binary.LittleEndian.Uint16(buf[2:]))
					})
				}
			}
		}
		firstDone()
	}
}

// relay passes messages between the local object uc and the peer's, over
// s: each message's descriptors are forwarded first (send), and the
// frame names them. It returns once both directions have ended.
//
// Frame: u32 payload length, u8 descriptor count, per descriptor u8 kind
// and u32 stream id (kindSame: the index of the earlier one), payload.
func (m *mux) relay(uc *net.UnixConn, s *fdmux.Stream) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.relayIn(s, uc)
	}()
	m.relayOut(uc, s)
	<-done
	s.Close()
	uc.Close()
}

func (m *mux) relayOut(uc *net.UnixConn, s *fdmux.Stream) {
	defer s.CloseWrite()
	buf := make([]byte, maxRelayed)
	oob := make([]byte, unix.CmsgSpace(253*4))
	var hdr []byte
	for {
		n, oobn, flags, _, err := uc.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		var files []*os.File
		if oobn > 0 {
			files = parseRights(oob[:oobn])
		}
		if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
			m.log.Warn("remote: a message too large to relay: the object's connection ends", "bytes", n)
			for _, f := range files {
				f.Close()
			}
			return
		}
		if n == 0 && len(files) == 0 {
			return // the local end closed
		}
		hdr = binary.LittleEndian.AppendUint32(hdr[:0], uint32(n))
		hdr = append(hdr, byte(len(files)))
		// The same file more than once (a terminal as fds 0, 1 and 2)
		// crosses once.
		seen := map[[3]uint64]int{}
		for i, f := range files {
			var st unix.Stat_t
			fd := rawFD(f)
			if unix.Fstat(fd, &st) == nil {
				fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
				key := [3]uint64{st.Dev, st.Ino, uint64(fl & unix.O_ACCMODE)}
				if j, ok := seen[key]; ok && st.Mode&unix.S_IFMT != unix.S_IFREG {
					f.Close()
					hdr = append(hdr, kindSame)
					hdr = binary.LittleEndian.AppendUint32(hdr, uint32(j))
					continue
				}
				seen[key] = i
			}
			ref := m.send(f)
			hdr = append(hdr, byte(ref.kind))
			hdr = binary.LittleEndian.AppendUint32(hdr, ref.id)
		}
		if _, err := s.Write(append(hdr, buf[:n]...)); err != nil {
			return
		}
	}
}

func (m *mux) relayIn(s *fdmux.Stream, uc *net.UnixConn) {
	defer uc.CloseWrite()
	var h [5]byte
	for {
		if _, err := io.ReadFull(s, h[:]); err != nil {
			if err != io.EOF {
				// The peer or the connection went: so does the object.
				uc.Close()
			}
			return
		}
		n := int(binary.LittleEndian.Uint32(h[0:]))
		nfds := int(h[4])
		if n > maxRelayed {
			m.log.Warn("remote: a relayed message too large", "bytes", n)
			s.Close()
			uc.Close()
			return
		}
		refs := make([]byte, 5*nfds)
		msg := make([]byte, n)
		if _, err := io.ReadFull(s, refs); err != nil {
			uc.Close()
			return
		}
		if _, err := io.ReadFull(s, msg); err != nil {
			uc.Close()
			return
		}
		files := make([]*os.File, 0, nfds)
		var fds []int
		ok := true
		for i := range nfds {
			kind := int(refs[5*i])
			id := binary.LittleEndian.Uint32(refs[5*i+1:])
			if kind == kindSame {
				if int(id) >= len(files) {
					ok = false
					break
				}
				fds = append(fds, rawFD(files[id]))
				files = append(files, files[id])
				continue
			}
			f, err := m.receive(fdRef{kind: kind, id: id})
			if err != nil {
				m.log.Warn("remote: a forwarded descriptor", "kind", kindName(kind), "err", err)
				ok = false
				break
			}
			files = append(files, f)
			fds = append(fds, rawFD(f))
		}
		if ok {
			var oob []byte
			if len(fds) > 0 {
				oob = unix.UnixRights(fds...)
			}
			_, _, err := uc.WriteMsgUnix(msg, oob, nil)
			ok = err == nil
		}
		for _, f := range files {
			f.Close() // a second Close of a repeated one does nothing
		}
		if !ok {
			s.Close()
			uc.Close()
			return
		}
	}
}

func kindName(k int) string {
	if k >= 0 && k < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprint(k)
}

func parseRights(oob []byte) []*os.File {
	msgs, _ := unix.ParseSocketControlMessage(oob)
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("fd %d", fd)))
		}
	}
	return files
}
