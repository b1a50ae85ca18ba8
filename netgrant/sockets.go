package netgrant

// The sockets the Broker makes: like the program's, with its options,
// connected as its connect would have been.

import (
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/caplin-dev/caplin/internal/unotify"
	"golang.org/x/sys/unix"
)

// cloexec reports whether fd is close-on-exec in thread tid, whose call
// is pending (so tid is that thread, not another that took its number).
func (b *Broker) cloexec(tid, fd int) bool {
	data, err := b.fdinfo(tid, fd)
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			return err != nil || flags&unix.O_CLOEXEC != 0
		}
	}
	return true
}

// fdinfo returns /proc/TID/fdinfo/FD, opened beneath a descriptor of
// /proc/TID/fdinfo kept for the last thread asked about (the next
// connect is mostly the same thread's): one openat instead of a lookup
// of the whole path. A kept descriptor of a thread that has gone fails
// (ESRCH, ENOENT), and is made again.
func (b *Broker) fdinfo(tid, fd int) ([]byte, error) {
	b.fdinfoMu.Lock()
	defer b.fdinfoMu.Unlock()
	name := strconv.Itoa(fd)
	for try := 0; try < 2; try++ {
		if b.fdinfoTID != tid || b.fdinfoDir < 0 || try > 0 {
			if b.fdinfoDir >= 0 {
				unix.Close(b.fdinfoDir)
			}
			b.fdinfoTID = tid
			d, err := unix.Open("/proc/"+strconv.Itoa(tid)+"/fdinfo", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				b.fdinfoDir = -1
				return nil, err
			}
			b.fdinfoDir = d
		}
		f, err := unix.Openat(b.fdinfoDir, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		var buf [256]byte
		n, err := unix.Read(f, buf[:])
		unix.Close(f)
		if err != nil {
			continue
		}
		return buf[:n], nil
	}
	return nil, unix.ESRCH
}

// dial makes a socket like the program's (c), with its options, and
// connects it to dest: at once for a non-blocking socket (EINPROGRESS);
// for a blocking one, it waits, or returns wait, which does, as long as
// the call is pending, and no longer than the program's send timeout
// (then the socket is installed still connecting and the call fails
// with EINPROGRESS, as the kernel's blocking connect does). It returns
// the socket, or -1 and the errno the program's connect fails with.
func (b *Broker) dial(n unotify.Notif, c *caller, dest netip.AddrPort) (int, unix.Errno, func() (int, unix.Errno)) {
	fl, err := unix.FcntlInt(uintptr(c.sock), unix.F_GETFL, 0)
	if err != nil {
		return -1, errnoOf(err), nil
	}
	nonblock := fl&unix.O_NONBLOCK != 0
	// TCP whatever the program's protocol (grant lets TCP through only):
	// a protocol such as SCTP could start associations with sendto,
	// which is not trapped.
	fd, err := unix.Socket(c.domain, c.typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, errnoOf(err), nil
	}
	deadline := b.copyOptions(c.sock, fd, c.domain, c.typ)
	sa := sockaddrOf(c.domain, dest)
	err = unix.Connect(fd, sa)
	switch {
	case err == nil:
	case err != unix.EINPROGRESS:
		unix.Close(fd)
		return -1, errnoOf(err), nil
	case nonblock:
		return fd, unix.EINPROGRESS, nil
	}
	// blocking makes fd what a blocking connect leaves: blocking, and,
	// connected, SS_CONNECTED (a second connect does that, not
	// SS_CONNECTING, so that the program's next connect fails with
	// EISCONN, as it would).
	blocking := func(connected bool) (int, unix.Errno) {
		if connected {
			if err := unix.Connect(fd, sa); err != nil && err != unix.EISCONN {
				unix.Close(fd)
				return -1, errnoOf(err)
			}
		}
		if err := unix.SetNonblock(fd, false); err != nil {
			unix.Close(fd)
			return -1, errnoOf(err)
		}
		return fd, 0
	}
	if nonblock {
		return fd, 0, nil // connected within the call
	}
	if err == nil {
		// Connected within the call (loopback, say): SS_CONNECTED already.
		fd, errno := blocking(false)
		return fd, errno, nil
	}
	if errno, done := connectDone(fd, 0); done {
		if errno != 0 {
			unix.Close(fd)
			return -1, errno, nil
		}
		fd, errno := blocking(true)
		return fd, errno, nil
	}
	return -1, 0, func() (int, unix.Errno) {
		switch errno := b.await(n, fd, deadline); errno {
		case 0:
			return blocking(true)
		case unix.EINPROGRESS:
			// The program's send timeout: installed still connecting.
			fd, e := blocking(false)
			if e != 0 {
				return fd, e
			}
			return fd, unix.EINPROGRESS
		default:
			unix.Close(fd)
			return -1, errno
		}
	}
}

// connectDone waits up to ms milliseconds for the connect of fd to end,
// and returns its result, and whether it ended.
func connectDone(fd, ms int) (unix.Errno, bool) {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	k, err := unix.Poll(pfd, ms)
	switch {
	case err != nil && err != unix.EINTR:
		return errnoOf(err), true
	case k <= 0:
		return 0, false
	}
	soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return errnoOf(err), true
	}
	return unix.Errno(soerr), true
}

