package dir

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"strconv"
	"sync/atomic"

	"github.com/caplin-dev/caplin/internal/filemode"
	"golang.org/x/sys/unix"
)

// Atomic file operations
//
// Replace, CompareAndSwap and Exchange never change a file in place: the
// new contents go to a new file in the same directory, which a single
// rename(2) puts in place. A reader that opens the name gets a complete
// file, the old one or the new one, and keeps reading the one it opened.
//
// Writers that need to see each other (Replace, CompareAndSwap, Exchange)
// serialize on an flock(2) of the directory that holds the name, held only
// around the compare and the rename, so the lock works across processes
// and goroutines alike, and is dropped by the kernel if its holder dies.
// No lock file is made. Other writers do not take the lock: WriteFile
// (which writes in place), Remove, Rename, and programs that do not use
// this package can still change the file between a CompareAndSwap's
// compare and its rename.

// A Version identifies one state of a file: the file (inode) a name refers
// to, as Read and StatVersion see it. Versions are comparable with ==; the
// zero Version means "no file". CompareAndSwap succeeds only if the name
// still refers to the file of the expected Version.
//
// Because Replace and CompareAndSwap always put a new file in place and
// never write a file that is in place, a new state is always a new inode.
// A Version is therefore the inode's identity:
//
//   - the device and the kernel's file handle for the inode
//     (name_to_handle_at(2), unprivileged), which names the inode uniquely
//     on its file system even after its inode number is reused: a handle
//     carries the inode's generation, which changes on reuse. The inode
//     number alone would not do: ext4 hands a freed inode number to the
//     next new file at once, so a Version read before two replacements
//     would match again after them (the ABA problem);
//   - the inode number, modification time (nanoseconds) and size. A write
//     in place, by WriteFile or a program that does not use this package,
//     changes the modification time or the size, so such a write shows as
//     a new Version, as far as the file system's timestamp granularity
//     allows.
//
// The change time is left out on purpose: rename(2) sets it on the file
// it replaces while that file is still visible under the name, so a
// Version that included it would change before the replacement took
// effect, and CompareAndSwap would fail on a file that had not changed
// yet.
//
// On a file system without file handles (some FUSE and pseudo file
// systems) a Version is the device, inode number, modification time and
// size: an inode number reused within one timestamp tick for a file of the
// same size would then look like the old Version.
type Version struct {
	dev, ino uint64
	mtime    int64
	size     int64
	handle   string
}

// IsZero reports whether v is the zero Version, which stands for a name
// that does not exist.
func (v Version) IsZero() bool { return v == Version{} }

// String describes v for messages: device, inode, modification time, size
// and the end of the file handle.
func (v Version) String() string {
	if v.IsZero() {
		return "version(none)"
	}
	h := v.handle
	if len(h) > 8 {
		h = h[len(h)-8:]
	}
	return fmt.Sprintf("version(dev=%#x ino=%d mtime=%d size=%d fh=%s)", v.dev, v.ino, v.mtime, v.size, hex.EncodeToString([]byte(h)))
}

// versionOf returns the Version of the file open on fd, and its stat.
func versionOf(fd int) (Version, unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Version{}, st, err
	}
	v := Version{dev: st.Dev, ino: st.Ino, mtime: st.Mtim.Nano(), size: st.Size}
	fh, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
	switch err {
	case nil:
		b := make([]byte, 4, 4+fh.Size())
		binary.LittleEndian.PutUint32(b, uint32(fh.Type()))
		v.handle = string(append(b, fh.Bytes()...))
	case unix.EOPNOTSUPP, unix.ENOSYS, unix.EOVERFLOW, unix.EINVAL:
		// No handles here: the inode number, mtime and size must do.
	default:
		return Version{}, st, err
	}
	return v, st, nil
}

