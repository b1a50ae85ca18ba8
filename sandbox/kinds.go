package sandbox

// Mount kinds, each described in one place: the table kinds says, for
// each, what a Mount of it takes (checked by checkSpec and ParseProfile),
// how the root is made with it (record), what Landlock grants its
// destination (landlock), how a LandlockOnly sandbox grants it or why it
// cannot (landlockOnly), and how a Template's sandboxes get it (renew).
// Its name is the kind's in profiles and bubblewrap's option without its
// dashes. A kind added to MountKind without an entry here, or with one
// left out, fails TestMountKindTable.

import (
	"errors"
	"os"
	"path/filepath"
	"sync"

	"github.com/caplin-dev/caplin/internal/filemode"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// sourceUse is what a kind makes of Mount.Source.
type sourceUse int

const (
	_             sourceUse = iota // unset: a kind left out of the table
	srcNone                        // none: it takes no Source
	srcHostPath                    // a bind's host path (or FD in its place); Try applies
	srcLinkTarget                  // a symbolic link's target, not looked at
	srcUpperDir                    // an overlay's upper directory, a host path (Lower and Work go with it)
)

// templateUse is how the sandboxes of a Template get a mount.
type templateUse int

const (
	_           templateUse = iota // unset: a kind left out of the table
	tmplShared                     // all share the template's, as it built it
	tmplRenewed                    // each makes it afresh (renew), unless a later mount is inside it
	tmplRefused                    // NewTemplate refuses it: sharing it would let sandboxes see each other's writes, and renewing it needs the caller's files
)

// kindInfo is what the package knows of one mount kind.
type kindInfo struct {
	name   string
	source sourceUse
	// takesPerms, takesSize and takesData say which of Mount.Perms, Size
	// and Data the kind uses; needsPerms that Perms is required.
	takesPerms, takesSize, takesData, needsPerms bool
	// takesLower says the kind is an overlay, of Mount.Lower's layers.
	takesLower bool
	// takesServer says the kind is served by Mount.Server (FUSE): no
	// profile or command line of bubblewrap's can give one.
	takesServer bool

	// prepare, for kinds that take something of the caller's file system,
	// records taking it (a clone of the source) while the first process
	// still sees that file system; nil for the others.
	prepare func(r *recorder, i int, m *Mount, c *prepared) error
	// record records the steps that make the mount in the new root.
	record func(r *recorder, m *Mount, c *prepared)
	// landlock returns the grants of the mount in the Landlock layer of a
	// sandbox with namespaces; none: the root's rule covers it.
	landlock func(i int, m *Mount) ([]PathGrant, error)
	// landlockOnly returns how a LandlockOnly sandbox honours the mount
	// on the host's own paths, or what it cannot do there.
	landlockOnly func(i int, m *Mount) (hostMount, error)
	// template is how a Template's sandboxes get the mount, and renew,
	// for tmplRenewed, records making it afresh in one of them.
	template templateUse
	renew    func(r *recorder, spec *Spec, m *Mount)
	// refused, for tmplRefused, says why NewTemplate refuses the kind.
	refused string
}

// hostMount is how a LandlockOnly sandbox, which has no mount namespace,
// honours one mount on the host's own paths.
type hostMount struct {
	// grants are Landlock rules on the host's paths.
	grants []PathGrant
	// hostAccess, when not 0, says that what the program finds at the
	// mount's destination is the host's own file or tree there, with
	// that access (a bind at its source's path, proc at /proc); 0 that a
	// namespaced sandbox would show something else there (a tmpfs, a
	// minimal /dev), which no grant of the host's tree may then reveal.
	hostAccess uint64
	// private: a directory made for the sandbox stands in for the mount
	// (a tmpfs at /tmp), granted read-write; the destination itself is
	// not granted.
	private bool
	// skip: nothing is there (a Try bind whose source is missing).
	skip bool
	// note says briefly what differs from a sandbox with namespaces, for
	// the one line caplin run prints when it falls back.
	note string
	// cannot says what cannot be done without namespaces, and why.
	cannot string
}

// prepared is what prepare took for one mount, for record.
type prepared struct {
	skip      bool     // a Try bind whose source is not there
	isDir     bool     // the bind's source is a directory
	clone     proc.Val // the bind's clone of its source
	devClones []proc.Val
	// hostProc is set for a Proc mount that attaches clone, a proc file
	// system that exists already, rather than mounting one (see
	// prepareProc).
	hostProc bool
}

// kinds describes each mount kind: kindTable's, filled in on first use
// (kindsTable), rather than by its declaration, because its functions use
// describe, which reads it, nor at init, which every caplin command would
// pay for; nothing changes it afterwards.
var (
	kinds     [kindCount]kindInfo
	kindsOnce sync.Once
)

// kindsTable returns kinds, filled in.
func kindsTable() *[kindCount]kindInfo {
	kindsOnce.Do(func() { kinds = kindTable() })
	return &kinds
}

// kindTable is the table of mount kinds.
func kindTable() [kindCount]kindInfo {
	return [kindCount]kindInfo{
		ROBind:     bindKind("ro-bind", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_RDONLY, AccessRead),
		Bind:       bindKind("bind", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV, AccessWrite),
		DevBind:    bindKind("dev-bind", unix.MOUNT_ATTR_NOSUID, AccessWrite),
		Tmpfs:      {name: "tmpfs", source: srcNone, takesPerms: true, takesSize: true, record: recordTmpfs, landlock: grant(AccessWrite, PathDir), landlockOnly: tmpfsStandIn, template: tmplRenewed, renew: renewTmpfs},
		Proc:       {name: "proc", source: srcNone, prepare: prepareProc, record: recordProc, landlock: grant(AccessRead, PathDir), landlockOnly: hostProc, template: tmplRenewed, renew: renewProc},
		Dev:        {name: "dev", source: srcNone, prepare: prepareDev, record: recordDev, landlock: devGrants, landlockOnly: devHostGrants, template: tmplRenewed, renew: renewDev},
		Mqueue:     {name: "mqueue", source: srcNone, record: recordMqueue, landlock: grant(AccessWrite, PathDir), landlockOnly: needsMountNS, template: tmplRenewed, renew: renewMqueue},
		Symlink:    {name: "symlink", source: srcLinkTarget, record: recordSymlink, landlock: rootGrant, landlockOnly: needsMountNS, template: tmplShared},
		Dir:        {name: "dir", source: srcNone, takesPerms: true, record: recordDir, landlock: rootGrant, landlockOnly: needsMountNS, template: tmplShared},
		File:       {name: "file", source: srcNone, takesPerms: true, takesData: true, record: recordFile, landlock: rootGrant, landlockOnly: needsMountNS, template: tmplShared},
		BindData:   {name: "bind-data", source: srcNone, takesPerms: true, takesData: true, record: recordBindData, landlock: grant(AccessWrite, PathFile), landlockOnly: needsMountNS, template: tmplRenewed, renew: renewBindData},
		ROBindData: {name: "ro-bind-data", source: srcNone, takesPerms: true, takesData: true, record: recordBindData, landlock: grant(AccessRead, PathFile), landlockOnly: needsMountNS, template: tmplShared},
		// Landlock rules only add up: a read-only part of a writable grant
		// cannot be expressed, so the mounts alone enforce RemountRO.
		RemountRO: {name: "remount-ro", source: srcNone, record: recordRemountRO, landlock: rootGrant, landlockOnly: needsMountNS, template: tmplShared},
		Chmod:     {name: "chmod", source: srcNone, takesPerms: true, needsPerms: true, record: recordChmod, landlock: rootGrant, landlockOnly: needsMountNS, template: tmplShared},
		// The overlays are made whole (layers looked up, the file system
		// created) while the caller's files are seen, and attached later
		// like a bind's clone. One writing to the host's upper directory
		// is shared by a template's sandboxes as a writable bind is; one
		// writing to a tmpfs of its own cannot be.
		Overlay: {name: "overlay", source: srcUpperDir, takesLower: true, prepare: prepareOverlay, record: recordOverlay, landlock: grant(AccessWrite, PathDir), landlockOnly: needsMountNS, template: tmplShared},
		TmpOverlay: {name: "tmp-overlay", source: srcNone, takesLower: true, prepare: prepareOverlay, record: recordOverlay, landlock: grant(AccessWrite, PathDir), landlockOnly: needsMountNS, template: tmplRefused,
			refused: "its sandboxes would share its writes, and cannot each make it afresh"},
		ROOverlay: {name: "ro-overlay", source: srcNone, takesLower: true, prepare: prepareOverlay, record: recordOverlay, landlock: grant(AccessRead, PathDir), landlockOnly: needsMountNS, template: tmplShared},
		// A served directory: its file system is made, in the sandbox's
		// user namespace, before the root (openFUSE), and attached like a
		// bind's clone; Landlock grants it as a writable bind, the server
		// enforcing its own rights. One server serves one connection: a
		// template's sandboxes can neither share it nor each get one.
		FUSE: {name: "fuse", source: srcNone, takesServer: true, prepare: prepareFUSE, record: recordFUSE, landlock: grant(AccessWrite, PathDir), landlockOnly: needsMountNS, template: tmplRefused,
			refused: "a FUSE mount's server serves one sandbox"},
	}
}

// kindOf returns the table's entry of k, which checkSpec has found to be
// a kind.
func kindOf(k MountKind) *kindInfo { return &kindsTable()[k] }

// kindsWith returns the names of the kinds for which has holds.
func kindsWith(has func(*kindInfo) bool) []string {
	var names []string
	t := kindsTable()
	for k := range kindCount {
		if has(&t[k]) {
			names = append(names, k.String())
		}
	}
	return names
}

// permsOr returns m.Perms, or def if it has none.
func (m *Mount) permsOr(def os.FileMode) os.FileMode {
	if m.Perms != nil {
		return *m.Perms
	}
	return def
}

// bindKind is the entry of a bind of a host path whose mount gets the
// attributes attrs and whose Landlock rule access.
func bindKind(name string, attrs uint64, access uint64) kindInfo {
	return kindInfo{
		name:    name,
		source:  srcHostPath,
		prepare: prepareBind,
		record: func(r *recorder, m *Mount, c *prepared) {
			var target proc.Val
			if c.isDir {
				target = r.mkdirs(m.Dest, 0o755)
			} else {
				target = r.touch(m.Dest)
			}
			// The attributes go on the clone before it is attached, so
			// it is never attached without them.
			r.b.MountSetattr(c.clone, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: attrs})
			r.attach(c.clone, target)
			r.mounted(m.Dest)
		},
		landlock: func(i int, m *Mount) ([]PathGrant, error) {
			st, err := statSource(m)
			if err != nil {
				if m.Try {
					return nil, nil
				}
				return nil, mountError(i, m, err)
			}
			g := PathGrant{Path: filepath.Clean(m.Dest), Access: access, Kind: PathDir}
			if !st.IsDir() {
				g.Kind = PathFile
			}
			return []PathGrant{g}, nil
		},
		landlockOnly: func(i int, m *Mount) (hostMount, error) {
			dest := filepath.Clean(m.Dest)
			if m.FD != nil {
				return hostMount{cannot: describe(i, m) + ": a bind of a descriptor needs a mount namespace"}, nil
			}
			if filepath.Clean(m.Source) != dest {
				return hostMount{cannot: describe(i, m) + ": a bind elsewhere than its source needs a mount namespace"}, nil
			}
			// Landlock's read and write rights open device nodes too:
			// only the mount's nodev keeps them shut. Those in /dev are
			// the ones that matter (a camera, a sound card, a disk);
			// trees elsewhere are not searched for more.
			if attrs&unix.MOUNT_ATTR_NODEV != 0 && (within("/dev", dest) || within(dest, "/dev")) {
				return hostMount{cannot: describe(i, m) + ": would open the host's devices in /dev (keeping them shut needs a mount namespace; --dev-bind grants them)"}, nil
			}
			if _, err := os.Stat(m.Source); err != nil {
				if m.Try && errors.Is(err, os.ErrNotExist) {
					return hostMount{skip: true}, nil
				}
				return hostMount{}, mountError(i, m, err)
			}
			return hostMount{grants: []PathGrant{{Path: dest, Access: access}}, hostAccess: access}, nil
		},
		template: tmplShared,
	}
}

