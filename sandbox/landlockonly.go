package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/netgrant"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// LandlockOnlyLimits is what a LandlockOnly sandbox does not provide,
// whatever the Spec says, for lack of namespaces: Build logs it once.
const LandlockOnlyLimits = "no namespaces: the program sees the host's processes, hostname and System V IPC, processes it starts in the background can outlive the caller, and Unix datagram sockets are refused (they could send to the host's)"

// buildLandlockOnly makes a sandbox with no namespaces: the file grants
// are Landlock rules on the host's own paths, the network is cut by the
// seccomp filter (no sockets but Unix ones) and Landlock's TCP rules,
// signals and abstract Unix sockets by Landlock's scopes (ABI 6), and
// the host's Unix sockets by a netgrant.Broker that makes every connect
// itself, to the sockets the grants cover only (Landlock's file rules do
// not reach connect).
func buildLandlockOnly(ctx context.Context, spec *Spec, o options) (_ *Sandbox, err error) {
	log := o.log
	abi, lerr := LandlockABI()
	if lerr != nil {
		return nil, fmt.Errorf("sandbox: Landlock-only confinement: %w", lerr)
	}
	plan, err := landlockOnlyPolicy(spec, abi)
	if err != nil {
		return nil, err
	}
	// The host's Unix sockets: every connect trapped, or, where that
	// cannot be (a container's seccomp profile refusing pidfd_getfd),
	// no socket(2) at all without the host's network.
	trapErr := netgrant.HostSupported()
	switch {
	case trapErr != nil && spec.Net == NetHost:
		plan.cannot = append(plan.cannot, fmt.Sprintf("keeping the host's Unix sockets out (connect by name): %s", strings.TrimPrefix(trapErr.Error(), "netgrant: ")))
	case trapErr != nil:
		plan.notes = append([]string{fmt.Sprintf("no sockets but socketpair, since trapping connects to the host's Unix sockets cannot be done: %s", strings.TrimPrefix(trapErr.Error(), "netgrant: "))}, plan.notes...)
	case spec.Net != NetHost:
		plan.notes = append([]string{"abstract Unix sockets are refused, its own too"}, plan.notes...)
	}
	if len(plan.cannot) > 0 && !spec.BestEffort {
		return nil, &LandlockOnlyError{Cannot: plan.cannot, newerLandlock: plan.newerLandlock}
	}
	for _, c := range plan.cannot {
		log.Warn("sandbox: best effort: dropped", "what", c)
	}
	if len(plan.notes) > 0 {
		log.Info("sandbox: Landlock only", "limits", LandlockOnlyLimits, "differences", strings.Join(plan.notes, "; "))
	} else {
		log.Info("sandbox: Landlock only", "limits", LandlockOnlyLimits)
	}

	pol := spec.Seccomp
	// With Connect, the Broker's filter (netgrant.HostRulesFilter) says
	// which sockets may be made.
	pol.OnlyUnixSockets = pol.OnlyUnixSockets || spec.Net != NetHost && len(spec.Connect) == 0
	pol.NoSockets = pol.NoSockets || trapErr != nil && spec.Net != NetHost
	// Unix datagrams can be sent to any socket the program names, where
	// no trap sees them: the host's, without a mount namespace.
	pol.NoUnixDatagrams = true
	filter, err := Filter(pol)
	if err != nil {
		return nil, err
	}
	uid, _ := spec.hostUser()
	lim, err := makeLimiter(spec, log, fmt.Sprintf("every process of uid %d on the host (no user namespace of the sandbox's own)", uid))
	if err != nil {
		return nil, err
	}
	sb := &Sandbox{spec: spec, lim: lim, differences: plan.notes}
	defer func() {
		if err != nil {
			sb.Close()
		}
	}()
	if err := plan.makeStandIns(sb, spec); err != nil {
		return nil, err
	}
	ll := plan.ll
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
		if spec.ControllingTerminal {
			r.b.Syscall(unix.SYS_IOCTL, proc.Int(0), proc.Int(unix.TIOCSCTTY), proc.Int(0))
		}
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
	if spec.HostIDs != (HostIDs{}) {
		// No user namespace maps the IDs: the process takes the host
		// user's own (which needs the caller's CAP_SETUID and
		// CAP_SETGID), leaving the caller's supplementary groups.
		uid, gid := spec.hostUser()
		r.b.Setgroups(nil)
		r.b.Setresgid(gid, gid, gid)
		r.b.Setresuid(uid, uid, uid)
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
	var listener proc.Val
	if trapErr == nil {
		from = r.begin()
		trap := netgrant.HostFilter()
		if len(spec.Connect) > 0 {
			trap = netgrant.HostRulesFilter()
		}
		l := r.b.SeccompSetModeFilter(netgrant.FilterFlags(), trap)
		// Sent with the batch's reply; the fd is close-on-exec.
		listener = r.b.TakeFile(l)
		r.end(from, "trapping connect (seccomp user notification)")
	}
	res, err := h.Run(ctx, &r.b)
	if err != nil {
		return nil, r.explain(err)
	}
	if trapErr == nil {
		paths := make([]string, 0, len(ll.Paths))
		for _, g := range ll.Paths {
			paths = append(paths, g.Path)
		}
		f := res.File(listener)
		if f == nil {
			return nil, errors.New("sandbox: the program's process sent no seccomp listener")
		}
		b, err := netgrant.Serve(ctx, f, netgrant.Policy{
			Host:   &netgrant.Host{Paths: paths, Refuse: o.refuse, Abstract: spec.Net == NetHost, Network: spec.Net == NetHost},
			Rules:  spec.Connect,
			Lookup: o.lookup,
			Events: o.events,
			Logger: log,
		})
		if err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
		sb.broker = b
	}
	return sb, nil
}

// landlockOnlyPlan is how a LandlockOnly sandbox honours a spec: its
// Landlock policy, what it cannot honour, what differs, and the stand-ins
// it must make.
type landlockOnlyPlan struct {
	ll     *LandlockPolicy
	cannot []string
	// newerLandlock counts the items of cannot that only a newer
	// Landlock ABI would enforce (LandlockOnlyError.OnlyNewerLandlock).
	newerLandlock int
	notes         []string
	// standIns lists, for each tmpfs with a stand-in, the index of its
	// mount and of its grant in ll.Paths, whose Path is a placeholder
	// until the stand-in is made.
	standIns []planStandIn
	mounts   []hostMount // each mount's, with skip set where dropped
}

// planStandIn is a stand-in the plan needs.
type planStandIn struct{ mount, grant int }

// landlockOnlyPolicy returns how a LandlockOnly sandbox of spec is made
// on a kernel with Landlock ABI abi, and what of spec it cannot enforce
// (for lack of namespaces or of a newer ABI).
//
// Landlock rules only add up, where mounts cover each other: a grant
// cannot be taken back from part of its tree. So a mount that a later one
// hides (at the same place or inside it) gets no rules, as the program
// would not see it; and a mount inside the tree of an earlier grant is
// refused when that grant would show more than it: the host's files where
// a namespaced sandbox shows a tmpfs or a minimal /dev, or more access
// than the later mount gives.
func landlockOnlyPolicy(spec *Spec, abi int) (*landlockOnlyPlan, error) {
	p := &landlockOnlyPlan{
		ll:     &LandlockPolicy{BestEffort: spec.BestEffort, AnyTCP: spec.Net == NetHost, AnyAbstractUnix: spec.Net == NetHost},
		mounts: make([]hostMount, len(spec.Mounts)),
	}
	dests := make([]string, len(spec.Mounts))
	for i := range spec.Mounts {
		m := &spec.Mounts[i]
		dests[i] = filepath.Clean(m.Dest)
		hm, err := kindOf(m.Kind).landlockOnly(i, m)
		if err != nil {
			return nil, err
		}
		if hm.cannot != "" {
			p.cannot = append(p.cannot, hm.cannot)
			hm = hostMount{skip: true} // with BestEffort: left out
		}
		p.mounts[i] = hm
	}
	hidden := make([]bool, len(spec.Mounts))
	for i := range spec.Mounts {
		for j := i + 1; j < len(spec.Mounts) && !hidden[i]; j++ {
			hidden[i] = !p.mounts[j].skip && within(dests[i], dests[j])
		}
	}
	for i := range spec.Mounts {
		hm := &p.mounts[i]
		if hm.skip || hidden[i] {
			continue
		}
		for _, g := range hm.grants {
			for j := i + 1; j < len(spec.Mounts); j++ {
				later := &p.mounts[j]
				if later.skip || hidden[j] || !within(dests[j], filepath.Clean(g.Path)) {
					continue
				}
				if later.hostAccess == 0 {
					p.cannot = append(p.cannot, fmt.Sprintf("%s: %s grants the host's %s, which only a mount namespace can hide", describe(j, &spec.Mounts[j]), describe(i, &spec.Mounts[i]), dests[j]))
				} else if g.Access&^later.hostAccess != 0 {
					p.cannot = append(p.cannot, fmt.Sprintf("%s: %s grants more there, which only a mount namespace can take back", describe(j, &spec.Mounts[j]), describe(i, &spec.Mounts[i])))
				}
			}
			p.ll.Paths = append(p.ll.Paths, g)
		}
		if hm.private {
			p.standIns = append(p.standIns, planStandIn{mount: i, grant: len(p.ll.Paths)})
			p.ll.Paths = append(p.ll.Paths, PathGrant{Path: "a private directory for " + dests[i], Access: AccessWrite, Kind: PathDir})
		}
		if hm.note != "" && !slices.Contains(p.notes, hm.note) {
			p.notes = append(p.notes, hm.note)
		}
	}
	if spec.Net == NetLoopback {
		p.cannot = append(p.cannot, "a loopback-only network: needs a network namespace")
	}
	if spec.Net == NetNone && abi < 6 {
		p.cannot = append(p.cannot, fmt.Sprintf("cutting off the host's abstract Unix sockets: needs Landlock ABI 6 (Linux 6.12), have %d", abi))
		p.newerLandlock++
	}
	if abi < 6 {
		p.cannot = append(p.cannot, fmt.Sprintf("keeping signals in: needs Landlock ABI 6 (Linux 6.12), have %d", abi))
		p.newerLandlock++
	}
	if spec.HostIDs == (HostIDs{}) && (spec.UID != os.Geteuid() || spec.GID != os.Getegid()) {
		p.cannot = append(p.cannot, fmt.Sprintf("uid %d and gid %d: without a user namespace the program has the caller's (%d, %d)", spec.UID, spec.GID, os.Geteuid(), os.Getegid()))
	}
	if spec.Hostname != "" {
		p.cannot = append(p.cannot, "a hostname: needs a UTS namespace")
	}
	if spec.AsPID1 && !spec.SharePID {
		p.cannot = append(p.cannot, "the program as pid 1: needs a pid namespace")
	}
	if spec.UserNS != nil || spec.UserNS2 != nil || spec.PIDNS != nil {
		p.cannot = append(p.cannot, "joining the namespaces of UserNS, UserNS2 or PIDNS: makes a sandbox with namespaces")
	}
	if len(spec.LockFiles) > 0 {
		p.cannot = append(p.cannot, "lock files: held by a process of caplin's in the sandbox, which has none without namespaces")
	}
	if spec.AssertNoUserNamespaces && spec.Seccomp.AllowUserNamespaces {
		p.cannot = append(p.cannot, "AssertNoUserNamespaces: the filter policy allows user namespaces")
	}
	if len(spec.Caps) > 0 || spec.KeepCaps {
		p.cannot = append(p.cannot, "capabilities: needs a user namespace")
	}
	return p, nil
}

// within reports whether the clean path p is root or inside it.
func within(p, root string) bool {
	return root == "/" || strings.HasPrefix(p, root) && (len(p) == len(root) || p[len(root)] == '/')
}

// makeStandIns makes the plan's stand-ins for sb, puts their paths in
// its policy, and points spec's TMPDIR and working directory into them
// where they were in the tmpfs a stand-in replaces.
func (p *landlockOnlyPlan) makeStandIns(sb *Sandbox, spec *Spec) error {
	// The program runs as the caller's user, or the host IDs' user.
	uid, gid := os.Geteuid(), os.Getegid()
	if spec.HostIDs != (HostIDs{}) {
		uid, gid = spec.hostUser()
	}
	for _, s := range p.standIns {
		si, err := newStandIn(uid, gid)
		if err != nil {
			return err
		}
		sb.standIns = append(sb.standIns, si)
		p.ll.Paths[s.grant].Path = si.path
	}
	tmpdir, set := "/tmp", false
	for _, kv := range spec.Env {
		if v, ok := strings.CutPrefix(kv, "TMPDIR="); ok {
			tmpdir, set = v, true
		}
	}
	if v, ok := p.inStandIn(spec, sb, tmpdir); ok {
		if set {
			spec.Env = slices.DeleteFunc(spec.Env, func(kv string) bool { return strings.HasPrefix(kv, "TMPDIR=") })
		}
		spec.Env = append(spec.Env, "TMPDIR="+v)
	}
	if v, ok := p.inStandIn(spec, sb, spec.Dir); ok {
		spec.Dir = v
	}
	return nil
}

// inStandIn returns where the path path of the program's (absolute) is
// once the stand-ins are made: in a stand-in, if the last mount it is in
// is a tmpfs that one replaces.
func (p *landlockOnlyPlan) inStandIn(spec *Spec, sb *Sandbox, path string) (string, bool) {
	if !filepath.IsAbs(path) {
		return "", false
	}
	path = filepath.Clean(path)
	last := -1
	for i := range spec.Mounts {
		if !p.mounts[i].skip && within(path, filepath.Clean(spec.Mounts[i].Dest)) {
			last = i
		}
	}
	for k, s := range p.standIns {
		if s.mount == last {
			rel, _ := filepath.Rel(filepath.Clean(spec.Mounts[last].Dest), path)
			return filepath.Join(sb.standIns[k].path, rel), true
		}
	}
	return "", false
}

// landlockOnlyUser returns the uid and gid a LandlockOnly sandbox of spec
// runs as: the host IDs HostIDs gives, or else Spec.UID and Spec.GID,
// which cannot be other than the caller's.
func landlockOnlyUser(spec *Spec) (uid, gid int) {
	if spec.HostIDs != (HostIDs{}) {
		return spec.hostUser()
	}
	return spec.UID, spec.GID
}
