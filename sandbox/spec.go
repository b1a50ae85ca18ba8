package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// MountKind is what a Mount puts in the sandbox's file system.
type MountKind int

const (
	// ROBind binds the host directory or file Source at Dest, read-only.
	ROBind MountKind = iota
	// Bind binds Source at Dest, writable.
	Bind
	// Tmpfs puts an empty tmpfs at Dest.
	Tmpfs
	// Proc puts a proc file system of the sandbox's pid namespace at Dest.
	Proc
	// Dev puts a minimal /dev at Dest: null, zero, full, random, urandom,
	// tty bound from the host, and a private tmpfs for shm.
	Dev
)

// Mount is one entry of a sandbox's file system, applied in order.
type Mount struct {
	Kind   MountKind
	Source string // host path, for binds
	Dest   string // absolute path inside the sandbox
}

// Net is a sandbox's network.
type Net int

const (
	// NetNone: a network namespace of its own, with no interface up.
	NetNone Net = iota
	// NetHost: the caller's network namespace.
	NetHost
)

// Spec says what a sandboxed process gets. The zero Spec is the strictest:
// an empty root (no files at all), no network, uid and gid 0 inside mapped
// to the caller, a new pid, ipc and uts namespace, no environment, the
// default seccomp filter, and no_new_privs.
type Spec struct {
	Mounts []Mount
	Net    Net
	// UID and GID inside, mapped to the caller's effective IDs outside.
	UID, GID int
	// Dir is the working directory inside. Default "/".
	Dir string
	// Hostname inside. Default "caplin".
	Hostname string
	// Seccomp is the filter policy (the zero value is the strictest).
	Seccomp FilterPolicy
	// BestEffort lets Build go on where the kernel cannot enforce all of
	// the spec (an old Landlock ABI, or none), logging one warning line
	// (log/slog) for each thing it dropped; by default that is an error.
	BestEffort bool
	// KeepCaps keeps the capabilities the program would have in its user
	// namespace (all of them, as uid 0 there). By default the bounding set
	// is emptied, so the program has none, even as uid 0 inside.
	KeepCaps bool
}

// lastCap returns the highest capability the running kernel knows.
func lastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return n
		}
	}
	return unix.CAP_LAST_CAP
}

