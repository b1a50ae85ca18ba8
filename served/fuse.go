package served

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/internal/filemode"
	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// rawFS answers FUSE requests: it is a go-fuse RawFileSystem, the
// protocol's own level, where requests name files by node IDs. The
// higher fs.InodeEmbedder API of go-fuse keeps a tree of its own whose
// nodes answer requests; it would stand between every request and the
// rights checks, hide the caller's pid from some of them, and keep its
// own caches to invalidate. At this level every request passes one gate
// (revocation, Close), one rights check with the caller's pid for the
// event, and one FS call, and the notify calls reach every node the
// kernel holds.
type rawFS struct {
	fuse.RawFileSystem // ENOSYS for what is not served: locks, ioctl, statx, tmpfile, copy_file_range

	fs       FS
	ctx      context.Context // ended by Close
	cancel   context.CancelFunc
	rights   Rights
	dest     string
	events   func(Event)
	log      *slog.Logger
	timeout  time.Duration
	readOnly bool
	// noOpen: opens reach the server not at all (CAP_NO_OPEN_SUPPORT),
	// for a mount whose rights leave an open nothing to check: reading
	// and executing are permitted, and writing either wholly or not at
	// all. Reads and writes then come by node ID (Fh 0): reads through
	// descriptors kept in files, writes through a descriptor opened for
	// each (so that no descriptor open for writing outlives the write and
	// makes an exec of the file fail with ETXTBSY), and writes on a mount
	// that may not be written are refused when they come.
	noOpen bool
	files  nodeFiles
	// dirs: directories of the FS opened by node ID, where it can open
	// them (subFS), for attributes in one system call.
	dirs dirCache
	// noOpenDir: directory opens (and releases) reach the server only
	// once (CAP_NO_OPENDIR_SUPPORT), on a mount whose RightRead permits
	// listing, so that no open has anything to check: the kernel then
	// reads directories by node ID (Fh 0), and keeps their listings as
	// it would with FOPEN_CACHE_DIR.
	noOpenDir bool
	// asRoot: the server runs as root, so it drops set-ID bits itself
	// (killSUIDGID; CAP_HANDLE_KILLPRIV_V2).
	asRoot bool
	uids   idMap
	gids   idMap

	nodes *nodeTable

	// state is serving, revoked or closed; inflight counts the requests
	// past the gate.
	state    atomic.Int32
	inflight atomic.Int64
	// noChown holds the devices (st_dev) where changing owners was
	// refused (EPERM): own tries no more there. Per device, since one
	// mount inside the served tree (NFS with root_squash, vfat) must not
	// stop it for the rest.
	noChown sync.Map

	hmu     sync.Mutex
	handles map[uint64]*handle
	nextFh  uint64
	// listings of directories read without a handle (noOpenDir), by
	// node ID, from a read at offset 0 until the read past the end.
	listings map[uint64]*handle

	srv atomic.Pointer[fuse.Server]

	closeOnce sync.Once
	closeErr  error
}

const (
	serving int32 = iota
	revoked
	closed
)

// handle is an open file or directory.
type handle struct {
	node uint64 // the node opened
	f    *os.File
	rc   syscall.RawConn // f's, through which calls hold f open while they run
	obj  File            // a FileFS's open file, in f's place

	// A directory's entries, listed when it is first read from its
	// start (the kernel often reads directories from its own cache).
	mu   sync.Mutex
	ents []DirEntry
}

// isFile reports whether hd is an open file (not a directory's).
func (hd *handle) isFile() bool { return hd.f != nil || hd.obj != nil }

// close closes hd's file.
func (hd *handle) close() {
	if hd.f != nil {
		hd.f.Close()
	}
	if hd.obj != nil {
		hd.obj.Close()
	}
}

// fstat is fstat(2) of hd's file.
func (hd *handle) fstat(ctx context.Context, st *unix.Stat_t) error {
	if hd.obj != nil {
		s, err := hd.obj.Stat(ctx)
		*st = s
		return err
	}
	return hd.do(func(fd int) error { return unix.Fstat(fd, st) })
}

// do runs fn with the handle's descriptor, which cannot be closed (and
// its number reused) while fn runs: a Release or Close meanwhile waits.
func (hd *handle) do(fn func(fd int) error) error {
	if hd.rc == nil {
		return syscall.EBADF // a File's handle: no descriptor
	}
	var err error
	if cerr := hd.rc.Control(func(fd uintptr) { err = fn(int(fd)) }); cerr != nil {
		return syscall.EBADF
	}
	return err
}

// changedAttrs reports whether own or fixMode changed a new file's owner
// or mode from a to b.
func changedAttrs(a, b *unix.Stat_t) bool {
	return a.Uid != b.Uid || a.Gid != b.Gid || a.Mode != b.Mode
}

// fdOf runs fn with f's descriptor (f.Fd would make it blocking).
func fdOf(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// fmodeExec is the kernel's __FMODE_EXEC, the open flag of execve's open.
const fmodeExec = 0x20

// enter lets a request through the gate, or gives the status every
// request gets after Revoke (EIO) or Close (ENOTCONN). A request let
// through calls leave when done.
func (r *rawFS) enter() fuse.Status {
	r.inflight.Add(1)
	switch r.state.Load() {
	case revoked:
		r.inflight.Add(-1)
		return fuse.EIO
	case closed:
		r.inflight.Add(-1)
		return fuse.Status(syscall.ENOTCONN)
	}
	return fuse.OK
}

func (r *rawFS) leave() { r.inflight.Add(-1) }

// begin starts a request on node h.NodeId, or on name in it if name is
// not "", that needs rights (op names it in an event): it passes the
// gate, finds the path and checks the rights. If it returns OK, the
// caller calls leave when done.
func (r *rawFS) begin(h *fuse.InHeader, name, op string, need Rights) (string, fuse.Status) {
	if st := r.enter(); !st.Ok() {
		return "", st
	}
	var path string
	var st fuse.Status
	if name == "" {
		path, st = r.path(h.NodeId)
	} else {
		path, st = r.childPath(h.NodeId, name)
	}
	if st.Ok() && need != 0 {
		st = r.check(h, op, path, need)
	}
	if !st.Ok() {
		r.leave()
	}
	return path, st
}

// attrOut answers with the attributes of node id, at path.
func (r *rawFS) attrOut(ctx context.Context, id uint64, path string, out *fuse.AttrOut) fuse.Status {
	var stat unix.Stat_t
	err := r.atNode(ctx, id, path, func(fsys FS, name string) (err error) {
		stat, err = fsys.Lstat(ctx, name)
		return err
	})
	if err != nil {
		return r.status(err)
	}
	out.SetTimeout(r.timeout)
	r.fillAttr(&stat, &out.Attr)
	return fuse.OK
}

// lstatIn returns the attributes of name in directory node parent, at
// dirPath (see at).
func (r *rawFS) lstatIn(ctx context.Context, parent uint64, dirPath, name string) (st unix.Stat_t, err error) {
	err = r.at(ctx, parent, dirPath, name, func(fsys FS, name string) error {
		st, err = fsys.Lstat(ctx, name)
		return err
	})
	return st, err
}

// at runs fn with the FS to call for name in directory node parent (at
// dirPath) and the name to give it: the directory's own FS and name
// where the FS can open directories (subFS), so that most calls on the
// host are one system call beneath the directory's descriptor; else the
// whole FS and the path from the root. The root needs no FS of its own:
// a name in it is one call already.
func (r *rawFS) at(ctx context.Context, parent uint64, dirPath, name string, fn func(fsys FS, name string) error) error {
	sfs, ok := r.fs.(subFS)
	if !ok || dirPath == "." {
		return fn(r.fs, join(dirPath, name))
	}
	d, done, err := r.subDir(ctx, sfs, parent, dirPath, 0)
	if err != nil {
		return fn(r.fs, join(dirPath, name))
	}
	defer done()
	return fn(d, name)
}

// maxDirDepth bounds how many directories subDir opens one beneath
// another to reach one whose path is too long for one call.
const maxDirDepth = unix.PathMax / 2

// subDir returns the directory of node id at path, an FS kept in r.dirs,
// and the function that ends its use: opened by its path from the root,
// or, where that path is too long for one call (PATH_MAX), beneath its
// parent's, found the same way, so that names deeper than PATH_MAX are
// served as a kernel bind serves them. It is kept only if it is the
// node's directory: a rename meanwhile could have put another at path.
func (r *rawFS) subDir(ctx context.Context, sfs subFS, id uint64, path string, depth int) (FS, func(), error) {
	if d, done := r.dirs.get(id); d != nil {
		return d, done, nil
	}
	var sub FS
	err := error(unix.ENAMETOOLONG)
	if len(path) < unix.PathMax {
		sub, err = sfs.Sub(ctx, path)
	}
	if errors.Is(err, unix.ENAMETOOLONG) && depth < maxDirDepth {
		dirPath, name := splitPath(path)
		if pid, ok := r.nodes.parentAt(id, path); ok {
			var parent FS
			var pdone func()
			if parent, pdone, err = r.subDir(ctx, sfs, pid, dirPath, depth+1); err == nil {
				err = unix.ENAMETOOLONG
				if ps, ok := parent.(subFS); ok {
					sub, err = ps.Sub(ctx, name)
				}
				pdone()
			}
		}
	}
	if err != nil {
		return nil, nil, err
	}
	st, err := sub.Lstat(ctx, ".")
	if ino, ok := r.nodes.ino(id); err != nil || !ok || st.Ino != ino {
		sub.Close()
		return nil, nil, unix.ESTALE
	}
	d, done := r.dirs.add(id, sub)
	return d, done, nil
}

// atNode runs fn as at does, for node id at path.
func (r *rawFS) atNode(ctx context.Context, id uint64, path string, fn func(fsys FS, name string) error) error {
	if parent, ok := r.nodes.parentAt(id, path); ok {
		dirPath, name := splitPath(path)
		return r.at(ctx, parent, dirPath, name, fn)
	}
	return fn(r.fs, path)
}

// splitPath splits a path from the root into its directory ("." in the
// root) and last name.
func splitPath(path string) (dir, name string) {
	i := strings.LastIndexByte(path, '/')
	if i < 0 {
		return ".", path
	}
	return path[:i], path[i+1:]
}

// check returns OK if the mount's rights include need, or else reports
// the refusal as an Event and returns EACCES.
func (r *rawFS) check(h *fuse.InHeader, op, path string, need Rights) fuse.Status {
	missing := need &^ r.rights
	if missing == 0 {
		return fuse.OK
	}
	if r.events != nil {
		p := "/"
		if path != "." {
			p += path
		}
		r.events(Event{Time: time.Now(), Kind: "denied", Mount: r.dest, PID: int(h.Pid), Op: op, Path: p, Missing: missing.String()})
	}
	r.log.Debug("served: refused", "mount", r.dest, "op", op, "path", path, "missing", missing.String(), "pid", h.Pid)
	return fuse.EACCES
}

// status is the FUSE status of an FS error: its errno, ENOTCONN once the
// FS is closed, else EIO.
func (r *rawFS) status(err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if errno == syscall.ENOENT && r.gone() {
			return fuse.EIO
		}
		return fuse.Status(errno)
	}
	if errors.Is(err, fs.ErrClosed) || r.state.Load() == closed {
		return fuse.Status(syscall.ENOTCONN)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fuse.EINTR
	}
	r.log.Debug("served: error without errno", "mount", r.dest, "err", err)
	return fuse.EIO
}

