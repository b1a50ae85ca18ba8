// Package mountctl serves the control object of a running sandbox's
// served mounts (the MountControl service), and calls one (Client): a live
// mount table that its holder changes while the sandbox's program runs.
// `caplin run --control SOCKET` serves it; `caplin call SOCKET revoke
// /data` calls it from a shell.
//
// The methods, with their argument and result types:
//
//	bind    BindArgs -> Entry     serve a directory (or an rpc Directory
//	                              object) at a new mount inside the sandbox
//	unbind  string   -> nothing   remove the mount at a path inside
//	revoke  string   -> nothing   end the grant of the mount at a path: every
//	                              operation on it fails with EIO from then on
//	list    nothing  -> []Entry   the served mounts, sorted by Dest
//
// What is bound travels as a descriptor the caller opened, never as a
// host path the server would open with its own authority: a directory
// (O_PATH is enough), or the socket of an rpc Directory object. The
// caller can bind only what it can open itself.
//
// The package does not mount anything: a Table, which the command
// implements over its sandbox and served.Servers, does. The handler checks
// and normalises the arguments before the Table sees them (Dest absolute,
// cleaned, not "/", within PATH_MAX and NAME_MAX; rights within
// served.All; the source a directory or a Unix SOCK_SEQPACKET socket that
// is not listening), runs
// bind, unbind and revoke one at a time, and reports each that succeeds as
// a served.Event. Errors keep their errno across the wire: a caller sees
// errors.Is(err, syscall.ENOENT) for a Dest that is not mounted if the
// Table says so.
//
// Like rpc/directory and rpc/connector, it is a package of its own above
// rpc; it links served for the vocabulary of rights and events, but not
// sandbox: the Table is an interface.
package mountctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/served"
	"golang.org/x/sys/unix"
)

// SourceKind says what a bind's source descriptor is.
type SourceKind int

const (
	// SourceDir is a directory on the host, to serve through a dir.Dir
	// (served.Host).
	SourceDir SourceKind = 1 + iota
	// SourceObject is the socket of an rpc Directory object, to serve
	// through package served/remote.
	SourceObject
)

// String names the kind: "dir" or "object".
func (k SourceKind) String() string {
	switch k {
	case SourceDir:
		return "dir"
	case SourceObject:
		return "object"
	}
	return fmt.Sprintf("SourceKind(%d)", int(k))
}

// A Source is what a bind serves, as the handler passes it to a Table.
type Source struct {
	// File is the directory or the object's socket. The Table owns it:
	// it closes it when the mount ends, or when Bind fails.
	File *os.File
	// Kind says which File is (the handler has checked).
	Kind SourceKind
	// Name is the source as the caller named it (a host path, say), for
	// List and logs only: nothing is looked up by it, and the caller may
	// have named it as it liked.
	Name string
}

// Entry is one served mount of the table.
type Entry struct {
	// Dest is the mount's path inside the sandbox.
	Dest string
	// Source is what is served, as named when it was bound
	// (Source.Name): informative only.
	Source string
	// Rights the mount permits.
	Rights served.Rights
	// Revoked is set once the mount was revoked: it fails every operation
	// with EIO until it is unbound.
	Revoked bool `cbor:",omitempty"`
}

// MarshalJSON writes the entry with its rights by name ("read,exec"), for
// people and scripts (caplin call list).
func (e Entry) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Dest    string
		Source  string
		Rights  string
		Revoked bool
	}{e.Dest, e.Source, e.Rights.String(), e.Revoked})
}

// BindArgs are the arguments of bind.
type BindArgs struct {
	// Src is the directory to serve (any descriptor of it, O_PATH
	// included) or the socket of an rpc Directory object.
	Src rpc.FD
	// Source names Src for List and logs (a host path, say); at most
	// PATH_MAX bytes, without NUL.
	Source string
	// Dest is the mount's path inside the sandbox: absolute, not "/".
	Dest string
	// Rights the mount permits; zero means served.All, as in
	// served.Options.
	Rights served.Rights
}

// A Table is the live mount table of a running sandbox, which the command
// implements: the handler calls it with arguments it has checked.
//
// Bind, Unbind and Revoke are called one at a time (the handler
// serialises them, across every connection it serves); List may be called
// at the same time as they are, and must not block. Errors should name the
// operation and Dest, and wrap an errno, which the caller gets; callers
// (and docs/rpc.md) expect ENOENT for a Dest that is not mounted, EEXIST
// for a Dest already mounted, and EINVAL for a Dest the sandbox cannot
// mount at. The Table reports no events of its own for these calls: the
// handler does (Options.Events).
type Table interface {
	// Bind serves src at dest with rights, while the sandbox runs: a new
	// mount appears at dest inside. Bind owns src.File from the call on.
	// ctx ends if the caller cancels or goes away: Bind then undoes what
	// it did and returns.
	Bind(ctx context.Context, src Source, dest string, rights served.Rights) error
	// Unbind and Revoke are given a context that does not end: once
	// begun, they finish even if their caller goes away.
	//
	// Unbind removes the mount at dest (lazily, as umount2 MNT_DETACH: a
	// program still using it gets ENOTCONN or EIO, never a hang) and
	// stops its server.
	Unbind(ctx context.Context, dest string) error
	// Revoke ends the grant of the mount at dest (served.Server.Revoke):
	// every operation on it fails with EIO from then on, open files
	// included, and the kernel's caches of it are dropped. The mount
	// stays, revoked, until it is unbound.
	Revoke(ctx context.Context, dest string) error
	// List returns the mounts, in any order.
	List() []Entry
}

