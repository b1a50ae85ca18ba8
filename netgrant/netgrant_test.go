package netgrant_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
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

// server is a TCP server on the host's loopback that greets each
// connection with its name and counts them.
type server struct {
	name     string
	ln       net.Listener
	accepted atomic.Int64
}

func newServer(t *testing.T, name string) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
	p, err := sb.Exec(ctx, "/probe", []string{"probe"})
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
		t.Errorf("the test process has %d fds, %d before", after, before)
	}
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