// gone reports whether the served directory itself was removed (from
// outside the mount: its link count is 0), asked when a call found a name
// missing: every call then fails with EIO, as on a grant that ended,
// rather than ENOENT, which would say that only the name is missing.
// Only a host directory (subFS) is asked, which costs one fstat.
func (r *rawFS) gone() bool {
	if _, ok := r.fs.(subFS); !ok {
		return false
	}
	st, err := r.fs.Lstat(r.ctx, ".")
	return err == nil && st.Nlink == 0
}

// validName reports whether name may be a name in a directory.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

func (r *rawFS) path(id uint64) (string, fuse.Status) {
	p, ok := r.nodes.path(id)
	if !ok {
		return "", fuse.ENOENT
	}
	return p, fuse.OK
}

func (r *rawFS) childPath(id uint64, name string) (string, fuse.Status) {
	if !validName(name) {
		return "", fuse.EINVAL
	}
	p, ok := r.nodes.childPath(id, name)
	if !ok {
		return "", fuse.ENOENT
	}
	return p, fuse.OK
}

// fillAttr converts a host stat to FUSE attributes, IDs mapped into the
// mount's user namespace.
func (r *rawFS) fillAttr(st *unix.Stat_t, a *fuse.Attr) {
	*a = fuse.Attr{
		Ino:       st.Ino,
		Size:      uint64(st.Size),
		Blocks:    uint64(st.Blocks),
		Atime:     uint64(st.Atim.Sec),
		Atimensec: uint32(st.Atim.Nsec),
		Mtime:     uint64(st.Mtim.Sec),
		Mtimensec: uint32(st.Mtim.Nsec),
		Ctime:     uint64(st.Ctim.Sec),
		Ctimensec: uint32(st.Ctim.Nsec),
		Mode:      st.Mode,
		Nlink:     uint32(st.Nlink),
		Owner:     fuse.Owner{Uid: r.uids.inside(st.Uid), Gid: r.gids.inside(st.Gid)},
		Rdev:      uint32(st.Rdev),
		Blksize:   uint32(st.Blksize),
	}
}

func (r *rawFS) setTimeouts(out *fuse.EntryOut) {
	out.SetEntryTimeout(r.timeout)
	out.SetAttrTimeout(r.timeout)
}

func (r *rawFS) entryOf(parent uint64, name string, st *unix.Stat_t, out *fuse.EntryOut) fuse.Status {
	n := r.nodes.lookup(parent, name, st.Ino)
	if n == nil {
		return fuse.ENOENT
	}
	out.NodeId = n.id
	out.Generation = 0
	r.setTimeouts(out)
	r.fillAttr(st, &out.Attr)
	return fuse.OK
}

// filesOfHost reports whether the descriptors fsys returns are this
// process's own opens of the host's files (Host, and unions of Host
// FSes), on which the server may change owners, modes and times by
// descriptor. Others' (an rpc Directory's: another process, maybe
// another user, chose what they refer to) are changed by name, through
// the FS, which does it with its own rights; by descriptor, the server
// (as root, or as the user who owns the file) would change whatever
// file the other side handed it.
func filesOfHost(fsys FS) bool {
	h, ok := fsys.(interface{ hostFiles() bool })
	return ok && h.hostFiles()
}

// fixMode gives a file just made the mode the kernel asked for (the
// program's umask applied already), where the FS made it with another:
// a server's or a remote FS's own umask takes bits away, and which ones
// only the result shows. st is the file's stat, after own; the mode the
// file has after is returned. A directory's set-group-ID bit inherited
// from its parent stays. A file that is not a directory keeps its
// set-user-ID bit only if it is the caller's (its host user is the
// caller's), and its set-group-ID bit only if its group is the caller's:
// a server that made it as another user (caplin as root) and could not
// give it to the caller (own), or whose group a set-group-ID directory
// chose, must not leave a program a set-ID file of IDs it does not have.
func (r *rawFS) fixMode(ctx context.Context, c *fuse.Caller, fsys FS, name string, mode uint32, st *unix.Stat_t, f *os.File) uint32 {
	have := st.Mode
	want := mode & 0o7777
	if have&unix.S_IFMT == unix.S_IFDIR {
		want |= have & unix.S_ISGID
	} else {
		if uid, ok := r.uids.outside(c.Uid); !ok || st.Uid != uid {
			want &^= unix.S_ISUID
		}
		if gid, ok := r.gids.outside(c.Gid); want&unix.S_ISGID != 0 && (!ok || st.Gid != gid) && !r.sgidParentGroup(ctx, fsys, name, st) {
			want &^= unix.S_ISGID
		}
	}
	if have&0o7777 == want || have&unix.S_IFMT == unix.S_IFLNK {
		return have
	}
	var err error
	if f != nil && filesOfHost(fsys) {
		err = f.Chmod(filemode.Perm(want))
	} else {
		err = fsys.Chmod(ctx, name, want)
	}
	if err != nil {
		r.log.Debug("served: mode of a new file", "mount", r.dest, "name", name, "err", err)
		return have
	}
	return have&^0o7777 | want
}

// sgidParentGroup reports whether the group of st, a file just made as
// name, is its set-group-ID parent directory's, on a kernel that strips
// a new file's set-group-ID bit itself (Linux 6.0) where the caller is
// not in that group: a set-group-ID bit the kernel asked for is then
// the caller's to have, though its own group is another (a supplementary
// group, which a FUSE request does not carry).
func (r *rawFS) sgidParentGroup(ctx context.Context, fsys FS, name string, st *unix.Stat_t) bool {
	if !kernelStripsSGID() {
		return false
	}
	parent, err := fsys.Lstat(ctx, filepath.Dir(name))
	return err == nil && parent.Mode&unix.S_ISGID != 0 && parent.Gid == st.Gid
}

