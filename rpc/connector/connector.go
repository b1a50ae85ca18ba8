// Package connector serves the Connector, an rpc object that makes
// connections on its holder's behalf to the destinations its Policy
// allows, and calls one (Client).
//
// It is a package of its own, above rpc and dir, so that package rpc,
// the protocol, does not link dir.
package connector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/rpc"
	"golang.org/x/sys/unix"
)

// The Connector service makes connections on its holder's behalf, to the
// destinations its policy allows, and returns a socket joined to the
// connection: a sandbox with no network of its own gets exactly the
// connections it is granted (fconnectat, in capability terms). Its one method:
//
//	connect  ConnectArgs -> FD   a socket joined to the connection
//
// The holder does not get the server's socket itself: a connected socket
// can be disconnected (connect with AF_UNSPEC) and connected again
// anywhere, and a datagram socket can send anywhere, so the holder would
// get the server's whole network. It gets instead one end of a Unix
// stream socket pair whose bytes a forwarder moves to and from the
// connection with splice(2), in the kernel (rpc.RevocableStream): exactly
// that connection, nothing else. UDP is not offered, for the same reason.
//
// A connection costs the server about eight descriptors (the connection,
// the pair's end, the forwarder's pipes) for as long as it is open, and
// Policy.MaxConns bounds how many one object has open at once (and
// Policy.Limit how many several have together). By default
// a connection is its holder's once made: it outlives the Connector
// object, and the object's revocation; with Policy.EndWithObject the
// object's end cuts them all.

// ConnectArgs are the arguments of a Connector's connect.
type ConnectArgs struct {
	// Network is "tcp", "tcp4", "tcp6" or "unix" (a SOCK_STREAM Unix
	// socket).
	Network string
	// Address is "host:port" for TCP (host a name or an IP
	// address), or a path relative to the Connector's directory for
	// Unix sockets.
	Address string
}

// Policy says where a Connector may connect.
type Policy struct {
	// Allow lists the destinations allowed, each "HOST:PORT" or
	// "unix:PATH":
	//
	//   - HOST is a name ("example.com", matched exactly, case aside),
	//     a wildcard ("*.example.com": any name below it, not the name
	//     itself), an IP address, a CIDR prefix ("10.0.0.0/8",
	//     "[fd00::]/8" — brackets optional), or "*" (any host);
	//   - PORT is a number, a range ("8000-8999") or "*";
	//   - PATH is a Unix socket's path relative to Dir, or a directory
	//     ending in "/" for every socket below it.
	//
	// A name is matched as the caller gave it, before resolution; the
	// server then resolves it and connects to what it resolves to. An IP
	// pattern matches callers that give an IP address. Nothing else is
	// allowed; an empty Allow allows nothing.
	Allow []string
	// Dir is the directory Unix socket paths are resolved in, confined
	// to it; nil allows no Unix socket.
	Dir *dir.Dir
	// Dialer makes TCP connections; nil means a zero net.Dialer.
	Dialer *net.Dialer
	// MaxConns bounds the connections the object has open at once: made,
	// and not yet ended by both sides or cut. Past it, connect fails
	// (rpc.CodeFailed, EAGAIN) until one ends. 0 means 256.
	MaxConns int
	// Limit, if not nil, bounds the connections of every Connector whose
	// Policy shares it, together: a server that makes a Connector for each
	// client connection shares one, since a client could otherwise get
	// MaxConns more by connecting again. Past it, connect fails as past
	// MaxConns.
	Limit *Limit
	// EndWithObject cuts every connection the object made when the object
	// ends (its holder closes it, it is revoked, its server shuts down),
	// as rpc.RevocableStream's revoke does: the holders' writes fail and
	// their reads see EOF. Without it a connection outlives the object.
	EndWithObject bool
}

type netRule struct {
	name     string       // exact name, lower case; or
	suffix   string       // ".example.com" for "*.example.com"; or
	prefix   netip.Prefix // an address or range; or
	anyHost  bool
	lo, hi   uint16
	unixPath string // for unix: rules
	unixDir  bool   // unixPath is a directory prefix
	unix     bool
}

