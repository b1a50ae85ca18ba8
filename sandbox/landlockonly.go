package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// ErrUnenforceable is returned (wrapped, with what and why) when a Spec
// asks for something the running kernel, or the chosen mode, cannot
// enforce, and BestEffort is not set.
var ErrUnenforceable = errors.New("sandbox: cannot be enforced here")

// LandlockOnlyLimits is what a LandlockOnly sandbox does not provide,
// whatever the Spec says, for lack of namespaces: Build logs it once.
const LandlockOnlyLimits = "no namespaces: the program sees the host's processes, hostname and System V IPC, and processes it starts in the background can outlive the caller"

// buildLandlockOnly makes a sandbox with no namespaces: the file grants
// are Landlock rules on the host's own paths, the network is cut by the
// seccomp filter (no sockets but Unix ones) and Landlock's TCP rules,
// signals and abstract Unix sockets by Landlock's scopes (ABI 6).
func buildLandlockOnly(ctx context.Context, spec *Spec) (_ *Sandbox, err error) {
	abi, lerr := LandlockABI()
	if lerr != nil {
		return nil, fmt.Errorf("%w: Landlock-only confinement without Landlock: %v", ErrUnenforceable, lerr)
	}
	ll, cannot, err := landlockOnlyPolicy(spec, abi)
	if err != nil {
		return nil, err
	}
	if len(cannot) > 0 && !spec.BestEffort {
		return nil, fmt.Errorf("%w: Landlock-only: %s", ErrUnenforceable, strings.Join(cannot, "; "))
	}
	for _, c := range cannot {
		slog.Warn("sandbox: best effort: dropped", "what", c)
	}
	slog.Info("sandbox: Landlock only", "limits", LandlockOnlyLimits)

	pol := spec.Seccomp
	pol.OnlyUnixSockets = pol.OnlyUnixSockets || spec.Net != NetHost
	filter, err := Filter(pol)
	if err != nil {
		return nil, err
	}
	lim, err := makeLimiter(spec)
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
	sb.first, sb.h = h, h
	if lim != nil {
		if err := lim.attach(h.Pid()); err != nil {
			return nil, err
		}
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
		slog.Warn("sandbox: best effort: dropped", "what", d)
	}
	r.end(from, "landlock")
	// The program keeps no capability: not a privileged caller's, and
	// not the ambient ones an unprivileged caller may have been started
	// with (a service's AmbientCapabilities=), which exec would pass on.
	// Emptying the bounding set needs CAP_SETPCAP, which only a caller
	// that could regain capabilities at exec (as root) needs anyway;
	// clearing the ambient set and capset to nothing need no privilege.
	from = r.begin()
	if hasCapSetpcap() {
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
		dest := filepath.Clean(m.Dest)
		g := PathGrant{Path: dest}
		switch m.Kind {
		case ROBind, Bind, DevBind:
			if m.FD != nil {
				cannot = append(cannot, describe(i, m)+": a bind of a descriptor needs a mount namespace")
				continue
			}
			if filepath.Clean(m.Source) != dest {
				cannot = append(cannot, describe(i, m)+": a bind elsewhere than its source needs a mount namespace")
				continue
			}
			if _, err := os.Stat(m.Source); err != nil {
				if m.Try && errors.Is(err, os.ErrNotExist) {
					continue
				}
				return nil, nil, fmt.Errorf("sandbox: %s: %w", describe(i, m), err)
			}
			g.Access = AccessRead
			if m.Kind != ROBind {
				g.Access = AccessWrite
			}
		case Dev:
			// The host's device nodes that Dev would bind, one by one.
			for _, d := range devNodes {
				p := filepath.Join(dest, d)
				if _, err := os.Stat(p); err == nil {
					ll.Paths = append(ll.Paths, PathGrant{Path: p, Access: AccessRead | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV, Kind: PathFile})
				}
			}
			continue
		case RemountRO:
			// Landlock rules only add up: a read-only part of a writable
			// grant cannot be expressed.
			cannot = append(cannot, describe(i, m)+": needs a mount namespace")
			continue
		default:
			cannot = append(cannot, describe(i, m)+": needs a mount namespace")
			continue
		}
		ll.Paths = append(ll.Paths, g)
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
	if len(spec.Caps) > 0 || spec.KeepCaps {
		cannot = append(cannot, "capabilities: needs a user namespace")
	}
	return ll, cannot, nil
}

// hasCapSetpcap reports whether the caller may drop capabilities from the
// bounding set (it has CAP_SETPCAP).
func hasCapSetpcap() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[0].Effective&(1<<unix.CAP_SETPCAP) != 0
}
