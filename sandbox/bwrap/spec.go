package bwrap

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/caplin-dev/caplin/sandbox"
)

// Spec returns the sandbox the command line asks for: its dialect's
// defaults, changed by the options. The spec refers to files the Command
// owns (the fds granted, the sources of --bind-fd): it is good until Close.
// Its Direct is left false, for the caller to decide. The error is an
// *Error naming the option at fault.
func (c *Command) Spec() (*sandbox.Spec, error) {
	o := &c.opts
	spec := &sandbox.Spec{}
	if o.profile != "" {
		if c.dialect == Bubblewrap {
			return nil, named("--profile", usagef("--profile is caplin run's"))
		}
		p, err := c.host.LoadProfile(o.profile)
		if err != nil {
			return nil, named("--profile", err)
		}
		spec = p
	} else {
		spec.UID, spec.GID = c.host.UID, c.host.GID
	}
	c.origins = c.origins[:0]
	for k := range spec.Mounts {
		c.origins = append(c.origins, fmt.Sprintf("profile %s: mount[%d] (%s)", o.profile, k, &spec.Mounts[k]))
	}
	if c.dialect == Bubblewrap && c.host.UID == 0 {
		// bubblewrap keeps root's capabilities (--cap-drop drops them):
		// in the sandbox's user namespace here, whose uid 0 is the
		// caller's.
		spec.Caps = append(spec.Caps, c.host.Caps...)
	}
	if o.system {
		spec.Mounts = append(spec.Mounts, sandbox.SystemMounts()...)
	}
	for k := len(c.origins); k < len(spec.Mounts); k++ {
		c.origins = append(c.origins, fmt.Sprintf("--system (%s)", &spec.Mounts[k]))
	}
	given := len(spec.Mounts) // the command line's mounts start here
	spec.Mounts = append(spec.Mounts, o.mounts...)
	c.origins = append(c.origins, o.written...)
	if o.uid >= 0 {
		spec.UID = o.uid
	}
	if o.gid >= 0 {
		spec.GID = o.gid
	}
	if o.hostname != "" {
		spec.Hostname = o.hostname
	}
	spec.Connect = append(spec.Connect, o.connect...)
	spec.BestEffort = spec.BestEffort || o.bestEffort
	spec.LandlockOnly = spec.LandlockOnly || o.landlockOnly
	c.limits(&spec.Limits)
	spec.Env = c.env(spec.Env)

	// The fds: the caller's standard ones, then the grants.
	spec.Files = c.host.Std()
	maps.Copy(spec.Files, o.fds)

	// Namespaces and the rest.
	var err error
	if c.dialect == Bubblewrap {
		err = c.bubblewrapSharing(spec)
	} else {
		err = c.caplinRunSharing(spec)
	}
	if err != nil {
		return nil, err
	}
	if c.dialect == CaplinRun && spec.Net == sandbox.NetHost {
		// The host's network comes with the host's names for it, ahead
		// of the command line's mounts, which may cover them.
		resolver := sandbox.ResolverMounts(spec.Mounts)
		spec.Mounts = slices.Insert(spec.Mounts, given, resolver...)
		for k := range resolver {
			c.origins = slices.Insert(c.origins, given+k, fmt.Sprintf("--net host (%s)", &resolver[k]))
		}
	}
	spec.AsPID1 = spec.AsPID1 || o.asPID1
	spec.LockFiles = append(spec.LockFiles, o.lockFiles...)
	spec.UserNS, spec.UserNS2, spec.PIDNS = o.userns, o.userns2, o.pidns
	spec.AssertNoUserNamespaces = spec.AssertNoUserNamespaces || o.assertUsernsDisabled
	if o.usernsBlock != nil && c.Info == nil {
		return nil, named("--userns-block-fd", usagef("--userns-block-fd requires --info-fd"))
	}
	if o.usernsBlock != nil && o.userns != nil {
		return nil, named("--userns-block-fd", usagef("--userns-block-fd makes a user namespace, which --userns joins instead"))
	}
	if err := c.caps(spec); err != nil {
		return nil, err
	}
	spec.SeccompFilters = append(spec.SeccompFilters, o.seccomp...)

	// The working directory: as asked, or the caller's own where the
	// grants show it at the same place, else /.
	switch {
	case o.chdir != "":
		spec.Dir = o.chdir
	case spec.Dir == "":
		if wd, err := c.host.Getwd(); err == nil && visible(spec.Mounts, wd) {
			spec.Dir = wd
		}
	}
	if c.dialect == Bubblewrap {
		// bubblewrap tells the program where it is.
		dir := spec.Dir
		if dir == "" {
			dir = "/"
		}
		spec.Env = applyEnv(spec.Env, []envOp{{kind: 's', name: "PWD", value: dir}})
	}
	// How package sandbox names each mount in what it reports
	// (sandbox.LandlockOnlyError), for Explain.
	c.numbered = c.numbered[:0]
	for k := range spec.Mounts {
		c.numbered = append(c.numbered, fmt.Sprintf("mount %d (%s)", k+1, &spec.Mounts[k]))
	}
	return spec, nil
}

