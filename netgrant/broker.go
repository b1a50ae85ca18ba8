package netgrant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Policy says what a Broker grants, and to whom it reports.
type Policy struct {
	// Rules are the grants. A connect that none allows is refused.
	Rules []Rule

	// Lookup finds the addresses of a host rule's name, at Serve and
	// again when a connect goes to an address no rule allows (at most
	// once a second). Nil: the host's resolver, /etc/hosts included
	// (net.DefaultResolver). Learn adds the answers of a resolver of the
	// caller's.
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)

	// Events, if not nil, is called with every connect the Broker allows
	// or refuses (not those it leaves to the sandbox's own network), from
	// the Broker's goroutines, one at a time.
	Events func(Event)

	// Logger gets what goes wrong in the Broker itself (a notification
	// it could not answer). Nil: nothing is logged.
	Logger *slog.Logger

	// MaxPending bounds the connects the Broker works on at once; more
	// wait, in the kernel, for one to finish. Zero: 64.
	MaxPending int
}

// An Event is one decision of a Broker. Its JSON form is a line of
// `caplin run --events`, in the format of served directories' events:
//
//	{"time":"...","kind":"allowed","pid":7,"op":"connect","addr":"192.0.2.1:443","name":"example.com","rule":"example.com:443"}
//	{"time":"...","kind":"refused","pid":7,"op":"connect","addr":"198.51.100.2:22","errno":"EACCES"}
type Event struct {
	Time time.Time `json:"time"`
	// Kind is "allowed" or "refused".
	Kind string `json:"kind"`
	// PID is the thread that called connect, as the Broker's caller
	// sees it (the process ID for a single-threaded program).
	PID int `json:"pid,omitempty"`
	// Op is "connect", or "dns" for a question to the sandbox's
	// resolver (ServeDNS).
	Op string `json:"op"`
	// Addr is a connect's destination: "192.0.2.1:443",
	// "[2001:db8::1]:443", "unix:/run/x.sock".
	Addr string `json:"addr,omitempty"`
	// Name is the host name through which a host rule allowed Addr; for
	// "dns", the name asked about.
	Name string `json:"name,omitempty"`
	// QType is the type of a DNS question ("A", "AAAA", "MX", ...),
	// Answers the addresses given, and RCode the answer's code when it
	// is not success ("Refused", "NameError", "ServerFailure").
	QType   string   `json:"qtype,omitempty"`
	Answers []string `json:"answers,omitempty"`
	RCode   string   `json:"rcode,omitempty"`
	// Rule is the rule that allowed the connect, in its text form.
	Rule string `json:"rule,omitempty"`
	// Errno is what the program's connect failed with: the refusal
	// (EACCES, ENETUNREACH), or, allowed, the host's own failure
	// (ECONNREFUSED, say). Zero when it succeeded or is in progress.
	Errno unix.Errno `json:"-"`
	// ErrnoName is Errno's name ("EACCES"), for the JSON form.
	ErrnoName string `json:"errno,omitempty"`
}

// Allowed reports whether e allowed the connect.
func (e Event) Allowed() bool { return e.Kind == "allowed" }

// The errnos of refusals.
const (
	// ErrnoRefused is what a stream connect that no rule allows fails
	// with (as Landlock's TCP rules refuse).
	ErrnoRefused = unix.EACCES
	// ErrnoNoRoute is what a datagram connect to an address outside the
	// sandbox fails with: only stream sockets are granted.
	ErrnoNoRoute = unix.ENETUNREACH
	// ErrnoBound is what a connect on a socket bound to a local address
	// or port fails with: the socket the Broker makes in its place could
	// not keep that binding.
	ErrnoBound = unix.EOPNOTSUPP
)

