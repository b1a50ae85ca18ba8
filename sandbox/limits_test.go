package sandbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/cgroup"
	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/pidfd"
	"golang.org/x/sys/unix"
)

// limitedSandbox is a sandbox under a limiter, running sh -c script.
type limitedSandbox struct {
	p   *pidfd.Process
	out *bufio.Scanner // the script's stdout and stderr, line by line
	end func()         // kills the sandbox and releases it
}

// startLimited is the one place these tests build and start a sandbox
// (Build's API is about to change): a baseSpec sandbox, put in lim's
// cgroups and given its rlimits before it execs sh -c script.
func startLimited(t *testing.T, lim *limiter, script string) *limitedSandbox {
	t.Helper()
	ctx := context.Background()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	spec := baseSpec()
	spec.Files = map[int]*os.File{1: w, 2: w}
	spec.Env = []string{"PATH=/usr/bin:/bin"}
	h, err := buildWith(ctx, spec, prepareAside(ctx, spec, discard, false), lim, optionsOf(nil))
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Exec(ctx, "/bin/sh", []string{"sh", "-c", script})
	if err != nil {
		h.Close()
		r.Close()
		t.Fatal(err)
	}
	s := &limitedSandbox{p: p, out: bufio.NewScanner(r)}
	s.end = func() {
		p.Kill()
		p.Wait(ctx)
		p.Close()
		h.Close()
		r.Close()
	}
	t.Cleanup(s.end)
	return s
}

// until reads output lines until one starts with want, and returns them
// all.
func (s *limitedSandbox) until(t *testing.T, want string) []string {
	t.Helper()
	type result struct {
		lines []string
		ok    bool
	}
	c := make(chan result, 1)
	go func() {
		var lines []string
		for s.out.Scan() {
			lines = append(lines, s.out.Text())
			if strings.HasPrefix(s.out.Text(), want) {
				c <- result{lines, true}
				return
			}
		}
		c <- result{lines, false}
	}()
	select {
	case r := <-c:
		if !r.ok {
			t.Fatalf("output ended without %q:\n%s", want, strings.Join(r.lines, "\n"))
		}
		return r.lines
	case <-time.After(60 * time.Second):
		s.end()
		t.Fatalf("no %q after 60s", want)
	}
	return nil
}

// uniqueSleep returns a length for sleep, in seconds, that no process but
// this run's uses: this test process's pid, which no other live process
// has, and random digits, so that two runs on one machine, or two tests of
// one run, never count each other's sleeps.
func uniqueSleep() string {
	return fmt.Sprintf("%d.%09d", 100000+os.Getpid(), rand.IntN(1e9))
}

// sleepsOf lists the live sleeps (not zombies) whose argument is secs,
// from uniqueSleep: the processes of this test's sandbox, and nobody
// else's. Only sleeps: the shells that start them hold secs in their
// scripts, and a shell that is about to exec a sleep would be counted
// twice.
func sleepsOf(secs string) []int {
	return testenv.LivePids(func(cmdline []byte) bool { return string(cmdline) == "sleep\x00"+secs+"\x00" })
}

