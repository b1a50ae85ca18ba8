package probe

import (
	"context"
	"fmt"
	"strings"

	"github.com/caplin-dev/caplin/internal/kernel"
	"golang.org/x/sys/unix"
)

// landlockABIText says what Landlock ABI version abi added, and in which
// kernel.
func landlockABIText(abi int) string {
	switch abi {
	case 1:
		return "Linux 5.13: filesystem access"
	case 2:
		return "Linux 5.19: + file reparenting (refer)"
	case 3:
		return "Linux 6.2: + truncate"
	case 4:
		return "Linux 6.7: + TCP bind and connect"
	case 5:
		return "Linux 6.10: + ioctl on devices"
	case 6:
		return "Linux 6.12: + abstract unix socket and signal scoping"
	case 7:
		return "Linux 6.15: + audit logging control"
	}
	return "newer than caplin knows"
}

// Landlock reports the Landlock ABI version.
func Landlock(context.Context) Result {
	r := Result{
		Name:      "landlock",
		MinKernel: "5.13",
		Without:   "sandboxes rely on namespaces and seccomp alone to limit file and network access",
	}
	abi, err := kernel.LandlockABI()
	switch {
	case err == nil:
		r.OK = true
		r.Detail = fmt.Sprintf("ABI %d (%s)", abi, landlockABIText(abi))
	case isErrno(err, unix.ENOSYS):
		r.Detail = "landlock_create_ruleset: " + errText(err) + ": Landlock is not built into this kernel (CONFIG_SECURITY_LANDLOCK)"
	case isErrno(err, unix.EOPNOTSUPP):
		r.Detail = "landlock_create_ruleset: " + errText(err) + ": Landlock is built but disabled at boot (add landlock to the lsm= kernel parameter)"
		if lsm, err := kernel.ReadTrim("/sys/kernel/security/lsm"); err == nil && !strings.Contains(lsm, "landlock") {
			r.Detail += "; active LSMs: " + lsm
		}
	default:
		r.Detail = "landlock_create_ruleset: " + errText(err)
	}
	return r
}
