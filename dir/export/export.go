// Package export hands out a dir.Dir's subtree as a detached mount: a
// directory descriptor whose ".." cannot leave it, read-only and noexec as
// the Dir's rights say, with those attributes locked by the kernel, safe to
// give to another process (a sandbox's --ro-bind-fd, an rpc reply).
//
// It is a package of its own, above dir and proc, because making the mount
// takes a child process in a user and mount namespace of its own (made
// with proc.Fork): a program that only opens files through a dir.Dir
// links no fork server. Its one function is named for what it exports:
// export.Dir(ctx, d).
package export

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/dir/internal/borrow"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// ErrMoved is returned by Dir when the directory is no longer at the path
// it had when it was opened, in the mount namespace Dir clones it from
// (see Dir).
var ErrMoved = errors.New("export: the directory is not where its path says (renamed, or mounted over since)")

// exporter is a child of the caller's, in a user and mount namespace of
// its own: it has CAP_SYS_ADMIN over its mounts, without privilege
// outside, so it can clone subtrees into detached mounts. It is made again
// when its copy of the caller's mounts is stale; one in use by a Dir call
// is closed only once that call is done with it.
type exporter struct {
	mu  sync.Mutex
	cur *exporterGen
}

// An exporterGen is one exporter child and what tells when its copy of
// the mounts is stale.
type exporterGen struct {
	h *proc.Handle
	// mounts is /proc/self/mountinfo, opened before h was made: poll(2)
	// reports POLLPRI on it once the caller's mount table has changed
	// since, and h's copy of it is stale.
	mounts *os.File
	users  int  // Dir calls using h (guarded by exporter.mu)
	stale  bool // replaced: closed once users is 0
}

func (g *exporterGen) close() {
	g.h.Close()
	g.mounts.Close()
}

// theExporter is shared by the process: one child serves every export.
var theExporter exporter

// acquire returns the current exporter for a Dir call, made anew if there
// is none, its copy of the mounts is stale, or the caller found old (the
// generation it used) dead or out of date; release it with release.
func (e *exporter) acquire(ctx context.Context, old *exporterGen) (*exporterGen, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if g := e.cur; g != nil && (g == old || g.mountsChanged()) {
		e.retire(g)
	}
	if e.cur == nil {
		// Opened first: a change made while the child is made is one
		// it may have missed.
		m, err := os.Open("/proc/self/mountinfo")
		if err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		h, err := proc.Fork(ctx, &proc.Options{NewUser: true, NewMount: true})
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("export: making a user and mount namespace: %w", err)
		}
		e.cur = &exporterGen{h: h, mounts: m}
	}
	e.cur.users++
	return e.cur, nil
}

// retire replaces g, which is current: it is closed now if unused, else
// by its last user's release. e.mu is held.
func (e *exporter) retire(g *exporterGen) {
	e.cur = nil
	g.stale = true
	if g.users == 0 {
		g.close()
	}
}

// release ends a Dir call's use of g.
func (e *exporter) release(g *exporterGen) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if g.users--; g.users == 0 && g.stale {
		g.close()
	}
}

// mountsChanged reports whether the caller's mount table has changed since
// the exporter copied it (or whether that cannot be told): a mount made
// since, over a directory inside the one exported, would be missing from
// the copy, and the export would show what it hides.
func (g *exporterGen) mountsChanged() bool {
	fds := []unix.PollFd{{Fd: int32(g.mounts.Fd()), Events: unix.POLLPRI}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err != nil || n > 0 && fds[0].Revents&(unix.POLLPRI|unix.POLLERR|unix.POLLNVAL) != 0
	}
}