// TestLimitsForkBomb runs a shell that forks sleeps until it cannot, under
// Pids: 20: forks fail at the limit, the host and another sandbox can
// still fork, and once the limiter is closed nothing is left.
func TestLimitsForkBomb(t *testing.T) {
	testenv.AlsoAsNobody(t)
	const n = 20
	lim, dropped, err := newLimiter(Limits{Pids: n}, os.Geteuid(), false, "")
	if errors.Is(err, ErrUnenforceable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer lim.close()
	if len(dropped) > 0 {
		t.Errorf("dropped without best effort: %q", dropped)
	}
	t.Logf("uid %d: pids by %s", os.Geteuid(), lim.how["pids"])
	marker := uniqueSleep()
	// The inner shell forks until fork fails; the outer one, the pid
	// namespace's init, stays and keeps the sleeps alive.
	s := startLimited(t, lim, `
sh -c 'i=0; while [ $i -lt 300 ]; do sleep `+marker+` & i=$((i+1)); echo started $i; done'
echo bomb=$?
echo ready
exec sleep `+marker)
	lines := s.until(t, "ready")
	started := 0
	for _, ln := range lines {
		if v, ok := strings.CutPrefix(ln, "started "); ok {
			started, _ = strconv.Atoi(v)
		}
	}
	out := strings.Join(lines, "\n")
	t.Logf("%d sleeps started under Pids: %d", started, n)
	// The inner and outer shells count too.
	if started < n-4 || started > n-2 {
		t.Errorf("%d sleeps started under Pids: %d, want %d:\n%s", started, n, n-2, out)
	}
	// dash says "Cannot fork" and exits 2; bash retries, then says
	// "fork: Resource temporarily unavailable".
	if strings.Contains(out, "bomb=0") || !strings.Contains(strings.ToLower(out), "fork") {
		t.Errorf("the bomb did not fail to fork:\n%s", out)
	}
	// (Processes in the middle of an exec show no command line.)
	if !testenv.Eventually(func() bool { return len(sleepsOf(marker)) >= started }) {
		t.Errorf("%d of its sleeps running, %d started", len(sleepsOf(marker)), started)
	}
	if cg := lim.cgroupFor("pids"); cg != nil {
		cur, _ := strconv.Atoi(readTrim(filepath.Join(cg.Dir, "pids.current")))
		if cur > n || cur < n-2 {
			t.Errorf("pids.current %d, limit %d", cur, n)
		}
		if ev := readTrim(filepath.Join(cg.Dir, "pids.events")); ev == "max 0" || ev == "" {
			t.Errorf("pids.events: %q, want forks refused", ev)
		}
	}
	// The host is fine, and so is another sandbox.
	if err := exec.Command("/bin/true").Run(); err != nil {
		t.Errorf("the host cannot fork: %v", err)
	}
	other := startLimited(t, nil, `i=0; while [ $i -lt `+strconv.Itoa(2*n)+` ]; do sleep 0.5 & i=$((i+1)); done; wait; echo done $i`)
	if lines := other.until(t, "done "+strconv.Itoa(2*n)); len(lines) != 1 {
		t.Errorf("an unlimited sandbox beside it: %q", lines)
	}
	// Closing the limiter kills what is in its cgroups, and removes them.
	cgs := lim.cgroups
	if err := lim.close(); err != nil {
		t.Fatal(err)
	}
	for _, cg := range cgs {
		if _, err := os.Stat(cg.Dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s left: %v", cg.Dir, err)
		}
	}
	if len(cgs) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := s.p.Wait(ctx)
		if err != nil || st.Signal != unix.SIGKILL {
			t.Errorf("the sandbox after close: %v %v, want killed", st, err)
		}
		if got := len(sleepsOf(marker)); got != 0 {
			t.Errorf("%d sleeps left after close", got)
		}
	}
	s.end()
	if !testenv.Eventually(func() bool { return len(sleepsOf(marker)) == 0 }) {
		t.Errorf("%d sleeps left after the sandbox ended", len(sleepsOf(marker)))
	}
}

