package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/internal/mountinfo"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// Limits bound what a sandbox's processes may use together. A zero field
// sets no limit.
//
// Pids, Memory and CPU are enforced with a cgroup made for the sandbox,
// which its first process is moved into before it execs, and which is
// killed and removed when the sandbox ends:
//
//   - cgroup v2 where the caller may make one with the controllers: below
//     its own cgroup when that is the root of the hierarchy or delegated
//     to the caller (as systemd does with Delegate=yes). A cgroup that
//     hands controllers to sub-cgroups may hold no processes itself, so
//     the caller's own processes (itself and its descendants, if they are
//     all there is in its cgroup) are moved once into a leaf,
//     <its cgroup>/caplin-self. Otherwise, as for a shell's cgroup, the
//     sandbox's cgroup is made beside it, in the nearest ancestor that
//     has the controllers and lets the caller in (a user's app.slice
//     under systemd), and the caller's own cgroup's limits do not cover
//     it.
//   - else, for each controller the v2 hierarchy lacks, the cgroup v1
//     hierarchy that has it (on hybrid systems), below the caller's cgroup
//     there, where the caller may make one (in practice: as root).
//
// Without a cgroup for a controller:
//
//   - Pids falls back to RLIMIT_NPROC, set in the sandbox before it execs.
//     Since Linux 5.14 the kernel counts it per user namespace and user, so
//     in the sandbox's own user namespace (Build makes one) it counts exactly the sandbox's
//     processes and threads. It is refused on older kernels, which count
//     every process of the user on the system, and for a sandbox that runs
//     as root outside (uid 0, the caller is root): the kernel does not
//     enforce RLIMIT_NPROC for root at all.
//   - Memory has no rlimit for a total. With BestEffort it falls back to
//     RLIMIT_AS, which bounds each process's address space on its own (not
//     the sandbox's sum, nor tmpfs files, pipes and other kernel memory);
//     otherwise it is refused.
//   - CPU, a rate, has no rlimit (RLIMIT_CPU is a total of seconds per
//     process, which kills a process that has run long enough): it is
//     refused, or dropped with BestEffort.
//
// A limit that cannot be enforced is an error (a *LimitError, which
// matches ErrLimitUnenforced) unless best effort was asked for; then it is
// reported as dropped or weakened, never left out silently.
//
// The cgroup must stay out of the sandbox's reach: a process that can
// write the cgroup's files (it is owned by the caller, whose uid the
// sandbox's uid 0 maps to) could raise its limits. Build mounts no cgroup
// file system in the sandbox and its seccomp filter refuses mount(2).
type Limits struct {
	// Pids bounds the processes and threads in the sandbox at once.
	Pids int
	// Memory bounds, in bytes, the memory charged to the sandbox: with a
	// cgroup, its processes' memory, the page cache they fill and the
	// files they write to a tmpfs; swap is not allowed where the kernel
	// accounts for it (memory.swap.max 0, memory.memsw.limit_in_bytes).
	// When it is reached, the kernel's OOM killer kills the sandbox's
	// largest process (SIGKILL); allocations do not fail. Under the
	// RLIMIT_AS fallback it is a bound on each process's address space
	// instead, and an allocation past it fails (ENOMEM).
	Memory int64
	// CPU bounds the sandbox's CPU time per second of wall time, in CPUs:
	// 0.5 is half of one CPU, 2 is two CPUs. The smallest is 0.001.
	CPU float64
	// NoFile bounds the open files of each process (RLIMIT_NOFILE); it is
	// per process by nature, and a value above the caller's own hard limit
	// is lowered to it.
	NoFile int
}

// ErrLimitUnenforced is matched (errors.Is) by every *LimitError.
var ErrLimitUnenforced = errors.New("limit cannot be enforced")

// LimitError says that a limit cannot be enforced here, and why.
type LimitError struct {
	Limit  string // "pids", "memory" or "cpu"
	Reason string // what is missing, including the cgroups tried
	Err    error  // the errors of the attempts, if any (errors.Join)
}

// Error names the limit and says why it cannot be enforced.
func (e *LimitError) Error() string {
	return "sandbox: limit " + e.Limit + ": " + e.Reason
}

