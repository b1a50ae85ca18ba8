package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caplin-dev/caplin/cgroup"
	"github.com/caplin-dev/caplin/internal/kernel"
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
// matches ErrUnenforceable) unless best effort was asked for; then it is
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

// LimitError says that a limit cannot be enforced here, and why. It
// matches ErrUnenforceable (errors.Is).
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

// Is reports whether target is ErrUnenforceable.
func (e *LimitError) Is(target error) bool { return target == ErrUnenforceable }

// limiter enforces Limits on one sandbox: a cgroup (v2, v1 or both) that
// the sandbox's first process is moved into before it execs, and rlimits
// set in it.
type limiter struct {
	cgroups []*cgroup.Group
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

// newLimiter prepares l for one sandbox whose processes run as uid outside
// their user namespace (the caller's effective uid, for Build), making its
// cgroups. Limits that cannot be enforced are an error (*LimitError), or,
// with bestEffort, are listed in dropped, each entry naming the limit and
// why it was dropped or weakened. The caller closes the limiter.
//
// shared is empty for a sandbox with a user namespace of its own, where
// RLIMIT_NPROC counts its processes alone; otherwise it says whose
// processes the rlimit would count too (the fallback for Pids is then
// refused, or, with bestEffort, kept and said to be weakened).
func newLimiter(l Limits, uid int, bestEffort bool, shared string) (lim *limiter, dropped []string, err error) {
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
		h, herr := cgroup.Own()
		if herr != nil {
			for _, c := range want {
				why[c] = append(why[c], herr)
			}
		}
		var got []string
		lim.cgroups, got = cgroup.Make(h, want, why)
		for _, c := range got {
			cg := lim.cgroupFor(c)
			if err := setLimit(cg, c, l, quota, period); err != nil {
				return nil, nil, err
			}
			lim.how[c] = cg.Kind() + " " + cg.Dir
		}
		want = slices.DeleteFunc(want, func(c string) bool { return slices.Contains(got, c) })
	}
	// What no cgroup enforces: rlimits, or nothing.
	release, _, _ := kernel.Uname()
	rl, dropped, errs := rlimitPlan(l, want, why, uid, release, bestEffort, shared)
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
// cannot be enforced. release is the kernel's (uname -r); shared is
// newLimiter's.
func rlimitPlan(l Limits, left []string, why map[string][]error, uid int, release string, bestEffort bool, shared string) (rl []rlimit, dropped []string, errs []error) {
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
			case shared != "" && bestEffort:
				rl = append(rl, rlimit{"pids", "RLIMIT_NPROC", unix.RLIMIT_NPROC, uint64(l.Pids)})
				dropped = append(dropped, c+": weakened to RLIMIT_NPROC, which counts "+shared+": "+noCgroup(c))
			case shared != "":
				refuse(c, noCgroup(c)+", and RLIMIT_NPROC would count "+shared)
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
		if err := cg.Attach(pid); err != nil {
			return fmt.Errorf("sandbox: limits: moving pid %d into %s: %w", pid, cg.Dir, err)
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
		if cg.V2 {
			// cgroup.kill (Linux 5.14) kills everything in it at once,
			// processes forking meanwhile included.
			err := cg.Kill()
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("sandbox: limits: %w", err))
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, cg := range l.cgroups {
		if err := cg.Remove(deadline); err != nil {
			errs = append(errs, fmt.Errorf("sandbox: limits: %w", err))
		}
	}
	return errors.Join(errs...)
}

// OOMKills returns how many of the sandbox's processes the kernel's OOM
// killer has killed because the sandbox reached Limits.Memory: 0 without
// a memory limit, and while none has been. It counts with the cgroup that
// enforces the limit, and so is known only until Close removes it (0
// after); under the RLIMIT_AS fallback no process is killed (allocations
// fail instead) and it is 0.
func (s *Sandbox) OOMKills() int {
	if s.lim == nil {
		return 0
	}
	cg := s.lim.cgroupFor("memory")
	if cg == nil {
		return 0
	}
	n, _ := cg.OOMKills()
	return n
}

// cgroupFor returns the cgroup that enforces controller c.
func (l *limiter) cgroupFor(c string) *cgroup.Group {
	for _, cg := range l.cgroups {
		if slices.Contains(cg.Controllers, c) {
			return cg
		}
	}
	return nil
}

// setLimit writes the limit l sets for controller c into cg.
func setLimit(cg *cgroup.Group, c string, l Limits, quota, period int64) error {
	var err error
	switch c {
	case "pids":
		err = cg.SetPids(l.Pids)
	case "memory":
		err = cg.SetMemory(l.Memory)
	case "cpu":
		err = cg.SetCPU(quota, period)
	default:
		return fmt.Errorf("sandbox: limit %s: unknown controller", c)
	}
	if err != nil {
		return fmt.Errorf("sandbox: limit %s: %w", c, err)
	}
	return nil
}

// LimitSupport says, in one line, how this caller's sandboxes would have
// their pids, memory and cpu limits enforced here (a cgroup, an rlimit, or
// not at all, and why), and whether all three would be whole. It makes
// and removes a cgroup to find out.
func LimitSupport() (detail string, ok bool) {
	lim, dropped, err := newLimiter(Limits{Pids: 64, Memory: 1 << 30, CPU: 1}, os.Geteuid(), true, "")
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
