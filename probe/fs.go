package probe

import (
	"context"
	"math"

	"golang.org/x/sys/unix"
)

// Openat2 opens "." beneath "/" with openat2(RESOLVE_BENEATH).
func Openat2(context.Context) Result {
	r := Result{
		Name:      "openat2",
		MinKernel: "5.6",
		Without:   "directory capabilities (dir) cannot confine lookups beneath a directory, nor sandboxes their mount destinations inside the new root: both fail with a clear error",
	}
	root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		r.Detail = "not tried: open /: " + errText(err)
		return r
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, ".", &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		r.Detail = "openat2(RESOLVE_BENEATH): " + errText(err)
		return r
	}
	unix.Close(fd)
	r.OK = true
	r.Detail = "opened a directory with openat2(RESOLVE_BENEATH)"
	return r
}

// Fsopen opens a tmpfs filesystem context with fsopen(2). Without
// CAP_SYS_ADMIN the kernel answers EPERM, which still shows that the call
// exists: inside a user namespace caplin has the capability.
func Fsopen(context.Context) Result {
	r := Result{
		Name:      "fsopen (mount API)",
		MinKernel: "5.2",
		Without:   "no detached mounts: mounts are made with mount(2) in place",
	}
	fd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	switch {
	case err == nil:
		unix.Close(fd)
		r.OK = true
		r.Detail = "opened a tmpfs filesystem context with fsopen"
	case isErrno(err, unix.EPERM):
		r.OK = true
		r.Detail = "fsopen exists (EPERM here without CAP_SYS_ADMIN; a user namespace gives it)"
	default:
		r.Detail = "fsopen(tmpfs): " + errText(err)
	}
	return r
}

// MountSetattr calls mount_setattr(2) on "/" with nothing to change.
func MountSetattr(context.Context) Result {
	r := Result{
		Name:      "mount_setattr",
		MinKernel: "5.12",
		Without:   "read-only bind mounts take a remount each, and ID-mapped mounts are unavailable",
	}
	err := unix.MountSetattr(unix.AT_FDCWD, "/", 0, &unix.MountAttr{})
	switch {
	case err == nil:
		r.OK = true
		r.Detail = "mount_setattr accepted a no-op change on /"
	case isErrno(err, unix.ENOSYS):
		r.Detail = "mount_setattr: " + errText(err)
	default:
		r.OK = true
		r.Detail = "mount_setattr exists (a no-op change on / returned " + errText(err) + ")"
	}
	return r
}

// CloseRange closes a range of fds that are not open.
func CloseRange(context.Context) Result {
	r := Result{
		Name:      "close_range",
		MinKernel: "5.9",
		Without:   "required: a new child's fd table cannot be emptied, so children may hold fds caplin never meant to give",
	}
	if err := unix.CloseRange(math.MaxUint32-1, math.MaxUint32, 0); err != nil {
		r.Detail = "close_range: " + errText(err)
		return r
	}
	r.OK = true
	r.Detail = "close_range works"
	return r
}
