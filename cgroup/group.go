package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
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
	"golang.org/x/sys/unix"
)

// A Group is one cgroup made by Make.
type Group struct {
	Dir         string   // where it is
	Path        string   // its path as /proc/PID/cgroup shows it
	V2          bool     // in the cgroup2 hierarchy, else in a v1 one
	Controllers []string // the controllers whose limits it holds
}

// Kind returns "cgroup2" or "cgroup1".
func (g *Group) Kind() string {
	if g.V2 {
		return "cgroup2"
	}
	return "cgroup1"
}

// SetPids sets the most processes (and threads) the group may hold.
func (g *Group) SetPids(n int) error {
	return g.write("pids.max", strconv.Itoa(n))
}

// SetMemory sets the most memory the group may use, in bytes, swap
// included where the kernel accounts for it.
func (g *Group) SetMemory(bytes int64) error {
	v := strconv.FormatInt(bytes, 10)
	if g.V2 {
		if err := g.write("memory.max", v); err != nil {
			return err
		}
		if g.exists("memory.swap.max") {
			return g.write("memory.swap.max", "0")
		}
		return nil
	}
	if err := g.write("memory.limit_in_bytes", v); err != nil {
		return err
	}
	if g.exists("memory.memsw.limit_in_bytes") {
		return g.write("memory.memsw.limit_in_bytes", v)
	}
	return nil
}

// OOMKills returns how many of the group's processes the kernel's OOM
// killer has killed for its memory limit: the oom_kill count of
// memory.events (v2) or memory.oom_control (v1, Linux 4.13).
func (g *Group) OOMKills() (int, error) {
	name := "memory.oom_control"
	if g.V2 {
		name = "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(g.Dir, name))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return 0, fmt.Errorf("cgroup: %s: oom_kill %q: %w", name, v, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("cgroup: %s: no oom_kill count", filepath.Join(g.Dir, name))
}

// SetCPU lets the group run quota microseconds of CPU time per period
// microseconds.
func (g *Group) SetCPU(quota, period int64) error {
	if g.V2 {
		return g.write("cpu.max", fmt.Sprintf("%d %d", quota, period))
	}
	if err := g.write("cpu.cfs_period_us", strconv.FormatInt(period, 10)); err != nil {
		return err
	}
	return g.write("cpu.cfs_quota_us", strconv.FormatInt(quota, 10))
}

// Attach moves process pid (as the caller's pid namespace numbers it)
// into the group; what it forks afterwards is in the group too.
func (g *Group) Attach(pid int) error {
	return g.write("cgroup.procs", strconv.Itoa(pid))
}

// Kill kills everything in a cgroup2 group at once, processes forking
// meanwhile included, by cgroup.kill (Linux 5.14); on an older kernel the
// error wraps fs.ErrNotExist. A v1 group has no cgroup.kill: KillAll
// and Remove do it one process at a time.
func (g *Group) Kill() error {
	if !g.V2 {
		return fmt.Errorf("cgroup.kill in cgroup v1 %s: %w", g.Dir, errors.ErrUnsupported)
	}
	return g.write("cgroup.kill", "1")
}

// Remove kills what is in the group until it is empty, then removes it;
// it gives up at deadline.
func (g *Group) Remove(deadline time.Time) error {
	for {
		err := unix.Rmdir(g.Dir)
		if err == nil || err == unix.ENOENT {
			return nil
		}
		if err != unix.EBUSY || time.Now().After(deadline) {
			return fmt.Errorf("removing cgroup %s: %w", g.Dir, err)
		}
		g.KillAll()
		time.Sleep(5 * time.Millisecond)
	}
}

// KillAll sends SIGKILL to each process in the group, through a pidfd
// opened before checking that the pid is in the group, so that a pid
// reused by a process elsewhere is never signalled.
func (g *Group) KillAll() {
	for _, f := range Fields(filepath.Join(g.Dir, "cgroup.procs")) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		if g.Holds(pid) {
			unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		}
		unix.Close(fd)
	}
}