// currentVersion returns the Version of the plain name base in the
// directory dirfd, the zero Version if it does not exist. A symbolic link
// is not followed.
func (d *Dir) currentVersion(dirfd int, base string) (Version, unix.Stat_t, error) {
	fd, err := openat2(dirfd, base, unix.O_PATH|unix.O_NOFOLLOW, 0, d.mode)
	if err == unix.ENOENT {
		return Version{}, unix.Stat_t{}, nil
	}
	if err != nil {
		return Version{}, unix.Stat_t{}, err
	}
	defer unix.Close(fd)
	return versionOf(fd)
}

// Read returns the contents of the named file in d and their Version, for
// a later CompareAndSwap. The name's last element is not followed if it is
// a symbolic link (Read fails with ELOOP). It needs RightRead.
//
// Read takes no lock: it opens the file the name refers to and reads it
// whole, and a file that Replace or CompareAndSwap put in place is never
// written again, so the contents are those of the Version. If the file is
// written in place meanwhile (by a writer that is not this package's),
// Read sees its modification time or size move and reads again.
func (d *Dir) Read(name string) ([]byte, Version, error) {
	const op = "read"
	fd, err := d.openIn(op, name, RightRead, unix.O_RDONLY|unix.O_NOFOLLOW)
	if err != nil {
		return nil, Version{}, err
	}
	defer unix.Close(fd)
	for try := 0; ; try++ {
		v, _, err := versionOf(fd)
		if err != nil {
			return nil, Version{}, pathErr(op, name, err)
		}
		if _, err := unix.Seek(fd, 0, 0); err != nil {
			return nil, Version{}, pathErr(op, name, err)
		}
		b, st, err := readAll(fd)
		if err != nil {
			return nil, Version{}, pathErr(op, name, err)
		}
		if (st.Mtim.Nano() == v.mtime && st.Size == v.size && int64(len(b)) == v.size) || try >= 100 {
			return b, v, nil
		}
	}
}

// StatVersion returns the Version of the named file in d without reading
// it, the zero Version and an error satisfying errors.Is(err,
// fs.ErrNotExist) if it does not exist. The last element is not followed
// if it is a symbolic link. It needs RightRead.
func (d *Dir) StatVersion(name string) (Version, error) {
	const op = "statversion"
	fd, err := d.openIn(op, name, RightRead, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return Version{}, err
	}
	defer unix.Close(fd)
	v, _, err := versionOf(fd)
	if err != nil {
		return Version{}, pathErr(op, name, err)
	}
	return v, nil
}

// atomicParent opens the directory that holds name for an atomic
// operation: readable, so it can be locked and fsynced. name's last element
// must be an ordinary name.
func (d *Dir) atomicParent(rootfd int, op, name string) (parentDir, error) {
	p, err := d.parent(rootfd, name, unix.O_RDONLY)
	if err != nil {
		return p, pathErr(op, name, err)
	}
	if !p.plain {
		p.close()
		return p, pathErr(op, name, unix.EINVAL)
	}
	return p, nil
}

// beginAtomic starts an atomic operation on name that needs rights: it
// checks name and the rights as begin does and opens the directory that
// holds name (see atomicParent), which the caller closes. That directory
// has a descriptor of its own, so d's is given back at once.
func (d *Dir) beginAtomic(op, name string, need Rights) (parentDir, error) {
	rootfd, err := d.begin(op, name, need)
	if err != nil {
		return parentDir{}, err
	}
	defer d.fd.release()
	return d.atomicParent(rootfd, op, name)
}

// lockDirs takes flock(LOCK_EX) on the directories, in inode order so that
// two callers never wait for each other, and returns the function that
// drops the locks.
func lockDirs(fds ...int) (unlock func(), err error) {
	if len(fds) == 2 {
		var a, b unix.Stat_t
		if err := unix.Fstat(fds[0], &a); err != nil {
			return nil, err
		}
		if err := unix.Fstat(fds[1], &b); err != nil {
			return nil, err
		}
		switch {
		case a.Dev == b.Dev && a.Ino == b.Ino:
			fds = fds[:1]
		case a.Dev > b.Dev || (a.Dev == b.Dev && a.Ino > b.Ino):
			fds = []int{fds[1], fds[0]}
		}
	}
	var held []int
	unlock = func() {
		for i := len(held) - 1; i >= 0; i-- {
			unix.Flock(held[i], unix.LOCK_UN)
		}
	}
	for _, fd := range fds {
		if err := ignoringEINTR(func() error { return unix.Flock(fd, unix.LOCK_EX) }); err != nil {
			unlock()
			return nil, err
		}
		held = append(held, fd)
	}
	return unlock, nil
}

