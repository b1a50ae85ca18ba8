package sandbox

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/caplin-dev/caplin/internal/fdctl"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// A Finding is something a Report shows that conveys authority beyond
// what the Spec grants.
type Finding struct {
	// Area is what it is about: fd, namespace, uid_map, gid_map, uid,
	// groups, capabilities, no_new_privs, seccomp or unenforced.
	Area string
	// Text says what, in a sentence.
	Text string
}

func (f Finding) String() string { return f.Area + ": " + f.Text }

// LandlockRecord is what the builder of a process applied with Landlock,
// from its own records: Linux does not let anyone read a process's
// Landlock domain back, so no report can take it from the kernel.
type LandlockRecord struct {
	// Source is "launcher": this part of a report is the builder's
	// word, not the kernel's.
	Source string
	// ABI is the running kernel's Landlock ABI version (0: none).
	ABI int
	// Applied is whether a Landlock domain was applied at all.
	Applied bool
	// Paths are the rules: the access each path allows, as far as the
	// ABI handles it (Dropped says what it did not).
	Paths []LandlockPath
	// TCP is "any" when TCP is not restricted by Landlock (the process
	// has a network namespace of its own, or the ABI cannot), else the
	// ports allowed ("connect 443; bind none").
	TCP string
	// Scoped lists what is kept inside the domain: "abstract_unix_socket"
	// and "signal" (ABI 6).
	Scoped []string
	// Dropped is what the policy asked for and this kernel's Landlock
	// cannot enforce.
	Dropped []string
}

// LandlockPath is one path rule of a LandlockRecord.
type LandlockPath struct {
	Path string
	// Access names the rights: execute, read_file, read_dir, write_file,
	// ... (LANDLOCK_ACCESS_FS_* without the prefix, in lower case).
	Access string
}

// landlockRights names the LANDLOCK_ACCESS_FS_* bits.
var landlockRights = []struct {
	bit  uint64
	name string
}{
	{unix.LANDLOCK_ACCESS_FS_EXECUTE, "execute"},
	{unix.LANDLOCK_ACCESS_FS_WRITE_FILE, "write_file"},
	{unix.LANDLOCK_ACCESS_FS_READ_FILE, "read_file"},
	{unix.LANDLOCK_ACCESS_FS_READ_DIR, "read_dir"},
	{unix.LANDLOCK_ACCESS_FS_REMOVE_DIR, "remove_dir"},
	{unix.LANDLOCK_ACCESS_FS_REMOVE_FILE, "remove_file"},
	{unix.LANDLOCK_ACCESS_FS_MAKE_CHAR, "make_char"},
	{unix.LANDLOCK_ACCESS_FS_MAKE_DIR, "make_dir"},
	{unix.LANDLOCK_ACCESS_FS_MAKE_REG, "make_reg"},
	{unix.LANDLOCK_ACCESS_FS_MAKE_SOCK, "make_sock"},
	{unix.LANDLOCK_ACCESS_FS_MAKE_FIFO, "make_fifo"},
	{unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK, "make_block"},
	{unix.LANDLOCK_ACCESS_FS_MAKE_SYM, "make_sym"},
	{unix.LANDLOCK_ACCESS_FS_REFER, "refer"},
	{unix.LANDLOCK_ACCESS_FS_TRUNCATE, "truncate"},
	{unix.LANDLOCK_ACCESS_FS_IOCTL_DEV, "ioctl_dev"},
}

func landlockAccessNames(a uint64) string {
	var ns []string
	for _, r := range landlockRights {
		if a&r.bit != 0 {
			ns = append(ns, r.name)
		}
	}
	if len(ns) == 0 {
		return "none"
	}
	return strings.Join(ns, ",")
}