// Holds reports whether process pid is in the group or below it.
func (g *Group) Holds(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false
	}
	lines, _ := ParseProcCgroup(string(b))
	for _, ln := range lines {
		if (ln.ID == 0) != g.V2 || !g.V2 && !slices.Contains(ln.Controllers, g.Controllers[0]) {
			continue
		}
		return ln.Path == g.Path || strings.HasPrefix(ln.Path, g.Path+"/")
	}
	return false
}

func (g *Group) write(name, value string) error {
	return WriteFile(filepath.Join(g.Dir, name), value)
}

func (g *Group) exists(name string) bool {
	_, err := os.Stat(filepath.Join(g.Dir, name))
	return err == nil
}

// v2Mu serializes the changes to the caller's cgroup2 layout: enabling
// controllers, moving the caller into a leaf.
var v2Mu sync.Mutex

// seq numbers the groups Make makes.
var seq atomic.Int64

// LeafName is the cgroup2 leaf that the caller's own processes are moved
// into when its cgroup must enable controllers for the groups Make makes
// ("no internal processes": a cgroup that hands controllers to children
// holds no processes itself).
const LeafName = "caplin-self"

// Make makes cgroups, named caplin-PID-N, for the controllers want (such
// as "pids", "memory", "cpu") in the hierarchies h: one cgroup2 group for
// those cgroup2 offers, and a v1 group per v1 hierarchy for the rest. It
// returns the groups and the controllers they hold; why no group has a
// controller is added to why. With only v1 groups, a bare cgroup2 group
// (no controllers) is made too where it can be, for its cgroup.kill.
// The caller removes the groups.
func Make(h Hierarchies, want []string, why map[string][]error) (groups []*Group, got []string) {
	name := fmt.Sprintf("caplin-%d-%d", os.Getpid(), seq.Add(1))
	if h.HasV2 {
		avail := Fields(filepath.Join(h.V2.Dir(), "cgroup.controllers"))
		var ctrls []string
		for _, c := range want {
			if slices.Contains(avail, c) {
				ctrls = append(ctrls, c)
			} else {
				why[c] = append(why[c], fmt.Errorf("cgroup2 %s: controller not available", h.V2.Dir()))
			}
		}
		if len(ctrls) > 0 {
			g, err := makeV2(h.V2, ctrls, name)
			if err == nil {
				g.Controllers = ctrls
				groups = append(groups, g)
				got = append(got, ctrls...)
			} else {
				for _, c := range ctrls {
					why[c] = append(why[c], err)
				}
			}
		}
	} else if h.Why != "" {
		for _, c := range want {
			why[c] = append(why[c], errors.New(h.Why))
		}
	}
	// The rest from v1 hierarchies (a hybrid system).
	for _, c := range want {
		if slices.Contains(got, c) {
			continue
		}
		loc, ok := h.V1[c]
		if !ok {
			why[c] = append(why[c], fmt.Errorf("no cgroup v1 hierarchy has %s", c))
			continue
		}
		sub := loc.Child(name)
		if i := slices.IndexFunc(groups, func(g *Group) bool { return g.Dir == sub.Dir() }); i >= 0 {
			// A hierarchy with several controllers (cpu,cpuacct).
			groups[i].Controllers = append(groups[i].Controllers, c)
			got = append(got, c)
			continue
		}
		if err := os.Mkdir(sub.Dir(), 0o755); err != nil {
			why[c] = append(why[c], fmt.Errorf("cgroup v1 %s: %w", c, err))
			continue
		}
		groups = append(groups, &Group{Dir: sub.Dir(), Path: sub.Path(), Controllers: []string{c}})
		got = append(got, c)
	}
	// With only v1 limits, a bare cgroup2 cgroup (no controllers, so no
	// layout rules apply) gives cgroup.kill for the teardown.
	if len(got) > 0 && h.HasV2 && !slices.ContainsFunc(groups, func(g *Group) bool { return g.V2 }) {
		sub := h.V2.Child(name)
		if os.Mkdir(sub.Dir(), 0o755) == nil {
			groups = append(groups, &Group{Dir: sub.Dir(), Path: sub.Path(), V2: true})
		}
	}
	return groups, got
}

