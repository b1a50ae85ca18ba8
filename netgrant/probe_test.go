package netgrant_test

// The probes: what the test binary does inside a sandbox (TestMain runs
// the one CAPLIN's envProbe names), printing key=value lines.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

var probes = map[string]func(){
	"tcp":    probeTCP,
	"gonet":  probeGoNet,
	"loop":   probeLoop,
	"toctou": probeTOCTOU,
}

func errName(err error) string {
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
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		for !stop.Load() {
			*(*[16]byte)(unsafe.Pointer(buf)) = *(*[16]byte)(unsafe.Pointer(&b))
			*(*[16]byte)(unsafe.Pointer(buf)) = *(*[16]byte)(unsafe.Pointer(&g))
		}
		close(done)
	}()
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			break
		}
		_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(buf)), unix.SizeofSockaddrInet4)
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
		fmt.Printf("count.%s=%d\n", k, v)
	}
}