// record describes p as applied on a kernel with Landlock ABI abi.
func (p *LandlockPolicy) record(abi int, dropped []string) (*LandlockRecord, error) {
	rec := &LandlockRecord{Source: "launcher", ABI: abi, Applied: true, Dropped: dropped, TCP: "any"}
	fs := fsHandled(abi)
	for _, g := range p.Paths {
		access, err := g.effectiveAccess(fs)
		if err != nil {
			return nil, err
		}
		rec.Paths = append(rec.Paths, LandlockPath{Path: g.Path, Access: landlockAccessNames(access)})
	}
	if abi >= 4 && !p.AnyTCP {
		ports := func(ps []uint16) string {
			if len(ps) == 0 {
				return "none"
			}
			s := make([]string, len(ps))
			for i, p := range ps {
				s[i] = strconv.Itoa(int(p))
			}
			return strings.Join(s, ",")
		}
		rec.TCP = "connect " + ports(p.ConnectTCP) + "; bind " + ports(p.BindTCP)
	}
	if abi >= 6 {
		if !p.AnyAbstractUnix {
			rec.Scoped = append(rec.Scoped, "abstract_unix_socket")
		}
		rec.Scoped = append(rec.Scoped, "signal")
	}
	return rec, nil
}

// An Expectation is what a process built from a Spec may hold and be,
// for Report.Check: the spec, the identity of each descriptor it grants,
// and the IDs of the caller that builds it. Make it with Expect.
type Expectation struct {
	// Landlock is the record of the Landlock domain Build applies for
	// the spec on this kernel, for Report.Landlock.
	Landlock *LandlockRecord

	spec        *Spec
	fds         map[int]fdIdentity
	uid, gid    int
	seccompBase int      // the caller's own seccomp filters, which children inherit
	unenforced  []string // what a LandlockOnly build cannot enforce
}

// fdIdentity is what a granted descriptor is: its inode and access mode.
type fdIdentity struct {
	dev, ino uint64
	access   string
}

