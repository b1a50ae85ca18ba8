package netgrant_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/netgrant"
	"github.com/caplin-dev/caplin/sandbox"
	"golang.org/x/sys/unix"
)

const envProbe = "NETGRANT_PROBE"

func TestMain(m *testing.M) {
	if name := os.Getenv(envProbe); name != "" {
		probes[name]()
		fmt.Println("done=1")
		syscall.Exit(0)
	}
	os.Exit(m.Run())
}

// server is a server of the host's (TCP on its loopback, or Unix) that
// greets each connection with its name and counts them.
type server struct {
	name     string
	ln       net.Listener
	accepted atomic.Int64
}

func newServer(t *testing.T, name string) *server {
	t.Helper()
	return listenServer(t, name, "tcp", "127.0.0.1:0")
}

// listenServer is a server listening on network's addr.
func listenServer(t *testing.T, name, network, addr string) *server {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{name: name, ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			c.Write([]byte("hello from " + name + "\n"))
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return s
}

func (s *server) port() int                       { return s.ln.Addr().(*net.TCPAddr).Port }
func (s *server) addr() string                    { return s.ln.Addr().String() }
func (s *server) rule(t *testing.T) netgrant.Rule { return mustRule(t, s.addr()) }

func mustRule(t *testing.T, s string) netgrant.Rule {
	t.Helper()
	r, err := netgrant.ParseRule(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// spec is a sandbox with the host's /usr and libraries, the test binary
// at /probe, and rules.
func spec(t *testing.T, rules ...netgrant.Rule) *sandbox.Spec {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s := &sandbox.Spec{Mounts: []sandbox.Mount{{Kind: sandbox.ROBind, Source: "/usr", Dest: "/usr"}}}
	for _, d := range []string{"/bin", "/lib", "/lib64"} {
		if _, err := os.Stat(d); err == nil {
			s.Mounts = append(s.Mounts, sandbox.Mount{Kind: sandbox.ROBind, Source: d, Dest: d})
		}
	}
	s.Mounts = append(s.Mounts,
		sandbox.Mount{Kind: sandbox.Proc, Dest: "/proc"},
		sandbox.Mount{Kind: sandbox.Tmpfs, Dest: "/tmp"},
		sandbox.Mount{Kind: sandbox.ROBind, Source: exe, Dest: "/probe"})
	s.Connect = rules
	return s
}

// events collects a sandbox's connect events.
type events struct {
	mu  sync.Mutex
	all []netgrant.Event
}

func (e *events) add(ev netgrant.Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

func (e *events) list() []netgrant.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]netgrant.Event(nil), e.all...)
}

// run runs probe name in a sandbox of spec with env, and returns what it
// printed as key=value pairs (and the whole output).
func run(t *testing.T, s *sandbox.Spec, name string, opts []sandbox.Option, env ...string) (map[string]string, string) {
	t.Helper()
	return runAt(t, s, "/probe", name, opts, env...)
}

// runAt is run with the test binary at path in the sandbox.
func runAt(t *testing.T, s *sandbox.Spec, path, name string, opts []sandbox.Option, env ...string) (map[string]string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := *s
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	c.Files = map[int]*os.File{0: null, 1: w, 2: w}
	c.Env = append([]string{envProbe + "=" + name}, env...)
	sb, err := sandbox.Build(ctx, &c, opts...)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	p, err := sb.Exec(ctx, path, []string{"probe"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	outc := make(chan string, 1)
	go func() { b, _ := io.ReadAll(r); outc <- string(b) }()
	st, err := p.Wait(ctx)
	if err != nil {
		sb.Close()
		t.Fatalf("probe %s: %v\n%s", name, err, <-outc)
	}
	out := <-outc
	kv := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			kv[k] = v
		}
	}
	if !st.Success() || kv["done"] != "1" {
		t.Fatalf("probe %s: %v\n%s", name, st, out)
	}
	return kv, out
}

func want(t *testing.T, kv map[string]string, out, key, val string) {
	t.Helper()
	if kv[key] != val {
		t.Errorf("%s=%q, want %q; probe said:\n%s", key, kv[key], val, out)
	}
}

// TestAllowedAndRefused: a connect a rule allows reaches the host's
// server through a real socket (the right peer, AF_INET, the options set
// before connect kept); one no rule allows fails with EACCES and reaches
// nothing; both are events.
func TestAllowedAndRefused(t *testing.T) {
	testenv.AlsoAsNobody(t)
	a, b := newServer(t, "A"), newServer(t, "B")
	var ev events
	kv, out := run(t, spec(t, a.rule(t)), "tcp", []sandbox.Option{sandbox.WithConnectEvents(ev.add)},
		"ADDRS="+a.addr()+","+b.addr()+",192.0.2.1:80")
	want(t, kv, out, "connect."+a.addr(), "ok")
	want(t, kv, out, "read."+a.addr(), "hello from A")
	want(t, kv, out, "peer."+a.addr(), a.addr())
	want(t, kv, out, "family."+a.addr(), strconv.Itoa(unix.AF_INET))
	want(t, kv, out, "nodelay."+a.addr(), "1")
	want(t, kv, out, "keepalive."+a.addr(), "1")
	// B is on the host's loopback, which the sandbox's is not: the
	// connect stays in the sandbox and finds nobody there.
	want(t, kv, out, "connect."+b.addr(), "ECONNREFUSED")
	want(t, kv, out, "connect.192.0.2.1:80", "EACCES")
	if n := b.accepted.Load(); n != 0 {
		t.Errorf("B accepted %d connections", n)
	}
	if n := a.accepted.Load(); n != 1 {
		t.Errorf("A accepted %d connections, want 1", n)
	}
	evs := ev.list()
	if len(evs) != 2 || !evs[0].Allowed() || evs[0].Addr != a.addr() || evs[0].Rule != a.rule(t).String() ||
		evs[1].Allowed() || evs[1].Addr != "192.0.2.1:80" || evs[1].Errno != unix.EACCES {
		t.Errorf("events: %+v", evs)
	}
}

// TestNonBlocking: Go's net.Dial connects non-blocking and waits with
// epoll; the installed socket completes as a connect of its own would.
func TestNonBlocking(t *testing.T) {
	a := newServer(t, "A")
	kv, out := run(t, spec(t, a.rule(t)), "gonet", nil, "ADDRS="+a.addr())
	want(t, kv, out, "dial."+a.addr(), "ok")
	want(t, kv, out, "read."+a.addr(), "hello from A")
}

// TestByName: a host rule allows the addresses its name has.
func TestByName(t *testing.T) {
	a := newServer(t, "A")
	lookup := sandbox.WithConnectLookup(func(ctx context.Context, host string) ([]netip.Addr, error) {
		if host == "a.test" {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		return nil, fmt.Errorf("no such host %s", host)
	})
	var ev events
	kv, out := run(t, spec(t, mustRule(t, "a.test:"+strconv.Itoa(a.port()))), "tcp",
		[]sandbox.Option{lookup, sandbox.WithConnectEvents(ev.add)}, "ADDRS="+a.addr())
	want(t, kv, out, "read."+a.addr(), "hello from A")
	if evs := ev.list(); len(evs) != 1 || evs[0].Name != "a.test" {
		t.Errorf("events: %+v", evs)
	}
	// Another port of the same name is not allowed.
	b := newServer(t, "B")
	kv, out = run(t, spec(t, mustRule(t, "a.test:"+strconv.Itoa(a.port()))), "tcp",
		[]sandbox.Option{lookup}, "ADDRS="+b.addr())
	want(t, kv, out, "connect."+b.addr(), "ECONNREFUSED") // the sandbox's own loopback
	if n := b.accepted.Load(); n != 0 {
		t.Errorf("B accepted %d connections", n)
	}
}

// TestManyConnects: 1,000 connects in a loop leave no fd behind in the
// program nor in the caller.
func TestManyConnects(t *testing.T) {
	a := newServer(t, "A")
	// A first sandbox makes what the test process keeps (proc's zygote
	// and its socket, the poller).
	run(t, spec(t, a.rule(t)), "loop", nil, "ADDR="+a.addr(), "N=1")
	before := countFDs(t)
	kv, out := run(t, spec(t, a.rule(t)), "loop", nil, "ADDR="+a.addr(), "N=1000")
	want(t, kv, out, "ok", "1000")
	want(t, kv, out, "fds.before", kv["fds.after"])
	if after := countFDs(t); after > before {
		t.Errorf("the test process has %d fds, %d before:\n%s", after, before, fdList())
	}
}

func fdList() string {
	es, _ := os.ReadDir("/proc/self/fd")
	var b strings.Builder
	for _, e := range es {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fmt.Fprintf(&b, "%s -> %s\n", e.Name(), l)
	}
	return b.String()
}

// TestTOCTOU: a second thread that rewrites the address between the trap
// and the connect never reaches the refused address.
func TestTOCTOU(t *testing.T) {
	a, b := newServer(t, "A"), newServer(t, "B")
	// B's port, but not its address, is allowed elsewhere: rewriting to
	// 127.0.0.1:B must not reach B.
	kv, out := run(t, spec(t, a.rule(t), mustRule(t, "192.0.2.0/24:"+strconv.Itoa(b.port()))), "toctou", nil,
		"GOOD="+a.addr(), "BAD="+b.addr(), "N=300")
	if kv["a"] == "0" {
		t.Errorf("no connect reached A:\n%s", out)
	}
	if n := b.accepted.Load(); n != 0 {
		t.Errorf("B, refused, accepted %d connections:\n%s", n, out)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// TestResolver: the sandbox's resolver answers names a host rule allows
// (what it answers, the rule then allows), and refuses the others.
func TestResolver(t *testing.T) {
	testenv.AlsoAsNobody(t)
	a := newServer(t, "A")
	lookup := sandbox.WithConnectLookup(func(ctx context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "a.test", "x.b.test", "other.test":
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	})
	var ev events
	port := strconv.Itoa(a.port())
	kv, out := run(t, spec(t, mustRule(t, "a.test:"+port), mustRule(t, "*.b.test:"+port)), "resolve",
		[]sandbox.Option{lookup, sandbox.WithConnectEvents(ev.add)},
		"GODEBUG=netdns=go", "PORT="+port, "NAMES=a.test,x.b.test,other.test,missing.b.test,localhost")
	want(t, kv, out, "lookup.a.test", "127.0.0.1")
	want(t, kv, out, "read.a.test", "hello from A")
	want(t, kv, out, "read.x.b.test", "hello from A")
	want(t, kv, out, "lookup.other.test", "error")
	want(t, kv, out, "lookup.missing.b.test", "error")
	if !strings.Contains(kv["lookup.localhost"], "127.0.0.1") {
		t.Errorf("localhost: %q", kv["lookup.localhost"])
	}
	var refused, allowed int
	for _, e := range ev.list() {
		if e.Op != "dns" {
			continue
		}
		switch {
		case e.Name == "other.test" && e.Kind == "refused" && e.RCode == "Refused":
			refused++
		case e.Name == "a.test" && e.Allowed() && e.QType == "A" && len(e.Answers) == 1:
			allowed++
		}
	}
	if refused == 0 || allowed == 0 {
		t.Errorf("dns events: %+v", ev.list())
	}
}

// serveUnixHello serves "hello from NAME" (NAME: p's last element) to
// each connection to a Unix socket at p, open to anyone, and counts them
// in heard if not nil.
func serveUnixHello(t *testing.T, p string, heard *atomic.Int32) {
	ln, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o777)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if heard != nil {
				heard.Add(1)
			}
			c.Write([]byte("hello from " + filepath.Base(p) + "\n"))
			c.Close()
		}
	}()
}

// TestUnixRule: a Unix rule's host socket is reached though the sandbox
// does not see its path; another host socket is not.
func TestUnixRule(t *testing.T) {
	dir := testenv.SharedTempDir(t)
	granted, other := filepath.Join(dir, "granted.sock"), filepath.Join(dir, "other.sock")
	serveUnixHello(t, granted, nil)
	serveUnixHello(t, other, nil)
	kv, out := run(t, spec(t, mustRule(t, "unix:"+granted)), "unix", nil, "PATHS="+granted+","+other)
	want(t, kv, out, "read."+granted, "hello from granted.sock")
	want(t, kv, out, "dial."+other, "ENOENT")
	// A datagram socket of the host's could send to any host socket,
	// abstract ones too: refused.
	kv, out = run(t, spec(t, mustRule(t, "unix:"+granted)), "unixdgram", nil, "PATH_OK="+granted)
	want(t, kv, out, "connect", "EACCES")
}

// TestUnixRulePlanted: a program that may write the directory of the
// socket a unix: rule names replaces the socket with a link to another
// socket of the host's, which it cannot see: its connect is refused, and
// the other socket's server never hears from it.
func TestUnixRulePlanted(t *testing.T) {
	testenv.AlsoAsNobody(t)
	dir := testenv.SharedTempDir(t)
	rw := filepath.Join(dir, "rw")
	if err := os.Mkdir(rw, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(rw, 0o777)
	var secretHeard atomic.Int32
	ruled, secret := filepath.Join(rw, "app.sock"), filepath.Join(dir, "secret.sock")
	serveUnixHello(t, ruled, nil)
	serveUnixHello(t, secret, &secretHeard)
	s := spec(t, mustRule(t, "unix:"+ruled))
	s.Mounts = append(s.Mounts, sandbox.Mount{Kind: sandbox.Bind, Source: rw, Dest: rw})
	kv, out := run(t, s, "unixplant", nil, "RULED="+ruled, "SECRET="+secret)
	want(t, kv, out, "before", "hello from app.sock")
	want(t, kv, out, "after", "ECONNREFUSED")
	if n := secretHeard.Load(); n != 0 {
		t.Errorf("the socket behind the planted link accepted %d connections:\n%s", n, out)
	}
}

// TestUnixRuleCredentials: a host server that a unix: rule reaches reads
// the program's host user as its peer (SO_PEERCRED), not the user of the
// caplin that made the connect: with caplin as root and the sandbox
// mapped to nobody, nobody; and the rule grants the socket though its
// permission is root's alone.
func TestUnixRuleCredentials(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("caplin must be root, and the sandbox another user")
	}
	dir := testenv.SharedTempDir(t)
	p := filepath.Join(dir, "creds.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	// Root's alone: the rule grants it, whatever its permission says.
	os.Chmod(p, 0o600)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			uid := "?"
			if rc, err := c.SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) {
					if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
						uid = strconv.Itoa(int(cred.Uid))
					}
				})
			}
			c.Write([]byte("uid " + uid + "\n"))
			c.Close()
		}
	}()
	s := spec(t, mustRule(t, "unix:"+p))
	s.HostIDs = sandbox.NobodyIDs()
	// The probe where nobody may read it.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	probe := filepath.Join(dir, "probe")
	if err := os.WriteFile(probe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range s.Mounts {
		if s.Mounts[i].Dest == "/probe" {
			s.Mounts[i].Source = probe
		}
	}
	before, _ := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	kv, out := run(t, s, "unix", nil, "PATHS="+p)
	want(t, kv, out, "read."+p, "uid 65534")
	// The thread that connected as the program gave caplin's
	// credentials back, and the process's dumpable flag.
	if after, _ := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); after != before {
		t.Errorf("caplin's dumpable flag: %d before, %d after", before, after)
	}
	if os.Geteuid() != 0 || os.Getegid() != 0 {
		t.Errorf("caplin's IDs after: euid %d egid %d", os.Geteuid(), os.Getegid())
	}
}