// await waits for the connect of fd to end, while notification n is
// pending, until deadline if not zero: then it returns EINPROGRESS.
func (b *Broker) await(n unotify.Notif, fd int, deadline time.Time) unix.Errno {
	for {
		wait := 200 * time.Millisecond
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return unix.EINPROGRESS
			}
			wait = min(wait, left)
		}
		if errno, done := connectDone(fd, int(wait.Milliseconds())+1); done {
			return errno
		}
		if b.ctx.Err() != nil || !unotify.IDValid(b.fd, n.ID) {
			return unix.EINTR // nobody waits for the answer
		}
	}
}

// intOpt is a socket option whose value is an int.
type intOpt struct{ level, opt int }

// intOpts are the int options a replacing socket gets from the
// program's, where they differ from a new socket's.
// (Each costs a system call per connect, so the list holds what
// clients set: keepalive and its tuning, Nagle, buffer sizes, the user
// timeout, and, for IPv6, v6-only.)
var intOpts = [...]intOpt{
	{unix.SOL_SOCKET, unix.SO_KEEPALIVE},
	{unix.SOL_SOCKET, unix.SO_RCVBUF},
	{unix.SOL_SOCKET, unix.SO_SNDBUF},
	{unix.IPPROTO_TCP, unix.TCP_NODELAY},
	{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
	{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL},
	{unix.IPPROTO_TCP, unix.TCP_KEEPCNT},
	{unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT},
	{unix.IPPROTO_IPV6, unix.IPV6_V6ONLY}, // AF_INET6 only
}

// sockDefaults are a new socket's values of intOpts (-1 where it has
// none), for one domain and type.
type sockDefaults [len(intOpts)]int

// defaultsOf returns, made once, the values of intOpts that a new socket
// of domain and typ has.
func (b *Broker) defaultsOf(domain, typ int) *sockDefaults {
	key := [2]int{domain, typ}
	b.mu.Lock()
	defer b.mu.Unlock()
	if d, ok := b.defaults[key]; ok {
		return d
	}
	d := new(sockDefaults)
	fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, 0)
	for i, o := range intOpts {
		d[i] = -1
		if err == nil {
			if v, err := unix.GetsockoptInt(fd, o.level, o.opt); err == nil {
				d[i] = v
			}
		}
	}
	if err == nil {
		unix.Close(fd)
	}
	if b.defaults == nil {
		b.defaults = map[[2]int]*sockDefaults{}
	}
	b.defaults[key] = d
	return d
}

// copyOptions gives the socket to that replaces the program's from the
// options the program set on it: intOpts where they differ from a new
// socket's, SO_LINGER, SO_RCVTIMEO and SO_SNDTIMEO. It returns when the
// program's send timeout would end a blocking connect begun now (zero:
// never).
func (b *Broker) copyOptions(from, to, domain, typ int) (deadline time.Time) {
	def := b.defaultsOf(domain, typ)
	for i, o := range intOpts {
		if def[i] < 0 || o.level == unix.IPPROTO_IPV6 && domain != unix.AF_INET6 {
			continue
		}
		v, err := unix.GetsockoptInt(from, o.level, o.opt)
		if err != nil || v == def[i] {
			continue
		}
		if o.opt == unix.SO_RCVBUF || o.opt == unix.SO_SNDBUF {
			v /= 2 // the kernel doubles what is set, and reports that
		}
		unix.SetsockoptInt(to, o.level, o.opt, v)
	}
	if l, err := unix.GetsockoptLinger(from, unix.SOL_SOCKET, unix.SO_LINGER); err == nil && l.Onoff != 0 {
		unix.SetsockoptLinger(to, unix.SOL_SOCKET, unix.SO_LINGER, l)
	}
	for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
		tv, err := unix.GetsockoptTimeval(from, unix.SOL_SOCKET, opt)
		if err != nil || tv.Sec == 0 && tv.Usec == 0 {
			continue
		}
		unix.SetsockoptTimeval(to, unix.SOL_SOCKET, opt, tv)
		if opt == unix.SO_SNDTIMEO {
			deadline = time.Now().Add(time.Duration(tv.Sec)*time.Second + time.Duration(tv.Usec)*time.Microsecond)
		}
	}
	return deadline
}