// Unwrap returns the errors of the attempts.
func (e *LimitError) Unwrap() error { return e.Err }

// Is reports whether target is ErrLimitUnenforced or ErrUnenforceable.
func (e *LimitError) Is(target error) bool {
	return target == ErrLimitUnenforced || target == ErrUnenforceable
}

// limiter enforces Limits on one sandbox: a cgroup (v2, v1 or both) that
// the sandbox's first process is moved into before it execs, and rlimits
// set in it.
type limiter struct {
	cgroups []*cgroup
	rlimits []rlimit
	how     map[string]string // limit → how it is enforced, for tests and logs
	closed  bool
}

type rlimit struct {
	limit    string // "pids", "memory", "nofile"
	name     string // "RLIMIT_NPROC"
	resource int
	value    uint64
}

// cgroup is one cgroup made for a sandbox.
type cgroup struct {
	dir   string   // where it is
	path  string   // its path as /proc/PID/cgroup shows it
	v2    bool     // in the cgroup2 hierarchy, else in a v1 one
	ctrls []string // the controllers whose limits it holds
}

// newLimiter prepares l for one sandbox whose processes run as uid outside
// their user namespace (the caller's effective uid, for Build), making its
// cgroups. Limits that cannot be enforced are an error (*LimitError), or,
// with bestEffort, are listed in dropped, each entry naming the limit and
// why it was dropped or weakened. The caller closes the limiter.
func newLimiter(l Limits, uid int, bestEffort bool) (lim *limiter, dropped []string, err error) {
	if l.Pids < 0 || l.Memory < 0 || l.NoFile < 0 || l.CPU < 0 || math.IsNaN(l.CPU) || math.IsInf(l.CPU, 0) {
		return nil, nil, fmt.Errorf("sandbox: limits %+v: negative or not a number", l)
	}
	var quota, period int64
	if l.CPU > 0 {
		if quota, period, err = cpuQuota(l.CPU); err != nil {
			return nil, nil, err
		}
	}
	lim = &limiter{how: map[string]string{}}
	defer func() {
		if err != nil {
			lim.close()
			lim = nil
		}
	}()
	var want []string // controllers, in a fixed order
	if l.Pids > 0 {
		want = append(want, "pids")
	}
	if l.Memory > 0 {
		want = append(want, "memory")
	}
	if l.CPU > 0 {
		want = append(want, "cpu")
	}
	why := map[string][]error{} // controller → why no cgroup has it
	if len(want) > 0 {
		h, herr := ownHierarchies()
		if herr != nil {
			for _, c := range want {
				why[c] = append(why[c], herr)
			}
		}
		got := lim.makeCgroups(h, want, why)
		for _, c := range got {
			cg := lim.cgroupFor(c)
			if err := cg.set(c, l, quota, period); err != nil {
				return nil, nil, err
			}
			lim.how[c] = cgroupKind(cg) + " " + cg.dir
		}
		want = slices.DeleteFunc(want, func(c string) bool { return slices.Contains(got, c) })
	}
	// What no cgroup enforces: rlimits, or nothing.
	release, _, _ := kernel.Uname()
	rl, dropped, errs := rlimitPlan(l, want, why, uid, release, bestEffort)
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	lim.rlimits = rl
	for _, r := range rl {
		lim.how[r.limit] = "rlimit " + r.name
	}
	return lim, dropped, nil
}

// cpuQuota turns a CPU share into a cgroup quota and period, in
// microseconds. The kernel's smallest quota is 1 ms and its longest period
// 1 s.
func cpuQuota(cpu float64) (quota, period int64, err error) {
	if cpu > 1<<20 {
		return 0, 0, fmt.Errorf("sandbox: limit cpu %g: too large", cpu)
	}
	period = 100_000
	quota = int64(math.Round(cpu * float64(period)))
	if quota < 1000 {
		period = 1_000_000
		quota = int64(math.Round(cpu * float64(period)))
	}
	if quota < 1000 {
		return 0, 0, fmt.Errorf("sandbox: limit cpu %g: below the smallest the kernel enforces, 0.001", cpu)
	}
	return quota, period, nil
}

