// Package directory serves a dir.Dir as an rpc object (the Directory
// service) and calls one (Client): a directory capability used from
// another process, which gets files and detached mounts as descriptors.
//
// It is a package of its own, above rpc, dir and dir/export, so that
// package rpc, the protocol, links neither dir nor the fork server that
// an export needs.
package directory

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/dir/export"
	"github.com/caplin-dev/caplin/rpc"
	"golang.org/x/sys/unix"
)

// The Directory service: a directory capability served over rpc. Its
// methods, with their argument and result types:
//
//	open    OpenArgs     -> FD        a file (never a directory: use export or sub)
//	stat    StatArgs     -> FileStat
//	readdir string       -> []DirEntry
//	mkdir   MkdirArgs    -> nothing
//	remove  string       -> nothing
//	rename  RenameArgs   -> nothing
//	sub     SubArgs      -> FD        a new, narrower Directory object
//	export  string       -> FD        a detached mount root of that subtree
//	rights  nothing      -> string  the rights, as dir.Rights.String writes them
//
// and the file-system methods listed in fsops.go (getattr, getdents,
// openat, unlink, rmdir, renameat2, chown, utimens, the xattrs, ...),
// with which package served/remote serves the object as a file system.
//
// Paths are relative to the directory and cannot leave it (see dir.Dir:
// resolution is confined in the kernel by openat2). Rights are checked by
// the server, which holds the directory; a holder can narrow them with sub
// and never widen them.
//
// What a holder obtained stays its own when the object is revoked
// (rpc.Revocable): the files it opened, the mounts it exported, and the
// objects sub made, which are served on their own, with the rights they
// were made with. A directory to be taken back whole is lent as a served
// mount instead (package served: its Revoke cuts every file and name at
// once), or narrowed to what its holder may keep.

// OpenArgs are the arguments of a Directory's open.
type OpenArgs struct {
	Path  string
	Flags int         // os.O_RDONLY, os.O_WRONLY|os.O_CREATE, ...
	Perm  fs.FileMode // for a file made by O_CREATE; 0 means 0o644
}

// StatArgs are the arguments of a Directory's stat.
type StatArgs struct {
	Path     string
	NoFollow bool // lstat: a symbolic link as itself
}

// FileStat is what a Directory's stat returns.
type FileStat struct {
	Name    string
	Size    int64
	Mode    fs.FileMode
	ModTime time.Time
}

// DirEntry is one entry of a Directory's readdir.
type DirEntry struct {
	Name string
	Type fs.FileMode // the type bits only
}

// MkdirArgs are the arguments of a Directory's mkdir.
type MkdirArgs struct {
	Path string
	Perm fs.FileMode // 0 means 0o755
	All  bool        // make missing parents too, as os.MkdirAll
}

// RenameArgs are the arguments of a Directory's rename.
type RenameArgs struct {
	Old, New string
}

// SubArgs are the arguments of a Directory's sub.
type SubArgs struct {
	Path   string
	Rights dir.Rights
	// Into, if set, is the server end of a socket pair the caller made:
	// the new object is served on it, and the reply carries no FD. The
	// caller can use its end at once, before the reply (pipelining);
	// if sub fails, calls on that end fail with the same error.
	Into rpc.FD
}

// New returns an rpc.Handler that serves d as a Directory object, taking
// ownership of d: it is closed when the object ends. The objects its sub
// makes are served by the same rpc.Server.
func New(d *dir.Dir) rpc.Handler { return &handler{d: d} }

// handler serves one Directory object.
type handler struct{ d *dir.Dir }

// Close closes the directory when its object ends.
func (s *handler) Close() error { return s.d.Close() }

func (s *handler) ServeCall(ctx context.Context, call *rpc.Call) (any, error) {
	res, err := s.serve(ctx, call)
	if err != nil {
		var re *dir.RightsError
		if errors.As(err, &re) {
			return nil, &rpc.Error{Code: rpc.CodeDenied, Errno: syscall.EPERM, Text: err.Error()}
		}
	}
	return res, err
}

