// Package fdctl holds the descriptor chores several packages do: running
// code with an *os.File's descriptor without changing the file, and
// duplicating descriptors close-on-exec, atomically.
//
// It imports no caplin package.
package fdctl

import (
	"os"

	"golang.org/x/sys/unix"
)

// Control runs fn with f's descriptor, which stays open until fn returns.
// Unlike f.Fd, it leaves f as it is: Fd puts the file description, which
// duplicates and other processes share, in blocking mode. It fails, with
// an error wrapping os.ErrClosed, if f is closed (or nil).
func Control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return closed(f)
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		// The only way Control fails: the file is closed (or closing).
		return closed(f)
	}
	return ferr
}

// Dup returns a duplicate of fd, close-on-exec from the start (fcntl
// F_DUPFD_CLOEXEC), so that no exec in another thread can inherit it.
func Dup(fd int) (int, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	return nfd, nil
}

// DupFile returns a close-on-exec duplicate of f's descriptor, leaving f
// as it is (see Control).
func DupFile(f *os.File) (int, error) {
	nfd := -1
	err := Control(f, func(fd int) (err error) {
		nfd, err = Dup(fd)
		return err
	})
	return nfd, err
}

// closed is Control's error for a file it cannot use.
func closed(f *os.File) error {
	name := ""
	if f != nil {
		name = f.Name()
	}
	return &os.PathError{Op: "control", Path: name, Err: os.ErrClosed}
}