// rlimitPlan decides the rlimits for the limits no cgroup enforces (left:
// "pids", "memory", "cpu"; why holds the reasons there is no cgroup for
// each), plus NoFile. It returns the rlimits, the limits dropped or
// weakened under bestEffort, and otherwise one *LimitError per limit that
// cannot be enforced. release is the kernel's (uname -r).
func rlimitPlan(l Limits, left []string, why map[string][]error, uid int, release string, bestEffort bool) (rl []rlimit, dropped []string, errs []error) {
	noCgroup := func(c string) string {
		if len(why[c]) == 0 {
			return "no cgroup " + c + " controller"
		}
		var s []string
		for _, e := range why[c] {
			s = append(s, e.Error())
		}
		return "no cgroup " + c + " controller (" + strings.Join(s, "; ") + ")"
	}
	refuse := func(limit, reason string) {
		if bestEffort {
			dropped = append(dropped, limit+": dropped: "+reason)
			return
		}
		errs = append(errs, &LimitError{Limit: limit, Reason: reason, Err: errors.Join(why[limit]...)})
	}
	for _, c := range left {
		switch c {
		case "pids":
			switch {
			case uid == 0:
				refuse(c, noCgroup(c)+", and RLIMIT_NPROC is not enforced for root (the sandbox runs as uid 0 outside its user namespace)")
			case !kernel.AtLeast(release, 5, 14):
				refuse(c, noCgroup(c)+", and before Linux 5.14 (this is "+release+") RLIMIT_NPROC counts all the processes of uid "+strconv.Itoa(uid)+", not the sandbox's")
			default:
				rl = append(rl, rlimit{"pids", "RLIMIT_NPROC", unix.RLIMIT_NPROC, uint64(l.Pids)})
			}
		case "memory":
			if bestEffort {
				rl = append(rl, rlimit{"memory", "RLIMIT_AS", unix.RLIMIT_AS, uint64(l.Memory)})
				dropped = append(dropped, c+": weakened to RLIMIT_AS, a bound on each process's address space, not on the sandbox's total: "+noCgroup(c))
			} else {
				refuse(c, noCgroup(c)+"; an rlimit bounds each process alone (RLIMIT_AS), not the sandbox's total")
			}
		case "cpu":
			refuse(c, noCgroup(c)+"; no rlimit bounds a rate (RLIMIT_CPU is a total of seconds per process)")
		}
	}
	if l.NoFile > 0 {
		v := uint64(l.NoFile)
		var cur unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &cur); err == nil && cur.Max < v {
			v = cur.Max // the child cannot raise it; lower is within the limit
		}
		rl = append(rl, rlimit{"nofile", "RLIMIT_NOFILE", unix.RLIMIT_NOFILE, v})
	}
	return rl, dropped, errs
}

// record adds the rlimits to b, to run in the sandbox's first process
// before it execs. Hard and soft limits are both set: raising a hard limit
// needs CAP_SYS_RESOURCE in the initial user namespace, which nothing in a
// sandbox has.
func (l *limiter) record(b *proc.Batch) {
	for _, r := range l.rlimits {
		b.Prlimit(r.resource, unix.Rlimit{Cur: r.value, Max: r.value})
	}
}