// connectUnix decides a connect of the sandbox's Unix socket c: to a
// path a Unix rule names, the Broker connects a socket of its own, of
// the same type, to the host's socket there, and installs it; any other
// goes on in the sandbox. Only stream and seqpacket sockets are granted:
// a datagram socket of the host's could send to any of the host's
// sockets, abstract ones included (EACCES).
func (b *Broker) connectUnix(n unotify.Notif, c *caller, raw []byte) verdict {
	path := raw[2:]
	if i := indexNUL(path); i >= 0 {
		path = path[:i]
	}
	if len(path) == 0 || path[0] != '/' {
		return cont // abstract, unnamed or relative: the sandbox's own
	}
	var rule Rule
	for _, r := range b.policy.Rules {
		if r.Unix != "" && r.Unix == string(path) {
			rule = r
		}
	}
	if rule.Unix == "" {
		return cont
	}
	addr := "unix:" + rule.Unix
	if c.typ != unix.SOCK_STREAM && c.typ != unix.SOCK_SEQPACKET {
		b.event(decision{Event{PID: c.tid, Addr: addr, Errno: ErrnoRefused}, false})
		return fail(ErrnoRefused)
	}
	fl, err := unix.FcntlInt(uintptr(c.sock), unix.F_GETFL, 0)
	if err != nil {
		return fail(errnoOf(err))
	}
	fd, err := unix.Socket(unix.AF_UNIX, c.typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return fail(errnoOf(err))
	}
	// Bound now (autobind: a name of the kernel's choosing, in the
	// Broker's network's abstract namespace), so that a bind the program
	// races onto it once installed (its own socket's bind goes on in the
	// kernel, on whatever socket the number names by then) fails with
	// EINVAL rather than name it in the host's abstract namespace.
	if errno := bindRaw(fd, []byte{unix.AF_UNIX & 0xff, unix.AF_UNIX >> 8}); errno != 0 {
		unix.Close(fd)
		return fail(errno)
	}
	ev := Event{PID: c.tid, Addr: addr, Rule: rule.String()}
	pin, errno := b.pinRule(rule)
	if errno != 0 {
		unix.Close(fd)
		ev.Errno = errno
		b.event(decision{ev, true})
		return fail(errno)
	}
	sa := &unix.SockaddrUnix{Name: "/proc/self/fd/" + strconv.Itoa(pin)}
	finish := func(errno unix.Errno) verdict {
		unix.Close(pin)
		ev.Errno = errno
		b.event(decision{ev, true})
		if errno != 0 {
			unix.Close(fd)
			return fail(errno)
		}
		if fl&unix.O_NONBLOCK == 0 {
			if err := unix.SetNonblock(fd, false); err != nil {
				unix.Close(fd)
				return fail(errnoOf(err))
			}
		}
		return verdict{fd: fd}
	}
	// With the program's credentials, which the host's server reads.
	connect := func(fd int) unix.Errno {
		return b.asProgram(n, true, func() unix.Errno { return errnoOf(unix.Connect(fd, sa)) })
	}
	errno = connect(fd)
	if errno != unix.EAGAIN || fl&unix.O_NONBLOCK != 0 {
		return finish(errno) // a full backlog: EAGAIN, as for the program's own
	}
	// A blocking connect to a listener whose backlog is full waits for
	// room: not on the loop's thread, and no longer than the call is
	// pending.
	return verdict{fd: -1, wait: func() verdict {
		if err := unix.SetNonblock(fd, false); err != nil {
			return finish(errnoOf(err))
		}
		return finish(b.connectWatched(n, fd, connect))
	}}
}

// resolvedAtStart returns path with the symbolic links on the way to
// its directory resolved as they are when the Broker starts, as far as
// that directory exists (the rest is kept as written: a service may make
// it later). A unix: rule names the socket its user meant then; a link
// planted later (by the sandbox, in a directory it may write) is refused
// rather than followed (pinRule). So is a link at the socket's own name,
// unless root made it (an administrator's): one a sandbox of an earlier
// run planted, in a directory it could write, must not be trusted now.
func resolvedAtStart(path string) string {
	dir, rest := filepath.Dir(path), []string{filepath.Base(path)}
	for {
		if d, err := filepath.EvalSymlinks(dir); err == nil {
			dir = d
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return path
		}
		rest = append([]string{filepath.Base(dir)}, rest...)
		dir = parent
	}
	p := filepath.Join(append([]string{dir}, rest...)...)
	var st unix.Stat_t
	if len(rest) == 1 && unix.Lstat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK && st.Uid == 0 {
		if q, err := filepath.EvalSymlinks(p); err == nil {
			return q
		}
	}
	return p
}

// pinRule opens the socket a unix: rule names (O_PATH), at its path as
// resolved when the Broker started, following no symbolic link: the
// sandbox may have replaced the socket, or a directory on the way to it,
// by a link to a socket no rule names. A caller connects to it through
// /proc/self/fd. It fails with ENOENT where nothing is there, and
// ECONNREFUSED where a link or another file is, as a connect to a stale
// socket does.
func (b *Broker) pinRule(rule Rule) (int, unix.Errno) {
	path, ok := b.unixAt[rule.Unix]
	if !ok {
		path = rule.Unix
	}
	pin, err := unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS})
	if err != nil {
		if err == unix.ENOENT {
			return -1, unix.ENOENT
		}
		return -1, unix.ECONNREFUSED
	}
	var st unix.Stat_t
	if err := unix.Fstat(pin, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		unix.Close(pin)
		return -1, unix.ECONNREFUSED
	}
	return pin, 0
}

func indexNUL(p []byte) int {
	for i, c := range p {
		if c == 0 {
			return i
		}
	}
	return -1
}
