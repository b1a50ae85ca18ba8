package probe

import (
	"context"
	"fmt"

	"github.com/caplin-dev/caplin/internal/kernel"
)

// minMajor and minMinor are the oldest kernel caplin supports.
const minMajor, minMinor = 5, 10

// Kernel reports the running kernel's release and whether it is one caplin
// supports.
func Kernel(context.Context) Result {
	r := Result{
		Name:      "kernel",
		MinKernel: fmt.Sprintf("%d.%d", minMajor, minMinor),
		Without:   "older kernels lack close_range and pidfd pieces caplin needs; it may fail in surprising ways",
	}
	rel, machine, err := kernel.Uname()
	if err != nil {
		r.Detail = "uname: " + errText(err)
		return r
	}
	major, minor, ok := kernel.ParseRelease(rel)
	switch {
	case !ok:
		r.Detail = fmt.Sprintf("Linux %s on %s: cannot read the version number; caplin needs %d.%d or later", rel, machine, minMajor, minMinor)
	case major < minMajor || major == minMajor && minor < minMinor:
		r.Detail = fmt.Sprintf("Linux %s on %s is older than %d.%d, the oldest caplin supports", rel, machine, minMajor, minMinor)
	default:
		r.OK = true
		r.Detail = fmt.Sprintf("Linux %s on %s (caplin supports %d.%d and later)", rel, machine, minMajor, minMinor)
	}
	return r
}