// parseRule parses one Allow entry.
func parseRule(s string) (netRule, error) {
	if p, ok := strings.CutPrefix(s, "unix:"); ok {
		if p == "" || strings.HasPrefix(p, "/") {
			return netRule{}, fmt.Errorf("connector: %q: a Unix path relative to the directory is required", s)
		}
		return netRule{unix: true, unixPath: strings.TrimSuffix(p, "/"), unixDir: strings.HasSuffix(p, "/")}, nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netRule{}, fmt.Errorf("connector: %q: want HOST:PORT or unix:PATH", s)
	}
	host, port := s[:i], s[i+1:]
	var r netRule
	switch {
	case port == "*":
		r.lo, r.hi = 0, 65535
	case strings.Contains(port, "-"):
		a, b, _ := strings.Cut(port, "-")
		lo, err1 := strconv.ParseUint(a, 10, 16)
		hi, err2 := strconv.ParseUint(b, 10, 16)
		if err1 != nil || err2 != nil || lo > hi {
			return netRule{}, fmt.Errorf("connector: %q: bad port range %q", s, port)
		}
		r.lo, r.hi = uint16(lo), uint16(hi)
	default:
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return netRule{}, fmt.Errorf("connector: %q: bad port %q", s, port)
		}
		r.lo, r.hi = uint16(p), uint16(p)
	}
	host = strings.NewReplacer("[", "", "]", "").Replace(host)
	switch {
	case host == "*":
		r.anyHost = true
	case strings.HasPrefix(host, "*."):
		// A trailing dot (a fully qualified name) is dropped, as it is
		// from the names matched; a domain with an empty label would
		// match nothing.
		domain := strings.TrimSuffix(host[2:], ".")
		if badName(domain) {
			return netRule{}, fmt.Errorf("connector: %q: bad domain %q", s, host)
		}
		r.suffix = "." + strings.ToLower(domain)
	case strings.Contains(host, "/"):
		p, err := netip.ParsePrefix(host)
		if err != nil {
			return netRule{}, fmt.Errorf("connector: %q: %w", s, err)
		}
		r.prefix = p.Masked()
	default:
		if a, err := netip.ParseAddr(host); err == nil {
			r.prefix = netip.PrefixFrom(a, a.BitLen())
		} else if name := strings.TrimSuffix(host, "."); badName(name) {
			return netRule{}, fmt.Errorf("connector: %q: bad host %q", s, host)
		} else {
			r.name = strings.ToLower(name)
		}
	}
	return r, nil
}

// badName reports whether name (without its trailing dot) cannot be a
// host name a rule matches: empty, with an empty label, with a "*", ":"
// or "/", or an IP address (which callers' addresses are never matched
// against as a name).
func badName(name string) bool {
	if name == "" || strings.Contains("."+name+".", "..") || strings.ContainsAny(name, "*:/") {
		return true
	}
	_, err := netip.ParseAddr(name)
	return err == nil
}

// New returns an rpc.Handler that serves a Connector with policy p, or an
// error naming the first Allow entry it cannot parse. It takes ownership
// of p.Dir, which is closed when the object ends.
func New(p Policy) (rpc.Handler, error) {
	c := &handler{dir: p.Dir, dialer: p.Dialer, maxConns: p.MaxConns, limit: p.Limit}
	if c.dialer == nil {
		c.dialer = &net.Dialer{}
	}
	if c.maxConns <= 0 {
		c.maxConns = defaultMaxConns
	}
	c.streams = context.Background()
	if p.EndWithObject {
		c.streams, c.cut = context.WithCancel(context.Background())
	}
	for _, s := range p.Allow {
		r, err := parseRule(s)
		if err != nil {
			return nil, err
		}
		c.rules = append(c.rules, r)
	}
	return c, nil
}

// A Limit bounds the connections open through the Connectors that share
// it (Policy.Limit). It is safe for concurrent use.
type Limit struct {
	mu   sync.Mutex
	max  int
	open int
}

// NewLimit returns a Limit of max connections open at once (max < 1
// allows none).
func NewLimit(max int) *Limit { return &Limit{max: max} }

func (l *Limit) take() bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open >= l.max {
		return false
	}
	l.open++
	return true
}

