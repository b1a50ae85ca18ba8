package dir

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// BindMode says how MountTable.Bind adds a Dir at a prefix that already has
// some.
type BindMode uint8

const (
	// BindReplace makes the Dir the only one at the prefix.
	BindReplace BindMode = iota
	// BindBefore puts the Dir first in the prefix's union: its names hide the
	// others'.
	BindBefore
	// BindAfter puts the Dir last in the prefix's union: the others' names hide
	// its.
	BindAfter
)

// A MountTable is a table of mounts kept in user space, per process (nothing is
// mounted in the kernel): path prefixes bound to Dirs, as in Plan 9.
//
// A name is resolved by its longest bound prefix: with "." (the top) bound
// to one Dir and "lib" to another, "lib/x" is "x" in the second and "bin/x"
// is "bin/x" in the first. Several Dirs bound at one prefix form a union:
// a name is looked up in each in order and the first that has it wins (a
// lookup error other than "does not exist" stops the search); a directory
// that several have lists the entries of all, the first of each name
// winning. Directories on the way to a prefix exist even where no Dir has
// them, empty but for the next element of the prefix (read-only, mode
// 0555, the zero time), and a prefix's name is listed in its parent even if
// the Dir above it lacks it.
//
// Names are io/fs names (fs.ValidPath: unrooted, slash-separated, "." for
// the top); MountTable implements fs.FS, fs.ReadFileFS, fs.ReadDirFS and
// fs.StatFS. Lookups in a Dir are that Dir's: confined to it and subject
// to its rights. A symbolic link in a Dir resolves within that Dir and
// never leads into another bound Dir.
//
// The zero MountTable is empty and ready to use. A MountTable is safe for
// concurrent use. It does not own its Dirs: closing them is the caller's
// business, and a closed Dir fails its lookups with fs.ErrClosed.
type MountTable struct {
	mu     sync.RWMutex
	mounts map[string][]*Dir
}

var (
	_ fs.ReadFileFS = (*MountTable)(nil)
	_ fs.ReadDirFS  = (*MountTable)(nil)
	_ fs.StatFS     = (*MountTable)(nil)
)

// cleanPrefix turns a Bind prefix into an io/fs name: a leading "/" and
// trailing "/" are dropped, so "/", "" and "." all name the top.
func cleanPrefix(prefix string) (string, bool) {
	p := strings.Trim(prefix, "/")
	if p == "" {
		p = "."
	}
	return p, fs.ValidPath(p)
}

// Bind binds d at prefix, which is an io/fs name ("." or "/" for the top;
// a leading "/" is allowed), replacing the Dirs there or joining their
// union, as mode says. The prefix need not exist in any Dir.
func (ns *MountTable) Bind(prefix string, d *Dir, mode BindMode) error {
	p, ok := cleanPrefix(prefix)
	if !ok {
		return pathErr("bind", prefix, fs.ErrInvalid)
	}
	if d == nil || mode > BindAfter {
		return pathErr("bind", prefix, fs.ErrInvalid)
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.mounts == nil {
		ns.mounts = map[string][]*Dir{}
	}
	u := ns.mounts[p]
	switch mode {
	case BindReplace:
		u = []*Dir{d}
	case BindBefore:
		u = append([]*Dir{d}, u...)
	case BindAfter:
		u = append(slices.Clip(u), d)
	}
	ns.mounts[p] = u
	return nil
}

// Unbind removes d from the union at prefix, or every Dir there if d is
// nil. It fails with fs.ErrNotExist if d is not bound there.
func (ns *MountTable) Unbind(prefix string, d *Dir) error {
	p, ok := cleanPrefix(prefix)
	if !ok {
		return pathErr("unbind", prefix, fs.ErrInvalid)
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	u, ok := ns.mounts[p]
	if !ok {
		return pathErr("unbind", prefix, fs.ErrNotExist)
	}
	if d == nil {
		delete(ns.mounts, p)
		return nil
	}
	i := slices.Index(u, d)
	if i < 0 {
		return pathErr("unbind", prefix, fs.ErrNotExist)
	}
	u = slices.Delete(slices.Clone(u), i, i+1)
	if len(u) == 0 {
		delete(ns.mounts, p)
	} else {
		ns.mounts[p] = u
	}
	return nil
}

// lookup returns the union of the longest prefix bound above name (or at
// it) and name's path relative to it, and the next elements of the
// prefixes bound below name.
func (ns *MountTable) lookup(name string) (union []*Dir, rest string, below []string) {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	for p := name; ; p = path.Dir(p) {
		if u, ok := ns.mounts[p]; ok {
			union = u
			switch {
			case p == name:
				rest = "."
			case p == ".":
				rest = name
			default:
				rest = name[len(p)+1:]
			}
			break
		}
		if p == "." {
			break
		}
	}
	for p := range ns.mounts {
		var tail string
		switch {
		case p == name:
			continue
		case name == ".":
			tail = p
		case strings.HasPrefix(p, name+"/"):
			tail = p[len(name)+1:]
		default:
			continue
		}
		if i := strings.IndexByte(tail, '/'); i >= 0 {
			tail = tail[:i]
		}
		if !slices.Contains(below, tail) {
			below = append(below, tail)
		}
	}
	slices.Sort(below)
	return union, rest, below
}

// renamed rewrites a member Dir's error to name the MountTable path.
func renamed(err error, name string) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return &fs.PathError{Op: pe.Op, Path: name, Err: pe.Err}
	}
	return err
}