// attach moves the process pid (as the caller's pid namespace numbers it)
// into the sandbox's cgroups. Call it before the process execs; what it
// forks afterwards is in them too.
func (l *limiter) attach(pid int) error {
	for _, cg := range l.cgroups {
		if err := writeCgroupFile(filepath.Join(cg.dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("sandbox: limits: moving pid %d into %s: %w", pid, cg.dir, err)
		}
	}
	return nil
}

// close kills whatever is left in the sandbox's cgroups and removes them.
// It is idempotent. Rlimits need nothing: they go with the processes.
func (l *limiter) close() error {
	if l == nil || l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	for _, cg := range l.cgroups {
		if cg.v2 {
			// cgroup.kill (Linux 5.14) kills everything in it at once,
			// processes forking meanwhile included.
			err := writeCgroupFile(filepath.Join(cg.dir, "cgroup.kill"), "1")
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("sandbox: limits: %w", err))
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, cg := range l.cgroups {
		if err := cg.remove(deadline); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cgroupFor returns the cgroup that enforces controller c.
func (l *limiter) cgroupFor(c string) *cgroup {
	for _, cg := range l.cgroups {
		if slices.Contains(cg.ctrls, c) {
			return cg
		}
	}
	return nil
}

func cgroupKind(cg *cgroup) string {
	if cg.v2 {
		return "cgroup2"
	}
	return "cgroup1"
}

// set writes the limit for controller c.
func (cg *cgroup) set(c string, l Limits, quota, period int64) error {
	w := func(name, value string) error {
		if err := writeCgroupFile(filepath.Join(cg.dir, name), value); err != nil {
			return fmt.Errorf("sandbox: limit %s: %w", c, err)
		}
		return nil
	}
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(cg.dir, name))
		return err == nil
	}
	switch {
	case c == "pids":
		return w("pids.max", strconv.Itoa(l.Pids))
	case c == "memory" && cg.v2:
		if err := w("memory.max", strconv.FormatInt(l.Memory, 10)); err != nil {
			return err
		}
		if exists("memory.swap.max") {
			return w("memory.swap.max", "0")
		}
		return nil
	case c == "memory":
		if err := w("memory.limit_in_bytes", strconv.FormatInt(l.Memory, 10)); err != nil {
			return err
		}
		if exists("memory.memsw.limit_in_bytes") {
			return w("memory.memsw.limit_in_bytes", strconv.FormatInt(l.Memory, 10))
		}
		return nil
	case c == "cpu" && cg.v2:
		return w("cpu.max", fmt.Sprintf("%d %d", quota, period))
	case c == "cpu":
		if err := w("cpu.cfs_period_us", strconv.FormatInt(period, 10)); err != nil {
			return err
		}
		return w("cpu.cfs_quota_us", strconv.FormatInt(quota, 10))
	}
	return fmt.Errorf("sandbox: limit %s: unknown controller", c)
}

// remove kills what is in cg until it is empty, then removes it.
func (cg *cgroup) remove(deadline time.Time) error {
	for {
		err := unix.Rmdir(cg.dir)
		if err == nil || err == unix.ENOENT {
			return nil
		}
		if err != unix.EBUSY || time.Now().After(deadline) {
			return fmt.Errorf("sandbox: limits: removing cgroup %s: %w", cg.dir, err)
		}
		cg.killAll()
		time.Sleep(5 * time.Millisecond)
	}
}

// killAll sends SIGKILL to each process in cg, through a pidfd opened
// before checking that the pid is in cg, so that a pid reused by a
// process elsewhere is never signalled.
func (cg *cgroup) killAll() {
	for _, f := range fieldsOf(filepath.Join(cg.dir, "cgroup.procs")) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		if cg.holds(pid) {
			unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		}
		unix.Close(fd)
	}
}

// holds reports whether process pid is in cg or below it.
func (cg *cgroup) holds(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false
	}
	lines, _ := parseProcCgroup(string(b))
	for _, ln := range lines {
		if (ln.id == 0) != cg.v2 || !cg.v2 && !slices.Contains(ln.ctrls, cg.ctrls[0]) {
			continue
		}
		return ln.path == cg.path || strings.HasPrefix(ln.path, cg.path+"/")
	}
	return false
}

// Cgroups.

// procCgroup is one line of /proc/PID/cgroup: hierarchy ID, controllers
// (none for v2; "name=systemd" for a named v1 hierarchy) and path.
type procCgroup struct {
	id    int
	ctrls []string
	path  string
}

// parseProcCgroup parses /proc/PID/cgroup.
func parseProcCgroup(s string) ([]procCgroup, error) {
	var out []procCgroup
	for _, line := range strings.Split(s, "\n") {
		if line == "" {
			continue
		}
		id, rest, ok1 := strings.Cut(line, ":")
		ctrls, p, ok2 := strings.Cut(rest, ":")
		n, err := strconv.Atoi(id)
		if !ok1 || !ok2 || err != nil || !strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("/proc/self/cgroup: bad line %q", line)
		}
		var c []string
		if ctrls != "" {
			c = strings.Split(ctrls, ",")
		}
		out = append(out, procCgroup{id: n, ctrls: c, path: p})
	}
	return out, nil
}

// cgMount is a cgroup or cgroup2 mount, from /proc/PID/mountinfo.
type cgMount struct {
	root  string   // the cgroup mounted there
	point string   // where
	v2    bool     // cgroup2
	opts  []string // super options: a v1 hierarchy's controllers
}

