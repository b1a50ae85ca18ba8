package sandbox

// The root: the recorder that assembles a sandbox's file system in its
// first process, with the mount API, inside the new root and never by
// the caller's paths, and the steps of each mount kind it takes.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/caplin-dev/caplin/internal/filemode"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// buildRoot is where the new root is attached in the child's private mount
// namespace while it is built, before pivot_root.
const buildRoot = "/tmp"

// devNodes are the host devices a Dev mount binds.
var devNodes = []string{"null", "zero", "full", "random", "urandom", "tty"}

// span names the calls of a batch that carry out one grant, so a failing
// call can be reported as the grant that failed: mount (an index in
// Spec.Mounts, m its mount) or, for the other steps, what.
type span struct {
	from, to int
	what     string
	mount    int // -1: not a mount
	m        *Mount
	// denied, if set, is added to an EACCES of the span's calls: why
	// the sandbox may be refused what the caller could reach.
	denied string
}

// recorder records the calls that build a sandbox's root.
type recorder struct {
	b proc.Batch
	// listener, with trapsConnect, is the seccomp listener of Connect's
	// filter, which the program's batch sends (recordConnect).
	listener     proc.Val
	trapsConnect bool
	// dnsUDP and dnsTCP are the sockets of the sandbox's resolver,
	// which the program's batch makes and sends (recordResolver).
	dnsUDP, dnsTCP proc.Val
	// checks run once the batch has, on what it found and its results.
	checks []func(*proc.Results) error
	// atIndex and at are the index and the mount being recorded, for
	// the checks' errors.
	atIndex int
	at      *Mount
	spans   []span
	// root is an O_PATH fd of the new root, which every destination is
	// resolved inside; made lists the directories made in it.
	root proc.Val
	made map[string]bool
	// parentMode is the mode of the parent directories mkdirs makes for
	// the mount being recorded (parentModeOf).
	parentMode uint32
	ns         [len(nsNames)]unix.Stat_t
	// sharePID is the spec's SharePID: a Proc mount is then a clone of
	// the first process's /proc (prepareProc).
	sharePID bool
	// fuses counts the FUSE mounts prepared, which openFUSE makes at
	// their numbers (fuseMountFD).
	fuses int
}

// nsNames are the namespaces Sandbox.Namespaces reports, by their names in
// /proc/PID/ns.
var nsNames = [...]string{"cgroup", "ipc", "mnt", "net", "pid", "user", "uts"}

func (r *recorder) begin() int { return r.b.Len() }
func (r *recorder) end(from int, what string) {
	r.spans = append(r.spans, span{from: from, to: r.b.Len(), what: what, mount: -1})
}

// endMount ends the span of the calls that make mount i, m.
func (r *recorder) endMount(from, i int, m *Mount) {
	r.spans = append(r.spans, span{from: from, to: r.b.Len(), mount: i, m: m})
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
				cerr = inWords(cerr)
				if s.denied != "" && errors.Is(cerr, unix.EACCES) {
					cerr = fmt.Errorf("%w (%s)", cerr, s.denied)
				}
				if s.mount >= 0 {
					return mountError(s.mount, s.m, cerr)
				}
				return fmt.Errorf("sandbox: %s: %w", s.what, cerr)
			}
		}
	}
	return fmt.Errorf("sandbox: %w", err)
}

// callWords are what the steps of a grant do, by the system call that
// does it, for errors: the user wrote a grant, not the calls, nor the fds
// of the process that built the sandbox.
var callWords = map[string]string{
	"fsopen":        "opening the file system type",
	"fsconfig":      "making the file system",
	"fsmount":       "making the mount",
	"move_mount":    "attaching the mount",
	"mount_setattr": "setting the mount's attributes",
	"open_tree":     "cloning the source",
	"faccessat2":    "checking the sandbox's user may use the source",
	"symlinkat":     "making the symbolic link",
	"mknodat":       "making the file",
	"mkdirat":       "making the directory",
	"fchmodat2":     "setting the mode",
	"fchmod":        "setting the mode",
	"write":         "writing the data",
	"openat":        "opening",
	"openat2":       "opening",
	"close":         "closing",
	"unshare":       "making the namespace",
}

// inWords returns err, a failed call of the batch that builds a sandbox,
// with the call put in callWords' words, and without the fd it acted on
// (a number in that process, "fsconfig fd 8", which means nothing to
// whoever wrote the Spec). Failures on a path keep the path.
func inWords(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		if w, ok := callWords[pe.Op]; ok {
			return &os.PathError{Op: w, Path: pe.Path, Err: pe.Err}
		}
		return err
	}
	var se *os.SyscallError
	if !errors.As(err, &se) {
		return err
	}
	name, _, _ := strings.Cut(se.Syscall, " fd ")
	if w, ok := callWords[name]; ok {
		name = w
	}
	return &os.SyscallError{Syscall: name, Err: se.Err}
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

