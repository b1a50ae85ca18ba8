package sandbox

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/netgrant"
	"golang.org/x/sys/unix"
)

// MountKind is what a Mount does to the sandbox's file system. The kinds
// are bubblewrap's file-system operations, applied in order like its
// command-line options.
type MountKind int

const (
	// ROBind binds the host file or directory Source at Dest, read-only
	// (recursively: mounts beneath Source come along, read-only too).
	ROBind MountKind = iota
	// Bind binds Source at Dest, writable.
	Bind
	// Tmpfs puts an empty tmpfs at Dest (mode Perms, default 0755; Size
	// bytes, default the kernel's: half of RAM).
	Tmpfs
	// Proc puts a proc file system of the sandbox's pid namespace at Dest,
	// with its machine-wide entries (sys, sysrq-trigger, irq, bus)
	// read-only, as bubblewrap does. With SharePID it is the proc of the
	// pid namespace shared, which the sandbox's user namespace cannot
	// mount: a Direct sandbox binds the caller's /proc (mounts beneath it
	// included), as bubblewrap does; one from proc's tree zygote gets a
	// proc of the zygote's pid namespace, mounted for it by a process of
	// the zygote's, which is also what a bind of the caller's /proc (or of
	// /) shows there.
	Proc
	// Dev puts a minimal /dev at Dest: null, zero, full, random, urandom,
	// tty bound from the host, a private tmpfs for shm, a devpts of the
	// sandbox's own at pts (pseudo-terminals; ptmx links to pts/ptmx), and
	// the fd, stdin, stdout and stderr links, as bubblewrap's --dev.
	Dev
	// DevBind binds Source at Dest, writable, with device nodes usable.
	DevBind
	// Mqueue puts a POSIX message queue file system at Dest.
	Mqueue
	// Symlink makes a symbolic link at Dest whose target is Source.
	Symlink
	// Dir makes the directory Dest (mode Perms, default 0755), and its
	// missing parents.
	Dir
	// File makes the file Dest holding Data (mode Perms, default 0666).
	File
	// BindData binds a file holding Data at Dest, writable (mode Perms,
	// default 0600). Unlike File, it can be put in a read-only directory.
	BindData
	// ROBindData is BindData, read-only.
	ROBindData
	// RemountRO makes the mount at Dest and those beneath it read-only.
	RemountRO
	// Chmod sets the mode of Dest to Perms.
	Chmod
	// Overlay mounts an overlay file system at Dest: the host directories
	// Lower, read-only, under Source, the host directory writes go to,
	// with Work, an empty host directory on Source's file system, as
	// overlayfs's work directory (bubblewrap's --overlay). It is made in
	// the sandbox's user namespace, with user.* extended attributes
	// (userxattr), which needs Linux 5.11.
	Overlay
	// TmpOverlay is an Overlay whose writes go to a tmpfs of its own that
	// nothing else sees, and are lost with the sandbox (--tmp-overlay).
	TmpOverlay
	// ROOverlay is an Overlay of Lower alone, read-only: at least two
	// layers, since overlayfs has nothing to do with one (--ro-overlay).
	ROOverlay
	// FUSE mounts a FUSE file system at Dest (a directory, made if
	// missing) that Server serves: a served directory (package served's
	// *Server is one). /dev/fuse is opened by the sandbox's first process,
	// inside the sandbox's user namespace (the kernel requires the
	// opener's to be the mount's), the file system is made there, and
	// Build hands the descriptor to Server.Serve before anything in the
	// sandbox can look inside the mount. It needs FUSE in user namespaces
	// (Linux 4.18) and a /dev/fuse the sandbox's host user may open: where
	// it cannot, Build fails with a *FUSEUnavailableError (in a
	// *MountError). Landlock grants the mount as a writable bind: the
	// server enforces its own rights. Profiles and bubblewrap's command
	// line cannot express it (it needs a server); a Template refuses it.
	// Sandbox.Mount adds one while the program runs.
	FUSE

	// kindCount is not a kind: it counts them, for the table (kinds.go)
	// that describes each. It stays last: a new kind goes before it.
	kindCount
)

// String returns the kind's name in profiles: bubblewrap's option without
// its dashes ("ro-bind").
func (k MountKind) String() string {
	if k >= 0 && k < kindCount {
		return kindsTable()[k].name
	}
	return "MountKind(" + strconv.Itoa(int(k)) + ")"
}

