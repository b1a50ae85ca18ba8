package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/rpc/connector"
	"github.com/caplin-dev/caplin/rpc/directory"
	"github.com/caplin-dev/caplin/rpc/launcher"
	"github.com/caplin-dev/caplin/sandbox"
	"golang.org/x/sys/unix"
)

const serveHelp = `usage: caplin serve dir PATH [--socket S] [--read-only | --rights R] [-v]
       caplin serve connector --allow PATTERN... [--unix-dir D] [--max-conns N]
                              [--cut-on-close] [--socket S] [-v]
       caplin serve launcher --profile FILE [--max N] [--socket S] [-v] [-- PROGRAM [ARGS...]]

Serve a capability on a Unix socket (SOCK_SEQPACKET). Each connection to
the socket gets its own object; "caplin call" and the rpc package call it.

Services:

	dir PATH   a Directory: open, stat, readdir, mkdir, remove, rename,
	           rights, sub (a narrower Directory) and export (a detached
	           mount of a subtree, a directory descriptor that ".."
	           cannot leave) relative to PATH, which no path can climb
	           out of; and the file-system methods a served mount of
	           it needs (getattr, getdents, unlink, chown, utimens,
	           xattrs, ...: docs/rpc.md).
	connector  connect: makes a connection on the caller's behalf to a
	           destination --allow permits and returns a socket
	           forwarded to it, so a sandbox without a network gets
	           exactly the connections it is granted.
	launcher   launch: builds a sandboxed process from the profile (the
	           TOML of caplin run --profile) and returns its pidfd and
	           its standard streams; report: a confinement report of a
	           process it built (what it holds, and anything beyond the
	           profile); wait: how it ended. Processes are the object's:
	           when the connection that launched them ends, they are
	           killed.

Flags:

	--socket S     listen on the socket file S (made 0600: only this user
	               can connect; the file's permissions are the one check
	               on who gets the capability). A stale socket file left by
	               a server that is gone is replaced.
	--read-only    grant only reading (the same as --rights ro)
	--rights R     the rights granted, as "read|write|create|delete|exec|
	               setattr", or ro, rw, all (default all)
	-v             log every connection and failed call

Connector flags:

	--allow P      a destination allowed (repeat, or separate with
	               commas): HOST:PORT, where HOST is a name
	               (example.com), *.example.com, an IP address, a CIDR
	               prefix (10.0.0.0/8) or *, and PORT a number, a range
	               (8000-8999) or *; or unix:PATH, a Unix socket under
	               --unix-dir (unix:DIR/ for every socket below DIR).
	               Names match as the caller gives them, before the
	               server resolves them.
	--unix-dir D   the directory unix: paths are relative to, confined to
	               it (no "..", no symbolic link out)
	--max-conns N  connections the server keeps open at once, for all
	               its clients together (default 1024; each costs it about
	               eight descriptors), at most 256 of them for one client
	               connection; past either connect fails with EAGAIN
	--cut-on-close end a client's connections when its connection to
	               the server ends (by default they outlive it)

Launcher flags:

	--profile FILE  the sandbox profile every process is built from
	--max N         processes one connection may have running (default 16)
	-- PROGRAM ...  the program every process runs, with its first
	                arguments; launch's arguments are appended. Without
	                it, launch names the program.

Systemd socket activation: started with LISTEN_FDS=1 and LISTEN_PID set
to its pid, the server serves the SOCK_SEQPACKET listening socket on fd 3
and --socket must not be given.

The server runs until SIGTERM or SIGINT, then stops accepting, ends every
object (their holders' calls fail with "server shutting down"), waits up
to 5 seconds for calls in flight, removes the socket file it made and
exits 0. Exit status 1: the server failed; 2: usage error.
`

const serveSynopsis = "caplin serve dir PATH | connector --allow P... | launcher --profile FILE [--socket S]"

func cmdServe(args []string) int {
	if len(args) == 0 {
		usageError("caplin serve", serveSynopsis, "which service?")
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		fmt.Fprint(os.Stdout, serveHelp)
		return exitOK
	case "dir":
		return serveDir(args[1:])
	case "connector":
		return serveConnector(args[1:])
	case "launcher":
		return serveLauncher(args[1:])
	}
	msg := unknownWord("service", args[0])
	if !strings.HasPrefix(args[0], "-") {
		msg += " (services: dir, connector, launcher)"
	}
	usageError("caplin serve", serveSynopsis, msg)
	return exitUsage
}

