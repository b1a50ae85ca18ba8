// Package kernel asks the running kernel what it is and what the caller
// may do: its release, the Landlock ABI it supports, the caller's
// capabilities, and the small text files (sysctls, cgroup files) it
// answers in.
//
// It imports no caplin package.
package kernel

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Uname returns the kernel's release and machine ("6.1.0-13-amd64",
// "x86_64").
func Uname() (release, machine string, err error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", "", os.NewSyscallError("uname", err)
	}
	return unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Machine[:]), nil
}

// ParseRelease returns the major and minor numbers of a kernel release
// such as "6.18.44-fc-v669" or "5.10.0-28-amd64"; ok is false if release
// does not begin with them.
func ParseRelease(release string) (major, minor int, ok bool) {
	maj, rest, found := strings.Cut(release, ".")
	if !found {
		return 0, 0, false
	}
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	a, err1 := strconv.Atoi(maj)
	b, err2 := strconv.Atoi(rest[:end])
	if err1 != nil || err2 != nil || a < 0 {
		return 0, 0, false
	}
	return a, b, true
}

// AtLeast reports whether release is major.minor or later. A release it
// cannot read is not.
func AtLeast(release string, major, minor int) bool {
	ma, mi, ok := ParseRelease(release)
	return ok && (ma > major || ma == major && mi >= minor)
}

// LandlockABI returns the Landlock ABI version the kernel supports, by
// landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION). Its
// error wraps the errno: ENOSYS where Landlock is not built in (or the
// kernel is older than 5.13), EOPNOTSUPP where it is disabled at boot.
func LandlockABI() (int, error) {
	v, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		return 0, os.NewSyscallError("landlock_create_ruleset", errno)
	}
	return int(v), nil
}

// HasCap reports whether the calling thread has capability c (such as
// unix.CAP_SYS_ADMIN) in its effective set, in its user namespace. If
// capget fails, it reports false.
func HasCap(c int) bool {
	if c < 0 || c >= 64 {
		return false
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[c/32].Effective&(1<<(c%32)) != 0
}

// ReadTrim returns the contents of a small file the kernel answers in (a
// sysctl under /proc/sys, a cgroup file) without surrounding space.
func ReadTrim(path string) (string, error) {
	b, err := ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// ReadFile returns the contents of path, a small file that is read once:
// one the kernel answers in (under /proc or /sys) or a short configuration
// file (/etc/subuid). It reads with plain system calls, where os.ReadFile
// makes an *os.File, which costs about ten system calls a file (it tries
// the runtime's poller, which it starts on first use, and stats the file),
// and a finalizer: a start-up that reads a few such files pays for that
// in time. Errors are *os.PathError, with the errno.
func ReadFile(path string) ([]byte, error) {
	var fd int
	var err error
	for {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	b := make([]byte, 0, 1024)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // room for more
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		switch {
		case err == unix.EINTR:
		case err != nil:
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		case n == 0:
			return b, nil
		default:
			b = b[:len(b)+n]
		}
	}
}