// parseMountinfo returns the cgroup and cgroup2 mounts in mountinfo.
func parseMountinfo(s string) []cgMount {
	var out []cgMount
	for _, m := range mountinfo.Parse(s) {
		if m.FSType == "cgroup" || m.FSType == "cgroup2" {
			out = append(out, cgMount{root: m.Root, point: m.Point, v2: m.FSType == "cgroup2", opts: m.Super})
		}
	}
	return out
}

// cgLoc is a cgroup reachable through a mount: its directory is the mount
// point joined with rel, its path (as /proc/PID/cgroup shows it) is the
// mount's root joined with rel.
type cgLoc struct {
	point, root, rel string
}

func (c cgLoc) dir() string  { return filepath.Join(c.point, c.rel) }
func (c cgLoc) path() string { return path.Join(c.root, c.rel) }
func (c cgLoc) top() bool    { return c.rel == "/" }
func (c cgLoc) parent() cgLoc {
	c.rel = path.Dir(c.rel)
	return c
}
func (c cgLoc) child(name string) cgLoc {
	c.rel = path.Join(c.rel, name)
	return c
}

// locate finds cgroup path p in mount m. A cgroup outside the mounted
// subtree (another cgroup namespace's, or a bind mount of part of the
// tree) is not reachable there.
func (m cgMount) locate(p string) (cgLoc, bool) {
	if strings.HasSuffix(p, " (deleted)") {
		return cgLoc{}, false
	}
	switch {
	case m.root == "/":
		return cgLoc{m.point, m.root, p}, true
	case p == m.root:
		return cgLoc{m.point, m.root, "/"}, true
	case strings.HasPrefix(p, m.root+"/"):
		return cgLoc{m.point, m.root, p[len(m.root):]}, true
	}
	return cgLoc{}, false
}

// hierarchies is where the caller's cgroups are.
type hierarchies struct {
	v2    cgLoc
	hasV2 bool
	v1    map[string]cgLoc // controller → the caller's cgroup there
	why   string           // why there is no v2 location, if not
}

// findHierarchies locates the caller's cgroups from /proc/self/cgroup and
// /proc/self/mountinfo.
func findHierarchies(procCgroup, mountinfo string) (hierarchies, error) {
	h := hierarchies{v1: map[string]cgLoc{}}
	lines, err := parseProcCgroup(procCgroup)
	if err != nil {
		return h, err
	}
	mounts := parseMountinfo(mountinfo)
	h.why = "no cgroup v2 line (0::) in /proc/self/cgroup"
	for _, ln := range lines {
		if ln.id == 0 {
			h.why = "cgroup v2 " + ln.path + " is not reachable through any cgroup2 mount"
			for _, m := range mounts {
				if loc, ok := m.locate(ln.path); ok && m.v2 {
					h.v2, h.hasV2, h.why = loc, true, ""
					break
				}
			}
			continue
		}
		for _, c := range ln.ctrls {
			if strings.HasPrefix(c, "name=") {
				continue
			}
			for _, m := range mounts {
				if m.v2 || !slices.Contains(m.opts, c) {
					continue
				}
				if loc, ok := m.locate(ln.path); ok {
					h.v1[c] = loc
					break
				}
			}
		}
	}
	return h, nil
}

func ownHierarchies() (hierarchies, error) {
	c, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return hierarchies{}, err
	}
	m, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return hierarchies{}, err
	}
	return findHierarchies(string(c), string(m))
}

// v2Mu serializes the changes to the caller's cgroup2 layout: enabling
// controllers, moving the caller into a leaf.
var v2Mu sync.Mutex

var cgroupSeq atomic.Int64

// leafName is the cgroup2 leaf that the caller's own processes are moved
// into when its cgroup must enable controllers for sandboxes ("no internal
// processes": a cgroup that hands controllers to children holds no
// processes itself).
const leafName = "caplin-self"