// Build makes a sandboxed child from spec and returns its handle, ready
// for Exec (argv[0] is looked up inside the sandbox's file system). Every
// step runs in the child before it execs; a failing step kills the child
// and the error names the mount or call that failed.
//
// The root is assembled with the mount API: the bind sources are cloned
// (open_tree) first, while the child still sees the caller's file system;
// then a tmpfs becomes the new root, the clones are attached in it, read-
// only where asked, proc and /dev are mounted, and pivot_root leaves the
// caller's file system behind (detached, so nothing else of it is
// reachable, through ".." or otherwise).
func Build(ctx context.Context, spec *Spec) (_ *proc.Handle, err error) {
	uid, gid := os.Geteuid(), os.Getegid()
	h, err := proc.Fork(ctx, &proc.Options{
		NewUser: true, NewMount: true, NewPID: true, NewIPC: true, NewUTS: true,
		NewNet: spec.Net == NetNone,
		UIDMap: []proc.IDMap{{Inside: spec.UID, Outside: uid, Size: 1}},
		GIDMap: []proc.IDMap{{Inside: spec.GID, Outside: gid, Size: 1}},
	})
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	for _, m := range spec.Mounts {
		if !filepath.IsAbs(m.Dest) || strings.Contains(m.Dest, "\x00") {
			return nil, fmt.Errorf("sandbox: mount destination %q: not an absolute path", m.Dest)
		}
	}
	// Clone the bind sources while the child sees the caller's files.
	var b proc.Batch
	b.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
	clones := make([]proc.Val, len(spec.Mounts))
	for i, m := range spec.Mounts {
		if m.Kind == ROBind || m.Kind == Bind {
			clones[i] = b.OpenTree(proc.AtFDCWD, m.Source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
		}
	}
	devs := []string{"null", "zero", "full", "random", "urandom", "tty"}
	devClones := map[int][]proc.Val{}
	for i, m := range spec.Mounts {
		if m.Kind == Dev {
			for _, d := range devs {
				devClones[i] = append(devClones[i], b.OpenTree(proc.AtFDCWD, "/dev/"+d, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC))
			}
		}
	}
	// The new root: a tmpfs, attached over /tmp in the child's private
	// mount namespace while it is built.
	const root = "/tmp"
	fs := b.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	b.Fsconfig(fs, unix.FSCONFIG_SET_STRING, "mode", "0755", proc.Int(0))
	b.Fsconfig(fs, unix.FSCONFIG_CMD_CREATE, "", "", proc.Int(0))
	rootMnt := b.Fsmount(fs, unix.FSMOUNT_CLOEXEC, 0)
	b.MoveMount(rootMnt, "", proc.AtFDCWD, root, unix.MOVE_MOUNT_F_EMPTY_PATH)
	b.Close(fs)
	b.Close(rootMnt)
	made := map[string]bool{}
	mkdirs := func(dir string) {
		p := root
		for _, part := range strings.Split(strings.Trim(dir, "/"), "/") {
			if part == "" {
				continue
			}
			p += "/" + part
			if !made[p] {
				b.Mkdirat(proc.AtFDCWD, p, 0o755)
				made[p] = true
			}
		}
	}
	for i, m := range spec.Mounts {
		dest := root + filepath.Clean(m.Dest)
		switch m.Kind {
		case ROBind, Bind:
			st, err := os.Stat(m.Source)
			if err != nil {
				return nil, fmt.Errorf("sandbox: bind %s: %w", m.Source, err)
			}
			if st.IsDir() {
				mkdirs(m.Dest)
			} else {
				mkdirs(filepath.Dir(m.Dest))
				f := b.Openat(proc.AtFDCWD, dest, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
				b.Close(f)
			}
			b.MoveMount(clones[i], "", proc.AtFDCWD, dest, unix.MOVE_MOUNT_F_EMPTY_PATH)
			attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
			if m.Kind == ROBind {
				attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
			}
			b.MountSetattr(proc.AtFDCWD, dest, unix.AT_RECURSIVE, attr)
			b.Close(clones[i])
		case Tmpfs:
			mkdirs(m.Dest)
			b.Mount("tmpfs", dest, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777")
		case Proc:
			mkdirs(m.Dest)
			b.Mount("proc", dest, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		case Dev:
			mkdirs(m.Dest)
			b.Mount("tmpfs", dest, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755")
			for k, d := range devs {
				node := dest + "/" + d
				f := b.Openat(proc.AtFDCWD, node, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o666)
				b.Close(f)
				b.MoveMount(devClones[i][k], "", proc.AtFDCWD, node, unix.MOVE_MOUNT_F_EMPTY_PATH)
				b.Close(devClones[i][k])
			}
			b.Mkdirat(proc.AtFDCWD, dest+"/shm", 0o1777)
			b.Mount("tmpfs", dest+"/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777")
			b.Symlinkat("/proc/self/fd", dest+"/fd")
			b.Symlinkat("/proc/self/fd/0", dest+"/stdin")
			b.Symlinkat("/proc/self/fd/1", dest+"/stdout")
			b.Symlinkat("/proc/self/fd/2", dest+"/stderr")
		default:
			return nil, fmt.Errorf("sandbox: mount %d: unknown kind %d", i, m.Kind)
		}
	}
	// Leave the caller's file system: pivot into the new root and detach
	// the old one.
	b.Mkdirat(proc.AtFDCWD, root+"/.oldroot", 0o700)
	b.PivotRoot(root, root+"/.oldroot")
	b.Chdir("/")
	b.Umount2("/.oldroot", unix.MNT_DETACH)
	b.Syscall(unix.SYS_UNLINKAT, proc.AtFDCWD, b.CString("/.oldroot"), proc.Int(unix.AT_REMOVEDIR))
	// The new root itself is read-only unless something was bound on it.
	b.MountSetattr(proc.AtFDCWD, "/", 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV})
	host := spec.Hostname
	if host == "" {
		host = "caplin"
	}
	b.Syscall(unix.SYS_SETHOSTNAME, b.CString(host), proc.Int(len(host)))
	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	b.Chdir(dir)
	b.Setsid()
	if _, err := h.Run(ctx, &b); err != nil {
		var be *proc.BatchError
		if errors.As(err, &be) {
			return nil, fmt.Errorf("sandbox: building the root: %w", err)
		}
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	filter, err := Filter(spec.Seccomp)
	if err != nil {
		return nil, err
	}
	var s proc.Batch
	// Landlock, a second layer with the same grants as the mounts, so a
	// bug in one does not open what the other closes.
	ll := LandlockPolicy{BestEffort: spec.BestEffort, Paths: []PathGrant{{Path: "/", Access: AccessRead, Kind: PathDir}}}
	for _, m := range spec.Mounts {
		g := PathGrant{Path: filepath.Clean(m.Dest), Kind: PathDir}
		switch m.Kind {
		case ROBind, Proc:
			g.Access = AccessRead
		case Bind, Tmpfs:
			g.Access = AccessWrite
		case Dev:
			g.Access = AccessRead | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
		}
		if m.Kind == ROBind || m.Kind == Bind {
			if st, err := os.Stat(m.Source); err == nil && !st.IsDir() {
				g.Kind = PathFile
			}
		}
		ll.Paths = append(ll.Paths, g)
		if m.Kind == Dev {
			// Its shm is a tmpfs for the program's own use.
			ll.Paths = append(ll.Paths, PathGrant{Path: filepath.Join(g.Path, "shm"), Access: AccessWrite, Kind: PathDir})
		}
	}
	abi, err := LandlockABI()
	switch {
	case err != nil && !spec.BestEffort:
		return nil, fmt.Errorf("%w: %v", ErrLandlockUnsupported, err)
	case err != nil:
		slog.Warn("sandbox: best effort: dropped Landlock", "reason", err.Error())
	default:
		dropped, err := ll.Record(&s, abi)
		if err != nil {
			return nil, err
		}
		for _, d := range dropped {
			slog.Warn("sandbox: best effort: dropped", "what", d)
		}
	}
	if !spec.KeepCaps {
		// Empty the bounding set: exec then grants no capability, whatever
		// the uid. Dropping past the kernel's last capability fails with
		// EINVAL, so the kernel's own count is used.
		last := lastCap()
		for c := 0; c <= last; c++ {
			s.Prctl(unix.PR_CAPBSET_DROP, proc.Int(c), proc.Int(0), proc.Int(0), proc.Int(0))
		}
	}
	s.Prctl(unix.PR_SET_NO_NEW_PRIVS, proc.Int(1), proc.Int(0), proc.Int(0), proc.Int(0))
	s.SeccompSetModeFilter(0, filter)
	if _, err := h.Run(ctx, &s); err != nil {
		return nil, fmt.Errorf("sandbox: seccomp: %w", err)
	}
	return h, nil
}
