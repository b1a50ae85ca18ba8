package netgrant

// What the Broker does with each trapped call: connect, bind and listen.
//
// A socket the program holds is either the sandbox's own (made in its
// network namespace, which reaches its loopback only) or one the Broker
// installed, which lives in the Broker's network namespace (the host's).
// Calls on the sandbox's own sockets that no rule concerns the Broker
// makes on its copy of the socket, as the kernel would have made them in
// the sandbox's network: not handed back to the kernel (CONTINUE), which
// would act on whatever socket the program's fd number names by then
// (another thread may have put an installed one there) with whatever
// address its memory holds by then. Only a Unix socket's bind, which
// makes a file where the program sees it, goes on in the kernel. Calls
// on an installed socket the Broker answers itself, from the address it
// read, so that such a socket cannot be disconnected and aimed
// elsewhere, bound or made to listen.

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/internal/unotify"
	"golang.org/x/sys/unix"
)

// sizeofSockaddrStorage is the largest address length connect takes
// (sizeof(struct sockaddr_storage)).
const sizeofSockaddrStorage = 128

// sizeofSockaddrInet6RFC2133 is the shortest sockaddr_in6 the kernel
// takes: without sin6_scope_id.
const sizeofSockaddrInet6RFC2133 = 24

// verdict is how a notification is answered.
type verdict struct {
	cont  bool       // let the call go on in the kernel (connect: make it in the sandbox, connectLocal)
	errno unix.Errno // fail it with this
	// fd, when not -1, is a socket (the handler's to close) to install
	// in the program in place of its own; the call then returns 0, or
	// fails with errno (EINPROGRESS).
	fd int
	// wait, when not nil, finishes a call that waits (for the network,
	// for names to be looked up) and returns the verdict then; the rest
	// is not set.
	wait func() verdict
	// gone: the call is no longer pending, or was answered already;
	// nothing is answered.
	gone bool
	// val is what the call returns when it succeeds (socket's fd).
	val int64
}

var (
	cont = verdict{cont: true, fd: -1}
	gone = verdict{gone: true, fd: -1}
)

// fail is a verdict that fails the call with errno.
func fail(errno unix.Errno) verdict { return verdict{errno: errno, fd: -1} }

// handle decides one trapped call and answers it. With mayDefer, a call
// that must wait is finished on a goroutine of its own, which frees the
// loop's slot when done; handle then reports true.
func (b *Broker) handle(n unotify.Notif, mayDefer bool) (deferred bool) {
	var v verdict
	switch n.Data.Nr {
	case unix.SYS_CONNECT:
		if b.policy.Host != nil {
			v = b.hostConnect(n)
		} else {
			v = b.connect(n)
		}
	case unix.SYS_BIND, unix.SYS_LISTEN:
		if b.policy.Host != nil {
			v = b.hostBindOrListen(n)
		} else {
			v = b.bindOrListen(n)
		}
	case unix.SYS_SOCKET:
		v = fail(unix.EACCES)
		if b.policy.Host != nil {
			v = b.hostSocket(n)
		}
	default:
		v = fail(unix.ENOSYS) // not a call Filter traps
	}
	if v.wait != nil {
		if !mayDefer {
			v = v.wait()
		} else {
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer func() { <-b.slots }()
				b.answer(n, v.wait())
			}()
			return true
		}
	}
	b.answer(n, v)
	return false
}

// answer answers notification n as v says.
func (b *Broker) answer(n unotify.Notif, v verdict) {
	switch {
	case v.gone:
		return
	case v.cont:
		unotify.Send(b.fd, n.ID, 0, 0, true)
		return
	}
	if v.fd >= 0 {
		defer unix.Close(v.fd)
		target := int(int32(n.Data.Args[0]))
		if err := unotify.AddFD(b.fd, n.ID, v.fd, target, b.cloexec(int(n.PID), target)); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return // the call was interrupted, or its process is gone
			}
			// The kernel could not install it (the fd number is beyond
			// the program's RLIMIT_NOFILE, say): the connect fails.
			errno := errnoOf(err)
			if errno == unix.EBADF {
				errno = unix.EMFILE
			}
			unotify.Send(b.fd, n.ID, 0, errno, false)
			return
		}
	}
	unotify.Send(b.fd, n.ID, v.val, v.errno, false)
}

