package dir

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"strconv"

	"github.com/caplin-dev/caplin/internal/filemode"
	"golang.org/x/sys/unix"
)

// openRights returns the rights an open with flag needs from a Dir that
// has have. A new file made with O_CREAT|O_EXCL may be written with RightCreate
// alone.
func openRights(flag int, have Rights) (need Rights) {
	if flag&unix.O_PATH != 0 {
		return RightExec
	}
	acc := flag & unix.O_ACCMODE
	if acc != unix.O_WRONLY {
		need |= RightRead // O_RDONLY, O_RDWR, and the ioctl-only mode 3
	}
	write := acc != unix.O_RDONLY || flag&(unix.O_TRUNC|unix.O_APPEND) != 0
	tmpfile := flag&unix.O_TMPFILE == unix.O_TMPFILE
	switch {
	case tmpfile:
		// An O_TMPFILE file is new: writing it changes nothing that existed.
		need |= RightCreate
	case flag&unix.O_CREAT != 0:
		need |= RightCreate
		if write && !(flag&unix.O_EXCL != 0 && have.Has(RightCreate)) {
			need |= RightWrite
		}
	case write:
		need |= RightWrite
	}
	return need
}

// OpenFile opens the named file in d with flag (os.O_RDONLY, os.O_CREATE,
// ... or any open(2) flags) and, for a file it creates, perm (before the
// umask). O_CLOEXEC is always set. The flags must be permitted by d's
// rights:
//
//   - reading (O_RDONLY, O_RDWR) needs RightRead;
//   - writing (O_WRONLY, O_RDWR, O_TRUNC, O_APPEND) needs RightWrite, except for
//     a file OpenFile creates with O_CREAT|O_EXCL, which Create allows;
//   - O_CREAT needs RightCreate; without it, a Dir with RightWrite opens an existing
//     file as if O_CREAT were not given, and fails with a *RightsError
//     where it would have created one;
//   - O_PATH needs RightExec.
//
// Symbolic links are followed, confined to d; add O_NOFOLLOW to refuse one
// as the last element. A directory is never returned: OpenFile fails with
// ErrIsDir (see there why), except for O_TMPFILE, which makes a file.
func (d *Dir) OpenFile(name string, flag int, perm fs.FileMode) (*os.File, error) {
	const op = "open"
	if d == nil {
		return nil, pathErr(op, name, fs.ErrInvalid)
	}
	need := openRights(flag, d.rights)
	dropCreat := false
	tmpfile := flag&unix.O_TMPFILE == unix.O_TMPFILE
	if flag&unix.O_CREAT != 0 && flag&unix.O_EXCL == 0 && !tmpfile && !d.rights.Has(RightCreate) && d.rights.Has(need&^RightCreate) {
		// Without RightCreate, open an existing file; fail where one would be made.
		dropCreat = true
		need &^= RightCreate
		flag &^= unix.O_CREAT
	}
	rootfd, err := d.begin(op, name, need)
	if err != nil {
		return nil, err
	}
	defer d.fd.release()
	fd, err := openat2(rootfd, name, flag, filemode.Unix(perm), d.mode)
	if err != nil {
		if dropCreat && err == unix.ENOENT {
			err = &RightsError{Need: need | RightCreate, Have: d.rights}
		}
		return nil, pathErr(op, name, err)
	}
	if err := refuseDir(fd, flag); err != nil {
		unix.Close(fd)
		return nil, pathErr(op, name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// refuseDir fails with ErrIsDir if fd, just opened with flag, is a
// directory. An open for writing cannot be (open(2) fails with EISDIR), nor
// an O_TMPFILE file; anything else is checked with fstat.
func refuseDir(fd, flag int) error {
	if flag&unix.O_TMPFILE == unix.O_TMPFILE {
		return nil
	}
	if flag&unix.O_DIRECTORY != 0 {
		return ErrIsDir
	}
	if flag&unix.O_PATH == 0 && flag&unix.O_ACCMODE != unix.O_RDONLY {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return ErrIsDir
	}
	return nil
}

// Open opens the named file in d for reading, following symbolic links
// confined to d. It needs RightRead, and fails with ErrIsDir for a directory.
func (d *Dir) Open(name string) (*os.File, error) {
	return d.OpenFile(name, unix.O_RDONLY, 0)
}

// Create creates or truncates the named file in d, opened for reading and
// writing, mode 0666 before the umask. It needs RightRead, RightWrite and RightCreate.
func (d *Dir) Create(name string) (*os.File, error) {
	return d.OpenFile(name, unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC, 0o666)
}

// OpenExec opens the named file in d with O_PATH, the descriptor
// execveat(2) (and proc's exec by fd) runs a program through. It needs
// RightExec. The descriptor does not let its holder read or write the file, but
// see the package documentation for how any descriptor can be reopened
// through /proc by a process that has /proc.
func (d *Dir) OpenExec(name string) (*os.File, error) {
	return d.OpenFile(name, unix.O_PATH, 0)
}

// Mkdir makes the directory name in d with perm (before the umask). It
// needs RightCreate.
func (d *Dir) Mkdir(name string, perm fs.FileMode) error {
	const op = "mkdir"
	rootfd, err := d.begin(op, name, RightCreate)
	if err != nil {
		return err
	}
	defer d.fd.release()
	return d.mkdir(rootfd, op, name, perm)
}

func (d *Dir) mkdir(rootfd int, op, name string, perm fs.FileMode) error {
	p, err := d.parent(rootfd, name, unix.O_PATH)
	if err != nil {
		return pathErr(op, name, err)
	}
	defer p.close()
	err = ignoringEINTR(func() error { return unix.Mkdirat(p.fd, p.base, filemode.Unix(perm)) })
	if err != nil {
		return pathErr(op, name, err)
	}
	return nil
}

// MkdirAll makes the directory name in d and any parents it lacks, with
// perm (before the umask), and returns nil if name already is a directory.
// It needs RightCreate. Like every operation it resolves each path confined to
// d, so a ".." or a symbolic link in name can never make it create a
// directory outside d.
func (d *Dir) MkdirAll(name string, perm fs.FileMode) error {
	const op = "mkdirall"
	rootfd, err := d.begin(op, name, RightCreate)
	if err != nil {
		return err
	}
	defer d.fd.release()
	return d.mkdirAll(rootfd, op, name, perm, 0)
}

func (d *Dir) mkdirAll(rootfd int, op, name string, perm fs.FileMode, depth int) error {
	err := d.mkdir(rootfd, op, name, perm)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		fi, serr := d.stat(rootfd, op, name, unix.O_PATH)
		if serr == nil && !fi.IsDir() {
			return pathErr(op, name, unix.ENOTDIR)
		}
		return serr
	case !errors.Is(err, unix.ENOENT) || depth > unix.PathMax/2:
		return err
	}
	parent, _, _ := splitPath(name)
	if parent == "." {
		return err
	}
	if perr := d.mkdirAll(rootfd, op, parent, perm, depth+1); perr != nil {
		return perr
	}
	err = d.mkdir(rootfd, op, name, perm)
	if errors.Is(err, unix.EEXIST) {
		return nil // made by someone else meanwhile; stat would say if not a directory
	}
	return err
}

// Remove removes the named file or empty directory in d; a symbolic link
// is removed, not followed. It needs RightDelete.
func (d *Dir) Remove(name string) error {
	const op = "remove"
	_, p, err := d.beginParent(op, name, RightDelete, nil)
	if err != nil {
		return err
	}
	defer d.endParent(&p)
	err = ignoringEINTR(func() error { return unix.Unlinkat(p.fd, p.base, 0) })
	if err == nil {
		return nil
	}
	err1 := ignoringEINTR(func() error { return unix.Unlinkat(p.fd, p.base, unix.AT_REMOVEDIR) })
	if err1 == nil {
		return nil
	}
	// Report the error that explains: rmdir's, unless name is not a directory.
	if err1 != unix.ENOTDIR {
		err = err1
	}
	return pathErr(op, name, err)
}

// RemoveAll removes name in d and, if it is a directory, everything in it.
// It returns nil if name does not exist. Symbolic links are removed, never
// followed, and every lookup stays confined to d. It needs RightDelete only: the
// directories it lists to empty them are not shown to the caller. name may
// not end in "." or "..".
func (d *Dir) RemoveAll(name string) error {
	const op = "removeall"
	rootfd, err := d.begin(op, name, RightDelete)
	if err != nil {
		return err
	}
	defer d.fd.release()
	p, err := d.parent(rootfd, name, unix.O_PATH)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return pathErr(op, name, err)
	}
	defer p.close()
	base := baseName(p.base)
	if base == "." || base == ".." {
		return pathErr(op, name, unix.EINVAL)
	}
	if err := d.removeAllAt(p.fd, base, 0); err != nil {
		return pathErr(op, name, err)
	}
	return nil
}

// removeAllAt removes the plain name in the directory dirfd, and
// everything in it.
func (d *Dir) removeAllAt(dirfd int, name string, depth int) error {
	err := ignoringEINTR(func() error { return unix.Unlinkat(dirfd, name, 0) })
	switch err {
	case nil, unix.ENOENT:
		return nil
	case unix.EISDIR, unix.EPERM, unix.EACCES:
	default:
		return err
	}
	if depth > unix.PathMax/2 {
		return unix.ENAMETOOLONG
	}
	fd, oerr := openat2(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0, d.mode)
	if oerr != nil {
		if oerr == unix.ENOTDIR || oerr == unix.ELOOP {
			return err // not a directory: the unlink error stands
		}
		if oerr == unix.ENOENT {
			return nil
		}
		return oerr
	}
	defer unix.Close(fd)
	var firstErr error
	r := newDirentReader(fd)
	for {
		ents, rerr := r.next(256)
		if rerr != nil {
			return rerr
		}
		if len(ents) == 0 {
			break
		}
		removed := 0
		for _, e := range ents {
			if cerr := d.removeAllAt(fd, e.name, depth+1); cerr != nil {
				if firstErr == nil {
					firstErr = cerr
				}
			} else {
				removed++
			}
		}
		if removed == 0 {
			break // nothing in this batch could go; do not loop forever
		}
		// Entries were removed while reading: start again from the top.
		if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
			return err
		}
		r.reset()
	}
	err = ignoringEINTR(func() error { return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR) })
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if firstErr != nil {
		return firstErr
	}
	return err
}