// prepareBind clones a bind's source (or its FD's file) while the first
// process sees the caller's file system.
func prepareBind(r *recorder, i int, m *Mount, c *prepared) error {
	st, err := statSource(m)
	if err != nil && m.Try && errors.Is(err, os.ErrNotExist) {
		c.skip = true
		return nil
	}
	if err != nil {
		return mountError(i, m, err)
	}
	c.isDir = st.IsDir()
	if m.FD != nil {
		c.clone, err = r.bindFD(i, m)
		return err
	}
	c.clone = r.b.OpenTree(proc.AtFDCWD(), m.Source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	return nil
}

// grant returns a landlock function granting access to the destination,
// a directory or a file.
func grant(access uint64, kind PathKind) func(int, *Mount) ([]PathGrant, error) {
	return func(_ int, m *Mount) ([]PathGrant, error) {
		return []PathGrant{{Path: filepath.Clean(m.Dest), Access: access, Kind: kind}}, nil
	}
}

// rootGrant is the landlock function of a kind that makes nothing the
// root's rule does not cover: it is in the root, with the root's access.
func rootGrant(int, *Mount) ([]PathGrant, error) { return nil, nil }

// needsMountNS is the landlockOnly function of a kind that makes
// something, which takes a mount namespace.
func needsMountNS(i int, m *Mount) (hostMount, error) {
	return hostMount{cannot: describe(i, m) + ": needs a mount namespace"}, nil
}

// hostProc is the landlockOnly function of Proc. Without a pid namespace
// the program's procfs would be the host's anyway, so at /proc (and only
// there: elsewhere the host has none) it is granted read-only. What
// Landlock leaves visible in it: the host's processes, their command
// lines and status; their fds, memory, environment, root and cwd (what
// ptrace's access check guards) only of processes in the same Landlock
// domain, since Landlock refuses that check for processes outside it
// (whatever Yama's ptrace_scope), and signals to those outside are
// refused by its scope (ABI 6, without which the sandbox is refused).
// As the program shares the host's network and mount namespaces, /proc/net
// shows the host's connections and Unix sockets, and mountinfo its
// mounts, read-only. Nothing in it is writable, /proc/self's own files
// included.
func hostProc(i int, m *Mount) (hostMount, error) {
	if filepath.Clean(m.Dest) != "/proc" {
		return hostMount{cannot: describe(i, m) + ": a proc elsewhere than /proc needs a mount namespace"}, nil
	}
	return hostMount{
		grants:     []PathGrant{{Path: "/proc", Access: AccessRead, Kind: PathDir}},
		hostAccess: AccessRead,
		note:       "/proc is the host's read-only",
	}, nil
}

// tmpfsStandIn is the landlockOnly function of Tmpfs. A tmpfs at /tmp
// becomes a directory made for the sandbox (mode 0700, in the caller's
// temporary directory), granted read-write and named by TMPDIR, and
// removed with everything in it when the sandbox is closed or killed; the
// host's /tmp is not granted. Elsewhere nothing would lead the program to
// such a directory, and a size limit needs a tmpfs: those are refused.
func tmpfsStandIn(i int, m *Mount) (hostMount, error) {
	switch {
	case filepath.Clean(m.Dest) != "/tmp":
		return hostMount{cannot: describe(i, m) + ": needs a mount namespace (only a tmpfs at /tmp has a stand-in, $TMPDIR)"}, nil
	case m.Size != 0:
		return hostMount{cannot: describe(i, m) + ": a size limit needs a tmpfs, which needs a mount namespace"}, nil
	}
	return hostMount{private: true, note: "/tmp is a private directory ($TMPDIR)"}, nil
}

// devAccess is what Landlock grants a Dev mount's nodes.
const devAccess = AccessRead | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV

// devGrants grants the minimal /dev, and its shm, a tmpfs for the
// program's own use.
func devGrants(_ int, m *Mount) ([]PathGrant, error) {
	dest := filepath.Clean(m.Dest)
	return []PathGrant{
		{Path: dest, Access: devAccess, Kind: PathDir},
		{Path: filepath.Join(dest, "shm"), Access: AccessWrite, Kind: PathDir},
	}, nil
}

// devHostGrants grants, in a LandlockOnly sandbox, the host's device
// nodes that Dev would bind, one by one. What else a Dev mount makes
// (its /dev/shm, the links) is not there: the rest of the host's /dev is
// not granted. Only at /dev: elsewhere, the host's files of those names
// are not device nodes.
func devHostGrants(i int, m *Mount) (hostMount, error) {
	if filepath.Clean(m.Dest) != "/dev" {
		return hostMount{cannot: describe(i, m) + ": a dev elsewhere than /dev needs a mount namespace"}, nil
	}
	var gs []PathGrant
	for _, d := range devNodes {
		p := filepath.Join(filepath.Clean(m.Dest), d)
		if _, err := os.Stat(p); err == nil {
			gs = append(gs, PathGrant{Path: p, Access: devAccess, Kind: PathFile})
		}
	}
	return hostMount{grants: gs, note: "/dev has only its basic device nodes"}, nil
}

// prepareDev clones the host's device nodes a Dev mount binds.
func prepareDev(r *recorder, _ int, _ *Mount, c *prepared) error {
	for _, d := range devNodes {
		c.devClones = append(c.devClones, r.b.OpenTree(proc.AtFDCWD(), "/dev/"+d, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC))
	}
	return nil
}

func recordTmpfs(r *recorder, m *Mount, _ *prepared) {
	r.attach(r.newMount("tmpfs", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV, tmpfsOptions(m.permsOr(0o755), m.Size)...), r.mkdirs(m.Dest, 0o755))
	r.mounted(m.Dest)
}

// prepareProc takes, for a sandbox that shares the pid namespace of the
// processes proc builds (Spec.SharePID), the proc file system of that
// namespace, which the sandbox's user namespace does not own and so
// cannot mount a proc of: bubblewrap binds the caller's /proc then, as the
// program shares the caller's pid namespace. So does this, with the first
// process's /proc, which is the caller's for a Direct sandbox, and one of
// proc's tree zygote's pid namespace for the others (zygoteProc); mounts
// beneath it come along.
func prepareProc(r *recorder, _ int, _ *Mount, c *prepared) error {
	if r.sharePID {
		c.clone, c.hostProc = r.b.OpenTree(proc.AtFDCWD(), "/proc", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE), true
		r.b.MountSetattr(c.clone, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: procAttrs})
	}
	return nil
}

