package probe

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// fuseFix is what makes /dev/fuse usable by every user.
const fuseFix = "chmod 0666 /dev/fuse as root (udev's rule KERNEL==\"fuse\", MODE=\"0666\" makes it so on desktop systems; " +
	"a container needs the device given, --device /dev/fuse)"

// FUSE tries what a served directory needs, as the caller: in a child, a
// user namespace and a mount namespace of its own, /dev/fuse opened
// there, and a FUSE file system made with it (fsopen, fsconfig, fsmount),
// detached, never attached anywhere, and gone with the child.
func FUSE(ctx context.Context) Result {
	r := Result{
		Name:      "unprivileged FUSE",
		MinKernel: "4.18",
		Without:   "served directories (caplin run --serve-*, sandbox FUSE mounts) are refused, naming /dev/fuse",
	}
	euid := os.Geteuid()
	var st unix.Stat_t
	if err := unix.Stat("/dev/fuse", &st); err != nil {
		r.Detail = fmt.Sprintf("/dev/fuse: %s (%s)", errText(err), fuseInKernel())
		r.Fix = "load the fuse module (modprobe fuse); in a container, give it the device (--device /dev/fuse)"
		return r
	}
	mode := fmt.Sprintf("mode %#o, owner %d:%d", st.Mode&0o7777, st.Uid, st.Gid)
	step, err := tryFUSE(ctx)
	var errno unix.Errno
	switch {
	case err == nil:
		r.OK = true
		r.Detail = fmt.Sprintf("as uid %d, opened /dev/fuse (%s) in a user namespace and made a FUSE file system there", euid, mode)
		if euid == 0 && st.Mode&0o006 != 0o006 {
			r.Detail += "; other users may not open it: " + fuseFix
		}
	case !errors.As(err, &errno):
		r.Detail = fmt.Sprintf("as uid %d, could not try: %v", euid, err)
	case step == "opening /dev/fuse" && (errno == unix.EACCES || errno == unix.EPERM):
		r.Detail = fmt.Sprintf("as uid %d, %s: %s (%s)", euid, step, errText(errno), mode)
		r.Fix = fuseFix
	case step == "user namespace":
		r.Detail = fmt.Sprintf("needs user namespaces, which are not allowed here (%v)", err)
		r.Fix = "see unprivileged user namespaces"
	default:
		r.Detail = fmt.Sprintf("as uid %d, %s: %s (%s)", euid, step, errText(errno), fuseInKernel())
		r.Fix = "a kernel that lets FUSE be mounted in a user namespace (Linux 4.18 or later, with fuse loaded: modprobe fuse)"
	}
	return r
}

// fuseInKernel says whether the kernel lists the fuse file system.
func fuseInKernel() string {
	b, err := os.ReadFile("/proc/filesystems")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == "fuse" {
				return "fuse is in /proc/filesystems"
			}
		}
	}
	return "fuse is not in /proc/filesystems"
}

// tryFUSE makes a FUSE file system in a user namespace of a child's, as
// a sandbox does, and returns the step that failed, if any.
func tryFUSE(ctx context.Context) (string, error) {
	h, err := proc.Fork(ctx, &proc.Options{From: proc.Direct})
	if err != nil {
		return "", fmt.Errorf("making a child: %w", err)
	}
	defer h.Close()
	uid, gid := os.Geteuid(), os.Getegid()
	if err := tryUserNS(ctx, h, uid, gid); err != nil {
		return "user namespace", err
	}
	var b proc.Batch
	fd := b.Openat(proc.AtFDCWD(), "/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	res, err := h.Run(ctx, &b)
	if err != nil {
		return "opening /dev/fuse", errnoIn(err)
	}
	dev := res.Int(fd)
	b = proc.Batch{}
	fs := b.Fsopen("fuse", unix.FSOPEN_CLOEXEC)
	for _, o := range [][2]string{{"fd", strconv.Itoa(dev)}, {"rootmode", "40000"}, {"user_id", strconv.Itoa(uid)}, {"group_id", strconv.Itoa(gid)}} {
		b.Fsconfig(fs, unix.FSCONFIG_SET_STRING, o[0], o[1], proc.Int(0))
	}
	b.Fsconfig(fs, unix.FSCONFIG_CMD_CREATE, "", "", proc.Int(0))
	mnt := b.Fsmount(fs, unix.FSMOUNT_CLOEXEC, 0)
	b.CloseFD(mnt)
	b.CloseFD(fs)
	b.CloseFD(proc.Int(dev))
	if _, err := h.Run(ctx, &b); err != nil {
		var be *proc.BatchError
		if errors.As(err, &be) && be.Index == 0 {
			return "fsopen fuse", errnoIn(err)
		}
		return "making a FUSE file system in the user namespace", errnoIn(err)
	}
	return "", nil
}

// errnoIn returns the errno in err, or err.
func errnoIn(err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}