// A Broker answers the connect(2) calls that Filter hands to a seccomp
// listener: it decides each by its Policy and, where a rule allows it,
// makes a socket of the same kind in its own network namespace, connects
// it, and installs it in the program in place of the program's socket
// (SECCOMP_IOCTL_NOTIF_ADDFD), so that the program holds a real,
// connected socket.
//
// Connects it neither allows nor refuses go on in the kernel, in the
// program's own network namespace, where the Broker's caller must make
// sure they reach nothing outside (a network namespace with loopback
// only): those to a loopback address, Unix sockets but the ones Unix
// rules name, other address families, and calls that are not on sockets
// or are malformed, which fail as the kernel makes them fail.
type Broker struct {
	policy  Policy
	log     *slog.Logger
	file    *os.File // the listener, which the loop reads
	fd      int      // a duplicate of it that the handlers use
	size    int      // the kernel's struct seccomp_notif
	slots   chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	done    chan struct{}
	eventMu sync.Mutex

	mu      sync.Mutex
	stops   []func() // ServeDNS's sockets' closing
	names   map[netip.Addr]map[string]bool
	lookups time.Time // the last re-lookup
}

// Serve starts a Broker on listener, a seccomp listener of a filter that
// traps connect (Filter), and returns it. The Broker owns listener from
// then on, and serves it until Close, or until no process uses the
// filter any more (Done).
func Serve(ctx context.Context, listener *os.File, p Policy) (*Broker, error) {
	size, err := notifSizes()
	if err != nil {
		listener.Close()
		return nil, fmt.Errorf("netgrant: seccomp(SECCOMP_GET_NOTIF_SIZES): %w", err)
	}
	if size < 80 {
		size = 80
	}
	// Two descriptors of the listener: one that the loop waits on
	// through Go's poller, which wants it non-blocking (receiving does not
	// depend on that mode), and one that the handlers answer on, which
	// stays open until the last of them is done.
	raw := listener.Fd()
	loopFD, err := unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		listener.Close()
		return nil, fmt.Errorf("netgrant: duplicating the listener: %w", os.NewSyscallError("fcntl", err))
	}
	dup, err := unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 0)
	listener.Close()
	if err != nil {
		unix.Close(loopFD)
		return nil, fmt.Errorf("netgrant: duplicating the listener: %w", os.NewSyscallError("fcntl", err))
	}
	if err := unix.SetNonblock(loopFD, true); err != nil {
		unix.Close(loopFD)
		unix.Close(dup)
		return nil, fmt.Errorf("netgrant: %w", os.NewSyscallError("fcntl", err))
	}
	file := os.NewFile(uintptr(loopFD), "seccomp listener")
	if p.MaxPending <= 0 {
		p.MaxPending = 64
	}
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Broker{
		policy: p, log: log, file: file, fd: dup, size: size,
		slots: make(chan struct{}, p.MaxPending),
		done:  make(chan struct{}),
		names: map[netip.Addr]map[string]bool{},
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.lookupAll(ctx)
	b.wg.Add(1)
	go b.loop()
	go func() {
		b.wg.Wait()
		unix.Close(b.dup())
		close(b.done)
	}()
	return b, nil
}

func (b *Broker) dup() int { return b.fd }

// Done is closed when the Broker has stopped: after Close, or once no
// process uses the filter any more and every connect and DNS question
// under way is answered.
func (b *Broker) Done() <-chan struct{} { return b.done }

// Close stops the Broker and waits for it. Connects under way fail
// (ENOSYS, as the kernel fails those of a listener that is gone), and so
// do those made from then on, as long as a process uses the filter.
func (b *Broker) Close() error {
	b.cancel()
	b.file.Close()
	b.stopDNS()
	<-b.done
	return nil
}

// stopDNS closes ServeDNS's sockets.
func (b *Broker) stopDNS() {
	b.mu.Lock()
	stops := b.stops
	b.stops = nil
	b.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
}

