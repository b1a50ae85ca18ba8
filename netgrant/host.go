package netgrant

// A program with no network or mount namespace of its own (a sandbox
// confined by Landlock alone) shares the host's: Landlock keeps it from
// the host's files, but not from the host's Unix sockets, which connect(2)
// reaches by name whatever Landlock's file rules say (before
// LANDLOCK_ACCESS_FS_RESOLVE_UNIX). So every connect of such a program is
// trapped (HostFilter), and the Broker makes it itself, on its own copy of
// the program's socket: to a Unix socket named in the file system only
// where the program's grants (Host.Paths) cover it, found where the
// program would find it and pinned, so that what was checked is what is
// connected to; to an abstract one only with Host.Abstract; in other
// families only with Host.Network. It never hands such a connect back to
// the kernel, which would read the address again from the program's
// memory, or act on whatever socket the program's fd names by then.

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/internal/unotify"
	"golang.org/x/sys/unix"
)

// Host says how a Broker decides the connects of a program that shares
// the host's network and file system (Policy.Host): one confined by
// Landlock alone.
type Host struct {
	// Paths are the files and directories the program was granted (its
	// Landlock rules' paths): it may connect to the Unix sockets at or
	// beneath them, as a program in a mount namespace may connect to the
	// sockets its mounts show. A socket named through a symbolic link is
	// judged where the link leads. Other Unix sockets in the file system
	// are refused (EACCES).
	Paths []string

	// Refuse are directories whose Unix sockets (directly in them) the
	// program never reaches, whatever Paths grant (EACCES): the
	// Broker's connect carries the Broker's process as the peer, so a
	// server that judges its peer by process (the user's caplin
	// supervisor) must not be reached through it. Compared by device
	// and inode, as opened when the Broker starts (one missing then is
	// left out).
	Refuse []string

	// Abstract lets the program connect to abstract Unix sockets, which,
	// without a network namespace of its own, are the host's. Without
	// it, such a connect fails (EPERM, as Landlock's scoping refuses it).
	Abstract bool

	// Network lets sockets of other families (AF_INET, AF_INET6, ...)
	// connect where the program asks: the host's network. Without it,
	// such a connect fails (EACCES), as Landlock's TCP rules refuse it.
	Network bool
}

// HostFilter returns the seccomp filter for Policy.Host: it hands every
// connect(2) of this architecture to the listener it is installed with
// (FilterFlags), and lets every other call through. bind and listen need
// no trap there: Landlock decides where a Unix socket may be made, and a
// sandbox without the host's network has no other sockets.
func HostFilter() []unix.SockFilter {
	var p bpf
	p.prologue()
	p.jump(jeq, unix.SYS_CONNECT, "notify", "allow")
	p.label("allow")
	p.stmt(ret, unix.SECCOMP_RET_ALLOW)
	p.label("notify")
	p.stmt(ret, unix.SECCOMP_RET_USER_NOTIF)
	return p.finish()
}

// HostSupported returns nil where a Broker with Policy.Host can work
// here: seccomp user notification (Linux 5.0), and pidfd_getfd (5.6) and
// process_vm_readv not refused by a seccomp filter the caller is under
// (a container's profile may refuse them without CAP_SYS_PTRACE). Else an
// *UnsupportedError naming what is missing.
func HostSupported() error {
	if err := supportedBase(); err != nil {
		return err
	}
	release := kernelRelease()
	pidfd, err := unix.PidfdOpen(unix.Getpid(), 0)
	if err != nil {
		return &UnsupportedError{Release: release, What: "pidfd_open", MinKernel: "5.3", Err: err}
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, pidfd, 0)
	if err != nil {
		return &UnsupportedError{Release: release, What: "pidfd_getfd", MinKernel: "5.6", Err: err}
	}
	unix.Close(fd)
	var b [1]byte
	if err := unotify.ReadMem(unix.Getpid(), addrOf(&b[0]), b[:]); err != nil {
		return &UnsupportedError{Release: release, What: "process_vm_readv", MinKernel: "3.2", Err: err}
	}
	return nil
}

