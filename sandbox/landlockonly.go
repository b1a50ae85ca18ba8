package sandbox

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// LandlockOnlyLimits is what a LandlockOnly sandbox does not provide,
// whatever the Spec says, for lack of namespaces: Build logs it once.
const LandlockOnlyLimits = "no namespaces: the program sees the host's processes, hostname and System V IPC, and processes it starts in the background can outlive the caller"

// buildLandlockOnly makes a sandbox with no namespaces: the file grants
// are Landlock rules on the host's own paths, the network is cut by the
// seccomp filter (no sockets but Unix ones) and Landlock's TCP rules,
// signals and abstract Unix sockets by Landlock's scopes (ABI 6).
func buildLandlockOnly(ctx context.Context, spec *Spec, log *slog.Logger) (_ *Sandbox, err error) {
	abi, lerr := LandlockABI()
	if lerr != nil {
		return nil, fmt.Errorf("sandbox: Landlock-only confinement: %w", lerr)
	}
	ll, cannot, err := landlockOnlyPolicy(spec, abi)
	if err != nil {
		return nil, err
	}
	if len(cannot) > 0 && !spec.BestEffort {
		return nil, fmt.Errorf("%w: Landlock-only: %s", ErrUnenforceable, strings.Join(cannot, "; "))
	}
	for _, c := range cannot {
		log.Warn("sandbox: best effort: dropped", "what", c)
	}
	log.Info("sandbox: Landlock only", "limits", LandlockOnlyLimits)

	pol := spec.Seccomp
	pol.OnlyUnixSockets = pol.OnlyUnixSockets || spec.Net != NetHost
	filter, err := Filter(pol)
	if err != nil {
		return nil, err
	}
	lim, err := makeLimiter(spec, log)
	if err != nil {
		return nil, err
	}
	sb := &Sandbox{spec: spec, lim: lim}
	defer func() {
		if err != nil {
			sb.Close()
		}
	}()
	origin := proc.Detached
	if spec.Direct {
		origin = proc.Direct
	}
	h, err := proc.Fork(ctx, &proc.Options{From: origin})
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	sb.h = h
	if err := sb.setFirst(h, lim); err != nil {
		return nil, err
	}
	var r recorder
	from := r.begin()
	for fd, f := range spec.Files {
		r.b.PutFile(f, fd)
	}
	r.end(from, "granting fds")
	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	from = r.begin()
	r.b.Chdir(dir)
	r.end(from, "changing to the working directory "+dir)
	if !spec.SameSession {
		from = r.begin()
		r.b.Setsid()
		r.end(from, "setsid")
	}
	if lim != nil {
		from = r.begin()
		lim.record(&r.b)
		r.end(from, "resource limits")
	}
	from = r.begin()
	dropped, err := ll.Record(&r.b, abi)
	if err != nil {
		return nil, err
	}
	for _, d := range dropped {
		log.Warn("sandbox: best effort: dropped", "what", d)
	}
	r.end(from, "landlock")
	// The program keeps no capability: not a privileged caller's, and
	// not the ambient ones an unprivileged caller may have been started
	// with (a service's AmbientCapabilities=), which exec would pass on.
	// Emptying the bounding set needs CAP_SETPCAP, which only a caller
	// that could regain capabilities at exec (as root) needs anyway;
	// clearing the ambient set and capset to nothing need no privilege.
	from = r.begin()
	if kernel.HasCap(unix.CAP_SETPCAP) {
		recordBounding(&r.b, &Spec{})
	}
	r.b.Prctl(unix.PR_CAP_AMBIENT, proc.Int(unix.PR_CAP_AMBIENT_CLEAR_ALL), proc.Int(0), proc.Int(0), proc.Int(0))
	r.b.Syscall(unix.SYS_CAPSET, r.b.In(capHeader()), r.b.In(make([]byte, 24)))
	r.end(from, "dropping capabilities")
	from = r.begin()
	r.b.Prctl(unix.PR_SET_NO_NEW_PRIVS, proc.Int(1), proc.Int(0), proc.Int(0), proc.Int(0))
	r.b.SeccompSetModeFilter(0, filter)
	for _, f := range spec.SeccompFilters {
		r.b.SeccompSetModeFilter(0, f)
	}
	r.end(from, "seccomp")
	if _, err := h.Run(ctx, &r.b); err != nil {
		return nil, r.explain(err)
	}
	return sb, nil
}

// landlockOnlyPolicy returns the Landlock policy a LandlockOnly sandbox
// of spec gets on a kernel with Landlock ABI abi, and what of spec it
// cannot enforce (for lack of namespaces or of a newer ABI).
func landlockOnlyPolicy(spec *Spec, abi int) (*LandlockPolicy, []string, error) {
	var cannot []string
	ll := &LandlockPolicy{BestEffort: spec.BestEffort, AnyTCP: spec.Net == NetHost, AnyAbstractUnix: spec.Net == NetHost}
	for i := range spec.Mounts {
		m := &spec.Mounts[i]
		gs, c, err := kindOf(m.Kind).landlockOnly(i, m)
		if err != nil {
			return nil, nil, err
		}
		if c != "" {
			cannot = append(cannot, c)
		}
		ll.Paths = append(ll.Paths, gs...)
	}
	if spec.Net == NetLoopback {
		cannot = append(cannot, "a loopback-only network: needs a network namespace")
	}
	if spec.Net == NetNone && abi < 6 {
		cannot = append(cannot, fmt.Sprintf("cutting off the host's abstract Unix sockets: needs Landlock ABI 6 (Linux 6.12), have %d", abi))
	}
	if abi < 6 {
		cannot = append(cannot, fmt.Sprintf("keeping signals in: needs Landlock ABI 6 (Linux 6.12), have %d", abi))
	}
	if spec.UID != os.Geteuid() || spec.GID != os.Getegid() {
		cannot = append(cannot, fmt.Sprintf("uid %d and gid %d: without a user namespace the program has the caller's (%d, %d)", spec.UID, spec.GID, os.Geteuid(), os.Getegid()))
	}
	if spec.Hostname != "" {
		cannot = append(cannot, "a hostname: needs a UTS namespace")
	}
	if spec.UserNS != nil || spec.UserNS2 != nil || spec.PIDNS != nil {
		cannot = append(cannot, "joining the namespaces of UserNS, UserNS2 or PIDNS: makes a sandbox with namespaces")
	}
	if len(spec.LockFiles) > 0 {
		cannot = append(cannot, "lock files: held by a process of caplin's in the sandbox, which has none without namespaces")
	}
	if spec.AssertNoUserNamespaces && spec.Seccomp.AllowUserNamespaces {
		cannot = append(cannot, "AssertNoUserNamespaces: the filter policy allows user namespaces")
	}
	if len(spec.Caps) > 0 || spec.KeepCaps {
		cannot = append(cannot, "capabilities: needs a user namespace")
	}
	return ll, cannot, nil
}
