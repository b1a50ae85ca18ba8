package sandbox

import (
	"context"
	"errors"
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
// grant that failed (a *MountError for a mount) and what failed in it.
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
		return buildLandlockOnly(ctx, spec, o)
	}
	// What comes from the spec alone is made on another CPU meanwhile.
	pre := prepareAside(ctx, spec, o.log, fromCaller(spec, o.idMapsBy))
	lim, err := makeLimiter(spec, o.log, "")
	if err != nil {
		err = pre.first(err)
		pre.close()
		return nil, err
	}
	return buildWith(ctx, spec, pre, lim, o)
}

// aside is what Build makes from the spec alone (the policies, and the
// batch that builds the root, whose first steps read the caller's files),
// in a goroutine, while the sandbox's processes are made.
type aside struct {
	done   chan struct{}
	filter []unix.SockFilter
	ll     *LandlockPolicy
	polErr error    // the policies' error, which comes before any other
	zproc  *os.File // zygoteProc's, which the root's batch uses
	root   *recorder
	err    error // zygoteProc's or recordRoot's
}

// fromCaller reports whether the first process of a sandbox of spec is
// forked from the caller rather than from proc's tree zygote: Direct, or
// where the caller must be its parent (it joins given namespaces, or
// writes the ID maps itself, WithIDMapsBy).
func fromCaller(spec *Spec, idMapsBy func(context.Context, int) error) bool {
	return spec.Direct || spec.UserNS != nil || spec.PIDNS != nil || idMapsBy != nil
}

// prepareAside starts making spec's aside, for a first process forked
// from the caller or not (fromCaller); close frees it.
func prepareAside(ctx context.Context, spec *Spec, log *slog.Logger, fromCaller bool) *aside {
	a := &aside{done: make(chan struct{})}
	go func() {
		defer close(a.done)
		if a.filter, a.ll, a.polErr = policies(spec, log); a.polErr != nil {
			return
		}
		// A proc of the zygote's pid namespace, if the sandbox shares
		// it, is made by a helper of the zygote's.
		if !fromCaller {
			a.zproc, a.err = zygoteProc(ctx, spec)
		}
		if a.err == nil {
			a.root, a.err = recordRoot(spec, !netLater(spec), a.zproc)
		}
	}()
	return a
}

