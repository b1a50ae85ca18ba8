package sandbox

import (
	"errors"
	"strings"

	"golang.org/x/sys/unix"
)

// The errors of a Spec that cannot be enforced here, one set:
//
//   - ErrUnenforceable matches (errors.Is) every one of them, whatever the
//     reason: test for it to offer BestEffort, say.
//   - *UnsupportedError: the running kernel lacks a feature (Landlock, or
//     a Landlock ABI); it says which Linux release brought it, and wraps
//     the kernel's errno, so that errors.Is(err, unix.ENOSYS) holds too.
//   - *LimitError: a resource limit has nothing to enforce it here (no
//     delegated cgroup, say); it wraps the errors of the attempts.
//
//   - *LandlockOnlyError: a LandlockOnly Spec asks for what cannot be had
//     without namespaces (a tmpfs, a bind elsewhere than its source) or
//     on this kernel's Landlock; it lists each thing and why.

// ErrUnenforceable is matched (errors.Is) by every error that says a Spec
// asks for something the running kernel, the caller's privileges or the
// chosen mode cannot enforce, when BestEffort is not set.
var ErrUnenforceable = errors.New("sandbox: cannot be enforced here")

// UnsupportedError says that the running kernel lacks a feature a Spec or a
// policy needs. It matches ErrUnenforceable and unix.ENOSYS (errors.Is),
// and unwraps to Err.
type UnsupportedError struct {
	// Feature names what is missing: "Landlock", "Landlock TCP rules".
	Feature string
	// MinKernel is the first Linux release that has it: "5.13".
	MinKernel string
	// Detail says more, where there is more to say: what else it needs
	// (a kernel option, a boot parameter), or what the kernel has.
	Detail string
	// Err is the kernel's errno: ENOSYS where the system call is missing,
	// EOPNOTSUPP where it is there but disabled; ENOSYS too where the
	// kernel was not asked (its Landlock ABI version said it already).
	Err error
}

// Error says what is missing, since which Linux release, and the errno.
func (e *UnsupportedError) Error() string {
	s := "sandbox: " + e.Feature + " needs Linux " + e.MinKernel + " or later"
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the kernel's errno.
func (e *UnsupportedError) Unwrap() error { return e.Err }

// Is reports whether target is ErrUnenforceable or unix.ENOSYS: every
// UnsupportedError is both, whichever errno the kernel gave.
func (e *UnsupportedError) Is(target error) bool {
	return target == ErrUnenforceable || target == error(unix.ENOSYS)
}

// landlockKernel is the first Linux release of each Landlock ABI version.
var landlockKernel = [...]string{1: "5.13", 2: "5.19", 3: "6.2", 4: "6.7", 5: "6.10", 6: "6.12"}

// kernelForABI returns the first Linux release with Landlock ABI abi.
func kernelForABI(abi int) string {
	if abi >= 1 && abi < len(landlockKernel) {
		return landlockKernel[abi]
	}
	return "a later release than 6.12"
}

// LandlockOnlyError says what of a LandlockOnly Spec cannot be enforced
// without namespaces, or with this kernel's Landlock, when BestEffort is
// not set. It matches ErrUnenforceable (errors.Is).
type LandlockOnlyError struct {
	// Cannot lists each thing, and why: "mount 3 (symlink usr/bin
	// /bin): needs a mount namespace".
	Cannot []string

	newerLandlock int // how many of Cannot OnlyNewerLandlock counts
}

// Error lists what cannot be enforced, on one line.
func (e *LandlockOnlyError) Error() string {
	return ErrUnenforceable.Error() + ": Landlock-only: " + strings.Join(e.Cannot, "; ")
}

// Is reports whether target is ErrUnenforceable.
func (e *LandlockOnlyError) Is(target error) bool { return target == ErrUnenforceable }

// OnlyNewerLandlock reports whether all that cannot be enforced is for want
// of a newer Landlock ABI than the kernel's (keeping signals and abstract
// Unix sockets in, ABI 6), not of namespaces: what a newer kernel, not a
// different spec, would honour.
func (e *LandlockOnlyError) OnlyNewerLandlock() bool {
	return len(e.Cannot) > 0 && e.newerLandlock == len(e.Cannot)
}

// MountError says that one of a Spec's mounts could not be made, and how:
// what the kernel refused, in words (making the directory, attaching the
// mount) rather than by the calls and fds of the process that built the
// sandbox. Its Error names the mount by its number in Spec.Mounts; a
// caller that built the Spec from something else (a command line, where
// one option may stand for several mounts) can name what the user wrote
// instead, from Index.
type MountError struct {
	Index int   // the mount's index in Spec.Mounts
	Mount Mount // the mount
	Err   error // what failed; it wraps the errno, if any
}

// Error names the mount ("mount 3 (ro-bind /usr /usr)") and what failed.
func (e *MountError) Error() string {
	return "sandbox: " + describe(e.Index, &e.Mount) + ": " + e.Err.Error()
}

// Unwrap returns Err.
func (e *MountError) Unwrap() error { return e.Err }

// mountError returns err as the failure of mount i, m.
func mountError(i int, m *Mount, err error) error {
	return &MountError{Index: i, Mount: *m, Err: err}
}

// LinkExistsError is a Symlink mount whose destination exists already and
// is not a link to its Source: a link elsewhere, or not a link at all. (A
// link to Source there already is kept, as bubblewrap keeps it, so that a
// spec can be applied again to a writable bind it made links in.)
type LinkExistsError struct {
	// Dest and Source are the mount's.
	Dest, Source string
	// Existing is the target of the link at Dest, when it is one.
	Existing string
	// NotLink is set when what is at Dest is not a link.
	NotLink bool
}

// Error says what is at the destination; the MountError it comes in
// names the mount.
func (e *LinkExistsError) Error() string {
	if e.NotLink {
		return "the destination exists and is not a symbolic link"
	}
	return "the destination exists, a link to " + e.Existing + ", not " + e.Source
}

// Unwrap returns EEXIST, the errno of making the link there.
func (e *LinkExistsError) Unwrap() error { return unix.EEXIST }