// Resolve returns the Dir of the union that name resolves in that has the
// name (by Lstat), and name's path in it. For a name no Dir has, it returns
// the first Dir of the union, where a new file would be made. Use it for
// the operations MountTable does not have (Mkdir, Remove, Replace, ...). It
// fails with fs.ErrNotExist if no prefix is bound above name, and for the
// directories on the way to a prefix that no Dir has.
func (ns *MountTable) Resolve(name string) (*Dir, string, error) {
	if !fs.ValidPath(name) {
		return nil, "", pathErr("resolve", name, fs.ErrInvalid)
	}
	union, rest, _ := ns.lookup(name)
	for _, d := range union {
		if _, err := d.Lstat(rest); err == nil {
			return d, rest, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, "", renamed(err, name)
		}
	}
	if len(union) == 0 {
		return nil, "", pathErr("resolve", name, fs.ErrNotExist)
	}
	return union[0], rest, nil
}

// OpenFile opens the named file with flag and perm, as Dir.OpenFile does,
// in the first Dir of the union that has the name (by Lstat), subject to
// that Dir's rights; a file that none has is created, if flag has
// O_CREATE, in the first Dir whose rights include RightCreate.
func (ns *MountTable) OpenFile(name string, flag int, perm fs.FileMode) (*os.File, error) {
	if !fs.ValidPath(name) {
		return nil, pathErr("open", name, fs.ErrInvalid)
	}
	union, rest, _ := ns.lookup(name)
	for _, d := range union {
		_, err := d.Lstat(rest)
		if err == nil {
			f, err := d.OpenFile(rest, flag, perm)
			return f, renamed(err, name)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, renamed(err, name)
		}
	}
	if flag&unix.O_CREAT != 0 {
		for _, d := range union {
			if d.rights.Has(RightCreate) {
				f, err := d.OpenFile(rest, flag, perm)
				return f, renamed(err, name)
			}
		}
	}
	return nil, pathErr("open", name, fs.ErrNotExist)
}

// Open opens the named file for reading: an *os.File from the first Dir of
// the union that has it, or for a directory, a file that lists the merged
// directory.
func (ns *MountTable) Open(name string) (fs.File, error) {
	const op = "open"
	if !fs.ValidPath(name) {
		return nil, pathErr(op, name, fs.ErrInvalid)
	}
	union, rest, below := ns.lookup(name)
	for _, d := range union {
		f, err := d.openFS(op, rest)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, renamed(err, name)
		}
		if _, ok := f.(*dirFile); !ok {
			return f, nil
		}
		fi, err := f.Stat()
		f.Close()
		if err != nil {
			return nil, renamed(err, name)
		}
		return ns.openDir(name, &renamedInfo{fi, path.Base(name)})
	}
	if len(below) > 0 {
		return ns.openDir(name, synthInfo(path.Base(name)))
	}
	return nil, pathErr(op, name, fs.ErrNotExist)
}

func (ns *MountTable) openDir(name string, fi fs.FileInfo) (fs.File, error) {
	ents, err := ns.ReadDir(name)
	if err != nil {
		return nil, err
	}
	return &nsDir{name: name, info: fi, ents: ents}, nil
}

// Stat returns the FileInfo of the named file, from the first Dir of the
// union that has it, following symbolic links.
func (ns *MountTable) Stat(name string) (fs.FileInfo, error) {
	const op = "stat"
	if !fs.ValidPath(name) {
		return nil, pathErr(op, name, fs.ErrInvalid)
	}
	union, rest, below := ns.lookup(name)
	for _, d := range union {
		fi, err := d.Stat(rest)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, renamed(err, name)
		}
		return &renamedInfo{fi, path.Base(name)}, nil
	}
	if len(below) > 0 {
		return synthInfo(path.Base(name)), nil
	}
	return nil, pathErr(op, name, fs.ErrNotExist)
}

