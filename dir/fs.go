package dir

import (
	"io"
	"io/fs"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// FS is a Dir seen as an io/fs file system: it implements fs.FS,
// fs.ReadFileFS, fs.ReadDirFS, fs.StatFS, fs.SubFS and fs.ReadLinkFS.
//
// A Dir cannot itself be an fs.FS: its Open returns an *os.File and its Sub
// takes Rights, and Go methods cannot be overloaded. FS translates: names
// follow fs.ValidPath (unrooted, slash-separated, no "." or ".." elements,
// "." for the top), and anything else fails with fs.ErrInvalid before it
// reaches the kernel. Every lookup is then d's, confined and subject to its
// rights: opening needs RightRead.
//
// Open returns an *os.File for a file, and for a directory a file of this
// package that lists it (fs.ReadDirFile) and keeps its descriptor to
// itself (see ErrIsDir).
type FS struct {
	d *Dir
}

// FS returns d as an io/fs file system. The FS uses d; closing d ends it.
func (d *Dir) FS() *FS { return &FS{d: d} }

var (
	_ fs.ReadFileFS = (*FS)(nil)
	_ fs.ReadDirFS  = (*FS)(nil)
	_ fs.StatFS     = (*FS)(nil)
	_ fs.SubFS      = (*FS)(nil)
	_ fs.ReadLinkFS = (*FS)(nil)
)

// Dir returns the Dir the FS uses.
func (f *FS) Dir() *Dir { return f.d }

// Open opens the named file or directory for reading.
func (f *FS) Open(name string) (fs.File, error) {
	const op = "open"
	if _, err := fsPath(op, name); err != nil {
		return nil, err
	}
	return f.d.openFS(op, name)
}

// openFS opens name for an fs.FS: a file as an *os.File, a directory as a
// *dirFile.
func (d *Dir) openFS(op, name string) (fs.File, error) {
	fd, err := d.openIn(op, name, RightRead, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, pathErr(op, name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return os.NewFile(uintptr(fd), name), nil
	}
	df := &dirFile{d: d, path: name, fd: &ownedFD{fd: fd}}
	df.r = newDirentReader(fd)
	df.cleanup = runtime.AddCleanup(df, func(f *ownedFD) { f.close() }, df.fd)
	return df, nil
}

// ReadFile returns the contents of the named file.
func (f *FS) ReadFile(name string) ([]byte, error) {
	if _, err := fsPath("readfile", name); err != nil {
		return nil, err
	}
	return f.d.ReadFile(name)
}

// ReadDir returns the entries of the named directory, sorted by name.
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	if _, err := fsPath("readdir", name); err != nil {
		return nil, err
	}
	return f.d.ReadDir(name)
}

// Stat returns the FileInfo of the named file, following symbolic links.
func (f *FS) Stat(name string) (fs.FileInfo, error) {
	if _, err := fsPath("stat", name); err != nil {
		return nil, err
	}
	return f.d.Stat(name)
}

// Lstat returns the FileInfo of the named file, not following a symbolic
// link.
func (f *FS) Lstat(name string) (fs.FileInfo, error) {
	if _, err := fsPath("lstat", name); err != nil {
		return nil, err
	}
	return f.d.Lstat(name)
}

// ReadLink returns the target of the named symbolic link.
func (f *FS) ReadLink(name string) (string, error) {
	if _, err := fsPath("readlink", name); err != nil {
		return "", err
	}
	return f.d.Readlink(name)
}

// Sub returns the FS of the directory dir: an FS of a Dir made by
// d.Sub(dir, d.Rights()), so lookups in it are confined to dir, symbolic
// links included. Its descriptor is closed when it is garbage collected.
func (f *FS) Sub(dir string) (fs.FS, error) {
	if _, err := fsPath("sub", dir); err != nil {
		return nil, err
	}
	sub, err := f.d.Sub(dir, f.d.rights)
	if err != nil {
		return nil, err
	}
	return sub.FS(), nil
}

// dirFile is an open directory of an FS: an fs.ReadDirFile whose
// descriptor stays private.
type dirFile struct {
	d       *Dir
	path    string
	fd      *ownedFD
	cleanup runtime.Cleanup

	mu sync.Mutex
	r  *direntReader
}

var _ fs.ReadDirFile = (*dirFile)(nil)

// Stat returns the directory's FileInfo.
func (f *dirFile) Stat() (fs.FileInfo, error) {
	fd, err := f.fd.acquire()
	if err != nil {
		return nil, pathErr("stat", f.path, err)
	}
	defer f.fd.release()
	return fstatInfo(fd, "stat", f.path)
}

// Read fails: a directory has no bytes to read.
func (f *dirFile) Read([]byte) (int, error) {
	return 0, pathErr("read", f.path, unix.EISDIR)
}

// Close closes the directory.
func (f *dirFile) Close() error {
	first, err := f.fd.close()
	if !first {
		return pathErr("close", f.path, fs.ErrClosed)
	}
	f.cleanup.Stop()
	if err != nil {
		return pathErr("close", f.path, err)
	}
	return nil
}

// ReadDir returns the next n entries (all the rest if n <= 0), in
// directory order, as fs.ReadDirFile specifies: at the end, io.EOF if n > 0.
func (f *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	fd, err := f.fd.acquire()
	if err != nil {
		return nil, pathErr("readdir", f.path, err)
	}
	defer f.fd.release()
	f.mu.Lock()
	defer f.mu.Unlock()
	want := n
	if n <= 0 {
		want = int(^uint(0) >> 1)
	}
	var all []fs.DirEntry
	for len(all) < want {
		raw, err := f.r.next(min(want-len(all), 1024))
		if err != nil {
			return all, pathErr("readdir", f.path, err)
		}
		if len(raw) == 0 {
			break
		}
		all = append(all, f.d.makeEntries(fd, f.path, raw)...)
	}
	if n > 0 && len(all) == 0 {
		return nil, io.EOF
	}
	if all == nil {
		all = []fs.DirEntry{}
	}
	return all, nil
}
