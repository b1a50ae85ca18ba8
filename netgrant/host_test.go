package netgrant_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/netgrant"
	"github.com/caplin-dev/caplin/sandbox"
)

// newUnixServer is a server of the host's at the Unix socket path
// ("@name" for an abstract one), in a mode anyone may connect to.
func newUnixServer(t *testing.T, name, path string) *server {
	t.Helper()
	s := listenServer(t, name, "unix", path)
	if path[0] != '@' {
		if err := os.Chmod(path, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// hostSpec is a Landlock-only sandbox with the host's /usr and libraries,
// the test binary at its own path, and dirs bound writable.
func hostSpec(t *testing.T, dirs ...string) (*sandbox.Spec, string) {
	t.Helper()
	if _, err := sandbox.LandlockABI(); err != nil {
		t.Skip(err)
	}
	if err := netgrant.HostSupported(); err != nil {
		t.Skip(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s := &sandbox.Spec{LandlockOnly: true, UID: os.Geteuid(), GID: os.Getegid()}
	for _, d := range []string{"/usr", "/bin", "/lib", "/lib64"} {
		if _, err := os.Stat(d); err == nil {
			s.Mounts = append(s.Mounts, sandbox.Mount{Kind: sandbox.ROBind, Source: d, Dest: d})
		}
	}
	s.Mounts = append(s.Mounts, sandbox.Mount{Kind: sandbox.ROBind, Source: exe, Dest: exe})
	for _, d := range dirs {
		s.Mounts = append(s.Mounts, sandbox.Mount{Kind: sandbox.Bind, Source: d, Dest: d})
	}
	return s, exe
}

// TestHostUnixSockets: a sandbox without namespaces reaches the host's
// Unix sockets that its grants cover, by absolute and relative names, and
// the socket a file grant names; not those outside them, not through a
// symbolic link in a granted directory that leads out, not through
// /proc's magic links, and no abstract socket (without the host's
// network). The refusals are events.
func TestHostUnixSockets(t *testing.T) {
	testenv.AlsoAsNobody(t)
	tmp := testenv.SharedTempDir(t)
	in, out := filepath.Join(tmp, "in"), filepath.Join(tmp, "out")
	for _, d := range []string{in, out} {
		if err := os.Mkdir(d, 0o777); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o777)
	}
	inS := newUnixServer(t, "IN", filepath.Join(in, "s"))
	outS := newUnixServer(t, "OUT", filepath.Join(out, "s"))
	fileS := newUnixServer(t, "FILE", filepath.Join(out, "granted"))
	abstract := "@caplin-test-" + strconv.Itoa(os.Getpid())
	absS := newUnixServer(t, "ABSTRACT", abstract)
	if err := os.Symlink(filepath.Join(out, "s"), filepath.Join(in, "link")); err != nil {
		t.Fatal(err)
	}
	s, exe := hostSpec(t, in)
	s.Mounts = append(s.Mounts, sandbox.Mount{Kind: sandbox.ROBind, Source: filepath.Join(out, "granted"), Dest: filepath.Join(out, "granted")})
	s.Dir = in
	var ev events
	targets := []string{filepath.Join(in, "s"), "s", filepath.Join(out, "s"), filepath.Join(in, "link"),
		filepath.Join(in, "..", "out", "s"), filepath.Join(out, "granted"), abstract, "/proc/self/cwd/s", filepath.Join(in, "missing")}
	kv, output := runAt(t, s, exe, "unixhost", []sandbox.Option{sandbox.WithConnectEvents(ev.add)}, "TARGETS="+joinComma(targets))
	for i, w := range []string{"IN", "IN", "EACCES", "EACCES", "EACCES", "FILE", "EPERM", "ELOOP", "ENOENT"} {
		want(t, kv, output, "connect."+targets[i], w)
	}
	if n := outS.accepted.Load(); n != 0 {
		t.Errorf("a socket outside the grants accepted %d connections:\n%s", n, output)
	}
	if n := absS.accepted.Load(); n != 0 {
		t.Errorf("the host's abstract socket accepted %d connections:\n%s", n, output)
	}
	if inS.accepted.Load() != 2 || fileS.accepted.Load() != 1 {
		t.Errorf("accepted %d and %d, want 2 and 1", inS.accepted.Load(), fileS.accepted.Load())
	}
	refused := map[string]string{}
	for _, e := range ev.all {
		if !e.Allowed() {
			refused[e.Addr] = e.ErrnoName
		}
	}
	for addr, errno := range map[string]string{"unix:" + filepath.Join(out, "s"): "EACCES", "unix:" + abstract: "EPERM"} {
		if refused[addr] != errno {
			t.Errorf("no refusal event %s %s in %+v", addr, errno, ev.all)
		}
	}
}

// TestHostUnixDatagrams: a sandbox without namespaces makes no Unix
// datagram socket (socket(2), SOCK_RAW included, and socketpair(2): one of
// a pair sends to any address too), whatever its network, so the host's
// datagram sockets get nothing from it; stream and seqpacket ones are
// made.
func TestHostUnixDatagrams(t *testing.T) {
	testenv.AlsoAsNobody(t)
	tmp := testenv.SharedTempDir(t)
	target := filepath.Join(tmp, "d")
	pc, err := net.ListenPacket("unixgram", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	os.Chmod(target, 0o777)
	var got atomic.Int32
	go func() {
		b := make([]byte, 64)
		for {
			if _, _, err := pc.ReadFrom(b); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	for _, n := range []sandbox.Net{sandbox.NetNone, sandbox.NetHost} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			// The datagram socket's directory is granted: the kernel's
			// DAC and the grants would let a send through.
			s, exe := hostSpec(t, tmp)
			s.Net = n
			kv, out := runAt(t, s, exe, "unixdgramhost", nil, "TARGET="+target)
			for _, k := range []string{"socket.dgram", "socket.raw", "socketpair.dgram"} {
				want(t, kv, out, k, "EACCES")
			}
			for _, k := range []string{"socket.stream", "socket.seqpacket", "socketpair.stream", "socketpair.seqpacket"} {
				want(t, kv, out, k, "ok")
			}
		})
	}
	// A datagram sent is read within a moment; give it one.
	time.Sleep(50 * time.Millisecond)
	if n := got.Load(); n != 0 {
		t.Errorf("the host's datagram socket got %d datagrams from the sandbox", n)
	}
}

// TestHostUnixRefused: a directory the caller refuses
// (sandbox.WithRefusedSockets: the supervisor's, in caplin run) is not
// reached, though the grants cover it; a socket beside it is.
func TestHostUnixRefused(t *testing.T) {
	testenv.AlsoAsNobody(t)
	tmp := testenv.SharedTempDir(t)
	granted, refused := filepath.Join(tmp, "granted"), filepath.Join(tmp, "granted", "sup")
	for _, d := range []string{granted, refused} {
		if err := os.Mkdir(d, 0o777); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o777)
	}
	ok := newUnixServer(t, "OK", filepath.Join(granted, "s"))
	sup := newUnixServer(t, "SUP", filepath.Join(refused, "s"))
	s, exe := hostSpec(t, granted)
	targets := []string{filepath.Join(granted, "s"), filepath.Join(refused, "s")}
	kv, output := runAt(t, s, exe, "unixhost", []sandbox.Option{sandbox.WithRefusedSockets(refused)}, "TARGETS="+joinComma(targets))
	want(t, kv, output, "connect."+targets[0], "OK")
	want(t, kv, output, "connect."+targets[1], "EACCES")
	if n := sup.accepted.Load(); n != 0 || ok.accepted.Load() != 1 {
		t.Errorf("the refused directory's socket accepted %d connections, the other %d:\n%s", n, ok.accepted.Load(), output)
	}
}

// TestHostUnixNetwork: with the host's network, abstract sockets are
// reached, and sockets by name still only where the grants cover them.
func TestHostUnixNetwork(t *testing.T) {
	tmp := testenv.SharedTempDir(t)
	newUnixServer(t, "OUT", filepath.Join(tmp, "s"))
	abstract := "@caplin-test-net-" + strconv.Itoa(os.Getpid())
	newUnixServer(t, "ABSTRACT", abstract)
	a := newServer(t, "TCP")
	s, exe := hostSpec(t)
	s.Net = sandbox.NetHost
	targets := []string{filepath.Join(tmp, "s"), abstract}
	kv, out := runAt(t, s, exe, "unixhost", nil, "TARGETS="+joinComma(targets), "TCP="+a.addr())
	want(t, kv, out, "connect."+targets[0], "EACCES")
	want(t, kv, out, "connect."+abstract, "ABSTRACT")
	want(t, kv, out, "tcp", "hello from TCP")
}

// TestHostUnixTOCTOU: a second thread that rewrites the name between the
// trap and the connect, between a granted socket and one outside the
// grants, never reaches the one outside.
func TestHostUnixTOCTOU(t *testing.T) {
	tmp := testenv.SharedTempDir(t)
	in, out := filepath.Join(tmp, "in"), filepath.Join(tmp, "out")
	for _, d := range []string{in, out} {
		if err := os.Mkdir(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	// Names of one length, so that only the bytes change.
	newUnixServer(t, "A", filepath.Join(in, "s"))
	bad := newUnixServer(t, "B", filepath.Join(out, "s"))
	s, exe := hostSpec(t, in)
	kv, output := runAt(t, s, exe, "unixrace", nil, "GOOD="+filepath.Join(in, "s"), "BAD="+filepath.Join(out, "s"), "N=500")
	if kv["a"] == "0" {
		t.Errorf("no connect reached A:\n%s", output)
	}
	if n := bad.accepted.Load(); n != 0 {
		t.Errorf("B, outside the grants, accepted %d connections:\n%s", n, output)
	}
}

func joinComma(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += ","
		}
		out += v
	}
	return out
}

// TestSwappedSocket: a second thread that puts a socket the Broker
// installed (of the host's, its connect failed) at the fd number of the
// sandbox's own socket while that one's connect to the sandbox's loopback
// is trapped never gets the host's socket connected to the host's
// loopback: the Broker makes the connect on the socket it looked at.
func TestSwappedSocket(t *testing.T) {
	bad := newServer(t, "B")
	// A port of the host's loopback where nothing listens, allowed: the
	// installed socket's connect fails there, and it can connect again.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	// Between the installed socket's turns the number holds the sandbox's
	// own socket, a file that is no socket, or nothing: each the Broker
	// must answer itself (ENOTSOCK, EBADF), never by handing the call back
	// to the kernel, which would connect whatever the number holds then.
	for _, own := range []string{"socket", "null", "closed"} {
		kv, out := run(t, spec(t, mustRule(t, closed)), "swap", nil, "CLOSED="+closed, "BAD="+bad.addr(), "N=3000", "OWN="+own)
		if kv["installed"] != "ECONNREFUSED" {
			t.Fatalf("%s: the installed socket's connect: %s, want ECONNREFUSED:\n%s", own, kv["installed"], out)
		}
		if n := bad.accepted.Load(); n != 0 {
			t.Errorf("%s: the host's loopback server, not in the rules, accepted %d connections:\n%s", own, n, out)
		}
	}
}

// TestHostRules: without namespaces, the rules decide every TCP connect,
// made on the program's own socket; names are answered by the Broker's
// resolver, through the stand-in of a datagram socket (Go's resolver,
// UDP) and over TCP to port 53; other datagrams go nowhere
// (ENETUNREACH), TCP binds are refused, and the stand-ins do not
// outlive the program's sockets.
func TestHostRules(t *testing.T) {
	testenv.AlsoAsNobody(t)
	a, b := newServer(t, "A"), newServer(t, "B")
	port := strconv.Itoa(a.port())
	lookup := sandbox.WithConnectLookup(func(ctx context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "a.test", "other.test":
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	})
	tmp := testenv.SharedTempDir(t)
	ruled, other := filepath.Join(tmp, "ruled"), filepath.Join(tmp, "other")
	newUnixServer(t, "RULED", ruled)
	otherS := newUnixServer(t, "OTHER", other)
	s, exe := hostSpec(t)
	s.Connect = []netgrant.Rule{mustRule(t, "a.test:"+port), a.rule(t), mustRule(t, "unix:"+ruled)}
	var ev events
	// The zygote that Landlock-only sandboxes fork from is made once, and
	// kept: counted before.
	runAt(t, s, exe, "unixhost", nil, "TARGETS=/nonexistent")
	before := countFDs(t)
	kv, out := runAt(t, s, exe, "hostrules", []sandbox.Option{lookup, sandbox.WithConnectEvents(ev.add)},
		"GODEBUG=netdns=go", "PORT="+port, "GOOD="+a.addr(), "BAD="+b.addr(), "UNIX="+ruled+","+other)
	for k, v := range map[string]string{
		"good": "hello from A", "bad": "EACCES",
		"udp.a.test": "127.0.0.1", "tcp.a.test": "127.0.0.1", "udp.other.test": "error",
		"dial.a.test":   "hello from A",
		"udp.elsewhere": "ENETUNREACH", "bind": "EACCES", "sockets": "ok",
		"unix." + ruled: "RULED", "unix." + other: "EACCES",
		"rthdr": "EPERM", "2292rthdr": "EPERM", "ipoptions": "EPERM", "ipoptionsclear": "ok", "v6only": "ok", "nodelay": "ok",
	} {
		want(t, kv, out, k, v)
	}
	if n := b.accepted.Load(); n != 0 {
		t.Errorf("B, not in the rules, accepted %d connections:\n%s", n, out)
	}
	if n := otherS.accepted.Load(); n != 0 {
		t.Errorf("a Unix socket neither ruled nor granted accepted %d connections:\n%s", n, out)
	}
	refused, names := false, 0
	for _, e := range ev.all {
		refused = refused || !e.Allowed() && e.Addr == b.addr() && e.ErrnoName == "EACCES"
		if e.Op == "dns" && e.Name == "a.test" {
			names++
		}
	}
	if !refused || names == 0 {
		t.Errorf("events lack the refused connect or the questions: %+v", ev.all)
	}
	// The Broker has gone with the sandbox, and its stand-ins with it.
	deadline := time.Now().Add(5 * time.Second)
	for countFDs(t) > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := countFDs(t); n > before {
		t.Errorf("%d fds before, %d after", before, n)
	}
}

// TestHostRulesTOCTOU: without namespaces too, a second thread that
// rewrites the address after the trap never reaches the refused address.
func TestHostRulesTOCTOU(t *testing.T) {
	a, b := newServer(t, "A"), newServer(t, "B")
	s, exe := hostSpec(t)
	s.Connect = []netgrant.Rule{a.rule(t), mustRule(t, "192.0.2.0/24:"+strconv.Itoa(b.port()))}
	kv, out := runAt(t, s, exe, "toctou", nil, "GOOD="+a.addr(), "BAD="+b.addr(), "N=300")
	if kv["a"] == "0" {
		t.Errorf("no connect reached A:\n%s", out)
	}
	if n := b.accepted.Load(); n != 0 {
		t.Errorf("B, refused, accepted %d connections:\n%s", n, out)
	}
}
