package directory

import (
	"context"
	"os"

	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/rpc"
	"golang.org/x/sys/unix"
)

// File objects: a file the Directory opens, served as an object of its
// own (openfile) rather than passed as a descriptor, for a client whose
// descriptors would not be the file: one on another host, which gets
// descriptors as streams (package remote). Reads and writes are calls at
// offsets; closing the object closes the file.

// maxFileIO bounds one read or write on a file object; data beyond
// inlineFileIO travels in a memfd (rpc.Bulk).
const (
	maxFileIO    = 1 << 20
	inlineFileIO = 32 << 10
)

// File object arguments and results.
type (
	// ReadAtArgs read N bytes at Off.
	ReadAtArgs struct {
		Off int64
		N   int
	}
	// IOData is data read or to write: inline, or in a sealed memfd.
	IOData struct {
		Data []byte `json:",omitempty"`
		Bulk rpc.FD
	}
	// WriteAtArgs write at Off.
	WriteAtArgs struct {
		Off int64
		IOData
	}
	// SeekArgs are lseek(2)'s.
	SeekArgs struct {
		Off    int64
		Whence int
	}
	// AllocateArgs are fallocate(2)'s.
	AllocateArgs struct {
		Mode      uint32
		Off, Size int64
	}
)

// fileHandler serves an open file.
type fileHandler struct {
	f  *os.File
	fd int
}

func (h *fileHandler) Close() error { return h.f.Close() }

func (h *fileHandler) ServeCall(ctx context.Context, call *rpc.Call) (any, error) {
	switch call.Method {
	case "stat":
		var st unix.Stat_t
		if err := unix.Fstat(h.fd, &st); err != nil {
			return nil, os.NewSyscallError("fstat", err)
		}
		return st, nil
	case "readat":
		return with(call, func(a ReadAtArgs) (any, error) {
			if a.N < 0 || a.N > maxFileIO {
				return nil, rpc.Errorf(rpc.CodeInvalid, "readat: %d bytes: at most %d", a.N, maxFileIO)
			}
			buf := make([]byte, a.N)
			n := 0
			for n < len(buf) {
				m, err := unix.Pread(h.fd, buf[n:], a.Off+int64(n))
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					if n > 0 {
						break
					}
					return nil, os.NewSyscallError("pread", err)
				}
				if m == 0 {
					break
				}
				n += m
			}
			if n <= inlineFileIO {
				return IOData{Data: buf[:n]}, nil
			}
			b, err := rpc.Bulk("readat", buf[:n])
			if err != nil {
				return nil, err
			}
			return IOData{Bulk: b}, nil
		})
	case "writeat":
		return with(call, func(a WriteAtArgs) (any, error) {
			data, err := a.bytes()
			if err != nil {
				return nil, err
			}
			n := 0
			for n < len(data) {
				m, err := unix.Pwrite(h.fd, data[n:], a.Off+int64(n))
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					if n > 0 {
						break
					}
					return nil, os.NewSyscallError("pwrite", err)
				}
				n += m
			}
			return n, nil
		})
	case "truncate":
		return with(call, func(size int64) (any, error) {
			return nil, os.NewSyscallError("ftruncate", unix.Ftruncate(h.fd, size))
		})
	case "sync":
		return with(call, func(data bool) (any, error) {
			if data {
				return nil, os.NewSyscallError("fdatasync", unix.Fdatasync(h.fd))
			}
			return nil, os.NewSyscallError("fsync", unix.Fsync(h.fd))
		})
	case "allocate":
		return with(call, func(a AllocateArgs) (any, error) {
			return nil, os.NewSyscallError("fallocate", unix.Fallocate(h.fd, a.Mode, a.Off, a.Size))
		})
	case "seek":
		return with(call, func(a SeekArgs) (any, error) {
			off, err := unix.Seek(h.fd, a.Off, a.Whence)
			if err != nil {
				return nil, os.NewSyscallError("lseek", err)
			}
			return off, nil
		})
	}
	return nil, rpc.Errorf(rpc.CodeUnknownMethod, "%s", call.Method)
}

