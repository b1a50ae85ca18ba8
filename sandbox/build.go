package sandbox

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// buildRoot is where the new root is attached in the child's private mount
// namespace while it is built, before pivot_root.
const buildRoot = "/tmp"

// devNodes are the host devices a Dev mount binds.
var devNodes = []string{"null", "zero", "full", "random", "urandom", "tty"}

// span names the calls of a batch that carry out one grant, so a failing
// call can be reported as the grant that failed.
type span struct {
	from, to int
	what     string
}

// recorder records the calls that build a sandbox's root.
type recorder struct {
	b proc.Batch
	// checks run once the batch has, on what it found.
	checks []func() error
	spans  []span
	// root is an O_PATH fd of the new root, which every destination is
	// resolved inside; made lists the directories made in it.
	root proc.Val
	made map[string]bool
	ns   [len(nsNames)]unix.Stat_t
}

// nsNames are the namespaces Sandbox.Namespaces reports, by their names in
// /proc/PID/ns.
var nsNames = [...]string{"cgroup", "ipc", "mnt", "net", "pid", "user", "uts"}

func (r *recorder) begin() int { return r.b.Len() }
func (r *recorder) end(from int, what string) {
	r.spans = append(r.spans, span{from, r.b.Len(), what})
}

// explain names the grant a batch error came from.
func (r *recorder) explain(err error) error {
	var be *proc.BatchError
	if errors.As(err, &be) {
		cerr := be.Err
		// Raw calls are named by number ("syscall 259"); name them.
		var se *os.SyscallError
		if errors.As(cerr, &se) {
			if n, ok := strings.CutPrefix(se.Syscall, "syscall "); ok {
				if nr, err := strconv.Atoi(n); err == nil {
					if name := syscallNameOf(uint32(nr)); name != "" {
						cerr = &os.SyscallError{Syscall: name, Err: se.Err}
					}
				}
			}
		}
		for _, s := range r.spans {
			if be.Index >= s.from && be.Index < s.to {
				return fmt.Errorf("sandbox: %s: %w", s.what, cerr)
			}
		}
	}
	return fmt.Errorf("sandbox: %w", err)
}

// Destinations are resolved inside the new root, never by path from the
// caller's root: a program that could write in an earlier sandbox's
// writable bind may have left symbolic links there (to /etc, or to
// ../../..), and the next build with the same spec must not follow them out
// of the new root. Every destination is opened with openat2's
// RESOLVE_IN_ROOT from an fd of the new root (absolute links and ".." stay
// inside it, as they do for the program once it runs), what is made is made
// with the *at calls relative to an fd of its directory, without following
// the last component, and mounts are attached to, and modes set on, fds.

// inRoot is how destinations are resolved: inside the new root, and not
// through proc's magic links.
const inRoot = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// open records opening the new root's path p, resolved inside it, as an
// O_PATH fd (with flags, O_DIRECTORY say, added). Under RESOLVE_IN_ROOT an
// absolute path, like an absolute link, starts at the fd's root.
func (r *recorder) open(p string, flags int) proc.Val {
	return r.b.Openat2(r.root, filepath.Clean(p), &unix.OpenHow{Flags: uint64(unix.O_PATH | unix.O_CLOEXEC | flags), Resolve: inRoot})
}

// mkdirs makes dir and its missing parents in the new root and returns an
// O_PATH fd of it, which the caller closes.
func (r *recorder) mkdirs(dir string) proc.Val {
	dir = filepath.Clean(dir)
	if dir == "/" {
		return r.open(dir, unix.O_DIRECTORY)
	}
	parts := strings.Split(dir[1:], "/")
	// Those made before need no mkdirat.
	k := 0
	for k < len(parts) && r.made["/"+strings.Join(parts[:k+1], "/")] {
		k++
	}
	parent := r.open("/"+strings.Join(parts[:k], "/"), unix.O_DIRECTORY)
	for i := k; i < len(parts); i++ {
		p := "/" + strings.Join(parts[:i+1], "/")
		// EEXIST is fine: a bind may have brought the directory.
		r.b.Tolerate(r.b.Mkdirat(parent, parts[i], 0o755), unix.EEXIST)
		r.made[p] = true
		next := r.open(p, unix.O_DIRECTORY)
		r.b.Close(parent)
		parent = next
	}
	return parent
}

