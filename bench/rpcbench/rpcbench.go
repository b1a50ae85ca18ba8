// Package rpcbench holds the bodies of the rpc benchmarks and of their
// peers, so that the rpc package and the gRPC comparison (bench/grpc, a
// module of its own) measure caplin with the same code: the same echo
// service, the same message sizes, the same ping-pong floor.
//
// A test binary that uses the cross-process benchmarks must call Peer
// first thing in its TestMain: they re-execute the binary as the peer.
//
// It imports rpc, so it lives with the benchmarks, above rpc, and the rpc
// package's benchmarks are in package rpc_test to import it.
package rpcbench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/caplin-dev/caplin/rpc"
	"golang.org/x/sys/unix"
)

// Args and Result are the small call every benchmark makes: an echo of a
// short string and an int, about the size of a typical capability call.
type Args struct {
	Text string
	N    int
}

type Result struct {
	Text string
	N    int
}

// FDArgs carries one descriptor; the "fd" method sends it back.
type FDArgs struct {
	F rpc.FD
}

// Text is the string every call echoes.
const Text = "hello, caplin"

// Echo is the service's one computation, shared with the gRPC server.
func Echo(a Args) Result { return Result{Text: a.Text, N: a.N + 1} }

// Handler serves "echo" (Args to Result) and "fd" (an FDArgs returned as
// it came, so one descriptor crosses each way).
func Handler() rpc.Methods {
	return rpc.Methods{
		"echo": rpc.Method(func(ctx context.Context, a Args) (Result, error) {
			return Echo(a), nil
		}),
		"fd": rpc.Method(func(ctx context.Context, a FDArgs) (FDArgs, error) {
			return a, nil // the reply sends the descriptor, then closes it
		}),
	}
}

// socketpair returns a connected SOCK_SEQPACKET pair.
func socketpair(b testing.TB) [2]int {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	return [2]int{fds[0], fds[1]}
}

// Pair serves Handler in this process, on goroutines of the rpc server,
// and returns a Client for it; both go at the end of the benchmark.
func Pair(b testing.TB) *rpc.Client {
	fds := socketpair(b)
	srv := &rpc.Server{}
	if err := srv.ServeFile(context.Background(), os.NewFile(uintptr(fds[1]), "server"), Handler()); err != nil {
		b.Fatal(err)
	}
	c, err := rpc.NewClient(os.NewFile(uintptr(fds[0]), "client"), rpc.ClientOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		c.Close()
		srv.Shutdown(context.Background())
	})
	return c
}

// The calls, as the benchmarks make them.

func callEcho(c *rpc.Client) error {
	var r Result
	if err := c.Call(context.Background(), "echo", Args{Text: Text, N: 1}, &r); err != nil {
		return err
	}
	if r.N != 2 || r.Text != Text {
		return fmt.Errorf("echo returned %+v", r)
	}
	return nil
}

func callFD(c *rpc.Client, f *os.File) error {
	var r FDArgs
	if err := c.Call(context.Background(), "fd", FDArgs{F: rpc.NewFD(f)}, &r); err != nil {
		return err
	}
	if r.F.File == nil {
		return fmt.Errorf("fd returned no descriptor")
	}
	return r.F.Close()
}

// pipe returns the write end of a new pipe, the descriptor CallFD sends.
func pipe(b testing.TB) *os.File {
	r, w, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close(); w.Close() })
	return w
}

// Sizes are the lengths of a call message and of its reply on the wire.
type Sizes struct{ Call, Reply int }

var (
	sizesOnce          sync.Once
	echoSizes, fdSizes Sizes
	sizesErr           error
)

// messageSizes measures the messages of the echo and fd calls by passing
// one of each through a relay between a Client and a server, so that the
// ping-pong floors send exactly as many bytes as the calls do.
func messageSizes(b testing.TB) (echo, fd Sizes) {
	sizesOnce.Do(func() { echoSizes, fdSizes, sizesErr = measureSizes() })
	if sizesErr != nil {
		b.Fatal(sizesErr)
	}
	return echoSizes, fdSizes
}

