// Package remote serves an rpc Directory object (from caplin serve dir,
// or any other holder of one) as a served.FS, so that a directory held
// by another process, or another user, is a FUSE-mounted directory for
// unmodified programs (caplin run --serve-object).
//
// Every FS method is one call on the object, with the Directory service's
// file-system methods (docs/rpc.md): the rights are the object's and are
// checked by its server, and a refusal or failure arrives with its errno
// (a right the object lacks: EPERM); one without an errno is ENOTCONN
// as well if the object is closed or its server gone, and EIO if it was
// revoked or the reply was malformed. What the server refuses of any peer
// applies too: no setuid, setgid or sticky bits, no device nodes, no
// security.* or trusted.* extended attributes, values of at most 48 KiB.
// Files are opened by the server and passed back as descriptors, so reads
// and writes of open files do not go through the object: a revocation of
// the object does not reach them (the served.Server's own Revoke does).
// NewFiles, for an object on another host (whose descriptors cross as
// streams), opens them as file objects instead: each read and write is a
// call.
//
// OpenFile adds O_NOFOLLOW; Chmod is the one call that follows a final
// symbolic link (confined to the object's directory, as the Directory's
// chmod does): the kernel never asks a FUSE server to chmod a link.
//
// User and group IDs are the server's, as its namespace sees them; the
// served.Server maps them into the sandbox as host IDs.
package remote

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/caplin-dev/caplin/rpc/directory"
	"github.com/caplin-dev/caplin/served"
	"golang.org/x/sys/unix"
)

// New returns an FS that serves the Directory object c. The FS owns c:
// its Close closes c.
func New(c directory.Client) served.FS { return fsys{c} }

// fsys is a served.FS whose every method is a call on a Directory object.
type fsys struct{ c directory.Client }

func (f fsys) Lstat(ctx context.Context, name string) (unix.Stat_t, error) {
	st, err := f.c.Lstat(ctx, name)
	return st, errnoOf(err)
}

func (f fsys) ReadDir(ctx context.Context, name string) ([]served.DirEntry, error) {
	ents, err := f.c.Getdents(ctx, name)
	if err != nil {
		return nil, errnoOf(err)
	}
	out := make([]served.DirEntry, len(ents))
	for i, e := range ents {
		out[i] = served.DirEntry{Name: e.Name, Type: e.Type, Ino: e.Ino}
	}
	return out, nil
}

func (f fsys) OpenFile(ctx context.Context, name string, flag int, perm uint32) (*os.File, error) {
	file, err := f.c.Openat(ctx, name, flag|unix.O_NOFOLLOW, perm)
	return file, errnoOf(err)
}

func (f fsys) Mkdir(ctx context.Context, name string, perm uint32) error {
	return errnoOf(f.c.Mkdirat(ctx, name, perm))
}

func (f fsys) Mknod(ctx context.Context, name string, mode uint32, dev uint64) error {
	return errnoOf(f.c.Mknodat(ctx, name, mode, dev))
}

func (f fsys) Unlink(ctx context.Context, name string) error { return errnoOf(f.c.Unlink(ctx, name)) }

func (f fsys) Rmdir(ctx context.Context, name string) error { return errnoOf(f.c.Rmdir(ctx, name)) }

func (f fsys) Rename(ctx context.Context, oldname, newname string, flags uint32) error {
	return errnoOf(f.c.Renameat2(ctx, oldname, newname, flags))
}

func (f fsys) Link(ctx context.Context, oldname, newname string) error {
	return errnoOf(f.c.Link(ctx, oldname, newname))
}

func (f fsys) Symlink(ctx context.Context, target, name string) error {
	return errnoOf(f.c.Symlink(ctx, target, name))
}

func (f fsys) Readlink(ctx context.Context, name string) (string, error) {
	s, err := f.c.Readlink(ctx, name)
	return s, errnoOf(err)
}

func (f fsys) Chmod(ctx context.Context, name string, mode uint32) error {
	return errnoOf(f.c.Chmod(ctx, name, mode))
}

func (f fsys) Chown(ctx context.Context, name string, uid, gid int) error {
	return errnoOf(f.c.Chown(ctx, name, uid, gid))
}

func (f fsys) Truncate(ctx context.Context, name string, size int64) error {
	return errnoOf(f.c.Truncate(ctx, name, size))
}

func (f fsys) Utimens(ctx context.Context, name string, atime, mtime *unix.Timespec) error {
	return errnoOf(f.c.Utimens(ctx, name, atime, mtime))
}

func (f fsys) Statfs(ctx context.Context, name string) (unix.Statfs_t, error) {
	st, err := f.c.Statfs(ctx, name)
	return st, errnoOf(err)
}

func (f fsys) Getxattr(ctx context.Context, name, attr string) ([]byte, error) {
	v, err := f.c.Getxattr(ctx, name, attr)
	return v, errnoOf(err)
}

func (f fsys) Listxattr(ctx context.Context, name string) ([]string, error) {
	l, err := f.c.Listxattr(ctx, name)
	return l, errnoOf(err)
}

func (f fsys) Setxattr(ctx context.Context, name, attr string, value []byte, flags int) error {
	return errnoOf(f.c.Setxattr(ctx, name, attr, value, flags))
}

func (f fsys) Removexattr(ctx context.Context, name, attr string) error {
	return errnoOf(f.c.Removexattr(ctx, name, attr))
}

func (f fsys) Close() error { return f.c.Close() }

// errnoOf returns err with an errno the program can be given: its own;
// for a failure that has none, ENOTCONN as well if the object is closed
// or its server gone, and EIO for anything else (revoked, a malformed
// reply). The end of ctx is left as it is: the request was interrupted.
func errnoOf(err error) error {
	var errno syscall.Errno
	switch {
	case err == nil || errors.As(err, &errno) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, fs.ErrClosed):
		return fmt.Errorf("%w (%w)", err, syscall.ENOTCONN)
	}
	return fmt.Errorf("%w (%w)", err, syscall.EIO)
}