// MountKinds returns every mount kind, in order: for a caller that
// speaks the kinds' vocabulary (bubblewrap's options, "--" and String) to
// check that it covers them all.
func MountKinds() []MountKind {
	ks := make([]MountKind, kindCount)
	for k := range kindCount {
		ks[k] = k
	}
	return ks
}

// isBind reports whether a kind takes a host path as its Source.
func (k MountKind) isBind() bool { return k.source() == srcHostPath }

// source returns what the kind makes of Mount.Source; 0 for no kind.
func (k MountKind) source() sourceUse {
	if k >= 0 && k < kindCount {
		return kindsTable()[k].source
	}
	return 0
}

// Mount is one operation on a sandbox's file system. Mounts apply in order,
// so a later one can cover, hide, or make read-only what an earlier one
// put there: a Tmpfs over a directory inside a Bind hides that directory,
// which Landlock alone could not.
type Mount struct {
	Kind MountKind
	// Source is the host path of a bind, or the target of a Symlink.
	Source string
	// Dest is the absolute path inside the sandbox. It is resolved
	// inside the sandbox's root as that is built, the way the program
	// will resolve it: symbolic links on the way (left in a writable bind
	// by an earlier sandbox, say), absolute or with "..", are followed
	// within that root and never lead to the caller's files. A File
	// refuses a link as its last component; the other kinds follow it.
	Dest string
	// FD, for a bind, is its source in place of Source: a file or
	// directory the caller holds open (O_PATH will do), such as the root of
	// an export from export.Dir or directory.Client.Export. A detached
	// mount (an export's root) is moved into the sandbox, attributes and
	// all (an export's read-only stays, whatever the kind), so it can go to
	// one sandbox only, and is used up even if the build fails after; for
	// any other descriptor, the file at the path the
	// kernel gives it is bound, as Source would be, and the build fails
	// unless that is still the same file (device and inode) on a mount
	// with the same attributes, not one renamed or mounted over since.
	// The caller keeps FD and owns it.
	FD *os.File
	// Try skips a bind whose Source does not exist, instead of failing.
	Try bool
	// Perms is the mode of what Tmpfs, Dir, File, BindData and ROBindData
	// make, and what Chmod sets: permission bits, and os.ModeSticky,
	// os.ModeSetuid or os.ModeSetgid (not the octal 01000, 04000, 02000).
	// Nil: the kind's default.
	Perms *os.FileMode
	// Size limits a Tmpfs, in bytes. Zero: the kernel's default.
	Size int64
	// Data is the content of a File, BindData or ROBindData.
	Data []byte
	// Lower are the read-only layers of Overlay, TmpOverlay and
	// ROOverlay: absolute host paths of directories, from the bottom up
	// (the order of bubblewrap's --overlay-src). Any bytes but NUL may be
	// in them (":", ",", "\\" included). Nil for the other kinds.
	Lower []string
	// Work is an Overlay's work directory: an absolute host path of an
	// empty directory on the same file system as Source. Empty for the
	// other kinds.
	Work string
	// Server serves a FUSE mount, and is nil for the other kinds. The
	// caller owns it: the sandbox never closes it. The mount goes with
	// the sandbox (its mount namespace ends when its last process does),
	// and the kernel then ends the connection: reads of its descriptor
	// fail (ENODEV), which a server takes as the end of its work. Like
	// FD, a Spec's copy (Clone) shares it.
	Server FUSEServer
}

// Perms returns a pointer to m, for Mount.Perms.
func Perms(m os.FileMode) *os.FileMode { return &m }

// Net is a sandbox's network.
type Net int

const (
	// NetNone: a network namespace of its own with no interface up, so no
	// network at all, and none of the host's abstract Unix sockets.
	NetNone Net = iota
	// NetLoopback: a network namespace of its own whose loopback interface
	// is up: the program can talk to itself over 127.0.0.1 and ::1 only.
	NetLoopback
	// NetHost: the caller's network namespace (and its abstract Unix
	// sockets, which Landlock would otherwise scope). The mounts decide
	// what of /etc the program sees: ResolverMounts gives the host's
	// resolver files.
	NetHost
)

var netNames = [...]string{"none", "loopback", "host"}

// String returns "none", "loopback" or "host".
func (n Net) String() string {
	if n >= 0 && int(n) < len(netNames) {
		return netNames[n]
	}
	return "Net(" + strconv.Itoa(int(n)) + ")"
}

