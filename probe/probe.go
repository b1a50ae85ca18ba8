// Package probe finds out at run time which kernel features caplin can use
// on this machine, by trying each one rather than trusting the kernel
// version: distributions backport features, and sysctls, LSMs and
// containers take them away. `caplin doctor` prints the results.
//
// Each probe returns a Result that says what was found, in one line, and
// what caplin does without the feature. Probes have no lasting effect: the
// fds they open are closed and the children they make are killed and
// reaped before they return.
//
// The package sits above proc, which makes the children that try user
// namespaces and pidfds, and below cmd/caplin; tests use it to tell a
// missing kernel feature from a failure.
package probe

import (
	"context"
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// Result is what one probe found.
type Result struct {
	// Name names the feature, as `caplin doctor` prints it.
	Name string `json:"name"`
	// OK reports whether caplin can use the feature here, as the caller.
	OK bool `json:"ok"`
	// Detail says, in one line, what was found, and why not if not OK.
	Detail string `json:"detail"`
	// MinKernel is the first Linux release that has the feature.
	MinKernel string `json:"min_kernel"`
	// Without says what caplin does where the feature is missing.
	Without string `json:"without"`
	// Fix says what would make the feature available, where there is
	// something to say (a sysctl, a profile to install).
	Fix string `json:"fix,omitempty"`
}

// Probe is one feature test.
type Probe func(ctx context.Context) Result

// Probes returns every probe, in the order `caplin doctor` prints them.
func Probes() []Probe {
	return []Probe{
		Kernel,
		UserNS,
		Landlock,
		Seccomp,
		SeccompNotify,
		SeccompAddFD,
		ClonePidfd,
		PidfdSendSignal,
		PidfdOpen,
		WaitidPidfd,
		PidfdGetfd,
		PidfdGetInfo,
		PidfdInfoExit,
		Openat2,
		Fsopen,
		MountSetattr,
		CloseRange,
		FUSE,
		Cgroup2,
		CgroupDelegation,
		Yama,
	}
}

// All runs every probe, one after the other, and returns their results in
// the order of Probes.
func All(ctx context.Context) []Result {
	ps := Probes()
	rs := make([]Result, 0, len(ps))
	for _, p := range ps {
		rs = append(rs, p(ctx))
	}
	return rs
}

// errText describes err in a few words, naming the errno of a failed
// system call ("ENOSYS: function not implemented").
func errText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			return name + ": " + errno.Error()
		}
	}
	return err.Error()
}

// isErrno reports whether err is, or wraps, errno e.
func isErrno(err error, e syscall.Errno) bool {
	return errors.Is(err, e)
}