// kernelStripsSGID reports whether the kernel strips a new file's
// set-group-ID bit in the VFS, before a FUSE server is asked (Linux 6.0).
var kernelStripsSGID = sync.OnceValue(func() bool {
	release, _, err := kernel.Uname()
	return err == nil && kernel.AtLeast(release, 6, 0)
})

// own gives a node just made the caller's host IDs as its owners, as a
// kernel file system gives it the creator's, where the server made it as
// another user (caplin run as root serving a sandbox whose host user is
// unprivileged: else the program could not write what it made); the
// group stays where a set-group-ID directory chose it. st follows. Where
// the server may not change owners, it stops trying.
func (r *rawFS) own(ctx context.Context, c *fuse.Caller, fsys FS, name string, st *unix.Stat_t, f *os.File) {
	uid, uok := r.uids.outside(c.Uid)
	gid, gok := r.gids.outside(c.Gid)
	if !uok || !gok || (st.Uid == uid && st.Gid == gid) {
		return
	}
	if _, refused := r.noChown.Load(st.Dev); refused {
		return
	}
	g := int(gid)
	if st.Gid != gid {
		if parent, err := fsys.Lstat(ctx, filepath.Dir(name)); err == nil && parent.Mode&unix.S_ISGID != 0 {
			g = -1
		}
	}
	if st.Uid == uid && g == -1 {
		return
	}
	var err error
	if f != nil && filesOfHost(fsys) {
		err = f.Chown(int(uid), g)
	} else {
		err = fsys.Chown(ctx, name, int(uid), g)
	}
	if err != nil {
		if errors.Is(err, syscall.EPERM) {
			r.noChown.Store(st.Dev, true)
		}
		r.log.Debug("served: owner of a new file", "mount", r.dest, "name", name, "err", err)
		return
	}
	st.Uid = uid
	if g != -1 {
		st.Gid = gid
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		// chown took these away; fixMode gives back what was asked.
		st.Mode &^= unix.S_ISUID
		if st.Mode&unix.S_IXGRP != 0 {
			st.Mode &^= unix.S_ISGID
		}
	}
}

func (r *rawFS) String() string { return "caplin-served" }

func (r *rawFS) SetDebug(bool) {}

func (r *rawFS) Init(s *fuse.Server) { r.srv.Store(s) }

func (r *rawFS) OnUnmount() { r.shutdown() }

func (r *rawFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	if st := r.enter(); !st.Ok() {
		return st
	}
	defer r.leave()
	if !validName(name) {
		return fuse.EINVAL
	}
	dirPath, st := r.path(h.NodeId)
	if !st.Ok() {
		return st
	}
	stat, err := r.lstatIn(ctx, h.NodeId, dirPath, name)
	if errors.Is(err, syscall.ENOENT) {
		if r.gone() {
			return fuse.EIO
		}
		if r.nodes.missing(h.NodeId, name) {
			// A negative entry the kernel may cache for the timeout.
			*out = fuse.EntryOut{}
			out.SetEntryTimeout(r.timeout)
			return fuse.OK
		}
		return fuse.ENOENT
	}
	if err != nil {
		return r.status(err)
	}
	return r.entryOf(h.NodeId, name, &stat, out)
}

func (r *rawFS) Forget(nodeid, nlookup uint64) {
	if r.nodes.forget(nodeid, nlookup) {
		r.files.forget(nodeid)
		r.dirs.drop(nodeid)
	}
}

func (r *rawFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	if st := r.enter(); !st.Ok() {
		return st
	}
	defer r.leave()
	var stat unix.Stat_t
	if in.Flags()&fuse.FUSE_GETATTR_FH != 0 {
		if hd := r.handle(in.Fh()); hd != nil && hd.isFile() {
			if err := hd.fstat(ctx, &stat); err != nil {
				return r.status(err)
			}
			out.SetTimeout(r.timeout)
			r.fillAttr(&stat, &out.Attr)
			return fuse.OK
		}
	}
	path, st := r.path(in.NodeId)
	if st == fuse.ENOENT {
		// A file removed while open (fstat of an unlinked file): its
		// attributes through a descriptor the server holds for it.
		if hd := r.openHandle(in.NodeId); hd != nil {
			if err := hd.fstat(ctx, &stat); err != nil {
				return r.status(err)
			}
			out.SetTimeout(r.timeout)
			r.fillAttr(&stat, &out.Attr)
			return fuse.OK
		}
	}
	if !st.Ok() {
		return st
	}
	st = r.attrOut(ctx, in.NodeId, path, out)
	if st.Ok() && r.noOpen {
		if ino, ok := r.nodes.ino(in.NodeId); ok && ino != out.Ino {
			// The name holds another file now, which reads by the
			// node's path have always reached: so do they again.
			r.files.dropReader(in.NodeId)
		}
	}
	return st
}

func (r *rawFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	var need Rights
	if in.Valid&fuse.FATTR_SIZE != 0 {
		need |= RightWrite
	}
	if in.Valid&(fuse.FATTR_MODE|fuse.FATTR_UID|fuse.FATTR_GID|fuse.FATTR_ATIME|fuse.FATTR_MTIME|fuse.FATTR_ATIME_NOW|fuse.FATTR_MTIME_NOW) != 0 {
		need |= RightSetAttr
	}
	var hd *handle
	if fh, ok := in.GetFh(); ok {
		hd = r.handle(fh)
	}
	path, st := r.begin(&in.InHeader, "", "setattr", need)
	if st == fuse.ENOENT {
		// A file removed while open (fchmod, ftruncate of an unlinked
		// file) changes through a descriptor the server holds for it:
		// path "" below.
		if hd == nil || !hd.isFile() {
			hd = r.openHandle(in.NodeId)
		}
		if hd == nil {
			return st
		}
		if st = r.enter(); st.Ok() {
			if st = r.check(&in.InHeader, "setattr", "(deleted)", need); !st.Ok() {
				r.leave()
			}
		}
	}
	if !st.Ok() {
		return st
	}
	defer r.leave()
	byFD := func(fn func(fd int) error) error { return hd.do(fn) }
	// Owners, modes and times change by descriptor only on the host's own
	// files (filesOfHost); a removed file of another FS has no name to
	// change them by.
	byFDMeta := func(fn func(fd int) error) error {
		if !filesOfHost(r.fs) {
			return syscall.EPERM
		}
		return byFD(fn)
	}
	if in.Valid&(fuse.FATTR_UID|fuse.FATTR_GID) != 0 {
		uid, gid := -1, -1
		if in.Valid&fuse.FATTR_UID != 0 {
			u, ok := r.uids.outside(in.Uid)
			if !ok {
				return fuse.EINVAL
			}
			uid = int(u)
		}
		if in.Valid&fuse.FATTR_GID != 0 {
			g, ok := r.gids.outside(in.Gid)
			if !ok {
				return fuse.EINVAL
			}
			gid = int(g)
		}
		var err error
		if path == "" {
			err = byFDMeta(func(fd int) error { return unix.Fchown(fd, uid, gid) })
		} else {
			err = r.atNode(ctx, in.NodeId, path, func(fsys FS, name string) error { return fsys.Chown(ctx, name, uid, gid) })
		}
		if err != nil {
			return r.status(err)
		}
	}
	if in.Valid&fuse.FATTR_MODE != 0 {
		var err error
		if path == "" {
			err = byFDMeta(func(fd int) error { return unix.Fchmod(fd, in.Mode&0o7777) })
		} else {
			err = r.atNode(ctx, in.NodeId, path, func(fsys FS, name string) error { return fsys.Chmod(ctx, name, in.Mode&0o7777) })
		}
		if err != nil {
			return r.status(err)
		}
	}
	if in.Valid&fuse.FATTR_SIZE != 0 {
		var err error
		kill := r.asRoot && in.Valid&fuse.FATTR_KILL_SUIDGID != 0
		if hd != nil && hd.obj != nil {
			err = hd.obj.Truncate(ctx, int64(in.Size))
		} else if hd != nil && hd.f != nil {
			kill = kill && filesOfHost(r.fs)
			err = hd.do(func(fd int) error {
				if kill {
					if err := killSUIDGID(fd); err != nil {
						return err
					}
				}
				return unix.Ftruncate(fd, int64(in.Size))
			})
		} else {
			err = r.atNode(ctx, in.NodeId, path, func(fsys FS, name string) error {
				if kill {
					if err := killSUIDGIDIn(ctx, fsys, name); err != nil {
						return err
					}
				}
				return fsys.Truncate(ctx, name, int64(in.Size))
			})
		}
		if err != nil {
			return r.status(err)
		}
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME|fuse.FATTR_ATIME_NOW|fuse.FATTR_MTIME_NOW) != 0 {
		var atime, mtime *unix.Timespec
		switch {
		case in.Valid&fuse.FATTR_ATIME_NOW != 0:
			atime = &unix.Timespec{Nsec: unix.UTIME_NOW}
		case in.Valid&fuse.FATTR_ATIME != 0:
			atime = &unix.Timespec{Sec: int64(in.Atime), Nsec: int64(in.Atimensec)}
		}
		switch {
		case in.Valid&fuse.FATTR_MTIME_NOW != 0:
			mtime = &unix.Timespec{Nsec: unix.UTIME_NOW}
		case in.Valid&fuse.FATTR_MTIME != 0:
			mtime = &unix.Timespec{Sec: int64(in.Mtime), Nsec: int64(in.Mtimensec)}
		}
		var err error
		if path == "" {
			err = byFDMeta(func(fd int) error { return futimens(fd, atime, mtime) })
		} else {
			err = r.atNode(ctx, in.NodeId, path, func(fsys FS, name string) error { return fsys.Utimens(ctx, name, atime, mtime) })
		}
		if err != nil {
			return r.status(err)
		}
	}
	if path == "" {
		var stat unix.Stat_t
		if err := hd.fstat(ctx, &stat); err != nil {
			return r.status(err)
		}
		out.SetTimeout(r.timeout)
		r.fillAttr(&stat, &out.Attr)
		return fuse.OK
	}
	if st := r.attrOut(ctx, in.NodeId, path, out); !st.Ok() {
		return st
	}
	if out.Attr.Nlink > 1 && out.Attr.Mode&unix.S_IFMT != unix.S_IFDIR {
		// The file's other names have its old attributes.
		r.invalidateAttrs(r.nodes.links(out.Attr.Ino, in.NodeId))
	}
	return fuse.OK
}

