package probe

import (
	"context"
	"fmt"
	"os"
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

// usernsPolicy reads the sysctls and returns what they say, and whether
// they allow unprivileged user namespaces.
func usernsPolicy() (text string, allowed bool) {
	allowed = true
	var parts []string
	if v, err := kernel.ReadTrim(sysctlUsernsClone); err == nil {
		parts = append(parts, "kernel.unprivileged_userns_clone="+v)
		if v == "0" {
			allowed = false
		}
	}
	if v, err := kernel.ReadTrim(sysctlMaxUserns); err == nil {
		parts = append(parts, "user.max_user_namespaces="+v)
		if v == "0" {
			allowed = false
		}
	} else {
		parts = append(parts, "no user.max_user_namespaces (kernel without CONFIG_USER_NS?)")
		allowed = false
	}
	if v, err := kernel.ReadTrim(sysctlAppArmorUserns); err == nil {
		parts = append(parts, "kernel.apparmor_restrict_unprivileged_userns="+v)
		if v != "0" {
			allowed = false
		}
	}
	return strings.Join(parts, ", "), allowed
}

// UserNS tries to make a child in a new user namespace. Run as root, it
// also tries as uid 65534, since what matters is whether users other than
// root can.
func UserNS(ctx context.Context) Result {
	r := Result{
		Name:      "unprivileged user namespaces",
		MinKernel: "3.8",
		Without: "proc.Fork needs Options.From = proc.Detached (caplin run --detached), so processes a program forks can outlive caplin; " +
			"--unshare-* need root; sandboxes fall back to Landlock alone",
	}
	policy, allowed := usernsPolicy()
	euid := os.Geteuid()
	forkErr := forkNewUser(ctx)
	if euid != 0 {
		if forkErr == nil {
			r.OK = true
			r.Detail = fmt.Sprintf("made a child in a new user namespace as uid %d (%s)", euid, policy)
		} else {
			r.Detail = fmt.Sprintf("as uid %d, a child in a new user namespace failed: %v (%s)", euid, forkErr, policy)
		}
		return r
	}
	// Root can always make user namespaces (but for max_user_namespaces=0);
	// try as nobody for what other users get.
	rootText := "they work for root"
	if forkErr != nil {
		rootText = fmt.Sprintf("even root failed: %v", forkErr)
	}
	nobodyErr := tryAsNobody(ctx)
	switch {
	case nobodyErr == nil:
		r.OK = true
		r.Detail = fmt.Sprintf("running as root: %s, and as uid %d unshare(CLONE_NEWUSER) and writing uid_map worked, so other users have them (%s)", rootText, nobody, policy)
	case isErrno(nobodyErr, unix.EPERM) || isErrno(nobodyErr, unix.EACCES) || isErrno(nobodyErr, unix.ENOSPC):
		r.Detail = fmt.Sprintf("running as root: %s, but as uid %d: %v, so other users lack them (%s)", rootText, nobody, nobodyErr, policy)
	default:
		// The test itself could not run; fall back on the sysctls.
		verdict := "the sysctls allow them for other users"
		if !allowed {
			verdict = "the sysctls deny them to other users"
		}
		r.OK = allowed && forkErr == nil
		r.Detail = fmt.Sprintf("running as root: %s; could not try as uid %d (%v); %s (%s)", rootText, nobody, nobodyErr, verdict, policy)
	}
	return r
}

// forkNewUser makes a child in a new user namespace, as the caller, with
// proc.Fork, and closes it.
func forkNewUser(ctx context.Context) error {
	h, err := proc.Fork(ctx, &proc.Options{NewUser: true})
	if err != nil {
		return err
	}
	return h.Close()
}

// tryAsNobody makes a child, drops it to uid and gid 65534 with no
// supplementary groups, and has it unshare a user namespace and map itself
// to 0 inside, as an unprivileged user would. The caller must be root.
func tryAsNobody(ctx context.Context) error {
	h, err := forkAny(ctx)
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
	var u proc.Batch
	u.Unshare(unix.CLONE_NEWUSER)
	for _, f := range []struct{ name, data string }{
		{"setgroups", "deny"},
		{"uid_map", fmt.Sprintf("0 %d 1\n", nobody)},
		{"gid_map", fmt.Sprintf("0 %d 1\n", nobody)},
	} {
		fd := u.Openat(proc.AtFDCWD(), "/proc/self/"+f.name, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		u.Write(fd, []byte(f.data))
		u.CloseFD(fd)
	}
	_, err = h.Run(ctx, &u)
	return err
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
		return nil, fmt.Errorf("%v; detached: %v", err, derr)
	}
	return h, nil
}