// TestBadConnects: connect calls wrong in every way fail as the kernel
// fails them, through the trap as without it, and nothing hangs.
func TestBadConnects(t *testing.T) {
	a := newServer(t, "A")
	kv, out := run(t, spec(t, a.rule(t)), "bad", nil, "ADDR="+a.addr())
	for k, v := range map[string]string{
		"null": "EFAULT", "unmapped": "EFAULT", "short": "EINVAL", "one": "EINVAL", "long": "EINVAL",
		"family": "EAFNOSUPPORT", "notsock": "ENOTSOCK", "badfd": "EBADF", "first": "ok", "again": "EISCONN",
		"udp": "ok", // a datagram socket's connect to loopback, in the sandbox
	} {
		want(t, kv, out, k, v)
	}
	// An IPv4 address on an IPv6 socket: the kernel's answer.
	if v := kv["v6sock"]; v != "EINVAL" && v != "EAFNOSUPPORT" {
		t.Errorf("v6sock=%s", v)
	}
}

// TestFlood: many connects at once are all answered; the broker bounds
// how many it works on, not how many it answers.
func TestFlood(t *testing.T) {
	a := newServer(t, "A")
	kv, out := run(t, spec(t, a.rule(t)), "flood", nil, "ADDR="+a.addr(), "N=300")
	want(t, kv, out, "ok", "300")
	want(t, kv, out, "failed", "0")
}