// grant is one of Host.Paths, opened when the Broker starts.
type grant struct {
	dev, ino uint64
	dir      bool
}

// openGrants finds Host.Paths' files; those that are missing grant
// nothing.
func openGrants(paths []string) []grant {
	var gs []grant
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			continue
		}
		gs = append(gs, grant{dev: st.Dev, ino: st.Ino, dir: st.Mode&unix.S_IFMT == unix.S_IFDIR})
	}
	return gs
}

// hostConnect decides notification n, a connect of a program that shares
// the host's network and file system (Policy.Host), and makes what it
// allows.
func (b *Broker) hostConnect(n unotify.Notif) verdict {
	c, v, ok := b.callerOf(n)
	if !ok {
		return v
	}
	raw, rerr := readAddr(c.tid, n)
	// Still pending: the pidfd, the socket and the memory read are the
	// thread's (see connect).
	if !unotify.IDValid(b.fd, n.ID) {
		c.close()
		return gone
	}
	if rerr != 0 {
		c.close()
		return fail(rerr)
	}
	h := b.policy.Host
	if c.domain == unix.AF_UNIX && b.standIn(c.sock) {
		defer c.close()
		return b.standInConnect(c, raw)
	}
	if (c.domain == unix.AF_INET || c.domain == unix.AF_INET6) && !h.Network && len(b.policy.Rules) > 0 {
		return b.hostInet(n, c, raw)
	}
	if c.domain != unix.AF_UNIX {
		if !h.Network {
			b.event(decision{Event{PID: c.tid, Addr: inetString(raw), Errno: ErrnoRefused}, false})
			c.close()
			return fail(ErrnoRefused)
		}
		return b.connectCopy(n, c.takeSock(), raw, -1, false, nil)
	}
	if len(raw) <= 2 || int(uint16(raw[0])|uint16(raw[1])<<8) != unix.AF_UNIX {
		// No name, or another family: the kernel's own error (EINVAL,
		// EAFNOSUPPORT), or AF_UNSPEC's dissolving of a datagram
		// socket's peer, on the Broker's copy of the address.
		return b.connectCopy(n, c.takeSock(), raw, -1, false, nil)
	}
	if raw[2] == 0 {
		if !h.Abstract {
			b.event(decision{Event{PID: c.tid, Addr: "unix:@" + string(trimNUL(raw[3:])), Errno: unix.EPERM}, false})
			c.close()
			return fail(unix.EPERM)
		}
		return b.connectCopy(n, c.takeSock(), raw, -1, false, nil)
	}
	path := string(trimNUL(raw[2:]))
	if rule, ok := b.unixRule(path); ok {
		// A socket a unix: rule names, as in a sandbox with namespaces:
		// streams and seqpackets only (a datagram socket could send to
		// any of the host's sockets). The socket is the one at the
		// rule's path as it was when the Broker started, reached
		// without following links, not the one the program's path leads
		// to now: the program may have put a link to another socket
		// there, in a directory it may write.
		ev := Event{PID: c.tid, Addr: "unix:" + rule.Unix, Rule: rule.String()}
		if c.typ != unix.SOCK_STREAM && c.typ != unix.SOCK_SEQPACKET {
			c.close()
			ev.Rule, ev.Errno = "", ErrnoRefused
			b.event(decision{ev, false})
			return fail(ErrnoRefused)
		}
		pin, errno := b.pinRule(rule)
		if errno != 0 {
			c.close()
			ev.Errno = errno
			b.event(decision{ev, true})
			return fail(errno)
		}
		return b.connectCopy(n, c.takeSock(), nil, pin, true, func(errno unix.Errno) {
			ev.Errno = errnoUnlessInProgress(errno)
			b.event(decision{ev, true})
		})
	}
	pin, errno := b.pinUnix(n, path)
	if errno != 0 {
		c.close()
		return fail(errno)
	}
	if !b.granted(pin) || b.refused(pin) {
		unix.Close(pin)
		b.event(decision{Event{PID: c.tid, Addr: "unix:" + path, Errno: ErrnoRefused}, false})
		c.close()
		return fail(ErrnoRefused)
	}
	return b.connectCopy(n, c.takeSock(), nil, pin, false, nil)
}