// makeCgroups makes the sandbox's cgroups for the controllers want and
// returns the controllers they enforce. Why no cgroup has a controller is
// added to why.
func (l *limiter) makeCgroups(h hierarchies, want []string, why map[string][]error) (got []string) {
	name := fmt.Sprintf("caplin-%d-%d", os.Getpid(), cgroupSeq.Add(1))
	if h.hasV2 {
		avail := fieldsOf(filepath.Join(h.v2.dir(), "cgroup.controllers"))
		var ctrls []string
		for _, c := range want {
			if slices.Contains(avail, c) {
				ctrls = append(ctrls, c)
			} else {
				why[c] = append(why[c], fmt.Errorf("cgroup2 %s: controller not available", h.v2.dir()))
			}
		}
		if len(ctrls) > 0 {
			cg, err := makeV2(h.v2, ctrls, name)
			if err == nil {
				cg.ctrls = ctrls
				l.cgroups = append(l.cgroups, cg)
				got = append(got, ctrls...)
			} else {
				for _, c := range ctrls {
					why[c] = append(why[c], err)
				}
			}
		}
	} else if h.why != "" {
		for _, c := range want {
			why[c] = append(why[c], errors.New(h.why))
		}
	}
	// The rest from v1 hierarchies (a hybrid system).
	for _, c := range want {
		if slices.Contains(got, c) {
			continue
		}
		loc, ok := h.v1[c]
		if !ok {
			why[c] = append(why[c], fmt.Errorf("no cgroup v1 hierarchy has %s", c))
			continue
		}
		sub := loc.child(name)
		if i := slices.IndexFunc(l.cgroups, func(cg *cgroup) bool { return cg.dir == sub.dir() }); i >= 0 {
			// A hierarchy with several controllers (cpu,cpuacct).
			l.cgroups[i].ctrls = append(l.cgroups[i].ctrls, c)
			got = append(got, c)
			continue
		}
		if err := os.Mkdir(sub.dir(), 0o755); err != nil {
			why[c] = append(why[c], fmt.Errorf("cgroup v1 %s: %w", c, err))
			continue
		}
		l.cgroups = append(l.cgroups, &cgroup{dir: sub.dir(), path: sub.path(), ctrls: []string{c}})
		got = append(got, c)
	}
	// With only v1 limits, a bare cgroup2 cgroup (no controllers, so no
	// layout rules apply) gives cgroup.kill for the teardown.
	if len(got) > 0 && h.hasV2 && !slices.ContainsFunc(l.cgroups, func(cg *cgroup) bool { return cg.v2 }) {
		sub := h.v2.child(name)
		if os.Mkdir(sub.dir(), 0o755) == nil {
			l.cgroups = append(l.cgroups, &cgroup{dir: sub.dir(), path: sub.path(), v2: true})
		}
	}
	return got
}

// makeV2 makes cgroup2 cgroup name with controllers ctrls for a sandbox,
// for a caller in cgroup own. The cgroup's parent must have ctrls in its
// cgroup.subtree_control, and so hold no processes (unless it is the root).
// In order, it tries:
//
//  1. own itself, which works at the root of the hierarchy (or when own was
//     already set up as below, by this process or an earlier one);
//  2. moving the caller's processes into own/caplin-self, when all the
//     processes in own are the caller and its descendants (a cgroup
//     delegated to the caller, such as a systemd unit with Delegate=yes),
//     then enabling ctrls in own;
//  3. the nearest ancestor of own that already has ctrls enabled and lets
//     the caller make cgroups in it (a user's terminal scope in systemd:
//     its app.slice). Sandboxes there are outside own, and so outside the
//     limits set on own.
func makeV2(own cgLoc, ctrls []string, name string) (*cgroup, error) {
	v2Mu.Lock()
	defer v2Mu.Unlock()
	var errs []error
	mk := func(base cgLoc) (*cgroup, error) {
		sub := base.child(name)
		if err := os.Mkdir(sub.dir(), 0o755); err != nil {
			return nil, fmt.Errorf("cgroup2: %w", err)
		}
		return &cgroup{dir: sub.dir(), path: sub.path(), v2: true}, nil
	}
	base, inLeaf := own, path.Base(own.rel) == leafName && !own.top()
	if inLeaf {
		base = own.parent() // set up by step 2 before
	}
	err := enableControllers(base, ctrls)
	if err == nil {
		return mk(base)
	}
	errs = append(errs, err)
	if !inLeaf {
		err := moveOwnToLeaf(own)
		if err == nil {
			err = enableControllers(own, ctrls)
		}
		if err == nil {
			return mk(own)
		}
		errs = append(errs, err)
	}
	for a := base; !a.top(); {
		a = a.parent()
		enabled := fieldsOf(filepath.Join(a.dir(), "cgroup.subtree_control"))
		if !subset(ctrls, enabled) {
			continue
		}
		cg, err := mk(a)
		if err == nil {
			return cg, nil
		}
		errs = append(errs, err)
		break
	}
	return nil, errors.Join(errs...)
}