// Dir returns a directory descriptor for the root of a new, detached
// mount of d's subtree: a capability for exactly that subtree, safe to give
// to another process. Unlike a descriptor for an ordinary directory, from
// which openat(fd, "..") walks out into the rest of the file system, ".."
// at the root of a detached mount stays at the root, whatever the holder
// does with it. The caller owns the returned file; the mount lives as long
// as some descriptor refers to it, and appears in no mount table.
//
// The mount is made with open_tree(OPEN_TREE_CLONE|AT_RECURSIVE) (Linux
// 5.2) in a user and mount namespace that a child of the caller's owns, so
// no privilege is needed where unprivileged user namespaces are allowed.
// It is nosuid and nodev; without dir.RightWrite it is read-only, and without
// dir.RightExec noexec (mount_setattr, Linux 5.12), which the kernel enforces
// for every holder, unlike d's own rights; and the kernel has locked these
// attributes, so that not even a holder with a user and mount namespace of
// its own can clear them (see exportIn). Submounts under d come along,
// locked to it.
//
// open_tree cannot clone a directory through a descriptor from another
// mount namespace, so the child finds d by d's path, in a copy of the
// caller's mounts, and Dir checks that it found the same directory (device
// and inode); if not, it fails with ErrMoved. The copy is taken again
// whenever the caller's mount table has changed since (the kernel says so
// by poll(2) on /proc/self/mountinfo), so that the export has the mounts
// inside d that the caller sees, and none that they hide. The export is
// read-only, or noexec, where d's own mount is, whatever d's rights.
func Dir(ctx context.Context, d *dir.Dir) (*os.File, error) {
	var want unix.Stat_t
	var path string
	var mountFlags int64
	err := borrow.FD(d, "export", func(fd int) error {
		if err := unix.Fstat(fd, &want); err != nil {
			return &os.PathError{Op: "export", Path: d.Name(), Err: err}
		}
		var sfs unix.Statfs_t
		if err := unix.Fstatfs(fd, &sfs); err != nil {
			return &os.PathError{Op: "export", Path: d.Name(), Err: err}
		}
		mountFlags = sfs.Flags
		var err error
		path, err = os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		if err != nil {
			return &os.PathError{Op: "export", Path: d.Name(), Err: err}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	attr := uint64(unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV)
	// Never more than d's own mount allows, whatever mount the child
	// finds d's path on.
	if mountFlags&unix.ST_RDONLY != 0 {
		attr |= unix.MOUNT_ATTR_RDONLY
	}
	if mountFlags&unix.ST_NOEXEC != 0 {
		attr |= unix.MOUNT_ATTR_NOEXEC
	}
	if !d.Rights().Has(dir.RightWrite) {
		attr |= unix.MOUNT_ATTR_RDONLY
	}
	if !d.Rights().Has(dir.RightExec) {
		attr |= unix.MOUNT_ATTR_NOEXEC
	}
	var used *exporterGen
	for try := 0; ; try++ {
		g, err := theExporter.acquire(ctx, used)
		if err != nil {
			return nil, err
		}
		f, err := exportIn(ctx, g.h, path, attr, &want)
		theExporter.release(g)
		used = g
		if err != nil && ctx.Err() != nil {
			return nil, &os.PathError{Op: "export", Path: d.Name(), Err: ctx.Err()}
		}
		var dead *exporterDead
		if (errors.Is(err, ErrMoved) || errors.As(err, &dead)) && try == 0 {
			// The child's copy of the mounts may be stale, or the
			// exporter died: once more with a new one.
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "export", Path: d.Name(), Err: err}
		}
		return f, nil
	}
}

// exporterDead is exportIn's error when the exporter itself could not
// make its child: it is dead, and Dir makes a new one.
type exporterDead struct{ err error }

func (e *exporterDead) Error() string { return e.err.Error() }
func (e *exporterDead) Unwrap() error { return e.err }

// exportIn clones path in a child of the exporter h and returns the
// mount.
//
// Attributes set on a detached mount are not enough: whoever holds it and
// has CAP_SYS_ADMIN over some mount namespace (any unprivileged process
// can make a user namespace of its own) could clear them with
// mount_setattr, and write through a read-only export. The kernel refuses
// that only for a mount whose attributes it has locked, which it does to
// every mount of a mount namespace it copies into a less privileged user
// namespace. So a child of the exporter, in a mount namespace of its own,
// attaches the clone, with its attributes set, over its root directory,
// and makes it its root and working directory; then it makes a user and
// mount namespace inside its own, whose copy of the clone has them
// locked; and it clones that copy, its working directory there, which
// keeps them. No path is looked up after the first clone, so nothing
// renamed meanwhile can put another mount (a writable one, say) in the
// clone's place; and the clone is over the namespace's root, so the child
// is not chrooted, which would make the kernel refuse the user namespace.
func exportIn(ctx context.Context, h *proc.Handle, path string, attr uint64, want *unix.Stat_t) (*os.File, error) {
	c, err := h.Fork(ctx, nil)
	if err != nil {
		if errors.Is(err, proc.ErrDead) {
			return nil, &exporterDead{err}
		}
		return nil, err
	}
	defer c.Close()
	var b proc.Batch
	var st unix.Statfs_t
	b.Unshare(unix.CLONE_NEWNS)
	b.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
	mnt := b.OpenTree(proc.AtFDCWD(), path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	b.MountSetattr(mnt, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: attr})
	b.MoveMount(mnt, "", proc.AtFDCWD(), "/", unix.MOVE_MOUNT_F_EMPTY_PATH)
	b.Fchdir(mnt)
	b.CloseFD(mnt)
	b.Chroot(".")
	b.Unshare(unix.CLONE_NEWUSER | unix.CLONE_NEWNS)
	locked := b.OpenTree(proc.AtFDCWD(), ".", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	b.Fstatfs(locked, &st)
	file := b.TakeFile(locked)
	res, err := c.Run(ctx, &b)
	if err != nil {
		res.Close()
		return nil, err
	}
	f := res.File(file)
	if f == nil {
		return nil, errors.New("the mount's descriptor did not arrive")
	}
	var got unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &got); err != nil {
		f.Close()
		return nil, err
	}
	if got.Ino != want.Ino || got.Dev != want.Dev {
		f.Close()
		return nil, ErrMoved
	}
	// What the kernel says of the mount, as the holder will see it.
	flags := map[uint64]int64{unix.MOUNT_ATTR_RDONLY: unix.ST_RDONLY, unix.MOUNT_ATTR_NOEXEC: unix.ST_NOEXEC, unix.MOUNT_ATTR_NOSUID: unix.ST_NOSUID, unix.MOUNT_ATTR_NODEV: unix.ST_NODEV}
	for a, fl := range flags {
		if attr&a != 0 && st.Flags&fl == 0 {
			f.Close()
			return nil, fmt.Errorf("the exported mount lacks an attribute asked for (%#x; statfs flags %#x)", a, st.Flags)
		}
	}
	return f, nil
}
