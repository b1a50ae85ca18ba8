package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/caplin-dev/caplin/internal/fdctl"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// A Template is the costly part of a sandbox, made once from a Spec: its
// user and network namespaces and its assembled file system. NewSandbox
// makes sandboxes from it, each in new mount (a copy of the template's), pid and
// IPC namespaces of its own, with fresh tmpfs, proc and
// mqueue mounts, a fresh /dev/shm and fresh data binds, and its own fds,
// session, limits, Landlock domain, capabilities and seccomp filter. A
// launcher that starts many sandboxes from one profile saves making the
// namespaces that cost most (a network namespace takes about a
// millisecond of kernel time) and rebuilding the root each time.
//
// Sandboxes built from one template share, and only they:
//
//   - the user namespace: the same IDs, which no sandbox holds any
//     capability over;
//   - the UTS and cgroup namespaces, which no sandbox can change;
//   - the root directory (the tmpfs the mounts are attached in), which
//     is read-only;
//   - the network namespace: with NetNone there is nothing in it to share
//     but the abstract Unix socket namespace, which Landlock (ABI 6,
//     Linux 6.12) scopes to each sandbox; with NetLoopback, one loopback
//     interface, so they can reach each other's listeners on 127.0.0.1;
//   - what the spec's writable binds grant, as any sandboxes given the
//     same binds do;
//   - a mount renewed for each sandbox (tmpfs, proc, mqueue, a bind of
//     data, /dev's shm and pts) that another mount of the spec is inside,
//     which cannot be renewed without hiding that mount (NewTemplate
//     logs it).
//
// The template's process is the init of a pid namespace that holds every
// sandbox built from it (each in a pid namespace of its own inside): it
// reaps them, and closing the template kills them. A Template is safe for
// concurrent use.
type Template struct {
	spec   *Spec
	log    *slog.Logger
	h      *proc.Handle
	ll     *LandlockPolicy
	filter []unix.SockFilter
	fresh  []int // indexes of the mounts each sandbox renews
	ns     map[string]uint64

	mu     sync.Mutex
	spare  chan spareResult // the sandbox being made ahead, if any
	closed bool
}