// close waits for a and frees what it holds.
func (a *aside) close() {
	<-a.done
	if a.zproc != nil {
		a.zproc.Close()
	}
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
func makeLimiter(spec *Spec, log *slog.Logger, shared string) (*limiter, error) {
	if spec.Limits == (Limits{}) {
		// Nothing to enforce, and so nothing to undo when the sandbox
		// goes: a template's sandbox is then closed without waiting for
		// its init to be reaped.
		return nil, nil
	}
	uid, _ := spec.hostUser()
	lim, dropped, err := newLimiter(spec.Limits, uid, spec.BestEffort, shared)
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
// root's batch from pre, which it frees; lim (which may be nil) is the
// sandbox's from then on. idMapsBy, if not nil, writes the user
// namespace's ID maps (WithIDMapsBy).
func buildWith(ctx context.Context, spec *Spec, pre *aside, lim *limiter, o options) (_ *Sandbox, err error) {
	idMapsBy := o.idMapsBy
	sb := &Sandbox{spec: spec, lim: lim}
	defer func() {
		if err != nil {
			err = pre.first(err)
			sb.Close()
		}
	}()
	defer pre.close()
	uidMap, gidMap := spec.idMaps(os.Geteuid(), os.Getegid())
	initMode := !spec.SharePID && !spec.AsPID1
	later := netLater(spec)
	opts := &proc.Options{
		From:    forkOrigin(spec),
		NewUser: true, NewMount: true,
		NewIPC: !spec.ShareIPC, NewUTS: !spec.ShareUTS, NewCgroup: !spec.ShareCgroup && !ownCgroupNamespace(spec, lim),
		NewPID:   !spec.SharePID,
		NewNet:   spec.Net != NetHost && !later,
		UIDMap:   uidMap,
		GIDMap:   gidMap,
		IDMapsBy: idMapsBy,
		// The caller's supplementary groups are dropped where they are
		// not the host user's (recordRoot).
		AllowSetgroups: spec.HostIDs != (HostIDs{}),
	}
	if idMapsBy != nil {
		// The caller writes the maps of a namespace whose parent is its
		// own only: not the tree zygote's.
		opts.From = proc.Direct
	}
	var h *proc.Handle
	if spec.UserNS != nil || spec.PIDNS != nil {
		h, err = sb.forkJoining(ctx, spec, opts)
	} else {
		h, err = proc.Fork(ctx, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if err := sb.setFirst(h, lim); err != nil {
		return nil, err
	}
	// What the first process does before anything else: take the host
	// IDs its maps name, and make its cgroup namespace once it is in the
	// limits' cgroups. Under an init of caplin's, that is in the round
	// trip that forks the program's process.
	var first proc.Batch
	recordHostUser(&first, spec)
	nHost := first.Len()
	if ownCgroupNamespace(spec, lim) {
		first.Unshare(unix.CLONE_NEWCGROUP)
	}
	nFirst := first.Len()
	// firstErr explains err, of a batch that began with first's calls,
	// when one of them failed; else it returns nil.
	firstErr := func(err error) error {
		var be *proc.BatchError
		switch {
		case !errors.As(err, &be) || be.Index >= nFirst:
			return nil
		case be.Index < nHost:
			return hostUserError(spec, err)
		}
		return fmt.Errorf("sandbox: making the cgroup namespace inside the limits' cgroups: %w", err)
	}
	// The program's process: the first one, or, under an init of
	// caplin's, a child of it (forkat), which shares its namespaces, and
	// gets the root the init builds when pivot_root moves it.
	prog := h
	if initMode {
		if prog, err = h.ForkAfter(ctx, &first, nil); err != nil {
			if ferr := firstErr(err); ferr != nil {
				return nil, ferr
			}
			return nil, fmt.Errorf("sandbox: forking the program's process: %w", err)
		}
		sb.init = h
	} else if nFirst > 0 {
		if _, err := h.Run(ctx, &first); err != nil {
			if ferr := firstErr(err); ferr != nil {
				return nil, ferr
			}
			return nil, fmt.Errorf("sandbox: readying the first process: %w", err)
		}
	}
	sb.h = prog

	if err := pre.first(nil); err != nil {
		return nil, err
	}
	if pre.err != nil {
		return nil, pre.err
	}
	// The FUSE mounts' file systems, made in the sandbox's user
	// namespace and served before the root's batch attaches them.
	if err := openFUSE(ctx, h, spec); err != nil {
		return nil, err
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
	// Meanwhile, on another goroutine: the network namespace's batch in
	// the program's process, and then the recording of the program's own
	// batch, which the root's round trip, the longest, leaves time for.
	type meanwhileResult struct {
		netErr error
		prog   *recorder
		err    error // recordProgram's
	}
	meanwhile := make(chan meanwhileResult, 1)
	go func() {
		var a meanwhileResult
		if n.b.Len() > 0 {
			if _, err := prog.Run(ctx, &n.b); err != nil {
				a.netErr = n.explain(err)
			}
		}
		a.prog, a.err = recordProgram(spec, spec.Files, lim, ll, filter, 0)
		meanwhile <- a
	}()
	res, err := h.Run(ctx, &r.b) // no files to close: the batch takes none
	other := <-meanwhile
	if err == nil && other.netErr != nil {
		return nil, other.netErr
	}
	if err != nil {
		return nil, r.explain(err)
	}
	if err := r.verify(res); err != nil {
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

	if len(spec.LockFiles) > 0 {
		// The init holds the locks; where the program is the first
		// process, a child of it kept for the purpose does.
		holder := h
		if !initMode {
			if holder, err = h.Fork(ctx, nil); err != nil {
				return nil, fmt.Errorf("sandbox: forking the process that holds the lock files: %w", err)
			}
			sb.extra = append(sb.extra, holder)
		}
		if err := lockFiles(ctx, holder, spec.LockFiles); err != nil {
			return nil, err
		}
	}

	s := other.prog
	if other.err != nil {
		return nil, other.err
	}
	res, err = prog.Run(ctx, &s.b)
	if err != nil {
		return nil, s.explain(err)
	}
	if s.trapsConnect {
		if err := sb.serveConnect(ctx, res.File(s.listener), res.File(s.dnsUDP), res.File(s.dnsTCP), o); err != nil {
			return nil, err
		}
	}
	if spec.AssertNoUserNamespaces {
		var b proc.Batch
		b.Unshare(unix.CLONE_NEWUSER)
		if _, err := prog.Run(ctx, &b); err == nil {
			return nil, errors.New("sandbox: creation of new user namespaces was not disabled as requested (AssertNoUserNamespaces): the program can make them")
		}
	}
	return sb, nil
}

// forkJoining makes the sandbox's first process, with opts, inside the
// namespaces spec.UserNS and spec.PIDNS: a process of the caller's own
// joins them, and forks it (so that it is born in the pid namespace), as
// bubblewrap does; that process, and the one between for a new pid
// namespace, are the sandbox's too, from then on.
func (sb *Sandbox) forkJoining(ctx context.Context, spec *Spec, opts *proc.Options) (*proc.Handle, error) {
	outer, err := proc.Fork(ctx, &proc.Options{From: proc.Direct})
	if err != nil {
		return nil, err
	}
	sb.extra = append(sb.extra, outer)
	if spec.UserNS != nil {
		var b proc.Batch
		fd := b.PutFile(spec.UserNS, -1)
		b.Setns(fd, unix.CLONE_NEWUSER)
		b.CloseFD(fd)
		if _, err := outer.Run(ctx, &b); err != nil {
			if errors.Is(err, unix.EINVAL) {
				return nil, fmt.Errorf("joining the user namespace of UserNS (%s), which might not be a descendant of the caller's: %w", spec.UserNS.Name(), unix.EINVAL)
			}
			return nil, fmt.Errorf("joining the user namespace of UserNS (%s): %w", spec.UserNS.Name(), errnoOf(err))
		}
		o := *opts
		o.NewUser, o.UIDMap, o.GIDMap = false, nil, nil
		opts = &o
	}
	if spec.PIDNS != nil {
		if err := outer.JoinPIDNamespace(ctx, spec.PIDNS); err != nil {
			return nil, fmt.Errorf("joining the pid namespace of PIDNS (%s): %w", spec.PIDNS.Name(), errnoOf(err))
		}
		if opts.NewPID {
			// The kernel makes a pid namespace only inside the maker's
			// own, not the one it joined for its children: a child of
			// outer, born in PIDNS, makes the sandbox's.
			mid, err := outer.Fork(ctx, nil)
			if err != nil {
				return nil, err
			}
			sb.extra = append(sb.extra, mid)
			return mid.Fork(ctx, opts)
		}
	}
	return outer.Fork(ctx, opts)
}

// errnoOf returns the errno inside err, or err.
func errnoOf(err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// lockFiles takes, in process h, a shared lock on each of paths, which h
// holds as long as it lives.
func lockFiles(ctx context.Context, h *proc.Handle, paths []string) error {
	var r recorder
	// struct flock, all zero: F_RDLCK (0) from SEEK_SET (0), offset 0,
	// length 0 (the whole file), on every architecture Linux has.
	var flock [32]byte
	for _, p := range paths {
		from := r.begin()
		fd := r.b.Openat(proc.AtFDCWD(), p, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		r.b.Fcntl(fd, unix.F_SETLK, r.b.In(flock[:]))
		r.end(from, "lock file "+p)
	}
	if _, err := h.Run(ctx, &r.b); err != nil {
		return r.explain(err)
	}
	return nil
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
