// Command netbench is bench/netgrant.sh's load: servers on the host's
// loopback, and clients that time connects, a bulk transfer and HTTP
// requests on new connections, directly, through caplin's network grants
// (run inside caplin run --connect), or through an HTTP CONNECT proxy
// that filters as the grants do.
//
//	netbench serve                 servers; prints "connect=P sink=P http=P proxy=P"
//	netbench connect N ADDR        N blocking connects; prints the median µs
//	netbench send ADDR MIB         MIB MiB to a sink; prints MiB/s
//	netbench http N URL [PROXY]    N GETs, each on a new connection (through
//	                               PROXY's CONNECT if given); prints the median µs
//	netbench selfconnect N         N blocking connects to a listener of its own
//	                               on loopback; prints the median µs
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "serve":
		serve()
	case "connect":
		n, addr := atoi(arg(2)), arg(3)
		fmt.Printf("connect_us=%.1f\n", median(n, func() { connectOnce(addr) }))
	case "selfconnect":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		check(err)
		go func() {
			for {
				c, err := ln.Accept()
				check(err)
				c.Close()
			}
		}()
		fmt.Printf("connect_us=%.1f\n", median(atoi(arg(2)), func() { connectOnce(ln.Addr().String()) }))
	case "send":
		send(arg(2), atoi(arg(3)))
	case "http":
		proxy := ""
		if len(os.Args) > 4 {
			proxy = os.Args[4]
		}
		httpGets(atoi(arg(2)), arg(3), proxy)
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: netbench serve | connect N ADDR | selfconnect N | send ADDR MIB | http N URL [PROXY]")
	os.Exit(2)
}

func arg(i int) string {
	if i >= len(os.Args) {
		usage()
	}
	return os.Args[i]
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		usage()
	}
	return n
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "netbench:", err)
		os.Exit(1)
	}
}

// median runs f n times (after 10 untimed) and returns the median time
// of one run in µs.
func median(n int, f func()) float64 {
	for i := 0; i < 10; i++ {
		f()
	}
	ts := make([]float64, n)
	for i := range ts {
		s := time.Now()
		f()
		ts[i] = float64(time.Since(s).Nanoseconds()) / 1e3
	}
	slices.Sort(ts)
	return ts[n/2]
}

// connectOnce makes one blocking connect, as C programs do, and closes
// the socket.
func connectOnce(addr string) {
	ap := netip.MustParseAddrPort(addr)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	check(err)
	check(unix.Connect(fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}))
	unix.Close(fd)
}

func send(addr string, mib int) {
	c, err := net.Dial("tcp", addr)
	check(err)
	buf := make([]byte, 256<<10)
	s := time.Now()
	for i := 0; i < mib*4; i++ {
		_, err := c.Write(buf)
		check(err)
	}
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c) // the sink closes once it has read everything
	fmt.Printf("mib_s=%.0f\n", float64(mib)/time.Since(s).Seconds())
}

func httpGets(n int, url, proxy string) {
	d := &net.Dialer{}
	dial := d.DialContext
	if proxy != "" {
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, "tcp", proxy)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", addr, addr)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				c.Close()
				return nil, err
			}
			if resp.StatusCode != 200 {
				c.Close()
				return nil, fmt.Errorf("proxy: %s", resp.Status)
			}
			return c, nil
		}
	}
	client := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	fmt.Printf("http_us=%.1f\n", median(n, func() {
		resp, err := client.Get(url)
		check(err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}))
}

// serve runs the servers until killed.
func serve() {
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		check(err)
		return ln
	}
	port := func(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }
	conn, sink, web, proxy := listen(), listen(), listen(), listen()
	go func() { // accept and close
		for {
			c, err := conn.Accept()
			check(err)
			c.Close()
		}
	}()
	go func() { // read everything, then close
		for {
			c, err := sink.Accept()
			check(err)
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	go http.Serve(web, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("hello\n"))
	}))
	allowed := web.Addr().String()
	go func() { // CONNECT to the web server only
		for {
			c, err := proxy.Accept()
			check(err)
			go tunnel(c, allowed)
		}
	}()
	fmt.Printf("connect=%d sink=%d http=%d proxy=%d\n", port(conn), port(sink), port(web), port(proxy))
	select {}
}

// tunnel serves one proxy client: a CONNECT to allowed is tunnelled, any
// other request refused.
func tunnel(c net.Conn, allowed string) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if req.Method != http.MethodConnect || req.Host != allowed {
		io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
		return
	}
	t, err := net.Dial("tcp", req.Host)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer t.Close()
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{})
	go func() { io.Copy(t, br); t.(*net.TCPConn).CloseWrite(); close(done) }()
	io.Copy(c, t)
	<-done
}