// touch makes an empty file at the new root's path p to mount a file on,
// unless something is there already, and returns an O_PATH fd of what is
// there, which the caller closes. mknodat, unlike open, neither follows a
// link nor blocks on a FIFO left there.
func (r *recorder) touch(p string) proc.Val {
	dir := r.mkdirs(filepath.Dir(p))
	r.b.Tolerate(mknodat(&r.b, dir, filepath.Base(p), unix.S_IFREG|0o600), unix.EEXIST)
	r.b.Close(dir)
	return r.open(p, 0)
}

// mounted records that something was mounted at the new root's path dest:
// the directories made beneath it are hidden now, and a mount at / hides
// the root fd's tree.
func (r *recorder) mounted(dest string) {
	dest = filepath.Clean(dest)
	for p := range r.made {
		if dest == "/" || strings.HasPrefix(p, dest+"/") {
			delete(r.made, p)
		}
	}
	if dest == "/" {
		r.b.Close(r.root)
		r.root = r.b.Openat(proc.AtFDCWD, buildRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
}

// attach records moving the detached mount mnt onto target, an fd, and
// closing both.
func (r *recorder) attach(mnt, target proc.Val) {
	r.b.MoveMount(mnt, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	r.b.Close(target)
	r.b.Close(mnt)
}

// newMount records making a detached mount of a new file system of type
// fstype, with the string options opts (key, value, key, value...) and the
// mount attributes attrs (MOUNT_ATTR_*). Its result is the mount's fd.
func (r *recorder) newMount(fstype string, attrs int, opts ...string) proc.Val {
	fs := r.b.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	for i := 0; i+1 < len(opts); i += 2 {
		r.b.Fsconfig(fs, unix.FSCONFIG_SET_STRING, opts[i], opts[i+1], proc.Int(0))
	}
	r.b.Fsconfig(fs, unix.FSCONFIG_CMD_CREATE, "", "", proc.Int(0))
	mnt := r.b.Fsmount(fs, unix.FSMOUNT_CLOEXEC, attrs)
	r.b.Close(fs)
	return mnt
}

// chmod records setting the mode of the new root's path p, whose O_PATH
// fd is target, to mode.
func (r *recorder) chmod(p string, target proc.Val, mode uint32) {
	if haveFchmodat2() {
		r.b.Syscall(unix.SYS_FCHMODAT2, target, r.b.CString(""), proc.Uint(uint64(mode)), proc.Int(unix.AT_EMPTY_PATH))
		return
	}
	// Before Linux 6.6 an O_PATH fd's mode cannot be set; the object is
	// opened for reading instead (not blocking on a FIFO, not becoming
	// the controlling terminal), resolved inside the new root again.
	f := r.b.Openat2(r.root, filepath.Clean(p), &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC, Resolve: inRoot})
	r.b.Syscall(unix.SYS_FCHMOD, f, proc.Uint(uint64(mode)))
	r.b.Close(f)
}

// haveFchmodat2 reports whether the kernel has fchmodat2 (Linux 6.6),
// which sets the mode of an O_PATH fd (AT_EMPTY_PATH): it fails with
// EBADF on fd -1 where it exists.
var haveFchmodat2 = sync.OnceValue(func() bool {
	return unix.Fchmodat(-1, "", 0, unix.AT_EMPTY_PATH) == unix.EBADF
})

// mknodat records mknodat(2) of name in the directory fd dir.
func mknodat(b *proc.Batch, dir proc.Val, name string, mode uint32) proc.Val {
	return b.Syscall(unix.SYS_MKNODAT, dir, b.CString(name), proc.Uint(uint64(mode)), proc.Int(0))
}

// symlinkat records symlinkat(2): a link named name in the directory fd
// dir, whose target is target.
func symlinkat(b *proc.Batch, target string, dir proc.Val, name string) proc.Val {
	return b.Syscall(unix.SYS_SYMLINKAT, b.CString(target), dir, b.CString(name))
}

// describe names a mount for errors: "mount 3 (ro-bind /usr on /usr)".
func describe(i int, m *Mount) string {
	switch {
	case m.Kind.isBind() && m.FD != nil:
		return fmt.Sprintf("mount %d (%s %s %s)", i+1, m.Kind, m.FD.Name(), m.Dest)
	case m.Kind.isBind() || m.Kind == Symlink:
		return fmt.Sprintf("mount %d (%s %s %s)", i+1, m.Kind, m.Source, m.Dest)
	}
	return fmt.Sprintf("mount %d (%s %s)", i+1, m.Kind, m.Dest)
}

// checkSpec finds what is wrong with a spec before any process is made.
func checkSpec(spec *Spec) error {
	for i := range spec.Mounts {
		m := &spec.Mounts[i]
		if !filepath.IsAbs(m.Dest) || strings.Contains(m.Dest, "\x00") {
			return fmt.Errorf("sandbox: %s: destination %q is not an absolute path", describe(i, m), m.Dest)
		}
		if m.Kind < 0 || int(m.Kind) >= len(kindNames) {
			return fmt.Errorf("sandbox: mount %d: unknown kind %d", i+1, m.Kind)
		}
		if strings.Contains(m.Source, "\x00") {
			return fmt.Errorf("sandbox: %s: source has a NUL byte", describe(i, m))
		}
		if m.FD != nil && (!m.Kind.isBind() || m.Source != "") {
			return fmt.Errorf("sandbox: %s: a descriptor is the source of a bind only, in place of a path", describe(i, m))
		}
		if (m.Kind.isBind() && m.FD == nil || m.Kind == Symlink) && m.Source == "" {
			return fmt.Errorf("sandbox: %s: source missing", describe(i, m))
		}
		if m.Kind == Chmod && m.Perms == nil {
			return fmt.Errorf("sandbox: %s: no mode given", describe(i, m))
		}
		if m.Perms != nil && *m.Perms&^(os.ModePerm|os.ModeSticky|os.ModeSetuid|os.ModeSetgid) != 0 {
			return fmt.Errorf("sandbox: %s: mode %#o is not permission bits (os.ModeSticky, os.ModeSetuid and os.ModeSetgid are the special ones)", describe(i, m), uint32(*m.Perms))
		}
	}
	for fd, f := range spec.Files {
		if fd < 0 || f == nil {
			return fmt.Errorf("sandbox: fd %d: want a number of 0 or more and a file", fd)
		}
	}
	if spec.UID < 0 || spec.GID < 0 {
		return errors.New("sandbox: uid and gid must not be negative")
	}
	if spec.ShareUTS && spec.Hostname != "" {
		return errors.New("sandbox: a hostname needs a UTS namespace of the sandbox's own (not ShareUTS)")
	}
	if spec.Net < NetNone || spec.Net > NetHost {
		return fmt.Errorf("sandbox: unknown network %d", spec.Net)
	}
	for _, c := range spec.Caps {
		if c < 0 || c > lastCap() {
			return fmt.Errorf("sandbox: capability %d: this kernel's are 0 to %d", c, lastCap())
		}
	}
	for i, f := range spec.SeccompFilters {
		if len(f) == 0 || len(f) > 4096 {
			return fmt.Errorf("sandbox: seccomp program %d: %d instructions (want 1 to 4096)", i+1, len(f))
		}
	}
	return nil
}

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
func Build(ctx context.Context, spec *Spec) (_ *Sandbox, err error) {
	if spec == nil {
		spec = &Spec{}
	}
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	if spec.LandlockOnly {
		return buildLandlockOnly(ctx, spec)
	}
	filter, ll, err := policies(spec)
	if err != nil {
		return nil, err
	}
	lim, err := makeLimiter(spec)
	if err != nil {
		return nil, err
	}
	return buildWith(ctx, spec, filter, ll, lim)
}

// policies returns spec's seccomp filter and its Landlock policy (nil
// where best effort dropped Landlock), logging what an older Landlock ABI
// leaves out of the second layer.
func policies(spec *Spec) ([]unix.SockFilter, *LandlockPolicy, error) {
	filter, err := Filter(spec.Seccomp)
	if err != nil {
		return nil, nil, err
	}
	ll, dropped, err := landlockFor(spec)
	if err != nil {
		return nil, nil, err
	}
	for _, d := range dropped {
		slog.Info("sandbox: Landlock, the second layer, is partial on this kernel", "dropped", d)
	}
	return filter, ll, nil
}

// makeLimiter makes the limiter of spec's limits (nil for none), logging
// what best effort weakened or dropped.
func makeLimiter(spec *Spec) (*limiter, error) {
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
		slog.Warn("sandbox: best effort: dropped", "what", d)
	}
	return lim, nil
}

// buildWith is Build once the policies and the limiter are made; lim
// (which may be nil) is the sandbox's from then on.
func buildWith(ctx context.Context, spec *Spec, filter []unix.SockFilter, ll *LandlockPolicy, lim *limiter) (_ *Sandbox, err error) {

	sb := &Sandbox{spec: spec, lim: lim}
	defer func() {
		if err != nil {
			sb.Close()
		}
	}()
	uid, gid := os.Geteuid(), os.Getegid()
	// Under caplin's init the program's process makes the network
	// namespace (the costliest one to make) while the init builds the
	// root, on another CPU.
	initMode := !spec.SharePID && !spec.AsPID1
	netLater := initMode && spec.Net != NetHost
	h, err := proc.Fork(ctx, &proc.Options{
		From:    forkOrigin(spec),
		NewUser: true, NewMount: true,
		NewIPC: !spec.ShareIPC, NewUTS: !spec.ShareUTS, NewCgroup: !spec.ShareCgroup && !ownCgroupNamespace(spec, lim),
		NewPID: !spec.SharePID,
		NewNet: spec.Net != NetHost && !netLater,
		UIDMap: []proc.IDMap{{Inside: spec.UID, Outside: uid, Size: 1}},
		GIDMap: []proc.IDMap{{Inside: spec.GID, Outside: gid, Size: 1}},
	})
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	sb.first = h
	if lim != nil {
		if err := lim.attach(h.Pid()); err != nil {
			return nil, err
		}
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

	r, err := recordRoot(spec, !netLater)
	if err != nil {
		return nil, err
	}
	var n recorder
	if netLater {
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
	if netLater {
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

// recordProgram records the calls that make the program's process what
// spec says, once its root is in place: working directory, fds, session,
// limits, Landlock, capabilities, no_new_privs and seccomp, but for what
// the process inherits from its parent already (inherited).
func recordProgram(spec *Spec, files map[int]*os.File, lim *limiter, ll *LandlockPolicy, filter []unix.SockFilter, inherited confinement) (*recorder, error) {
	s := &recorder{}
	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	// pivot_root moved the program's root, but not its working
	// directory, unless that was the old root.
	from := s.begin()
	s.b.Chdir(dir)
	s.end(from, "changing to the working directory "+dir)
	from = s.begin()
	for fd, f := range files {
		s.b.PutFile(f, fd)
	}
	s.end(from, "granting fds")
	if !spec.SameSession {
		from = s.begin()
		s.b.Setsid()
		s.end(from, "setsid")
	}
	if lim != nil {
		from = s.begin()
		lim.record(&s.b)
		s.end(from, "resource limits")
	}
	if err := recordConfinement(s, spec, ll, filter, (confLandlock|confBounding)&^inherited); err != nil {
		return nil, err
	}
	from = s.begin()
	recordAmbient(&s.b, spec)
	s.end(from, "keeping capabilities")
	if err := recordConfinement(s, spec, ll, filter, confSeccomp&^inherited); err != nil {
		return nil, err
	}
	return s, nil
}

// confinement names parts of a process's confinement that its children
// inherit.
type confinement uint8

const (
	confLandlock confinement = 1 << iota // the Landlock domain
	confBounding                         // the capability bounding set
	confSeccomp                          // no_new_privs and the seccomp filters
)

// initConfinement is what the init of a template's sandbox applies to
// itself once the root is built, for the programs it spawns to inherit,
// so that each spawn does not: the Landlock domain and the bounding set
// (which the init, which never execs, does not need), and the seccomp
// filters when the spec adds nothing to the default filter (a Deny list or
// programs of the spec's own could refuse what the init and its spawns
// still do).
func initConfinement(spec *Spec) confinement {
	c := confLandlock | confBounding
	if len(spec.Seccomp.Deny) == 0 && len(spec.SeccompFilters) == 0 {
		c |= confSeccomp
	}
	return c
}

// recordConfinement records the parts of the confinement that what says.
func recordConfinement(s *recorder, spec *Spec, ll *LandlockPolicy, filter []unix.SockFilter, what confinement) error {
	if ll != nil && what&confLandlock != 0 {
		abi, _ := LandlockABI()
		from := s.begin()
		if _, err := ll.Record(&s.b, abi); err != nil {
			return err
		}
		s.end(from, "landlock")
	}
	if what&confBounding != 0 {
		from := s.begin()
		recordBounding(&s.b, spec)
		s.end(from, "dropping capabilities")
	}
	if what&confSeccomp != 0 {
		from := s.begin()
		s.b.Prctl(unix.PR_SET_NO_NEW_PRIVS, proc.Int(1), proc.Int(0), proc.Int(0), proc.Int(0))
		s.b.SeccompSetModeFilter(0, filter)
		s.end(from, "seccomp")
		for i, f := range spec.SeccompFilters {
			from = s.begin()
			s.b.SeccompSetModeFilter(0, f)
			s.end(from, "seccomp program "+strconv.Itoa(i+1))
		}
	}
	return nil
}

// recordRoot records the calls that build the root, the network, the
// hostname and the working directory, in the first process.
func recordRoot(spec *Spec, network bool) (*recorder, error) {
	r := &recorder{made: map[string]bool{}}
	b := &r.b
	// The namespaces' inode numbers, for Sandbox.Namespaces, while the
	// caller's /proc is there to look them up in.
	from := r.begin()
	for i, name := range nsNames {
		b.Fstatat(proc.AtFDCWD, "/proc/self/ns/"+name, &r.ns[i], 0)
	}
	r.end(from, "reading the namespaces' inode numbers")
	from = r.begin()
	b.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
	r.end(from, "making the mounts private")
	// Not dumpable: the program, in the same user namespace but with no
	// capabilities, can neither ptrace caplin's init nor read its memory.
	// (Exec makes the program's own process dumpable again.)
	from = r.begin()
	b.Prctl(unix.PR_SET_DUMPABLE, proc.Int(0), proc.Int(0), proc.Int(0), proc.Int(0))
	r.end(from, "prctl(PR_SET_DUMPABLE)")

	// Clone the bind sources while the process sees the caller's files.
	clones := make([]proc.Val, len(spec.Mounts))
	skip := make([]bool, len(spec.Mounts))
	isDir := make([]bool, len(spec.Mounts))
	devClones := map[int][]proc.Val{}
	for i := range spec.Mounts {
		m := &spec.Mounts[i]
		switch {
		case m.Kind.isBind():
			st, err := statSource(m)
			if err != nil && m.Try && errors.Is(err, os.ErrNotExist) {
				skip[i] = true
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("sandbox: %s: %w", describe(i, m), err)
			}
			isDir[i] = st.IsDir()
			from := r.begin()
			if m.FD != nil {
				if clones[i], err = r.bindFD(i, m); err != nil {
					return nil, err
				}
			} else {
				clones[i] = b.OpenTree(proc.AtFDCWD, m.Source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
			}
			r.end(from, describe(i, m))
		case m.Kind == Dev:
			from := r.begin()
			for _, d := range devNodes {
				devClones[i] = append(devClones[i], b.OpenTree(proc.AtFDCWD, "/dev/"+d, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC))
			}
			r.end(from, describe(i, m))
		}
	}
	// The new root: a tmpfs, attached over /tmp in the process's private
	// mount namespace while it is built.
	from = r.begin()
	r.root = r.newMount("tmpfs", 0, "mode", "0755")
	b.MoveMount(r.root, "", proc.AtFDCWD, buildRoot, unix.MOVE_MOUNT_F_EMPTY_PATH)
	r.end(from, "making the root tmpfs")

	for i := range spec.Mounts {
		m := &spec.Mounts[i]
		if skip[i] {
			continue
		}
		from := r.begin()
		perms := func(def os.FileMode) os.FileMode {
			if m.Perms != nil {
				return *m.Perms
			}
			return def
		}
		switch m.Kind {
		case ROBind, Bind, DevBind:
			var target proc.Val
			if isDir[i] {
				target = r.mkdirs(m.Dest)
			} else {
				target = r.touch(m.Dest)
			}
			// The attributes go on the clone before it is attached, so
			// it is never attached without them.
			attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID}
			if m.Kind != DevBind {
				attr.Attr_set |= unix.MOUNT_ATTR_NODEV
			}
			if m.Kind == ROBind {
				attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
			}
			b.MountSetattr(clones[i], "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr)
			r.attach(clones[i], target)
			r.mounted(m.Dest)
		case Tmpfs:
			r.attach(r.newMount("tmpfs", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV, tmpfsOptions(perms(0o755), m.Size)...), r.mkdirs(m.Dest))
			r.mounted(m.Dest)
		case Proc:
			r.mountProc(r.mkdirs(m.Dest))
			r.mounted(m.Dest)
		case Mqueue:
			r.attach(r.newMount("mqueue", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC), r.mkdirs(m.Dest))
			r.mounted(m.Dest)
		case Dev:
			target := r.mkdirs(m.Dest)
			dev := r.newMount("tmpfs", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC, "mode", "0755")
			b.MoveMount(dev, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
			b.Close(target)
			// The rest is made in the new tmpfs, through its fd: nothing
			// else can have put anything there.
			for k, d := range devNodes {
				mknodat(b, dev, d, unix.S_IFREG|0o666)
				r.attach(devClones[i][k], b.Openat(dev, d, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0))
			}
			b.Mkdirat(dev, "shm", 0o1777)
			r.attach(r.newMount("tmpfs", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV, "mode", "1777"),
				b.Openat(dev, "shm", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0))
			b.Mkdirat(dev, "pts", 0o755)
			symlinkat(b, "/proc/self/fd", dev, "fd")
			symlinkat(b, "/proc/self/fd/0", dev, "stdin")
			symlinkat(b, "/proc/self/fd/1", dev, "stdout")
			symlinkat(b, "/proc/self/fd/2", dev, "stderr")
			symlinkat(b, "/proc/kcore", dev, "core")
			b.Close(dev)
			r.mounted(m.Dest)
		case Symlink:
			// The link is made where its directory resolves inside the
			// new root; its target is the program's business, and is
			// not followed here.
			dir := r.mkdirs(filepath.Dir(m.Dest))
			symlinkat(b, m.Source, dir, filepath.Base(m.Dest))
			b.Close(dir)
		case Dir:
			dir := r.mkdirs(m.Dest)
			if m.Perms != nil {
				r.chmod(m.Dest, dir, modeBits(*m.Perms))
			}
			b.Close(dir)
		case File:
			// O_NOFOLLOW: a link at the destination is refused (ELOOP),
			// not followed; O_NONBLOCK: a FIFO there fails (ENXIO) rather
			// than blocking the build.
			dir := r.mkdirs(filepath.Dir(m.Dest))
			f := b.Openat(dir, filepath.Base(m.Dest), unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, modeBits(perms(0o666)))
			b.Close(dir)
			writeAll(b, f, m.Data)
			if m.Perms != nil { // past the umask
				b.Syscall(unix.SYS_FCHMOD, f, proc.Uint(uint64(modeBits(*m.Perms))))
			}
			b.Close(f)
		case BindData, ROBindData:
			recordDataBind(r, m, r.touch(m.Dest))
			r.mounted(m.Dest)
		case RemountRO:
			target := r.open(m.Dest, 0)
			b.MountSetattr(target, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
			b.Close(target)
		case Chmod:
			target := r.open(m.Dest, 0)
			r.chmod(m.Dest, target, modeBits(*m.Perms))
			b.Close(target)
		}
		r.end(from, describe(i, m))
	}
	b.Close(r.root)
	// Leave the caller's file system: pivot into the new root, with the
	// old one stacked on it (pivot_root(".", "."), which needs no
	// directory to put it in, so a bind of the host's / at / works too),
	// and detach the old one.
	from = r.begin()
	b.Chdir(buildRoot)
	b.PivotRoot(".", ".")
	b.Umount2(".", unix.MNT_DETACH)
	b.Chdir("/")
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if !spec.WritableRoot {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	b.MountSetattr(proc.AtFDCWD, "/", 0, attr)
	r.end(from, "pivoting into the new root")

	if network && spec.Net == NetLoopback {
		recordLoopback(r)
	}
	if !spec.ShareUTS {
		host := spec.Hostname
		if host == "" {
			host = "caplin"
		}
		from = r.begin()
		b.Sethostname(host)
		r.end(from, "setting the hostname")
	}
	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	from = r.begin()
	b.Chdir(dir)
	r.end(from, "changing to the working directory "+dir)
	return r, nil
}

// tmpfsOptions returns the options (key, value, ...) of a tmpfs of mode
// perms and size bytes (0: the kernel's default).
func tmpfsOptions(perms os.FileMode, size int64) []string {
	opts := []string{"mode", fmt.Sprintf("%o", modeBits(perms))}
	if size > 0 {
		opts = append(opts, "size", strconv.FormatInt(size, 10))
	}
	return opts
}

// procCovered are the entries of proc that act on the whole machine
// rather than on the sandbox's namespaces, which a mounted proc is made
// read-only over, as bubblewrap does: sysctls (core_pattern, among
// others, which the kernel lets any uid 0 that is the host's write, with
// no capability), the magic SysRq key, interrupt affinities, PCI devices.
// A sandbox of root's has the host's uid 0 inside (in its own user
// namespace, but these files check only the uid), and Landlock, where the
// root is writable, covers /proc too.
var procCovered = []string{"sys", "sysrq-trigger", "irq", "bus"}

// procEntries returns those of procCovered this kernel has, by the
// caller's /proc; all of them if that is not a proc file system, so that a
// missing one fails the build rather than being left writable unseen.
var procEntries = sync.OnceValue(func() []string {
	var st unix.Statfs_t
	if err := unix.Statfs("/proc", &st); err != nil || st.Type != unix.PROC_SUPER_MAGIC {
		return procCovered
	}
	var have []string
	for _, name := range procCovered {
		if _, err := os.Lstat("/proc/" + name); err == nil {
			have = append(have, name)
		}
	}
	return have
})

// mountProc records mounting a proc file system of the process's pid
// namespace on target, an fd, with procEntries bound read-only over
// themselves. The binds are clones of the new proc's own entries, made
// through its fd: nothing else can have put anything there.
func (r *recorder) mountProc(target proc.Val) {
	b := &r.b
	mnt := r.newMount("proc", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	b.MoveMount(mnt, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	b.Close(target)
	for _, name := range procEntries() {
		clone := b.OpenTree(mnt, name, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		b.MountSetattr(clone, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{
			Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC,
		})
		r.attach(clone, b.Openat(mnt, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0))
	}
	b.Close(mnt)
}

// recordDataBind records the calls that bind a file holding m.Data on
// target, an fd of the file to cover: the data goes in a file on a tmpfs
// that is never attached anywhere, and a clone of that file, with its
// attributes set, is what gets bound.
func recordDataBind(r *recorder, m *Mount, target proc.Val) {
	b := &r.b
	perms := os.FileMode(0o600)
	if m.Perms != nil {
		perms = *m.Perms
	}
	mnt := r.newMount("tmpfs", 0)
	f := b.Openat(mnt, "data", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, modeBits(perms))
	writeAll(b, f, m.Data)
	b.Close(f)
	clone := b.OpenTree(mnt, "data", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	b.Close(mnt)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if m.Kind == ROBindData {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	b.MountSetattr(clone, "", unix.AT_EMPTY_PATH, attr)
	r.attach(clone, target)
}

// recordLoopback records the calls that bring up the loopback interface
// of the process's network namespace.
func recordLoopback(r *recorder) {
	from := r.begin()
	sock := r.b.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	// struct ifreq: the name, then ifr_flags (a short).
	ifr := make([]byte, unix.IFNAMSIZ+24) // 40 bytes on 64-bit
	copy(ifr, "lo")
	binary.NativeEndian.PutUint16(ifr[unix.IFNAMSIZ:], unix.IFF_UP|unix.IFF_LOOPBACK|unix.IFF_RUNNING)
	r.b.Syscall(unix.SYS_IOCTL, sock, proc.Int(unix.SIOCSIFFLAGS), r.b.In(ifr))
	r.b.Close(sock)
	r.end(from, "bringing up the loopback interface")
}

// writeAll records writes of p to fd in pieces the child's arena takes.
func writeAll(b *proc.Batch, fd proc.Val, p []byte) {
	const chunk = 32 << 10
	for len(p) > 0 {
		n := min(len(p), chunk)
		b.Write(fd, p[:n])
		p = p[n:]
	}
}

// modeBits converts an os.FileMode to the bits of chmod(2).
func modeBits(m os.FileMode) uint32 {
	b := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		b |= unix.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		b |= unix.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		b |= unix.S_ISVTX
	}
	return b
}

// landlockFor returns the Landlock policy with the same grants as spec's
// file system: the root read-only (or writable), each mount's tree with
// the access its kind gives. Landlock rules only add up, so a RemountRO or
// a Tmpfs that hides part of a writable grant is enforced by the mounts
// alone. It returns nil and what it dropped when Landlock is unavailable
// and spec.BestEffort allows that.
func landlockFor(spec *Spec) (*LandlockPolicy, []string, error) {
	abi, err := LandlockABI()
	switch {
	case err != nil && !spec.BestEffort:
		return nil, nil, fmt.Errorf("%w: %v", ErrLandlockUnsupported, err)
	case err != nil:
		slog.Warn("sandbox: best effort: dropped Landlock, the second layer", "reason", err.Error())
		return nil, nil, nil
	}
	rootAccess := uint64(AccessRead)
	if spec.WritableRoot {
		rootAccess = AccessWrite
	}
	// The namespaces enforce the grants; Landlock is a second layer, so
	// an older ABI that lacks a right or a scope weakens that layer only:
	// what it drops is logged, not refused. No Landlock at all is refused
	// unless BestEffort.
	ll := &LandlockPolicy{
		BestEffort: true,
		Paths:      []PathGrant{{Path: "/", Access: rootAccess, Kind: PathDir}},
		// A network namespace of its own needs no TCP rules; the host's
		// is what NetHost asks for.
		AnyTCP:          true,
		AnyAbstractUnix: spec.Net == NetHost,
	}
	for i := range spec.Mounts {
		m := &spec.Mounts[i]
		g := PathGrant{Path: filepath.Clean(m.Dest), Kind: PathDir}
		switch m.Kind {
		case ROBind, Proc, ROBindData:
			g.Access = AccessRead
		case Bind, Tmpfs, Mqueue, BindData:
			g.Access = AccessWrite
		case DevBind:
			g.Access = AccessWrite
		case Dev:
			g.Access = AccessRead | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
		default:
			continue // in the root: the root's access
		}
		switch m.Kind {
		case ROBind, Bind, DevBind:
			st, err := statSource(m)
			if err != nil {
				if m.Try {
					continue
				}
				return nil, nil, fmt.Errorf("sandbox: %s: %w", describe(i, m), err)
			}
			if !st.IsDir() {
				g.Kind = PathFile
			}
		case BindData, ROBindData:
			g.Kind = PathFile
		}
		ll.Paths = append(ll.Paths, g)
		if m.Kind == Dev {
			// Its shm is a tmpfs for the program's own use.
			ll.Paths = append(ll.Paths, PathGrant{Path: filepath.Join(g.Path, "shm"), Access: AccessWrite, Kind: PathDir})
		}
	}
	// Find out now, before any process is made, whether the kernel can
	// enforce the policy.
	var probe proc.Batch
	dropped, err := ll.Record(&probe, abi)
	if err != nil {
		return nil, nil, err
	}
	return ll, dropped, nil
}

// recordBounding records the calls that empty the capability bounding set
// but for spec.Caps: exec then grants no other capability, whatever the
// uid.
func recordBounding(b *proc.Batch, spec *Spec) {
	if spec.KeepCaps {
		return
	}
	keep := map[int]bool{}
	for _, c := range spec.Caps {
		keep[c] = true
	}
	// Empty the bounding set but for the kept ones: exec then grants no
	// other capability, whatever the uid. Dropping past the kernel's last
	// capability fails with EINVAL, so the kernel's own count is used.
	last := lastCap()
	for c := 0; c <= last; c++ {
		if !keep[c] {
			b.Prctl(unix.PR_CAPBSET_DROP, proc.Int(c), proc.Int(0), proc.Int(0), proc.Int(0))
		}
	}
}

// recordAmbient records what keeps spec.Caps across exec for a uid other
// than 0: they become ambient capabilities, which must be inheritable
// (and permitted, which the namespace's creator is) first. Uid 0 gets the
// bounding set at exec.
func recordAmbient(b *proc.Batch, spec *Spec) {
	if spec.KeepCaps || len(spec.Caps) == 0 || spec.UID == 0 {
		return
	}
	keep := map[int]bool{}
	for _, c := range spec.Caps {
		keep[c] = true
	}
	var set [2]uint32
	for c := range keep {
		set[c/32] |= 1 << (c % 32)
	}
	hdr := capHeader()
	data := make([]byte, 24) // two of {effective, permitted, inheritable}
	for w := 0; w < 2; w++ {
		for k := 0; k < 3; k++ {
			binary.NativeEndian.PutUint32(data[w*12+k*4:], set[w])
		}
	}
	b.Syscall(unix.SYS_CAPSET, b.In(hdr), b.In(data))
	for c := range keep {
		b.Prctl(unix.PR_CAP_AMBIENT, proc.Int(unix.PR_CAP_AMBIENT_RAISE), proc.Int(c), proc.Int(0), proc.Int(0))
	}
}

// capHeader returns a struct __user_cap_header_struct for capset(2) of
// the calling process, version 3.
func capHeader() []byte {
	hdr := make([]byte, 8)
	binary.NativeEndian.PutUint32(hdr, unix.LINUX_CAPABILITY_VERSION_3)
	return hdr
}