// unixRule returns the unix: rule that names path (absolute, as the
// program gave it), if one does.
func (b *Broker) unixRule(path string) (Rule, bool) {
	for _, r := range b.policy.Rules {
		if r.Unix != "" && r.Unix == path {
			return r, true
		}
	}
	return Rule{}, false
}

// readAddr reads the address of connect notification n from thread
// tid's memory, or returns the errno the kernel would fail it with.
func readAddr(tid int, n unotify.Notif) ([]byte, unix.Errno) {
	addrPtr, addrLen := n.Data.Args[1], int32(uint32(n.Data.Args[2]))
	switch {
	case addrLen < 0 || addrLen > sizeofSockaddrStorage:
		return nil, unix.EINVAL
	case addrPtr == 0 && addrLen > 0:
		return nil, unix.EFAULT
	}
	raw := make([]byte, addrLen)
	if addrLen > 0 {
		if err := unotify.ReadMem(tid, addrPtr, raw); err != nil {
			return nil, unix.EFAULT
		}
	}
	return raw, 0
}

// trimNUL returns b up to its first NUL byte.
func trimNUL(b []byte) []byte {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		return b[:i]
	}
	return b
}

// inetString returns the address raw names, for an event.
func inetString(raw []byte) string {
	if len(raw) < 2 {
		return ""
	}
	family := int(uint16(raw[0]) | uint16(raw[1])<<8)
	if a, ok := parseInet(family, raw); ok {
		return a.String()
	}
	return "family " + strconv.Itoa(family)
}

// pinUnix finds the Unix socket path names, where the thread trapped in n would find
// it (from its root or working directory, following symbolic links but
// not /proc's magic links, which would name the Broker's own files), and
// returns an O_PATH descriptor of it; or the errno a connect to it fails
// with (ENOENT, ECONNREFUSED for a file that is not a socket, ...).
func (b *Broker) pinUnix(n unotify.Notif, path string) (int, unix.Errno) {
	tid := int(n.PID)
	from := "/proc/" + strconv.Itoa(tid) + "/cwd"
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_MAGICLINKS}
	if filepath.IsAbs(path) {
		from = "/proc/" + strconv.Itoa(tid) + "/root"
		how.Resolve |= unix.RESOLVE_IN_ROOT
	}
	start, err := unix.Open(from, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, unix.ECONNREFUSED
	}
	defer unix.Close(start)
	// The walk with the program's credentials (asProgram): its search
	// permission on the directories on the way, as for its own connect.
	pin := -1
	if errno := b.asProgram(n, false, func() unix.Errno {
		var err error
		pin, err = unix.Openat2(start, path, &how)
		return errnoOf(err)
	}); errno != 0 {
		return -1, errno
	}
	var st unix.Stat_t
	if err := unix.Fstat(pin, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		unix.Close(pin)
		return -1, unix.ECONNREFUSED
	}
	return pin, 0
}

// refused reports whether the socket pin is directly in one of
// Host.Refuse's directories.
func (b *Broker) refused(pin int) bool {
	if len(b.refuse) == 0 {
		return false
	}
	// The socket's directory, by the path the descriptor has now.
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(pin))
	var dir unix.Stat_t
	if err != nil || unix.Stat(filepath.Dir(p), &dir) != nil {
		return true // cannot tell: refused
	}
	for _, r := range b.refuse {
		if r.dev == dir.Dev && r.ino == dir.Ino {
			return true
		}
	}
	return false
}

