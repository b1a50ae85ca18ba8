package served

import (
	"context"
	"os"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/internal/filemode"
	"golang.org/x/sys/unix"
)

// Host serves the directory d, a dir.Dir, by its resolution rules:
// nothing is looked up outside it (openat2 with RESOLVE_BENEATH or
// RESOLVE_IN_ROOT, as d's Mode says), and no final symbolic link is
// followed. The Server's Rights are checked before d's; d's still apply,
// and a request they refuse fails with EPERM. The FS owns d: its Close
// closes d.
//
// Chmod is the one call that follows a final symbolic link (confined to
// d, as dir.Dir.Chmod does): the kernel never asks to chmod a link.
func Host(d *dir.Dir) FS { return hostFS{d} }

type hostFS struct{ d *dir.Dir }

// hostFiles: its descriptors are this process's own opens of the host's
// files (see filesOfHost).
func (hostFS) hostFiles() bool { return true }

func (h hostFS) Sub(_ context.Context, name string) (FS, error) {
	d, err := h.d.Sub(name, h.d.Rights())
	if err != nil {
		return nil, err
	}
	return hostFS{d}, nil
}

func (h hostFS) Lstat(_ context.Context, name string) (unix.Stat_t, error) {
	fi, err := h.d.Lstat(name)
	if err != nil {
		return unix.Stat_t{}, err
	}
	return *fi.Sys().(*unix.Stat_t), nil
}

func (h hostFS) ReadDir(_ context.Context, name string) ([]DirEntry, error) {
	ents, err := h.d.ReadDirEntries(name)
	if err != nil {
		return nil, err
	}
	out := make([]DirEntry, len(ents))
	for i, e := range ents {
		out[i] = DirEntry{Name: e.Name, Type: e.Type, Ino: e.Ino}
	}
	return out, nil
}

func (h hostFS) OpenFile(_ context.Context, name string, flag int, perm uint32) (*os.File, error) {
	return h.d.OpenFile(name, flag|unix.O_NOFOLLOW, filemode.Perm(perm))
}

func (h hostFS) Mkdir(_ context.Context, name string, perm uint32) error {
	return h.d.Mkdir(name, filemode.Perm(perm))
}

func (h hostFS) Mknod(_ context.Context, name string, mode uint32, dev uint64) error {
	return h.d.Mknod(name, mode, dev)
}

func (h hostFS) Unlink(_ context.Context, name string) error { return h.d.Unlink(name) }
func (h hostFS) Rmdir(_ context.Context, name string) error  { return h.d.Rmdir(name) }

func (h hostFS) Rename(_ context.Context, oldname, newname string, flags uint32) error {
	return h.d.RenameFlags(oldname, newname, uint(flags))
}

func (h hostFS) Link(_ context.Context, oldname, newname string) error {
	return h.d.Link(oldname, newname)
}

func (h hostFS) Symlink(_ context.Context, target, name string) error {
	return h.d.Symlink(target, name)
}

func (h hostFS) Readlink(_ context.Context, name string) (string, error) { return h.d.Readlink(name) }

func (h hostFS) Chmod(_ context.Context, name string, mode uint32) error {
	// Never through a final link: the kernel checked the caller's right
	// on the link (Linux before 6.6 lets a link's owner ask, through
	// /proc), not on its target.
	return h.d.Lchmod(name, filemode.Perm(mode))
}

func (h hostFS) Chown(_ context.Context, name string, uid, gid int) error {
	return h.d.Lchown(name, uid, gid)
}

func (h hostFS) Truncate(_ context.Context, name string, size int64) error {
	return h.d.Truncate(name, size)
}

func (h hostFS) Utimens(_ context.Context, name string, atime, mtime *unix.Timespec) error {
	return h.d.Utimens(name, atime, mtime)
}

func (h hostFS) Statfs(_ context.Context, name string) (unix.Statfs_t, error) {
	return h.d.Statfs(name)
}

func (h hostFS) Getxattr(_ context.Context, name, attr string) ([]byte, error) {
	return h.d.Getxattr(name, attr)
}

func (h hostFS) Listxattr(_ context.Context, name string) ([]string, error) {
	return h.d.Listxattr(name)
}

func (h hostFS) Setxattr(_ context.Context, name, attr string, value []byte, flags int) error {
	return h.d.Setxattr(name, attr, value, flags)
}

func (h hostFS) Removexattr(_ context.Context, name, attr string) error {
	return h.d.Removexattr(name, attr)
}

func (h hostFS) Close() error { return h.d.Close() }