// Learn records that name resolves to addrs, for host rules: a resolver
// of the caller's that answers the sandbox's queries tells the Broker
// what it answered, so that a rule for the name allows exactly those
// addresses.
func (b *Broker) Learn(name string, addrs []netip.Addr) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, a := range addrs {
		a = a.Unmap()
		m := b.names[a]
		if m == nil {
			m = map[string]bool{}
			b.names[a] = m
		}
		m[name] = true
	}
}

// lookupAll looks the names of the host rules without wildcards up, and
// learns their addresses.
func (b *Broker) lookupAll(ctx context.Context) {
	lookup := b.policy.Lookup
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	seen := map[string]bool{}
	for _, r := range b.policy.Rules {
		if r.Host == "" || r.Wildcard || seen[r.Host] {
			continue
		}
		seen[r.Host] = true
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		addrs, err := lookup(ctx, r.Host)
		cancel()
		if err != nil {
			b.log.Warn("netgrant: looking a rule's host up", "host", r.Host, "err", err)
			continue
		}
		b.Learn(r.Host, addrs)
	}
}

// decide returns the rule that allows a stream connect to a, and the
// name through which it does for a host rule.
func (b *Broker) decide(a netip.AddrPort) (Rule, string, bool) {
	addr, port := a.Addr().Unmap(), a.Port()
	for _, r := range b.policy.Rules {
		if r.Prefix.IsValid() && r.Ports.Contains(port) && r.Prefix.Contains(addr) {
			return r, "", true
		}
	}
	b.mu.Lock()
	names := make([]string, 0, len(b.names[addr]))
	for n := range b.names[addr] {
		names = append(names, n)
	}
	b.mu.Unlock()
	for _, r := range b.policy.Rules {
		if r.Host == "" || !r.Ports.Contains(port) {
			continue
		}
		for _, n := range names {
			if r.MatchesName(n) {
				return r, n, true
			}
		}
	}
	return Rule{}, "", false
}

// decideAgain is decide after the host rules' names are looked up again,
// at most once a second: their addresses may have changed.
func (b *Broker) decideAgain(a netip.AddrPort) (Rule, string, bool) {
	b.mu.Lock()
	stale := time.Since(b.lookups) > time.Second
	if stale {
		b.lookups = time.Now()
	}
	b.mu.Unlock()
	hosts := false
	for _, r := range b.policy.Rules {
		hosts = hosts || r.Host != "" && !r.Wildcard && r.Ports.Contains(a.Port())
	}
	if !stale || !hosts {
		return Rule{}, "", false
	}
	b.lookupAll(b.ctx)
	return b.decide(a)
}

