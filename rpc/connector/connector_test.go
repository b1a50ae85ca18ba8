package connector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/rpc/rpctest"
	"golang.org/x/sys/unix"
)

// echoListener accepts connections on ln and echoes one line back on each.
func echoListener(t *testing.T, ln net.Listener) {
	acceptEach(t, ln, func(c net.Conn) {
		b := make([]byte, 64)
		n, _ := c.Read(b)
		c.Write(b[:n])
	})
}

// acceptEach accepts connections on ln until the test ends, and serves
// each with serve, then closes it.
func acceptEach(t *testing.T, ln net.Listener, serve func(net.Conn)) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
}

func roundTripOver(t *testing.T, f *os.File, msg string) {
	t.Helper()
	defer f.Close()
	if _, err := f.WriteString(msg); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	n, err := f.Read(b)
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if string(b[:n]) != msg {
		t.Fatalf("echo over the connection: %q, want %q", b[:n], msg)
	}
}

func TestConnector(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoListener(t, ln)
	port := ln.Addr().(*net.TCPAddr).Port

	root := t.TempDir()
	os.Mkdir(filepath.Join(root, "sock"), 0o755)
	uln, err := net.Listen("unix", filepath.Join(root, "sock", "app.sock"))
	if err != nil {
		t.Fatal(err)
	}
	echoListener(t, uln)
	outside, err := net.Listen("unix", filepath.Join(t.TempDir(), "outside.sock"))
	if err != nil {
		t.Fatal(err)
	}
	echoListener(t, outside)
	if err := os.Symlink(outside.Addr().String(), filepath.Join(root, "sock", "evil.sock")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "sock", "plain"), nil, 0o644)
	// A link from the allowed directory to a socket elsewhere in the
	// tree: allowed by the rule's name, outside it in fact.
	secret, err := net.Listen("unix", filepath.Join(root, "secret.sock"))
	if err != nil {
		t.Fatal(err)
	}
	echoListener(t, secret)
	if err := os.Symlink("../secret.sock", filepath.Join(root, "sock", "up.sock")); err != nil {
		t.Fatal(err)
	}
	// A rule for one socket does not follow a link in its place.
	if err := os.Symlink("sock/app.sock", filepath.Join(root, "exact.sock")); err != nil {
		t.Fatal(err)
	}
	d, err := dir.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Policy{
		Allow: []string{
			fmt.Sprintf("127.0.0.1:%d", port),
			fmt.Sprintf("localhost:%d-%d", port, port),
			"10.0.0.0/8:*",
			"unix:sock/",
			"unix:exact.sock",
		},
		Dir: d,
	})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := rpctest.Pair(t, h)
	conn := Client{c}

	for _, addr := range []string{fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("localhost:%d", port)} {
		f, err := conn.Connect(ctx, "tcp", addr)
		if err != nil {
			t.Fatalf("connect %s: %v", addr, err)
		}
		roundTripOver(t, f, "over tcp")
	}
	// The holder cannot turn its socket elsewhere: it holds a forwarder's
	// end, not the connection (which connect(AF_UNSPEC) would free to
	// connect anywhere). A listener on a port the policy does not allow
	// must never see a connection from it.
	other, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := other.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	defer other.Close()
	f, err := conn.Connect(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	if fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 {
		t.Errorf("the socket handed out is non-blocking (flags %#x, %v)", fl, err)
	}
	otherAddr := &unix.SockaddrInet4{Port: other.Addr().(*net.TCPAddr).Port, Addr: [4]byte{127, 0, 0, 1}}
	if dom, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil || dom != unix.AF_UNIX {
		t.Errorf("the holder got a socket of domain %d (%v), not its end of a Unix socket pair", dom, err)
	}
	disconnect(int(f.Fd())) // frees a real TCP socket to connect again
	if err := unix.Connect(int(f.Fd()), otherAddr); err == nil {
		t.Errorf("the holder connected its socket to a port the policy does not allow")
	}
	select {
	case <-accepted:
		t.Errorf("a connection reached the port the policy does not allow")
	case <-time.After(50 * time.Millisecond):
	}
	f.Close()

	f, err = conn.Connect(ctx, "unix", "sock/app.sock")
	if err != nil {
		t.Fatal(err)
	}
	roundTripOver(t, f, "over unix")

	// Refusals: each names the destination, with a code and errno.
	for _, c := range []struct {
		network, addr string
		want          error
		text          string
	}{
		{"tcp", fmt.Sprintf("127.0.0.1:%d", port+1), rpc.ErrDenied, "not allowed"},
		{"tcp", fmt.Sprintf("127.0.0.2:%d", port), rpc.ErrDenied, "not allowed"},
		{"tcp", fmt.Sprintf("[::1]:%d", port), rpc.ErrDenied, "not allowed"},
		{"tcp", fmt.Sprintf("LOCALHOST.:%d", port+1), rpc.ErrDenied, "not allowed"},
		{"udp", "8.8.8.8:53", rpc.ErrInvalid, "not offered"},
		{"unix", "app.sock", rpc.ErrDenied, "not allowed"},
		{"unix", "sock/../sock/app.sock", rpc.ErrInvalid, "clean"},
		{"unix", "sock/../secret.sock", rpc.ErrInvalid, "clean"},
		{"unix", "sock/up.sock", syscall.EXDEV, "escapes"},
		{"unix", "sock/evil.sock", syscall.EXDEV, "escapes"},
		{"unix", "sock/plain", syscall.ENOTSOCK, "sock/plain"},
		{"unix", "exact.sock", syscall.ENOTSOCK, "exact.sock"},
		{"unix", "sock/none.sock", syscall.ENOENT, "none.sock"},
		{"sctp", "127.0.0.1:1", rpc.ErrInvalid, "network"},
		{"tcp", "127.0.0.1", rpc.ErrInvalid, "missing port"},
	} {
		f, err := conn.Connect(ctx, c.network, c.addr)
		if err == nil {
			f.Close()
		}
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("connect %s %s = %v; want %v (%q)", c.network, c.addr, err, c.want, c.text)
		}
	}
	if err := conn.Call(ctx, "listen", nil, nil); !errors.Is(err, rpc.ErrUnknownMethod) {
		t.Errorf("listen = %v", err)
	}
}