// oomKills returns the number of OOM kills in cg.
func oomKills(t *testing.T, cg *cgroup.Group) int {
	file := "memory.oom_control"
	if cg.V2 {
		file = "memory.events"
	}
	for _, ln := range strings.Split(readTrim(filepath.Join(cg.Dir, file)), "\n") {
		if v, ok := strings.CutPrefix(ln, "oom_kill "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatalf("no oom_kill in %s/%s", cg.Dir, file)
	return 0
}

// TestLimitsMemory runs dd with a 256 MiB buffer under Memory: 64 MiB. In
// a cgroup the OOM killer kills it; under the RLIMIT_AS fallback (best
// effort only) its allocation fails.
func TestLimitsMemory(t *testing.T) {
	testenv.AlsoAsNobody(t)
	l := Limits{Memory: 64 << 20}
	lim, _, err := newLimiter(l, os.Geteuid(), false, "")
	if err != nil {
		var le *LimitError
		if !errors.As(err, &le) || le.Limit != "memory" || !errors.Is(err, ErrUnenforceable) {
			t.Fatalf("not a memory *LimitError: %v", err)
		}
		t.Logf("uid %d: %v", os.Geteuid(), err)
		var dropped []string
		if lim, dropped, err = newLimiter(l, os.Geteuid(), true, ""); err != nil {
			t.Fatal(err)
		}
		if len(dropped) != 1 || !strings.HasPrefix(dropped[0], "memory: weakened to RLIMIT_AS") {
			t.Errorf("dropped: %q", dropped)
		}
	}
	defer lim.close()
	t.Logf("uid %d: memory by %s", os.Geteuid(), lim.how["memory"])
	const dd = `dd if=/dev/zero of=/dev/null bs=256M count=1 2>&1; echo dd=$?`
	lines := startLimited(t, lim, dd).until(t, "dd=")
	out := strings.Join(lines, "\n")
	if cg := lim.cgroupFor("memory"); cg != nil {
		if lines[len(lines)-1] != "dd=137" {
			t.Errorf("dd in a cgroup with memory.max 64 MiB: want it OOM-killed (SIGKILL, 137):\n%s", out)
		}
		if n := oomKills(t, cg); n < 1 {
			t.Errorf("%d OOM kills in %s", n, cg.Dir)
		}
	} else if lines[len(lines)-1] != "dd=1" || !strings.Contains(out, "memory exhausted") {
		t.Errorf("dd under RLIMIT_AS 64 MiB: want its allocation to fail:\n%s", out)
	}
	// Without the limit dd succeeds.
	if lines := startLimited(t, nil, dd).until(t, "dd="); lines[len(lines)-1] != "dd=0" {
		t.Errorf("dd without a limit:\n%s", strings.Join(lines, "\n"))
	}
}

// TestLimitsCPU runs a busy loop for a second of wall time under CPU: 0.2;
// it must get about a fifth of a second. Without a cgroup, CPU is refused,
// or dropped with best effort.
func TestLimitsCPU(t *testing.T) {
	testenv.AlsoAsNobody(t)
	lim, _, err := newLimiter(Limits{CPU: 0.2}, os.Geteuid(), false, "")
	if err != nil {
		var le *LimitError
		if !errors.As(err, &le) || le.Limit != "cpu" {
			t.Fatalf("not a cpu *LimitError: %v", err)
		}
		t.Logf("uid %d: %v", os.Geteuid(), err)
		lim, dropped, err := newLimiter(Limits{CPU: 0.2}, os.Geteuid(), true, "")
		if err != nil {
			t.Fatal(err)
		}
		lim.close()
		if len(dropped) != 1 || !strings.HasPrefix(dropped[0], "cpu: dropped: ") {
			t.Errorf("dropped: %q", dropped)
		}
		return
	}
	defer lim.close()
	t.Logf("uid %d: cpu by %s", os.Geteuid(), lim.how["cpu"])
	s := startLimited(t, lim, `echo spinning; while :; do :; done`)
	s.until(t, "spinning")
	start := cpuTime(t, s.p.Pid())
	time.Sleep(time.Second)
	used := cpuTime(t, s.p.Pid()) - start
	if used > 400*time.Millisecond || used < 50*time.Millisecond {
		t.Errorf("%v of CPU time in 1s under CPU: 0.2", used)
	}
}

// cpuTime returns the user and system time of process pid so far.
func cpuTime(t *testing.T, pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func TestRlimitPlan(t *testing.T) {
	why := map[string][]error{"pids": {errors.New("cgroup v1 pids: permission denied")}}
	l := Limits{Pids: 10, Memory: 1 << 20, CPU: 1}
	for _, c := range []struct {
		name       string
		left       []string
		uid        int
		release    string
		bestEffort bool
		rlimits    []int    // resources
		dropped    []string // prefixes
		refused    []string // limits
	}{
		{"nobody, 6.1", []string{"pids"}, 65534, "6.1.0-18-amd64", false, []int{unix.RLIMIT_NPROC}, nil, nil},
		{"root", []string{"pids"}, 0, "6.1.0", false, nil, nil, []string{"pids"}},
		{"root, best effort", []string{"pids"}, 0, "6.1.0", true, nil, []string{"pids: dropped: "}, nil},
		{"5.10", []string{"pids"}, 1000, "5.10.0-28-amd64", false, nil, nil, []string{"pids"}},
		{"5.14", []string{"pids"}, 1000, "5.14.0", false, []int{unix.RLIMIT_NPROC}, nil, nil},
		{"memory", []string{"memory"}, 1000, "6.1", false, nil, nil, []string{"memory"}},
		{"memory, best effort", []string{"memory"}, 1000, "6.1", true, []int{unix.RLIMIT_AS}, []string{"memory: weakened to RLIMIT_AS"}, nil},
		{"cpu", []string{"cpu"}, 1000, "6.1", false, nil, nil, []string{"cpu"}},
		{"cpu, best effort", []string{"cpu"}, 1000, "6.1", true, nil, []string{"cpu: dropped: "}, nil},
		{"all", []string{"pids", "memory", "cpu"}, 0, "6.1", false, nil, nil, []string{"pids", "memory", "cpu"}},
		{"cgroups did all", nil, 0, "4.19", false, nil, nil, nil},
	} {
		rl, dropped, errs := rlimitPlan(l, c.left, why, c.uid, c.release, c.bestEffort, "")
		var res []int
		for _, r := range rl {
			res = append(res, r.resource)
		}
		if !slices.Equal(res, c.rlimits) {
			t.Errorf("%s: rlimits %v, want %v", c.name, res, c.rlimits)
		}
		if len(dropped) != len(c.dropped) {
			t.Errorf("%s: dropped %q, want %q", c.name, dropped, c.dropped)
		}
		for i := range min(len(dropped), len(c.dropped)) {
			if !strings.HasPrefix(dropped[i], c.dropped[i]) {
				t.Errorf("%s: dropped %q, want %q", c.name, dropped[i], c.dropped[i])
			}
		}
		var refused []string
		for _, err := range errs {
			var le *LimitError
			if !errors.As(err, &le) || !errors.Is(err, ErrUnenforceable) || !strings.HasPrefix(err.Error(), "sandbox: limit "+le.Limit+": ") {
				t.Errorf("%s: %v: not a *LimitError", c.name, err)
				continue
			}
			refused = append(refused, le.Limit)
		}
		if !slices.Equal(refused, c.refused) {
			t.Errorf("%s: refused %q, want %q (%v)", c.name, refused, c.refused, errs)
		}
	}
	// The reasons say what is missing.
	_, _, errs := rlimitPlan(l, []string{"pids"}, why, 0, "6.1", false, "")
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "not enforced for root") || !strings.Contains(errs[0].Error(), "permission denied") {
		t.Errorf("root: %v", errs)
	}
	_, _, errs = rlimitPlan(l, []string{"pids"}, why, 1000, "5.10.0", false, "")
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "before Linux 5.14") {
		t.Errorf("5.10: %v", errs)
	}
	// Where RLIMIT_NPROC would count more than the sandbox (a template's
	// sandboxes, a Landlock-only one): refused, or weakened and said so.
	_, _, errs = rlimitPlan(l, []string{"pids"}, why, 1000, "6.1", false, "others' too")
	if len(errs) != 1 || !errors.Is(errs[0], ErrUnenforceable) || !strings.Contains(errs[0].Error(), "RLIMIT_NPROC would count others' too") {
		t.Errorf("shared: %v", errs)
	}
	rl, dropped, errs := rlimitPlan(l, []string{"pids"}, why, 1000, "6.1", true, "others' too")
	if len(errs) != 0 || len(rl) != 1 || rl[0].resource != unix.RLIMIT_NPROC || len(dropped) != 1 || !strings.HasPrefix(dropped[0], "pids: weakened to RLIMIT_NPROC, which counts others' too") {
		t.Errorf("shared, best effort: %v %v %q", errs, rl, dropped)
	}
	// NoFile is an rlimit everywhere, lowered to the caller's hard limit.
	rl, _, _ = rlimitPlan(Limits{NoFile: 1 << 40}, nil, nil, 0, "6.1", false, "")
	var cur unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &cur)
	if len(rl) != 1 || rl[0].resource != unix.RLIMIT_NOFILE || rl[0].value != cur.Max {
		t.Errorf("NoFile 1<<40: %+v, hard limit %d", rl, cur.Max)
	}
}

