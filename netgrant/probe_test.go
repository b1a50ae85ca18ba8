package netgrant_test

// The probes: what the test binary does inside a sandbox (TestMain runs
// the one CAPLIN's envProbe names), printing key=value lines.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

var probes = map[string]func(){
	"tcp":           probeTCP,
	"gonet":         probeGoNet,
	"loop":          probeLoop,
	"toctou":        probeTOCTOU,
	"resolve":       probeResolve,
	"unix":          probeUnix,
	"unixplant":     probeUnixPlant,
	"bad":           probeBad,
	"flood":         probeFlood,
	"hang":          probeHang,
	"selfloop":      probeSelfLoop,
	"opts":          probeOpts,
	"reaim":         probeReaim,
	"unixdgram":     probeUnixDgram,
	"eyeballs":      probeEyeballs,
	"unixhost":      probeUnixHost,
	"unixdgramhost": probeUnixDgramHost,
	"unixrace":      probeUnixRace,
	"swap":          probeSwap,
	"hostrules":     probeHostRules,
}

func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	return err.Error()
}

func sockaddr(s string) unix.Sockaddr {
	ap := netip.MustParseAddrPort(s)
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

// probeTCP connects, blocking, to each of ADDRS, with TCP_NODELAY and
// SO_KEEPALIVE set first, and reports what it got.
func probeTCP() {
	for _, a := range strings.Split(os.Getenv("ADDRS"), ",") {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			fmt.Printf("socket.%s=%s\n", a, errName(err))
			continue
		}
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
		if err := unix.Connect(fd, sockaddr(a)); err != nil {
			fmt.Printf("connect.%s=%s\n", a, errName(err))
			unix.Close(fd)
			continue
		}
		fmt.Printf("connect.%s=ok\n", a)
		if sa, err := unix.Getpeername(fd); err == nil {
			if in, ok := sa.(*unix.SockaddrInet4); ok {
				fmt.Printf("peer.%s=%s\n", a, netip.AddrPortFrom(netip.AddrFrom4(in.Addr), uint16(in.Port)))
			}
		}
		d, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
		fmt.Printf("family.%s=%d\n", a, d)
		v, _ := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY)
		fmt.Printf("nodelay.%s=%d\n", a, v)
		v, _ = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE)
		fmt.Printf("keepalive.%s=%d\n", a, v)
		buf := make([]byte, 64)
		n, _ := unix.Read(fd, buf)
		fmt.Printf("read.%s=%s\n", a, strings.TrimSpace(string(buf[:max(n, 0)])))
		unix.Close(fd)
	}
}

// probeGoNet dials each of ADDRS with package net (non-blocking connect,
// epoll).
func probeGoNet() {
	for _, a := range strings.Split(os.Getenv("ADDRS"), ",") {
		c, err := net.DialTimeout("tcp", a, 10*time.Second)
		if err != nil {
			fmt.Printf("dial.%s=%v\n", a, err)
			continue
		}
		fmt.Printf("dial.%s=ok\n", a)
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Printf("read.%s=%s\n", a, strings.TrimSpace(line))
		c.Close()
	}
}

func fdCount() int {
	es, _ := os.ReadDir("/proc/self/fd")
	return len(es)
}

// probeLoop connects N times to ADDR, reading the greeting each time.
func probeLoop() {
	n, _ := strconv.Atoi(os.Getenv("N"))
	a := os.Getenv("ADDR")
	fmt.Printf("fds.before=%d\n", fdCount())
	ok := 0
	for i := 0; i < n; i++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			fmt.Printf("socket=%s\n", errName(err))
			break
		}
		if err := unix.Connect(fd, sockaddr(a)); err != nil {
			fmt.Printf("connect=%s\n", errName(err))
			unix.Close(fd)
			break
		}
		buf := make([]byte, 64)
		if n, _ := unix.Read(fd, buf); n > 0 {
			ok++
		}
		unix.Close(fd)
	}
	fmt.Printf("ok=%d\n", ok)
	fmt.Printf("fds.after=%d\n", fdCount())
}