func (l *Limit) put() {
	if l != nil {
		l.mu.Lock()
		l.open--
		l.mu.Unlock()
	}
}

// defaultMaxConns is Policy.MaxConns's default: 256 connections, about
// 2,048 of the server's descriptors.
const defaultMaxConns = 256

// handler serves one Connector object.
type handler struct {
	rules    []netRule
	dir      *dir.Dir
	dialer   *net.Dialer
	maxConns int
	limit    *Limit
	// streams bounds the forwarders' lives: the object's with
	// EndWithObject (cut cancels it), else Background.
	streams context.Context
	cut     context.CancelFunc

	mu   sync.Mutex
	open int // connections open or being made
}

// Close closes the directory of Unix sockets and, with EndWithObject,
// cuts the object's connections.
func (c *handler) Close() error {
	if c.cut != nil {
		c.cut()
	}
	if c.dir != nil {
		return c.dir.Close()
	}
	return nil
}

func (c *handler) allowedNet(host string, port uint16) bool {
	addr, aerr := netip.ParseAddr(host)
	// An IPv4-mapped IPv6 address reaches the IPv4 address: it is that
	// address, and only IPv4 rules may allow it (else "[::]/0" would
	// allow 127.0.0.1 as ::ffff:127.0.0.1).
	addr = addr.Unmap()
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	for _, r := range c.rules {
		if r.unix || port < r.lo || port > r.hi {
			continue
		}
		switch {
		case r.anyHost:
			return true
		case aerr == nil && r.prefix.IsValid():
			if r.prefix.Contains(addr) {
				return true
			}
		case aerr != nil && r.name != "":
			if name == r.name {
				return true
			}
		case aerr != nil && r.suffix != "":
			if strings.HasSuffix(name, r.suffix) {
				return true
			}
		}
	}
	return false
}

// unixRule returns the directory a Unix socket path is to be opened in,
// as a path relative to the connector's directory, and the rest of the
// path, per the first rule that allows it; ok is false if none does.
// Opening the rest confined to that directory means neither ".." nor a
// symbolic link can take the lookup outside what the rule allows.
func (c *handler) unixRule(p string) (base, rest string, exact, ok bool) {
	for _, r := range c.rules {
		switch {
		case !r.unix:
		case !r.unixDir && p == r.unixPath:
			base, rest := path.Split(p)
			if base == "" {
				base = "."
			}
			return base, rest, true, true
		case r.unixDir && strings.HasPrefix(p, r.unixPath+"/"):
			return r.unixPath, p[len(r.unixPath)+1:], false, true
		}
	}
	return "", "", false, false
}

func (c *handler) ServeCall(ctx context.Context, call *rpc.Call) (any, error) {
	if call.Method != "connect" {
		return nil, rpc.Errorf(rpc.CodeUnknownMethod, "unknown method %q", call.Method)
	}
	var a ConnectArgs
	if err := call.Args(&a); err != nil {
		return nil, err
	}
	if err := c.reserve(); err != "" {
		return nil, &rpc.Error{Code: rpc.CodeFailed, Errno: syscall.EAGAIN, Text: fmt.Sprintf("connect %s %s: %s", a.Network, a.Address, err)}
	}
	res, err := c.connect(ctx, a)
	if err != nil {
		c.release()
	}
	return res, err
}

// reserve counts one more connection if there is room for it, and else
// says why not.
func (c *handler) reserve() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open >= c.maxConns {
		return fmt.Sprintf("the connector has %d connections open, its most; close one", c.maxConns)
	}
	if !c.limit.take() {
		return fmt.Sprintf("the server has %d connections open, its most; close one", c.limit.max)
	}
	c.open++
	return ""
}

func (c *handler) release() {
	c.mu.Lock()
	c.open--
	c.mu.Unlock()
	c.limit.put()
}