// NewTemplate makes the template of spec. Spec.Files, Env and Limits are
// the defaults of the sandboxes built from it. What would let one of its
// sandboxes change what they all share is refused: WritableRoot (the root
// is one tmpfs for all of them; bind a writable directory or mount a Tmpfs,
// which each gets afresh, instead), KeepCaps, and, in Caps,
// CAP_SYS_ADMIN (the hostname of the shared UTS namespace, among others)
// and, with a network of the template's own, CAP_NET_ADMIN and
// CAP_NET_RAW (configuring, or listening to, the shared network). So is
// SharePID, which would let them see, and on older kernels signal, each
// other's processes, and LandlockOnly, which has no namespaces to keep.
// So are a TmpOverlay (its writes would be shared, and it cannot be made
// afresh without the caller's files) and LockFiles (held for one
// sandbox's life); AssertNoUserNamespaces holds by the filter policy,
// and is refused when that allows user namespaces, and UserNS, UserNS2
// and PIDNS (a template's namespaces are its own). An Overlay and a
// ROOverlay are shared, as binds are.
//
// opts may give a logger (WithLogger), which the template keeps for its
// sandboxes too.
func NewTemplate(ctx context.Context, spec *Spec, opts ...Option) (_ *Template, err error) {
	spec = spec.Clone() // ours from here on: see Spec on ownership
	o := optionsOf(opts)
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	if spec.LandlockOnly {
		return nil, errors.New("sandbox: a LandlockOnly sandbox has no namespaces to make a template of")
	}
	if spec.UserNS != nil || spec.UserNS2 != nil || spec.PIDNS != nil {
		return nil, errors.New("sandbox: template: its sandboxes' namespaces are the template's own, not UserNS, UserNS2 or PIDNS")
	}
	if len(spec.LockFiles) > 0 {
		return nil, errors.New("sandbox: template: lock files are held by one sandbox, not a template's")
	}
	if len(spec.Connect) > 0 {
		return nil, errors.New("sandbox: template: Connect is for sandboxes made by Build; templates do not take it yet")
	}
	if spec.AssertNoUserNamespaces && spec.Seccomp.AllowUserNamespaces {
		return nil, errors.New("sandbox: template: AssertNoUserNamespaces with a filter policy that allows user namespaces")
	}
	if err := checkShared(spec); err != nil {
		return nil, err
	}
	if spec.Limits.Pids > 0 {
		// Said now, not at each sandbox: where no cgroup takes the
		// limit, its rlimit would count all the sandboxes together.
		uid, _ := spec.hostUser()
		lim, _, err := newLimiter(Limits{Pids: spec.Limits.Pids}, uid, spec.BestEffort, templateShared)
		if err != nil {
			return nil, fmt.Errorf("sandbox: template: %w", err)
		}
		lim.close()
	}
	filter, ll, err := policies(spec, o.log)
	if err != nil {
		return nil, err
	}
	t := &Template{spec: spec, log: o.log, ll: ll, filter: filter}
	for i := range spec.Mounts {
		m := &spec.Mounts[i]
		if kindOf(m.Kind).template == tmplRefused {
			return nil, fmt.Errorf("sandbox: template: %s: %s", describe(i, m), kindOf(m.Kind).refused)
		}
		if kindOf(m.Kind).template != tmplRenewed {
			continue
		}
		if covered(spec.Mounts, i, renewedAt(m)) {
			o.log.Warn("sandbox: template: shared by its sandboxes, since a later mount is inside it", "mount", describe(i, m))
			continue
		}
		t.fresh = append(t.fresh, i)
	}
	uidMap, gidMap := spec.idMaps(os.Geteuid(), os.Getegid())
	h, err := proc.Fork(ctx, &proc.Options{
		From:    forkOrigin(spec),
		NewUser: true, NewMount: true, NewPID: true,
		NewIPC: !spec.ShareIPC, NewUTS: !spec.ShareUTS, NewCgroup: !spec.ShareCgroup,
		NewNet: spec.Net != NetHost,
		UIDMap: uidMap, GIDMap: gidMap, AllowSetgroups: spec.HostIDs != (HostIDs{}),
	})
	if err != nil {
		return nil, fmt.Errorf("sandbox: template: %w", err)
	}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	if err := becomeHostUser(ctx, h, spec); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	r, err := recordRoot(spec, true, nil) // SharePID is refused: no zygote proc
	if err != nil {
		return nil, err
	}
	// The bounding set is dropped here, once, and every sandbox's process
	// inherits it: the template's process keeps the capabilities it has
	// (making namespaces and mounts needs them), and never execs.
	from := r.begin()
	recordBounding(&r.b, spec)
	r.end(from, "dropping capabilities")
	res, err := h.Run(ctx, &r.b) // no files to close: the batch takes none
	if err != nil {
		return nil, fmt.Errorf("template: %w", r.explain(err))
	}
	if err := r.verify(res); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	t.ns = map[string]uint64{}
	for i, name := range nsNames {
		t.ns[name] = r.ns[i].Ino
	}
	t.h = h
	t.refill()
	return t, nil
}

// templateShared is whose processes RLIMIT_NPROC counts for a template's
// sandbox (newLimiter).
const templateShared = "the processes of all the template's sandboxes together (they share its user namespace)"

// checkShared refuses a template spec that would let one of its sandboxes
// change what all of them share: the root tmpfs, and the UTS, network and
// cgroup namespaces, which belong to the shared user namespace, so that
// capabilities in it are power over them.
func checkShared(spec *Spec) error {
	if spec.SharePID {
		return errors.New("sandbox: template: Spec.SharePID: the template's sandboxes would share one pid namespace, and see each other's processes (their command lines and environments in /proc) and, before Landlock ABI 6, signal them; each gets a pid namespace of its own without it")
	}
	if spec.WritableRoot {
		return errors.New("sandbox: template: Spec.WritableRoot: the root is one tmpfs for all the template's sandboxes, so what one wrote there the others would see; bind a writable directory, or mount a Tmpfs (each sandbox gets its own), instead")
	}
	if spec.KeepCaps {
		return errors.New("sandbox: template: Spec.KeepCaps: the template's sandboxes share its user namespace, and with it its UTS, network and cgroup namespaces, which these capabilities would let one change for all; list the ones needed in Caps")
	}
	for _, c := range spec.Caps {
		switch {
		case c == unix.CAP_SYS_ADMIN:
			return errors.New("sandbox: template: Spec.Caps: CAP_SYS_ADMIN would let one of the template's sandboxes change what all of them share: the hostname of the UTS namespace, among others")
		case (c == unix.CAP_NET_ADMIN || c == unix.CAP_NET_RAW) && spec.Net != NetHost:
			name := "CAP_NET_ADMIN"
			if c == unix.CAP_NET_RAW {
				name = "CAP_NET_RAW"
			}
			return fmt.Errorf("sandbox: template: Spec.Caps: %s would let one of the template's sandboxes configure, or listen to, the network namespace all of them share", name)
		}
	}
	return nil
}