// probeTOCTOU connects N times to GOOD while another thread keeps
// rewriting the address in memory to BAD and back.
func probeTOCTOU() {
	good := netip.MustParseAddrPort(os.Getenv("GOOD"))
	bad := netip.MustParseAddrPort(os.Getenv("BAD"))
	n, _ := strconv.Atoi(os.Getenv("N"))
	sa := func(ap netip.AddrPort) unix.RawSockaddrInet4 {
		r := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().As4()}
		p := (*[2]byte)(unsafe.Pointer(&r.Port))
		p[0], p[1] = byte(ap.Port()>>8), byte(ap.Port())
		return r
	}
	g, b := sa(good), sa(bad)
	buf := new(unix.RawSockaddrInet4)
	*buf = g
	connectRacing(n, unix.AF_INET, unsafe.Pointer(buf), unix.SizeofSockaddrInet4, func() {
		*(*[16]byte)(unsafe.Pointer(buf)) = *(*[16]byte)(unsafe.Pointer(&b))
		*(*[16]byte)(unsafe.Pointer(buf)) = *(*[16]byte)(unsafe.Pointer(&g))
	})
}

// probeResolve looks each of NAMES up with Go's own resolver (the
// sandbox's /etc/resolv.conf), and dials the first address at PORT.
func probeResolve() {
	port := os.Getenv("PORT")
	for _, name := range strings.Split(os.Getenv("NAMES"), ",") {
		addrs, err := net.DefaultResolver.LookupHost(context.Background(), name)
		if err != nil {
			fmt.Printf("lookup.%s=error\n", name)
			continue
		}
		fmt.Printf("lookup.%s=%s\n", name, strings.Join(addrs, " "))
		c, err := net.DialTimeout("tcp", net.JoinHostPort(name, port), 10*time.Second)
		if err != nil {
			fmt.Printf("dial.%s=%v\n", name, err)
			continue
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Printf("read.%s=%s\n", name, strings.TrimSpace(line))
		c.Close()
	}
	data, _ := os.ReadFile("/etc/resolv.conf")
	fmt.Printf("resolvconf=%q\n", data)
}

// probeUnix connects to the Unix sockets at PATHS.
func probeUnix() {
	for _, p := range strings.Split(os.Getenv("PATHS"), ",") {
		if line, err := unixLine(p); err != nil {
			fmt.Printf("dial.%s=%s\n", p, errName(err))
		} else {
			fmt.Printf("read.%s=%s\n", p, line)
		}
	}
}

// unixLine connects to the Unix stream socket at p and returns the first
// line its server says.
func unixLine(p string) (string, error) {
	c, err := net.DialTimeout("unix", p, 10*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), nil
}

// probeUnixPlant connects to the socket a unix: rule names (RULED), then
// replaces it with a link to another socket (SECRET, which the sandbox
// cannot see) and connects again.
func probeUnixPlant() {
	ruled, secret := os.Getenv("RULED"), os.Getenv("SECRET")
	dial := func(key string) {
		line, err := unixLine(ruled)
		if err != nil {
			line = errName(err)
		}
		fmt.Printf("%s=%s\n", key, line)
	}
	dial("before")
	if err := os.Remove(ruled); err != nil {
		fmt.Printf("remove=%s\n", errName(err))
	}
	if err := os.Symlink(secret, ruled); err != nil {
		fmt.Printf("symlink=%s\n", errName(err))
	}
	dial("after")
}

// probeBad makes connect calls that are wrong in every way the kernel
// checks, and reports the errnos.
func probeBad() {
	tryAt := func(name string, fd int, addr uintptr, n uintptr) {
		_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), addr, n)
		fmt.Printf("%s=%s\n", name, errnoText(e))
	}
	try := func(name string, fd int, addr unsafe.Pointer, n uintptr) {
		_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(addr), n)
		fmt.Printf("%s=%s\n", name, errnoText(e))
	}
	good := sockaddr(os.Getenv("ADDR")).(*unix.SockaddrInet4)
	raw := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: good.Addr}
	p := (*[2]byte)(unsafe.Pointer(&raw.Port))
	p[0], p[1] = byte(good.Port>>8), byte(good.Port)
	sock := func(domain int) int {
		fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			panic(err)
		}
		return fd
	}
	try("null", sock(unix.AF_INET), nil, unix.SizeofSockaddrInet4)
	tryAt("unmapped", sock(unix.AF_INET), 8, unix.SizeofSockaddrInet4)
	try("short", sock(unix.AF_INET), unsafe.Pointer(&raw), 8)
	try("one", sock(unix.AF_INET), unsafe.Pointer(&raw), 1)
	try("long", sock(unix.AF_INET), unsafe.Pointer(&raw), 4096)
	odd := raw
	odd.Family = 12345
	try("family", sock(unix.AF_INET), unsafe.Pointer(&odd), unix.SizeofSockaddrInet4)
	try("v6sock", sock(unix.AF_INET6), unsafe.Pointer(&raw), unix.SizeofSockaddrInet4)
	f, _ := os.Open("/probe")
	try("notsock", int(f.Fd()), unsafe.Pointer(&raw), unix.SizeofSockaddrInet4)
	try("badfd", 999, unsafe.Pointer(&raw), unix.SizeofSockaddrInet4)
	udp, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	try("udp", udp, unsafe.Pointer(&raw), unix.SizeofSockaddrInet4)
	s := sock(unix.AF_INET)
	try("first", s, unsafe.Pointer(&raw), unix.SizeofSockaddrInet4)
	try("again", s, unsafe.Pointer(&raw), unix.SizeofSockaddrInet4)
}

