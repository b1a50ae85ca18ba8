package dir

import (
	"errors"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// sysOpenat2 is openat2(2); tests replace it to play a kernel without it.
var sysOpenat2 = unix.Openat2

// maxRetries bounds the retries of a lookup that the kernel abandoned with
// EAGAIN because a rename or mount elsewhere raced with a ".." in it. Each
// retry starts the lookup again from the Dir, so retrying is safe; the
// bound only keeps a rename storm from spinning a caller forever.
const maxRetries = 512

// openat2 opens path relative to dirfd with openat2(2), resolving it in
// mode, and translates its errors: ENOSYS to ErrNoOpenat2, EXDEV (a lookup
// that would leave the directory) to ErrEscape. O_CLOEXEC is always set.
func openat2(dirfd int, path string, flags int, perm uint32, mode Mode) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: mode.resolve(),
	}
	if flags&(unix.O_CREAT|unix.O_TMPFILE) != 0 {
		how.Mode = uint64(perm & 0o7777)
	}
	for i := 0; ; i++ {
		fd, err := sysOpenat2(dirfd, path, &how)
		if err == nil {
			return fd, nil
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN && i < maxRetries:
			if i > 8 {
				runtime.Gosched()
			}
			continue
		case err == unix.ENOSYS:
			return -1, ErrNoOpenat2
		case err == unix.EXDEV:
			return -1, ErrEscape
		}
		return -1, err
	}
}

// openat2Probe reports whether this kernel has openat2, once per process.
var openat2Probe = sync.OnceValue(func() error {
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil // cannot tell; every lookup will say
	}
	defer unix.Close(fd)
	nfd, err := openat2(fd, ".", unix.O_PATH|unix.O_DIRECTORY, 0, Beneath)
	if err == nil {
		unix.Close(nfd)
	}
	if errors.Is(err, ErrNoOpenat2) {
		return err
	}
	return nil
})

// ignoringEINTR runs a system call until it is not interrupted.
func ignoringEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}

// parentDir is where an operation acts: a directory descriptor and the
// final component of the path, as splitPath returns it.
type parentDir struct {
	fd    int
	own   bool // fd was opened for this operation and must be closed
	base  string
	plain bool
}

func (p *parentDir) close() {
	if p.own {
		unix.Close(p.fd)
		p.own = false
	}
}

// parent opens the directory that holds name's final component, resolved
// confined from rootfd, as an O_PATH descriptor (or with flags, when the
// caller needs to read, lock or fsync it).
func (d *Dir) parent(rootfd int, name string, flags int) (parentDir, error) {
	dirPath, base, plain := splitPath(name)
	if dirPath == "." && flags == unix.O_PATH {
		return parentDir{fd: rootfd, base: base, plain: plain}, nil
	}
	fd, err := openat2(rootfd, dirPath, flags|unix.O_DIRECTORY, 0, d.mode)
	if err != nil {
		return parentDir{}, err
	}
	return parentDir{fd: fd, own: true, base: base, plain: plain}, nil
}