func (r *rawFS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	path, st := r.begin(h, "", "readlink", RightRead)
	if !st.Ok() {
		return nil, st
	}
	defer r.leave()
	var target string
	err := r.atNode(ctx, h.NodeId, path, func(fsys FS, name string) (err error) {
		target, err = fsys.Readlink(ctx, name)
		return err
	})
	if err != nil {
		return nil, r.status(err)
	}
	return []byte(target), fuse.OK
}

// create runs the part common to requests that make a name: the gate, the
// path, the rights, make, the mode, and the entry.
func (r *rawFS) create(ctx context.Context, h *fuse.InHeader, op string, name string, need Rights, mode uint32, out *fuse.EntryOut, make func(fsys FS, name string) error) fuse.Status {
	path, st := r.begin(h, name, op, need)
	if !st.Ok() {
		return st
	}
	defer r.leave()
	dirPath, _ := splitPath(path)
	var stat unix.Stat_t
	at := r.at
	if op == "link" {
		// The old name is a path from the root: so is the new one.
		at = func(_ context.Context, _ uint64, _, _ string, fn func(FS, string) error) error { return fn(r.fs, path) }
	}
	err := at(ctx, h.NodeId, dirPath, name, func(fsys FS, name string) error {
		if err := make(fsys, name); err != nil {
			return err
		}
		var err error
		if stat, err = fsys.Lstat(ctx, name); err != nil {
			return err
		}
		before := stat
		if op != "link" {
			r.own(ctx, &h.Caller, fsys, name, &stat, nil)
		}
		if mode != 0 {
			stat.Mode = r.fixMode(ctx, &h.Caller, fsys, name, mode, &stat, nil)
		}
		if changedAttrs(&before, &stat) {
			// The change moved the ctime: the kernel caches what the
			// host holds now.
			if st, err := fsys.Lstat(ctx, name); err == nil {
				stat = st
			}
		}
		return nil
	})
	if err != nil {
		return r.status(err)
	}
	if st := r.entryOf(h.NodeId, name, &stat, out); !st.Ok() {
		return st
	}
	if stat.Nlink > 1 && stat.Mode&unix.S_IFMT != unix.S_IFDIR {
		// A link: the file's other names have its old link count.
		r.invalidateAttrs(r.nodes.links(stat.Ino, out.NodeId))
	}
	return fuse.OK
}

// invalidateAttrs tells the kernel to drop the attributes it holds for
// nodes ids (and keep their pages): the other names of a file that
// changed through one of them, which the kernel takes for files of their
// own. The notification carries no lock the request being answered may
// hold, so it is sent before the reply.
func (r *rawFS) invalidateAttrs(ids []uint64) {
	srv := r.srv.Load()
	if srv == nil {
		return
	}
	for _, id := range ids {
		srv.InodeNotify(id, -1, 0)
	}
}

func (r *rawFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	return r.create(ctx, &in.InHeader, "mknod", name, RightCreate, in.Mode, out, func(fsys FS, name string) error {
		// Made without set-ID bits, which fixMode gives once it is the
		// caller's (see Create).
		return fsys.Mknod(ctx, name, in.Mode&^(unix.S_ISUID|unix.S_ISGID), uint64(in.Rdev))
	})
}

func (r *rawFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	return r.create(ctx, &in.InHeader, "mkdir", name, RightCreate, in.Mode, out, func(fsys FS, name string) error {
		return fsys.Mkdir(ctx, name, in.Mode&0o7777)
	})
}

func (r *rawFS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	return r.create(ctx, h, "symlink", name, RightCreate, 0, out, func(fsys FS, name string) error {
		return fsys.Symlink(ctx, target, name)
	})
}

func (r *rawFS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	oldpath, st := r.path(in.Oldnodeid)
	if !st.Ok() {
		return st
	}
	return r.create(ctx, &in.InHeader, "link", name, RightLink|RightCreate, 0, out, func(_ FS, name string) error {
		// Two names: both from the root (see create).
		return r.fs.Link(ctx, oldpath, name)
	})
}

func (r *rawFS) remove(ctx context.Context, h *fuse.InHeader, op, name string, rm func(fsys FS, name string) error) fuse.Status {
	path, st := r.begin(h, name, op, RightDelete)
	if !st.Ok() {
		return st
	}
	defer r.leave()
	dirPath, _ := splitPath(path)
	var victim heldVictim
	err := r.at(ctx, h.NodeId, dirPath, name, func(fsys FS, name string) error {
		if op == "unlink" {
			victim = r.holdVictim(ctx, h.NodeId, fsys, name)
		}
		return rm(fsys, name)
	})
	if err != nil {
		victim.cancel()
		return r.status(err)
	}
	victim.keep()
	// The file's other names have its old link count and ctime.
	r.invalidateAttrs(r.nodes.remove(h.NodeId, name))
	return fuse.OK
}

func (r *rawFS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	return r.remove(ctx, h, "unlink", name, func(fsys FS, name string) error { return fsys.Unlink(ctx, name) })
}

func (r *rawFS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	return r.remove(ctx, h, "rmdir", name, func(fsys FS, name string) error { return fsys.Rmdir(ctx, name) })
}

func (r *rawFS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	if st := r.enter(); !st.Ok() {
		return st
	}
	defer r.leave()
	oldpath, st := r.childPath(in.NodeId, oldName)
	if !st.Ok() {
		return st
	}
	newpath, st := r.childPath(in.Newdir, newName)
	if !st.Ok() {
		return st
	}
	need := RightRename | RightCreate
	exchange := in.Flags&unix.RENAME_EXCHANGE != 0
	if exchange {
		need |= RightDelete
	}
	if st := r.check(&in.InHeader, "rename", oldpath, need); !st.Ok() {
		return st
	}
	flags := in.Flags
	if !exchange && r.rights&RightDelete == 0 {
		// Replacing a name deletes what it held: without RightDelete
		// the host is asked not to replace (so that no name made
		// meanwhile through another route is replaced either), and a
		// name that is there is refused as the right's absence.
		flags |= unix.RENAME_NOREPLACE
	}
	var victim heldVictim
	rename := func(fsys FS, oldname, newname string) error {
		if flags&(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) == 0 {
			victim = r.holdVictim(ctx, in.Newdir, fsys, newname)
		}
		return fsys.Rename(ctx, oldname, newname, flags)
	}
	var err error
	if in.NodeId == in.Newdir {
		// Within one directory: beneath its descriptor, by names, as
		// other calls on names go (and so also deeper than PATH_MAX).
		dirPath, _ := splitPath(oldpath)
		err = r.at(ctx, in.NodeId, dirPath, oldName, func(fsys FS, name string) error {
			// name is oldName beneath the directory, or, where it could
			// not be opened, its path from the root: the new name goes
			// beside it either way.
			newname := newName
			if i := strings.LastIndexByte(name, '/'); i >= 0 {
				newname = name[:i+1] + newName
			}
			return rename(fsys, name, newname)
		})
	} else {
		// Two directories: two paths from the root.
		err = rename(r.fs, oldpath, newpath)
	}
	if err != nil {
		victim.cancel()
		if errors.Is(err, syscall.EEXIST) && flags != in.Flags {
			return r.check(&in.InHeader, "rename", oldpath, need|RightDelete)
		}
		return r.status(err)
	}
	victim.keep()
	r.invalidateAttrs(r.nodes.rename(in.NodeId, oldName, in.Newdir, newName, exchange))
	return fuse.OK
}

