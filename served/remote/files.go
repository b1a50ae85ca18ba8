package remote

import (
	"context"

	"github.com/caplin-dev/caplin/rpc/directory"
	"github.com/caplin-dev/caplin/served"
	"golang.org/x/sys/unix"
)

// NewFiles is New for a Directory object whose descriptors would not be
// its files: one on another host (package remote relays it, and a
// descriptor crosses as a stream). Its files are opened as file objects
// (the Directory's openfile): every read and write of an open file is a
// call, and so is subject to the object's revocation too.
func NewFiles(c directory.Client) served.FS { return fileFS{fsys{c}} }

// fileFS is an fsys whose files are file objects (a served.FileFS).
type fileFS struct{ fsys }

func (f fileFS) OpenObject(ctx context.Context, name string, flag int, perm uint32) (served.File, error) {
	file, err := f.c.OpenFile(ctx, name, flag|unix.O_NOFOLLOW, perm)
	if err != nil {
		return nil, errnoOf(err)
	}
	return objFile{file}, nil
}

// objFile is a file object as a served.File, its errors with errnos.
type objFile struct{ f directory.File }

func (o objFile) Stat(ctx context.Context) (unix.Stat_t, error) {
	st, err := o.f.Stat(ctx)
	return st, errnoOf(err)
}

func (o objFile) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := o.f.ReadAt(ctx, p, off)
	return n, errnoOf(err)
}

func (o objFile) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := o.f.WriteAt(ctx, p, off)
	return n, errnoOf(err)
}

func (o objFile) Truncate(ctx context.Context, size int64) error {
	return errnoOf(o.f.Truncate(ctx, size))
}

func (o objFile) Sync(ctx context.Context, data bool) error { return errnoOf(o.f.Sync(ctx, data)) }

func (o objFile) Allocate(ctx context.Context, mode uint32, off, size int64) error {
	return errnoOf(o.f.Allocate(ctx, mode, off, size))
}

func (o objFile) Seek(ctx context.Context, off int64, whence int) (int64, error) {
	r, err := o.f.Seek(ctx, off, whence)
	return r, errnoOf(err)
}

func (o objFile) Close() error { return o.f.Close() }