// loop receives notifications and hands each to a handler.
func (b *Broker) loop() {
	defer b.wg.Done()
	rc, err := b.file.SyscallConn()
	if err != nil {
		b.log.Error("netgrant: the listener", "err", err)
		return
	}
	buf := make([]byte, b.size)
	for {
		select {
		case b.slots <- struct{}{}:
		case <-b.ctx.Done():
			return
		}
		var (
			n     notif
			rerr  error
			ended bool
		)
		err := rc.Read(func(fd uintptr) bool {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if _, err := unix.Poll(pfd, 0); err != nil {
				return false
			}
			switch {
			case pfd[0].Revents&unix.POLLIN != 0:
				n, rerr = recv(int(fd), buf)
				return true
			case pfd[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0:
				ended = true // no process uses the filter any more
				return true
			}
			return false
		})
		if err != nil || ended {
			<-b.slots
			// Nobody is left to ask the resolver either.
			b.stopDNS()
			return
		}
		if rerr != nil {
			<-b.slots
			if errors.Is(rerr, unix.ENOENT) || errors.Is(rerr, unix.EINTR) {
				continue // the call was interrupted before it was received
			}
			b.log.Error("netgrant: receiving a notification", "err", rerr)
			return
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer func() { <-b.slots }()
			b.handle(n)
		}()
	}
}

// verdict is how a notification is answered.
type verdict struct {
	cont  bool       // let the call go on in the kernel
	errno unix.Errno // fail it with this
	// fd, when not -1, is a socket (the handler's to close) to install
	// in the program in place of its own; the call then returns 0, or
	// fails with errno (EINPROGRESS).
	fd int
}

// handle decides one connect and answers it.
func (b *Broker) handle(n notif) {
	v := b.connect(n)
	if v.cont {
		send(b.fd, n.id, 0, 0, true)
		return
	}
	if v.fd >= 0 {
		defer unix.Close(v.fd)
		target := int(int32(n.data.args[0]))
		if err := addfd(b.fd, n.id, v.fd, target, b.cloexec(int(n.pid), target)); err != nil {
			// The call was interrupted, or its process is gone.
			return
		}
	}
	send(b.fd, n.id, 0, v.errno, false)
}

// cloexec reports whether fd is close-on-exec in process pid.
func (b *Broker) cloexec(pid, fd int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/fdinfo/" + strconv.Itoa(fd))
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

// event reports a decision.
func (b *Broker) event(d decision) {
	e := d.Event
	if b.policy.Events == nil {
		return
	}
	e.Time = time.Now()
	if e.Op == "" {
		e.Op = "connect"
	}
	e.Kind = "refused"
	if d.allowed {
		e.Kind = "allowed"
	}
	if e.Errno != 0 {
		e.ErrnoName = unix.ErrnoName(e.Errno)
	}
	b.eventMu.Lock()
	defer b.eventMu.Unlock()
	b.policy.Events(e)
}

// decision is an Event to report, and whether it allowed the connect.
type decision struct {
	Event
	allowed bool
}

// connect decides notification n, a connect(2), and does what it
// allows.
func (b *Broker) connect(n notif) verdict {
	cont := verdict{cont: true, fd: -1}
	pid := int(n.pid)
	sockfd := int(int32(n.data.args[0]))
	addrPtr, addrLen := n.data.args[1], int(uint32(n.data.args[2]))
	if addrPtr == 0 || addrLen < 2 || addrLen > unix.SizeofSockaddrAny {
		return cont // the kernel's own error: EFAULT, EINVAL
	}
	raw := make([]byte, addrLen)
	if err := readMem(pid, addrPtr, raw); err != nil {
		b.log.Debug("netgrant: reading a connect's address", "pid", pid, "err", err)
		return cont
	}
	// What was read is what is decided on: the kernel never acts on the
	// program's memory for a connect the Broker makes.
	if !idValid(b.fd, n.id) {
		return verdict{fd: -1} // gone: nothing to answer
	}
	family := int(uint16(raw[0]) | uint16(raw[1])<<8)
	switch family {
	case unix.AF_INET, unix.AF_INET6:
	case unix.AF_UNIX:
		return b.connectUnix(n, pid, sockfd, raw)
	default:
		return cont
	}
	dest, ok := parseInet(family, raw)
	if !ok {
		return cont // too short: EINVAL from the kernel
	}
	sock, err := b.socketOf(n, pid, sockfd)
	if err != nil {
		b.log.Debug("netgrant: the socket of a connect", "pid", pid, "fd", sockfd, "err", err)
		return cont // not a socket, no such fd: the kernel says which
	}
	defer unix.Close(sock)
	domain, _ := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_DOMAIN)
	typ, _ := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_TYPE)
	proto, _ := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if domain != family || family == unix.AF_INET6 && dest.Addr().Is4() {
		return cont // a mismatch the kernel refuses (EAFNOSUPPORT, EINVAL)
	}
	if _, err := unix.Getpeername(sock); err == nil && typ == unix.SOCK_STREAM {
		return cont // connected already: EISCONN
	}
	allowedRule, name, allowed := b.decide(dest)
	if !allowed && !dest.Addr().Unmap().IsLoopback() {
		allowedRule, name, allowed = b.decideAgain(dest)
	}
	addr := dest.String()
	if !allowed {
		if dest.Addr().Unmap().IsLoopback() {
			return cont // the sandbox's own loopback
		}
		errno := ErrnoRefused
		if typ != unix.SOCK_STREAM {
			errno = ErrnoNoRoute
		}
		b.event(decision{Event{PID: pid, Addr: addr, Errno: errno}, false})
		return verdict{errno: errno, fd: -1}
	}
	if typ != unix.SOCK_STREAM {
		// Only streams are granted; a datagram socket's connect stays in
		// the sandbox (which reaches its own loopback only).
		if dest.Addr().Unmap().IsLoopback() {
			return cont
		}
		b.event(decision{Event{PID: pid, Addr: addr, Errno: ErrnoNoRoute}, false})
		return verdict{errno: ErrnoNoRoute, fd: -1}
	}
	if bound(sock) {
		b.event(decision{Event{PID: pid, Addr: addr, Rule: allowedRule.String(), Name: name, Errno: ErrnoBound}, false})
		return verdict{errno: ErrnoBound, fd: -1}
	}
	fd, errno := b.dial(n, sock, domain, typ, proto, dest)
	b.event(decision{Event{PID: pid, Addr: addr, Rule: allowedRule.String(), Name: name, Errno: errnoUnlessInProgress(errno)}, true})
	return verdict{fd: fd, errno: errno}
}