// mkdirs makes dir (of mode mode) and its missing parents (of mode
// r.parentMode) in the new root and returns an O_PATH fd of it, which the
// caller closes. A directory there already is left as it is.
func (r *recorder) mkdirs(dir string, mode uint32) proc.Val {
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
		m := r.parentMode
		if i == len(parts)-1 {
			m = mode
		}
		// EEXIST is fine: a bind may have brought the directory.
		r.b.Tolerate(r.b.Mkdirat(parent, parts[i], m), unix.EEXIST)
		r.made[p] = true
		next := r.open(p, unix.O_DIRECTORY)
		r.b.CloseFD(parent)
		parent = next
	}
	return parent
}

// touch makes an empty file at the new root's path p to mount a file on,
// unless something is there already, and returns an O_PATH fd of what is
// there, which the caller closes. mknodat, unlike open, neither follows a
// link nor blocks on a FIFO left there. The file is read-only (0444), as
// bubblewrap makes its mount points: it stays behind in a writable bind's
// directory.
func (r *recorder) touch(p string) proc.Val {
	dir := r.mkdirs(filepath.Dir(p), r.parentMode)
	r.b.Tolerate(mknodat(&r.b, dir, filepath.Base(p), unix.S_IFREG|0o444), unix.EEXIST)
	r.b.CloseFD(dir)
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
		r.b.CloseFD(r.root)
		r.root = r.b.Openat(proc.AtFDCWD(), buildRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
}

// attach records moving the detached mount mnt onto target, an fd, and
// closing both.
func (r *recorder) attach(mnt, target proc.Val) {
	r.b.MoveMount(mnt, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	r.b.CloseFD(target)
	r.b.CloseFD(mnt)
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
	r.b.CloseFD(fs)
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
	r.b.CloseFD(f)
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

// recordRoot records the calls that build the root, the network, the
// hostname and the working directory, in the first process. zproc is the
// proc of the zygote's pid namespace that zygoteProc mounted for it, or nil.
func recordRoot(spec *Spec, network bool, zproc *os.File) (*recorder, error) {
	r := &recorder{made: map[string]bool{}, sharePID: spec.SharePID}
	b := &r.b
	// The namespaces' inode numbers, for Sandbox.Namespaces, while the
	// caller's /proc is there to look them up in.
	from := r.begin()
	for i, name := range nsNames {
		b.Fstatat(proc.AtFDCWD(), "/proc/self/ns/"+name, &r.ns[i], 0)
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

	if zproc != nil {
		// The first process's own /proc becomes one of the pid namespace
		// it shares: what binds /proc, or a directory above it, and the
		// Proc mounts (prepareProc, which covers them), then show the
		// program's own processes, as they would the caller's in the
		// caller's pid namespace. Not covered: a bind of the caller's
		// /proc is not either, and a proc with nothing over it is what
		// lets a sandbox nested in this one mount a proc of its own (the
		// kernel refuses a new proc where no proc is fully visible). Its
		// mounts are private by now: nothing of this reaches the caller's.
		from = r.begin()
		r.attach(b.PutFile(zproc, -1), b.Openat(proc.AtFDCWD(), "/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0))
		r.end(from, "mounting a proc of the shared pid namespace")
	}

	// The modes asked for are the modes made, as bubblewrap's are: the
	// caller's umask is set again once the root is built.
	from = r.begin()
	umask := b.Syscall(unix.SYS_UMASK, proc.Int(0))
	r.end(from, "umask")

	// Take what the mounts take of the caller's files (clones of the bind
	// sources) while the process still sees them.
	pre := make([]prepared, len(spec.Mounts))
	for i := range spec.Mounts {
		m := &spec.Mounts[i]
		if k := kindOf(m.Kind); k.prepare != nil {
			from := r.begin()
			if err := k.prepare(r, i, m, &pre[i]); err != nil {
				return nil, err
			}
			hostIDs := spec.HostIDs != (HostIDs{}) && m.Kind.isBind()
			if hostIDs && !pre[i].skip {
				recordReachable(&r.b, pre[i].clone, pre[i].isDir)
			}
			r.endMount(from, i, m)
			if hostIDs {
				r.spans[len(r.spans)-1].denied = "the sandbox is " + spec.HostIDs.String() + " on the host, which may not reach or read it"
			}
		}
	}
	// The new root: a tmpfs, attached over /tmp in the process's private
	// mount namespace while it is built.
	from = r.begin()
	r.root = r.newMount("tmpfs", 0, "mode", "0755")
	b.MoveMount(r.root, "", proc.AtFDCWD(), buildRoot, unix.MOVE_MOUNT_F_EMPTY_PATH)
	r.end(from, "making the root tmpfs")

	for i := range spec.Mounts {
		m := &spec.Mounts[i]
		if pre[i].skip {
			continue
		}
		from := r.begin()
		r.atIndex, r.at, r.parentMode = i, m, parentModeOf(m)
		kindOf(m.Kind).record(r, m, &pre[i])
		r.endMount(from, i, m)
	}
	b.CloseFD(r.root)
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
	b.MountSetattr(proc.AtFDCWD(), "/", 0, attr)
	r.end(from, "pivoting into the new root")

	from = r.begin()
	b.Syscall(unix.SYS_UMASK, umask)
	r.end(from, "umask")
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

// parentModeOf returns the mode of the parent directories made for m:
// 0755, less the group's or the others' access where m's Perms give them
// none, as bubblewrap makes them, so that a private directory or file is
// not made in parents anyone can enter.
func parentModeOf(m *Mount) uint32 {
	mode := uint32(0o755)
	if m.Perms != nil {
		p := filemode.Unix(*m.Perms)
		if p&0o070 == 0 {
			mode &^= 0o050
		}
		if p&0o007 == 0 {
			mode &^= 0o005
		}
	}
	return mode
}

// tmpfsOptions returns the options (key, value, ...) of a tmpfs of mode
// perms and size bytes (0: the kernel's default).
func tmpfsOptions(perms os.FileMode, size int64) []string {
	opts := []string{"mode", fmt.Sprintf("%o", filemode.Unix(perms))}
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

// procAttrs are the attributes of every proc mount: nothing on it is a
// set-user-ID program, a device, or to be executed.
const procAttrs = unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC

// mountProc records mounting a proc file system of the process's pid
// namespace on target, an fd, covered (coverProc).
func (r *recorder) mountProc(target proc.Val) {
	r.coverProc(r.newMount("proc", procAttrs), target)
}

// coverProc records attaching mnt, a detached proc mount, on target, an
// fd, and binding procEntries read-only over themselves. The binds are
// clones of mnt's own entries, made through its fd: nothing else can have
// put anything there. They are recursive, as a proc that is the caller's
// may have mounts beneath them (binfmt_misc in sys), which come along
// read-only.
func (r *recorder) coverProc(mnt, target proc.Val) {
	b := &r.b
	b.MoveMount(mnt, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	b.CloseFD(target)
	for _, name := range procEntries() {
		clone := b.OpenTree(mnt, name, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
		b.MountSetattr(clone, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | procAttrs})
		r.attach(clone, b.Openat(mnt, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0))
	}
	b.CloseFD(mnt)
}

// zygoteProc returns, for a spec whose program shares the pid namespace of
// proc's tree zygote (SharePID, not Direct), a proc file system of that
// namespace, detached, if the spec has a Proc mount or binds /proc or a
// directory above it (as bubblewrap's callers do); nil otherwise. The
// caller's /proc, which the first process sees, is of the caller's pid
// namespace, where the program's pid is another: /proc/self would not be
// itself, and a program that looks itself or its children up in /proc
// (a nested sandbox writing its child's ID maps, say) would find other
// processes. The sandbox cannot mount a proc of the zygote's namespace
// itself (its user namespace, made at its clone, does not own it), so a
// helper forked from the zygote in a mount namespace of its own, and the
// zygote's user namespace, mounts it; recordRoot puts it on the first
// process's /proc. The caller closes the file. (Not for a first process
// forked from the caller, fromCaller: it shares the caller's namespace.)
func zygoteProc(ctx context.Context, spec *Spec) (*os.File, error) {
	if !spec.SharePID || spec.Direct || !seesProc(spec) {
		return nil, nil
	}
	h, err := proc.Fork(ctx, &proc.Options{From: proc.InTree, NewMount: true})
	if err != nil {
		return nil, fmt.Errorf("sandbox: mounting a proc of the shared pid namespace: %w", err)
	}
	defer h.Close()
	var r recorder
	from := r.begin()
	v := r.b.TakeFile(r.newMount("proc", procAttrs))
	r.end(from, "mounting a proc of the shared pid namespace")
	res, err := h.Run(ctx, &r.b)
	if err != nil {
		res.Close()
		return nil, r.explain(err)
	}
	return res.File(v), nil
}

// seesProc reports whether a sandbox built from spec shows a proc: it has
// a Proc mount, or binds /proc, a path in it, or a directory above it.
func seesProc(spec *Spec) bool {
	for _, m := range spec.Mounts {
		if m.Kind == Proc {
			return true
		}
		if m.Kind.isBind() && m.FD == nil {
			src := filepath.Clean(m.Source)
			if src == "/" || src == "/proc" || strings.HasPrefix(src, "/proc/") {
				return true
			}
		}
	}
	return false
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
	f := b.Openat(mnt, "data", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, filemode.Unix(perms))
	writeAll(b, f, m.Data)
	b.CloseFD(f)
	clone := b.OpenTree(mnt, "data", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	b.CloseFD(mnt)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if m.Kind == ROBindData {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	b.MountSetattr(clone, "", unix.AT_EMPTY_PATH, attr)
	r.attach(clone, target)
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
