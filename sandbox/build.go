package sandbox

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// Build makes a sandboxed process from spec, ready for Exec. Every step
// runs in the new process, in a few batched round trips, before it execs;
// a failing step kills it (nothing is left behind) and the error names the
// grant or call that failed.
//
// The root is assembled with the mount API: the bind sources are cloned
// (open_tree) first, while the process still sees the caller's file
// system; then a tmpfs becomes the new root, the clones are attached in it,
// read-only where asked, proc and /dev are mounted, and pivot_root leaves
// the caller's file system behind (detached, so nothing else of it is
// reachable, through ".." or otherwise).
//
// opts may give a logger (WithLogger) for what best effort dropped.
func Build(ctx context.Context, spec *Spec, opts ...Option) (_ *Sandbox, err error) {
	spec = spec.Clone() // ours from here on: see Spec on ownership
	o := optionsOf(opts)
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	if spec.LandlockOnly {
		return buildLandlockOnly(ctx, spec, o.log)
	}
	// What comes from the spec alone is made on another CPU meanwhile.
	pre := prepareAside(spec, o.log)
	lim, err := makeLimiter(spec, o.log)
	if err != nil {
		return nil, pre.first(err)
	}
	return buildWith(ctx, spec, pre, lim)
}

// aside is what Build makes from the spec alone (the policies, and the
// batch that builds the root, whose first steps read the caller's files),
// in a goroutine, while the sandbox's processes are made.
type aside struct {
	done   chan struct{}
	filter []unix.SockFilter
	ll     *LandlockPolicy
	polErr error // the policies' error, which comes before any other
	root   *recorder
	err    error // recordRoot's
}

// prepareAside starts making spec's aside.
func prepareAside(spec *Spec, log *slog.Logger) *aside {
	a := &aside{done: make(chan struct{})}
	go func() {
		defer close(a.done)
		if a.filter, a.ll, a.polErr = policies(spec, log); a.polErr == nil {
			a.root, a.err = recordRoot(spec, !netLater(spec))
		}
	}()
	return a
}

// first waits for a and returns the policies' error if there is one, else
// err: a spec whose policies cannot be made fails with that, whatever
// else failed meanwhile, as when the policies were made first.
func (a *aside) first(err error) error {
	<-a.done
	if a.polErr != nil {
		return a.polErr
	}
	return err
}

// policies returns spec's seccomp filter and its Landlock policy (nil
// where best effort dropped Landlock), logging to log what an older
// Landlock ABI leaves out of the second layer.
func policies(spec *Spec, log *slog.Logger) ([]unix.SockFilter, *LandlockPolicy, error) {
	filter, err := Filter(spec.Seccomp)
	if err != nil {
		return nil, nil, err
	}
	ll, dropped, err := landlockFor(spec, log)
	if err != nil {
		return nil, nil, err
	}
	for _, d := range dropped {
		log.Info("sandbox: Landlock, the second layer, is partial on this kernel", "dropped", d)
	}
	return filter, ll, nil
}

// makeLimiter makes the limiter of spec's limits (nil for none), logging
// to log what best effort weakened or dropped.
func makeLimiter(spec *Spec, log *slog.Logger) (*limiter, error) {
	if spec.Limits == (Limits{}) {
		// Nothing to enforce, and so nothing to undo when the sandbox
		// goes: a template's sandbox is then closed without waiting for
		// its init to be reaped.
		return nil, nil
	}
	lim, dropped, err := newLimiter(spec.Limits, os.Geteuid(), spec.BestEffort)
	if err != nil {
		return nil, err
	}
	for _, d := range dropped {
		log.Warn("sandbox: best effort: dropped", "what", d)
	}
	return lim, nil
}

// netLater says whether the program's process makes the network namespace
// of a sandbox of spec: under caplin's init it does (the costliest
// namespace to make), while the init builds the root, on another CPU.
func netLater(spec *Spec) bool {
	return !spec.SharePID && !spec.AsPID1 && spec.Net != NetHost
}

