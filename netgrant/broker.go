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
	"strings"
	"sync"
	"time"

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
	// allows (at most once a second). Nil: the host's resolver,
	// /etc/hosts included (net.DefaultResolver). Learn adds the answers of a resolver of the
	// caller's.
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)

	// Events, if not nil, is called with every connect the Broker allows
	// or refuses (not those it leaves to the sandbox's own network), every
	// bind or listen it refuses, and every question to the sandbox's
	// resolver (ServeDNS), from the Broker's goroutines, one at a time.
	Events func(Event)

	// NetNS is the inode number of the sandbox's network namespace, where
	// the program's own sockets are: calls on them that no rule concerns
	// are made there as the program asked. Zero: any network namespace but the
	// Broker's own is taken to be the sandbox's.
	NetNS uint64

	// Host, when not nil, says that the program shares the Broker's
	// network and file system (it has no namespaces: a sandbox confined
	// by Landlock alone), and how to decide its connects, all of which
	// the Broker then makes itself (HostFilter traps them). Rules are not
	// used then.
	Host *Host

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

// A Broker answers the connect(2), bind(2) and listen(2) calls that
// Filter hands to a seccomp listener. A connect of the sandbox's own
// socket that a rule allows, it makes itself: a socket of the same kind
// in its own network namespace, with the program's options, connected,
// and installed in the program in place of the program's socket
// (SECCOMP_IOCTL_NOTIF_ADDFD), so that the program holds a real,
// connected socket. One no rule allows, it refuses.
//
// Calls on the sandbox's own sockets that no rule concerns the Broker
// makes as the program asked, on its copy of the socket, in the program's
// own network namespace, where the Broker's caller must make sure they
// reach nothing outside (a network namespace with loopback only;
// Policy.NetNS names it): connects to a loopback or the unspecified
// address, to Unix sockets but the ones Unix rules name (found where the
// program sees them), in other address families, malformed ones (which
// fail as the kernel makes them fail), and every bind and listen; only a
// Unix socket's bind goes on in the kernel. Calls on a socket the Broker
// installed, which is of its own network namespace, it answers itself, from the address it read (a connected one
// fails with EISCONN, AF_UNSPEC with EOPNOTSUPP, one in progress or
// failed is connected again on the Broker's copy if a rule allows the
// address), and refuses bind and listen there (EACCES).
type Broker struct {
	policy  Policy
	log     *slog.Logger
	fd      int    // the listener
	stop    int    // an eventfd: Close's word to the loop
	ownNS   uint64 // the inode number of the Broker's network namespace
	closing sync.Once
	size    int // the kernel's struct seccomp_notif
	slots   chan struct{}
	// dnsSlots bounds the resolver's lookups under way, apart from the
	// connects' slots, so that slow lookups do not hold connects up;
	// dnsConns bounds its TCP connections.
	dnsSlots, dnsConns chan struct{}
	ctx                context.Context
	cancel             context.CancelFunc
	wg                 sync.WaitGroup
	done               chan struct{}
	eventMu            sync.Mutex

	fdinfoMu  sync.Mutex
	fdinfoTID int // whose /proc/TID/fdinfo fdinfoDir is
	fdinfoDir int // -1 if none

	grants   []grant             // Policy.Host's paths
	refuse   []grant             // Policy.Host's refused directories
	unixAt   map[string]string   // each unix: rule's path, its links resolved at Serve (unixPath)
	standIns map[uint64]net.Conn // hostSocket's, by the program's end's inode

	initial  chan struct{} // closed once the first lookups are done
	mu       sync.Mutex
	defaults map[[2]int]*sockDefaults // defaultsOf's
	stops    []func()                 // ServeDNS's sockets' closing
	names    map[netip.Addr]map[string]bool
	lookups  time.Time // the last re-lookup

	dnsMu  sync.Mutex
	shared map[string]*nameLookup // lookupShared's
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
		dnsSlots: make(chan struct{}, maxDNSPending), dnsConns: make(chan struct{}, maxDNSConns),
		done:     make(chan struct{}),
		names:    map[netip.Addr]map[string]bool{},
		standIns: map[uint64]net.Conn{},
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if p.Host != nil {
		b.grants = openGrants(p.Host.Paths)
		for _, d := range p.Host.Refuse {
			var st unix.Stat_t
			if unix.Stat(d, &st) == nil {
				b.refuse = append(b.refuse, grant{dev: st.Dev, ino: st.Ino, dir: true})
			}
		}
	}
	b.unixAt = map[string]string{}
	for _, r := range p.Rules {
		if r.Unix != "" {
			b.unixAt[r.Unix] = resolvedAtStart(r.Unix)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err == nil {
		b.ownNS = st.Ino
	}
	// The host rules' names are looked up meanwhile: a connect that no
	// rule allows until then waits for them (off the loop).
	b.initial = make(chan struct{})
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer close(b.initial)
		b.lookupAll(b.ctx)
	}()
	b.wg.Add(1)
	go b.loop()
	go func() {
		b.wg.Wait()
		unix.Close(b.fd)
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

// Close stops the Broker and waits for it, and frees what it holds; it
// must be called, also once Done is closed. Calls it received and was
// still working on fail (EINTR); those it had not received, and those
// made from then on, as long as a process uses the filter, fail as the
// kernel fails the calls of a listener that is gone (ENOSYS).
func (b *Broker) Close() error {
	b.closing.Do(func() {
		b.cancel()
		b.stopDNS()
		unix.Write(b.stop, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		<-b.done
		unix.Close(b.stop)
	})
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
			if len(b.names) >= maxLearnedAddrs {
				continue
			}
			m = map[string]bool{}
			b.names[a] = m
		}
		if len(m) < maxNamesPerAddr {
			m[name] = true
		}
	}
}

// maxLearnedAddrs and maxNamesPerAddr bound what Learn remembers, so that
// a program asking the resolver for ever new names under a wildcard rule
// cannot grow the Broker without end; beyond them, an address is allowed
// by the names it has, or not at all.
const (
	maxLearnedAddrs = 1 << 14
	maxNamesPerAddr = 64
)

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
// name through which it does for a host rule. A local address (loopback,
// unspecified) is allowed only by a rule that names a local address or
// network itself, or by a host rule without a wildcard, through the name
// it names: not by a wider network (0.0.0.0/0) nor by a name under a
// wildcard, whose answers the names' owners choose (a name that spells
// 127.0.0.1 would otherwise reach the host's own services).
func (b *Broker) decide(a netip.AddrPort) (Rule, string, bool) {
	addr, port := a.Addr().Unmap(), a.Port()
	local := isLocal(addr)
	for _, r := range b.policy.Rules {
		if r.Prefix.IsValid() && r.Ports.Contains(port) && r.Prefix.Contains(addr) && (!local || localPrefix(r.Prefix)) {
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
		if r.Host == "" || !r.Ports.Contains(port) || local && r.Wildcard {
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

// localPrefix reports whether p names local addresses only: within
// 127.0.0.0/8 or ::1, or the unspecified address itself.
func localPrefix(p netip.Prefix) bool {
	a := p.Addr().Unmap()
	switch {
	case a.IsUnspecified():
		return p.IsSingleIP()
	case a.Is4():
		return a.IsLoopback() && p.Bits() >= 8
	}
	return a.IsLoopback() && p.IsSingleIP()
}

// lookAgain returns, for a connect to a that no rule allows now, a
// function that decides it again once the host rules' names are looked
// up (while the first lookups are under way, once they are done; after,
// looked up again, at most once a second, since their addresses may have
// changed); or nil, to decide now. Only where some host rule without a
// wildcard covers a's port.
func (b *Broker) lookAgain(a netip.AddrPort) func() (Rule, string, bool) {
	hosts := false
	for _, r := range b.policy.Rules {
		hosts = hosts || r.Host != "" && !r.Wildcard && r.Ports.Contains(a.Port())
	}
	if !hosts {
		return nil
	}
	select {
	case <-b.initial:
	default:
		return func() (Rule, string, bool) {
			select {
			case <-b.initial:
			case <-b.ctx.Done():
			}
			return b.decide(a)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if time.Since(b.lookups) <= time.Second {
		return nil
	}
	b.lookups = time.Now()
	return func() (Rule, string, bool) {
		b.lookupAll(b.ctx)
		return b.decide(a)
	}
}

// loop receives notifications and answers them, on a thread of its own
// asleep in poll(2) on the listener, which the kernel wakes straight
// from the trap.
func (b *Broker) loop() {
	defer b.wg.Done()
	// However the loop ends, the resolver's sockets close, so that their
	// goroutines end and Done can close: a Close that came between two
	// notifications ends the loop at its select, before wait sees it.
	defer b.stopDNS()
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
			// Nobody is left to ask the resolver, nor to wait for names.
			b.cancel()
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