// tempFile makes a new file with a unique name next to base in the
// directory dirfd, opened for writing, writes data to it and fsyncs it.
// The caller renames or removes it and closes fd.
func (d *Dir) tempFile(dirfd int, base string, perm uint32, data []byte) (fd int, name string, err error) {
	prefix := base
	if len(prefix) > 200 {
		prefix = prefix[:200]
	}
	for range 100 {
		name = "." + prefix + ".caplin-tmp-" + strconv.FormatUint(rand.Uint64(), 36)
		fd, err = openat2(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, perm, d.mode)
		if err == unix.EEXIST {
			continue
		}
		break
	}
	if err != nil {
		return -1, "", err
	}
	if err := writeSync(fd, data); err != nil {
		unix.Close(fd)
		unix.Unlinkat(dirfd, name, 0)
		return -1, "", err
	}
	return fd, name, nil
}

// writeSync writes data to fd and fsyncs it.
func writeSync(fd int, data []byte) error {
	for len(data) > 0 {
		var n int
		err := ignoringEINTR(func() (err error) {
			n, err = unix.Write(fd, data)
			return err
		})
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return ignoringEINTR(func() error { return unix.Fsync(fd) })
}

// Replace atomically replaces the contents of the named file in d with
// data, making the file, with perm (before the umask), if it does not
// exist. It needs RightWrite and RightCreate. The name's last element must be an
// ordinary name; if it is a symbolic link, the link is replaced by a file.
//
// Replace writes data to a new file with a unique name in the same
// directory, fsyncs it, renames it over name holding the directory's lock
// (see CompareAndSwap), and fsyncs the directory.
//
//   - Concurrent readers see the old contents or the new, complete, never a
//     mix: the name refers to one file or the other at every instant, and a
//     reader that opened the old file keeps reading it in full.
//   - Concurrent writers: each Replace or CompareAndSwap is one rename
//     under the lock; the last to rename wins, and none is torn. Replace is
//     a blind write: it does not check what it replaces.
//   - A crash (of the process or the machine) before Replace returns leaves
//     the old contents or the new, complete; after it returns, the new
//     contents are durable. A crash can leave the temporary file (named
//     ".<name>.caplin-tmp-*") behind.
//
// The new file belongs to the caller and has perm, not the old file's
// owner and mode.
func (d *Dir) Replace(name string, data []byte, perm fs.FileMode) error {
	const op = "replace"
	p, err := d.beginAtomic(op, name, RightWrite|RightCreate)
	if err != nil {
		return err
	}
	defer p.close()
	fd, tmp, err := d.tempFile(p.fd, p.base, filemode.Unix(perm), data)
	if err != nil {
		return pathErr(op, name, err)
	}
	defer unix.Close(fd)
	unlock, err := lockDirs(p.fd)
	if err != nil {
		unix.Unlinkat(p.fd, tmp, 0)
		return pathErr(op, name, err)
	}
	err = ignoringEINTR(func() error { return unix.Renameat2(p.fd, tmp, p.fd, p.base, 0) })
	if err == nil {
		err = ignoringEINTR(func() error { return unix.Fsync(p.fd) })
	} else {
		unix.Unlinkat(p.fd, tmp, 0)
	}
	unlock()
	if err != nil {
		return pathErr(op, name, err)
	}
	return nil
}

// CompareAndSwap replaces the contents of the named file in d with data if
// the file is still the one of Version expected, and returns the new
// Version. If the file changed, it returns the current Version (the zero
// Version if the name does not exist) and an error that wraps
// ErrVersionMismatch, and changes nothing. The zero Version as expected
// means "only if name does not exist". The new file keeps the old one's
// permission bits (0666 before the umask for a new name). It needs RightWrite
// and RightCreate.
//
// It is correct across processes, not only goroutines. The new contents go
// to a temporary file first (written and fsynced without the lock); then
// CompareAndSwap takes flock(LOCK_EX) on the directory that holds name,
// looks at which file name refers to now, and only if that is expected,
// renames the temporary file over it, fsyncs the directory and drops the
// lock. Every Replace, CompareAndSwap and Exchange in every process takes
// the same lock for its rename, so nothing of theirs can come between the
// compare and the rename: a successful CompareAndSwap takes effect at its
// rename, a failed one at its compare, and the history of all of them is
// linearizable. A failure can also be reported before the lock is taken, if
// the file already differs. The kernel drops the lock of a process that
// dies, so a crash cannot leave the name locked.
//
//   - Concurrent readers (Read) see the old contents or the new, complete.
//   - Concurrent writers: of two CompareAndSwaps from the same Version, one
//     wins and the other gets ErrVersionMismatch. Writers that do not take
//     the lock (WriteFile, Remove, Rename, other programs) are not
//     excluded; an in-place write changes the Version (modification time
//     and size), so it makes a later CompareAndSwap fail, if it came before
//     the compare.
//   - A crash leaves the old contents or the new, complete; after
//     CompareAndSwap returns, the new contents are durable. A temporary
//     file can be left behind.
//
// The lock is the directory's flock: another program that flocks the
// directory delays CompareAndSwap, and the guarantee holds only on file
// systems where flock excludes across processes (local ones; not every
// network file system).
func (d *Dir) CompareAndSwap(name string, expected Version, data []byte) (Version, error) {
	const op = "compareandswap"
	p, err := d.beginAtomic(op, name, RightWrite|RightCreate)
	if err != nil {
		return Version{}, err
	}
	defer p.close()

	// Fail fast, without writing or locking: once the name does not refer to
	// the expected file, a CompareAndSwap that fails now is correct.
	cur, st, err := d.currentVersion(p.fd, p.base)
	if err != nil {
		return Version{}, pathErr(op, name, err)
	}
	if cur != expected {
		return cur, pathErr(op, name, ErrVersionMismatch)
	}
	perm := uint32(0o666)
	if !cur.IsZero() {
		perm = st.Mode & 0o7777
	}
	fd, tmp, err := d.tempFile(p.fd, p.base, perm, data)
	if err != nil {
		return Version{}, pathErr(op, name, err)
	}
	defer unix.Close(fd)
	if !cur.IsZero() {
		// Undo the umask: the new file has the old one's mode.
		if err := unix.Fchmod(fd, perm); err != nil {
			unix.Unlinkat(p.fd, tmp, 0)
			return Version{}, pathErr(op, name, err)
		}
	}

	unlock, err := lockDirs(p.fd)
	if err != nil {
		unix.Unlinkat(p.fd, tmp, 0)
		return Version{}, pathErr(op, name, err)
	}
	v, err := d.swapLocked(p, tmp, fd, expected)
	unlock()
	if err != nil {
		unix.Unlinkat(p.fd, tmp, 0)
		return v, pathErr(op, name, err)
	}
	return v, nil
}

// swapLocked is the part of CompareAndSwap that runs under the lock: the
// compare, the rename of tmp (open on fd) over p.base, and the directory's
// fsync. On a mismatch it returns the current Version.
func (d *Dir) swapLocked(p parentDir, tmp string, fd int, expected Version) (Version, error) {
	cur, _, err := d.currentVersion(p.fd, p.base)
	if err != nil {
		return Version{}, err
	}
	if cur != expected {
		return cur, ErrVersionMismatch
	}
	if expected.IsZero() {
		// Writers that skip the lock may create the name: refuse to replace.
		err = renameNoReplace(p.fd, tmp, p.fd, p.base)
		if err == unix.EEXIST {
			cur, _, _ = d.currentVersion(p.fd, p.base)
			return cur, ErrVersionMismatch
		}
	} else {
		err = ignoringEINTR(func() error { return unix.Renameat2(p.fd, tmp, p.fd, p.base, 0) })
	}
	if err != nil {
		return Version{}, err
	}
	v, _, err := versionOf(fd)
	if err != nil {
		return Version{}, err
	}
	if err := ignoringEINTR(func() error { return unix.Fsync(p.fd) }); err != nil {
		return v, err
	}
	return v, nil
}

// renameNoReplace renames old to new unless new exists (EEXIST), with
// renameat2(RENAME_NOREPLACE), or where the file system lacks that flag,
// with link(2) and unlink(2), which never replace either.
func renameNoReplace(olddir int, old string, newdir int, new string) error {
	err := ignoringEINTR(func() error { return unix.Renameat2(olddir, old, newdir, new, unix.RENAME_NOREPLACE) })
	if err != unix.EINVAL && err != unix.ENOSYS {
		return err
	}
	if err := ignoringEINTR(func() error { return unix.Linkat(olddir, old, newdir, new, 0) }); err != nil {
		return err
	}
	unix.Unlinkat(olddir, old, 0)
	return nil
}

// Exchange atomically swaps the files that the names a and b in d refer
// to, with renameat2(RENAME_EXCHANGE): both must exist, and may be of any
// type. It needs RightCreate and RightDelete. Neither last element is followed if it
// is a symbolic link.
//
//   - Concurrent readers see both names before the swap or both after: no
//     instant exists at which both names refer to the same file or one is
//     missing.
//   - Concurrent writers: Exchange holds the locks of both names'
//     directories (see CompareAndSwap) for the swap, so it is ordered with
//     every Replace and CompareAndSwap; the Versions of the two names are
//     swapped, which makes a CompareAndSwap that expected either fail.
//   - A crash leaves the names swapped or not; after Exchange returns, the
//     swap is durable (both directories are fsynced).
//
// Not every file system supports RENAME_EXCHANGE (EINVAL).
func (d *Dir) Exchange(a, b string) error {
	const op = "exchange"
	rootfd, err := d.begin(op, a, RightCreate|RightDelete)
	if err != nil {
		return linkErr(op, a, b, errors.Unwrap(err))
	}
	defer d.fd.release()
	if err := checkPath(b); err != nil {
		return linkErr(op, a, b, err)
	}
	pa, err := d.atomicParent(rootfd, op, a)
	if err != nil {
		return linkErr(op, a, b, errors.Unwrap(err))
	}
	defer pa.close()
	pb, err := d.atomicParent(rootfd, op, b)
	if err != nil {
		return linkErr(op, a, b, errors.Unwrap(err))
	}
	defer pb.close()
	unlock, err := lockDirs(pa.fd, pb.fd)
	if err != nil {
		return linkErr(op, a, b, err)
	}
	defer unlock()
	err = ignoringEINTR(func() error { return unix.Renameat2(pa.fd, pa.base, pb.fd, pb.base, unix.RENAME_EXCHANGE) })
	if err == nil {
		err = ignoringEINTR(func() error { return unix.Fsync(pa.fd) })
	}
	if err == nil {
		err = ignoringEINTR(func() error { return unix.Fsync(pb.fd) })
	}
	if err != nil {
		return linkErr(op, a, b, err)
	}
	return nil
}

// CreateExclusive atomically makes the named file in d with contents data
// and perm (before the umask), failing with an error satisfying
// errors.Is(err, fs.ErrExist) if the name exists (a dangling symbolic link
// counts). It needs RightCreate.
//
// The file is written and fsynced unnamed (O_TMPFILE), then given its name
// with linkat(2), which never replaces. Where O_TMPFILE is missing or the
// unnamed file cannot be linked (linkat(AT_EMPTY_PATH) needs Linux 6.10 or
// CAP_DAC_READ_SEARCH; the /proc/self/fd route needs /proc), it writes a
// file with a unique temporary name and renames it with
// renameat2(RENAME_NOREPLACE) (or link and unlink where that is missing).
//
//   - Concurrent readers see no file, or the whole file: never an empty or
//     partial one.
//   - Concurrent writers: of several CreateExclusive (or CompareAndSwap
//     with the zero Version) calls for one name, exactly one succeeds.
//   - A crash leaves no file or the whole file; after CreateExclusive
//     returns, the file is durable. Only the temporary-name route can leave
//     a temporary file behind.
func (d *Dir) CreateExclusive(name string, data []byte, perm fs.FileMode) error {
	const op = "createexclusive"
	p, err := d.beginAtomic(op, name, RightCreate)
	if err != nil {
		return err
	}
	defer p.close()
	m := filemode.Unix(perm)

	err = d.createTmpfile(p, m, data)
	if err == errNoTmpfile {
		var fd int
		var tmp string
		fd, tmp, err = d.tempFile(p.fd, p.base, m, data)
		if err == nil {
			unix.Close(fd)
			err = renameNoReplace(p.fd, tmp, p.fd, p.base)
			if err != nil {
				unix.Unlinkat(p.fd, tmp, 0)
			}
		}
	}
	if err == nil {
		err = ignoringEINTR(func() error { return unix.Fsync(p.fd) })
	}
	if err != nil {
		return pathErr(op, name, err)
	}
	return nil
}

var errNoTmpfile = errors.New("no O_TMPFILE")

// testHooks make this kernel look like an older one, so that tests reach
// the fallbacks that Linux 5.10 to 6.9 take.
var testHooks struct {
	noTmpfile       atomic.Bool // CreateExclusive: no O_TMPFILE
	noLinkEmptyPath atomic.Bool // linkat(AT_EMPTY_PATH) refused, as before 6.10 without CAP_DAC_READ_SEARCH
	noFchmodat2     atomic.Bool // no fchmodat2, as before 6.6
	noXattrAt       atomic.Bool // the *xattrat calls give ENOSYS
}

// createTmpfile is CreateExclusive with O_TMPFILE and linkat, or
// errNoTmpfile where that cannot work here.
func (d *Dir) createTmpfile(p parentDir, perm uint32, data []byte) error {
	if testHooks.noTmpfile.Load() {
		return errNoTmpfile
	}
	fd, err := openat2(p.fd, ".", unix.O_TMPFILE|unix.O_WRONLY, perm, d.mode)
	if err != nil {
		switch err {
		case unix.EOPNOTSUPP, unix.EISDIR, unix.EINVAL, unix.ENOENT:
			return errNoTmpfile
		}
		return err
	}
	defer unix.Close(fd)
	if err := writeSync(fd, data); err != nil {
		return err
	}
	err = unix.ENOENT
	if !testHooks.noLinkEmptyPath.Load() {
		err = ignoringEINTR(func() error { return unix.Linkat(fd, "", p.fd, p.base, unix.AT_EMPTY_PATH) })
	}
	if err == unix.ENOENT || err == unix.EPERM || err == unix.EINVAL {
		// linkat(AT_EMPTY_PATH) needs Linux 6.10 or CAP_DAC_READ_SEARCH; the
		// descriptor's /proc entry works for anyone, where /proc is mounted.
		proc := "/proc/self/fd/" + strconv.Itoa(fd)
		err = ignoringEINTR(func() error {
			return unix.Linkat(unix.AT_FDCWD, proc, p.fd, p.base, unix.AT_SYMLINK_FOLLOW)
		})
		if err == unix.ENOENT {
			// Either /proc is missing or the parent went away: tell them apart.
			var st unix.Stat_t
			if unix.Stat("/proc/self/fd", &st) != nil {
				return errNoTmpfile
			}
		}
	}
	return err
}
