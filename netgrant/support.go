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
	// Err, when not nil, is why What failed on a kernel that has it: a
	// seccomp filter the caller is under refused it, say.
	Err error
}

func (e *UnsupportedError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("netgrant: %s is refused here (%v), though this kernel (%s) has it", e.What, e.Err, e.Release)
	}
	return fmt.Sprintf("netgrant: network grants need %s (Linux %s); this kernel is %s", e.What, e.MinKernel, e.Release)
}

// Is makes an UnsupportedError match errors.ErrUnsupported.
func (e *UnsupportedError) Is(target error) bool { return target == errors.ErrUnsupported }

// Supported returns nil where the running kernel has what a Broker
// needs, else an *UnsupportedError naming the first thing missing.
func Supported() error {
	if err := supportedBase(); err != nil {
		return err
	}
	release := kernelRelease()
	if !kernel.AtLeast(release, 5, 9) {
		return &UnsupportedError{Release: release, What: "SECCOMP_IOCTL_NOTIF_ADDFD", MinKernel: "5.9"}
	}
	return nil
}

// supportedBase returns nil where the kernel has seccomp user
// notification (5.0) and pidfd_getfd (5.6), which every Broker needs.
func supportedBase() error {
	release, _, err := kernel.Uname()
	if err != nil {
		return fmt.Errorf("netgrant: %w", err)
	}
	if err := unix.Prctl(unix.PR_GET_SECCOMP, 0, 0, 0, 0); err == unix.EINVAL {
		return &UnsupportedError{Release: release, What: "seccomp", MinKernel: "5.0"}
	}
	if _, err := unotify.Sizes(); err != nil {
		return &UnsupportedError{Release: release, What: "seccomp user notification", MinKernel: "5.0"}
	}
	if !kernel.AtLeast(release, 5, 6) {
		return &UnsupportedError{Release: release, What: "pidfd_getfd", MinKernel: "5.6"}
	}
	return nil
}

// kernelRelease returns the running kernel's release, or "unknown".
func kernelRelease() string {
	release, _, err := kernel.Uname()
	if err != nil {
		return "unknown"
	}
	return release
}