// granted reports whether the socket pin is one of Host.Paths or beneath
// one: its directory and the directories above it, up to the root, are
// compared with the grants by device and inode, as Landlock compares
// them.
func (b *Broker) granted(pin int) bool {
	var st unix.Stat_t
	if unix.Fstat(pin, &st) != nil {
		return false
	}
	for _, g := range b.grants {
		if !g.dir && g.dev == st.Dev && g.ino == st.Ino {
			return true
		}
	}
	// Where the socket is: its path, then its directory, checked to
	// hold it still.
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlink("/proc/self/fd/"+strconv.Itoa(pin), buf)
	if err != nil || n == 0 || buf[0] != '/' {
		return false
	}
	where := string(buf[:n])
	if strings.HasSuffix(where, " (deleted)") {
		return false
	}
	dirPath, base := filepath.Split(where)
	dir, err := unix.Openat2(unix.AT_FDCWD, dirPath, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS})
	if err != nil {
		return false
	}
	var here unix.Stat_t
	if unix.Fstatat(dir, base, &here, unix.AT_SYMLINK_NOFOLLOW) != nil || here.Dev != st.Dev || here.Ino != st.Ino {
		unix.Close(dir)
		return false
	}
	for range 4096 {
		if unix.Fstat(dir, &st) != nil {
			break
		}
		for _, g := range b.grants {
			if g.dir && g.dev == st.Dev && g.ino == st.Ino {
				unix.Close(dir)
				return true
			}
		}
		up, err := unix.Openat(dir, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(dir)
		if err != nil {
			return false
		}
		dir = up
		var above unix.Stat_t
		if unix.Fstat(dir, &above) != nil || above.Dev == st.Dev && above.Ino == st.Ino {
			break // the root
		}
	}
	unix.Close(dir)
	return false
}

// connectCopy connects sock, the Broker's copy of the program's socket,
// to raw, or, with pin >= 0, to the Unix socket pin holds (through
// /proc/self/fd, so that what was found is what is connected to), and
// answers with the kernel's own result: at once for a non-blocking
// socket (EINPROGRESS, EAGAIN, ...), off the loop's thread for a
// blocking one. It takes sock and pin.
func (b *Broker) connectCopy(n unotify.Notif, sock int, raw []byte, pin int, grant bool, after func(unix.Errno)) verdict {
	do := func(fd int) unix.Errno {
		// A Unix socket's connect with the program's credentials, which
		// its peer reads (asProgram); grant: a unix: rule's socket.
		if pin >= 0 {
			return b.asProgram(n, grant, func() unix.Errno {
				return errnoOf(unix.Connect(fd, &unix.SockaddrUnix{Name: "/proc/self/fd/" + strconv.Itoa(pin)}))
			})
		}
		if len(raw) >= 2 && int(uint16(raw[0])|uint16(raw[1])<<8) == unix.AF_UNIX {
			return b.asProgram(n, false, func() unix.Errno { return connectRaw(fd, raw) })
		}
		return connectRaw(fd, raw)
	}
	done := func() {
		if pin >= 0 {
			unix.Close(pin)
		}
		unix.Close(sock)
	}
	fl, err := unix.FcntlInt(uintptr(sock), unix.F_GETFL, 0)
	if err != nil {
		done()
		return fail(errnoOf(err))
	}
	if after == nil {
		after = func(unix.Errno) {}
	}
	if fl&unix.O_NONBLOCK != 0 {
		defer done()
		errno := do(sock)
		after(errno)
		return fail(errno)
	}
	// A blocking connect, first without blocking (O_NONBLOCK set on the
	// shared file for the moment: the program's thread is in the call):
	// one that ends at once (on a loopback, a Unix socket with room in
	// its listener's backlog) is answered here, on the loop's thread;
	// one under way, or a Unix one that would wait for room, waits off
	// that thread, as long as the call is pending.
	errno := unix.EAGAIN
	if _, err := unix.FcntlInt(uintptr(sock), unix.F_SETFL, fl|unix.O_NONBLOCK); err == nil {
		errno = do(sock)
		if errno == unix.EINPROGRESS {
			if e, ended := connectDone(sock, 0); ended {
				errno = settle(sock, e, do)
			}
		}
		unix.FcntlInt(uintptr(sock), unix.F_SETFL, fl)
	}
	switch errno {
	case unix.EINPROGRESS:
		deadline := sendDeadline(sock)
		return verdict{fd: -1, wait: func() verdict {
			defer done()
			errno := b.await(n, sock, deadline)
			if errno == 0 {
				errno = settle(sock, 0, do)
			}
			after(errno)
			return fail(errno)
		}}
	case unix.EAGAIN:
		return verdict{fd: -1, wait: func() verdict {
			defer done()
			errno := b.connectWatched(n, sock, do)
			after(errno)
			return fail(errno)
		}}
	}
	defer done()
	after(errno)
	return fail(errno)
}