// probeFlood connects N times at once to ADDR.
func probeFlood() {
	n, _ := strconv.Atoi(os.Getenv("N"))
	a := os.Getenv("ADDR")
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", a, 30*time.Second)
			if err != nil {
				failed.Add(1)
				return
			}
			buf := make([]byte, 64)
			if k, _ := c.Read(buf); k > 0 {
				ok.Add(1)
			}
			c.Close()
		}()
	}
	wg.Wait()
	fmt.Printf("ok=%d\nfailed=%d\n", ok.Load(), failed.Load())
}

// probeHang connects, blocking, to ADDR, which never answers, after
// saying so; the test kills it meanwhile.
func probeHang() {
	fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	fmt.Println("connecting=1")
	err := unix.Connect(fd, sockaddr(os.Getenv("ADDR")))
	fmt.Printf("connect=%v\n", err)
}

func errnoText(e unix.Errno) string {
	if e == 0 {
		return "ok"
	}
	return unix.ErrnoName(e)
}

// probeSelfLoop connects N times to a listener of its own, on the
// sandbox's loopback, and prints the median µs of a connect.
func probeSelfLoop() {
	n, _ := strconv.Atoi(os.Getenv("N"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	a := ln.Addr().String()
	ts := make([]float64, n)
	for i := range ts {
		fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		s := time.Now()
		err := unix.Connect(fd, sockaddr(a))
		ts[i] = float64(time.Since(s).Nanoseconds()) / 1e3
		if err != nil {
			panic(err)
		}
		unix.Close(fd)
	}
	slices.Sort(ts)
	fmt.Printf("connect_us=%.1f\n", ts[n/2])
}

// probeOpts connects, non-blocking, to ADDR (IPv4 or [IPv6]) with options
// set first, waits with epoll (registered after connect, as event loops
// do), and reports what the connected socket has.
func probeOpts() {
	ap := netip.MustParseAddrPort(os.Getenv("ADDR"))
	domain := unix.AF_INET
	if ap.Addr().Is6() {
		domain = unix.AF_INET6
	}
	cloexec := 0
	if os.Getenv("CLOEXEC") == "1" {
		cloexec = unix.SOCK_CLOEXEC
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|cloexec, 0)
	if err != nil {
		panic(err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 65536)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 65536)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 77)
	want := map[string]int{}
	for k, o := range map[string][2]int{"rcvbuf": {unix.SOL_SOCKET, unix.SO_RCVBUF}, "sndbuf": {unix.SOL_SOCKET, unix.SO_SNDBUF}} {
		want[k], _ = unix.GetsockoptInt(fd, o[0], o[1])
	}
	var sa unix.Sockaddr
	if domain == unix.AF_INET6 {
		sa = &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
	} else {
		sa = &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	err = unix.Connect(fd, sa)
	fmt.Printf("connect=%s\n", map[bool]string{true: "ok", false: errName(err)}[err == nil])
	ep, _ := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLET})
	evs := make([]unix.EpollEvent, 1)
	n, _ := unix.EpollWait(ep, evs, 10000)
	fmt.Printf("epoll=%d\n", n)
	soerr, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	fmt.Printf("soerror=%d\n", soerr)
	fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	fmt.Printf("nonblock=%v\n", fl&unix.O_NONBLOCK != 0)
	fdfl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	fmt.Printf("cloexec=%v\n", fdfl&unix.FD_CLOEXEC != 0)
	for k, o := range map[string][2]int{"rcvbuf": {unix.SOL_SOCKET, unix.SO_RCVBUF}, "sndbuf": {unix.SOL_SOCKET, unix.SO_SNDBUF}} {
		v, _ := unix.GetsockoptInt(fd, o[0], o[1])
		fmt.Printf("%s.same=%v\n", k, v == want[k])
	}
	for k, o := range map[string][2]int{"nodelay": {unix.IPPROTO_TCP, unix.TCP_NODELAY}, "keepalive": {unix.SOL_SOCKET, unix.SO_KEEPALIVE}, "keepidle": {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE}} {
		v, _ := unix.GetsockoptInt(fd, o[0], o[1])
		fmt.Printf("%s=%d\n", k, v)
	}
	d, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	fmt.Printf("domain=%d\n", d)
	if p, err := unix.Getpeername(fd); err == nil {
		switch p := p.(type) {
		case *unix.SockaddrInet4:
			fmt.Printf("peer=%s\n", netip.AddrPortFrom(netip.AddrFrom4(p.Addr), uint16(p.Port)))
		case *unix.SockaddrInet6:
			fmt.Printf("peer=%s\n", netip.AddrPortFrom(netip.AddrFrom16(p.Addr), uint16(p.Port)))
		}
	}
	buf := make([]byte, 64)
	unix.EpollCtl(ep, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Events: unix.EPOLLIN})
	unix.EpollWait(ep, evs, 10000)
	k, _ := unix.Read(fd, buf)
	fmt.Printf("read=%s\n", strings.TrimSpace(string(buf[:max(k, 0)])))
	// A socket bound first cannot be granted.
	b, _ := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if domain == unix.AF_INET {
		unix.Bind(b, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	} else {
		unix.Bind(b, &unix.SockaddrInet6{Addr: netip.IPv6Loopback().As16()})
	}
	fmt.Printf("bound=%s\n", errName(unix.Connect(b, sa)))
}