func errnoUnlessInProgress(e unix.Errno) unix.Errno {
	if e == unix.EINPROGRESS {
		return 0
	}
	return e
}

// parseInet parses a struct sockaddr_in or sockaddr_in6.
func parseInet(family int, raw []byte) (netip.AddrPort, bool) {
	switch {
	case family == unix.AF_INET && len(raw) >= unix.SizeofSockaddrInet4:
		port := uint16(raw[2])<<8 | uint16(raw[3])
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(raw[4:8])), port), true
	case family == unix.AF_INET6 && len(raw) >= unix.SizeofSockaddrInet6:
		port := uint16(raw[2])<<8 | uint16(raw[3])
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(raw[8:24])), port), true
	}
	return netip.AddrPort{}, false
}

// socketOf returns a duplicate of fd sockfd of thread tid, the caller of
// notification n.
func (b *Broker) socketOf(n notif, tid, sockfd int) (int, error) {
	// The thread itself (PIDFD_THREAD, Linux 6.9), whose fd table is the
	// one the call uses; before 6.9, its process, whose table is the
	// same unless the thread unshared its own.
	pidfd, err := unix.PidfdOpen(tid, pidfdThread)
	if err == unix.EINVAL {
		var tgid int
		if tgid, err = tgidOf(tid); err == nil {
			pidfd, err = unix.PidfdOpen(tgid, 0)
		}
	}
	if err != nil {
		return -1, err
	}
	defer unix.Close(pidfd)
	// Still pending: pidfd is that thread's process, not another's that
	// took its number.
	if !idValid(b.fd, n.id) {
		return -1, unix.ESRCH
	}
	return unix.PidfdGetfd(pidfd, sockfd, 0)
}

// pidfdThread is PIDFD_THREAD: a pidfd of a thread (Linux 6.9).
const pidfdThread = unix.O_EXCL