// heldVictim is a descriptor of a file about to be unlinked or replaced
// (see nodeFiles.held), kept if that succeeds.
type heldVictim struct {
	files *nodeFiles
	node  uint64
	hd    *handle
}

// holdVictim opens the regular file that a name in directory parent
// leads to (name in fsys), where a program may have it open and the
// server would not know (noOpen on a writable mount): for writing if it
// can, else for reading.
func (r *rawFS) holdVictim(ctx context.Context, parent uint64, fsys FS, name string) heldVictim {
	if !r.noOpen || r.readOnly {
		return heldVictim{}
	}
	_, base := splitPath(name)
	id, ok := r.nodes.child(parent, base)
	if !ok {
		return heldVictim{} // the kernel does not know it: nothing has it open
	}
	// Only a regular file: opening a FIFO or a device node would act on
	// it (a FIFO's reader would see a writer come and go).
	if st, err := fsys.Lstat(ctx, name); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return heldVictim{}
	}
	var f *os.File
	var err error
	for _, flag := range []int{unix.O_RDWR, unix.O_RDONLY} {
		if f, err = fsys.OpenFile(ctx, name, flag|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0); err == nil {
			break
		}
	}
	if err != nil {
		return heldVictim{}
	}
	hd, err := r.newFileHandle(f)
	if err != nil {
		return heldVictim{}
	}
	hd.node = id
	return heldVictim{&r.files, id, hd}
}

// keep holds the descriptor until the kernel forgets the node.
func (v heldVictim) keep() {
	if v.hd != nil {
		v.files.dropReader(v.node)
		v.files.hold(v.node, v.hd)
	}
}

// cancel closes the descriptor: the file stays where it was.
func (v heldVictim) cancel() {
	if v.hd != nil {
		v.hd.f.Close()
	}
}

// openNeed returns the rights an open with the kernel's flags needs, and
// the flags to open the host file with.
func (r *rawFS) openNeed(flags uint32) (need Rights, host int) {
	f := int(flags)
	acc := f & unix.O_ACCMODE
	switch {
	case f&fmodeExec != 0:
		need |= RightExec
	case acc != unix.O_WRONLY:
		need |= RightRead
	}
	if acc != unix.O_RDONLY || f&unix.O_TRUNC != 0 {
		if f&unix.O_APPEND != 0 && f&unix.O_TRUNC == 0 && r.rights&RightWrite == 0 {
			need |= RightAppend
		} else {
			need |= RightWrite
		}
	}
	host = f & (unix.O_ACCMODE | unix.O_APPEND | unix.O_TRUNC | unix.O_SYNC | unix.O_DSYNC | unix.O_CREAT | unix.O_EXCL)
	return need, host
}

// openFlags are the FOPEN_ flags of a handle opened with host flags:
// the page cache is kept between opens (the kernel drops it when it sees
// the file's mtime or size change: CAP_AUTO_INVAL_DATA), and close sends
// no FLUSH, which the server would have nothing to do for.
func (r *rawFS) openFlags(host int) uint32 {
	if r.rights&RightWrite == 0 && host&unix.O_ACCMODE != unix.O_RDONLY {
		// Append-only: no page cache, so no mmap write can reach the
		// file but through the O_APPEND descriptor, at its end.
		return fuse.FOPEN_DIRECT_IO
	}
	return fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH
}

func (r *rawFS) addHandle(hd *handle) uint64 {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	if r.handles == nil {
		r.handles = map[uint64]*handle{}
	}
	r.nextFh++
	r.handles[r.nextFh] = hd
	return r.nextFh
}

func (r *rawFS) handle(fh uint64) *handle {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	return r.handles[fh]
}

// openHandle returns a handle of a file open through node id, or nil.
func (r *rawFS) openHandle(id uint64) *handle {
	if hd := r.files.heldFile(id); hd != nil {
		return hd
	}
	r.hmu.Lock()
	defer r.hmu.Unlock()
	for _, hd := range r.handles {
		if hd.node == id && hd.isFile() {
			return hd
		}
	}
	return nil
}

func (r *rawFS) dropHandle(fh uint64) {
	r.hmu.Lock()
	hd := r.handles[fh]
	delete(r.handles, fh)
	r.hmu.Unlock()
	if hd != nil {
		hd.close()
	}
}

func (r *rawFS) newFileHandle(f *os.File) (*handle, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &handle{f: f, rc: rc}, nil
}

func (r *rawFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	if st := r.enter(); !st.Ok() {
		return st
	}
	defer r.leave()
	if r.noOpen {
		// The kernel takes this as success and sends no more opens
		// (nor releases) of files.
		return fuse.ENOSYS
	}
	path, st := r.path(in.NodeId)
	if !st.Ok() {
		return st
	}
	need, host := r.openNeed(in.Flags)
	host &^= unix.O_CREAT | unix.O_EXCL
	if st := r.check(&in.InHeader, "open", path, need); !st.Ok() {
		return st
	}
	// O_NONBLOCK: not blocking on a FIFO put there by another route (no
	// effect on a regular file's reads and writes).
	var f *os.File
	var obj File
	err := r.atNode(ctx, in.NodeId, path, func(fsys FS, name string) (err error) {
		if ffs, ok := fsys.(FileFS); ok {
			obj, err = ffs.OpenObject(ctx, name, host, 0)
			return err
		}
		f, err = fsys.OpenFile(ctx, name, host|unix.O_NONBLOCK, 0)
		return err
	})
	if err != nil {
		return r.status(err)
	}
	if obj != nil {
		hd := &handle{obj: obj, node: in.NodeId}
		out.Fh = r.addHandle(hd)
		out.OpenFlags = r.openFlags(host)
		return fuse.OK
	}
	hd, err := r.newFileHandle(f)
	if err != nil {
		return r.status(err)
	}
	if r.asRoot && host&unix.O_TRUNC != 0 && in.Mode&fuse.OPEN_KILL_SUIDGID != 0 && filesOfHost(r.fs) {
		if err := hd.do(killSUIDGID); err != nil {
			f.Close()
			return r.status(err)
		}
	}
	hd.node = in.NodeId
	out.Fh = r.addHandle(hd)
	out.OpenFlags = r.openFlags(host)
	return fuse.OK
}

// createObject is Create's open for a FileFS, as Create does it with
// descriptors: a new file (O_EXCL), or, where one exists and the program
// did not ask O_EXCL, the existing one opened as Open would, with the
// rights Open needs; a new file gets the caller's owners and the mode
// asked, by name.
func (r *rawFS) createObject(ctx context.Context, in *fuse.CreateIn, path string, ffs FileFS, name string, host *int, stat *unix.Stat_t) (File, fuse.Status, error) {
	obj, err := ffs.OpenObject(ctx, name, *host|unix.O_CREAT, in.Mode&0o1777) // set-ID bits by fixMode, as in Create
	made := err == nil
	if errors.Is(err, syscall.EEXIST) && in.Flags&unix.O_EXCL == 0 {
		need, h := r.openNeed(in.Flags)
		h &^= unix.O_CREAT | unix.O_EXCL
		*host = h
		if st := r.check(&in.InHeader, "open", path, need); !st.Ok() {
			return nil, st, nil
		}
		obj, err = ffs.OpenObject(ctx, name, h, 0)
		made = false
	}
	if err != nil {
		return nil, fuse.OK, err
	}
	st, err := obj.Stat(ctx)
	if err != nil {
		obj.Close()
		return nil, fuse.OK, err
	}
	*stat = st
	if made {
		before := *stat
		r.own(ctx, &in.Caller, ffs, name, stat, nil)
		stat.Mode = r.fixMode(ctx, &in.Caller, ffs, name, in.Mode, stat, nil)
		if changedAttrs(&before, stat) {
			if st, err := obj.Stat(ctx); err == nil {
				*stat = st
			}
		}
	}
	return obj, fuse.OK, nil
}