func recordProc(r *recorder, m *Mount, c *prepared) {
	if c.hostProc {
		r.coverProc(c.clone, r.mkdirs(m.Dest, 0o755))
	} else {
		r.mountProc(r.mkdirs(m.Dest, 0o755))
	}
	r.mounted(m.Dest)
}

func recordMqueue(r *recorder, m *Mount, _ *prepared) {
	r.attach(r.newMount("mqueue", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC), r.mkdirs(m.Dest, 0o755))
	r.mounted(m.Dest)
}

func recordDev(r *recorder, m *Mount, c *prepared) {
	b := &r.b
	target := r.mkdirs(m.Dest, 0o755)
	dev := r.newMount("tmpfs", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC, "mode", "0755")
	b.MoveMount(dev, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	b.CloseFD(target)
	// The rest is made in the new tmpfs, through its fd: nothing else can
	// have put anything there.
	for k, d := range devNodes {
		mknodat(b, dev, d, unix.S_IFREG|0o666)
		r.attach(c.devClones[k], b.Openat(dev, d, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0))
	}
	b.Mkdirat(dev, "shm", 0o1777)
	r.attach(r.newMount("tmpfs", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV, "mode", "1777"),
		b.Openat(dev, "shm", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0))
	b.Mkdirat(dev, "pts", 0o755)
	r.mountDevpts(b.Openat(dev, "pts", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0))
	symlinkat(b, "pts/ptmx", dev, "ptmx")
	symlinkat(b, "/proc/self/fd", dev, "fd")
	symlinkat(b, "/proc/self/fd/0", dev, "stdin")
	symlinkat(b, "/proc/self/fd/1", dev, "stdout")
	symlinkat(b, "/proc/self/fd/2", dev, "stderr")
	symlinkat(b, "/proc/kcore", dev, "core")
	b.CloseFD(dev)
	r.mounted(m.Dest)
}

// recordSymlink makes the link where its directory resolves inside the
// new root; its target is the program's business, and is not followed. A
// link to the same target there already is kept, as bubblewrap keeps it;
// anything else there fails the build (a LinkExistsError).
func recordSymlink(r *recorder, m *Mount, _ *prepared) {
	b := &r.b
	dir := r.mkdirs(filepath.Dir(m.Dest), r.parentMode)
	name := filepath.Base(m.Dest)
	b.Tolerate(symlinkat(b, m.Source, dir, name), unix.EEXIST)
	// What is there now: the link just made, or what was there. One more
	// byte than Source tells a longer target from it; a target longer
	// than the buffer is reported cut short.
	buf := make([]byte, max(len(m.Source)+1, 256))
	n := b.Tolerate(b.Syscall(unix.SYS_READLINKAT, dir, b.CString(name), b.Out(buf), proc.Int(len(buf))), unix.EINVAL)
	b.CloseFD(dir)
	i, at, dest, src := r.atIndex, r.at, m.Dest, m.Source
	r.checks = append(r.checks, func(res *proc.Results) error {
		got := res.Int(n)
		switch {
		case got < 0: // EINVAL: not a link
			return mountError(i, at, &LinkExistsError{Dest: dest, Source: src, NotLink: true})
		case got >= len(buf):
			return mountError(i, at, &LinkExistsError{Dest: dest, Source: src, Existing: string(buf) + "..."})
		case string(buf[:got]) != src:
			return mountError(i, at, &LinkExistsError{Dest: dest, Source: src, Existing: string(buf[:got])})
		}
		return nil
	})
}

// recordDir makes the directory of mode Perms (made so: set-user-ID and
// set-group-ID bits are left out, as mkdir leaves them), or leaves the one
// there as it is, as bubblewrap does.
func recordDir(r *recorder, m *Mount, _ *prepared) {
	r.b.CloseFD(r.mkdirs(m.Dest, filemode.Unix(m.permsOr(0o755))))
}

// recordFile makes the file with O_NOFOLLOW, so that a link at the
// destination is refused (ELOOP), not followed, and O_NONBLOCK, so that a
// FIFO there fails (ENXIO) rather than blocking the build.
func recordFile(r *recorder, m *Mount, _ *prepared) {
	b := &r.b
	dir := r.mkdirs(filepath.Dir(m.Dest), r.parentMode)
	f := b.Openat(dir, filepath.Base(m.Dest), unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, filemode.Unix(m.permsOr(0o666)))
	b.CloseFD(dir)
	writeAll(b, f, m.Data)
	if m.Perms != nil { // past the umask
		b.Syscall(unix.SYS_FCHMOD, f, proc.Uint(uint64(filemode.Unix(*m.Perms))))
	}
	b.CloseFD(f)
}

func recordBindData(r *recorder, m *Mount, _ *prepared) {
	recordDataBind(r, m, r.touch(m.Dest))
	r.mounted(m.Dest)
}

func recordRemountRO(r *recorder, m *Mount, _ *prepared) {
	target := r.open(m.Dest, 0)
	r.b.MountSetattr(target, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
	r.b.CloseFD(target)
}

func recordChmod(r *recorder, m *Mount, _ *prepared) {
	target := r.open(m.Dest, 0)
	r.chmod(m.Dest, target, filemode.Unix(*m.Perms))
	r.b.CloseFD(target)
}

// The renew functions make a mount afresh in a template's sandbox, whose
// root is the template's already: the destination is there, resolved
// inside that root.

func renewTmpfs(r *recorder, _ *Spec, m *Mount) {
	r.attach(r.newMount("tmpfs", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV, tmpfsOptions(m.permsOr(0o755), m.Size)...), r.open(m.Dest, unix.O_DIRECTORY))
}

// renewProc mounts a proc of the sandbox's own pid namespace, covered as
// Build's is. (A template's sandboxes never share a pid namespace:
// checkShared refuses SharePID, so there is no caller's proc to bind.)
func renewProc(r *recorder, _ *Spec, m *Mount) {
	r.mountProc(r.open(m.Dest, unix.O_DIRECTORY))
}

// renewMqueue mounts an mqueue of the sandbox's own IPC namespace, when
// it has one.
func renewMqueue(r *recorder, spec *Spec, m *Mount) {
	if !spec.ShareIPC {
		r.attach(r.newMount("mqueue", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC), r.open(m.Dest, unix.O_DIRECTORY))
	}
}

// renewDev renews /dev/shm and /dev/pts, so that no two sandboxes share
// shared memory or pseudo-terminals; the device nodes are the template's
// binds.
func renewDev(r *recorder, _ *Spec, m *Mount) {
	r.attach(r.newMount("tmpfs", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV, "mode", "1777"), r.open(filepath.Join(m.Dest, "shm"), unix.O_DIRECTORY))
	r.mountDevpts(r.open(filepath.Join(m.Dest, "pts"), unix.O_DIRECTORY))
}

// mountDevpts records mounting a new devpts instance on target, an fd,
// with bubblewrap's options: its ptmx usable by all (/dev/ptmx links to
// it), terminals made mode 0620. It is the sandbox's own, apart from the
// host's /dev/pts: the program sees and opens only the terminals made in
// it. (bubblewrap's "newinstance" is what every devpts mount is since
// Linux 4.7.)
func (r *recorder) mountDevpts(target proc.Val) {
	r.attach(r.newMount("devpts", unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC, "ptmxmode", "0666", "mode", "0620"), target)
}

// renewBindData binds the data afresh, for a writable data bind that one
// sandbox could change for the next.
func renewBindData(r *recorder, _ *Spec, m *Mount) {
	recordDataBind(r, m, r.open(m.Dest, 0))
}
