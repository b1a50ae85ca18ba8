package dir

import (
	"bytes"
	"encoding/binary"
	"io/fs"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// rawDirent is one entry that getdents64 returned.
type rawDirent struct {
	name string
	typ  uint8
	ino  uint64
}

// direntReader reads a directory's entries with getdents64, skipping "."
// and "..".
type direntReader struct {
	fd       int
	buf      []byte
	pos, end int
	eof      bool
}

func newDirentReader(fd int) *direntReader {
	return &direntReader{fd: fd}
}

// reset forgets buffered entries, after the caller seeked to the start.
func (r *direntReader) reset() {
	r.pos, r.end, r.eof = 0, 0, false
}

// next returns up to n entries, or fewer at the end of the directory; none
// once it is reached.
func (r *direntReader) next(n int) ([]rawDirent, error) {
	var ents []rawDirent
	for len(ents) < n {
		if r.pos >= r.end {
			if r.eof {
				break
			}
			if r.buf == nil {
				r.buf = make([]byte, 8192)
			}
			var m int
			err := ignoringEINTR(func() (err error) {
				m, err = unix.Getdents(r.fd, r.buf)
				return err
			})
			if err != nil {
				return ents, err
			}
			if m <= 0 {
				r.eof = true
				break
			}
			r.pos, r.end = 0, m
		}
		reclen, e, ok := parseDirent(r.buf[r.pos:r.end])
		if !ok {
			r.pos = r.end // a malformed record: drop the rest of the buffer
			continue
		}
		r.pos += reclen
		if e.name == "" || e.name == "." || e.name == ".." {
			continue
		}
		ents = append(ents, e)
	}
	return ents, nil
}

// parseDirent parses the linux_dirent64 record at the start of b.
func parseDirent(b []byte) (reclen int, e rawDirent, ok bool) {
	if len(b) < direntNameOff {
		return 0, e, false
	}
	reclen = int(binary.NativeEndian.Uint16(b[direntReclenOff:]))
	if reclen < direntNameOff || reclen > len(b) {
		return 0, e, false
	}
	name := b[direntNameOff:reclen]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	e.name = string(name)
	e.typ = b[direntTypeOff]
	e.ino = binary.NativeEndian.Uint64(b[direntInoOff:])
	return reclen, e, true
}

// dirEntry is an fs.DirEntry of a directory in a Dir. Info is looked up
// when asked for, with Lstat through the Dir, unless the kernel did not
// give the entry's type and it was looked up already.
type dirEntry struct {
	d    *Dir
	path string // the entry's path in d
	name string
	typ  fs.FileMode
	info fs.FileInfo
}

func (e *dirEntry) Name() string      { return e.name }
func (e *dirEntry) IsDir() bool       { return e.typ.IsDir() }
func (e *dirEntry) Type() fs.FileMode { return e.typ }
func (e *dirEntry) String() string    { return fs.FormatDirEntry(e) }

// Info returns the entry's FileInfo, as Lstat would now.
func (e *dirEntry) Info() (fs.FileInfo, error) {
	if e.info != nil {
		return e.info, nil
	}
	return e.d.Lstat(e.path)
}

// joinPath joins a directory path in a Dir and a name in it.
func joinPath(dir, name string) string {
	if dir == "." || dir == "" {
		return name
	}
	return strings.TrimRight(dir, "/") + "/" + name
}

// makeEntries turns raw entries of the directory dirPath, open on dirfd,
// into DirEntries, looking up the type of those getdents did not type.
func (d *Dir) makeEntries(dirfd int, dirPath string, raw []rawDirent) []fs.DirEntry {
	ents := make([]fs.DirEntry, 0, len(raw))
	for _, r := range raw {
		e := &dirEntry{d: d, path: joinPath(dirPath, r.name), name: r.name}
		typ, ok := direntType(r.typ)
		if ok {
			e.typ = typ
		} else {
			fi := &fileInfo{name: r.name}
			err := ignoringEINTR(func() error {
				return unix.Fstatat(dirfd, r.name, &fi.st, unix.AT_SYMLINK_NOFOLLOW)
			})
			if err != nil {
				continue // gone since it was listed
			}
			e.typ = fi.Mode().Type()
			e.info = fi
		}
		ents = append(ents, e)
	}
	return ents
}

// Dirent is one name in a directory, as getdents64(2) reports it.
type Dirent struct {
	Name string
	Type uint8  // unix.DT_*; never DT_UNKNOWN (ReadDirEntries looks such types up)
	Ino  uint64 // the inode number the directory holds for it
}

// ReadDirEntries returns the names in the directory name in d, without
// "." and "..", with their types and inode numbers, in the order the
// directory gives them (not sorted). Where the file system did not say a
// name's type, it is looked up with fstatat, and a name gone meanwhile is
// left out. It needs RightRead. It is ReadDir for a caller that serves
// directory listings (package served), and makes no fs.DirEntry.
func (d *Dir) ReadDirEntries(name string) ([]Dirent, error) {
	const op = "readdir"
	var ents []Dirent
	err := d.readDirRaw(op, name, func(fd int, raw []rawDirent) {
		for _, r := range raw {
			if r.typ == unix.DT_UNKNOWN {
				var st unix.Stat_t
				err := ignoringEINTR(func() error { return unix.Fstatat(fd, r.name, &st, unix.AT_SYMLINK_NOFOLLOW) })
				if err != nil {
					continue
				}
				r.typ = uint8(st.Mode & unix.S_IFMT >> 12)
			}
			ents = append(ents, Dirent{Name: r.name, Type: r.typ, Ino: r.ino})
		}
	})
	return ents, err
}

// readDirRaw lists the directory name in d, for an operation op that
// needs RightRead, and calls fn with the open directory and every entry.
func (d *Dir) readDirRaw(op, name string, fn func(fd int, raw []rawDirent)) error {
	rootfd, err := d.begin(op, name, RightRead)
	if err != nil {
		return err
	}
	defer d.fd.release()
	fd, err := openat2(rootfd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0, d.mode)
	if err != nil {
		return pathErr(op, name, err)
	}
	defer unix.Close(fd)
	var raw []rawDirent
	r := newDirentReader(fd)
	for {
		ents, err := r.next(1024)
		if err != nil {
			return pathErr(op, name, err)
		}
		if len(ents) == 0 {
			break
		}
		raw = append(raw, ents...)
	}
	fn(fd, raw)
	return nil
}

// ReadDir returns the entries of the directory name in d, sorted by name,
// without "." and "..". It needs RightRead. An entry's Info is looked up when
// called, through d (as Lstat), and fails once d is closed.
func (d *Dir) ReadDir(name string) ([]fs.DirEntry, error) {
	var ents []fs.DirEntry
	err := d.readDirRaw("readdir", name, func(fd int, raw []rawDirent) {
		ents = d.makeEntries(fd, name, raw)
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(ents, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return ents, nil
}