// probeReaim tries what the sockets the Broker installs must not do: be
// disconnected and aimed elsewhere, bound, made to listen, connect by
// TCP Fast Open; and what they must do as the kernel does: a second
// connect in progress, a send timeout, a 128-byte address.
func probeReaim() {
	good, bad, hang := os.Getenv("GOOD"), os.Getenv("BAD"), os.Getenv("HANG")
	rawConnect := func(fd int, p unsafe.Pointer, n uintptr) error {
		_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(p), n)
		if e != 0 {
			return e
		}
		return nil
	}
	s, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	fmt.Printf("a.connect=%s\n", errName(unix.Connect(s, sockaddr(good))))
	var unspec [16]byte // AF_UNSPEC
	fmt.Printf("a.unspec=%s\n", errName(rawConnect(s, unsafe.Pointer(&unspec[0]), 16)))
	fmt.Printf("a.again=%s\n", errName(unix.Connect(s, sockaddr(bad))))
	fmt.Printf("a.bind=%s\n", errName(unix.Bind(s, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})))
	fmt.Printf("a.listen=%s\n", errName(unix.Listen(s, 1)))
	unix.Close(s)

	t, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	fmt.Printf("b.connect=%s\n", errName(unix.Connect(t, sockaddr(hang))))
	fmt.Printf("b.again=%s\n", errName(unix.Connect(t, sockaddr(hang))))
	fmt.Printf("b.elsewhere=%s\n", errName(unix.Connect(t, sockaddr(bad))))
	unix.Close(t)

	u, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	fmt.Printf("c.fastopen=%s\n", errName(unix.Sendto(u, []byte("x"), unix.MSG_FASTOPEN, sockaddr(bad))))
	unix.Close(u)
	routingOptions("c.")

	v, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	unix.SetsockoptTimeval(v, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &unix.Timeval{Usec: 300000})
	fmt.Printf("d.connect=%s\n", errName(unix.Connect(v, sockaddr(hang))))
	_, err := unix.Getpeername(v)
	fmt.Printf("d.peer=%s\n", errName(err))
	pfd := []unix.PollFd{{Fd: int32(v), Events: unix.POLLOUT}}
	k, err := unix.Poll(pfd, 100)
	for err == unix.EINTR { // Go's runtime signals its threads
		k, err = unix.Poll(pfd, 100)
	}
	fmt.Printf("d.poll=%d\n", k)
	unix.Close(v)

	w, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	var big [128]byte
	ap := netip.MustParseAddrPort(good)
	big[0] = unix.AF_INET
	big[2], big[3] = byte(ap.Port()>>8), byte(ap.Port())
	a4 := ap.Addr().As4()
	copy(big[4:8], a4[:])
	fmt.Printf("e.len128=%s\n", errName(rawConnect(w, unsafe.Pointer(&big[0]), 128)))
	unix.Close(w)

	x, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	fmt.Printf("f.any=%s\n", errName(unix.Connect(x, &unix.SockaddrInet4{Port: int(ap.Port())})))
	unix.Close(x)

	// An fd above the program's RLIMIT_NOFILE: the Broker cannot install
	// its socket there, and says so.
	y, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	high, _ := unix.FcntlInt(uintptr(y), unix.F_DUPFD_CLOEXEC, 200)
	unix.Close(y)
	unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 100, Max: 100})
	fmt.Printf("g.rlimit=%s\n", errName(unix.Connect(high, sockaddr(good))))
}