// caller is what the Broker knows of a trapped call on a socket: its
// thread, a pidfd of it, and a copy of the socket.
type caller struct {
	tid, pidfd int
	sockfd     int // the socket's number in the program
	sock       int // the Broker's copy of it; -1 if it has none
	domain     int
	typ, proto int
	local      bool // the socket is in the sandbox's network namespace
}

func (c *caller) close() {
	if c.sock >= 0 {
		unix.Close(c.sock)
	}
	unix.Close(c.pidfd)
}

// callerOf returns what a call on the socket in argument 0 needs, or,
// when it cannot be had, the verdict instead: gone, or fail (EBADF for no
// such fd, ENOTSOCK for a file that is not a socket, as the kernel would).
// Never go on in the kernel: by then another thread of the program may
// have put a socket the Broker installed (the host's) at that number,
// which the kernel would connect, bind or make listen with whatever
// address the program's memory holds by then.
func (b *Broker) callerOf(n unotify.Notif) (*caller, verdict, bool) {
	c := &caller{tid: int(n.PID), sockfd: int(int32(n.Data.Args[0])), sock: -1}
	var err error
	if c.pidfd, err = pidfdOf(c.tid); err != nil {
		if !unotify.IDValid(b.fd, n.ID) {
			return nil, gone, false
		}
		b.log.Debug("netgrant: a pidfd of a trapped thread", "tid", c.tid, "err", err)
		return nil, fail(ErrnoRefused), false
	}
	if c.sock, err = unix.PidfdGetfd(c.pidfd, c.sockfd, 0); err != nil {
		c.close()
		if !unotify.IDValid(b.fd, n.ID) {
			return nil, gone, false
		}
		if err == unix.EBADF {
			return nil, fail(unix.EBADF), false
		}
		b.log.Debug("netgrant: the socket of a trapped call", "tid", c.tid, "fd", c.sockfd, "err", err)
		return nil, fail(ErrnoRefused), false
	}
	if c.typ, err = unix.GetsockoptInt(c.sock, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
		c.close()
		if !unotify.IDValid(b.fd, n.ID) {
			return nil, gone, false
		}
		return nil, fail(unix.ENOTSOCK), false
	}
	c.domain, _ = unix.GetsockoptInt(c.sock, unix.SOL_SOCKET, unix.SO_DOMAIN)
	c.proto, _ = unix.GetsockoptInt(c.sock, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	c.local = b.inSandbox(c.sock)
	return c, verdict{}, true
}

// inSandbox reports whether sock is in the sandbox's network namespace
// (Policy.NetNS; without it, any but the Broker's own): asked with
// SIOCGSKNS, which needs CAP_NET_ADMIN over the socket's namespace, so
// that a socket of the host's, where an unprivileged Broker has none,
// is never taken for the sandbox's.
func (b *Broker) inSandbox(sock int) bool {
	ns, err := unix.IoctlRetInt(sock, unix.SIOCGSKNS)
	if err != nil {
		return false
	}
	defer unix.Close(ns)
	var st unix.Stat_t
	if err := unix.Fstat(ns, &st); err != nil {
		return false
	}
	if b.policy.NetNS != 0 {
		return st.Ino == b.policy.NetNS
	}
	return st.Ino != b.ownNS
}

// bindOrListen decides a bind or listen: on the sandbox's own sockets
// the Broker makes it, on its copy of the socket (so that it is made on
// the socket it looked at, not on whatever socket the program's fd number
// names by the time the kernel would), but a Unix socket's bind, which
// makes a file where the program sees it, and which the kernel does; on
// an installed one, which is the host's, it is refused (EACCES), since it
// would bind or listen on the host's network.
func (b *Broker) bindOrListen(n unotify.Notif) verdict {
	c, v, ok := b.callerOf(n)
	if !ok {
		return v
	}
	defer c.close()
	var raw []byte
	var rerr unix.Errno
	if n.Data.Nr == unix.SYS_BIND && c.local {
		raw, rerr = readAddr(c.tid, n)
	}
	if !unotify.IDValid(b.fd, n.ID) {
		return gone
	}
	if c.local {
		switch {
		case n.Data.Nr == unix.SYS_LISTEN:
			listen := func() unix.Errno { return errnoOf(unix.Listen(c.sock, int(int32(n.Data.Args[1])))) }
			if c.domain == unix.AF_UNIX {
				// With the program's credentials, which its clients read.
				return fail(b.asProgram(n, false, listen))
			}
			return fail(listen())
		case rerr != 0:
			return fail(rerr)
		case c.domain == unix.AF_UNIX && len(raw) > 2 && int(uint16(raw[0])|uint16(raw[1])<<8) == unix.AF_UNIX && raw[2] != 0:
			// A name in the file system, made where the program sees
			// it: by the kernel, which reads the address again, on the
			// socket the number names by then. Only a socket the program
			// was given from outside could be of the host's network
			// there, and a name in the file system is the same from any
			// network.
			return cont
		}
		// Abstract names and autobind are the socket's network's: on the
		// copy, which is the sandbox's.
		return fail(bindRaw(c.sock, raw))
	}
	op := "bind"
	if n.Data.Nr == unix.SYS_LISTEN {
		op = "listen"
	}
	b.event(decision{Event{Op: op, PID: c.tid, Errno: ErrnoRefused}, false})
	return fail(ErrnoRefused)
}

// connect decides notification n, a connect(2), and does what it
// allows.
func (b *Broker) connect(n unotify.Notif) verdict {
	c, v, ok := b.callerOf(n)
	if !ok {
		return v
	}
	closeSock := true
	defer func() {
		if closeSock {
			c.close()
		}
	}()
	addrPtr, addrLen := n.Data.Args[1], int32(uint32(n.Data.Args[2]))
	var raw []byte
	var rerr unix.Errno
	switch {
	case addrLen < 0 || addrLen > sizeofSockaddrStorage:
		rerr = unix.EINVAL
	case addrPtr == 0 && addrLen > 0:
		rerr = unix.EFAULT
	default:
		raw = make([]byte, addrLen)
		if addrLen > 0 {
			if err := unotify.ReadMem(c.tid, addrPtr, raw); err != nil {
				rerr = unix.EFAULT
			}
		}
	}
	// Still pending: the thread was in the call all along, so the pidfd,
	// the socket and the memory read are its, not those of another that
	// took its number since. What was read is what is decided on: the
	// kernel never acts on the program's memory for a connect the Broker
	// makes.
	if !unotify.IDValid(b.fd, n.ID) {
		return gone
	}
	if !c.local {
		if rerr != 0 {
			return fail(rerr)
		}
		return b.connectInstalled(n, c, raw)
	}
	if rerr != 0 {
		return fail(rerr)
	}
	// What no rule concerns, the sandbox's own network does: made on the
	// Broker's copy of the socket, never handed back to the kernel.
	v = b.connectSandbox(n, c, raw, &closeSock)
	if v.cont {
		return b.connectLocal(n, c, raw)
	}
	return v
}

// connectSandbox decides a connect of the sandbox's own socket c to raw:
// a verdict, or cont for one that stays in the sandbox's network, which
// the caller makes (connectLocal). A verdict that waits takes c over,
// and clears *closeSock.
func (b *Broker) connectSandbox(n unotify.Notif, c *caller, raw []byte, closeSock *bool) verdict {
	if len(raw) < 2 {
		return cont // the kernel's own error (EINVAL)
	}
	family := int(uint16(raw[0]) | uint16(raw[1])<<8)
	switch {
	case family == unix.AF_UNIX && c.domain == unix.AF_UNIX:
		return b.connectUnix(n, c, raw)
	case family != unix.AF_INET && family != unix.AF_INET6:
		return cont
	}
	dest, ok := parseInet(family, raw)
	if !ok || c.domain != family {
		return cont // too short, or a mismatch: the kernel refuses it
	}
	if _, err := unix.Getpeername(c.sock); err == nil && c.typ == unix.SOCK_STREAM {
		return cont // connected already: EISCONN
	}
	rule, name, allowed := b.decide(dest)
	if !allowed && !isLocal(dest.Addr()) {
		if wait := b.lookAgain(dest); wait != nil {
			// Looking names up may take seconds: not on the loop's
			// thread, which answers the sandbox's other calls meanwhile.
			*closeSock = false
			return verdict{fd: -1, wait: func() verdict {
				defer c.close()
				rule, name, allowed := wait()
				v := b.grant(n, c, dest, rule, name, allowed)
				if v.cont {
					v = b.connectLocal(n, c, raw)
				}
				if v.wait != nil {
					return v.wait()
				}
				return v
			}}
		}
	}
	return b.grant(n, c, dest, rule, name, allowed)
}

// isLocal reports whether a connect to a stays on the host it is made
// on: loopback, or the unspecified address (which the kernel takes as a
// local one).
func isLocal(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || a.IsUnspecified()
}

// grant does what the decision on a connect of the sandbox's socket c
// to dest says: refuse it, leave it to the sandbox, or make it.
func (b *Broker) grant(n unotify.Notif, c *caller, dest netip.AddrPort, rule Rule, name string, allowed bool) verdict {
	addr := dest.String()
	tcp := c.typ == unix.SOCK_STREAM && c.proto == unix.IPPROTO_TCP
	if !allowed || !tcp {
		if isLocal(dest.Addr()) {
			return cont // the sandbox's own loopback
		}
		errno := ErrnoRefused
		if !tcp {
			// Only TCP is granted: a datagram socket's connect outside
			// has no route from the sandbox, nor has another stream
			// protocol's (SCTP's, MPTCP's), whose sockets could reach
			// further than their connect (an SCTP socket starts an
			// association with sendto, which is not trapped).
			errno = ErrnoNoRoute
		}
		b.event(decision{Event{PID: c.tid, Addr: addr, Errno: errno}, false})
		return fail(errno)
	}
	if bound(c.sock) {
		b.event(decision{Event{PID: c.tid, Addr: addr, Rule: rule.String(), Name: name, Errno: ErrnoBound}, false})
		return fail(ErrnoBound)
	}
	ev := Event{PID: c.tid, Addr: addr, Rule: rule.String(), Name: name}
	fd, errno, wait := b.dial(n, c, dest)
	if wait != nil {
		return verdict{fd: -1, wait: func() verdict {
			fd, errno := wait()
			ev.Errno = errnoUnlessInProgress(errno)
			b.event(decision{ev, true})
			return verdict{fd: fd, errno: errno}
		}}
	}
	ev.Errno = errnoUnlessInProgress(errno)
	b.event(decision{ev, true})
	return verdict{fd: fd, errno: errno}
}

// connectInstalled answers a connect on a socket the Broker installed
// (one of the host's): never in the kernel on the program's memory, and
// never to anything a rule does not allow. A connected one fails with
// EISCONN, as a connect on any connected socket; AF_UNSPEC, which would
// disconnect it for another use, with EOPNOTSUPP; and one not connected
// (in progress, failed) is connected by the Broker, on its copy of the
// same socket, to the address it read, if a rule allows it, so that the
// program gets the kernel's own answer (EALREADY, EISCONN, 0,
// ECONNREFUSED, ...).
func (b *Broker) connectInstalled(n unotify.Notif, c *caller, raw []byte) verdict {
	if c.domain != unix.AF_INET && c.domain != unix.AF_INET6 {
		return fail(unix.EISCONN) // Unix sockets are installed connected
	}
	if len(raw) < 2 {
		return fail(unix.EINVAL)
	}
	family := int(uint16(raw[0]) | uint16(raw[1])<<8)
	switch {
	case family == unix.AF_UNSPEC:
		return fail(unix.EOPNOTSUPP)
	case family != c.domain:
		return fail(unix.EAFNOSUPPORT)
	}
	dest, ok := parseInet(family, raw)
	if !ok {
		return fail(unix.EINVAL)
	}
	if _, err := unix.Getpeername(c.sock); err == nil {
		return fail(unix.EISCONN)
	}
	rule, name, allowed := b.decide(dest)
	if !allowed {
		b.event(decision{Event{PID: c.tid, Addr: dest.String(), Errno: ErrnoRefused}, false})
		return fail(ErrnoRefused)
	}
	ev := Event{PID: c.tid, Addr: dest.String(), Rule: rule.String(), Name: name}
	sa := sockaddrOf(c.domain, dest)
	fl, err := unix.FcntlInt(uintptr(c.sock), unix.F_GETFL, 0)
	if err != nil {
		return fail(errnoOf(err))
	}
	if fl&unix.O_NONBLOCK != 0 {
		errno := errnoOf(unix.Connect(c.sock, sa))
		ev.Errno = errnoUnlessInProgress(errno)
		b.event(decision{ev, true})
		return fail(errno)
	}
	// A blocking connect blocks, on the socket's own send timeout: not
	// on the loop's thread, and cut short (shut down) if the program
	// goes.
	dup, err := unix.FcntlInt(uintptr(c.sock), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fail(errnoOf(err))
	}
	return verdict{fd: -1, wait: func() verdict {
		defer unix.Close(dup)
		errno := b.connectWatched(n, dup, func(fd int) unix.Errno { return errnoOf(unix.Connect(fd, sa)) })
		ev.Errno = errnoUnlessInProgress(errno)
		b.event(decision{ev, true})
		return fail(errno)
	}}
}

// connectWatched connects fd, blocking, with do, and shuts fd down if
// the call of notification n stops being pending meanwhile (its process
// is gone) or the Broker closes, which ends the connect.
func (b *Broker) connectWatched(n unotify.Notif, fd int, do func(fd int) unix.Errno) unix.Errno {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-b.ctx.Done():
			case <-t.C:
				if unotify.IDValid(b.fd, n.ID) {
					continue
				}
			}
			unix.Shutdown(fd, unix.SHUT_RDWR)
			return
		}
	}()
	errno := do(fd)
	close(done)
	return errno
}