// settle returns the result of a connect of sock that ended with errno:
// connected, sock is connected again (do), which the kernel answers with
// 0 or EISCONN, so that its socket is marked connected, as after a
// blocking connect (a second connect then fails with EISCONN).
func settle(sock int, errno unix.Errno, do func(int) unix.Errno) unix.Errno {
	if errno != 0 {
		return errno
	}
	if e := do(sock); e != 0 && e != unix.EISCONN {
		return e
	}
	return 0
}

// sendDeadline returns when a blocking connect of sock gives up (its
// SO_SNDTIMEO, as the kernel's connect does: EINPROGRESS), or zero for
// none.
func sendDeadline(sock int) time.Time {
	tv, err := unix.GetsockoptTimeval(sock, unix.SOL_SOCKET, unix.SO_SNDTIMEO)
	if err != nil || tv.Sec == 0 && tv.Usec == 0 {
		return time.Time{}
	}
	return time.Now().Add(time.Duration(tv.Sec)*time.Second + time.Duration(tv.Usec)*time.Microsecond)
}

// takeSock returns c's copy of the socket, which c then no longer
// closes, and closes the rest of c.
func (c *caller) takeSock() int {
	sock := c.sock
	c.sock = -1
	c.close()
	return sock
}

// connectLocal makes a connect of the sandbox's own socket c (in its
// network namespace) that no rule concerns, to raw, on a copy of the
// socket, as the kernel would have made it: rather than let the call go
// on in the kernel (CONTINUE), which would act on whatever socket the
// program's fd number names by then (another thread may have put a
// socket the Broker installed, of the host's, there). A Unix socket named
// in the file system is found in the program's view (its root and working
// directory). It takes c's socket, and leaves the rest of c (which then
// closes its pidfd only) to its caller.
func (b *Broker) connectLocal(n unotify.Notif, c *caller, raw []byte) verdict {
	sock := c.sock
	c.sock = -1
	if c.domain == unix.AF_UNIX && len(raw) > 2 && int(uint16(raw[0])|uint16(raw[1])<<8) == unix.AF_UNIX && raw[2] != 0 {
		pin, errno := b.pinUnix(n, string(trimNUL(raw[2:])))
		if errno != 0 {
			unix.Close(sock)
			return fail(errno)
		}
		return b.connectCopy(n, sock, nil, pin, false, nil)
	}
	return b.connectCopy(n, sock, raw, -1, false, nil)
}

// The stand-ins of the program's datagram sockets (Policy.Host with
// Rules), and its DNS over TCP: a program that shares the host's network
// has no resolver of the sandbox's to ask, and an inet datagram socket of
// the host's could send anywhere (sendmsg's address is beyond a filter's
// reach). So socket(2) of a datagram socket gets one end of a Unix
// seqpacket pair whose other end the Broker's resolver answers: its
// connect to any port 53 succeeds (the resolver is there), and any other
// fails (ENETUNREACH); its datagrams carry DNS queries and answers as UDP
// ones would. A TCP connect to port 53 is given a Unix stream pair to the
// resolver in the same way. Resolvers that read the query's answer with
// the address it came from and check it (glibc, musl) cannot take that
// from a stand-in: the sandbox asks glibc for TCP (RES_OPTIONS=use-vc).

// maxStandIns bounds the stand-in sockets a program holds at once: more
// socket(2) calls fail (ENFILE), so that a program cannot make the Broker
// hold descriptors without end.
const maxStandIns = 1024