// TestDiesWhilePending: a program killed in a connect that never ends
// leaves nothing behind: the sandbox closes at once, and the test
// process has the fds it had.
func TestDiesWhilePending(t *testing.T) {
	// A listener that never accepts, whose queue is full: further
	// connects wait for an answer that does not come.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	unix.Listen(fd, 0)
	sa, _ := unix.Getsockname(fd)
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	filler, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	defer unix.Close(filler)
	unix.Connect(filler, sa)
	time.Sleep(50 * time.Millisecond)
	a := newServer(t, "A") // a first sandbox makes what the test keeps
	run(t, spec(t, a.rule(t)), "loop", nil, "ADDR="+a.addr(), "N=1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, w, _ := os.Pipe()
	defer r.Close()
	null, _ := os.Open(os.DevNull)
	defer null.Close()
	before := countFDs(t) - 1 // w, closed below

	s := spec(t, mustRule(t, addr))
	s.Files = map[int]*os.File{0: null, 1: w, 2: w}
	s.Env = []string{envProbe + "=hang", "ADDR=" + addr}
	sb, err := sandbox.Build(ctx, s)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	p, err := sb.Exec(ctx, "/probe", []string{"probe"})
	if err != nil {
		sb.Close()
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(r).ReadString('\n')
	if line != "connecting=1\n" {
		t.Errorf("probe said %q", line)
	}
	time.Sleep(300 * time.Millisecond) // in the connect, trapped
	start := time.Now()
	sb.Kill()
	p.Wait(ctx)
	p.Close()
	sb.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("killing the sandbox took %v", d)
	}
	for deadline := time.Now().Add(2 * time.Second); countFDs(t) > before && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if after := countFDs(t); after > before {
		t.Errorf("the test process has %d fds, %d before:\n%s", after, before, fdList())
	}
}

// TestTrapCost reports what the trap costs a connect it leaves to the
// kernel (to the sandbox's own loopback) against one without the trap.
func TestTrapCost(t *testing.T) {
	if testing.Short() {
		t.Skip("a measurement")
	}
	s := spec(t)
	s.Net = sandbox.NetLoopback
	kv, _ := run(t, s, "selfloop", nil, "N=2000")
	without := kv["connect_us"]
	kv, _ = run(t, spec(t, mustRule(t, "192.0.2.1:1")), "selfloop", nil, "N=2000")
	t.Logf("a connect to the sandbox's loopback: %s µs with the trap, %s µs without", kv["connect_us"], without)
}

// TestSocketKept: a non-blocking connect, IPv4 and IPv6, gets a socket
// that completes under epoll as its own would, with the options set
// before connect, O_NONBLOCK and the descriptor's close-on-exec flag as
// they were, AF_INET6 for IPv6, and the right peer; a socket bound
// before connect is refused with EOPNOTSUPP.
func TestSocketKept(t *testing.T) {
	for _, tc := range []struct{ network, listen string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		ln, err := net.Listen(tc.network, tc.listen)
		if err != nil {
			t.Logf("%s: %v", tc.network, err)
			continue
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write([]byte("hello from K\n"))
				c.Close()
			}
		}()
		addr := ln.Addr().String()
		for _, cloexec := range []string{"0", "1"} {
			var ev events
			kv, out := run(t, spec(t, mustRule(t, addr)), "opts", []sandbox.Option{sandbox.WithConnectEvents(ev.add)}, "ADDR="+addr, "CLOEXEC="+cloexec)
			if c := kv["connect"]; c != "ok" && c != "EINPROGRESS" {
				t.Errorf("%s: connect=%s\n%s", addr, c, out)
			}
			want(t, kv, out, "epoll", "1")
			want(t, kv, out, "soerror", "0")
			want(t, kv, out, "nonblock", "true")
			want(t, kv, out, "cloexec", map[string]string{"0": "false", "1": "true"}[cloexec])
			want(t, kv, out, "rcvbuf.same", "true")
			want(t, kv, out, "sndbuf.same", "true")
			want(t, kv, out, "nodelay", "1")
			want(t, kv, out, "keepalive", "1")
			want(t, kv, out, "keepidle", "77")
			want(t, kv, out, "peer", addr)
			want(t, kv, out, "read", "hello from K")
			want(t, kv, out, "bound", unix.ErrnoName(unix.EOPNOTSUPP))
			if tc.network == "tcp6" {
				want(t, kv, out, "domain", strconv.Itoa(unix.AF_INET6))
			}
			var refused int
			for _, e := range ev.list() {
				if !e.Allowed() && e.Errno == unix.EOPNOTSUPP {
					refused++
				}
			}
			if refused != 1 {
				t.Errorf("%s: events %+v", addr, ev.list())
			}
		}
	}
}

