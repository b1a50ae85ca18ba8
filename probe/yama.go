package probe

import (
	"context"
	"fmt"

	"github.com/caplin-dev/caplin/internal/kernel"
)

// Yama reports the Yama LSM's ptrace_scope, which also governs
// pidfd_getfd.
func Yama(context.Context) Result {
	r := Result{
		Name:      "Yama ptrace_scope",
		MinKernel: "3.4",
		Without:   "caplin needs no ptrace; with scope 2 or 3, sandbox.Inspect's socket details (pidfd_getfd) need CAP_SYS_PTRACE, or are left out",
	}
	v, err := kernel.ReadTrim("/proc/sys/kernel/yama/ptrace_scope")
	if err != nil {
		r.OK = true
		r.Detail = "Yama is not active (no kernel.yama.ptrace_scope): ptrace and pidfd_getfd follow the usual permission checks"
		return r
	}
	switch v {
	case "0":
		r.OK = true
		r.Detail = "ptrace_scope=0 (classic): a process may trace, and pidfd_getfd from, any process of its user"
	case "1":
		r.OK = true
		r.Detail = "ptrace_scope=1 (restricted): a process may trace, and pidfd_getfd from, its descendants only"
	case "2":
		r.Detail = "ptrace_scope=2 (admin only): tracing and pidfd_getfd need CAP_SYS_PTRACE"
	case "3":
		r.Detail = "ptrace_scope=3 (no attach): no process may trace or pidfd_getfd another, until reboot"
	default:
		r.Detail = fmt.Sprintf("ptrace_scope=%s (unknown value)", v)
	}
	return r
}