func subset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// enableControllers makes sure ctrls are enabled in base's
// cgroup.subtree_control.
func enableControllers(base cgLoc, ctrls []string) error {
	file := filepath.Join(base.dir(), "cgroup.subtree_control")
	enabled := fieldsOf(file)
	var add []string
	for _, c := range ctrls {
		if !slices.Contains(enabled, c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	err := writeCgroupFile(file, strings.Join(add, " "))
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("cgroup2: %s holds processes, so it cannot enable controllers for sub-cgroups: %w", base.dir(), err)
	}
	if err != nil {
		return fmt.Errorf("cgroup2: %w", err)
	}
	return nil
}

// moveOwnToLeaf moves every process in own into own/caplin-self, if each
// is the caller or its descendant.
func moveOwnToLeaf(own cgLoc) error {
	procs := filepath.Join(own.dir(), "cgroup.procs")
	leaf := own.child(leafName).dir()
	self := os.Getpid()
	for try := 0; try < 10; try++ {
		pids := fieldsOf(procs)
		if len(pids) == 0 {
			return nil
		}
		for _, f := range pids {
			pid, _ := strconv.Atoi(f)
			if !descends(pid, self) {
				return fmt.Errorf("cgroup2: %s holds process %d, which is not this process (%d) or its descendant, so its processes cannot be moved into a leaf; run in a cgroup of your own, such as systemd-run --user --scope -p Delegate=yes", own.dir(), pid, self)
			}
		}
		if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("cgroup2: %w", err)
		}
		for _, f := range pids {
			err := writeCgroupFile(filepath.Join(leaf, "cgroup.procs"), f)
			if err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("cgroup2: moving pid %s into %s: %w", f, leaf, err)
			}
		}
	}
	return fmt.Errorf("cgroup2: %s: processes keep appearing in it", own.dir())
}

// descends reports whether pid is ancestor or one of its descendants,
// following parent pids in /proc.
func descends(pid, ancestor int) bool {
	for i := 0; i < 64 && pid > 1; i++ {
		if pid == ancestor {
			return true
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return false
		}
		j := strings.LastIndexByte(string(b), ')')
		if j < 0 {
			return false
		}
		f := strings.Fields(string(b[j+1:]))
		if len(f) < 2 {
			return false
		}
		if pid, err = strconv.Atoi(f[1]); err != nil {
			return false
		}
	}
	return pid == ancestor
}

// writeFile writes value to an existing file (a cgroup interface file) in
// one write.
func writeCgroupFile(name, value string) error {
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// fieldsOf returns the words of a cgroup file: none if it cannot be read.
func fieldsOf(path string) []string {
	s, _ := kernel.ReadTrim(path)
	return strings.Fields(s)
}

// LimitSupport says, in one line, how this caller's sandboxes would have
// their pids, memory and cpu limits enforced here (a cgroup, an rlimit, or
// not at all, and why), and whether all three would be whole. It makes
// and removes a cgroup to find out.
func LimitSupport() (detail string, ok bool) {
	lim, dropped, err := newLimiter(Limits{Pids: 64, Memory: 1 << 30, CPU: 1}, os.Geteuid(), true)
	if err != nil {
		return err.Error(), false
	}
	defer lim.close()
	var parts []string
	for _, c := range []string{"pids", "memory", "cpu"} {
		if how, found := lim.how[c]; found && !strings.Contains(how, "RLIMIT_AS") {
			if strings.HasPrefix(how, "cgroup") {
				how = strings.Fields(how)[0] // not the directory, made for this probe
			}
			parts = append(parts, c+": "+how)
		}
	}
	parts = append(parts, dropped...)
	return strings.Join(parts, "; "), len(dropped) == 0
}