// TestSlowLookup: looking a host rule's name up does not hold up a
// connect that an address rule allows, nor the sandbox's start.
func TestSlowLookup(t *testing.T) {
	a := newServer(t, "A")
	slow := sandbox.WithConnectLookup(func(ctx context.Context, host string) ([]netip.Addr, error) {
		select {
		case <-time.After(3 * time.Second):
		case <-ctx.Done():
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	})
	start := time.Now()
	kv, out := run(t, spec(t, a.rule(t), mustRule(t, "slow.test:"+strconv.Itoa(a.port()))), "tcp", []sandbox.Option{slow}, "ADDRS="+a.addr())
	want(t, kv, out, "read."+a.addr(), "hello from A")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the sandbox and its connect took %v with a lookup of 3s under way", d)
	}
}

// hangingListener returns the address of a listener whose queue is
// full, so that connects to it wait for an answer that does not come.
func hangingListener(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	unix.Listen(fd, 0)
	sa, _ := unix.Getsockname(fd)
	filler, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	t.Cleanup(func() { unix.Close(filler) })
	unix.Connect(filler, sa)
	time.Sleep(50 * time.Millisecond)
	return fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
}

// TestInstalledSocketsStay: a socket the Broker installed (the host's)
// cannot be disconnected and aimed elsewhere, bound, made to listen, nor
// connect by TCP Fast Open; a second connect in progress gets the
// kernel's answer; a send timeout leaves it connecting; a 128-byte
// address is read; 0.0.0.0 stays in the sandbox; an fd the Broker cannot
// install at fails the connect (EMFILE). The refused server is never
// reached.
func TestInstalledSocketsStay(t *testing.T) {
	testenv.AlsoAsNobody(t)
	a, b := newServer(t, "A"), newServer(t, "B")
	hang := hangingListener(t)
	kv, out := run(t, spec(t, a.rule(t), mustRule(t, hang)), "reaim", nil, "GOOD="+a.addr(), "BAD="+b.addr(), "HANG="+hang)
	for k, v := range map[string]string{
		"a.connect": "ok", "a.unspec": unix.ErrnoName(unix.EOPNOTSUPP), "a.again": "EISCONN",
		"a.bind": "EACCES", "a.listen": "EACCES",
		"b.connect": "EINPROGRESS", "b.again": "EALREADY", "b.elsewhere": "EACCES",
		"c.fastopen": unix.ErrnoName(unix.EOPNOTSUPP),
		"c.rthdr":    "EPERM", "c.2292rthdr": "EPERM", "c.ipoptions": "EPERM", "c.ipoptionsclear": "ok", "c.v6only": "ok", "c.nodelay": "ok",
		"d.connect": "EINPROGRESS", "d.peer": "ENOTCONN", "d.poll": "0",
		"e.len128": "ok", "f.any": "ECONNREFUSED", "g.rlimit": "EMFILE",
	} {
		want(t, kv, out, k, v)
	}
	if n := b.accepted.Load(); n != 0 {
		t.Errorf("B, not in the rules, accepted %d connections:\n%s", n, out)
	}
}