// Spec says what a sandboxed process gets. The zero Spec is the strictest:
// an empty, read-only root (no files at all), no fds, no network, uid and
// gid 0 inside mapped to the caller (HostIDs), new pid, ipc and uts namespaces, an
// empty environment, no capabilities, the default seccomp filter, Landlock
// with the same grants as the file system, no_new_privs, and a new session.
//
// Ownership: Build, NewTemplate and Expect take a deep copy of the Spec
// (Clone) before they check it, and use only that copy from then on, so
// the caller may change or reuse its Spec as soon as they return, and what
// it changes has no effect on what was checked or built. The files in
// Files and Mount.FD are the exception: the copy holds the same *os.File
// values, which stay the caller's to keep open while needed and to close.
type Spec struct {
	// Mounts build the file system, in order; see Mount.
	Mounts []Mount
	// WritableRoot leaves the root directory (the tmpfs the mounts are
	// attached in) writable, as bubblewrap does. By default it is
	// read-only once the mounts are made.
	WritableRoot bool

	// Files are the program's fds: Files[n] is fd n. Nothing else of the
	// caller's crosses; in particular the program has no standard input,
	// output or error unless they are here. The files are duplicated: the
	// caller keeps, and must close, its own.
	Files map[int]*os.File

	// Net is the program's network. Default NetNone.
	Net Net

	// Connect grants connections beyond the sandbox's own network, to
	// unmodified programs: every connect(2) of the program's is trapped
	// (seccomp user notification) and decided by these rules in the
	// caller (package netgrant's Broker); one a rule allows is made by
	// the caller, in its own network namespace, and the connected socket
	// installed in the program in place of its own. Refusals and the
	// rest: netgrant.Broker. It needs the sandbox's own network (NetNone
	// becomes NetLoopback; NetHost is refused) and Linux 5.9
	// (SECCOMP_IOCTL_NOTIF_ADDFD); templates do not take it yet. In a
	// LandlockOnly sandbox, which shares the host's network, the caller
	// connects the program's own socket, and the program's datagram
	// sockets are stand-ins that reach only the caller's resolver
	// (netgrant.Policy.Host, HostRulesFilter); RES_OPTIONS gets "use-vc"
	// (glibc then asks over TCP). Nil: no grants.
	Connect []netgrant.Rule

	// UID and GID inside, mapped to the caller's effective IDs outside,
	// or to HostIDs'.
	UID, GID int
	// HostIDs is who the sandbox's user and group are on the host. The
	// zero value is the caller (see HostIDs).
	HostIDs HostIDs
	// Dir is the working directory inside. Default "/"; a relative one
	// is taken from the sandbox's root.
	Dir string
	// Hostname inside. Default "caplin" (the caller's with ShareUTS, which
	// allows no other).
	Hostname string
	// Env is the program's whole environment. Nil: empty. Exec looks
	// commands without a slash up in its PATH.
	Env []string
	// SameSession leaves the program in the caller's session (and so with
	// its controlling terminal, for job control). By default it starts a
	// new one, whose process group the program leads (Relay delivers a
	// terminal's signals to that group); either way the filter refuses
	// TIOCSTI, so the program cannot type into the terminal.
	SameSession bool
	// ControllingTerminal makes the program's fd 0, which must be a
	// terminal (the peer of a pseudo-terminal the caller holds, say), the
	// controlling terminal of its new session (TIOCSCTTY), so that job
	// control, ^C and the terminal's hangup reach it as at a login. It
	// needs a session of the program's own: it is refused with
	// SameSession, and a LandlockOnly sandbox takes it too.
	ControllingTerminal bool

	// ShareIPC, ShareUTS and ShareCgroup leave the program in the caller's
	// System V IPC, hostname and cgroup namespaces. By default it gets new
	// ones.
	ShareIPC, ShareUTS, ShareCgroup bool
	// SharePID runs the program in the pid namespace of every process the
	// caller builds (proc's tree zygote's, or the caller's own with
	// Direct), instead of a new one of its own. A Proc mount then shows
	// that namespace's processes.
	SharePID bool
	// AsPID1 makes the program itself the init (pid 1) of its pid
	// namespace. By default an init of caplin's is pid 1 and the program
	// pid 2: the init reaps orphans, and the program gets the default
	// actions of signals, which a pid 1 does not. Ignored with SharePID.
	AsPID1 bool

	// Seccomp is the filter policy (the zero value is the strictest).
	Seccomp FilterPolicy
	// SeccompFilters are more classic BPF seccomp programs, installed
	// after the default filter; the kernel runs them all and the most
	// restrictive verdict wins.
	SeccompFilters [][]unix.SockFilter

	// Caps lists the capabilities (CAP_* numbers) the program keeps, in
	// its user namespace only. By default it has none, even as uid 0
	// inside: the bounding set is emptied.
	Caps []int
	// KeepCaps keeps every capability the program would have in its user
	// namespace (all of them as uid 0; see Caps for another uid).
	KeepCaps bool
	// InheritCaps puts Caps in the program's inheritable set as uid 0
	// too, as for another uid (whose ambient capabilities need it). It
	// grants nothing (no_new_privs keeps file capabilities from taking
	// effect); it is for programs that report the set, as bubblewrap
	// sets it when told which capabilities to keep.
	InheritCaps bool

	// Limits bound the resources of the sandbox's processes together.
	Limits Limits

	// LockFiles are paths inside the sandbox on each of which it holds a
	// shared fcntl lock (F_RDLCK, the whole file) for as long as it lives,
	// as bubblewrap's --lock-file does: a process of caplin's in the
	// sandbox (its init, or one kept for the purpose when the program is
	// pid 1 or SharePID) opens each read-only once the root is made, and
	// the locks go with that process, however the sandbox ends. A lock
	// held by another process fails the build. Nil: none.
	LockFiles []string
	// UserNS, when set, is a user namespace (an open /proc/PID/ns/user,
	// say) the sandbox joins instead of making one of its own, as
	// bubblewrap's --userns does: its other namespaces are made in it. The
	// caller needs CAP_SYS_ADMIN in it (it made it, or an ancestor of it),
	// and UID and GID are not used: the program's IDs are what the
	// caller's map to there. Nil: a new user namespace.
	UserNS *os.File
	// UserNS2, when set, is a user namespace the program's process moves
	// to once the sandbox is built, before it is confined and execs, as
	// bubblewrap's --userns2 does: one the sandbox's user namespace has
	// CAP_SYS_ADMIN in (one nested in it, say). Nil: none.
	UserNS2 *os.File
	// PIDNS, when set, is a pid namespace the sandbox joins, as
	// bubblewrap's --pidns does: with SharePID the program runs in it;
	// otherwise the sandbox's own pid namespace is made inside it.
	// Joining it takes CAP_SYS_ADMIN in the user namespace that owns it
	// and in the sandbox's own until then: the caller's, unless UserNS is
	// given (an unprivileged caller gives UserNS, then, as bubblewrap's
	// users do). Nil: the caller's (proc's, for SharePID).
	PIDNS *os.File

	// AssertNoUserNamespaces makes Build fail unless the program cannot
	// make a user namespace: it is tried in the program's process once it
	// is confined (bubblewrap's --assert-userns-disabled). With the
	// default filter policy that holds; AllowUserNamespaces undoes it.
	AssertNoUserNamespaces bool

	// Direct forks the sandbox straight from the caller rather than from
	// proc's zygote (proc.Direct): faster for a caller with a
	// small heap, such as a command; slower for a large one. With
	// SharePID the program is then in the caller's own pid namespace, and
	// only the parent-death signal of its first process ties it to the
	// caller: what it starts can outlive a caller that is killed.
	Direct bool

	// LandlockOnly confines without namespaces, for kernels that do not
	// let unprivileged users make user namespaces: the file grants become
	// Landlock rules on the host's own paths (so binds must be at their
	// source's path; a Tmpfs at /tmp becomes a private directory that
	// TMPDIR names, removed when the sandbox ends; Proc at /proc is the
	// host's, read-only; Dev grants the host's device nodes; symlinks,
	// a tmpfs or proc elsewhere, and the other kinds that make something
	// are refused, as is a mount inside an earlier grant that would show
	// more than it: Sandbox.Differences and the mount kinds' table in
	// kinds.go say more), the network is cut by the seccomp
	// filter (no sockets but Unix stream and seqpacket ones: a Unix
	// datagram socket, of a socketpair too, could send to any of the
	// host's) and Landlock, and signals and
	// abstract Unix sockets by Landlock's scopes (ABI 6). The program
	// still sees the host's processes, hostname and System V IPC, and
	// background processes it starts can outlive the caller
	// (LandlockOnlyLimits). What cannot be enforced is refused unless
	// BestEffort.
	LandlockOnly bool

	// BestEffort lets Build go on where the kernel cannot enforce all of
	// the spec (an old Landlock ABI, or none), logging one warning line
	// for each thing it dropped (to the logger of WithLogger, if any); by
	// default that is an error.
	BestEffort bool
}