func (s *handler) serve(ctx context.Context, call *rpc.Call) (any, error) {
	d := s.d
	switch call.Method {
	case "open":
		var a OpenArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		if a.Perm == 0 {
			a.Perm = 0o644
		}
		return openRegular(d, a)
	case "stat":
		var a StatArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		var fi fs.FileInfo
		var err error
		if a.NoFollow {
			fi, err = d.Lstat(a.Path)
		} else {
			fi, err = d.Stat(a.Path)
		}
		if err != nil {
			return nil, err
		}
		return FileStat{Name: fi.Name(), Size: fi.Size(), Mode: fi.Mode(), ModTime: fi.ModTime()}, nil
	case "readdir":
		var path string
		if err := call.Args(&path); err != nil {
			return nil, err
		}
		ents, err := d.ReadDir(path)
		if err != nil {
			return nil, err
		}
		out := make([]DirEntry, len(ents))
		for i, e := range ents {
			out[i] = DirEntry{Name: e.Name(), Type: e.Type()}
		}
		return out, nil
	case "mkdir":
		var a MkdirArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		if a.Perm == 0 {
			a.Perm = 0o755
		}
		a.Perm &= fs.ModePerm // no setgid or sticky directories from a peer
		if a.All {
			return nil, d.MkdirAll(a.Path, a.Perm)
		}
		return nil, d.Mkdir(a.Path, a.Perm)
	case "remove":
		var path string
		if err := call.Args(&path); err != nil {
			return nil, err
		}
		return nil, d.Remove(path)
	case "rename":
		var a RenameArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		return nil, d.Rename(a.Old, a.New)
	case "sub":
		var a SubArgs
		if err := call.Args(&a); err != nil {
			return nil, err
		}
		sub, err := d.Sub(a.Path, a.Rights)
		if err != nil {
			if a.Into.File != nil {
				rpc.Fail(a.Into.File, err)
			}
			return nil, err
		}
		if a.Into.File != nil {
			// The object outlives this call: serve it in the server's
			// lifetime, not the call's.
			if err := call.Server.ServeFile(context.WithoutCancel(ctx), a.Into.File, New(sub)); err != nil {
				sub.Close()
				return nil, err
			}
			return nil, nil
		}
		fd, err := call.Server.NewObject(context.WithoutCancel(ctx), New(sub))
		if err != nil {
			sub.Close()
			return nil, err
		}
		return fd, nil
	case "export":
		var path string
		if err := call.Args(&path); err != nil {
			return nil, err
		}
		// The kernel enforces only read-only (and noexec) on the mount, not
		// the finer rights: exporting needs RightRead, and the mount is
		// writable only for an object that may do every kind of write.
		rights := d.Rights()
		if !rights.Has(dir.RightRead) {
			return nil, &rpc.Error{Code: rpc.CodeDenied, Errno: syscall.EPERM, Text: fmt.Sprintf("export %s: needs read (the object has %v)", path, rights)}
		}
		if !rights.Has(dir.RightWrite | dir.RightCreate | dir.RightDelete | dir.RightSetAttr) {
			rights &^= dir.RightWrite | dir.RightCreate | dir.RightDelete | dir.RightSetAttr
		}
		sub, err := d.Sub(path, rights)
		if err != nil {
			return nil, err
		}
		defer sub.Close()
		f, err := export.Dir(ctx, sub)
		if err != nil {
			return nil, err
		}
		return rpc.FD{File: f}, nil
	case "rights":
		if err := call.Args(nil); err != nil {
			return nil, err
		}
		return d.Rights().String(), nil
	}
	return serveFS(ctx, d, call)
}

// openRegular opens a.Path in d for a holder: a regular file only, and
// without ever blocking the server: a FIFO's open(2) waits for a peer (and
// a device's may), which would pin a server thread per call for as long
// as the holder likes. O_NONBLOCK is set for the open and cleared after
// unless the holder asked for it.
func openRegular(d *dir.Dir, a OpenArgs) (any, error) {
	a.Perm &= fs.ModePerm // no setuid, setgid or sticky files from a peer
	flags := a.Flags
	if flags&unix.O_PATH == 0 {
		// (openat2 refuses them beside O_PATH, which opens nothing.)
		flags |= unix.O_NONBLOCK | unix.O_NOCTTY
	}
	f, err := d.OpenFile(a.Path, flags, a.Perm)
	if err != nil {
		return nil, err
	}
	// Through the raw fd: Fd would make the file blocking.
	var st unix.Stat_t
	err = fdStat(f, &st)
	if err != nil {
		f.Close()
		return nil, &os.PathError{Op: "open", Path: a.Path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG && a.Flags&unix.O_PATH == 0 {
		f.Close()
		return nil, &rpc.Error{Code: rpc.CodeInvalid, Errno: syscall.EINVAL, Text: fmt.Sprintf("open %s: not a regular file (a Directory opens only files)", a.Path)}
	}
	if a.Flags&unix.O_NONBLOCK == 0 && a.Flags&unix.O_PATH == 0 {
		if err := unix.SetNonblock(int(f.Fd()), false); err != nil {
			f.Close()
			return nil, &os.PathError{Op: "open", Path: a.Path, Err: err}
		}
	}
	return rpc.FD{File: f}, nil
}

// fdStat is fstat(2) of f's descriptor, left as it is.
func fdStat(f *os.File, st *unix.Stat_t) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), st) }); err != nil {
		return err
	}
	return serr
}