func (r *rawFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	if st := r.enter(); !st.Ok() {
		return st
	}
	defer r.leave()
	path, st := r.childPath(in.NodeId, name)
	if !st.Ok() {
		return st
	}
	need, host := r.openNeed(in.Flags)
	// A new file may be written with RightCreate alone: writing it
	// changes nothing that existed. Only a new file is made (O_EXCL,
	// so that its mode may be fixed); an existing one is opened as Open
	// would.
	need = need&^(RightWrite|RightAppend) | RightCreate
	host |= unix.O_EXCL
	if st := r.check(&in.InHeader, "create", path, need); !st.Ok() {
		return st
	}
	dirPath, _ := splitPath(path)
	var f *os.File
	var obj File
	var stat unix.Stat_t
	refused := fuse.OK
	err := r.at(ctx, in.NodeId, dirPath, name, func(fsys FS, name string) error {
		if ffs, ok := fsys.(FileFS); ok {
			var err error
			obj, refused, err = r.createObject(ctx, in, path, ffs, name, &host, &stat)
			return err
		}
		var err error
		// Made without its set-ID bits, which fixMode gives it once it
		// is the caller's (own): never, even for a moment, a set-ID file
		// of the server's user.
		f, err = fsys.OpenFile(ctx, name, host|unix.O_CREAT, in.Mode&0o1777)
		made := err == nil
		if errors.Is(err, syscall.EEXIST) && in.Flags&unix.O_EXCL == 0 {
			need, host = r.openNeed(in.Flags)
			host &^= unix.O_CREAT | unix.O_EXCL
			if refused = r.check(&in.InHeader, "open", path, need); !refused.Ok() {
				return nil
			}
			// Not blocking on a FIFO put there by another route.
			f, err = fsys.OpenFile(ctx, name, host|unix.O_NONBLOCK, 0)
			if err == nil && r.asRoot && host&unix.O_TRUNC != 0 && in.OpenFlags&fuse.OPEN_KILL_SUIDGID != 0 && filesOfHost(fsys) {
				if err = fdOf(f, killSUIDGID); err != nil {
					f.Close()
				}
			}
			made = false
		}
		if err != nil {
			return err
		}
		if err := fdOf(f, func(fd int) error { return unix.Fstat(fd, &stat) }); err != nil {
			f.Close()
			return err
		}
		if made {
			before := stat
			r.own(ctx, &in.Caller, fsys, name, &stat, f)
			stat.Mode = r.fixMode(ctx, &in.Caller, fsys, name, in.Mode, &stat, f)
			if changedAttrs(&before, &stat) {
				// As in create.
				var st unix.Stat_t
				if fdOf(f, func(fd int) error { return unix.Fstat(fd, &st) }) == nil {
					stat = st
				}
			}
		}
		return nil
	})
	if !refused.Ok() {
		return refused
	}
	if err != nil {
		return r.status(err)
	}
	var hd *handle
	if obj != nil {
		hd = &handle{obj: obj}
	} else if hd, err = r.newFileHandle(f); err != nil {
		return r.status(err)
	}
	if st := r.entryOf(in.NodeId, name, &stat, &out.EntryOut); !st.Ok() {
		hd.close()
		return st
	}
	hd.node = out.NodeId
	out.Fh = r.addHandle(hd)
	out.OpenFlags = r.openFlags(host)
	return fuse.OK
}

func (r *rawFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	if st := r.enter(); !st.Ok() {
		return nil, st
	}
	defer r.leave()
	if int(in.Size) < len(buf) {
		buf = buf[:in.Size]
	}
	if in.Fh == 0 && r.noOpen {
		return r.readPath(ctx, in, buf)
	}
	hd := r.handle(in.Fh)
	if hd == nil || !hd.isFile() {
		return nil, fuse.EBADF
	}
	var n int
	var err error
	if hd.obj != nil {
		n, err = hd.obj.ReadAt(ctx, buf, int64(in.Offset))
	} else {
		err = hd.do(func(fd int) (err error) {
			n, err = preadFull(fd, buf, int64(in.Offset))
			return err
		})
	}
	if err != nil {
		return nil, r.status(err)
	}
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

// readPath reads a file opened without the server (noOpen): through the
// descriptor held for it if it was unlinked or replaced, else through
// the node's read descriptor, opened by its path when it has none.
func (r *rawFS) readPath(ctx context.Context, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	read := func(hd *handle) (int, error) {
		var n int
		err := hd.do(func(fd int) (err error) {
			n, err = preadFull(fd, buf, int64(in.Offset))
			return err
		})
		return n, err
	}
	for try := 0; ; try++ {
		hd := r.files.heldFile(in.NodeId)
		if hd == nil {
			hd = r.files.reader(in.NodeId)
		}
		if hd == nil {
			path, st := r.path(in.NodeId)
			if !st.Ok() {
				return nil, st
			}
			if st := r.check(&in.InHeader, "read", path, RightRead); !st.Ok() {
				return nil, st
			}
			f, err := r.openNode(ctx, in.NodeId, unix.O_RDONLY)
			if err != nil {
				return nil, r.status(err)
			}
			if hd, err = r.newFileHandle(f); err != nil {
				return nil, r.status(err)
			}
			hd.node = in.NodeId
			hd = r.files.addReader(in.NodeId, hd)
		}
		n, err := read(hd)
		if err == nil {
			return fuse.ReadResultData(buf[:n]), fuse.OK
		}
		if !errors.Is(err, syscall.EBADF) || try > 0 {
			return nil, r.status(err)
		}
		// Closed meanwhile (evicted, or the file was unlinked and is
		// held now): once more.
	}
}

// byNode runs fn with a descriptor of node id opened with flag, for a
// request that comes without a handle (noOpen): the descriptor held for
// the node if it was unlinked or replaced, else one opened by its path
// for fn alone.
func (r *rawFS) byNode(ctx context.Context, id uint64, flag int, fn func(fd int) error) error {
	if hd := r.files.heldFile(id); hd != nil {
		return hd.do(fn)
	}
	f, err := r.openNode(ctx, id, flag)
	if err != nil {
		return err
	}
	defer f.Close()
	return fdOf(f, fn)
}

// openNode opens node id by its path with flag, if its path still leads
// to the node's file: where another file was put there (renamed over
// from outside the mount, say), a write by node must not reach it, and
// the call fails with ESTALE.
func (r *rawFS) openNode(ctx context.Context, id uint64, flag int) (*os.File, error) {
	path, st := r.path(id)
	if !st.Ok() {
		return nil, syscall.Errno(st)
	}
	var f *os.File
	err := r.atNode(ctx, id, path, func(fsys FS, name string) (err error) {
		f, err = fsys.OpenFile(ctx, name, flag|unix.O_NONBLOCK, 0)
		return err
	})
	if err != nil {
		return nil, err
	}
	var stat unix.Stat_t
	if err := fdOf(f, func(fd int) error { return unix.Fstat(fd, &stat) }); err != nil {
		f.Close()
		return nil, err
	}
	if ino, ok := r.nodes.ino(id); ok && stat.Ino != ino {
		f.Close()
		return nil, syscall.ESTALE
	}
	return f, nil
}

// preadFull reads until buf is full or the file ends: a short read would
// tell the kernel the file ended there.
func preadFull(fd int, buf []byte, off int64) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := unix.Pread(fd, buf[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

// futimens sets the times of file fd (nil: left as they are).
func futimens(fd int, atime, mtime *unix.Timespec) error {
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	if atime != nil {
		ts[0] = *atime
	}
	if mtime != nil {
		ts[1] = *mtime
	}
	return unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH)
}

// killSUIDGID clears the set-user-ID bit of the regular file fd, and its
// set-group-ID bit where group execution is on, as a write or truncation
// by a caller without CAP_FSETID must (the kernel leaves that to the
// server: CAP_HANDLE_KILLPRIV_V2). Only a server running as root calls
// it: the host kernel does it on the server's own write, truncation or
// O_TRUNC open when the server lacks CAP_FSETID, and it removes
// security.capability on every write.
func killSUIDGID(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if mode, kill := withoutSUIDGID(st.Mode); kill {
		return unix.Fchmod(fd, mode)
	}
	return nil
}

// killSUIDGIDIn is killSUIDGID of file name in fsys.
func killSUIDGIDIn(ctx context.Context, fsys FS, name string) error {
	st, err := fsys.Lstat(ctx, name)
	if err != nil {
		return err
	}
	if mode, kill := withoutSUIDGID(st.Mode); kill {
		return fsys.Chmod(ctx, name, mode)
	}
	return nil
}

// withoutSUIDGID returns the permission bits of a file of mode after a
// write by a caller without CAP_FSETID, and whether they changed.
func withoutSUIDGID(mode uint32) (uint32, bool) {
	if mode&unix.S_IFMT != unix.S_IFREG {
		return 0, false
	}
	m := mode &^ unix.S_ISUID
	if m&(unix.S_ISGID|unix.S_IXGRP) == unix.S_ISGID|unix.S_IXGRP {
		m &^= unix.S_ISGID
	}
	return m & 0o7777, m != mode
}

func (r *rawFS) Write(_ <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if st := r.enter(); !st.Ok() {
		return 0, st
	}
	defer r.leave()
	run := func(fn func(fd int) error) error {
		hd := r.handle(in.Fh)
		if hd == nil || hd.f == nil {
			return syscall.EBADF
		}
		return hd.do(fn)
	}
	if in.Fh == 0 && r.noOpen {
		// Opened without the server.
		path, _ := r.path(in.NodeId)
		if st := r.check(&in.InHeader, "write", path, RightWrite); !st.Ok() {
			return 0, st
		}
		// O_APPEND as the program opened the file: its writes land at
		// the end of the host file, wherever the kernel's cached size
		// put the offset.
		flag := unix.O_WRONLY | int(in.Flags)&unix.O_APPEND
		run = func(fn func(fd int) error) error {
			return r.byNode(r.ctx, in.NodeId, flag, fn)
		}
	}
	if hd := r.handle(in.Fh); hd != nil && hd.obj != nil {
		n, err := hd.obj.WriteAt(r.ctx, data, int64(in.Offset))
		if err != nil && n == 0 {
			return 0, r.status(err)
		}
		return uint32(n), fuse.OK
	}
	n := 0
	err := run(func(fd int) error {
		if r.asRoot && in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
			if err := killSUIDGID(fd); err != nil {
				return err
			}
		}
		for n < len(data) {
			m, err := unix.Pwrite(fd, data[n:], int64(in.Offset)+int64(n))
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return err
			}
			n += m
		}
		return nil
	})
	if err != nil && n == 0 {
		return 0, r.status(err)
	}
	return uint32(n), fuse.OK
}