// probeUnixDgram connects a datagram socket to PATH, which a Unix rule
// names.
func probeUnixDgram() {
	fd, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	fmt.Printf("connect=%s\n", errName(unix.Connect(fd, &unix.SockaddrUnix{Name: os.Getenv("PATH_OK")})))
}

// probeEyeballs connects, from two threads at once, to HANG (which does
// not answer) and then to GOOD, as happy-eyeballs clients do with an
// address family that does not answer, and reports how long GOOD took.
func probeEyeballs() {
	go func() {
		runtime.LockOSThread()
		fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		unix.Connect(fd, sockaddr(os.Getenv("HANG"))) // blocks
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	err := unix.Connect(fd, sockaddr(os.Getenv("GOOD")))
	fmt.Printf("good=%s\n", errName(err))
	fmt.Printf("good.fast=%v\n", time.Since(start) < time.Second)
}

// probeUnixHost connects to each Unix socket of TARGETS ("@name" for an
// abstract one) and reports the name of the server that greeted it, or
// the errno; and, with TCP, connects there and reports the greeting.
func probeUnixHost() {
	for _, p := range strings.Split(os.Getenv("TARGETS"), ",") {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			fmt.Printf("socket=%s\n", errName(err))
			return
		}
		name := p
		if p[0] == '@' {
			name = "\x00" + p[1:]
		}
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: name}); err != nil {
			fmt.Printf("connect.%s=%s\n", p, errName(err))
			unix.Close(fd)
			continue
		}
		b := make([]byte, 64)
		n, _ := unix.Read(fd, b)
		fmt.Printf("connect.%s=%s\n", p, strings.TrimPrefix(strings.TrimSpace(string(b[:max(n, 0)])), "hello from "))
		unix.Close(fd)
	}
	if a := os.Getenv("TCP"); a != "" {
		c, err := net.Dial("tcp", a)
		if err != nil {
			fmt.Printf("tcp=%v\n", err)
			return
		}
		b := make([]byte, 64)
		n, _ := c.Read(b)
		fmt.Printf("tcp=%s\n", strings.TrimSpace(string(b[:n])))
		c.Close()
	}
}

// probeUnixDgramHost makes Unix sockets of each type with socket(2) and
// socketpair(2), reporting each, and sends a datagram to TARGET from every
// datagram socket it got.
func probeUnixDgramHost() {
	to := &unix.SockaddrUnix{Name: os.Getenv("TARGET")}
	for _, ty := range []struct {
		name string
		typ  int
	}{{"stream", unix.SOCK_STREAM}, {"seqpacket", unix.SOCK_SEQPACKET}, {"dgram", unix.SOCK_DGRAM}, {"raw", unix.SOCK_RAW}} {
		fd, err := unix.Socket(unix.AF_UNIX, ty.typ|unix.SOCK_CLOEXEC, 0)
		fmt.Printf("socket.%s=%s\n", ty.name, errName(err))
		if err == nil {
			if ty.typ != unix.SOCK_STREAM && ty.typ != unix.SOCK_SEQPACKET {
				fmt.Printf("sendto.%s=%s\n", ty.name, errName(unix.Sendto(fd, []byte("hello"), 0, to)))
			}
			unix.Close(fd)
		}
		if ty.typ == unix.SOCK_RAW {
			continue
		}
		fds, err := unix.Socketpair(unix.AF_UNIX, ty.typ|unix.SOCK_CLOEXEC, 0)
		fmt.Printf("socketpair.%s=%s\n", ty.name, errName(err))
		if err == nil {
			if ty.typ == unix.SOCK_DGRAM {
				fmt.Printf("sendto.pair=%s\n", errName(unix.Sendto(fds[0], []byte("hello"), 0, to)))
			}
			unix.Close(fds[0])
			unix.Close(fds[1])
		}
	}
}