// hostSocket answers socket(2) of an inet datagram socket (HostRulesFilter)
// with a stand-in that reaches the Broker's resolver.
func (b *Broker) hostSocket(n unotify.Notif) verdict {
	typ := int(n.Data.Args[1])
	b.mu.Lock()
	full := len(b.standIns) >= maxStandIns
	b.mu.Unlock()
	if full {
		return fail(unix.ENFILE)
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail(errnoOf(err))
	}
	ours, theirs := pair[0], pair[1]
	defer unix.Close(theirs)
	if typ&unix.SOCK_NONBLOCK != 0 {
		unix.SetNonblock(theirs, true)
	}
	var st unix.Stat_t
	if err := unix.Fstat(theirs, &st); err != nil {
		unix.Close(ours)
		return fail(errnoOf(err))
	}
	conn, err := fileConn(ours)
	if err != nil {
		return fail(errnoOf(err))
	}
	b.mu.Lock()
	b.standIns[st.Ino] = conn
	b.mu.Unlock()
	forget := func() {
		b.mu.Lock()
		delete(b.standIns, st.Ino)
		b.mu.Unlock()
		conn.Close()
	}
	send := addFDSend()
	fd, err := unotify.AddFDNew(b.fd, n.ID, theirs, typ&unix.SOCK_CLOEXEC != 0, send)
	if err != nil {
		forget()
		if errors.Is(err, unix.ENOENT) {
			return gone
		}
		return fail(errnoOf(err))
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer forget()
		b.serveStandIn(conn)
	}()
	if send {
		return gone // answered by the kernel with the new fd
	}
	return verdict{fd: -1, val: int64(fd)}
}

// addFDSend reports whether the kernel has SECCOMP_ADDFD_FLAG_SEND (Linux
// 5.14): the installing of a descriptor that also answers the call.
func addFDSend() bool {
	return kernel.AtLeast(kernelRelease(), 5, 14)
}

// fileConn makes fd, a socket the Broker owns, a net.Conn on Go's poller
// (so that a program's many stand-ins hold no thread of the Broker's).
func fileConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "netgrant stand-in")
	defer f.Close()
	return net.FileConn(f)
}

// serveStandIn answers the DNS queries that come on a datagram stand-in,
// one per message, until the program closes its end (or the Broker
// stops).
func (b *Broker) serveStandIn(c net.Conn) {
	stop := context.AfterFunc(b.ctx, func() { c.Close() })
	defer stop()
	buf := make([]byte, 65536)
	for {
		n, err := c.Read(buf)
		if err != nil || n == 0 {
			return
		}
		select {
		case b.dnsSlots <- struct{}{}:
		case <-b.ctx.Done():
			return
		}
		r := b.answerQuery(buf[:n], 512)
		<-b.dnsSlots
		if r != nil {
			if _, err := c.Write(r); err != nil {
				return
			}
		}
	}
}

// standIn reports whether sock (the Broker's copy of a program's socket)
// is one of the stand-ins hostSocket made.
func (b *Broker) standIn(sock int) bool {
	var st unix.Stat_t
	if unix.Fstat(sock, &st) != nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.standIns[st.Ino]
	return ok
}

// standInConnect answers a connect of a datagram stand-in: to port 53
// (of any address), it is the resolver's already (0); AF_UNSPEC changes
// nothing (0); anywhere else fails (ENETUNREACH): only DNS goes out.
func (b *Broker) standInConnect(c *caller, raw []byte) verdict {
	if len(raw) < 2 {
		return fail(unix.EINVAL)
	}
	family := int(uint16(raw[0]) | uint16(raw[1])<<8)
	if family == unix.AF_UNSPEC {
		return fail(0)
	}
	dest, ok := parseInet(family, raw)
	if !ok {
		return fail(unix.EINVAL)
	}
	if dest.Port() == 53 {
		return fail(0)
	}
	b.event(decision{Event{PID: c.tid, Addr: dest.String(), Errno: ErrnoNoRoute}, false})
	return fail(ErrnoNoRoute)
}