// A Client is a typed client for a Directory object.
type Client struct {
	// Client is the object. Close it to drop the capability.
	*rpc.Client
}

// Open opens the file at path with flags (os.O_*) and, if it creates one,
// perm. Directories are not opened: use Export or Sub.
func (d Client) Open(ctx context.Context, path string, flags int, perm fs.FileMode) (*os.File, error) {
	var fd rpc.FD
	if err := d.Call(ctx, "open", OpenArgs{Path: path, Flags: flags, Perm: perm}, &fd); err != nil {
		return nil, err
	}
	if fd.File == nil {
		return nil, rpc.Errorf(rpc.CodeBadMessage, "open %s: the reply carried no descriptor", path)
	}
	return fd.File, nil
}

// Stat returns what stat (or, with noFollow, lstat) says of path.
func (d Client) Stat(ctx context.Context, path string, noFollow bool) (FileStat, error) {
	var st FileStat
	err := d.Call(ctx, "stat", StatArgs{Path: path, NoFollow: noFollow}, &st)
	return st, err
}

// ReadDir lists the directory at path, sorted by name.
func (d Client) ReadDir(ctx context.Context, path string) ([]DirEntry, error) {
	var ents []DirEntry
	err := d.Call(ctx, "readdir", path, &ents)
	return ents, err
}

// Mkdir makes the directory path (and, with all, its missing parents).
func (d Client) Mkdir(ctx context.Context, path string, perm fs.FileMode, all bool) error {
	return d.Call(ctx, "mkdir", MkdirArgs{Path: path, Perm: perm, All: all}, nil)
}

// Remove removes the file or empty directory at path.
func (d Client) Remove(ctx context.Context, path string) error {
	return d.Call(ctx, "remove", path, nil)
}

// Rename renames oldPath to newPath, both in the directory.
func (d Client) Rename(ctx context.Context, oldPath, newPath string) error {
	return d.Call(ctx, "rename", RenameArgs{Old: oldPath, New: newPath}, nil)
}

// Rights returns the rights the object grants.
func (d Client) Rights(ctx context.Context) (dir.Rights, error) {
	var s string
	if err := d.Call(ctx, "rights", nil, &s); err != nil {
		return 0, err
	}
	r, err := dir.ParseRights(s)
	if err != nil {
		return 0, &rpc.Error{Code: rpc.CodeBadMessage, Method: "rights", Text: err.Error()}
	}
	return r, nil
}

// Sub returns a client for a new Directory object for the directory at path with the
// given rights, which must be a subset of this object's. It waits for the
// server's answer; SubPipelined does not.
func (d Client) Sub(ctx context.Context, path string, rights dir.Rights) (Client, error) {
	var fd rpc.FD
	if err := d.Call(ctx, "sub", SubArgs{Path: path, Rights: rights}, &fd); err != nil {
		return Client{}, err
	}
	if fd.File == nil {
		return Client{}, &rpc.Error{Code: rpc.CodeBadMessage, Method: "sub", Text: fmt.Sprintf("sub %s: the reply carried no descriptor", path)}
	}
	c, err := rpc.NewClient(fd.File, d.Options())
	if err != nil {
		return Client{}, err
	}
	return Client{c}, nil
}

// SubPipelined is Sub without the wait: it makes the new object's socket
// itself, sends the server its end and returns at once, so calls on the
// new Directory can be made before the server has even read the request.
// If the server cannot make it, those calls fail with the reason.
func (d Client) SubPipelined(path string, rights dir.Rights) (Client, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return Client{}, &os.SyscallError{Syscall: "socketpair", Err: err}
	}
	into := os.NewFile(uintptr(fds[1]), "rpc-object")
	defer into.Close()
	c, err := rpc.NewClient(os.NewFile(uintptr(fds[0]), "rpc-object"), d.Options())
	if err != nil {
		return Client{}, err
	}
	if err := d.Send("sub", SubArgs{Path: path, Rights: rights, Into: rpc.FD{File: into}}); err != nil {
		c.Close()
		return Client{}, err
	}
	return Client{c}, nil
}

// Export returns a descriptor for the root of a detached mount of the
// subtree at path: a directory its holder cannot leave with "..", to
// hand to another process (caplin run --ro-bind-fd or --bind-fd, or
// sandbox.Mount.FD). It needs the read right. The mount is writable only
// if the object grants every write right (write, create, delete and
// setattr), and noexec unless it grants exec.
func (d Client) Export(ctx context.Context, path string) (*os.File, error) {
	var fd rpc.FD
	if err := d.Call(ctx, "export", path, &fd); err != nil {
		return nil, err
	}
	if fd.File == nil {
		return nil, rpc.Errorf(rpc.CodeBadMessage, "export %s: the reply carried no descriptor", path)
	}
	return fd.File, nil
}