// probeUnixRace connects N times to the Unix socket GOOD while a second
// thread rewrites the name, in the same buffer, to BAD and back, and
// reports which server greeted each connect.
func probeUnixRace() {
	n, _ := strconv.Atoi(os.Getenv("N"))
	sa := func(p string) (r unix.RawSockaddrUnix) {
		r.Family = unix.AF_UNIX
		for i := range len(p) {
			r.Path[i] = int8(p[i])
		}
		return r
	}
	g, b := sa(os.Getenv("GOOD")), sa(os.Getenv("BAD"))
	buf := new(unix.RawSockaddrUnix)
	*buf = g
	connectRacing(n, unix.AF_UNIX, unsafe.Pointer(buf), unix.SizeofSockaddrUnix, func() {
		*buf = b
		*buf = g
	})
}

// probeSwap makes an installed socket whose connect to CLOSED fails, then
// connects a socket of the sandbox's to BAD (the sandbox's loopback) N
// times while a second thread swaps the installed socket in and out at
// its fd number.
func probeSwap() {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		fmt.Printf("socket=%s\n", errName(err))
		return
	}
	if err := unix.Connect(s, sockaddr(os.Getenv("CLOSED"))); err != unix.EINPROGRESS {
		fmt.Printf("installed=%s\n", errName(err))
		return
	}
	pfd := []unix.PollFd{{Fd: int32(s), Events: unix.POLLOUT}}
	for _, err := unix.Poll(pfd, 5000); err == unix.EINTR; _, err = unix.Poll(pfd, 5000) {
	}
	soerr, _ := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_ERROR)
	fmt.Printf("installed=%s\n", errName(unix.Errno(soerr)))
	unix.SetNonblock(s, false)
	// What the number holds between the installed socket's turns: the
	// sandbox's own socket, a file that is not a socket (OWN=null: an
	// eventfd), or
	// nothing (OWN=closed).
	var own int
	switch os.Getenv("OWN") {
	case "null", "closed":
		own, err = unix.Eventfd(0, unix.EFD_CLOEXEC)
	default:
		own, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	}
	if err != nil {
		fmt.Printf("own=%s\n", errName(err))
		return
	}
	closed := os.Getenv("OWN") == "closed"
	x, _ := unix.Dup(own)
	n, _ := strconv.Atoi(os.Getenv("N"))
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		for !stop.Load() {
			unix.Dup3(s, x, unix.O_CLOEXEC)
			if closed {
				unix.Close(x)
			} else {
				unix.Dup3(own, x, unix.O_CLOEXEC)
			}
		}
		close(done)
	}()
	bad := sockaddr(os.Getenv("BAD"))
	counts := map[string]int{}
	for range n {
		counts[errName(unix.Connect(x, bad))]++
	}
	stop.Store(true)
	<-done
	for k, v := range counts {
		fmt.Printf("connect.%s=%d\n", k, v)
	}
}

