package netgrant

import (
	"errors"
	"fmt"

	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/internal/unotify"
	"golang.org/x/sys/unix"
)

// UnsupportedError says that this kernel lacks what a Broker needs: seccomp
// user notification (Linux 5.0), pidfd_getfd (5.6), and the installing of
// a descriptor in the trapped process (SECCOMP_IOCTL_NOTIF_ADDFD, 5.9).
type UnsupportedError struct {
	// Release is the running kernel's release.
	Release string
	// What is the missing feature, and MinKernel the first release with it.
	What, MinKernel string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("netgrant: network grants need %s (Linux %s); this kernel is %s", e.What, e.MinKernel, e.Release)
}

// Is makes an UnsupportedError match errors.ErrUnsupported.
func (e *UnsupportedError) Is(target error) bool { return target == errors.ErrUnsupported }

// Supported returns nil where the running kernel has what a Broker
// needs, else an *UnsupportedError naming the first thing missing.
func Supported() error {
	release, _, err := kernel.Uname()
	if err != nil {
		return fmt.Errorf("netgrant: %w", err)
	}
	if _, err := unotify.Sizes(); err != nil {
		return &UnsupportedError{Release: release, What: "seccomp user notification", MinKernel: "5.0"}
	}
	for _, f := range []struct {
		what, min    string
		major, minor int
	}{
		{"pidfd_getfd", "5.6", 5, 6},
		{"SECCOMP_IOCTL_NOTIF_ADDFD", "5.9", 5, 9},
	} {
		if !kernel.AtLeast(release, f.major, f.minor) {
			return &UnsupportedError{Release: release, What: f.what, MinKernel: f.min}
		}
	}
	if err := unix.Prctl(unix.PR_GET_SECCOMP, 0, 0, 0, 0); err == unix.EINVAL {
		return &UnsupportedError{Release: release, What: "seccomp", MinKernel: "5.0"}
	}
	return nil
}