func serveDir(args []string) int {
	const name = "caplin serve dir"
	fs := newFlags("serve dir")
	socket := fs.String("socket", "", "")
	readOnly := fs.Bool("read-only", false, "")
	rightsFlag := fs.String("rights", "", "")
	verbose := fs.Bool("v", false, "")
	// The path may come before the flags: caplin serve dir /srv --socket s.
	var path string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		path, args = args[0], args[1:]
	}
	if st := parse(fs, args, serveHelp, serveSynopsis); st >= 0 {
		return st
	}
	rest := fs.Args()
	if path == "" && len(rest) > 0 {
		path, rest = rest[0], rest[1:]
	}
	if path == "" || len(rest) != 0 {
		usageError(name, serveSynopsis, "want exactly one PATH")
		return exitUsage
	}
	rights := dir.All
	switch {
	case *readOnly && *rightsFlag != "":
		usageError(name, serveSynopsis, "--read-only and --rights together")
		return exitUsage
	case *readOnly:
		rights = dir.ReadOnly
	case *rightsFlag != "":
		r, err := dir.ParseRights(*rightsFlag)
		if err != nil {
			usageError(name, serveSynopsis, "--rights: "+err.Error())
			return exitUsage
		}
		rights = r
	}
	log := serverLogger(*verbose)
	d, err := dir.Open(path, rights)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	defer d.Close()
	newHandler := func(peer *unix.Ucred) rpc.Handler {
		sub, err := d.Sub(".", rights)
		if err != nil {
			// Only a closed d fails here; the object then fails its calls.
			return rpc.HandlerFunc(func(context.Context, *rpc.Call) (any, error) { return nil, err })
		}
		if peer != nil {
			log.Debug("connection", "pid", peer.Pid, "uid", peer.Uid)
		}
		return directory.New(sub)
	}
	return serveListener(name, *socket, log, newHandler, "dir", path, "rights", rights.String())
}

// stringsFlag is a flag that may be repeated; commas separate values too.
type stringsFlag []string

func (s *stringsFlag) String() string { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}

func serveConnector(args []string) int {
	const name = "caplin serve connector"
	fs := newFlags("serve connector")
	socket := fs.String("socket", "", "")
	unixDir := fs.String("unix-dir", "", "")
	maxConns := fs.Int("max-conns", 1024, "")
	cut := fs.Bool("cut-on-close", false, "")
	verbose := fs.Bool("v", false, "")
	var allow stringsFlag
	fs.Var(&allow, "allow", "")
	if st := parse(fs, args, serveHelp, serveSynopsis); st >= 0 {
		return st
	}
	if fs.NArg() != 0 {
		usageError(name, serveSynopsis, fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
		return exitUsage
	}
	if len(allow) == 0 {
		usageError(name, serveSynopsis, "no --allow: the connector would allow nothing")
		return exitUsage
	}
	if *maxConns < 1 {
		usageError(name, serveSynopsis, fmt.Sprintf("--max-conns %d: want at least 1", *maxConns))
		return exitUsage
	}
	// Check the policy once, up front, so that a typo is a usage error.
	if _, err := connector.New(connector.Policy{Allow: allow}); err != nil {
		usageError(name, serveSynopsis, err.Error())
		return exitUsage
	}
	var d *dir.Dir
	if *unixDir != "" {
		var err error
		if d, err = dir.Open(*unixDir); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			return 1
		}
		defer d.Close()
	}
	log := serverLogger(*verbose)
	limit := connector.NewLimit(*maxConns)
	newHandler := func(peer *unix.Ucred) rpc.Handler {
		// Each client connection gets at most 256 of the server's.
		p := connector.Policy{Allow: allow, MaxConns: min(*maxConns, 256), Limit: limit, EndWithObject: *cut}
		if d != nil {
			sub, err := d.Sub(".", d.Rights())
			if err != nil {
				return rpc.HandlerFunc(func(context.Context, *rpc.Call) (any, error) { return nil, err })
			}
			p.Dir = sub
		}
		h, err := connector.New(p)
		if err != nil { // checked above
			return rpc.HandlerFunc(func(context.Context, *rpc.Call) (any, error) { return nil, err })
		}
		if peer != nil {
			log.Debug("connection", "pid", peer.Pid, "uid", peer.Uid)
		}
		return h
	}
	return serveListener(name, *socket, log, newHandler, "connector", allow.String())
}