func TestLimitsBadInput(t *testing.T) {
	for _, l := range []Limits{{Pids: -1}, {Memory: -1}, {CPU: -0.5}, {CPU: math.NaN()}, {CPU: math.Inf(1)}, {CPU: 0.0001}, {NoFile: -1}} {
		if lim, _, err := newLimiter(l, 1000, true, ""); err == nil {
			lim.close()
			t.Errorf("%+v: no error", l)
		}
	}
	// No limits: nothing to do.
	lim, dropped, err := newLimiter(Limits{}, 0, false, "")
	if err != nil || len(dropped) > 0 || len(lim.cgroups) > 0 || len(lim.rlimits) > 0 {
		t.Errorf("Limits{}: %+v %q %v", lim, dropped, err)
	}
}

func TestCPUQuota(t *testing.T) {
	for _, c := range []struct {
		cpu           float64
		quota, period int64
	}{
		{1, 100000, 100000}, {0.5, 50000, 100000}, {2.5, 250000, 100000},
		{0.01, 1000, 100000}, {0.005, 5000, 1000000}, {0.001, 1000, 1000000},
	} {
		q, p, err := cpuQuota(c.cpu)
		if err != nil || q != c.quota || p != c.period {
			t.Errorf("cpuQuota(%g) = %d %d %v, want %d %d", c.cpu, q, p, err, c.quota, c.period)
		}
	}
	for _, bad := range []float64{0.0004, 1e30} {
		if _, _, err := cpuQuota(bad); err == nil {
			t.Errorf("cpuQuota(%g): no error", bad)
		}
	}
}