// covered reports whether a mount after ms[i] is at or inside one of
// the places where ms[i] is mounted afresh for each sandbox (at), so that
// doing so would hide it.
func covered(ms []Mount, i int, at []string) bool {
	for _, dest := range at {
		dest = filepath.Clean(dest)
		for _, m := range ms[i+1:] {
			d := filepath.Clean(m.Dest)
			if d == dest || strings.HasPrefix(d, strings.TrimSuffix(dest, "/")+"/") {
				return true
			}
		}
	}
	return false
}

// renewedAt returns where a renewed mount is mounted afresh for each
// sandbox: its destination, or, for a Dev, its shm and pts only (the
// device nodes are the template's binds), so that a mount elsewhere
// under /dev (a bind of /dev/dri, say) leaves them renewed.
func renewedAt(m *Mount) []string {
	if m.Kind == Dev {
		return []string{filepath.Join(m.Dest, "shm"), filepath.Join(m.Dest, "pts")}
	}
	return []string{m.Dest}
}

// NewSandbox makes a sandbox from the template, ready for Exec. (Build
// makes one from a Spec alone.) files are the
// program's fds and env its environment; nil means the template spec's.
//
// The template keeps one sandbox made ahead (its namespaces and mounts),
// so that NewSandbox only hands it over; it makes the next one in the
// background once the program of the one handed over is started (by Exec
// or Handle; or when it is closed without), so that the two do not
// contend for the CPUs: its init shares the template process's memory
// (proc.Handle.ForkShared), so making it copies nothing. Under caplin's init (without AsPID1) the program's process does not exist yet: Exec
// spawns it from the init with its confinement and files as the setup of
// one round trip, sharing the init's memory until it execs (proc.Spawn),
// so no fork copies anything; NewSandbox keeps duplicates of files until
// then.
// Sandbox.Handle makes the process earlier, by a fork, for who needs it.
func (t *Template) NewSandbox(ctx context.Context, files map[int]*os.File, env []string) (_ *Sandbox, err error) {
	if files == nil {
		files = t.spec.Files
	}
	for fd, f := range files {
		if fd < 0 || f == nil {
			return nil, fmt.Errorf("sandbox: fd %d: want a number of 0 or more and a file", fd)
		}
	}
	sb, err := t.take(ctx)
	if err != nil {
		return nil, err
	}
	if env != nil {
		s := *t.spec // the template's copy, which nothing changes
		s.Env = slices.Clone(env)
		sb.spec = &s
	}
	if sb.pending {
		// Kept until Exec spawns the program: duplicates, so that the
		// caller may close its files after NewSandbox as before.
		sb.files = make(map[int]*os.File, len(files))
		for fd, f := range files {
			nfd, err := fdctl.DupFile(f) // not f.Fd(), which would make the caller's file blocking
			if err != nil {
				sb.Close()
				return nil, fmt.Errorf("sandbox: granting fd %d: %w", fd, err)
			}
			sb.files[fd] = os.NewFile(uintptr(nfd), f.Name())
		}
		return sb, nil
	}
	if len(files) > 0 {
		var b proc.Batch
		for fd, f := range files {
			b.PutFile(f, fd)
		}
		if _, err := sb.h.Run(ctx, &b); err != nil {
			sb.Close()
			return nil, fmt.Errorf("sandbox: granting fds: %w", err)
		}
	}
	return sb, nil
}

// spareResult is a sandbox made ahead, or why it could not be.
type spareResult struct {
	sb  *Sandbox
	err error
}

// take returns the sandbox made ahead, or makes one, and starts making
// the next.
func (t *Template) take(ctx context.Context) (*Sandbox, error) {
	t.mu.Lock()
	c := t.spare
	t.spare = nil
	t.mu.Unlock()
	var r spareResult
	if c != nil {
		select {
		case r = <-c:
		case <-ctx.Done():
			go func() { // it is ours to close once it is made
				if r := <-c; r.sb != nil {
					r.sb.Close()
				}
			}()
			return nil, ctx.Err()
		}
	}
	if c == nil || r.err != nil {
		// None ahead, or that one failed: make one now, for its error
		// if it fails again.
		r.sb, r.err = t.prepare(ctx)
	}
	if r.err != nil {
		t.refill()
		return nil, r.err
	}
	r.sb.started = t.refill
	return r.sb, nil
}

// refill starts making the next sandbox ahead, unless one is under way or
// the template is closed.
func (t *Template) refill() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.spare != nil {
		return
	}
	c := make(chan spareResult, 1)
	t.spare = c
	go func() {
		sb, err := t.prepare(context.Background())
		c <- spareResult{sb, err}
	}()
}