// TestLocalAddresses: a wide network rule, or a name under a wildcard,
// does not reach the host's loopback; a rule that names it does.
func TestLocalAddresses(t *testing.T) {
	a := newServer(t, "A")
	port := strconv.Itoa(a.port())
	lookup := sandbox.WithConnectLookup(func(ctx context.Context, host string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	})
	for _, tc := range []struct {
		rule, want string
	}{
		{"0.0.0.0/0:" + port, "ECONNREFUSED"}, // the sandbox's own loopback
		{"127.0.0.0/8:" + port, "ok"},
		{"a.test:" + port, "ok"},
	} {
		kv, out := run(t, spec(t, mustRule(t, tc.rule)), "tcp", []sandbox.Option{lookup}, "ADDRS="+a.addr())
		want(t, kv, out, "connect."+a.addr(), tc.want)
	}
	// A name under a wildcard rule that resolves to loopback.
	kv, out := run(t, spec(t, mustRule(t, "*.test:"+port)), "resolve", []sandbox.Option{lookup},
		"GODEBUG=netdns=go", "PORT="+port, "NAMES=x.test")
	if !strings.Contains(kv["dial.x.test"], "connection refused") {
		t.Errorf("a wildcard name resolving to 127.0.0.1 reached the host's loopback:\n%s", out)
	}
}

// TestConcurrentConnects: a connect that waits for an answer does not
// hold up another made meanwhile (happy eyeballs, with one address that
// does not answer).
func TestConcurrentConnects(t *testing.T) {
	a := newServer(t, "A")
	hang := hangingListener(t)
	kv, out := run(t, spec(t, a.rule(t), mustRule(t, hang)), "eyeballs", nil, "GOOD="+a.addr(), "HANG="+hang)
	want(t, kv, out, "good", "ok")
	want(t, kv, out, "good.fast", "true")
}