func TestConnectorPolicy(t *testing.T) {
	for _, bad := range []string{"example.com", "example.com:http", "host:70000", "host:9-1", "unix:/abs.sock", "unix:", "*x.com:1", ":80", "10.0.0.0/33:1", "*.:1", "*..com:1", "a..b:1", "1.2.3.4.:1", "a:b:1"} {
		if _, err := New(Policy{Allow: []string{bad}}); err == nil {
			t.Errorf("New accepted %q", bad)
		}
	}
	h, err := New(Policy{Allow: []string{"*.example.com:443", "*.example.org.:443", "[fd00::]/8:22", "*:7", "[::]/0:23", "10.0.0.0/8:24"}})
	if err != nil {
		t.Fatal(err)
	}
	c := h.(*handler)
	for _, tc := range []struct {
		host string
		port uint16
		want bool
	}{
		{"api.example.com", 443, true},
		{"a.b.EXAMPLE.com", 443, true},
		{"example.com", 443, false},
		{"evilexample.com", 443, false},
		{"api.example.com", 80, false},
		{"api.example.org", 443, true}, // a rule's trailing dot is dropped, as a name's is
		{"api.example.org.", 443, true},
		{"example.org", 443, false},
		{"fd12::1", 22, true},
		{"fe80::1", 22, false},
		{"::ffff:10.1.2.3", 22, false}, // an IPv4 address, which no IPv4 rule allows
		{"anything", 7, true},
		{"1.2.3.4", 7, true},
		{"::ffff:127.0.0.1", 23, false}, // "[::]/0" is IPv6 only
		{"2001:db8::1", 23, true},
		{"::ffff:10.0.0.1", 24, true}, // the IPv4 rule allows it however written
	} {
		if got := c.allowedNet(tc.host, tc.port); got != tc.want {
			t.Errorf("allowed(%s, %d) = %v, want %v", tc.host, tc.port, got, tc.want)
		}
	}
}

// holdListener accepts connections on ln and keeps each open, reading
// what comes, until its other side closes it.
func holdListener(t *testing.T, ln net.Listener) {
	acceptEach(t, ln, func(c net.Conn) { io.Copy(io.Discard, c) })
}