func serveLauncher(args []string) int {
	const name = "caplin serve launcher"
	var program []string
	for i, a := range args {
		if a == "--" {
			args, program = args[:i], args[i+1:]
			if len(program) == 0 {
				usageError(name, serveSynopsis, "nothing after --")
				return exitUsage
			}
			break
		}
	}
	fs := newFlags("serve launcher")
	socket := fs.String("socket", "", "")
	profile := fs.String("profile", "", "")
	maxRunning := fs.Int("max", 0, "")
	verbose := fs.Bool("v", false, "")
	if st := parse(fs, args, serveHelp, serveSynopsis); st >= 0 {
		return st
	}
	if fs.NArg() != 0 {
		usageError(name, serveSynopsis, fmt.Sprintf("unexpected argument %q (a fixed program goes after --)", fs.Arg(0)))
		return exitUsage
	}
	if *profile == "" {
		usageError(name, serveSynopsis, "--profile is required")
		return exitUsage
	}
	if *maxRunning < 0 {
		usageError(name, serveSynopsis, "--max must not be negative")
		return exitUsage
	}
	spec, err := sandbox.LoadProfile(*profile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	log := serverLogger(*verbose)
	opts := launcher.Options{Program: program, MaxRunning: *maxRunning, Logger: log}
	if _, err := launcher.New(spec, opts); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	newHandler := func(peer *unix.Ucred) rpc.Handler {
		h, err := launcher.New(spec, opts)
		if err != nil { // checked above
			return rpc.HandlerFunc(func(context.Context, *rpc.Call) (any, error) { return nil, err })
		}
		if peer != nil {
			log.Debug("connection", "pid", peer.Pid, "uid", peer.Uid)
		}
		return h
	}
	return serveListener(name, *socket, log, newHandler, "launcher", *profile, "program", strings.Join(program, " "))
}

// serverLogger returns the logger for a server: info and up, or debug with
// -v.
func serverLogger(verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// serveListener serves newHandler's objects on the socket from systemd or
// --socket until SIGTERM or SIGINT, and returns the exit status.
func serveListener(name, socket string, log *slog.Logger, newHandler func(*unix.Ucred) rpc.Handler, attrs ...any) int {
	ln, made, err := listen(socket)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		if errors.As(err, new(*usageErr)) {
			return exitUsage
		}
		return 1
	}
	defer made.remove()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := &rpc.Server{Logger: log}
	log.Info("serving", append(attrs, "socket", ln.Addr().String())...)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(context.Background(), ln, newHandler) }()
	select {
	case <-ctx.Done():
		log.Info("stopping", "reason", "signal")
	case err := <-errc:
		log.Error("serving failed", "err", err)
		return 1
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("calls still running after 5s; exiting anyway", "err", err)
	}
	<-errc
	log.Info("stopped")
	return exitOK
}

// A madeSocket is a socket file this process made, to remove at exit if
// the path still names it: another server may have replaced it since
// (taking it for a stale one), and its file is not ours to remove.
type madeSocket struct {
	path string
	fi   os.FileInfo // its device and inode, from right after listen
	// pin, an O_PATH descriptor of the file, keeps its inode from being
	// freed and its number given to another's file; nil in removeStale,
	// which removes at once.
	pin *os.File
}

// pinSocket records the socket file at path, as it is now.
func pinSocket(path string) (*madeSocket, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	pin := os.NewFile(uintptr(fd), path)
	fi, err := pin.Stat()
	if err != nil {
		pin.Close()
		return nil, err
	}
	return &madeSocket{path: path, fi: fi, pin: pin}, nil
}

// remove removes the socket file if its path still names the file made,
// and reports whether it did. A nil m has nothing to remove.
func (m *madeSocket) remove() bool {
	if m == nil {
		return false
	}
	if m.pin != nil {
		defer m.pin.Close()
	}
	fi, err := os.Lstat(m.path)
	if err != nil || !os.SameFile(fi, m.fi) {
		return false
	}
	return os.Remove(m.path) == nil
}

// listen returns the listening socket: systemd's (LISTEN_FDS) or a new
// one at path, with the socket file it made, to remove at exit (nil for
// systemd's).
func listen(path string) (*net.UnixListener, *madeSocket, error) {
	if n, ok := listenFDs(); ok {
		if path != "" {
			return nil, nil, usagef("--socket given, but systemd passed a socket (LISTEN_FDS)")
		}
		if n != 1 {
			return nil, nil, fmt.Errorf("systemd passed %d sockets (LISTEN_FDS); want 1", n)
		}
		f := os.NewFile(3, "LISTEN_FDS")
		typ, err := unix.GetsockoptInt(3, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil {
			return nil, nil, &os.SyscallError{Syscall: "getsockopt fd 3 (LISTEN_FDS)", Err: err}
		}
		if typ != unix.SOCK_SEQPACKET {
			return nil, nil, fmt.Errorf("fd 3 from systemd is not a SOCK_SEQPACKET socket (type %d): set ListenSequentialPacket= in the .socket unit", typ)
		}
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("fd 3 from systemd: %w", err)
		}
		ul, ok := l.(*net.UnixListener)
		if !ok {
			l.Close()
			return nil, nil, fmt.Errorf("fd 3 from systemd is not a Unix socket")
		}
		return ul, nil, nil
	}
	if path == "" {
		return nil, nil, usagef("--socket is required (or systemd socket activation)")
	}
	removeStale(path)
	old := unix.Umask(0o177) // the socket file is made 0600
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	unix.Umask(old)
	if err != nil {
		return nil, nil, err
	}
	ln.SetUnlinkOnClose(false) // removed by the caller, only if still its own
	made, err := pinSocket(path)
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	return ln, made, nil
}

// listenFDs reports the sockets systemd passed this process, and whether it
// passed any. The variables are unset so children do not see them.
func listenFDs() (int, bool) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if pid == "" || fds == "" {
		return 0, false
	}
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return 0, false
	}
	n, err := strconv.Atoi(fds)
	if err != nil {
		return 0, false
	}
	return n, true
}

// removeStale removes path if it is a socket nobody listens on: still the
// file it found refusing connections, not one another server made since.
func removeStale(path string) {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != os.ModeSocket {
		return
	}
	c, err := net.Dial("unixpacket", path)
	if err == nil {
		c.Close()
		return
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		(&madeSocket{path: path, fi: fi}).remove()
	}
}