// Rename renames oldname to newname, both in d, replacing newname if it
// exists and the kernel allows (rename(2) rules). Neither name's last
// element is followed if it is a symbolic link. It needs RightCreate and RightDelete.
func (d *Dir) Rename(oldname, newname string) error {
	return d.rename("rename", oldname, newname, 0)
}

func (d *Dir) rename(op, oldname, newname string, flags uint) error {
	return d.twoNames(op, oldname, newname, RightCreate|RightDelete, func(from, to parentDir) error {
		return ignoringEINTR(func() error { return unix.Renameat2(from.fd, from.base, to.fd, to.base, flags) })
	})
}

// Link makes newname a hard link to the file oldname, both in d. If
// oldname is a symbolic link, the link is to it, not to its target. It
// needs RightCreate.
func (d *Dir) Link(oldname, newname string) error {
	return d.twoNames("link", oldname, newname, RightCreate, func(from, to parentDir) error {
		if !from.plain {
			// ".", ".." or a path with a trailing slash: a directory, if
			// anything, and directories cannot be linked.
			return unix.EPERM
		}
		return ignoringEINTR(func() error { return unix.Linkat(from.fd, from.base, to.fd, to.base, 0) })
	})
}

// twoNames runs an operation on two names in d (rename, link): it checks
// both and the rights, opens both parents confined to d, and calls fn with
// them. Errors name both paths.
func (d *Dir) twoNames(op, oldname, newname string, need Rights, fn func(from, to parentDir) error) error {
	rootfd, from, err := d.beginParent(op, oldname, need, func() error { return checkPath(newname) })
	if err != nil {
		return linkErr(op, oldname, newname, errors.Unwrap(err))
	}
	defer d.endParent(&from)
	to, err := d.parent(rootfd, newname, unix.O_PATH)
	if err != nil {
		return linkErr(op, oldname, newname, err)
	}
	defer to.close()
	if err := fn(from, to); err != nil {
		return linkErr(op, oldname, newname, err)
	}
	return nil
}

