package probe

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// The sysctls that decide whether unprivileged users may make user
// namespaces.
const (
	// Debian's and Ubuntu's older patch: 0 forbids them.
	sysctlUsernsClone = "/proc/sys/kernel/unprivileged_userns_clone"
	// Upstream: 0 forbids user namespaces to everyone.
	sysctlMaxUserns = "/proc/sys/user/max_user_namespaces"
	// Ubuntu 23.10 and later: 1 lets an unconfined unprivileged process
	// make one, but without capabilities in it (so no ID maps, no mounts).
	sysctlAppArmorUserns = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"
)

// nobody is the uid and gid the probe drops to, as root, to try user
// namespaces as an unprivileged user would.
const nobody = 65534

// UserNSReason is why a process cannot make the user namespaces that
// sandboxes are built in.
type UserNSReason int

const (
	// UserNSUnknown: refused for a reason the probe cannot name (another
	// LSM, a chroot, a nesting limit).
	UserNSUnknown UserNSReason = iota
	// UserNSAppArmor: AppArmor's restriction of unprivileged user
	// namespaces (kernel.apparmor_restrict_unprivileged_userns=1, Ubuntu
	// 23.10 and later). On Ubuntu 24.04 unshare(CLONE_NEWUSER) succeeds,
	// but the new namespace has no capabilities, so its ID maps cannot
	// be written (EPERM, EACCES) nor anything mounted in it.
	UserNSAppArmor
	// UserNSSeccomp: a seccomp filter refuses unshare, or clone with
	// CLONE_NEWUSER (EPERM), as Docker's default profile does for a
	// container without CAP_SYS_ADMIN, and Kubernetes' RuntimeDefault.
	UserNSSeccomp
	// UserNSLimit: user.max_user_namespaces is 0, or as many user
	// namespaces exist as it allows (ENOSPC).
	UserNSLimit
	// UserNSDisabled: kernel.unprivileged_userns_clone=0, Debian's
	// switch for unprivileged users (EPERM).
	UserNSDisabled
	// UserNSNoKernel: the kernel is built without user namespaces
	// (CONFIG_USER_NS): no /proc/self/ns/user, and unshare fails with
	// EINVAL.
	UserNSNoKernel
)

// usernsReasons describes each reason: its name, why in a few words, and
// the fix; the limit's words depend on whether it is 0 or was reached
// (the reached pair).
var usernsReasons = [...]struct{ name, why, fix, whyReached, fixReached string }{
	UserNSUnknown: {name: "unknown", fix: "caplin doctor says what it finds"},
	UserNSAppArmor: {name: "apparmor", why: "AppArmor restricts them (kernel.apparmor_restrict_unprivileged_userns=1)",
		fix: "install an AppArmor profile that gives caplin userns (caplin doctor prints it)"},
	UserNSSeccomp: {name: "seccomp", why: "a seccomp filter refuses them, as containers' default profiles do",
		fix: "run the container with a seccomp profile that allows unshare and clone with CLONE_NEWUSER"},
	UserNSLimit: {name: "limit", why: "user.max_user_namespaces=0", fix: "sysctl -w user.max_user_namespaces=15000",
		whyReached: "as many exist as user.max_user_namespaces allows",
		fixReached: "raise user.max_user_namespaces, or end some of the namespaces"},
	UserNSDisabled: {name: "disabled", why: "kernel.unprivileged_userns_clone=0", fix: "sysctl -w kernel.unprivileged_userns_clone=1"},
	UserNSNoKernel: {name: "no-kernel-support", why: "the kernel is built without them (CONFIG_USER_NS)",
		fix: "a kernel built with CONFIG_USER_NS=y"},
}

// String returns a short name of the reason: "apparmor", "seccomp",
// "limit", "disabled", "no-kernel-support" or "unknown".
func (r UserNSReason) String() string {
	if r >= 0 && int(r) < len(usernsReasons) {
		return usernsReasons[r].name
	}
	return fmt.Sprintf("UserNSReason(%d)", int(r))
}