// TestMaxConns: an object has at most MaxConns connections open; past
// them connect fails with EAGAIN, and one that ends makes room.
func TestMaxConns(t *testing.T) {
	ctx := context.Background()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	holdListener(t, ln)
	h, err := New(Policy{Allow: []string{ln.Addr().String(), "127.0.0.1:1"}, MaxConns: 3})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := rpctest.Pair(t, h)
	cl := Client{c}
	// Connects that fail, refused by the policy or by the host, do not
	// count.
	for range 5 {
		if _, err := cl.Connect(ctx, "tcp", "127.0.0.1:1"); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("connect to a closed port: %v, want ECONNREFUSED", err)
		}
		if _, err := cl.Connect(ctx, "tcp", "127.0.0.1:2"); !errors.Is(err, syscall.EACCES) {
			t.Fatalf("connect to a port not allowed: %v, want EACCES", err)
		}
	}
	var conns []*os.File
	for range 3 {
		f, err := cl.Connect(ctx, "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, f)
	}
	if f, err := cl.Connect(ctx, "tcp", ln.Addr().String()); !errors.Is(err, syscall.EAGAIN) {
		if f != nil {
			f.Close()
		}
		t.Fatalf("a fourth connection: %v, want EAGAIN", err)
	}
	conns[0].Close()
	var f *os.File
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if f, err = cl.Connect(ctx, "tcp", ln.Addr().String()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a connection ended: %v", err)
		}
	}
	f.Close()
	for _, f := range conns[1:] {
		f.Close()
	}
}

// TestEndWithObject: with EndWithObject, closing the object cuts its
// connections (the holder reads EOF, its writes fail, the server's
// forwarders close everything); without it they go on.
func TestEndWithObject(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoListener(t, ln)
	for _, end := range []bool{true, false} {
		t.Run(fmt.Sprint("EndWithObject=", end), func(t *testing.T) {
			before := testenv.OpenFDs(t)
			h, err := New(Policy{Allow: []string{ln.Addr().String()}, EndWithObject: end})
			if err != nil {
				t.Fatal(err)
			}
			c, _ := rpctest.Pair(t, h)
			f, err := Client{c}.Connect(ctx, "tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			c.Close()
			if !end {
				time.Sleep(50 * time.Millisecond)
				roundTripOver(t, f, "still here")
				return
			}
			f.SetReadDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 8)
			if n, err := f.Read(b); n != 0 || err != io.EOF {
				t.Fatalf("read after the object ended: %d, %v; want EOF", n, err)
			}
			if _, err := f.WriteString("x"); !errors.Is(err, syscall.EPIPE) {
				t.Errorf("write after the object ended: %v, want EPIPE", err)
			}
			f.Close()
			// The server side: the forwarder's descriptors are closed.
			for deadline := time.Now().Add(5 * time.Second); testenv.OpenFDs(t) > before; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d descriptors still open, %d before", testenv.OpenFDs(t), before)
				}
			}
		})
	}
}

// TestSharedLimit: Connectors sharing a Limit have at most its number of
// connections open together, so a client cannot get more by making
// another Connector (connecting to the server again).
func TestSharedLimit(t *testing.T) {
	ctx := context.Background()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	holdListener(t, ln)
	limit := NewLimit(2)
	var cls []Client
	for range 2 {
		h, err := New(Policy{Allow: []string{ln.Addr().String()}, MaxConns: 3, Limit: limit})
		if err != nil {
			t.Fatal(err)
		}
		c, _ := rpctest.Pair(t, h)
		cls = append(cls, Client{c})
	}
	a, err := cls[0].Connect(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := cls[1].Connect(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range cls {
		if f, err := cl.Connect(ctx, "tcp", ln.Addr().String()); !errors.Is(err, syscall.EAGAIN) || !strings.Contains(err.Error(), "the server has 2 connections open") {
			if f != nil {
				f.Close()
			}
			t.Fatalf("a third connection across the Limit: %v, want EAGAIN", err)
		}
	}
	b.Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		f, err := cls[0].Connect(ctx, "tcp", ln.Addr().String())
		if err == nil {
			f.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a connection ended: %v", err)
		}
	}
}
