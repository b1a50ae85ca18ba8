package cgroup

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/kernel"
	"github.com/caplin-dev/caplin/internal/testenv"
	"golang.org/x/sys/unix"
)

// Sample /proc/self/mountinfo and /proc/self/cgroup contents.
const (
	// A hybrid system (this project's CI machine): v1 controllers, and
	// cgroup2 at /sys/fs/cgroup/unified with none of them.
	hybridMountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/root rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	hybridCgroup = `9:name=systemd:/
8:pids:/
4:memory:/process_api/5669c127
2:cpuacct:/
1:cpu:/
0::/
`
	// systemd, unified.
	unifiedMountinfo = `25 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	unifiedCgroup = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-1.scope\n"
	// A container: the host's cgroup mounted at its own cgroup, and v1
	// with co-mounted controllers at a path with a space.
	containerMountinfo = `600 500 0:30 /docker/abc /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw,nsdelegate
601 500 0:40 / /mnt/my\040cgroups/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
`
)

func TestFindHierarchies(t *testing.T) {
	for _, c := range []struct {
		name, mountinfo, cgroup string
		v2Dir, v2Path           string // "" for none
		v1                      map[string]string
	}{
		{"hybrid", hybridMountinfo, hybridCgroup, "/sys/fs/cgroup/unified", "/", map[string]string{
			"pids": "/sys/fs/cgroup/pids", "memory": "/sys/fs/cgroup/memory/process_api/5669c127",
			"cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct",
		}},
		{"unified", unifiedMountinfo, unifiedCgroup,
			"/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-1.scope",
			"/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-1.scope", nil},
		{"container", containerMountinfo, "3:cpu,cpuacct:/x\n0::/docker/abc/sub\n", "/sys/fs/cgroup/sub", "/docker/abc/sub", map[string]string{
			"cpu": "/mnt/my cgroups/cpu,cpuacct/x", "cpuacct": "/mnt/my cgroups/cpu,cpuacct/x",
		}},
		{"container, own root", containerMountinfo, "0::/docker/abc\n", "/sys/fs/cgroup", "/docker/abc", nil},
		{"outside the mounted subtree", containerMountinfo, "0::/docker/abcd\n", "", "", nil},
		{"deleted", unifiedMountinfo, "0::/gone (deleted)\n", "", "", nil},
		{"no cgroup2 mount", hybridMountinfo[:strings.Index(hybridMountinfo, "41 ")], hybridCgroup, "", "", map[string]string{
			"pids": "/sys/fs/cgroup/pids", "memory": "/sys/fs/cgroup/memory/process_api/5669c127",
			"cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct",
		}},
		{"v1 only", hybridMountinfo, "8:pids:/a/b\n", "", "", map[string]string{"pids": "/sys/fs/cgroup/pids/a/b"}},
	} {
		h, err := Find(c.cgroup, c.mountinfo)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if c.v2Dir == "" {
			if h.HasV2 || h.Why == "" {
				t.Errorf("%s: cgroup2 at %s, want none and a reason", c.name, h.V2.Dir())
			}
		} else if !h.HasV2 || h.V2.Dir() != c.v2Dir || h.V2.Path() != c.v2Path {
			t.Errorf("%s: cgroup2 %v %q %q, want %q %q (%s)", c.name, h.HasV2, h.V2.Dir(), h.V2.Path(), c.v2Dir, c.v2Path, h.Why)
		}
		v1 := map[string]string{}
		for k, loc := range h.V1 {
			v1[k] = loc.Dir()
		}
		if len(v1) != len(c.v1) {
			t.Errorf("%s: v1 %q, want %q", c.name, v1, c.v1)
		}
		for k, want := range c.v1 {
			if v1[k] != want {
				t.Errorf("%s: v1 %s at %q, want %q", c.name, k, v1[k], want)
			}
		}
	}
	// Walking up stops at the mount's root.
	h, _ := Find("0::/docker/abc/a/b\n", containerMountinfo)
	var up []string
	for a := h.V2; ; a = a.Parent() {
		up = append(up, a.Dir()+"="+a.Path())
		if a.Top() {
			break
		}
	}
	want := []string{"/sys/fs/cgroup/a/b=/docker/abc/a/b", "/sys/fs/cgroup/a=/docker/abc/a", "/sys/fs/cgroup=/docker/abc"}
	if !slices.Equal(up, want) {
		t.Errorf("up from /docker/abc/a/b: %q, want %q", up, want)
	}
}

func TestParseProcCgroup(t *testing.T) {
	lines, err := ParseProcCgroup("12:cpu,cpuacct:/a:b\n0::/\n")
	if err != nil || len(lines) != 2 || lines[0].ID != 12 || !slices.Equal(lines[0].Controllers, []string{"cpu", "cpuacct"}) ||
		lines[0].Path != "/a:b" || lines[1].ID != 0 || lines[1].Controllers != nil || lines[1].Path != "/" {
		t.Errorf("ParseProcCgroup: %+v %v", lines, err)
	}
	for _, bad := range []string{"0:/\n", "x::/\n", "0::relative\n"} {
		if _, err := ParseProcCgroup(bad); err == nil {
			t.Errorf("ParseProcCgroup(%q): no error", bad)
		}
	}
}

func TestParseMounts(t *testing.T) {
	ms := ParseMounts(hybridMountinfo + "garbage\n42 31 0:39 / /x rw - cgroup2\n")
	if len(ms) != 6 { // not the one without its fields
		t.Fatalf("%d cgroup mounts, want 6: %+v", len(ms), ms)
	}
	if m := ms[5]; !m.V2 || m.Point != "/sys/fs/cgroup/unified" || m.Root != "/" {
		t.Errorf("the cgroup2 mount: %+v", m)
	}
	if m := ms[0]; m.V2 || !slices.Equal(m.Options, []string{"rw", "cpu"}) {
		t.Errorf("the cpu mount: %+v", m)
	}
}

// TestCgroup2Leaf moves processes into a leaf the way makeV2 does for a
// caller whose cgroup must hand controllers to sandboxes: its own
// processes move; a process that is not its descendant stops it. It needs
// root, to make a cgroup to play the caller's.
func TestCgroup2Leaf(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	h, err := Own()
	if err != nil || !h.HasV2 {
		t.Skipf("no cgroup2 hierarchy: %v %s", err, h.Why)
	}
	own := h.V2.Child("caplin-test-" + strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(own.Dir(), 0o755); err != nil {
		t.Skip(err)
	}
	test := &Group{Dir: own.Dir(), Path: own.Path(), V2: true}
	defer test.Remove(time.Now().Add(5 * time.Second))
	leaf := &Group{Dir: own.Child(LeafName).Dir(), Path: own.Child(LeafName).Path(), V2: true}
	defer leaf.Remove(time.Now().Add(5 * time.Second))

	child := exec.Command("sleep", "100.123")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Wait()
	defer child.Process.Kill()
	if err := WriteFile(filepath.Join(own.Dir(), "cgroup.procs"), strconv.Itoa(child.Process.Pid)); err != nil {
		t.Fatal(err)
	}
	if err := MoveOwnToLeaf(own); err != nil {
		t.Fatal(err)
	}
	if procs := readTrim(filepath.Join(own.Dir(), "cgroup.procs")); procs != "" {
		t.Errorf("left in %s: %q", own.Dir(), procs)
	}
	if procs := readTrim(filepath.Join(leaf.Dir, "cgroup.procs")); procs != strconv.Itoa(child.Process.Pid) {
		t.Errorf("in the leaf: %q, want %d", procs, child.Process.Pid)
	}
	if !leaf.Holds(child.Process.Pid) || test.Holds(os.Getpid()) {
		t.Errorf("Holds: the leaf holds the child %v, the test cgroup holds the test %v", leaf.Holds(child.Process.Pid), test.Holds(os.Getpid()))
	}

	// An orphan (its parent exited) is not the caller's.
	out, err := exec.Command("sh", "-c", "sleep 100.456 </dev/null >/dev/null 2>&1 & echo $!").Output()
	if err != nil {
		t.Fatal(err)
	}
	orphan, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	if fd, err := unix.PidfdOpen(orphan, 0); err == nil {
		defer unix.Close(fd)
		defer unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	}
	if descends(orphan, os.Getpid()) || !descends(child.Process.Pid, os.Getpid()) || descends(1, os.Getpid()) {
		t.Errorf("descends: orphan %v, child %v, init %v", descends(orphan, os.Getpid()), descends(child.Process.Pid, os.Getpid()), descends(1, os.Getpid()))
	}
	if err := WriteFile(filepath.Join(own.Dir(), "cgroup.procs"), strconv.Itoa(orphan)); err != nil {
		t.Fatal(err)
	}
	if err := MoveOwnToLeaf(own); err == nil || !strings.Contains(err.Error(), "holds process "+strconv.Itoa(orphan)) {
		t.Errorf("MoveOwnToLeaf with an orphan in it: %v", err)
	}
	test.KillAll()
	if !testenv.Eventually(func() bool { return readTrim(filepath.Join(own.Dir(), "cgroup.procs")) == "" }) {
		t.Errorf("KillAll left %q", readTrim(filepath.Join(own.Dir(), "cgroup.procs")))
	}
}

// readTrim returns a cgroup file's contents, trimmed; "" if it cannot be
// read.
func readTrim(path string) string {
	s, _ := kernel.ReadTrim(path)
	return s
}

// TestOOMKills reads the OOM killer's count from memory.events (v2) and
// memory.oom_control (v1).
func TestOOMKills(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "memory.events"), []byte("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "memory.oom_control"), []byte("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n"), 0o644)
	if n, err := (&Group{Dir: dir, V2: true}).OOMKills(); n != 2 || err != nil {
		t.Errorf("v2: %d, %v; want 2", n, err)
	}
	if n, err := (&Group{Dir: dir}).OOMKills(); n != 5 || err != nil {
		t.Errorf("v1: %d, %v; want 5", n, err)
	}
	if _, err := (&Group{Dir: filepath.Join(dir, "gone"), V2: true}).OOMKills(); err == nil {
		t.Errorf("a removed cgroup: no error")
	}
}