// Expect records what a process built from spec by the calling process
// may hold, for Report.Check. It reads the identity of each of
// spec.Files, so call it while they are open (before Build, or after it
// but before closing them); and it computes the Landlock policy Build
// applies for spec, as Build does, so that a report can say what the
// kernel will not: the files Landlock rules name are looked at again,
// and a file system changing in between can make the two differ. The
// directory a LandlockOnly sandbox makes in place of a tmpfs at /tmp is
// not known before Build makes it: its rule names it "a private
// directory for /tmp".
func Expect(spec *Spec) (*Expectation, error) {
	spec = spec.Clone() // ours from here on: see Spec on ownership
	e := &Expectation{spec: spec, fds: map[int]fdIdentity{}, seccompBase: -1}
	e.uid, e.gid = spec.hostUser()
	for n, f := range spec.Files {
		var id fdIdentity
		err := fdctl.Control(f, func(fd int) error {
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				return os.NewSyscallError("fstat", err)
			}
			fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
			if err != nil {
				return os.NewSyscallError("fcntl F_GETFL", err)
			}
			id = fdIdentity{dev: st.Dev, ino: st.Ino, access: accessOf(uint64(fl))}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("sandbox: expect: fd %d (%s): %w", n, f.Name(), err)
		}
		e.fds[n] = id
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Seccomp_filters:"); ok {
				e.seccompBase, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
	}
	abi, abiErr := LandlockABI()
	switch {
	case spec.LandlockOnly:
		if abiErr != nil {
			return nil, fmt.Errorf("sandbox: Landlock-only confinement: %w", abiErr)
		}
		plan, err := landlockOnlyPolicy(spec, abi)
		if err != nil {
			return nil, err
		}
		var probe proc.Batch
		dropped, err := plan.ll.Record(&probe, abi)
		if err != nil {
			return nil, err
		}
		if e.Landlock, err = plan.ll.record(abi, dropped); err != nil {
			return nil, err
		}
		e.unenforced = plan.cannot
	case abiErr != nil:
		// Build refuses this unless BestEffort, and then applies none.
		e.Landlock = &LandlockRecord{Source: "launcher", Dropped: []string{"Landlock altogether: " + abiErr.Error()}}
	default:
		ll, dropped, err := landlockFor(spec, discard)
		if err != nil {
			return nil, err
		}
		if e.Landlock, err = ll.record(abi, dropped); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// accessOf returns the access mode of open flags as FDInfo.Access says it.
func accessOf(flags uint64) string {
	switch {
	case flags&unix.O_PATH != 0:
		return "path"
	case flags&unix.O_ACCMODE == unix.O_WRONLY:
		return "w"
	case flags&unix.O_ACCMODE == unix.O_RDWR:
		return "rw"
	}
	return "r"
}

// Check lists what the report shows that conveys authority beyond what
// e's spec grants (nil: nothing). It finds:
//
//   - a descriptor the spec did not grant, or one at a granted number
//     that is not the granted file (another inode or access mode),
//     unless the kernel shows it is of the process's own confinement
//     (FDInfo.Inside) or it is a copy of a granted one at another number.
//     A process that makes pipes or other descriptors of its own after it
//     starts has them reported too: only files and sockets can be told
//     apart from ones that came from outside. Descriptors of anonymous
//     inodes (eventfd, epoll, timerfd, ...) share one inode, so another
//     one at a granted number is not told from the granted one.
//   - a namespace shared with the inspector that the spec asks to be new:
//     user and mount always, pid unless SharePID, net unless NetHost, ipc,
//     uts and cgroup unless ShareIPC, ShareUTS, ShareCgroup (none in a
//     LandlockOnly spec, which has no namespaces);
//   - an ID map other than the spec's one ID (UID and GID inside, the
//     caller's outside), such as one that maps host root;
//   - LandlockOnly: the process running as another uid or gid than the
//     spec's;
//   - supplementary groups other than the caller's gid, whose access to
//     files the process keeps (setgroups is denied in its namespace);
//   - a capability in the permitted, effective or ambient set that the
//     spec does not keep (Caps; any with KeepCaps), or in the bounding
//     set when the process could gain it by exec (uid 0 inside, or no
//     no_new_privs);
//   - no_new_privs off;
//   - seccomp not filtering, or fewer filters than the spec installs;
//   - LandlockOnly: what the kernel cannot enforce (an ABI before 6 does
//     not keep signals and abstract Unix sockets in).
//
// The inheritable set is reported, not checked: it grants nothing
// without file capabilities, which no_new_privs keeps from taking
// effect. Landlock is the launcher's record (Report.Landlock); the
// kernel does not say.
func (r *Report) Check(e *Expectation) []Finding {
	var fs []Finding
	add := func(area, format string, a ...any) {
		fs = append(fs, Finding{Area: area, Text: fmt.Sprintf(format, a...)})
	}
	spec := e.spec
	grants := map[fdIdentity]bool{}
	for _, id := range e.fds {
		grants[id] = true
	}
	for _, fd := range r.FDs {
		id := fdIdentity{dev: fd.Dev, ino: fd.Ino, access: fd.Access}
		want, granted := e.fds[fd.FD]
		what := fmt.Sprintf("fd %d (%s %s, %s)", fd.FD, fd.Kind, fd.Target, fd.Access)
		switch {
		case granted && want == id, fd.Inside:
		case fd.Kind != "anon_inode" && grants[id]:
			// A copy of a grant at another number (dup2): nothing more.
			// Not for anon_inode descriptors, which share one inode.
		case granted:
			add("fd", "%s is not the file the spec grants at %d", what, fd.FD)
		default:
			add("fd", "%s: not granted by the spec", what)
		}
	}

	if !spec.LandlockOnly {
		// A user namespace given (UserNS, UserNS2) is the caller's
		// choice, with its own maps.
		givenUser := spec.UserNS != nil || spec.UserNS2 != nil
		asksNew := map[string]bool{
			"user": !givenUser, "mnt": true,
			"pid": !spec.SharePID, "pid_for_children": !spec.SharePID,
			"net": spec.Net != NetHost,
			"ipc": !spec.ShareIPC, "uts": !spec.ShareUTS, "cgroup": !spec.ShareCgroup,
		}
		for _, ns := range r.Namespaces {
			if ns.Shared && asksNew[ns.Name] {
				add("namespace", "%s is the launcher's own (%d); the spec asks for a new one", ns.Name, ns.Inode)
			}
		}
		checkMap := func(area string, m, want []proc.IDMap) {
			if slices.Equal(m, want) {
				return
			}
			root := ""
			for _, l := range m {
				if l.Outside == 0 && !slices.ContainsFunc(want, func(w proc.IDMap) bool { return w.Outside == 0 }) {
					root = "; it maps the host's root"
				}
			}
			if spec.HostIDs == (HostIDs{}) {
				add(area, "%s; the spec maps %d inside to %d (the launcher's) only%s", mapString(m), want[0].Inside, want[0].Outside, root)
			} else {
				add(area, "%s; the spec maps %s only (its host IDs)%s", mapString(m), strings.TrimPrefix(mapString(want), "mapped "), root)
			}
		}
		if !givenUser {
			// e.uid and e.gid are the caller's when the maps name them.
			uids, gids := spec.idMaps(e.uid, e.gid)
			checkMap("uid_map", r.UIDMap, uids)
			checkMap("gid_map", r.GIDMap, gids)
		}
	} else if uid, gid := landlockOnlyUser(spec); r.UIDs[1] != uid || r.GIDs[1] != gid {
		add("uid", "runs as uid %d, gid %d on the host; the spec asks for %d, %d", r.UIDs[1], r.GIDs[1], uid, gid)
	}
	var extra []string
	for _, g := range r.Groups {
		if g != e.gid {
			extra = append(extra, strconv.Itoa(g))
		}
	}
	if len(extra) > 0 {
		add("groups", "supplementary groups %s: their access to files goes with the process", strings.Join(extra, ","))
	}

	var allowed CapSet
	if spec.KeepCaps {
		allowed = ^CapSet(0)
	}
	for _, c := range spec.Caps {
		allowed |= 1 << c
	}
	for _, s := range []struct {
		name string
		set  CapSet
	}{{"permitted", r.Caps.Permitted}, {"effective", r.Caps.Effective}, {"ambient", r.Caps.Ambient}} {
		if beyond := s.set &^ allowed; beyond != 0 {
			add("capabilities", "%s set holds %s, which the spec does not keep", s.name, beyond)
		}
	}
	if beyond := r.Caps.Bounding &^ allowed; beyond != 0 && (r.insideUID() == 0 || !r.NoNewPrivs) {
		add("capabilities", "bounding set holds %s, which an exec could give back (uid %d inside, no_new_privs %v)", beyond, r.insideUID(), r.NoNewPrivs)
	}
	if !r.NoNewPrivs {
		add("no_new_privs", "not set: set-user-ID programs and file capabilities work")
	}
	want := 1 + len(spec.SeccompFilters)
	switch {
	case r.Seccomp != "filter":
		add("seccomp", "%s; the spec installs %d filter(s)", r.Seccomp, want)
	case r.SeccompFilters >= 0 && e.seccompBase >= 0 && r.SeccompFilters < e.seccompBase+want:
		add("seccomp", "%d filter(s) in force; the spec installs %d beyond the launcher's %d", r.SeccompFilters, want, e.seccompBase)
	}
	for _, u := range e.unenforced {
		add("unenforced", "%s", u)
	}
	return fs
}

// insideUID returns the process's effective uid in its own user
// namespace, or -1 if it has none there.
func (r *Report) insideUID() int { return mapInside(r.UIDMap, r.UIDs[1]) }

// mapInside maps the outside ID id through ms; -1 if ms does not map it.
func mapInside(ms []proc.IDMap, id int) int {
	for _, m := range ms {
		if id >= m.Outside && id-m.Outside < m.Size {
			return m.Inside + (id - m.Outside)
		}
	}
	return -1
}

func mapString(m []proc.IDMap) string {
	if len(m) == 0 {
		return "no ID mapped"
	}
	s := make([]string, len(m))
	for i, l := range m {
		s[i] = fmt.Sprintf("%d %d %d", l.Inside, l.Outside, l.Size)
	}
	return "mapped " + strings.Join(s, ", ")
}