// TestEscapeForkBomb runs a fork bomb in a sandbox built with
// Spec.Limits.Pids, through Build like any caller: it is contained at
// the limit, and Close leaves nothing behind.
func TestEscapeForkBomb(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	spec := baseSpec()
	spec.Limits.Pids = 16
	r, w, _ := os.Pipe()
	defer r.Close()
	spec.Files = map[int]*os.File{1: w, 2: w}
	// The bomb's processes are sleeps of a length no other process uses.
	secs := uniqueSleep()
	sb, err := Build(ctx, spec)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	p, err := sb.Exec(ctx, "/bin/sh", []string{"sh", "-c", `
n=0
while [ $n -lt 200 ]; do
	sleep ` + secs + ` >/dev/null 2>&1 &
	n=$((n+1))
done
echo looped
`})
	if err != nil {
		t.Fatal(err)
	}
	// The shell stops, saying "Cannot fork", at the first fork the
	// limit refuses; the shells it started run on.
	out, _ := io.ReadAll(r)
	if !strings.Contains(string(out), "Cannot fork") {
		t.Errorf("no fork was refused; the shell said %q", out)
	}
	time.Sleep(300 * time.Millisecond)
	procs := len(sleepsOf(secs))
	if procs == 0 {
		t.Errorf("no bomb process running: the test cannot see them")
	}
	// The limit counts the init, the shell and the bomb's sleeps.
	if procs > spec.Limits.Pids || procs < spec.Limits.Pids-4 {
		t.Errorf("%d of the bomb's sleeps in a sandbox limited to %d processes", procs, spec.Limits.Pids)
	}
	t.Logf("%d of the bomb's sleeps ran under Pids: %d", procs, spec.Limits.Pids)
	p.Kill()
	p.Wait(ctx)
	p.Close()
	sb.Close()
	if !testenv.Eventually(func() bool { return len(sleepsOf(secs)) == 0 }) {
		t.Errorf("%d of the bomb's processes outlived Close", len(sleepsOf(secs)))
	}
}