// bytes is the data, read from its memfd if it came in one.
func (d IOData) bytes() ([]byte, error) {
	if d.Bulk.File == nil {
		return d.Data, nil
	}
	defer d.Bulk.Close()
	return rpc.ReadBulk(d.Bulk, maxFileIO)
}

// openFileObject opens like openat and serves the file as an object.
func openFileObject(ctx context.Context, d *dir.Dir, call *rpc.Call, a OpenatArgs) (any, error) {
	res, err := openRegular(d, OpenArgs{Path: a.Path, Flags: a.Flags, Perm: peerMode(a.Mode)})
	if err != nil {
		return nil, err
	}
	f := res.(rpc.FD).File
	fd := -1
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(n uintptr) { fd = int(n) })
	}
	obj, err := call.Server.NewObject(context.WithoutCancel(ctx), &fileHandler{f: f, fd: fd})
	if err != nil {
		f.Close()
		return nil, err
	}
	return obj, nil
}

// A File is a client of a file object (Client.OpenFile).
type File struct{ *rpc.Client }

// Stat is fstat(2) of the file.
func (f File) Stat(ctx context.Context) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := f.Call(ctx, "stat", struct{}{}, &st)
	return st, err
}

// ReadAt reads up to len(p) bytes at off; fewer only at the end of the
// file.
func (f File) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		chunk := min(len(p)-n, maxFileIO)
		var r IOData
		if err := f.Call(ctx, "readat", ReadAtArgs{Off: off + int64(n), N: chunk}, &r); err != nil {
			return n, err
		}
		data, err := r.bytes()
		if err != nil {
			return n, err
		}
		copy(p[n:], data)
		n += len(data)
		if len(data) < chunk {
			break
		}
	}
	return n, nil
}

// WriteAt writes p at off.
func (f File) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		chunk := p[n:min(len(p), n+maxFileIO)]
		a := WriteAtArgs{Off: off + int64(n)}
		if len(chunk) <= inlineFileIO {
			a.Data = chunk
		} else {
			b, err := rpc.Bulk("writeat", chunk)
			if err != nil {
				return n, err
			}
			a.Bulk = b
		}
		var m int
		err := f.Call(ctx, "writeat", a, &m)
		a.Bulk.Close()
		if err != nil {
			return n, err
		}
		n += m
		if m < len(chunk) {
			break
		}
	}
	return n, nil
}

// Truncate is ftruncate(2).
func (f File) Truncate(ctx context.Context, size int64) error {
	return f.Call(ctx, "truncate", size, nil)
}

// Sync is fsync(2), or fdatasync(2) with data.
func (f File) Sync(ctx context.Context, data bool) error { return f.Call(ctx, "sync", data, nil) }

// Allocate is fallocate(2).
func (f File) Allocate(ctx context.Context, mode uint32, off, size int64) error {
	return f.Call(ctx, "allocate", AllocateArgs{Mode: mode, Off: off, Size: size}, nil)
}

// Seek is lseek(2) (SEEK_DATA and SEEK_HOLE included).
func (f File) Seek(ctx context.Context, off int64, whence int) (int64, error) {
	var r int64
	err := f.Call(ctx, "seek", SeekArgs{Off: off, Whence: whence}, &r)
	return r, err
}

// OpenFile opens the file at path as openat does, and returns it as a
// file object, whose reads and writes are calls: for a client on another
// host, to which a descriptor would cross as a stream.
func (d Client) OpenFile(ctx context.Context, path string, flags int, mode uint32) (File, error) {
	var fd rpc.FD
	if err := d.Call(ctx, "openfile", OpenatArgs{Path: path, Flags: flags, Mode: mode}, &fd); err != nil {
		return File{}, err
	}
	if fd.File == nil {
		return File{}, rpc.Errorf(rpc.CodeBadMessage, "openfile %s: the reply carried no object", path)
	}
	c, err := rpc.NewClient(fd.File, rpc.ClientOptions{})
	if err != nil {
		fd.Close()
		return File{}, err
	}
	return File{c}, nil
}