func measureSizes() (echo, fd Sizes, err error) {
	cl, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return echo, fd, err
	}
	sv, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		unix.Close(cl[0])
		unix.Close(cl[1])
		return echo, fd, err
	}
	defer unix.Close(cl[1])
	defer unix.Close(sv[0])
	srv := &rpc.Server{}
	defer srv.Shutdown(context.Background())
	if err := srv.ServeFile(context.Background(), os.NewFile(uintptr(sv[1]), "server"), Handler()); err != nil {
		unix.Close(cl[0])
		return echo, fd, err
	}
	c, err := rpc.NewClient(os.NewFile(uintptr(cl[0]), "client"), rpc.ClientOptions{})
	if err != nil {
		return echo, fd, err
	}
	defer c.Close()
	// The relay forwards one message each way, descriptors included.
	relay := func(from, to int) (int, error) {
		buf := make([]byte, rpc.DefaultMaxMessage)
		oob := make([]byte, unix.CmsgSpace(4*4))
		n, oobn, _, _, err := unix.Recvmsg(from, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != nil {
			return 0, err
		}
		defer closeRights(oob[:oobn])
		return n, unix.Sendmsg(to, buf[:n], oob[:oobn], nil, 0)
	}
	measure := func(call func() error) (Sizes, error) {
		done := make(chan error, 1)
		go func() { done <- call() }()
		var s Sizes
		var err error
		if s.Call, err = relay(cl[1], sv[0]); err == nil {
			s.Reply, err = relay(sv[0], cl[1])
		}
		if err != nil {
			return s, err
		}
		return s, <-done
	}
	if echo, err = measure(func() error { return callEcho(c) }); err != nil {
		return echo, fd, fmt.Errorf("measuring the echo call: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return echo, fd, err
	}
	defer r.Close()
	defer w.Close()
	if fd, err = measure(func() error { return callFD(c, w) }); err != nil {
		return echo, fd, fmt.Errorf("measuring the fd call: %w", err)
	}
	return echo, fd, nil
}

// closeRights closes the descriptors an SCM_RIGHTS control message
// brought.
func closeRights(oob []byte) {
	msgs, _ := unix.ParseSocketControlMessage(oob)
	for i := range msgs {
		fds, _ := unix.ParseUnixRights(&msgs[i])
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
}

// echoPeer answers each message on fd with reply bytes, sending back the
// descriptor it came with, if any (as the "fd" method does), with
// blocking system calls. It returns when the other end is closed.
func echoPeer(fd, reply int) {
	buf := make([]byte, rpc.DefaultMaxMessage)
	out := make([]byte, reply)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != nil || n == 0 {
			return
		}
		err = unix.Sendmsg(fd, out, oob[:oobn], nil, 0)
		closeRights(oob[:oobn])
		if err != nil {
			return
		}
	}
}

// pingPong is the client side of the floor: one message of s.Call bytes
// out, one of s.Reply back, with f's descriptor each way if f is not nil.
func pingPong(b *testing.B, fd int, s Sizes, f *os.File) {
	msg := make([]byte, s.Call)
	buf := make([]byte, rpc.DefaultMaxMessage)
	var rights []byte
	if f != nil {
		// Not f.Fd(), which would make the pipe blocking.
		rc, err := f.SyscallConn()
		if err != nil {
			b.Fatal(err)
		}
		rc.Control(func(fd uintptr) { rights = unix.UnixRights(int(fd)) })
	}
	oob := make([]byte, unix.CmsgSpace(4*4))
	Loop(b, func() error {
		if err := unix.Sendmsg(fd, msg, rights, nil, 0); err != nil {
			return err
		}
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		closeRights(oob[:oobn])
		if err != nil || n != s.Reply {
			return fmt.Errorf("recvmsg: %d bytes, %v", n, err)
		}
		return nil
	})
}

// Loop times b.N round trips, after one that is not timed: it waits for
// a peer process to start or a connection to be made, and warms up both
// sides.
func Loop(b *testing.B, roundTrip func() error) {
	if err := roundTrip(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := roundTrip(); err != nil {
			b.Fatal(err)
		}
	}
}

// PingPong is the floor for a call: a bare SOCK_SEQPACKET round trip with
// the echo call's message sizes, the peer a goroutine of this process,
// both sides in blocking system calls.
func PingPong(b *testing.B) {
	s, _ := messageSizes(b)
	fds := socketpair(b)
	done := make(chan struct{})
	go func() { echoPeer(fds[1], s.Reply); close(done) }()
	defer func() { unix.Close(fds[0]); <-done; unix.Close(fds[1]) }()
	pingPong(b, fds[0], s, nil)
}

// PingPongFD is PingPong with the fd call's sizes and one descriptor
// each way: the floor for CallFD.
func PingPongFD(b *testing.B) {
	_, s := messageSizes(b)
	w := pipe(b)
	fds := socketpair(b)
	done := make(chan struct{})
	go func() { echoPeer(fds[1], s.Reply); close(done) }()
	defer func() { unix.Close(fds[0]); <-done; unix.Close(fds[1]) }()
	pingPong(b, fds[0], s, w)
}

// PingPongNet is PingPong through net.UnixConn on both sides, the Go
// runtime's network poller: the transport the rpc package is built on,
// so Call/PingPongNet is the cost of the protocol and the call machinery.
func PingPongNet(b *testing.B) {
	s, _ := messageSizes(b)
	fds := socketpair(b)
	var conns [2]*net.UnixConn
	for i, fd := range fds {
		c, err := unixConn(os.NewFile(uintptr(fd), "pingpong"))
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = c
	}
	go netEchoPeer(conns[1], s.Reply)
	defer conns[0].Close()
	netPingPong(b, conns[0], s)
}

// unixConn makes a net.UnixConn of f, which it closes.
func unixConn(f *os.File) (*net.UnixConn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}

// netEchoPeer is echoPeer through c, without descriptors; it closes c
// when the other end is closed.
func netEchoPeer(c *net.UnixConn, reply int) {
	defer c.Close()
	buf := make([]byte, rpc.DefaultMaxMessage)
	out := make([]byte, reply)
	for {
		n, _, _, _, err := c.ReadMsgUnix(buf, nil)
		if err != nil || n == 0 {
			return
		}
		if _, _, err := c.WriteMsgUnix(out, nil, nil); err != nil {
			return
		}
	}
}

// netPingPong is pingPong through c, without descriptors.
func netPingPong(b *testing.B, c *net.UnixConn, s Sizes) {
	msg := make([]byte, s.Call)
	buf := make([]byte, rpc.DefaultMaxMessage)
	Loop(b, func() error {
		if _, _, err := c.WriteMsgUnix(msg, nil, nil); err != nil {
			return err
		}
		if n, _, _, _, err := c.ReadMsgUnix(buf, nil); err != nil || n != s.Reply {
			return fmt.Errorf("read: %d bytes, %v", n, err)
		}
		return nil
	})
}

// Call is the echo call on an object served by this process.
func Call(b *testing.B) {
	c := Pair(b)
	Loop(b, func() error { return callEcho(c) })
}

// CallFD sends one descriptor (a pipe's write end) and gets one back.
// The pipe is non-blocking, as Go makes its files, so each side's
// os.NewFile of the descriptor it receives registers it with the runtime's
// poller (and Close removes it): system calls PingPongFD does not make.
func CallFD(b *testing.B) {
	c := Pair(b)
	w := pipe(b)
	Loop(b, func() error { return callFD(c, w) })
}

// Callers is how many goroutines CallParallel calls from at once.
const Callers = 8

// Parallel runs b.N calls of call from n goroutines at once and reports
// the throughput as calls/s (ns/op is then the time per call at that
// rate, not a latency).
func Parallel(b *testing.B, n int, call func() error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	if err := call(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for g := 0; g < n; g++ {
		calls := b.N / n
		if g < b.N%n {
			calls++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				if err := call(); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if first != nil {
		b.Fatal(first)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}

// CallParallel is the echo call from Callers goroutines on one object.
func CallParallel(b *testing.B) {
	c := Pair(b)
	Parallel(b, Callers, func() error { return callEcho(c) })
}

// envPeer makes a re-executed test binary the peer of a cross-process
// benchmark: "echo REPLYSIZE" or "net REPLYSIZE" for the ping-pongs,
// "rpc" for the server.
const envPeer = "CAPLIN_RPCBENCH_PEER"

// Peer runs this process as the peer of a cross-process benchmark, and
// exits, if it was started as one; otherwise it returns at once. Call it
// first thing in TestMain.
func Peer() {
	what, ok := os.LookupEnv(envPeer)
	if !ok {
		return
	}
	const sock = 3 // startPeer's socket
	kind, arg, _ := strings.Cut(what, " ")
	reply, err := strconv.Atoi(arg)
	switch {
	case kind == "echo" && err == nil:
		echoPeer(sock, reply)
	case kind == "net" && err == nil:
		c, err := unixConn(os.NewFile(sock, "peer"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "rpcbench:", err)
			os.Exit(1)
		}
		netEchoPeer(c, reply)
	case kind == "rpc":
		var srv rpc.Server
		if err := srv.ServeFile(context.Background(), os.NewFile(sock, "peer"), Handler()); err != nil {
			fmt.Fprintln(os.Stderr, "rpcbench:", err)
			os.Exit(1)
		}
		io.Copy(io.Discard, os.Stdin) // until the benchmark closes the pipe
	default:
		fmt.Fprintln(os.Stderr, "rpcbench: bad", envPeer, what)
		os.Exit(2)
	}
	os.Exit(0)
}

// startPeer re-executes the test binary as a peer (see Peer) that serves
// the other end of a new socket pair on its fd 3, and returns this end;
// the peer goes at the end of the benchmark.
func startPeer(b testing.TB, what string) *os.File {
	fds := socketpair(b)
	mine := os.NewFile(uintptr(fds[0]), "client")
	StartProc(b, envPeer+"="+what, os.NewFile(uintptr(fds[1]), "peer"), mine)
	return mine
}

// StartProc re-executes the test binary with env (NAME=VALUE) added to
// its environment and f as its fd 3, which it closes here, for a
// benchmark's peer process: the binary's TestMain sees env and serves f
// until its standard input closes, which happens at the end of the
// benchmark; the process must then exit 0. The ends in mine are this
// process's side of f: they are closed at the end of the benchmark before
// the wait, since a peer may exit only when they close, and at once if the
// start fails.
func StartProc(b testing.TB, env string, f *os.File, mine ...io.Closer) {
	closeMine := func() {
		for _, c := range mine {
			c.Close()
		}
	}
	stdin, hold, err := os.Pipe()
	if err != nil {
		f.Close()
		closeMine()
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stdin = stdin
	cmd.Stderr = os.Stderr
	err = cmd.Start()
	f.Close()
	stdin.Close()
	if err != nil {
		hold.Close()
		closeMine()
		b.Fatal(err)
	}
	b.Cleanup(func() {
		closeMine()
		hold.Close()
		if err := cmd.Wait(); err != nil {
			b.Errorf("benchmark peer %s: %v", env, err)
		}
	})
}

// PingPongProc is PingPong with the peer in another process.
func PingPongProc(b *testing.B) {
	s, _ := messageSizes(b)
	sock := startPeer(b, "echo "+strconv.Itoa(s.Reply))
	pingPong(b, int(sock.Fd()), s, nil)
}

// PingPongNetProc is PingPongNet with the peer in another process: the
// floor for CallProc through the transport it uses.
func PingPongNetProc(b *testing.B) {
	s, _ := messageSizes(b)
	c, err := unixConn(startPeer(b, "net "+strconv.Itoa(s.Reply)))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	netPingPong(b, c, s)
}

// CallProc is Call with the server in another process.
func CallProc(b *testing.B) {
	sock := startPeer(b, "rpc")
	c, err := rpc.NewClient(sock, rpc.ClientOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	Loop(b, func() error { return callEcho(c) })
}