// Symlink makes newname in d a symbolic link to target. The target is
// stored as given and may point anywhere; it is only a string until a
// lookup in a Dir follows it, confined: an absolute or climbing target is
// refused in Beneath mode and taken relative to the Dir in InRoot mode. It
// needs RightCreate.
func (d *Dir) Symlink(target, newname string) error {
	const op = "symlink"
	_, p, err := d.beginParent(op, newname, RightCreate, func() error { return checkTarget(target) })
	if err != nil {
		return linkErr(op, target, newname, errors.Unwrap(err))
	}
	defer d.endParent(&p)
	err = ignoringEINTR(func() error { return unix.Symlinkat(target, p.fd, p.base) })
	if err != nil {
		return linkErr(op, target, newname, err)
	}
	return nil
}

// Readlink returns the target of the symbolic link name in d. It needs
// RightRead.
func (d *Dir) Readlink(name string) (string, error) {
	var target string
	err := d.onFinal("readlink", name, RightRead, func(fd int, base string, _ int) error {
		for size := 256; ; size *= 2 {
			buf := make([]byte, size)
			n, err := unix.Readlinkat(fd, base, buf)
			if err != nil {
				return err
			}
			if n < size {
				target = string(buf[:n])
				return nil
			}
		}
	})
	return target, err
}