// Options adjust the handler. The zero value reports nothing.
type Options struct {
	// Events, if not nil, is called after every bind, unbind and revoke
	// that succeeds, with Kind "bind", "unbind" or "revoke", Mount the
	// Dest and PID the calling connection's peer (SO_PEERCRED, 0 if
	// unknown). It must not block for long: a served.EventWriter's Event
	// does not.
	Events func(served.Event)
	// Logger receives a line (info level) per change of the table, and
	// one (debug level) per refused request; nil logs nothing.
	Logger *slog.Logger
}

// New returns a Handler serving the control object of table. One handler
// may serve any number of connections (rpc.Server.Serve's newHandler
// may return it every time): they share one table, and their bind,
// unbind and revoke calls run one at a time.
func New(table Table, opts Options) rpc.Handler {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &handler{table: table, events: opts.Events, log: log, turn: make(chan struct{}, 1)}
}

type handler struct {
	table  Table
	events func(served.Event)
	log    *slog.Logger
	// turn is held by the one bind, unbind or revoke running; waiting
	// for it ends with the caller's context.
	turn chan struct{}
}

// Limits on what a caller may send.
const (
	maxPath = unix.PathMax - 1 // bytes of a path, without its NUL
	maxName = 255              // NAME_MAX: bytes of one element
)

func (h *handler) ServeCall(ctx context.Context, call *rpc.Call) (any, error) {
	switch call.Method {
	case "bind":
		var a BindArgs
		if err := call.Args(&a); err != nil {
			return nil, err // its descriptors are closed
		}
		return h.bind(ctx, call, a)
	case "unbind", "revoke":
		var dest string
		if err := call.Args(&dest); err != nil {
			return nil, err
		}
		return nil, h.change(ctx, call, dest)
	case "list":
		if err := call.Args(nil); err != nil {
			return nil, err
		}
		entries := h.table.List()
		slices.SortFunc(entries, func(a, b Entry) int { return strings.Compare(a.Dest, b.Dest) })
		if entries == nil {
			entries = []Entry{} // an empty list, not null
		}
		return entries, nil
	}
	return nil, rpc.Errorf(rpc.CodeUnknownMethod, "unknown method %q", call.Method)
}

func (h *handler) bind(ctx context.Context, call *rpc.Call, a BindArgs) (any, error) {
	src := Source{File: a.Src.File, Name: a.Source}
	dest, err := h.check(call, a.Dest)
	if err == nil {
		err = checkSource(&src, dest)
	}
	if err == nil && a.Rights&^served.All != 0 {
		err = invalid(syscall.EINVAL, "bind %s: unknown rights %#x", dest, uint32(a.Rights&^served.All))
	}
	if err != nil {
		if src.File != nil {
			src.File.Close()
		}
		h.log.Debug("mountctl: bind refused", "dest", a.Dest, "err", err)
		return nil, err
	}
	rights := a.Rights
	if rights == 0 {
		rights = served.All
	}
	if err := h.take(ctx); err != nil {
		src.File.Close()
		return nil, err
	}
	defer h.give()
	if err := h.table.Bind(ctx, src, dest, rights); err != nil {
		h.log.Debug("mountctl: bind failed", "dest", dest, "err", err)
		return nil, err
	}
	h.report(call, "bind", dest, "source", src.Name, "rights", rights.String())
	return Entry{Dest: dest, Source: src.Name, Rights: rights}, nil
}

// change runs unbind or revoke.
func (h *handler) change(ctx context.Context, call *rpc.Call, dest string) error {
	dest, err := h.check(call, dest)
	if err != nil {
		return err
	}
	if err := h.take(ctx); err != nil {
		return err
	}
	defer h.give()
	// Once begun, an unbind or revoke runs to its end even if its caller
	// goes away: a grant half revoked is worse than either.
	ctx = context.WithoutCancel(ctx)
	if call.Method == "unbind" {
		err = h.table.Unbind(ctx, dest)
	} else {
		err = h.table.Revoke(ctx, dest)
	}
	if err != nil {
		h.log.Debug("mountctl: "+call.Method+" failed", "dest", dest, "err", err)
		return err
	}
	h.report(call, call.Method, dest)
	return nil
}

// check returns dest cleaned, or why it is refused.
func (h *handler) check(call *rpc.Call, dest string) (string, error) {
	d, err := cleanDest(call.Method, dest)
	if err != nil {
		h.log.Debug("mountctl: "+call.Method+" refused", "dest", dest, "err", err)
	}
	return d, err
}

