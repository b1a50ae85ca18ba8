package netgrant

import (
	"runtime"

	"github.com/caplin-dev/caplin/internal/kernel"
	"golang.org/x/sys/unix"
)

// FilterFlags returns the flags to install Filter with:
// SECCOMP_FILTER_FLAG_NEW_LISTENER, and, where the kernel has it (Linux
// 5.19), SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, so that once the Broker
// has received a connect, a signal to its thread (a Go program's
// preemption signal, say) does not interrupt it between the Broker's
// installing the socket and its answer. Without it the Broker repairs
// that case (see Broker).
func FilterFlags() int {
	if waitKillable() {
		return unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
	}
	return unix.SECCOMP_FILTER_FLAG_NEW_LISTENER
}

// waitKillable reports whether the kernel has
// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19).
func waitKillable() bool {
	release, _, err := kernel.Uname()
	return err == nil && kernel.AtLeast(release, 5, 19)
}

// auditArch is this architecture's AUDIT_ARCH value in struct
// seccomp_data.
func auditArch() uint32 {
	if runtime.GOARCH == "arm64" {
		return unix.AUDIT_ARCH_AARCH64
	}
	return unix.AUDIT_ARCH_X86_64
}

// Filter returns the seccomp filter that hands every connect(2) of this
// architecture to the listener it is installed with
// (SECCOMP_FILTER_FLAG_NEW_LISTENER), and lets every other call through
// (the sandbox's default filter, installed before it, refuses what it
// refuses, and other architectures' calls). A connect's address is in the
// program's memory, where a filter cannot look: the Broker reads it.
func Filter() []unix.SockFilter {
	const (
		offNr   = 0
		offArch = 4
	)
	stmt := func(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
	jeq := func(k uint32, jt, jf uint8) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: k, Jt: jt, Jf: jf}
	}
	return []unix.SockFilter{
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offArch),
		jeq(auditArch(), 1, 0),
		stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW),
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offNr),
		jeq(unix.SYS_CONNECT, 0, 1),
		stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_USER_NOTIF),
		stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW),
	}
}
