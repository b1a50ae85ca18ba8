package main

// caplin run's served directories: the options that serve a host
// directory, an rpc Directory object or a union at a FUSE mount inside
// the sandbox (package served), the control object that changes them
// while the program runs (--control, package rpc/mountctl), and the
// report of what was refused (--events).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/proc"
	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/rpc/directory"
	"github.com/caplin-dev/caplin/rpc/mountctl"
	"github.com/caplin-dev/caplin/sandbox"
	"github.com/caplin-dev/caplin/sandbox/bwrap"
	"github.com/caplin-dev/caplin/served"
	"github.com/caplin-dev/caplin/served/remote"
	"golang.org/x/sys/unix"
)

// servedHelp is caplin run's help on its served directories.
const servedHelp = `SERVED DIRECTORIES (FUSE mounts that caplin serves; applied in order)
	--serve-bind SRC DEST, --serve-ro-bind SRC DEST
		Serve the host directory SRC at DEST through a FUSE file
		system that caplin answers, as a directory capability:
		lookups never leave SRC (no "..", no symbolic link out),
		and every operation is checked against the mount's rights:
		all of them; read and exec only.
	--serve-bind-rights RIGHTS SRC DEST
		The same with the rights RIGHTS, a comma-separated list of
		read, write, append, create, delete, rename, link, setattr,
		xattr, exec, or ro (read,exec) or rw (all): rights the
		kernel cannot express, such as create but not delete
		(read,create,write) or append only (read,append).
	--serve-object SOCKET|fd:N|ssh://[USER@]HOST/PATH DEST
		Serve the rpc Directory object at the socket SOCKET (caplin
		serve dir's, say), on caplin's inherited fd N, or at the
		socket PATH on HOST (reached through caplin's agent there
		over the user's ssh: see caplin remote) at DEST: a directory
		another process, user or machine holds is then a mounted
		directory for any program; its rights are the object's. A
		remote Directory's files are opened as file objects, so
		each read and write of them is a call across the connection.
	--union-before SRC DEST, --union-after SRC DEST
		Make DEST a union of host directories, as Plan 9's bind -b
		and -a: each adds SRC before or after those given for DEST
		so far. A name is looked up in each in order, the first
		that has it winning; new names are made in the first that
		has their directory. Several may target one DEST.
	--control SOCKET
		Serve, at the Unix socket SOCKET (made mode 0600, removed
		at exit), the sandbox's mount table: caplin call SOCKET
		bind SRC DEST [RIGHTS] serves a new directory while the
		program runs, unbind DEST detaches one, revoke DEST ends
		one's grant (every operation on it, on files already open
		too, fails with EIO from then on), list lists them.
	--events PATH|fd:N
		Write one JSON line per operation a served mount refused
		(time, pid, operation, path, missing right), per bind,
		unbind and revoke, and per connect --connect allowed or
		refused (time, kind, pid, addr, the name and rule that
		allowed it, errno), to the file PATH (created 0600,
		appended to) or caplin's inherited fd N. At most 64 MiB
		are written in one run: a last line says the limit was
		reached ({"kind":"limit"}), and later events are dropped.
	Served mounts are made in the sandbox's user namespace, which needs
	Linux 4.18 and a /dev/fuse the sandbox's user may open (see caplin
	doctor; where /dev/fuse is mode 0600, chmod 0666 /dev/fuse as udev
	makes it on desktop systems): elsewhere the sandbox is refused (exit
	122), naming /dev/fuse. They are not in --landlock-only sandboxes,
	nor in caplin bwrap. --control needs an init of caplin's (not
	--as-pid-1). Landlock grants a served mount as a writable bind: the
	mount's rights are enforced by caplin's server. A mount added with
	--control must be made on a directory that exists in the sandbox
	(--dir DEST makes one), and gets, in Landlock, what that directory
	has: bind it inside a writable grant (a --tmpfs, say) for writes.
`

// The kinds of source a served mount has.
const (
	srcHostDir = iota // a host directory, by path
	srcObject         // an rpc Directory object: a socket's path, or fd:N
	srcUnion          // host directories, in lookup order
)