func (r *rawFS) Lseek(_ <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	if st := r.enter(); !st.Ok() {
		return st
	}
	defer r.leave()
	hd := r.handle(in.Fh)
	if hd == nil || !hd.isFile() {
		return fuse.ENOSYS // the kernel seeks by itself from then on
	}
	var off int64
	var err error
	if hd.obj != nil {
		off, err = hd.obj.Seek(r.ctx, int64(in.Offset), int(in.Whence))
	} else {
		err = hd.do(func(fd int) (err error) {
			off, err = unix.Seek(fd, int64(in.Offset), int(in.Whence))
			return err
		})
	}
	if err != nil {
		return r.status(err)
	}
	out.Offset = uint64(off)
	return fuse.OK
}

// Flush has nothing to do: no data waits in the server, and locks are
// the kernel's. ENOSYS tells the kernel to send no more.
func (r *rawFS) Flush(_ <-chan struct{}, in *fuse.FlushIn) fuse.Status { return fuse.ENOSYS }

func (r *rawFS) Release(_ <-chan struct{}, in *fuse.ReleaseIn) { r.dropHandle(in.Fh) }

func (r *rawFS) Fsync(_ <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if st := r.enter(); !st.Ok() {
		return st
	}
	defer r.leave()
	sync := func(fd int) error {
		if in.FsyncFlags&1 != 0 {
			return unix.Fdatasync(fd)
		}
		return unix.Fsync(fd)
	}
	hd := r.handle(in.Fh)
	if hd != nil && hd.obj != nil {
		return r.status(hd.obj.Sync(r.ctx, in.FsyncFlags&1 != 0))
	}
	if hd == nil || hd.f == nil {
		if in.Fh != 0 || !r.noOpen || r.readOnly {
			return fuse.OK // opened without the server, for reading: nothing to sync
		}
		// Written through descriptors since closed: their data is the
		// host file's, which fsync of any descriptor of it writes out.
		return r.status(r.byNode(r.ctx, in.NodeId, unix.O_RDONLY, sync))
	}
	return r.status(hd.do(sync))
}

func (r *rawFS) Fallocate(_ <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if st := r.enter(); !st.Ok() {
		return st
	}
	defer r.leave()
	// A kernel file system clears the set-ID bits of a file that a caller
	// without CAP_FSETID changes by fallocate, as by write; the kernel asks
	// a FUSE server for that on write only (WRITE_KILL_SUIDGID). A server
	// that is root does it for a caller that is not the host's root, so
	// that a program cannot change a set-ID file it may write and keep it
	// set-ID (and then write it through a shared mapping, which asks for
	// nothing either).
	kill := r.asRoot && filesOfHost(r.fs)
	if uid, ok := r.uids.outside(in.Caller.Uid); ok && uid == 0 {
		kill = false
	}
	allocate := func(fd int) error {
		if err := unix.Fallocate(fd, in.Mode, int64(in.Offset), int64(in.Length)); err != nil {
			return err
		}
		if kill {
			return killSUIDGID(fd)
		}
		return nil
	}
	hd := r.handle(in.Fh)
	if hd == nil || !hd.isFile() {
		path, _ := r.path(in.NodeId)
		if st := r.check(&in.InHeader, "fallocate", path, RightWrite); !st.Ok() {
			return st
		}
		if in.Fh != 0 || !r.noOpen {
			return fuse.EBADF
		}
		return r.status(r.byNode(r.ctx, in.NodeId, unix.O_WRONLY, allocate))
	}
	if in.Mode&^unix.FALLOC_FL_KEEP_SIZE != 0 {
		// Punching holes, zeroing, collapsing or inserting ranges
		// changes what is there: RightWrite, whatever the handle was
		// opened for (an append-only handle is O_APPEND on the host,
		// which fallocate ignores).
		path, _ := r.path(in.NodeId)
		if st := r.check(&in.InHeader, "fallocate", path, RightWrite); !st.Ok() {
			return st
		}
	}
	if hd.obj != nil {
		return r.status(hd.obj.Allocate(r.ctx, in.Mode, int64(in.Offset), int64(in.Length)))
	}
	return r.status(hd.do(allocate))
}

func (r *rawFS) OpenDir(_ <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	_, st := r.begin(&in.InHeader, "", "opendir", RightRead)
	if !st.Ok() {
		return st
	}
	defer r.leave()
	if r.noOpenDir {
		// Success; the kernel sends no more directory opens nor
		// releases, and reads directories by node ID.
		return fuse.ENOSYS
	}
	out.Fh = r.addHandle(&handle{})
	// The kernel may keep the listing (it drops it when the directory's
	// mtime changes, or on invalidation).
	out.OpenFlags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	return fuse.OK
}

func (r *rawFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	return r.readDir(ctx, in, out, false)
}

func (r *rawFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	return r.readDir(ctx, in, out, true)
}

func (r *rawFS) readDir(ctx context.Context, in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	if st := r.enter(); !st.Ok() {
		return st
	}
	defer r.leave()
	dirPath, st := r.path(in.NodeId)
	if !st.Ok() {
		return st
	}
	var hd *handle
	if in.Fh == 0 && r.noOpenDir {
		if st := r.check(&in.InHeader, "opendir", dirPath, RightRead); !st.Ok() {
			return st
		}
		hd = r.listing(in.NodeId)
	} else {
		hd = r.handle(in.Fh)
	}
	if hd == nil || hd.isFile() {
		return fuse.EBADF
	}
	hd.mu.Lock()
	defer hd.mu.Unlock()
	if hd.ents == nil || in.Offset == 0 {
		var ents []DirEntry
		err := r.atNode(ctx, in.NodeId, dirPath, func(fsys FS, name string) (err error) {
			ents, err = fsys.ReadDir(ctx, name)
			return err
		})
		if err != nil {
			return r.status(err)
		}
		hd.ents = make([]DirEntry, 0, len(ents)+2)
		hd.ents = append(hd.ents, DirEntry{Name: ".", Type: unix.DT_DIR}, DirEntry{Name: "..", Type: unix.DT_DIR})
		hd.ents = append(hd.ents, ents...)
	}
	if in.Fh == 0 && int(in.Offset) >= len(hd.ents) {
		// The read past the end: the listing is done.
		r.dropListing(in.NodeId, hd)
	}
	for i := int(in.Offset); i < len(hd.ents); i++ {
		e := hd.ents[i]
		de := fuse.DirEntry{Mode: uint32(e.Type) << 12, Name: e.Name, Ino: e.Ino, Off: uint64(i + 1)}
		if !plus {
			if !out.AddDirEntry(de) {
				break
			}
			continue
		}
		var stat unix.Stat_t
		var err error = syscall.ENOENT
		if _, known := r.nodes.child(in.NodeId, e.Name); validName(e.Name) && !known {
			stat, err = r.lstatIn(ctx, in.NodeId, dirPath, e.Name)
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
			break
		}
		// A name the kernel knows (looked up before: git status looks
		// names up, then lists their directories) goes without
		// attributes (node ID 0: the kernel leaves its entry as it is),
		// and costs no stat.
		if err == nil {
			r.entryOf(in.NodeId, e.Name, &stat, eo)
		}
	}
	return fuse.OK
}