// buildWith is Build once the limiter is made, with the policies and the
// root's batch from pre; lim (which may be nil) is the sandbox's from then
// on.
func buildWith(ctx context.Context, spec *Spec, pre *aside, lim *limiter) (_ *Sandbox, err error) {
	sb := &Sandbox{spec: spec, lim: lim}
	defer func() {
		if err != nil {
			err = pre.first(err)
			sb.Close()
		}
	}()
	uid, gid := os.Geteuid(), os.Getegid()
	initMode := !spec.SharePID && !spec.AsPID1
	later := netLater(spec)
	h, err := proc.Fork(ctx, &proc.Options{
		From:    forkOrigin(spec),
		NewUser: true, NewMount: true,
		NewIPC: !spec.ShareIPC, NewUTS: !spec.ShareUTS, NewCgroup: !spec.ShareCgroup && !ownCgroupNamespace(spec, lim),
		NewPID: !spec.SharePID,
		NewNet: spec.Net != NetHost && !later,
		UIDMap: []proc.IDMap{{Inside: spec.UID, Outside: uid, Size: 1}},
		GIDMap: []proc.IDMap{{Inside: spec.GID, Outside: gid, Size: 1}},
	})
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if err := sb.setFirst(h, lim); err != nil {
		return nil, err
	}
	if ownCgroupNamespace(spec, lim) {
		var b proc.Batch
		b.Unshare(unix.CLONE_NEWCGROUP)
		if _, err := h.Run(ctx, &b); err != nil {
			return nil, fmt.Errorf("sandbox: making the cgroup namespace inside the limits' cgroups: %w", err)
		}
	}
	// The program's process: the first one, or, under an init of
	// caplin's, a child of it (forkat), which shares its namespaces, and
	// gets the root the init builds when pivot_root moves it.
	prog := h
	if initMode {
		if prog, err = h.Fork(ctx, nil); err != nil {
			return nil, fmt.Errorf("sandbox: forking the program's process: %w", err)
		}
		sb.init = h
	}
	sb.h = prog

	if err := pre.first(nil); err != nil {
		return nil, err
	}
	if pre.err != nil {
		return nil, pre.err
	}
	r, filter, ll := pre.root, pre.filter, pre.ll
	var n recorder
	if later {
		from := n.begin()
		n.b.Unshare(unix.CLONE_NEWNET)
		n.end(from, "making the network namespace")
		if spec.Net == NetLoopback {
			recordLoopback(&n)
		}
	}
	netErr := make(chan error, 1)
	go func() {
		var err error
		if n.b.Len() > 0 {
			if _, err = prog.Run(ctx, &n.b); err != nil {
				err = n.explain(err)
			}
		}
		netErr <- err
	}()
	_, err = h.Run(ctx, &r.b)
	if nerr := <-netErr; err == nil && nerr != nil {
		return nil, nerr
	}
	if err != nil {
		return nil, r.explain(err)
	}
	if err := r.verify(); err != nil {
		return nil, err
	}
	sb.ns = map[string]uint64{}
	for i, name := range nsNames {
		sb.ns[name] = r.ns[i].Ino
	}
	if later {
		// Looked up from outside: the program's /proc/self may be gone
		// by the time its batch runs, with the root pivoted under it.
		var st unix.Stat_t
		if err := unix.Stat("/proc/"+strconv.Itoa(prog.Pid())+"/ns/net", &st); err != nil {
			return nil, fmt.Errorf("sandbox: the network namespace's inode number: %w", &os.PathError{Op: "stat", Path: "/proc/" + strconv.Itoa(prog.Pid()) + "/ns/net", Err: err})
		}
		sb.ns["net"] = st.Ino
	}

	s, err := recordProgram(spec, spec.Files, lim, ll, filter, 0)
	if err != nil {
		return nil, err
	}
	if _, err := prog.Run(ctx, &s.b); err != nil {
		return nil, s.explain(err)
	}
	return sb, nil
}

// forkOrigin is where proc makes a sandbox's first process: from the
// caller itself for a Direct spec, else from the tree zygote.
func forkOrigin(spec *Spec) proc.Origin {
	if spec.Direct {
		return proc.Direct
	}
	return proc.InTree
}

// ownCgroupNamespace says whether a sandbox makes its cgroup namespace
// only once its first process is in the cgroups that enforce its limits,
// rather than at clone: the namespace's roots are then those cgroups, so a
// program given a writable cgroup file system cannot move itself out of
// them into an ancestor (which a namespace made first would have as its
// root, and let it reach).
func ownCgroupNamespace(spec *Spec, lim *limiter) bool {
	return !spec.ShareCgroup && lim != nil && len(lim.cgroups) > 0
}
