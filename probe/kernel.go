package probe

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// minMajor and minMinor are the oldest kernel caplin supports.
const minMajor, minMinor = 5, 10

// Uname returns the kernel's release and machine ("6.1.0-13-amd64",
// "x86_64").
func Uname() (release, machine string, err error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", "", err
	}
	return unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Machine[:]), nil
}

// parseRelease returns the major and minor numbers of a kernel release
// string such as "6.18.44-fc-v669" or "5.10.0-28-amd64".
func parseRelease(rel string) (major, minor int, ok bool) {
	maj, rest, found := strings.Cut(rel, ".")
	if !found {
		return 0, 0, false
	}
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	a, err1 := strconv.Atoi(maj)
	b, err2 := strconv.Atoi(rest[:end])
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return a, b, true
}

// Kernel reports the running kernel's release and whether it is one caplin
// supports.
func Kernel(context.Context) Result {
	r := Result{
		Name:      "kernel",
		MinKernel: fmt.Sprintf("%d.%d", minMajor, minMinor),
		Without:   "older kernels lack close_range and pidfd pieces caplin needs; it may fail in surprising ways",
	}
	rel, machine, err := Uname()
	if err != nil {
		r.Detail = "uname: " + errText(err)
		return r
	}
	major, minor, ok := parseRelease(rel)
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