// limits sets the limits given on the command line over l (a profile's).
func (c *Command) limits(l *sandbox.Limits) {
	given := c.opts.limits
	if given.Pids != 0 {
		l.Pids = given.Pids
	}
	if given.NoFile != 0 {
		l.NoFile = given.NoFile
	}
	if given.Memory != 0 {
		l.Memory = given.Memory
	}
	if given.CPU != 0 {
		l.CPU = given.CPU
	}
}

// env returns the program's environment: the environment options applied
// to the caller's (Bubblewrap, or --keep-env), to the profile's
// (profileEnv), or to an empty one; --system adds a PATH if none is set.
func (c *Command) env(profileEnv []string) []string {
	var base []string
	switch {
	case c.dialect == Bubblewrap || c.opts.keepEnv:
		base = c.host.Environ()
	case c.opts.profile != "":
		base = profileEnv
	}
	env := applyEnv(base, c.opts.env)
	if c.opts.system && !hasVar(env, "PATH") {
		env = append(env, "PATH=/usr/local/bin:/usr/bin:/bin")
	}
	return env
}

// bubblewrapSharing sets bubblewrap's defaults, which share with the
// caller whatever is not unshared.
func (c *Command) bubblewrapSharing(spec *sandbox.Spec) error {
	o := &c.opts
	spec.WritableRoot = true
	spec.SharePID = !o.unshare["pid"]
	spec.ShareIPC = !o.unshare["ipc"]
	spec.ShareUTS = !o.unshare["uts"]
	spec.ShareCgroup = !o.unshare["cgroup"]
	spec.Net = sandbox.NetHost
	if o.unshare["net"] {
		spec.Net = sandbox.NetLoopback // bubblewrap brings lo up
	}
	spec.SameSession = !o.newSession
	// Nested sandboxes, which bubblewrap's lack of a filter allows: new
	// user namespaces, and mounts in them.
	spec.Seccomp.AllowUserNamespaces = !o.disableUserns
	spec.Seccomp.AllowMounts = !o.disableUserns
	if o.hostname != "" && spec.ShareUTS {
		return named("--hostname", usagef("Specifying --hostname requires --unshare-uts"))
	}
	if !spec.ShareUTS && spec.Hostname == "" {
		// A new UTS namespace keeps the caller's hostname under
		// bubblewrap (caplin run's is "caplin").
		host, err := c.host.Hostname()
		if err != nil {
			return named("--unshare-uts", fmt.Errorf("the caller's hostname: %w", err))
		}
		spec.Hostname = host
	}
	// bubblewrap's checks of the user namespace options, in its order and
	// words. (caplin always makes a user namespace, or joins --userns's;
	// --unshare-user says whether bubblewrap would.)
	switch {
	case o.usernsBlock != nil && !o.unshare["user"]:
		return named("--userns-block-fd", usagef("--userns-block-fd requires --unshare-user"))
	case o.userns != nil && o.unshare["user-try"]:
		return named("--userns", usagef("--userns not compatible --unshare-user-try"))
	case o.userns != nil && o.unshare["user"]:
		return named("--userns", usagef("--userns not compatible --unshare-user"))
	case o.disableUserns && !o.unshare["user"]:
		return named("--disable-userns", usagef("--disable-userns requires --unshare-user"))
	case o.disableUserns && o.usernsBlock != nil:
		return named("--disable-userns", usagef("--disable-userns is not compatible with  --userns-block-fd"))
	case o.asPID1 && len(o.lockFiles) > 0:
		return named("--lock-file", usagef("Specifying --as-pid-1 and --lock-file is not permitted"))
	}
	return nil
}