// take waits for the turn to change the table, or for ctx's end.
func (h *handler) take(ctx context.Context) error {
	select {
	case h.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *handler) give() { <-h.turn }

// report logs and reports a change of the table.
func (h *handler) report(call *rpc.Call, kind, dest string, attrs ...any) {
	pid := 0
	if call.Peer != nil {
		pid = int(call.Peer.Pid)
	}
	h.log.Info("mountctl: "+kind, append([]any{"dest", dest, "peer_pid", pid}, attrs...)...)
	if h.events != nil {
		h.events(served.Event{Time: time.Now(), Kind: kind, Mount: dest, PID: pid})
	}
}

// cleanDest checks a Dest from a caller and returns it cleaned.
func cleanDest(op, dest string) (string, error) {
	switch {
	case dest == "":
		return "", invalid(syscall.EINVAL, "%s: no destination", op)
	case len(dest) > maxPath:
		return "", invalid(syscall.ENAMETOOLONG, "%s: destination of %d bytes", op, len(dest))
	case strings.IndexByte(dest, 0) >= 0:
		return "", invalid(syscall.EINVAL, "%s %q: NUL in the destination", op, dest)
	case dest[0] != '/':
		return "", invalid(syscall.EINVAL, "%s %s: the destination is not an absolute path", op, dest)
	}
	d := path.Clean(dest)
	if d == "/" {
		return "", invalid(syscall.EINVAL, "%s %s: cannot mount over the sandbox's root", op, dest)
	}
	for elem := range strings.SplitSeq(d[1:], "/") {
		if len(elem) > maxName {
			return "", invalid(syscall.ENAMETOOLONG, "%s %.40s...: a name of %d bytes", op, d, len(elem))
		}
	}
	return d, nil
}

// checkSource checks a bind's source and sets its Kind.
func checkSource(src *Source, dest string) error {
	if len(src.Name) > maxPath || strings.IndexByte(src.Name, 0) >= 0 {
		return invalid(syscall.EINVAL, "bind %s: the source's name is longer than PATH_MAX or has a NUL", dest)
	}
	if src.File == nil {
		return invalid(syscall.EBADF, "bind %s: no source descriptor", dest)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(src.File.Fd()), &st); err != nil {
		return &fs.PathError{Op: "bind", Path: dest, Err: fmt.Errorf("fstat of the source: %w", err)}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		src.Kind = SourceDir
		return nil
	case unix.S_IFSOCK:
		// An O_PATH descriptor of a socket file is not a socket: its
		// getsockopt fails, as it should (it is no object).
		fd := int(src.File.Fd())
		domain, err1 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
		typ, err2 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		listening, err3 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if err1 == nil && err2 == nil && err3 == nil && domain == unix.AF_UNIX && typ == unix.SOCK_SEQPACKET && listening == 0 {
			src.Kind = SourceObject
			return nil
		}
		return invalid(syscall.EINVAL, "bind %s: the source is a socket but not an rpc object's (an AF_UNIX SOCK_SEQPACKET socket, not listening)", dest)
	}
	return invalid(syscall.ENOTDIR, "bind %s: the source is neither a directory nor an rpc object", dest)
}

// invalid is a refusal of the caller's arguments, with its errno.
func invalid(errno syscall.Errno, format string, args ...any) *rpc.Error {
	return &rpc.Error{Code: rpc.CodeInvalid, Errno: errno, Text: fmt.Sprintf(format, args...)}
}

// A Client is a typed client for a mount table's control object.
type Client struct {
	// Client is the object. Close it to drop the capability.
	*rpc.Client
}

// Bind serves src at dest inside the sandbox with rights (zero: every
// right), and returns the new entry. src is a directory (O_PATH is
// enough) or an rpc Directory object's socket; the caller keeps it (the
// server gets a duplicate). name is how List will name it.
func (c Client) Bind(ctx context.Context, src *os.File, name, dest string, rights served.Rights) (Entry, error) {
	var e Entry
	err := c.Call(ctx, "bind", BindArgs{Src: rpc.FD{File: src}, Source: name, Dest: dest, Rights: rights}, &e)
	return e, err
}

// Unbind removes the mount at dest.
func (c Client) Unbind(ctx context.Context, dest string) error {
	return c.Call(ctx, "unbind", dest, nil)
}

// Revoke ends the grant of the mount at dest: from when it returns,
// every operation on it fails with EIO.
func (c Client) Revoke(ctx context.Context, dest string) error {
	return c.Call(ctx, "revoke", dest, nil)
}

// List returns the served mounts, sorted by Dest.
func (c Client) List(ctx context.Context) ([]Entry, error) {
	var entries []Entry
	err := c.Call(ctx, "list", nil, &entries)
	return entries, err
}

// OpenSource opens what a caller names to bind, with the caller's own
// authority: a Unix socket path is connected to (an rpc Directory object,
// as caplin serve dir serves), anything else is opened as a directory
// (O_PATH, following symbolic links as a shell's path does). The caller
// closes the file after the call.
func OpenSource(ctx context.Context, name string) (*os.File, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Type() == fs.ModeSocket {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unixpacket", name)
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return conn.(*net.UnixConn).File()
	}
	fd, err := unix.Open(name, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}