// tgidOf returns the process (thread group) of thread tid.
func tgidOf(tid int) (int, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
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

// dial makes a socket like the program's sock, with its options, and
// connects it to dest: at once for a non-blocking socket (EINPROGRESS),
// else waiting, as long as the call is pending. It returns the socket,
// or -1 and the errno the program's connect fails with.
func (b *Broker) dial(n notif, sock, domain, typ, proto int, dest netip.AddrPort) (int, unix.Errno) {
	fl, err := unix.FcntlInt(uintptr(sock), unix.F_GETFL, 0)
	if err != nil {
		return -1, errnoOf(err)
	}
	nonblock := fl&unix.O_NONBLOCK != 0
	fd, err := unix.Socket(domain, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, errnoOf(err)
	}
	copyOptions(sock, fd, domain)
	var sa unix.Sockaddr
	if domain == unix.AF_INET {
		sa = &unix.SockaddrInet4{Port: int(dest.Port()), Addr: dest.Addr().As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(dest.Port()), Addr: dest.Addr().As16()}
	}
	err = unix.Connect(fd, sa)
	if nonblock {
		if err != nil && err != unix.EINPROGRESS {
			unix.Close(fd)
			return -1, errnoOf(err)
		}
		if err == unix.EINPROGRESS {
			return fd, unix.EINPROGRESS
		}
		return fd, 0
	}
	if err == unix.EINPROGRESS {
		if errno := b.await(n, fd, sock); errno != 0 {
			unix.Close(fd)
			return -1, errno
		}
		// Connected: a second connect makes the socket what a blocking
		// connect leaves (SS_CONNECTED, not SS_CONNECTING), so that the
		// program's next connect fails with EISCONN as it would.
		if err := unix.Connect(fd, sa); err != nil && err != unix.EISCONN {
			unix.Close(fd)
			return -1, errnoOf(err)
		}
	} else if err != nil {
		unix.Close(fd)
		return -1, errnoOf(err)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return -1, errnoOf(err)
	}
	return fd, 0
}

// await waits for the connect of fd to end, while notification n is
// pending, and within the program's send timeout on sock, if it set one
// (after which a blocking connect fails with EINPROGRESS, as the kernel's
// does).
func (b *Broker) await(n notif, fd, sock int) unix.Errno {
	var deadline time.Time
	if tv, err := unix.GetsockoptTimeval(sock, unix.SOL_SOCKET, unix.SO_SNDTIMEO); err == nil && (tv.Sec != 0 || tv.Usec != 0) {
		deadline = time.Now().Add(time.Duration(tv.Sec)*time.Second + time.Duration(tv.Usec)*time.Microsecond)
	}
	for {
		wait := 200 * time.Millisecond
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return unix.EINPROGRESS
			}
			wait = min(wait, left)
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		k, err := unix.Poll(pfd, int(wait.Milliseconds())+1)
		if err != nil && err != unix.EINTR {
			return errnoOf(err)
		}
		if k > 0 {
			soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
			if err != nil {
				return errnoOf(err)
			}
			return unix.Errno(soerr)
		}
		if b.ctx.Err() != nil || !idValid(b.fd, n.id) {
			return unix.EINTR // nobody waits for the answer
		}
	}
}