// Stat returns the FileInfo of the named file in d, following symbolic
// links confined to d. Its Sys is a *unix.Stat_t. It needs no right.
func (d *Dir) Stat(name string) (fs.FileInfo, error) {
	rootfd, err := d.begin("stat", name, 0)
	if err != nil {
		return nil, err
	}
	defer d.fd.release()
	return d.stat(rootfd, "stat", name, unix.O_PATH)
}

// stat returns the FileInfo of name, opened from rootfd with flags:
// O_PATH, and O_NOFOLLOW for a symbolic link itself.
func (d *Dir) stat(rootfd int, op, name string, flags int) (*fileInfo, error) {
	fd, err := openat2(rootfd, name, flags, 0, d.mode)
	if err != nil {
		return nil, pathErr(op, name, err)
	}
	defer unix.Close(fd)
	return fstatInfo(fd, op, name)
}

// fstatInfo returns the FileInfo of the file open on fd, which name (of
// the operation op) leads to.
func fstatInfo(fd int, op, name string) (*fileInfo, error) {
	fi := &fileInfo{name: baseName(name)}
	if err := unix.Fstat(fd, &fi.st); err != nil {
		return nil, pathErr(op, name, err)
	}
	return fi, nil
}

// Lstat returns the FileInfo of the named file in d; if it is a symbolic
// link, of the link. Its Sys is a *unix.Stat_t. It needs no right.
func (d *Dir) Lstat(name string) (fs.FileInfo, error) {
	rootfd, err := d.begin("lstat", name, 0)
	if err != nil {
		return nil, err
	}
	defer d.fd.release()
	return d.lstat(rootfd, "lstat", name)
}

func (d *Dir) lstat(rootfd int, op, name string) (*fileInfo, error) {
	if name == "." {
		// d itself: its own descriptor.
		fi := &fileInfo{name: baseName(name)}
		if err := ignoringEINTR(func() error { return unix.Fstat(rootfd, &fi.st) }); err != nil {
			return nil, pathErr(op, name, err)
		}
		return fi, nil
	}
	parent, base, plain := splitPath(name)
	if parent == "." && plain {
		fi := &fileInfo{name: baseName(name)}
		err := ignoringEINTR(func() error {
			return unix.Fstatat(rootfd, base, &fi.st, unix.AT_SYMLINK_NOFOLLOW)
		})
		if err != nil {
			return nil, pathErr(op, name, err)
		}
		return fi, nil
	}
	return d.stat(rootfd, op, name, unix.O_PATH|unix.O_NOFOLLOW)
}