// Clone returns a deep copy of s: every slice, map and pointer in it is
// copied, but for the *os.File values of Files and Mount.FD, which are the
// same files (see Spec on ownership). Clone of nil is the zero Spec.
func (s *Spec) Clone() *Spec {
	if s == nil {
		return &Spec{}
	}
	c := *s
	if s.Mounts != nil {
		c.Mounts = make([]Mount, len(s.Mounts))
		for i, m := range s.Mounts {
			if m.Perms != nil {
				m.Perms = Perms(*m.Perms)
			}
			m.Data = slices.Clone(m.Data)
			m.Lower = slices.Clone(m.Lower)
			c.Mounts[i] = m
		}
	}
	c.Files = maps.Clone(s.Files)
	c.Env = slices.Clone(s.Env)
	c.Seccomp.Deny = slices.Clone(s.Seccomp.Deny)
	c.Connect = slices.Clone(s.Connect)
	if s.SeccompFilters != nil {
		c.SeccompFilters = make([][]unix.SockFilter, len(s.SeccompFilters))
		for i, f := range s.SeccompFilters {
			c.SeccompFilters[i] = slices.Clone(f)
		}
	}
	c.Caps = slices.Clone(s.Caps)
	c.LockFiles = slices.Clone(s.LockFiles)
	return &c
}