// servedMount is one served mount of the command line: what its options
// said while they were read and, once opened, its server. It is the
// sandbox's FUSEServer, handing over to the served.Server made for it.
type servedMount struct {
	option  string // the option that made it, as written, for errors
	kind    int
	src     string   // srcHostDir, srcObject
	members []string // srcUnion
	dest    string
	rights  served.Rights
	srv     *served.Server
}

func (m *servedMount) MountOptions() string { return m.srv.MountOptions() }

// NoExec makes the mount noexec where the rights lack exec (see
// sandbox.FUSEServer).
func (m *servedMount) NoExec() bool { return m.srv.NoExec() }

func (m *servedMount) Serve(ctx context.Context, dev *os.File, uidMap, gidMap []proc.IDMap) error {
	return m.srv.Serve(ctx, dev, uidMap, gidMap)
}

// servedOpts is what the served-directory options of a command line
// asked and, from open on, what serves it.
type servedOpts struct {
	mounts  []*servedMount
	control string // --control's socket
	events  string // --events' PATH or fd:N

	evlog *eventLog  // --events' writer, once opened
	table *liveTable // the mount table, once the sandbox is made
	ctl   *rpc.Server
	ctlCh chan error  // the control server's end
	made  *madeSocket // --control's socket file
}

// extras returns the options, for bwrap.ParseExtra: what they say is
// recorded as they are read; nothing is opened until open.
func (so *servedOpts) extras() map[string]bwrap.Extra {
	x := map[string]bwrap.Extra{}
	serve := func(name string, kind int, rights served.Rights) {
		x[name] = bwrap.Extra{Args: 2, Do: func(a []string) (*sandbox.Mount, error) {
			return so.add(&servedMount{option: name + " " + a[0] + " " + a[1], kind: kind, src: a[0], dest: a[1], rights: rights})
		}}
	}
	serve("--serve-bind", srcHostDir, served.All)
	serve("--serve-ro-bind", srcHostDir, served.ReadOnly)
	serve("--serve-object", srcObject, served.All)
	x["--serve-bind-rights"] = bwrap.Extra{Args: 3, Do: func(a []string) (*sandbox.Mount, error) {
		r, err := served.ParseRights(a[0])
		if err != nil {
			return nil, fmt.Errorf("rights %q: %w", a[0], err)
		}
		return so.add(&servedMount{option: "--serve-bind-rights " + a[0] + " " + a[1] + " " + a[2], kind: srcHostDir, src: a[1], dest: a[2], rights: r})
	}}
	union := func(name string, before bool) {
		x[name] = bwrap.Extra{Args: 2, Do: func(a []string) (*sandbox.Mount, error) {
			if a[0] == "" {
				return nil, errors.New("empty source")
			}
			for _, m := range so.mounts {
				if m.dest != filepath.Clean(a[1]) {
					continue
				}
				if m.kind != srcUnion {
					return nil, fmt.Errorf("%s is served already, by %s", a[1], m.option)
				}
				if before {
					m.members = append([]string{a[0]}, m.members...)
				} else {
					m.members = append(m.members, a[0])
				}
				return nil, nil // the union's mount is its first option's
			}
			return so.add(&servedMount{option: name + " " + a[0] + " " + a[1], kind: srcUnion, members: []string{a[0]}, dest: a[1], rights: served.All})
		}}
	}
	union("--union-before", true)
	union("--union-after", false)
	once := func(name string, dst *string) {
		x[name] = bwrap.Extra{Args: 1, Do: func(a []string) (*sandbox.Mount, error) {
			switch {
			case *dst != "":
				return nil, errors.New("given twice")
			case a[0] == "":
				return nil, errors.New("empty argument")
			}
			*dst = a[0]
			return nil, nil
		}}
	}
	once("--control", &so.control)
	once("--events", &so.events)
	return x
}

// add records m, whose option is being read, and returns its mount.
func (so *servedOpts) add(m *servedMount) (*sandbox.Mount, error) {
	if m.kind != srcUnion && m.src == "" {
		return nil, errors.New("empty source")
	}
	if !filepath.IsAbs(m.dest) {
		return nil, fmt.Errorf("%q: the destination must be an absolute path", m.dest)
	}
	m.dest = filepath.Clean(m.dest)
	so.mounts = append(so.mounts, m)
	return &sandbox.Mount{Kind: sandbox.FUSE, Dest: m.dest, Server: m}, nil
}

