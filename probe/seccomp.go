package probe

import (
	"context"
	"fmt"
	"strings"

	"github.com/caplin-dev/caplin/internal/kernel"
	"golang.org/x/sys/unix"
)

// seccompStatus returns the Seccomp and Seccomp_filters lines of
// /proc/self/status ("0" and "0" when caplin runs unfiltered).
func seccompStatus() (mode, filters string) {
	b, err := kernel.ReadTrim("/proc/self/status")
	if err != nil {
		return "", ""
	}
	for _, line := range strings.Split(b, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch k {
		case "Seccomp":
			mode = strings.TrimSpace(v)
		case "Seccomp_filters":
			filters = strings.TrimSpace(v)
		}
	}
	return mode, filters
}

// Seccomp reports whether seccomp filters can be installed, and whether
// caplin itself already runs under one (in a container, say).
func Seccomp(context.Context) Result {
	r := Result{
		Name:      "seccomp filters",
		MinKernel: "3.5",
		Without:   "required by sandboxes: every one has a filter, so caplin run and sandbox.Build fail",
	}
	mode, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0)
	if err != nil {
		r.Detail = "prctl(PR_GET_SECCOMP): " + errText(err) + ": the kernel is built without seccomp (CONFIG_SECCOMP)"
		return r
	}
	statusMode, filters := seccompStatus()
	var self string
	switch {
	case mode == 0:
		self = "caplin runs unfiltered"
	case statusMode == "2" && filters != "":
		self = fmt.Sprintf("caplin already runs under %s filter(s), a container's perhaps; new filters stack on them", filters)
	default:
		self = fmt.Sprintf("caplin already runs in seccomp mode %d", mode)
	}
	if err := seccompActionAvail(unix.SECCOMP_RET_ERRNO); err != nil {
		if isErrno(err, unix.ENOSYS) || isErrno(err, unix.EINVAL) {
			// seccomp(2) is 3.17 and SECCOMP_GET_ACTION_AVAIL 4.14; the
			// prctl form of filters is older, and still works.
			r.OK = true
			r.Detail = fmt.Sprintf("filters available (prctl works; seccomp(SECCOMP_GET_ACTION_AVAIL): %s); %s", errText(err), self)
			return r
		}
		r.Detail = fmt.Sprintf("seccomp(SECCOMP_GET_ACTION_AVAIL, SECCOMP_RET_ERRNO): %s; %s", errText(err), self)
		return r
	}
	r.OK = true
	actions := "errno"
	if v, err := kernel.ReadTrim("/proc/sys/kernel/seccomp/actions_avail"); err == nil {
		actions = v
	}
	r.Detail = fmt.Sprintf("filters available, actions: %s; %s", actions, self)
	return r
}

// SeccompNotify reports whether seccomp can hand system calls to a
// supervisor (SECCOMP_RET_USER_NOTIF).
func SeccompNotify(context.Context) Result {
	r := Result{
		Name:      "seccomp user notification",
		MinKernel: "5.0",
		Without:   "caplin run --connect (network grants) is refused",
	}
	if err := seccompActionAvail(unix.SECCOMP_RET_USER_NOTIF); err != nil {
		r.Detail = "seccomp(SECCOMP_GET_ACTION_AVAIL, SECCOMP_RET_USER_NOTIF): " + errText(err)
		return r
	}
	sz, err := seccompGetNotifSizes()
	if err != nil {
		r.Detail = "SECCOMP_RET_USER_NOTIF is known, but seccomp(SECCOMP_GET_NOTIF_SIZES): " + errText(err)
		return r
	}
	r.OK = true
	r.Detail = fmt.Sprintf("SECCOMP_RET_USER_NOTIF available; struct sizes: notif %d, resp %d, data %d bytes", sz.notif, sz.resp, sz.data)
	return r
}