// prepare makes a sandbox from the template, confined, without its fds.
func (t *Template) prepare(ctx context.Context) (_ *Sandbox, err error) {
	spec := t.spec
	lim, err := makeLimiter(spec, t.log, templateShared)
	if err != nil {
		return nil, err
	}
	sb := &Sandbox{spec: spec, lim: lim, reapLater: true}
	defer func() {
		if err != nil {
			sb.Close()
		}
	}()
	h, err := t.h.ForkShared(ctx, &proc.Options{
		NewMount: true, NewPID: true, // SharePID is refused
		// The UTS and cgroup namespaces are the template's own: there is
		// nothing in them a sandbox could change or pass to another. (A
		// sandbox with cgroup limits gets a cgroup namespace of its own,
		// made inside them: ownCgroupNamespace.)
		NewIPC: !spec.ShareIPC,
	})
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	sb.h = h
	if err := sb.setFirst(h, lim); err != nil {
		return nil, err
	}
	// Renew what must not be shared: tmpfs, proc (for the new pid
	// namespace), mqueue (for the new IPC namespace), /dev/shm, data. The
	// process's root is the template's already; the mounts are attached to
	// fds resolved inside it, as Build's are.
	var r recorder
	ownCgroupNS := ownCgroupNamespace(spec, lim)
	if ownCgroupNS {
		from := r.begin()
		r.b.Unshare(unix.CLONE_NEWCGROUP)
		r.end(from, "making the cgroup namespace inside the limits' cgroups")
	}
	from := r.begin()
	r.root = r.b.Openat(proc.AtFDCWD(), "/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	r.end(from, "opening the root")
	for _, i := range t.fresh {
		m := &spec.Mounts[i]
		from := r.begin()
		kindOf(m.Kind).renew(&r, spec, m)
		r.endMount(from, i, m)
	}
	r.b.CloseFD(r.root)
	pending := !spec.AsPID1
	var inherited confinement
	if pending {
		// The init confines itself now, in the background, with what its
		// spawns inherit, so that Exec's spawn does not.
		inherited = initConfinement(spec)
		if err := recordConfinement(&r, spec, t.ll, t.filter, inherited&^confBounding); err != nil {
			return nil, err
		}
	}
	// The new namespaces' inode numbers, looked up by the process itself
	// (a non-dumpable one's are not the caller's to read) through the
	// caller's /proc, sent with the batch: the process is in the
	// template's root already, which has no /proc unless the spec mounts
	// one.
	procDir, err := os.OpenFile("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox: opening /proc, for the namespaces' inode numbers: %w", err)
	}
	defer procDir.Close()
	from = r.begin()
	pd := r.b.PutFile(procDir, -1)
	for i, name := range nsNames {
		if name == "mnt" || name == "pid" || name == "ipc" || (name == "cgroup" && ownCgroupNS) {
			r.b.Fstatat(pd, "self/ns/"+name, &r.ns[i], 0)
		}
	}
	r.b.CloseFD(pd)
	r.end(from, "reading the namespaces' inode numbers")
	res, err := h.Run(ctx, &r.b) // no files to close: the batch takes none
	if err != nil {
		return nil, r.explain(err)
	}
	if err := r.verify(res); err != nil {
		return nil, err
	}
	sb.ns = map[string]uint64{"net": t.ns["net"], "user": t.ns["user"], "uts": t.ns["uts"]}
	if !ownCgroupNS {
		sb.ns["cgroup"] = t.ns["cgroup"]
	}
	for i, name := range nsNames {
		if _, shared := sb.ns[name]; !shared {
			sb.ns[name] = r.ns[i].Ino
		}
	}
	if pending {
		// Under caplin's init the program's process is spawned from it
		// by Exec, confined in the same round trip, and copies nothing.
		sb.init, sb.h = h, nil
		sb.pending, sb.ll, sb.filter, sb.inherited = true, t.ll, t.filter, inherited
		return sb, nil
	}
	prog := h
	s, err := recordProgram(spec, nil, lim, t.ll, t.filter, confBounding)
	if err != nil {
		return nil, err
	}
	if _, err := prog.Run(ctx, &s.b); err != nil {
		return nil, s.explain(err)
	}
	return sb, nil
}

// Close ends the template, and every sandbox built from it: they live in
// the template's pid namespace.
func (t *Template) Close() error {
	t.mu.Lock()
	t.closed = true
	c := t.spare
	t.spare = nil
	t.mu.Unlock()
	if c != nil {
		if r := <-c; r.sb != nil {
			r.sb.Close()
		}
	}
	return t.h.Close()
}