// check refuses what the spec cannot have with the options: a mount
// table to change needs caplin's init in the sandbox.
func (so *servedOpts) check(spec *sandbox.Spec) error {
	if so.control != "" && (spec.AsPID1 || spec.SharePID) {
		return usagef("--control: the sandbox's mounts are changed by caplin's init, which --as-pid-1 (and a shared pid namespace) leaves out")
	}
	return nil
}

// open opens --events and what each served mount serves, and makes its
// server. An error names the option.
func (so *servedOpts) open(ctx context.Context) error {
	if so.events != "" {
		var err error
		if so.evlog, err = openEvents(so.events); err != nil {
			return err
		}
	}
	for _, m := range so.mounts {
		fsys, err := m.open(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", m.option, err)
		}
		m.srv = served.NewServer(fsys, so.options(m.dest, m.rights))
	}
	raiseProcs(len(so.mounts))
	return nil
}

// raiseProcs gives the process the Ps that servers served mounts need
// (served.Procs) above its default GOMAXPROCS, unless GOMAXPROCS was set
// by the caller.
func raiseProcs(servers int) {
	if servers == 0 || os.Getenv("GOMAXPROCS") != "" {
		return
	}
	baseProcsOnce.Do(func() { baseProcs = runtime.GOMAXPROCS(0) })
	if want := served.Procs(baseProcs, servers); runtime.GOMAXPROCS(0) < want {
		runtime.GOMAXPROCS(want)
	}
}

// baseProcs is the process's GOMAXPROCS before raiseProcs changed it.
var (
	baseProcsOnce sync.Once
	baseProcs     int
)

// options are the served.Options of a mount at dest with rights.
func (so *servedOpts) options(dest string, rights served.Rights) served.Options {
	o := served.Options{Rights: rights, Dest: dest}
	if so.evlog != nil {
		o.Events = so.evlog.Event
	}
	return o
}

// open returns the FS m serves.
func (m *servedMount) open(ctx context.Context) (served.FS, error) {
	switch m.kind {
	case srcObject:
		c, err := openObject(ctx, m.src)
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(m.src, "ssh://") {
			// Its descriptors would cross the connection as streams:
			// its files are file objects instead.
			return remote.NewFiles(directory.Client{Client: c}), nil
		}
		return remote.New(directory.Client{Client: c}), nil
	case srcUnion:
		var members []served.UnionMember
		for _, src := range m.members {
			d, err := dir.Open(src)
			if err != nil {
				for _, u := range members {
					u.FS.Close()
				}
				return nil, err
			}
			members = append(members, served.UnionMember{FS: served.Host(d), Writable: true})
		}
		return served.Union(members...), nil
	}
	d, err := dir.Open(m.src)
	if err != nil {
		return nil, err
	}
	return served.Host(d), nil
}

// start makes the mount table of the running sandbox sb and, with
// --control, serves it on its socket.
func (so *servedOpts) start(sb *sandbox.Sandbox) error {
	so.table = &liveTable{sb: sb, so: so}
	for _, m := range so.mounts {
		so.table.mounts = append(so.table.mounts, &liveMount{srv: m.srv, entry: mountctl.Entry{Dest: m.dest, Source: m.source(), Rights: m.rights}})
	}
	if so.control == "" {
		return nil
	}
	ln, made, err := listen(so.control)
	if err != nil {
		return fmt.Errorf("--control %s: %w", so.control, err)
	}
	so.made = made
	opts := mountctl.Options{}
	if so.evlog != nil {
		opts.Events = so.evlog.Event
	}
	h := mountctl.New(so.table, opts)
	so.ctl = &rpc.Server{}
	so.ctlCh = make(chan error, 1)
	go func() {
		so.ctlCh <- so.ctl.Serve(context.Background(), ln, func(*unix.Ucred) rpc.Handler { return h })
	}()
	return nil
}

// source names what m serves, for the table's list, as a bind names its
// source: "dir PATH", "object SOCKET", "union PATH...".
func (m *servedMount) source() string {
	switch m.kind {
	case srcUnion:
		return "union " + strings.Join(m.members, " ")
	case srcObject:
		return mountctl.SourceObject.String() + " " + m.src
	}
	return mountctl.SourceDir.String() + " " + m.src
}

