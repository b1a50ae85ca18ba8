package probe

import (
	"context"
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestClassify checks the reasons CheckUserNS gives for each shape of
// refusal, including those this kernel cannot show (AppArmor's, Debian's
// switch, a kernel without user namespaces).
func TestClassify(t *testing.T) {
	apparmor := map[string]string{sysctlAppArmorUserns: "1", sysctlMaxUserns: "1000"}
	debian := map[string]string{sysctlUsernsClone: "0", sysctlMaxUserns: "1000"}
	plain := map[string]string{sysctlMaxUserns: "1000"}
	for _, c := range []struct {
		name     string
		creating bool
		errno    unix.Errno
		uid      int
		filtered bool
		sysctls  map[string]string
		want     UserNSReason
	}{
		{"max_user_namespaces=0", true, unix.ENOSPC, 1000, false, map[string]string{sysctlMaxUserns: "0"}, UserNSLimit},
		{"max_user_namespaces=0 as root", true, unix.ENOSPC, 0, false, map[string]string{sysctlMaxUserns: "0"}, UserNSLimit},
		{"no CONFIG_USER_NS", true, unix.EINVAL, 1000, false, nil, UserNSNoKernel},
		{"docker's seccomp profile", true, unix.EPERM, 1000, true, plain, UserNSSeccomp},
		{"docker's seccomp profile as root", true, unix.EPERM, 0, true, plain, UserNSSeccomp},
		{"debian's switch", true, unix.EPERM, 1000, false, debian, UserNSDisabled},
		{"debian's switch does not stop root", true, unix.EPERM, 0, false, debian, UserNSUnknown},
		{"ubuntu 24.04: uid_map refused", false, unix.EPERM, 1000, false, apparmor, UserNSAppArmor},
		{"ubuntu 24.04: uid_map EACCES", false, unix.EACCES, 1000, false, apparmor, UserNSAppArmor},
		{"ubuntu 24.04: no mount namespace", false, unix.EPERM, 1000, false, apparmor, UserNSAppArmor},
		{"apparmor denying creation", true, unix.EACCES, 1000, false, apparmor, UserNSAppArmor},
		{"apparmor under a filter: the filter", true, unix.EPERM, 1000, true, apparmor, UserNSSeccomp},
		{"EPERM, nothing to explain it", true, unix.EPERM, 1000, false, plain, UserNSUnknown},
		{"another errno", false, unix.EIO, 1000, false, apparmor, UserNSUnknown},
	} {
		if got := classify(c.creating, c.errno, c.uid, c.filtered, c.sysctls); got != c.want {
			t.Errorf("%s: classify = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestNoUserNSError checks that the error reads on one line, names the
// step and the errno, unwraps to the errno, and has a fix for every
// reason.
func TestNoUserNSError(t *testing.T) {
	for r := UserNSUnknown; r <= UserNSNoKernel; r++ {
		e := &NoUserNSError{Reason: r, Step: "writing /proc/self/uid_map", Err: unix.EPERM}
		msg := e.Error()
		if strings.Contains(msg, "\n") || !strings.Contains(msg, "uid_map: EPERM") {
			t.Errorf("%v: Error() = %q", r, msg)
		}
		if !errors.Is(e, unix.EPERM) {
			t.Errorf("%v: does not unwrap to EPERM", r)
		}
		if e.Fix() == "" || strings.Contains(e.Fix(), "\n") {
			t.Errorf("%v: Fix() = %q", r, e.Fix())
		}
		if r.String() == "" || strings.HasPrefix(r.String(), "UserNSReason(") {
			t.Errorf("%d: String() = %q", int(r), r.String())
		}
	}
}

// TestCheckUserNS checks the probe against what proc finds on this
// kernel: they agree on whether user namespaces can be made.
func TestCheckUserNS(t *testing.T) {
	err := CheckUserNS(context.Background())
	var ne *NoUserNSError
	if err != nil && !errors.As(err, &ne) {
		t.Fatalf("CheckUserNS: %v", err)
	}
	t.Logf("CheckUserNS: %v", err)
	if r := UserNS(context.Background()); r.OK && err != nil {
		t.Errorf("UserNS says ok (%s), CheckUserNS: %v", r.Detail, err)
	}
}

// TestAppArmorProfile checks the profile's shape: Ubuntu's for programs
// that may make user namespaces, for the path given.
func TestAppArmorProfile(t *testing.T) {
	p := AppArmorProfile("/usr/local/bin/caplin")
	for _, want := range []string{"abi <abi/4.0>,", "include <tunables/global>", "profile caplin /usr/local/bin/caplin flags=(unconfined) {", "  userns,", "}"} {
		if !strings.Contains(p, want+"\n") {
			t.Errorf("profile lacks the line %q:\n%s", want, p)
		}
	}
	if p := AppArmorProfile("/opt/my tools/caplin"); !strings.Contains(p, "profile caplin \"/opt/my tools/caplin\" flags=(unconfined) {\n") {
		t.Errorf("a path with a space is not quoted:\n%s", p)
	}
}