// copyOptions gives to the options the program set on its socket from
// to the socket to that replaces it.
func copyOptions(from, to, domain int) {
	for _, o := range []struct{ level, opt int }{
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE},
		{unix.SOL_SOCKET, unix.SO_REUSEADDR},
		{unix.SOL_SOCKET, unix.SO_OOBINLINE},
		{unix.SOL_SOCKET, unix.SO_PRIORITY},
		{unix.IPPROTO_TCP, unix.TCP_NODELAY},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT},
		{unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT},
		{unix.IPPROTO_TCP, unix.TCP_QUICKACK},
		{unix.IPPROTO_TCP, unix.TCP_MAXSEG},
		{unix.IPPROTO_TCP, unix.TCP_FASTOPEN_CONNECT},
	} {
		if v, err := unix.GetsockoptInt(from, o.level, o.opt); err == nil {
			unix.SetsockoptInt(to, o.level, o.opt, v)
		}
	}
	// The kernel doubles what is set and reports the doubled size: set
	// half of what the program's socket has, where the program set it.
	for _, o := range []struct{ opt, lock int }{{unix.SO_RCVBUF, unix.SOCK_RCVBUF_LOCK}, {unix.SO_SNDBUF, unix.SOCK_SNDBUF_LOCK}} {
		if !bufLocked(from, o.lock) {
			continue
		}
		if v, err := unix.GetsockoptInt(from, unix.SOL_SOCKET, o.opt); err == nil {
			unix.SetsockoptInt(to, unix.SOL_SOCKET, o.opt, v/2)
		}
	}
	if l, err := unix.GetsockoptLinger(from, unix.SOL_SOCKET, unix.SO_LINGER); err == nil && l.Onoff != 0 {
		unix.SetsockoptLinger(to, unix.SOL_SOCKET, unix.SO_LINGER, l)
	}
	for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
		if tv, err := unix.GetsockoptTimeval(from, unix.SOL_SOCKET, opt); err == nil {
			unix.SetsockoptTimeval(to, unix.SOL_SOCKET, opt, tv)
		}
	}
	if domain == unix.AF_INET {
		if v, err := unix.GetsockoptInt(from, unix.IPPROTO_IP, unix.IP_TOS); err == nil {
			unix.SetsockoptInt(to, unix.IPPROTO_IP, unix.IP_TOS, v)
		}
	} else {
		for _, opt := range []int{unix.IPV6_V6ONLY, unix.IPV6_TCLASS} {
			if v, err := unix.GetsockoptInt(from, unix.IPPROTO_IPV6, opt); err == nil {
				unix.SetsockoptInt(to, unix.IPPROTO_IPV6, opt, v)
			}
		}
	}
}

// bufLocked reports whether the program set a buffer size on sock: the
// kernel then stops tuning it (SOCK_RCVBUF_LOCK, SOCK_SNDBUF_LOCK in
// sk_userlocks), which SO_RCVBUF alone does not show. The locks are not
// readable, so a size that differs from a new socket's default counts.
func bufLocked(sock, lock int) bool {
	opt := unix.SO_RCVBUF
	if lock == unix.SOCK_SNDBUF_LOCK {
		opt = unix.SO_SNDBUF
	}
	v, err := unix.GetsockoptInt(sock, unix.SOL_SOCKET, opt)
	if err != nil {
		return false
	}
	return v != defaultBuf(sock, opt)
}

// defaultBuf returns the size option opt has on a new socket of sock's
// kind.
func defaultBuf(sock, opt int) int {
	domain, _ := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_DOMAIN)
	typ, _ := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_TYPE)
	fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	defer unix.Close(fd)
	v, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
	return v
}

// connectUnix decides a connect to a Unix socket: one a Unix rule names
// is made by the Broker, outside; any other goes on in the sandbox.
func (b *Broker) connectUnix(n notif, pid, sockfd int, raw []byte) verdict {
	cont := verdict{cont: true, fd: -1}
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
	sock, err := b.socketOf(n, pid, sockfd)
	if err != nil {
		return cont
	}
	defer unix.Close(sock)
	domain, _ := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_DOMAIN)
	typ, _ := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_TYPE)
	if domain != unix.AF_UNIX {
		return cont
	}
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return verdict{errno: errnoOf(err), fd: -1}
	}
	addr := "unix:" + rule.Unix
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: rule.Unix}); err != nil {
		unix.Close(fd)
		b.event(decision{Event{PID: pid, Addr: addr, Rule: rule.String(), Errno: errnoOf(err)}, true})
		return verdict{errno: errnoOf(err), fd: -1}
	}
	if fl, err := unix.FcntlInt(uintptr(sock), unix.F_GETFL, 0); err == nil && fl&unix.O_NONBLOCK != 0 {
		unix.SetNonblock(fd, true)
	}
	b.event(decision{Event{PID: pid, Addr: addr, Rule: rule.String()}, true})
	return verdict{fd: fd}
}

func indexNUL(p []byte) int {
	for i, c := range p {
		if c == 0 {
			return i
		}
	}
	return -1
}

// errnoOf returns the errno in err, or EIO.
func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return unix.EIO
}