// lastCap returns the highest capability the running kernel knows.
func lastCap() int { return kernelLastCap() }

// kernelLastCap reads the kernel's last capability once: it does not
// change while the system runs, and reading it costs a sandbox more than
// the dozens of system calls around it.
var kernelLastCap = sync.OnceValue(func() int {
	b, err := kernel.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return n
		}
	}
	return unix.CAP_LAST_CAP
})

// SystemMounts returns the grants most programs need to run: the
// operating system's programs and libraries read-only (/usr, and /bin,
// /sbin, /lib, /lib32 and /lib64 where they exist), the few files of /etc
// that the C library and TLS clients read (the dynamic linker's cache,
// passwd and group, name service and time zone configuration, CA
// certificates; no secrets), a proc file system, a minimal /dev, and an
// empty tmpfs at /tmp.
func SystemMounts() []Mount {
	var ms []Mount
	for _, d := range []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
		"/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
		"/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/localtime",
		"/etc/ssl", "/etc/ca-certificates", "/etc/pki"} {
		ms = append(ms, Mount{Kind: ROBind, Source: d, Dest: d, Try: true})
	}
	return append(ms, Mount{Kind: Proc, Dest: "/proc"}, Mount{Kind: Dev, Dest: "/dev"}, Mount{Kind: Tmpfs, Dest: "/tmp", Perms: Perms(os.ModeSticky | 0o777)})
}

// resolverFiles are the host's files that name resolution reads: the DNS
// servers, the static host names, the order of sources, the resolver's
// options.
var resolverFiles = [...]string{"/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf"}

// ResolverMounts returns read-only binds of the host's resolver files
// (/etc/resolv.conf, /etc/hosts, /etc/nsswitch.conf, /etc/host.conf), each
// at its own path and skipped where the host has none, for a sandbox on
// the host's network (NetHost) to resolve names as the host does. A
// /etc/resolv.conf that is a symbolic link (to systemd-resolved's stub,
// say) is bound as the file it leads to. Those of ms's mounts that
// already provide a file leave it out: a mount at the file's path, and
// one that provides all of /etc (a bind, or anything but a directory, at
// /etc, or a bind at /).
func ResolverMounts(ms []Mount) []Mount {
	var out []Mount
	for _, f := range resolverFiles {
		if !providesFile(ms, f) {
			out = append(out, Mount{Kind: ROBind, Source: f, Dest: f, Try: true})
		}
	}
	return out
}

// providesFile reports whether a mount of ms puts something at the path
// file of /etc, or provides all of /etc.
func providesFile(ms []Mount, file string) bool {
	for _, m := range ms {
		switch filepath.Clean(m.Dest) {
		case file:
			return true
		case "/etc":
			if m.Kind != Dir && m.Kind != Chmod && m.Kind != RemountRO {
				return true
			}
		case "/":
			if m.Kind.isBind() {
				return true
			}
		}
	}
	return false
}
