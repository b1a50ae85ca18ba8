package dir

import (
	"io/fs"
	"os"
	"runtime"
	"strings"

	"github.com/caplin-dev/caplin/internal/fdctl"
	"golang.org/x/sys/unix"
)

// A Dir is a directory capability: a directory descriptor
// (O_PATH|O_DIRECTORY|O_CLOEXEC) that its methods resolve every path
// relative to, confined to the directory (see Mode), and the Rights that
// say which operations it permits.
//
// A Dir is safe for concurrent use. Close closes its descriptor; an
// operation that runs while Close is called finishes with the descriptor it
// started with, and operations after Close fail with an error wrapping
// fs.ErrClosed. A Dir that becomes unreachable without Close has its
// descriptor closed by the garbage collector, as an *os.File does.
type Dir struct {
	fd      *ownedFD
	mode    Mode
	rights  Rights
	name    string
	cleanup runtime.Cleanup
}

// Open opens the directory at path, which is resolved as os.Open would
// (the caller's ambient authority: any path, relative to the working
// directory, following symbolic links), and returns a Dir for it. Options
// choose its Mode (Beneath by default) and Rights (All by default).
//
// Open fails with ErrNoOpenat2 on a kernel without openat2 (before Linux
// 5.6), on which a Dir could not confine its lookups.
func Open(path string, opts ...Option) (*Dir, error) {
	if err := checkTarget(path); err != nil {
		return nil, pathErr("open", path, err)
	}
	if err := openat2Probe(); err != nil {
		return nil, pathErr("open", path, err)
	}
	var fd int
	err := ignoringEINTR(func() (err error) {
		fd, err = unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, pathErr("open", path, err)
	}
	o := makeOptions(opts)
	return newDir(fd, o.mode, o.rights, path), nil
}

// FromFile returns a Dir for the directory f is open on. The Dir has a
// descriptor of its own (f stays the caller's to close); options choose
// its Mode and Rights as for Open.
func FromFile(f *os.File, opts ...Option) (*Dir, error) {
	if f == nil {
		return nil, pathErr("fromfile", "", fs.ErrInvalid)
	}
	var fd int
	err := fdctl.Control(f, func(ffd int) (err error) {
		fd, err = openat2(ffd, ".", unix.O_PATH|unix.O_DIRECTORY, 0, Beneath)
		return err
	})
	if err != nil {
		return nil, pathErr("fromfile", f.Name(), err)
	}
	o := makeOptions(opts)
	return newDir(fd, o.mode, o.rights, f.Name()), nil
}

func newDir(fd int, mode Mode, rights Rights, name string) *Dir {
	d := &Dir{fd: &ownedFD{fd: fd}, mode: mode, rights: rights & All, name: name}
	d.cleanup = runtime.AddCleanup(d, func(f *ownedFD) { f.close() }, d.fd)
	return d
}

// Close closes the Dir's descriptor. Closing a closed Dir does nothing and
// returns nil. Files opened through the Dir stay open, and Dirs made from
// it by Sub stay usable: each has a descriptor of its own.
func (d *Dir) Close() error {
	if d == nil {
		return pathErr("close", "", fs.ErrInvalid)
	}
	first, err := d.fd.close()
	if first {
		d.cleanup.Stop()
	}
	if err != nil {
		return pathErr("close", d.name, err)
	}
	return nil
}

// Name returns the path the Dir was opened with, or for a Dir made by Sub,
// its parent's name joined with the path given to Sub. It is a label for
// messages; the Dir does not use it.
func (d *Dir) Name() string { return d.name }

// Rights returns the Dir's rights.
func (d *Dir) Rights() Rights { return d.rights }

// Mode returns how the Dir resolves paths.
func (d *Dir) Mode() Mode { return d.mode }

// String describes the Dir for messages.
func (d *Dir) String() string {
	return "dir.Dir(" + d.name + ", " + d.mode.String() + ", " + d.rights.String() + ")"
}

// begin starts an operation on name that needs rights: it checks the path
// and the rights and borrows the descriptor, which the caller gives back
// with d.fd.release().
func (d *Dir) begin(op, name string, need Rights) (int, error) {
	if d == nil || d.fd == nil {
		return -1, pathErr(op, name, fs.ErrInvalid)
	}
	fd, err := d.fd.acquire()
	if err != nil {
		return -1, pathErr(op, name, err)
	}
	if err := checkPath(name); err != nil {
		d.fd.release()
		return -1, pathErr(op, name, err)
	}
	if !d.rights.Has(need) {
		d.fd.release()
		return -1, pathErr(op, name, &RightsError{Need: need, Have: d.rights})
	}
	return fd, nil
}

// openIn starts an operation on name that needs rights, as begin does,
// and opens name with flags, confined to d (see openat2). Errors name op
// and name. The caller closes fd; d's descriptor is already given back.
func (d *Dir) openIn(op, name string, need Rights, flags int) (fd int, err error) {
	rootfd, err := d.begin(op, name, need)
	if err != nil {
		return -1, err
	}
	defer d.fd.release()
	fd, err = openat2(rootfd, name, flags, 0, d.mode)
	if err != nil {
		return -1, pathErr(op, name, err)
	}
	return fd, nil
}

// beginParent starts an operation on name that needs rights, as begin
// does, and opens the directory that holds name's last element (see
// parent). check, if not nil, runs in between: an operation that takes a
// second string (Rename and Link: the other name; Symlink: the target)
// checks it there. The caller ends the operation with endParent. Errors
// name op and name.
func (d *Dir) beginParent(op, name string, need Rights, check func() error) (rootfd int, p parentDir, err error) {
	rootfd, err = d.begin(op, name, need)
	if err != nil {
		return -1, parentDir{}, err
	}
	if check != nil {
		err = check()
	}
	if err == nil {
		p, err = d.parent(rootfd, name, unix.O_PATH)
	}
	if err != nil {
		d.fd.release()
		return -1, parentDir{}, pathErr(op, name, err)
	}
	return rootfd, p, nil
}

// endParent ends an operation that beginParent started: it closes p and
// gives d's descriptor back.
func (d *Dir) endParent(p *parentDir) {
	p.close()
	d.fd.release()
}

// Sub returns a Dir for the directory at path in d, with the given rights,
// which must be a subset of d's: a Dir can narrow its rights but never
// widen them, and asking for a right d lacks fails with a *RightsError. The
// new Dir resolves in d's mode, confined to its own directory: ".." in its
// paths cannot reach back into d. Its descriptor is its own; closing d does
// not close it.
func (d *Dir) Sub(path string, rights Rights) (*Dir, error) {
	fd, err := d.begin("sub", path, 0)
	if err != nil {
		return nil, err
	}
	defer d.fd.release()
	if rights&^d.rights != 0 {
		return nil, pathErr("sub", path, &RightsError{Need: rights, Have: d.rights})
	}
	nfd, err := openat2(fd, path, unix.O_PATH|unix.O_DIRECTORY, 0, d.mode)
	if err != nil {
		return nil, pathErr("sub", path, err)
	}
	return newDir(nfd, d.mode, rights, joinName(d.name, path)), nil
}

// joinName joins a Dir's name and a path in it, for Name.
func joinName(base, path string) string {
	if path == "." {
		return base
	}
	if base == "" {
		return path
	}
	return strings.TrimRight(base, "/") + "/" + path
}