// hostInet decides a connect of the program's TCP socket c (a socket of
// the host's) to raw by the rules, and makes it on the Broker's copy of
// the socket when they allow it; a connect to port 53 is given a stream
// to the Broker's resolver instead. It takes c.
func (b *Broker) hostInet(n unotify.Notif, c *caller, raw []byte) verdict {
	family := -1
	if len(raw) >= 2 {
		family = int(uint16(raw[0]) | uint16(raw[1])<<8)
	}
	dest, ok := parseInet(family, raw)
	if !ok || family != c.domain {
		// Malformed, another family, or AF_UNSPEC (which disconnects:
		// the next connect is trapped too): the kernel's own answer, on
		// the Broker's copy.
		return b.connectCopy(n, c.takeSock(), raw, -1, false, nil)
	}
	if _, err := unix.Getpeername(c.sock); err == nil {
		return b.connectCopy(n, c.takeSock(), raw, -1, false, nil) // EISCONN
	}
	if dest.Port() == 53 {
		return b.dnsStream(n, c)
	}
	finish := func(rule Rule, name string, allowed bool) verdict {
		if !allowed {
			c.close()
			b.event(decision{Event{PID: c.tid, Addr: dest.String(), Errno: ErrnoRefused}, false})
			return fail(ErrnoRefused)
		}
		ev := Event{PID: c.tid, Addr: dest.String(), Rule: rule.String(), Name: name}
		return b.connectCopy(n, c.takeSock(), raw, -1, false, func(errno unix.Errno) {
			ev.Errno = errnoUnlessInProgress(errno)
			b.event(decision{ev, true})
		})
	}
	rule, name, allowed := b.decide(dest)
	if !allowed && !isLocal(dest.Addr()) {
		if wait := b.lookAgain(dest); wait != nil {
			return verdict{fd: -1, wait: func() verdict {
				v := finish(wait())
				if v.wait != nil {
					return v.wait()
				}
				return v
			}}
		}
	}
	return finish(rule, name, allowed)
}

// dnsStream gives the program, in place of its TCP socket c, a Unix
// stream to the Broker's resolver (DNS over TCP). It takes c.
func (b *Broker) dnsStream(n unotify.Notif, c *caller) verdict {
	defer c.close()
	fl, err := unix.FcntlInt(uintptr(c.sock), unix.F_GETFL, 0)
	if err != nil {
		return fail(errnoOf(err))
	}
	// One of the resolver's TCP connections (maxDNSConns): beyond, the
	// connect is refused, and a resolver asks again or over UDP.
	select {
	case b.dnsConns <- struct{}{}:
	default:
		return fail(unix.ECONNREFUSED)
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		<-b.dnsConns
		return fail(errnoOf(err))
	}
	ours, theirs := pair[0], pair[1]
	if fl&unix.O_NONBLOCK != 0 {
		unix.SetNonblock(theirs, true)
	}
	conn, err := fileConn(ours)
	if err != nil {
		unix.Close(theirs)
		<-b.dnsConns
		return fail(errnoOf(err))
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer func() { <-b.dnsConns }()
		b.serveDNSConn(conn)
	}()
	return verdict{fd: theirs}
}

// hostBindOrListen answers bind and listen (Policy.Host with Rules): on
// a TCP socket, of the host's, both fail (EACCES), as Landlock's TCP rules
// refuse them; on a datagram stand-in, bind changes nothing (0) and
// listen fails (EOPNOTSUPP); on a Unix socket, bind goes on in the
// kernel, under the program's Landlock rules, which decide where a socket
// may be made, and listen is made on the Broker's copy.
func (b *Broker) hostBindOrListen(n unotify.Notif) verdict {
	c, v, ok := b.callerOf(n)
	if !ok {
		return v
	}
	defer c.close()
	if !unotify.IDValid(b.fd, n.ID) {
		return gone
	}
	listen := n.Data.Nr == unix.SYS_LISTEN
	switch {
	case c.domain == unix.AF_UNIX && b.standIn(c.sock):
		if listen {
			return fail(unix.EOPNOTSUPP)
		}
		return fail(0)
	case c.domain == unix.AF_UNIX && listen:
		// With the program's credentials, which its clients read.
		return fail(b.asProgram(n, false, func() unix.Errno { return errnoOf(unix.Listen(c.sock, int(int32(n.Data.Args[1])))) }))
	case c.domain == unix.AF_UNIX:
		return cont
	}
	op := "bind"
	if listen {
		op = "listen"
	}
	b.event(decision{Event{Op: op, PID: c.tid, Errno: ErrnoRefused}, false})
	return fail(ErrnoRefused)
}