func (r *rawFS) ReleaseDir(in *fuse.ReleaseIn) { r.dropHandle(in.Fh) }

// maxListings bounds the listings kept for directories read without a
// handle, which readers that stop before the end leave behind.
const maxListings = 1024

// listing returns the listing of directory node id read without a handle.
func (r *rawFS) listing(id uint64) *handle {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	hd := r.listings[id]
	if hd == nil {
		if r.listings == nil || len(r.listings) >= maxListings {
			r.listings = map[uint64]*handle{}
		}
		hd = &handle{}
		r.listings[id] = hd
	}
	return hd
}

// dropListing forgets hd, the listing of node id, unless another replaced it.
func (r *rawFS) dropListing(id uint64, hd *handle) {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	if r.listings[id] == hd {
		delete(r.listings, id)
	}
}

func (r *rawFS) FsyncDir(_ <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if st := r.enter(); !st.Ok() {
		return st
	}
	r.leave()
	return fuse.OK
}

func (r *rawFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	if st := r.enter(); !st.Ok() {
		return st
	}
	defer r.leave()
	path, st := r.path(h.NodeId)
	if !st.Ok() {
		return st
	}
	var s unix.Statfs_t
	err := r.atNode(ctx, h.NodeId, path, func(fsys FS, name string) (err error) {
		s, err = fsys.Statfs(ctx, name)
		return err
	})
	if err != nil {
		return r.status(err)
	}
	*out = fuse.StatfsOut{
		Blocks: s.Blocks, Bfree: s.Bfree, Bavail: s.Bavail, Files: s.Files, Ffree: s.Ffree,
		Bsize: uint32(s.Bsize), NameLen: uint32(s.Namelen), Frsize: uint32(s.Frsize),
	}
	return fuse.OK
}

func (r *rawFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	path, st := r.begin(h, "", "getxattr", RightRead)
	if !st.Ok() {
		return 0, st
	}
	defer r.leave()
	var v []byte
	err := r.atNode(ctx, h.NodeId, path, func(fsys FS, name string) (err error) {
		v, err = fsys.Getxattr(ctx, name, attr)
		return err
	})
	if err != nil {
		return 0, r.status(err)
	}
	return copyOut(dest, v)
}

// copyOut answers an xattr read: the size alone for an empty buffer,
// ERANGE with the size for one too small.
func copyOut(dest, v []byte) (uint32, fuse.Status) {
	if len(dest) == 0 {
		return uint32(len(v)), fuse.OK
	}
	if len(v) > len(dest) {
		return uint32(len(v)), fuse.ERANGE
	}
	return uint32(copy(dest, v)), fuse.OK
}

func (r *rawFS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	path, st := r.begin(h, "", "listxattr", RightRead)
	if !st.Ok() {
		return 0, st
	}
	defer r.leave()
	var names []string
	err := r.atNode(ctx, h.NodeId, path, func(fsys FS, name string) (err error) {
		names, err = fsys.Listxattr(ctx, name)
		return err
	})
	if err != nil {
		return 0, r.status(err)
	}
	var b []byte
	for _, n := range names {
		if strings.HasPrefix(n, "trusted.") {
			// Listed for a root server, hidden from the program, as a
			// kernel file system lists them to privileged callers only
			// (and the program could not read them).
			continue
		}
		b = append(append(b, n...), 0)
	}
	return copyOut(dest, b)
}

func (r *rawFS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	path, st := r.begin(&in.InHeader, "", "setxattr", RightXattr)
	if !st.Ok() {
		return st
	}
	defer r.leave()
	if privilegedXattr(attr) {
		return fuse.EPERM
	}
	return r.status(r.atNode(ctx, in.NodeId, path, func(fsys FS, name string) error {
		return fsys.Setxattr(ctx, name, attr, data, int(in.Flags))
	}))
}

func (r *rawFS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	ctx := r.reqCtx(cancel)
	defer ctx.finish()
	path, st := r.begin(h, "", "removexattr", RightXattr)
	if !st.Ok() {
		return st
	}
	defer r.leave()
	if privilegedXattr(attr) {
		return fuse.EPERM
	}
	return r.status(r.atNode(ctx, h.NodeId, path, func(fsys FS, name string) error {
		return fsys.Removexattr(ctx, name, attr)
	}))
}

// privilegedXattr reports whether attr is outside the namespaces a
// program may set and remove through the server: user.* and the POSIX
// ACLs (system.posix_acl_access, system.posix_acl_default), which the
// kernel checks the caller's ownership for before asking. Every other
// namespace's attributes the host honours with privileges the program
// has only inside its user namespace, or that the file system behind
// decides alone: security.* (file capabilities, which would count in the
// host's initial namespace when the server writes them; LSM labels),
// trusted.*, and the rest of system.* (an NFS or CIFS ACL, which a root
// server would set on files of other users). The server, which may be
// root on the host, never sets or removes them, as the rpc Directory
// server does not.
func privilegedXattr(attr string) bool {
	return !strings.HasPrefix(attr, "user.") && attr != "system.posix_acl_access" && attr != "system.posix_acl_default"
}

// invalidate tells the kernel to drop every cached entry, attribute and
// page of the mount, so that what it asks next reaches the gate.
func (r *rawFS) invalidate() {
	srv := r.srv.Load()
	if srv == nil {
		return
	}
	ids, names := r.nodes.snapshot()
	for _, e := range names {
		srv.EntryNotify(e.parent, e.name)
	}
	for _, id := range ids {
		srv.InodeNotify(id, 0, 0)
	}
}

// shutdown closes every handle and the FS (once): from then on requests
// fail with ENOTCONN.
func (r *rawFS) shutdown() error {
	r.state.Store(closed)
	r.cancel()
	r.hmu.Lock()
	hs := r.handles
	r.handles = nil
	r.hmu.Unlock()
	for _, hd := range hs {
		hd.close()
	}
	r.files.closeAll()
	r.dirs.closeAll()
	r.closeOnce.Do(func() { r.closeErr = r.fs.Close() })
	return r.closeErr
}

// interruptGrace is how long a request the kernel interrupted may still
// run before its context ends. The kernel interrupts a request whenever
// its caller gets a signal, and Go's runtime signals its threads all the
// time (preemption), as a C program's handlers may (SIGCHLD under make):
// a request that ended at once with EINTR would fail the caller's call
// (open, write) with EINTR, which the kernel does not restart and which a
// kernel bind never gives. So an interrupted request that finishes within
// the grace answers as if never interrupted, and only one still running
// then (a remote that does not answer) ends with EINTR. A killed caller
// waits for the answer too (the kernel makes it), at most that long, so
// the grace is short: a kill still takes effect within a fifth of a
// second (the interrupt does not say whether the signal is fatal).
const interruptGrace = 200 * time.Millisecond

// reqCtx is the context of one request: done once the kernel has
// interrupted it interruptGrace ago (go-fuse closes the request's cancel
// channel), at once when the connection ends or the Server's context
// does; its values are the Server's. Its watcher starts only when Done
// or Err is first asked (most requests never ask), and ends when the
// request is answered (finish).
type reqCtx struct {
	context.Context                 // the Server's
	cancel          <-chan struct{} // go-fuse's
	mu              sync.Mutex
	done            chan struct{} // made by the first Done
	end             chan struct{} // closed by finish, if a watcher waits
	finished        bool
}

// reqCtx returns the context of a request; the operation must call its
// finish when it has answered.
func (r *rawFS) reqCtx(cancel <-chan struct{}) *reqCtx {
	return &reqCtx{Context: r.ctx, cancel: cancel}
}

// finish says the request is answered: its watcher, if any, stops.
func (c *reqCtx) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finished = true
	if c.end != nil {
		close(c.end)
	}
}

func (c *reqCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	c.done = make(chan struct{})
	if c.finished {
		return c.done // asked after the answer: nothing to wait for
	}
	c.end = make(chan struct{})
	done, end := c.done, c.end
	go func() {
		select {
		case <-c.cancel:
		case <-c.Context.Done():
			close(done)
			return
		case <-end:
			return
		}
		t := time.NewTimer(interruptGrace)
		defer t.Stop()
		select {
		case <-t.C:
		case <-c.Context.Done():
		case <-end:
			return
		}
		close(done)
	}()
	return c.done
}

func (c *reqCtx) Err() error {
	select {
	case <-c.Done():
		return context.Canceled
	default:
		return nil
	}
}

func (c *reqCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