// Chmod changes the mode of the named file in d to mode's permission and
// special bits, following symbolic links confined to d. It needs RightSetAttr.
//
// It changes the file the confined lookup found, through that descriptor:
// with fchmodat2(2) (Linux 6.6), or on older kernels through the
// descriptor's /proc/self/fd entry, which needs /proc.
func (d *Dir) Chmod(name string, mode fs.FileMode) error {
	return d.chmod("chmod", name, mode, unix.O_PATH)
}

// Lchmod is Chmod without following a final symbolic link: where name is
// one, it fails with EOPNOTSUPP, as Linux does for a link's mode
// (fchmodat with AT_SYMLINK_NOFOLLOW). Links before the last element are
// followed, confined to d, as Chmod follows them. A server acting for a
// client whose permission the kernel checked on a link (the FUSE server
// of package served: a link's owner may ask for it, through /proc, on
// Linux before 6.6) must use it, or it would change the target, which
// the client may not own.
func (d *Dir) Lchmod(name string, mode fs.FileMode) error {
	return d.chmod("lchmod", name, mode, unix.O_PATH|unix.O_NOFOLLOW)
}

func (d *Dir) chmod(op, name string, mode fs.FileMode, flags int) error {
	fd, err := d.openIn(op, name, RightSetAttr, flags)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if flags&unix.O_NOFOLLOW != 0 {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return pathErr(op, name, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return pathErr(op, name, unix.EOPNOTSUPP)
		}
	}
	m := filemode.Unix(mode)
	err = unix.EOPNOTSUPP
	if !testHooks.noFchmodat2.Load() {
		err = ignoringEINTR(func() error { return unix.Fchmodat(fd, "", m, unix.AT_EMPTY_PATH) })
	}
	if err == unix.EOPNOTSUPP || err == unix.ENOSYS {
		// No fchmodat2: the descriptor's magic link leads to the very file.
		proc := "/proc/self/fd/" + strconv.Itoa(fd)
		err = ignoringEINTR(func() error { return unix.Fchmodat(unix.AT_FDCWD, proc, m, 0) })
		if err == unix.ENOENT {
			err = errors.New("chmod needs fchmodat2 (Linux 6.6) or /proc")
		}
	}
	if err != nil {
		return pathErr(op, name, err)
	}
	return nil
}

// ReadFile returns the contents of the named file in d. It needs RightRead.
func (d *Dir) ReadFile(name string) ([]byte, error) {
	const op = "readfile"
	fd, err := d.openIn(op, name, RightRead, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	b, _, err := readAll(fd)
	if err != nil {
		return nil, pathErr(op, name, err)
	}
	return b, nil
}

// readAll reads the file open on fd to its end and returns its contents
// and its fstat.
func readAll(fd int) ([]byte, unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, st, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil, st, ErrIsDir
	}
	size := 512
	if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size > 0 && st.Size < 1<<30 {
		size = int(st.Size) + 1 // one more, to see EOF without growing
	}
	b := make([]byte, 0, size)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		var n int
		err := ignoringEINTR(func() (err error) {
			n, err = unix.Read(fd, b[len(b):cap(b)])
			return err
		})
		if err != nil {
			return nil, st, err
		}
		if n == 0 {
			return b, st, nil
		}
		b = b[:len(b)+n]
	}
}

// WriteFile writes data to the named file in d, creating it with perm
// (before the umask) if it does not exist and truncating it if it does. It
// needs RightWrite, and RightCreate to make a new file. Like os.WriteFile it writes in
// place: a concurrent reader can see part of the data; see Replace for an
// atomic write.
func (d *Dir) WriteFile(name string, data []byte, perm fs.FileMode) error {
	f, err := d.OpenFile(name, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err1 := f.Close(); err == nil {
		err = err1
	}
	return err
}