// caplinRunSharing sets caplin run's network, which is shared only when
// --net host or --share-net asks, and its user namespaces.
func (c *Command) caplinRunSharing(spec *sandbox.Spec) error {
	o := &c.opts
	switch {
	case o.net != "" && o.shareNet && o.net != "host":
		return named("--share-net", usagef("--share-net and --net %s disagree", o.net))
	case o.shareNet || o.net == "host":
		spec.Net = sandbox.NetHost
	case o.net == "loopback":
		spec.Net = sandbox.NetLoopback
	case o.net == "none":
		spec.Net = sandbox.NetNone
	}
	if o.allowUserns {
		spec.Seccomp.AllowUserNamespaces = true
	}
	if o.keepSession {
		spec.SameSession = true
	}
	// Root is not root inside: the sandbox's user is an unprivileged one
	// on the host, unless --as-host-root asks for bubblewrap's way. A user
	// namespace the caller gives (--userns) or maps (--userns-block-fd) is
	// the caller's to map, and so is who the sandbox is on the host.
	if c.host.UID == 0 && !o.asHostRoot && spec.HostIDs == (sandbox.HostIDs{}) && o.userns == nil && o.usernsBlock == nil {
		spec.HostIDs = c.host.Unprivileged()
	}
	return nil
}

// visible reports whether the host directory dir appears at the same path
// in a sandbox with mounts ms: inside a bind of a source at its own path,
// not covered by a later mount.
func visible(ms []sandbox.Mount, dir string) bool {
	in := func(p, root string) bool {
		return p == root || strings.HasPrefix(p, strings.TrimSuffix(root, "/")+"/")
	}
	ok := false
	for _, m := range ms {
		dest := filepath.Clean(m.Dest)
		switch {
		case (m.Kind == sandbox.ROBind || m.Kind == sandbox.Bind || m.Kind == sandbox.DevBind) && in(dir, dest):
			ok = filepath.Clean(m.Source) == dest
		case m.Kind != sandbox.RemountRO && m.Kind != sandbox.Chmod && in(dir, dest):
			ok = false
		}
	}
	return ok
}

// caps applies --cap-add and --cap-drop, in order, to the spec's
// capabilities.
func (c *Command) caps(spec *sandbox.Spec) error {
	keep := map[int]bool{}
	for _, n := range spec.Caps {
		keep[n] = true
	}
	apply := func(option string, names []string, on bool) error {
		for _, name := range names {
			if strings.EqualFold(name, "ALL") {
				for _, i := range sandbox.AllCaps() {
					keep[i] = on
				}
				continue
			}
			n, err := sandbox.ParseCap(name)
			if err != nil {
				return named(option, usagef("%v", err))
			}
			keep[n] = on
		}
		return nil
	}
	if err := apply("--cap-add", c.opts.capAdd, true); err != nil {
		return err
	}
	if err := apply("--cap-drop", c.opts.capDrop, false); err != nil {
		return err
	}
	// bubblewrap sets the inheritable set too when told what to keep.
	spec.InheritCaps = spec.InheritCaps || c.dialect == Bubblewrap && len(c.opts.capAdd)+len(c.opts.capDrop) > 0
	spec.Caps = spec.Caps[:0]
	for n, on := range keep {
		if on {
			spec.Caps = append(spec.Caps, n)
		}
	}
	return nil
}

func hasVar(env []string, name string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, name+"=") {
			return true
		}
	}
	return false
}

// applyEnv applies ops, in order, to a copy of base.
func applyEnv(base []string, ops []envOp) []string {
	env := append([]string(nil), base...)
	without := func(name string) []string {
		out := env[:0]
		for _, kv := range env {
			if k, _, _ := strings.Cut(kv, "="); k != name {
				out = append(out, kv)
			}
		}
		return out
	}
	for _, op := range ops {
		switch op.kind {
		case 'c':
			env = env[:0]
		case 'u':
			env = without(op.name)
		case 's':
			env = append(without(op.name), op.name+"="+op.value)
		}
	}
	return env
}