// connect makes the connection a asks for, counted by the caller.
func (c *handler) connect(ctx context.Context, a ConnectArgs) (any, error) {
	switch a.Network {
	case "unix":
		return c.connectUnix(ctx, a.Address)
	case "tcp", "tcp4", "tcp6":
	case "udp", "udp4", "udp6":
		return nil, rpc.Errorf(rpc.CodeInvalid, "connect: network %q is not offered: a datagram socket can send to any address, whatever it was connected to", a.Network)
	default:
		return nil, rpc.Errorf(rpc.CodeInvalid, "connect: network %q (want tcp, tcp4, tcp6 or unix)", a.Network)
	}
	host, portStr, err := net.SplitHostPort(a.Address)
	if err != nil {
		return nil, rpc.Errorf(rpc.CodeInvalid, "connect %s: %v", a.Address, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, rpc.Errorf(rpc.CodeInvalid, "connect %s: port %q is not a number", a.Address, portStr)
	}
	if !c.allowedNet(host, uint16(port)) {
		return nil, &rpc.Error{Code: rpc.CodeDenied, Errno: syscall.EACCES, Text: fmt.Sprintf("connect %s %s: not allowed by the connector's policy", a.Network, a.Address)}
	}
	conn, err := c.dialer.DialContext(ctx, a.Network, a.Address)
	if err != nil {
		return nil, err
	}
	return c.connFD(conn)
}

// connFD returns, as an FD, the holder's end of a forwarder to conn (see
// the comment on the Connector service above: the connection itself is not
// handed out), and closes conn. The end is in blocking mode, as most
// programs expect of their descriptors. The connection counted for it is
// uncounted when the forwarder has ended.
func (c *handler) connFD(conn net.Conn) (any, error) {
	defer conn.Close()
	fc, ok := conn.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, fmt.Errorf("connect: %T has no descriptor", conn)
	}
	f, err := fc.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The forwarder keeps the connection's non-blocking mode to itself
	// and hands out an end as blocking as f.
	if err := unix.SetNonblock(int(f.Fd()), false); err != nil {
		return nil, &os.SyscallError{Syscall: "fcntl O_NONBLOCK", Err: err}
	}
	end, _, done, err := rpc.RevocableStreamDone(c.streams, f)
	if err != nil {
		return nil, err
	}
	go func() {
		<-done
		c.release()
	}()
	return rpc.FD{File: end}, nil
}

func (c *handler) connectUnix(ctx context.Context, p string) (any, error) {
	if path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") || strings.HasPrefix(p, "/") {
		return nil, rpc.Errorf(rpc.CodeInvalid, "connect unix %s: want a clean relative path (no \"..\", no \"//\")", p)
	}
	base, rest, exact, ok := c.unixRule(p)
	if c.dir == nil || !ok {
		return nil, &rpc.Error{Code: rpc.CodeDenied, Errno: syscall.EACCES, Text: fmt.Sprintf("connect unix %s: not allowed by the connector's policy", p)}
	}
	// Find the socket confined to the directory the rule allows, then
	// connect to that very inode through its O_PATH descriptor: no path
	// is looked up again outside the confinement.
	sub, err := c.dir.Sub(base, c.dir.Rights())
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	flags := unix.O_PATH
	if exact {
		// A rule for one socket allows that socket, not whatever a
		// link in its place names (even in the same directory).
		flags |= unix.O_NOFOLLOW
	}
	f, err := sub.OpenFile(rest, flags, 0)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			pe.Path = p
		}
		return nil, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, &os.PathError{Op: "connect", Path: p, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, &os.PathError{Op: "connect", Path: p, Err: syscall.ENOTSOCK}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			return nil, &os.PathError{Op: "connect", Path: p, Err: oe.Err}
		}
		return nil, err
	}
	return c.connFD(conn)
}

// A Client is a typed client for a Connector object.
type Client struct {
	// Client is the object. Close it to drop the capability.
	*rpc.Client
}

// Connect asks the Connector for a connection to address on network and
// returns one end of a Unix stream socket pair that the Connector forwards
// to and from the connection (not the connection's own socket: its peer
// address and credentials are the server's).
func (c Client) Connect(ctx context.Context, network, address string) (*os.File, error) {
	var fd rpc.FD
	if err := c.Call(ctx, "connect", ConnectArgs{Network: network, Address: address}, &fd); err != nil {
		return nil, err
	}
	if fd.File == nil {
		return nil, rpc.Errorf(rpc.CodeBadMessage, "connect %s: the reply carried no descriptor", address)
	}
	return fd.File, nil
}