// close stops the control server, closes the servers (the sandbox is
// closed first: its mounts are gone) and writes the events left.
func (so *servedOpts) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if so.ctl != nil {
		so.ctl.Shutdown(ctx)
		<-so.ctlCh
		so.made.remove()
	}
	if so.table != nil {
		so.table.closeAll()
	} else {
		for _, m := range so.mounts {
			if m.srv != nil {
				m.srv.Close()
			}
		}
	}
	if so.evlog != nil {
		so.evlog.Close(ctx)
	}
}

// liveTable is the mount table of a running sandbox (mountctl.Table):
// the served mounts of the command line, and those bound since.
type liveTable struct {
	sb     *sandbox.Sandbox
	so     *servedOpts
	mu     sync.Mutex
	mounts []*liveMount
}

// liveMount is one served mount of the table.
type liveMount struct {
	srv   *served.Server
	entry mountctl.Entry
}

// find returns the mount at dest, or nil; the caller holds mu.
func (t *liveTable) find(dest string) *liveMount {
	for _, m := range t.mounts {
		if m.entry.Dest == dest {
			return m
		}
	}
	return nil
}

// Bind serves src at dest: a new FUSE mount, made by the sandbox's init.
func (t *liveTable) Bind(ctx context.Context, src mountctl.Source, dest string, rights served.Rights) error {
	defer src.File.Close()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.find(dest) != nil {
		return fmt.Errorf("bind %s: served already: %w", dest, syscall.EEXIST)
	}
	var fsys served.FS
	switch src.Kind {
	case mountctl.SourceObject:
		f, err := dupFile(src.File)
		if err != nil {
			return fmt.Errorf("bind %s: %w", dest, err)
		}
		c, err := rpc.NewClient(f, rpc.ClientOptions{})
		if err != nil {
			return fmt.Errorf("bind %s: %w", dest, err)
		}
		fsys = remote.New(directory.Client{Client: c})
	default:
		d, err := dir.FromFile(src.File)
		if err != nil {
			return fmt.Errorf("bind %s: %w", dest, err)
		}
		fsys = served.Host(d)
	}
	srv := served.NewServer(fsys, t.so.options(dest, rights))
	raiseProcs(len(t.so.mounts) + len(t.mounts) + 1)
	if err := t.sb.Mount(ctx, sandbox.Mount{Kind: sandbox.FUSE, Dest: dest, Server: srv}); err != nil {
		srv.Close()
		return fmt.Errorf("bind %s: %w", dest, err)
	}
	t.mounts = append(t.mounts, &liveMount{srv: srv, entry: mountctl.Entry{Dest: dest, Source: src.Kind.String() + " " + src.Name, Rights: rights}})
	return nil
}

// dupFile returns a duplicate of f, which the caller closes.
func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, &os.SyscallError{Syscall: "fcntl F_DUPFD_CLOEXEC", Err: err}
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// Unbind detaches the mount at dest and stops its server.
func (t *liveTable) Unbind(ctx context.Context, dest string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.find(dest)
	if m == nil {
		return fmt.Errorf("unbind %s: not a served mount: %w", dest, syscall.ENOENT)
	}
	if err := t.sb.Unmount(ctx, dest); err != nil {
		return fmt.Errorf("unbind %s: %w", dest, err)
	}
	m.srv.Close()
	t.mounts = slices.DeleteFunc(t.mounts, func(x *liveMount) bool { return x == m })
	return nil
}

// Revoke ends the grant of the mount at dest.
func (t *liveTable) Revoke(ctx context.Context, dest string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.find(dest)
	if m == nil {
		return fmt.Errorf("revoke %s: not a served mount: %w", dest, syscall.ENOENT)
	}
	if err := m.srv.Revoke(); err != nil {
		return fmt.Errorf("revoke %s: %w", dest, err)
	}
	m.entry.Revoked = true
	return nil
}

// List returns the served mounts.
func (t *liveTable) List() []mountctl.Entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	es := make([]mountctl.Entry, len(t.mounts))
	for i, m := range t.mounts {
		es[i] = m.entry
	}
	return es
}

// closeAll closes every server of the table.
func (t *liveTable) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range t.mounts {
		m.srv.Close()
	}
	t.mounts = nil
}