func errnoUnlessInProgress(e unix.Errno) unix.Errno {
	if e == unix.EINPROGRESS {
		return 0
	}
	return e
}

// parseInet parses a struct sockaddr_in or sockaddr_in6 (the latter
// without its scope ID, as the kernel takes it too).
func parseInet(family int, raw []byte) (netip.AddrPort, bool) {
	switch {
	case family == unix.AF_INET && len(raw) >= unix.SizeofSockaddrInet4:
		port := uint16(raw[2])<<8 | uint16(raw[3])
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(raw[4:8])), port), true
	case family == unix.AF_INET6 && len(raw) >= sizeofSockaddrInet6RFC2133:
		port := uint16(raw[2])<<8 | uint16(raw[3])
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(raw[8:24])), port), true
	}
	return netip.AddrPort{}, false
}

// sockaddrOf returns dest as an address of domain.
func sockaddrOf(domain int, dest netip.AddrPort) unix.Sockaddr {
	if domain == unix.AF_INET {
		return &unix.SockaddrInet4{Port: int(dest.Port()), Addr: dest.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(dest.Port()), Addr: dest.Addr().As16()}
}

// pidfdOf returns a pidfd of thread tid: of the thread itself
// (PIDFD_THREAD, Linux 6.9), whose fd table is the one its calls use;
// before 6.9, of its process, whose table is the same unless the thread
// unshared its own.
func pidfdOf(tid int) (int, error) {
	pidfd, err := unix.PidfdOpen(tid, pidfdThread)
	if err == unix.EINVAL {
		var tgid int
		if tgid, err = tgidOf(tid); err == nil {
			pidfd, err = unix.PidfdOpen(tgid, 0)
		}
	}
	return pidfd, err
}

// pidfdThread is PIDFD_THREAD: a pidfd of a thread (Linux 6.9).
const pidfdThread = unix.O_EXCL

// tgidOf returns the process (thread group) of thread tid.
func tgidOf(tid int) (int, error) {
	data, err := kernel.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, unix.ESRCH
}

// bound reports whether sock is bound to a local address or port.
func bound(sock int) bool {
	sa, err := unix.Getsockname(sock)
	if err != nil {
		return false
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return sa.Port != 0 || sa.Addr != [4]byte{}
	case *unix.SockaddrInet6:
		return sa.Port != 0 || sa.Addr != [16]byte{}
	}
	return false
}

// errnoOf returns the errno in err, 0 for nil, or EIO.
func errnoOf(err error) unix.Errno {
	if err == nil {
		return 0
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return unix.EIO
}