// routingOptions tries the socket options that would route a socket's
// packets elsewhere than its peer (refused), and one that does not.
func routingOptions(prefix string) {
	s6, _ := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	// A segment routing header (type 4) with one segment, ::1.
	srh := make([]byte, 24)
	srh[1], srh[2], srh[3], srh[4] = 2, 4, 0, 0
	srh[23] = 1
	fmt.Printf("%srthdr=%s\n", prefix, errName(unix.SetsockoptString(s6, unix.IPPROTO_IPV6, unix.IPV6_RTHDR, string(srh))))
	fmt.Printf("%s2292rthdr=%s\n", prefix, errName(unix.SetsockoptString(s6, unix.IPPROTO_IPV6, unix.IPV6_2292RTHDR, string(srh))))
	fmt.Printf("%sv6only=%s\n", prefix, errName(unix.SetsockoptInt(s6, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)))
	unix.Close(s6)
	s4, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	// A loose source route through 127.0.0.2 (IPOPT_LSRR).
	lsrr := []byte{1, 131, 7, 4, 127, 0, 0, 2}
	fmt.Printf("%sipoptions=%s\n", prefix, errName(unix.SetsockoptString(s4, unix.IPPROTO_IP, unix.IP_OPTIONS, string(lsrr))))
	fmt.Printf("%sipoptionsclear=%s\n", prefix, errName(unix.SetsockoptString(s4, unix.IPPROTO_IP, unix.IP_OPTIONS, "")))
	fmt.Printf("%snodelay=%s\n", prefix, errName(unix.SetsockoptInt(s4, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)))
	unix.Close(s4)
}

// probeHostRules is TestHostRules' program.
func probeHostRules() {
	routingOptions("")
	port := os.Getenv("PORT")
	greet := func(key, addr string) {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			fmt.Printf("%s=%s\n", key, errName(err))
			return
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Printf("%s=%s\n", key, strings.TrimSpace(line))
		c.Close()
	}
	greet("good", os.Getenv("GOOD"))
	greet("bad", os.Getenv("BAD"))
	tcp := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", "192.0.2.53:53")
	}}
	for _, name := range []string{"a.test", "other.test"} {
		for _, r := range []struct {
			key string
			r   *net.Resolver
		}{{"udp", net.DefaultResolver}, {"tcp", tcp}} {
			addrs, err := r.r.LookupHost(context.Background(), name)
			if err != nil {
				fmt.Printf("%s.%s=error\n", r.key, name)
				continue
			}
			fmt.Printf("%s.%s=%s\n", r.key, name, strings.Join(addrs, " "))
		}
	}
	greet("dial.a.test", net.JoinHostPort("a.test", port))
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{192, 0, 2, 1}, Port: 123})
		unix.Close(fd)
	}
	fmt.Printf("udp.elsewhere=%s\n", errName(err))
	fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
		unix.Close(fd)
	}
	fmt.Printf("bind=%s\n", errName(err))
	// More datagram sockets over time than the Broker holds stand-ins at
	// once: closed ones are given back.
	res := "ok"
	for i := range 3000 {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			res = fmt.Sprintf("%d: %s", i, errName(err))
			break
		}
		unix.Close(fd)
	}
	fmt.Printf("sockets=%s\n", res)
	for _, p := range strings.Split(os.Getenv("UNIX"), ",") {
		c, err := net.DialTimeout("unix", p, 10*time.Second)
		if err != nil {
			fmt.Printf("unix.%s=%s\n", p, errName(err))
			continue
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Printf("unix.%s=%s\n", p, strings.TrimPrefix(strings.TrimSpace(line), "hello from "))
		c.Close()
	}
}

// connectRacing connects n sockets of domain, one after the other, to
// the address at addr (size bytes), while flip, called in a loop on a
// thread of its own, rewrites it; and prints how many reached the server
// greeting "from A" (a=N), then the counts of the others by greeting
// ("b", "other") or errno.
func connectRacing(n, domain int, addr unsafe.Pointer, size uintptr, flip func()) {
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		for !stop.Load() {
			flip()
		}
		close(done)
	}()
	counts := map[string]int{}
	for range n {
		fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			break
		}
		_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(addr), size)
		if e != 0 {
			counts[unix.ErrnoName(e)]++
			unix.Close(fd)
			continue
		}
		rb := make([]byte, 64)
		k, _ := unix.Read(fd, rb)
		switch s := string(rb[:max(k, 0)]); {
		case strings.Contains(s, "from A"):
			counts["a"]++
		case strings.Contains(s, "from B"):
			counts["b"]++
		default:
			counts["other"]++
		}
		unix.Close(fd)
	}
	stop.Store(true)
	<-done
	fmt.Printf("a=%d\n", counts["a"])
	for k, v := range counts {
		if k != "a" {
			fmt.Printf("%s=%d\n", k, v)
		}
	}
}