// NoUserNSError says that the caller cannot make a user namespace in
// which it can map its IDs and make mounts, as sandboxes need, and why.
// It unwraps to the errno of the step that failed.
type NoUserNSError struct {
	// Reason is why, as far as the probe can tell.
	Reason UserNSReason
	// Step is what failed: "unshare(CLONE_NEWUSER)", "writing
	// /proc/self/uid_map", "unshare(CLONE_NEWNS)"...
	Step string
	// Sysctls are the settings that bear on user namespaces, as read:
	// "user.max_user_namespaces=0, ...".
	Sysctls string
	// Err is the errno of Step.
	Err error
}

// Error says that user namespaces are not allowed, why, and what
// failed, on one line.
func (e *NoUserNSError) Error() string {
	s := "user namespaces are not allowed here"
	if w := e.Why(); w != "" {
		s += ": " + w
	}
	return s + " (" + e.Step + ": " + errText(e.Err) + ")"
}

// Unwrap returns the errno of the step that failed.
func (e *NoUserNSError) Unwrap() error { return e.Err }

// Why says in a few words why user namespaces are not allowed; "" when
// the reason is unknown.
func (e *NoUserNSError) Why() string {
	why, _ := e.words()
	return why
}

// Fix says, in one line, what would let caplin make user namespaces here.
func (e *NoUserNSError) Fix() string {
	_, fix := e.words()
	return fix
}

// words returns the reason's why and fix.
func (e *NoUserNSError) words() (why, fix string) {
	r := e.Reason
	if r < 0 || int(r) >= len(usernsReasons) {
		r = UserNSUnknown
	}
	d := usernsReasons[r]
	if v, reached := limitReached(); r == UserNSLimit && reached {
		return d.whyReached + " (" + v + ")", d.fixReached
	}
	return d.why, d.fix
}

// limitReached returns user.max_user_namespaces, and whether it is not
// 0: an ENOSPC then means that as many namespaces exist as it allows.
func limitReached() (string, bool) {
	v, err := kernel.ReadTrim(sysctlMaxUserns)
	return v, err == nil && v != "0"
}

// CheckUserNS tries, in a child of the caller, what a sandbox needs of a
// user namespace: to make one, map the caller's uid and gid in it, and
// make a mount namespace there. It returns nil if all of that works, a
// *NoUserNSError if the kernel refused a step, or another error if the
// child could not be made.
func CheckUserNS(ctx context.Context) error {
	if _, err := os.Stat("/proc/self/ns/user"); errors.Is(err, os.ErrNotExist) {
		return &NoUserNSError{Reason: UserNSNoKernel, Step: "stat /proc/self/ns/user", Sysctls: usernsSysctls(), Err: err}
	}
	h, err := proc.Fork(ctx, &proc.Options{From: proc.Direct})
	if err != nil {
		return fmt.Errorf("probe: making a child to try user namespaces: %w", err)
	}
	defer h.Close()
	return tryUserNS(ctx, h, os.Geteuid(), os.Getegid())
}

