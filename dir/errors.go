package dir

import (
	"errors"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Errors are *fs.PathError values that name the operation, the path as the
// caller gave it, and the cause: an errno (syscall.Errno) from the kernel,
// or one of the errors below, each of which wraps the errno a kernel would
// give for it. So errors.Is(err, fs.ErrNotExist), errors.Is(err,
// fs.ErrPermission) and errors.Is(err, unix.EXDEV) work as they do for the
// os package.

// ErrEscape is the cause of an error for a path that would leave the Dir:
// ".." above its top, an absolute symbolic link, or a symbolic link whose
// target climbs out, in Beneath mode. It wraps EXDEV, which is what
// openat2(RESOLVE_BENEATH) answers.
var ErrEscape error = &errnoError{msg: "path escapes from the directory", errno: unix.EXDEV}

// ErrNoOpenat2 is the error Open, FromFile and every path operation return
// on a kernel without openat2(2), which came in Linux 5.6. Without it a
// lookup cannot be confined to a directory, and this package does not fall
// back to resolving paths unsafely. It wraps ENOSYS, so errors.Is(err,
// errors.ErrUnsupported) holds.
var ErrNoOpenat2 error = &errnoError{msg: "openat2 is not available: directory capabilities need Linux 5.6 or later", errno: unix.ENOSYS}

// ErrIsDir is the cause of an error from Open, OpenFile and OpenExec for a
// name that is a directory. A descriptor of a directory is a starting point
// for openat(2) lookups that neither this Dir's rights nor its confinement
// restrict, so a Dir does not hand one out: use Sub for a Dir of it,
// ReadDir to list it, or the FS view, whose directory files keep their
// descriptor to themselves. It wraps EISDIR.
var ErrIsDir error = &errnoError{msg: "is a directory (a Dir hands out no directory descriptors: use Sub or ReadDir)", errno: unix.EISDIR}

// ErrVersionMismatch is the cause of the error CompareAndSwap returns when
// the file no longer holds the expected version.
var ErrVersionMismatch = errors.New("file changed: version mismatch")

// Bad input: each of these is the cause (PathError.Err) of the error for a
// path that cannot name anything in a Dir. They satisfy errors.Is(err,
// fs.ErrInvalid) and wrap the errno the kernel would give.
var (
	// ErrEmptyPath: the path is "".
	ErrEmptyPath error = &invalidPathError{msg: "empty path", errno: unix.ENOENT}
	// ErrNUL: the path contains a NUL byte.
	ErrNUL error = &invalidPathError{msg: "path contains a NUL byte", errno: unix.EINVAL}
	// ErrPathTooLong: the path has PATH_MAX (4096) bytes or more.
	ErrPathTooLong error = &invalidPathError{msg: "path too long", errno: unix.ENAMETOOLONG}
	// ErrAbsolute: the path starts with "/"; paths in a Dir are relative
	// to it (in InRoot mode, symbolic links may still be absolute).
	ErrAbsolute error = &invalidPathError{msg: "absolute path where a path relative to the directory is required", errno: unix.EINVAL}
)

// errnoError is a sentinel error that wraps an errno.
type errnoError struct {
	msg   string
	errno syscall.Errno
}

func (e *errnoError) Error() string { return e.msg }
func (e *errnoError) Unwrap() error { return e.errno }

// invalidPathError is bad input: fs.ErrInvalid, wrapping an errno.
type invalidPathError struct {
	msg   string
	errno syscall.Errno
}

func (e *invalidPathError) Error() string        { return e.msg }
func (e *invalidPathError) Unwrap() error        { return e.errno }
func (e *invalidPathError) Is(target error) bool { return target == fs.ErrInvalid }

// RightsError is the cause of an error for an operation the Dir's rights
// do not permit, and for a Sub that asks for rights its parent lacks. It
// wraps EPERM, so errors.Is(err, fs.ErrPermission) holds.
type RightsError struct {
	// Need is the rights the operation needs.
	Need Rights
	// Have is the rights the Dir has.
	Have Rights
}

// Error says which rights were missing and which the Dir has.
func (e *RightsError) Error() string {
	return "not permitted by the directory's rights: needs " + (e.Need &^ e.Have).String() + " (has " + e.Have.String() + ")"
}

// Unwrap returns EPERM.
func (e *RightsError) Unwrap() error { return unix.EPERM }

// pathErr makes the error of an operation.
func pathErr(op, path string, err error) error {
	return &fs.PathError{Op: op, Path: path, Err: err}
}

// linkErr makes the error of a two-path operation (Rename, Link, Symlink,
// Exchange): an *os.LinkError, as the os package returns.
func linkErr(op, old, new string, err error) error {
	return &os.LinkError{Op: op, Old: old, New: new, Err: err}
}