// ReadFile returns the contents of the named file, from the first Dir of
// the union that has it.
func (ns *MountTable) ReadFile(name string) ([]byte, error) {
	const op = "readfile"
	if !fs.ValidPath(name) {
		return nil, pathErr(op, name, fs.ErrInvalid)
	}
	union, rest, _ := ns.lookup(name)
	for _, d := range union {
		b, err := d.ReadFile(rest)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, renamed(err, name)
		}
		return b, nil
	}
	return nil, pathErr(op, name, fs.ErrNotExist)
}

// ReadDir returns the entries of the named directory, sorted by name: the
// prefixes bound directly below it, then the entries of each Dir of the
// union that has the directory, the first of each name winning. If the
// first Dir that has the name has a file there, ReadDir fails with
// ENOTDIR.
func (ns *MountTable) ReadDir(name string) ([]fs.DirEntry, error) {
	const op = "readdir"
	if !fs.ValidPath(name) {
		return nil, pathErr(op, name, fs.ErrInvalid)
	}
	union, rest, below := ns.lookup(name)
	seen := map[string]bool{}
	var ents []fs.DirEntry
	for _, b := range below {
		seen[b] = true
		ents = append(ents, &mountEntry{ns: ns, name: b, path: joinPath(name, b)})
	}
	found := len(below) > 0
	for i, d := range union {
		des, err := d.ReadDir(rest)
		switch {
		case err == nil:
		case errors.Is(err, fs.ErrNotExist):
			continue
		case errors.Is(err, unix.ENOTDIR) && i > 0 && found:
			continue // a later Dir's file under an earlier Dir's directory
		default:
			return nil, renamed(err, name)
		}
		found = true
		for _, e := range des {
			if !seen[e.Name()] {
				seen[e.Name()] = true
				ents = append(ents, e)
			}
		}
	}
	if !found {
		return nil, pathErr(op, name, fs.ErrNotExist)
	}
	slices.SortFunc(ents, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return ents, nil
}

// mountEntry is the directory entry of a bound prefix in its parent.
type mountEntry struct {
	ns   *MountTable
	name string
	path string
}

func (e *mountEntry) Name() string               { return e.name }
func (e *mountEntry) IsDir() bool                { return true }
func (e *mountEntry) Type() fs.FileMode          { return fs.ModeDir }
func (e *mountEntry) Info() (fs.FileInfo, error) { return e.ns.Stat(e.path) }
func (e *mountEntry) String() string             { return fs.FormatDirEntry(e) }

// renamedInfo is a member Dir's FileInfo under its MountTable name.
type renamedInfo struct {
	fs.FileInfo
	name string
}

func (fi *renamedInfo) Name() string   { return fi.name }
func (fi *renamedInfo) String() string { return fs.FormatFileInfo(fi) }

// synthInfo is the FileInfo of a directory on the way to a bound prefix
// that no Dir has.
type synthInfo string

func (fi synthInfo) Name() string       { return string(fi) }
func (fi synthInfo) Size() int64        { return 0 }
func (fi synthInfo) Mode() fs.FileMode  { return fs.ModeDir | 0o555 }
func (fi synthInfo) ModTime() time.Time { return time.Time{} }
func (fi synthInfo) IsDir() bool        { return true }
func (fi synthInfo) Sys() any           { return nil }
func (fi synthInfo) String() string     { return fs.FormatFileInfo(fi) }

// nsDir is an open directory of a MountTable: its merged entries, read when
// it was opened.
type nsDir struct {
	name   string
	info   fs.FileInfo
	mu     sync.Mutex
	ents   []fs.DirEntry
	closed bool
}

func (f *nsDir) Stat() (fs.FileInfo, error) { return f.info, nil }

func (f *nsDir) Read([]byte) (int, error) {
	return 0, pathErr("read", f.name, unix.EISDIR)
}

func (f *nsDir) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return pathErr("close", f.name, fs.ErrClosed)
	}
	f.closed = true
	return nil
}

// ReadDir returns the next n entries (all the rest if n <= 0), as
// fs.ReadDirFile specifies.
func (f *nsDir) ReadDir(n int) ([]fs.DirEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, pathErr("readdir", f.name, fs.ErrClosed)
	}
	if n <= 0 || n > len(f.ents) {
		if n > 0 && len(f.ents) == 0 {
			return nil, io.EOF
		}
		n = len(f.ents)
	}
	ents := append([]fs.DirEntry{}, f.ents[:n]...)
	f.ents = f.ents[n:]
	return ents, nil
}