// tryUserNS has the child h make a user namespace, map uid and gid (its
// own, outside) to themselves in it, and make a mount namespace there,
// one step a round trip so that the step that fails is known.
func tryUserNS(ctx context.Context, h *proc.Handle, uid, gid int) error {
	type step struct {
		name   string
		record func(b *proc.Batch)
	}
	write := func(name, data string) step {
		path := "/proc/self/" + name
		return step{"writing " + path, func(b *proc.Batch) {
			fd := b.Openat(proc.AtFDCWD(), path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
			b.Write(fd, []byte(data))
			b.CloseFD(fd)
		}}
	}
	steps := []step{
		{"unshare(CLONE_NEWUSER)", func(b *proc.Batch) { b.Unshare(unix.CLONE_NEWUSER) }},
		write("setgroups", "deny"),
		write("uid_map", fmt.Sprintf("%d %d 1\n", uid, uid)),
		write("gid_map", fmt.Sprintf("%d %d 1\n", gid, gid)),
		{"unshare(CLONE_NEWNS)", func(b *proc.Batch) { b.Unshare(unix.CLONE_NEWNS) }},
	}
	for i, s := range steps {
		var b proc.Batch
		s.record(&b)
		if _, err := h.Run(ctx, &b); err != nil {
			var errno unix.Errno
			if !errors.As(err, &errno) {
				return fmt.Errorf("probe: %s: %w", s.name, err)
			}
			return &NoUserNSError{
				Reason:  classify(i == 0, errno, uid, inSeccompFilter(), sysctlValues()),
				Step:    s.name,
				Sysctls: usernsSysctls(),
				Err:     errno,
			}
		}
	}
	return nil
}

// classify tells why a step of tryUserNS failed with errno: creating the
// namespace (creating), or using it after. uid is the caller's, filtered
// says that it runs under a seccomp filter, and sysctls holds the values
// of the sysctls that bear on user namespaces, by their file's path.
func classify(creating bool, errno unix.Errno, uid int, filtered bool, sysctls map[string]string) UserNSReason {
	switch {
	case errno == unix.ENOSPC:
		return UserNSLimit
	case creating && errno == unix.EINVAL:
		return UserNSNoKernel
	case errno != unix.EPERM && errno != unix.EACCES:
		return UserNSUnknown
	case creating && uid != 0 && sysctls[sysctlUsernsClone] == "0":
		return UserNSDisabled
	case creating && filtered:
		return UserNSSeccomp
	case sysctls[sysctlAppArmorUserns] == "1" && uid != 0:
		// Made, but without capabilities in it; or, with kernels that
		// deny outright where the unprivileged_userns profile is
		// missing, not made at all.
		return UserNSAppArmor
	}
	return UserNSUnknown
}

// inSeccompFilter reports whether the caller runs under a seccomp filter
// (the Seccomp line of /proc/self/status says 2).
func inSeccompFilter() bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Seccomp:"); ok {
			return strings.TrimSpace(v) == "2"
		}
	}
	return false
}

// sysctlValues reads the sysctls that bear on user namespaces, by their
// file's path; those the kernel lacks are left out.
func sysctlValues() map[string]string {
	m := map[string]string{}
	for _, p := range []string{sysctlUsernsClone, sysctlMaxUserns, sysctlAppArmorUserns} {
		if v, err := kernel.ReadTrim(p); err == nil {
			m[p] = v
		}
	}
	return m
}

// usernsSysctls returns the sysctls that bear on user namespaces as
// name=value, in one line.
func usernsSysctls() string {
	vals := sysctlValues()
	var parts []string
	for _, p := range []string{sysctlUsernsClone, sysctlMaxUserns, sysctlAppArmorUserns} {
		if v, ok := vals[p]; ok {
			name := strings.ReplaceAll(strings.TrimPrefix(p, "/proc/sys/"), "/", ".")
			parts = append(parts, name+"="+v)
		}
	}
	if len(parts) == 0 {
		return "none of the user namespace sysctls"
	}
	return strings.Join(parts, ", ")
}

// AppArmorRestricts reports whether AppArmor restricts unprivileged user
// namespaces here (kernel.apparmor_restrict_unprivileged_userns=1).
func AppArmorRestricts() bool {
	v, err := kernel.ReadTrim(sysctlAppArmorUserns)
	return err == nil && v == "1"
}

// AppArmorProfile returns an AppArmor profile that lets the program at
// path (caplin's own, with symbolic links resolved) make user namespaces
// where AppArmor restricts them, in the form Ubuntu documents for such
// programs (https://ubuntu.com/blog/ubuntu-23-10-restricted-unprivileged-user-namespaces):
// unconfined but for the userns rule. Installed as
// /etc/apparmor.d/caplin and loaded with apparmor_parser -r, it applies to
// that path only.
func AppArmorProfile(path string) string {
	if strings.ContainsAny(path, " \t\"{}[]*?,") {
		path = strconv.Quote(path) // AppArmor's quoting of a path with spaces or glob characters
	}
	return `# /etc/apparmor.d/caplin: lets caplin make user namespaces.
# Load with: sudo apparmor_parser -r /etc/apparmor.d/caplin
abi <abi/4.0>,
include <tunables/global>

profile caplin ` + path + ` flags=(unconfined) {
  userns,

  # Site-specific additions and overrides.
  include if exists <local/caplin>
}
`
}