// TestLimitsCgroupNamespaceRoot: a sandbox with cgroup limits makes its
// cgroup namespace once it is in the limits' cgroups, so that they are the
// namespace's roots. Made before, the roots would be their parents, and on
// cgroup v2 (which checks moves against the namespace's root) a program
// given a writable cgroup file system could move itself out of its limits
// into them. Inside, every hierarchy must show the root; outside, the
// program is in a cgroup of its own.
func TestLimitsCgroupNamespaceRoot(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	spec := baseSpec()
	spec.Limits = Limits{Pids: 64}
	spec.Env = []string{"PATH=/usr/bin:/bin"}
	lim, _, err := newLimiter(spec.Limits, os.Geteuid(), false, "")
	if err == nil && len(lim.cgroups) == 0 {
		err = errors.New("the limits are rlimits here, with no cgroup")
	}
	lim.close()
	if err != nil {
		t.Skip(err)
	}
	tmpl, err := NewTemplate(ctx, spec)
	if errors.Is(err, ErrUnenforceable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer tmpl.Close()
	for name, build := range map[string]func(files map[int]*os.File) (*Sandbox, error){
		"Build": func(files map[int]*os.File) (*Sandbox, error) {
			s := *spec
			s.Files = files
			return Build(ctx, &s)
		},
		"Template": func(files map[int]*os.File) (*Sandbox, error) { return tmpl.NewSandbox(ctx, files, nil) },
	} {
		r, w, _ := os.Pipe()
		sb, err := build(map[int]*os.File{1: w})
		w.Close()
		if err != nil {
			r.Close()
			t.Fatalf("%s: %v", name, err)
		}
		p, err := sb.Exec(ctx, "/bin/sh", []string{"sh", "-c", "cat /proc/self/cgroup; exec sleep 100"})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		sc := bufio.NewScanner(r)
		var inside []string
		for sc.Scan() {
			inside = append(inside, sc.Text())
			if strings.HasPrefix(sc.Text(), "0::") || len(inside) >= 16 {
				break
			}
		}
		outside, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p.Pid()))
		p.Kill()
		p.Wait(ctx)
		p.Close()
		sb.Close()
		r.Close()
		if len(inside) == 0 {
			t.Fatalf("%s: no /proc/self/cgroup from inside", name)
		}
		for _, ln := range inside {
			if !strings.HasSuffix(ln, ":/") {
				t.Errorf("%s: inside, %q is not its namespace's root; all:\n%s", name, ln, strings.Join(inside, "\n"))
			}
		}
		if !strings.Contains(string(outside), "caplin") {
			t.Errorf("%s: outside, the program is in no cgroup of caplin's:\n%s", name, outside)
		}
	}
}

// readTrim returns a cgroup file's contents, trimmed; "" if it cannot be
// read.
func readTrim(path string) string {
	s, _ := kernel.ReadTrim(path)
	return s
}

// TestOrphansDoNotCountAgainstPids: the orphans a sandbox's init is given
// are reaped as they exit (proc's reapers), not when the sandbox ends, so
// a program that leaves background processes behind many times over stays
// under Limits.Pids, in a sandbox built alone or from a template (with
// BestEffort, whose shared RLIMIT_NPROC where no cgroup takes the limit
// is enough for one sandbox); and its own exit status is still its.
func TestOrphansDoNotCountAgainstPids(t *testing.T) {
	testenv.AlsoAsNobody(t)
	spec := baseSpec()
	spec.Limits.Pids = 16
	spec.Env = []string{"PATH=/usr/bin:/bin"}
	// Each subshell exits at once, leaving its true to the init.
	script := `i=0; while [ $i -lt 60 ]; do (true &) || exit 1; sleep 0.01; i=$((i+1)); done
sleep 0.2; echo zombies=$(grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l); exit 7`
	for _, tmpl := range []bool{false, true} {
		t.Run(fmt.Sprint("template=", tmpl), func(t *testing.T) {
			var out string
			var code int
			if tmpl {
				var st *pidfd.State
				s := spec.Clone()
				s.BestEffort = true
				out, st = templateShell(t, s, script)
				code = st.ExitCode()
			} else {
				out, code = run(t, spec, script)
			}
			if code != 7 || !strings.Contains(out, "zombies=0") {
				t.Errorf("status %d, want 7; output:\n%s", code, out)
			}
		})
	}
}

// TestTemplatePidsShared: a template whose Pids limit no cgroup takes is
// refused at NewTemplate, not at each sandbox: the RLIMIT_NPROC fallback
// would count all its sandboxes together. Where a cgroup takes it, each
// sandbox has its own.
func TestTemplatePidsShared(t *testing.T) {
	testenv.AlsoAsNobody(t)
	lim, _, err := newLimiter(Limits{Pids: 16}, os.Geteuid(), false, "")
	cgroupTakesIt := err == nil && strings.HasPrefix(lim.how["pids"], "cgroup")
	if lim != nil {
		lim.close()
	}
	spec := baseSpec()
	spec.Limits.Pids = 16
	tmpl, err := NewTemplate(context.Background(), spec)
	switch {
	case cgroupTakesIt && err != nil:
		t.Errorf("with a pids cgroup: %v", err)
	case !cgroupTakesIt && (err == nil || !errors.Is(err, ErrUnenforceable) || !strings.Contains(err.Error(), "all the template's sandboxes together")):
		t.Errorf("without a pids cgroup: %v, want the shared rlimit refused", err)
	}
	if tmpl != nil {
		tmpl.Close()
	}
}
