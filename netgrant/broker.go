package netgrant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/internal/unotify"
	"golang.org/x/sys/unix"
)

// Policy says what a Broker grants, and to whom it reports.
type Policy struct {
	// Rules are the grants. A connect that none allows is refused.
	Rules []Rule

	// Lookup finds the addresses of a host rule's name: when Serve
	// starts (in the background; a connect that no rule allows until
	// they are done waits for them, off the loop that answers the
	// others), and again when a connect goes to an address no rule
	// allows (at most once a second). Nil: the host's resolver, /etc/hosts included
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
	fd      int // the listener
	stop    int // an eventfd: Close's word to the loop
	size    int // the kernel's struct seccomp_notif
	slots   chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	done    chan struct{}
	eventMu sync.Mutex

	fdinfoMu  sync.Mutex
	fdinfoTID int // whose /proc/TID/fdinfo fdinfoDir is
	fdinfoDir int // -1 if none

	initial  chan struct{} // closed once the first lookups are done
	mu       sync.Mutex
	defaults map[[2]int]*sockDefaults // defaultsOf's
	stops    []func()                 // ServeDNS's sockets' closing
	names    map[netip.Addr]map[string]bool
	lookups  time.Time // the last re-lookup
}

// Serve starts a Broker on listener, a seccomp listener of a filter that
// traps connect (Filter), and returns it. The Broker owns listener from
// then on, and serves it until Close, or until no process uses the
// filter any more (Done).
func Serve(ctx context.Context, listener *os.File, p Policy) (*Broker, error) {
	size, err := unotify.Sizes()
	if err != nil {
		listener.Close()
		return nil, fmt.Errorf("netgrant: seccomp(SECCOMP_GET_NOTIF_SIZES): %w", err)
	}
	if size < 80 {
		size = 80
	}
	// The Broker's own descriptor of the listener (the caller's is
	// closed), and an eventfd that Close wakes the loop with.
	fd, err := unix.FcntlInt(listener.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	listener.Close()
	if err != nil {
		return nil, fmt.Errorf("netgrant: duplicating the listener: %w", os.NewSyscallError("fcntl", err))
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netgrant: %w", os.NewSyscallError("eventfd", err))
	}
	// Woken on the trapped thread's CPU, the loop's thread takes the CPU
	// over from it at once (Linux 6.6); older kernels wake it anywhere.
	unotify.SetSyncWakeUp(fd)
	if p.MaxPending <= 0 {
		p.MaxPending = 64
	}
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Broker{
		policy: p, log: log, fd: fd, stop: stop, size: size,
		slots: make(chan struct{}, p.MaxPending), fdinfoDir: -1,
		done:  make(chan struct{}),
		names: map[netip.Addr]map[string]bool{},
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	// The host rules' names are looked up meanwhile: a connect that no
	// rule allows until then waits for them (off the loop).
	b.initial = make(chan struct{})
	go func() {
		defer close(b.initial)
		b.lookupAll(b.ctx)
	}()
	b.wg.Add(1)
	go b.loop()
	go func() {
		b.wg.Wait()
		unix.Close(b.fd)
		unix.Close(b.stop)
		b.fdinfoMu.Lock()
		if b.fdinfoDir >= 0 {
			unix.Close(b.fdinfoDir)
			b.fdinfoDir = -1
		}
		b.fdinfoMu.Unlock()
		close(b.done)
	}()
	return b, nil
}

// Done is closed when the Broker has stopped: after Close, or once no
// process uses the filter any more and every connect and DNS question
// under way is answered.
func (b *Broker) Done() <-chan struct{} { return b.done }

// Close stops the Broker and waits for it. Connects under way fail
// (ENOSYS, as the kernel fails those of a listener that is gone), and so
// do those made from then on, as long as a process uses the filter.
func (b *Broker) Close() error {
	b.cancel()
	unix.Write(b.stop, []byte{1, 0, 0, 0, 0, 0, 0, 0})
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

// lookAgain reports whether a connect to a, which no rule allows now,
// should wait for the host rules' names to be looked up: the first
// lookups are not done yet, or the last were more than a second ago
// (their addresses may have changed). Only where some host rule without
// a wildcard covers a's port.
func (b *Broker) lookAgain(a netip.AddrPort) bool {
	hosts := false
	for _, r := range b.policy.Rules {
		hosts = hosts || r.Host != "" && !r.Wildcard && r.Ports.Contains(a.Port())
	}
	if !hosts {
		return false
	}
	select {
	case <-b.initial:
	default:
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if time.Since(b.lookups) <= time.Second {
		return false
	}
	b.lookups = time.Now()
	return true
}

// decideAgain is decide once the first lookups are done and the names
// looked up again.
func (b *Broker) decideAgain(a netip.AddrPort) (Rule, string, bool) {
	select {
	case <-b.initial:
		b.lookupAll(b.ctx)
	case <-b.ctx.Done():
	}
	return b.decide(a)
}

// loop receives notifications and answers them, on a thread of its own
// asleep in poll(2) on the listener, which the kernel wakes straight
// from the trap.
func (b *Broker) loop() {
	defer b.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, b.size)
	for {
		select {
		case b.slots <- struct{}{}:
		case <-b.ctx.Done():
			return
		}
		n, err, ended := b.wait(buf)
		switch {
		case ended:
			<-b.slots
			// Nobody is left to ask the resolver either.
			b.stopDNS()
			return
		case err != nil:
			<-b.slots
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINTR) {
				continue // the call was interrupted before it was received
			}
			if b.ctx.Err() == nil {
				b.log.Error("netgrant: receiving a notification", "err", err)
			}
			return
		}
		// Answered here, unless it must wait (a blocking connect not yet
		// made), when a goroutine of its own takes it, and the slot, over.
		if !b.handle(n, true) {
			<-b.slots
		}
	}
}

// wait waits for a notification, and receives it; ended, no process
// uses the filter any more, or Close was called.
func (b *Broker) wait(buf []byte) (n unotify.Notif, err error, ended bool) {
	for {
		pfd := []unix.PollFd{{Fd: int32(b.fd), Events: unix.POLLIN}, {Fd: int32(b.stop), Events: unix.POLLIN}}
		_, err := unix.Poll(pfd, -1)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return n, err, false
		case pfd[1].Revents != 0 || b.ctx.Err() != nil:
			return n, nil, true
		case pfd[0].Revents&unix.POLLIN != 0:
			n, err = unotify.Recv(b.fd, buf)
			return n, err, false
		case pfd[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0:
			return n, nil, true
		}
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
	// wait, when not nil, finishes a connect that waits for the network
	// and returns the verdict then; the rest is not set.
	wait func() verdict
}

// handle decides one connect and answers it. With mayDefer, a connect
// that must wait for the network is finished on a goroutine of its own,
// which frees the loop's slot when done; handle then reports true.
func (b *Broker) handle(n unotify.Notif, mayDefer bool) (deferred bool) {
	v := b.connect(n)
	if v.wait != nil {
		if !mayDefer {
			v = v.wait()
		} else {
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer func() { <-b.slots }()
				b.answerVerdict(n, v.wait())
			}()
			return true
		}
	}
	b.answerVerdict(n, v)
	return false
}

// answerVerdict answers notification n as v says.
func (b *Broker) answerVerdict(n unotify.Notif, v verdict) {
	if v.cont {
		unotify.Send(b.fd, n.ID, 0, 0, true)
		return
	}
	if v.fd >= 0 {
		defer unix.Close(v.fd)
		target := int(int32(n.Data.Args[0]))
		if err := unotify.AddFD(b.fd, n.ID, v.fd, target, b.cloexec(int(n.PID), target)); err != nil {
			// The call was interrupted, or its process is gone.
			return
		}
	}
	unotify.Send(b.fd, n.ID, 0, v.errno, false)
}

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
func (b *Broker) connect(n unotify.Notif) verdict {
	cont := verdict{cont: true, fd: -1}
	pid := int(n.PID)
	sockfd := int(int32(n.Data.Args[0]))
	addrPtr, addrLen := n.Data.Args[1], int(uint32(n.Data.Args[2]))
	if addrPtr == 0 || addrLen < 2 || addrLen > unix.SizeofSockaddrAny {
		return cont // the kernel's own error: EFAULT, EINVAL
	}
	pidfd, err := pidfdOf(pid)
	if err != nil {
		b.log.Debug("netgrant: a pidfd of the caller of connect", "pid", pid, "err", err)
		return cont
	}
	defer unix.Close(pidfd)
	raw := make([]byte, addrLen)
	if err := unotify.ReadMem(pid, addrPtr, raw); err != nil {
		b.log.Debug("netgrant: reading a connect's address", "pid", pid, "err", err)
		return cont
	}
	// Still pending: the thread was in the call all along, so pidfd and
	// the memory read are its, not another's that took its number since.
	// What was read is what is decided on: the kernel never acts on the
	// program's memory for a connect the Broker makes.
	if !unotify.IDValid(b.fd, n.ID) {
		return verdict{fd: -1} // gone: nothing to answer
	}
	family := int(uint16(raw[0]) | uint16(raw[1])<<8)
	switch family {
	case unix.AF_INET, unix.AF_INET6:
	case unix.AF_UNIX:
		return b.connectUnix(pidfd, pid, sockfd, raw)
	default:
		return cont
	}
	dest, ok := parseInet(family, raw)
	if !ok {
		return cont // too short: EINVAL from the kernel
	}
	sock, err := unix.PidfdGetfd(pidfd, sockfd, 0)
	if err != nil {
		b.log.Debug("netgrant: the socket of a connect", "pid", pid, "fd", sockfd, "err", err)
		return cont // no such fd: the kernel says so
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
	rule, name, allowed := b.decide(dest)
	if !allowed && !dest.Addr().Unmap().IsLoopback() && b.lookAgain(dest) {
		// Looking names up may take seconds: not on the loop's thread,
		// which answers the sandbox's other connects meanwhile.
		dup, err := unix.FcntlInt(uintptr(sock), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return verdict{errno: errnoOf(err), fd: -1}
		}
		return verdict{fd: -1, wait: func() verdict {
			defer unix.Close(dup)
			rule, name, allowed := b.decideAgain(dest)
			v := b.grant(n, pid, dup, domain, typ, proto, dest, rule, name, allowed)
			if v.wait != nil {
				return v.wait()
			}
			return v
		}}
	}
	return b.grant(n, pid, sock, domain, typ, proto, dest, rule, name, allowed)
}

// grant does what the decision on a connect of sock (the program's, a
// copy) to dest says: refuse it, leave it to the sandbox, or make it.
func (b *Broker) grant(n unotify.Notif, pid, sock, domain, typ, proto int, dest netip.AddrPort, rule Rule, name string, allowed bool) verdict {
	cont := verdict{cont: true, fd: -1}
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
		b.event(decision{Event{PID: pid, Addr: addr, Rule: rule.String(), Name: name, Errno: ErrnoBound}, false})
		return verdict{errno: ErrnoBound, fd: -1}
	}
	ev := Event{PID: pid, Addr: addr, Rule: rule.String(), Name: name}
	fd, errno, wait := b.dial(n, sock, domain, typ, proto, dest)
	if wait != nil {
		return verdict{fd: -1, wait: func() verdict {
			fd, errno := wait()
			ev.Errno = errno
			b.event(decision{ev, true})
			return verdict{fd: fd, errno: errno}
		}}
	}
	ev.Errno = errnoUnlessInProgress(errno)
	b.event(decision{ev, true})
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

// dial makes a socket like the program's sock, with its options, and
// connects it to dest: at once for a non-blocking socket (EINPROGRESS);
// for a blocking one, it waits, as long as the call is pending, or
// returns wait, which does. It returns the socket, or -1 and the errno
// the program's connect fails with.
func (b *Broker) dial(n unotify.Notif, sock, domain, typ, proto int, dest netip.AddrPort) (int, unix.Errno, func() (int, unix.Errno)) {
	fl, err := unix.FcntlInt(uintptr(sock), unix.F_GETFL, 0)
	if err != nil {
		return -1, errnoOf(err), nil
	}
	nonblock := fl&unix.O_NONBLOCK != 0
	fd, err := unix.Socket(domain, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, errnoOf(err), nil
	}
	deadline := b.copyOptions(sock, fd, domain, typ)
	var sa unix.Sockaddr
	if domain == unix.AF_INET {
		sa = &unix.SockaddrInet4{Port: int(dest.Port()), Addr: dest.Addr().As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(dest.Port()), Addr: dest.Addr().As16()}
	}
	err = unix.Connect(fd, sa)
	switch {
	case err == nil:
	case err != unix.EINPROGRESS:
		unix.Close(fd)
		return -1, errnoOf(err), nil
	case nonblock:
		return fd, unix.EINPROGRESS, nil
	}
	// finish makes the socket what a blocking connect leaves: connected,
	// SS_CONNECTED (a second connect does that: not SS_CONNECTING, so
	// that the program's next connect fails with EISCONN, as it would),
	// and blocking.
	finish := func() (int, unix.Errno) {
		if err := unix.Connect(fd, sa); err != nil && err != unix.EISCONN {
			unix.Close(fd)
			return -1, errnoOf(err)
		}
		if err := unix.SetNonblock(fd, false); err != nil {
			unix.Close(fd)
			return -1, errnoOf(err)
		}
		return fd, 0
	}
	if nonblock {
		return fd, 0, nil
	}
	if err == nil {
		// Connected within the call (loopback, say): SS_CONNECTED already.
		if err := unix.SetNonblock(fd, false); err != nil {
			unix.Close(fd)
			return -1, errnoOf(err), nil
		}
		return fd, 0, nil
	}
	// On loopback, say, it may be done already.
	if errno, done := connectDone(fd, 0); done {
		if errno != 0 {
			unix.Close(fd)
			return -1, errno, nil
		}
		fd, errno := finish()
		return fd, errno, nil
	}
	return -1, 0, func() (int, unix.Errno) {
		if errno := b.await(n, fd, deadline); errno != 0 {
			unix.Close(fd)
			return -1, errno
		}
		return finish()
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
// pending, until deadline if not zero (the program's send timeout, after
// which a blocking connect fails with EINPROGRESS, as the kernel's does).
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

// connectUnix decides a connect to a Unix socket: one a Unix rule names
// is made by the Broker, outside; any other goes on in the sandbox.
func (b *Broker) connectUnix(pidfd, pid, sockfd int, raw []byte) verdict {
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
	sock, err := unix.PidfdGetfd(pidfd, sockfd, 0)
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