// UserNS tries to make a child in a new user namespace, map IDs and make
// a mount namespace in it, as sandboxes do. Run as root, it also tries
// as uid 65534, since what matters is whether users other than root can.
func UserNS(ctx context.Context) Result {
	r := Result{
		Name:      "unprivileged user namespaces",
		MinKernel: "3.8",
		Without: "caplin run falls back to a sandbox without namespaces (Landlock, seccomp, " +
			"no_new_privs, rlimits) and says so, or refuses with --require userns; " +
			"caplin bwrap fails, as bubblewrap does; proc.Fork needs Options.From = proc.Detached, " +
			"whose children's children can outlive their owner",
	}
	euid := os.Geteuid()
	err := CheckUserNS(ctx)
	var ne *NoUserNSError
	if euid != 0 {
		switch {
		case err == nil:
			r.OK = true
			r.Detail = fmt.Sprintf("as uid %d, made one, mapped the IDs and made a mount namespace in it (%s)", euid, usernsSysctls())
		case errors.As(err, &ne):
			r.Detail = fmt.Sprintf("as uid %d: %v (%s)", euid, err, ne.Sysctls)
			r.Fix = ne.Fix()
		default:
			r.Detail = fmt.Sprintf("as uid %d, could not try: %v", euid, err)
		}
		return r
	}
	// Root can make user namespaces wherever anyone can; what matters
	// then is whether other users can: try as nobody.
	if err != nil {
		r.Detail = fmt.Sprintf("as root: %v (%s)", err, usernsSysctls())
		if errors.As(err, &ne) {
			r.Fix = ne.Fix()
		}
		return r
	}
	nobodyErr := tryAsNobody(ctx)
	switch {
	case nobodyErr == nil:
		r.OK = true
		r.Detail = fmt.Sprintf("as root and as uid %d: made one, mapped the IDs and made a mount namespace in it (%s)", nobody, usernsSysctls())
	case errors.As(nobodyErr, &ne):
		r.Detail = fmt.Sprintf("they work for root, but as uid %d: %v (%s)", nobody, nobodyErr, ne.Sysctls)
		r.Fix = ne.Fix()
	default:
		r.OK = true
		r.Detail = fmt.Sprintf("they work for root; could not try as uid %d: %v (%s)", nobody, nobodyErr, usernsSysctls())
	}
	return r
}

// tryAsNobody makes a child, drops it to uid and gid 65534 with no
// supplementary groups, and has it try user namespaces as an unprivileged
// user would (tryUserNS). The caller must be root.
func tryAsNobody(ctx context.Context) error {
	h, err := proc.Fork(ctx, &proc.Options{From: proc.Direct})
	if err != nil {
		return err
	}
	defer h.Close()
	var b proc.Batch
	b.Setgroups(nil)
	b.Setresgid(nobody, nobody, nobody)
	b.Setresuid(nobody, nobody, nobody)
	// Changing credentials made the child non-dumpable, which makes its
	// /proc/self files root's; an ordinary process of uid 65534 is dumpable.
	b.Prctl(unix.PR_SET_DUMPABLE, proc.Int(1), proc.Int(0), proc.Int(0), proc.Int(0))
	if _, err := h.Run(ctx, &b); err != nil {
		return fmt.Errorf("dropping to uid %d: %w", nobody, err)
	}
	return tryUserNS(ctx, h, nobody, nobody)
}

// forkAny makes a plain child: in the tree zygote's pid namespace if it
// can, or detached.
func forkAny(ctx context.Context) (*proc.Handle, error) {
	h, err := proc.Fork(ctx, nil)
	if err == nil {
		return h, nil
	}
	h, derr := proc.Fork(ctx, &proc.Options{From: proc.Detached})
	if derr != nil {
		return nil, fmt.Errorf("%w; detached: %w", err, derr)
	}
	return h, nil
}