// makeV2 makes cgroup2 cgroup name with controllers ctrls for a caller in
// cgroup own. The cgroup's parent must have ctrls in its
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
//     its app.slice). Groups there are outside own, and so outside the
//     limits set on own.
func makeV2(own Loc, ctrls []string, name string) (*Group, error) {
	v2Mu.Lock()
	defer v2Mu.Unlock()
	var errs []error
	mk := func(base Loc) (*Group, error) {
		sub := base.Child(name)
		if err := os.Mkdir(sub.Dir(), 0o755); err != nil {
			return nil, fmt.Errorf("cgroup2: %w", err)
		}
		return &Group{Dir: sub.Dir(), Path: sub.Path(), V2: true}, nil
	}
	base, inLeaf := own, path.Base(own.Rel) == LeafName && !own.Top()
	if inLeaf {
		base = own.Parent() // set up by step 2 before
	}
	err := enableControllers(base, ctrls)
	if err == nil {
		return mk(base)
	}
	errs = append(errs, err)
	if !inLeaf {
		err := MoveOwnToLeaf(own)
		if err == nil {
			err = enableControllers(own, ctrls)
		}
		if err == nil {
			return mk(own)
		}
		errs = append(errs, err)
	}
	for a := base; !a.Top(); {
		a = a.Parent()
		enabled := Fields(filepath.Join(a.Dir(), "cgroup.subtree_control"))
		if !subset(ctrls, enabled) {
			continue
		}
		g, err := mk(a)
		if err == nil {
			return g, nil
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
func enableControllers(base Loc, ctrls []string) error {
	file := filepath.Join(base.Dir(), "cgroup.subtree_control")
	enabled := Fields(file)
	var add []string
	for _, c := range ctrls {
		if !slices.Contains(enabled, c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	err := WriteFile(file, strings.Join(add, " "))
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("cgroup2: %s holds processes, so it cannot enable controllers for sub-cgroups: %w", base.Dir(), err)
	}
	if err != nil {
		return fmt.Errorf("cgroup2: %w", err)
	}
	return nil
}

// MoveOwnToLeaf moves every process in own into own/caplin-self
// (LeafName), if each is the caller or its descendant; else it fails,
// naming a process that is not.
func MoveOwnToLeaf(own Loc) error {
	procs := filepath.Join(own.Dir(), "cgroup.procs")
	leaf := own.Child(LeafName).Dir()
	self := os.Getpid()
	for try := 0; try < 10; try++ {
		pids := Fields(procs)
		if len(pids) == 0 {
			return nil
		}
		for _, f := range pids {
			pid, _ := strconv.Atoi(f)
			if !descends(pid, self) {
				return fmt.Errorf("cgroup2: %s holds process %d, which is not this process (%d) or its descendant, so its processes cannot be moved into a leaf; run in a cgroup of your own, such as systemd-run --user --scope -p Delegate=yes", own.Dir(), pid, self)
			}
		}
		if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("cgroup2: %w", err)
		}
		for _, f := range pids {
			err := WriteFile(filepath.Join(leaf, "cgroup.procs"), f)
			if err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("cgroup2: moving pid %s into %s: %w", f, leaf, err)
			}
		}
	}
	return fmt.Errorf("cgroup2: %s: processes keep appearing in it", own.Dir())
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

// WriteFile writes value to an existing file (a cgroup interface file)
// in one write, as the kernel wants it.
func WriteFile(name, value string) error {
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

// Fields returns the words of a cgroup file: none if it cannot be read.
func Fields(path string) []string {
	s, _ := kernel.ReadTrim(path)
	return strings.Fields(s)
}
