package probe

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/caplin-dev/caplin/cgroup"
	"github.com/caplin-dev/caplin/internal/kernel"
	"golang.org/x/sys/unix"
)

// cgroup2Mounts returns the mount points of cgroup2 file systems, from
// /proc/self/mountinfo.
func cgroup2Mounts() ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var mounts []string
	for _, m := range cgroup.ParseMounts(string(b)) {
		if m.V2 {
			mounts = append(mounts, m.Point)
		}
	}
	return mounts, nil
}

// ownCgroup2 returns caplin's cgroup in the cgroup2 hierarchy (the "0::"
// line of /proc/self/cgroup).
func ownCgroup2() (string, bool) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", false
	}
	lines, _ := cgroup.ParseProcCgroup(string(b))
	for _, ln := range lines {
		if ln.ID == 0 {
			return ln.Path, true
		}
	}
	return "", false
}

// Cgroup2 reports whether /sys/fs/cgroup is the unified cgroup v2
// hierarchy.
func Cgroup2(context.Context) Result {
	r := Result{
		Name:      "cgroup v2",
		MinKernel: "4.5",
		Without:   "limits use a cgroup v1 hierarchy where caplin may make cgroups in it (as root), else as without cgroup delegation",
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		r.Detail = "statfs /sys/fs/cgroup: " + errText(err)
		return r
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		r.OK = true
		ctrl, _ := kernel.ReadTrim("/sys/fs/cgroup/cgroup.controllers")
		if ctrl == "" {
			ctrl = "none"
		}
		r.Detail = "/sys/fs/cgroup is cgroup2 (unified); root controllers: " + ctrl
		return r
	}
	mounts, _ := cgroup2Mounts()
	switch {
	case st.Type == unix.TMPFS_MAGIC && len(mounts) > 0:
		r.Detail = fmt.Sprintf("hybrid hierarchy: cgroup v1 controllers under /sys/fs/cgroup, cgroup2 only at %s", strings.Join(mounts, ", "))
	case st.Type == unix.TMPFS_MAGIC:
		r.Detail = "cgroup v1 only: /sys/fs/cgroup is a tmpfs of v1 hierarchies"
	case len(mounts) > 0:
		r.Detail = fmt.Sprintf("/sys/fs/cgroup is not cgroup2 (file system magic %#x); cgroup2 is mounted at %s", st.Type, strings.Join(mounts, ", "))
	default:
		r.Detail = fmt.Sprintf("/sys/fs/cgroup is not cgroup2 (file system magic %#x), and no cgroup2 is mounted", st.Type)
	}
	return r
}

// CgroupDelegation reports whether caplin's own cgroup is delegated to the
// caller: whether it may move processes (cgroup.procs) and enable
// controllers for sub-cgroups (cgroup.subtree_control).
func CgroupDelegation(context.Context) Result {
	r := Result{
		Name:      "cgroup delegation",
		MinKernel: "4.5",
		Without:   "unless a cgroup v1 hierarchy serves (as root): --max-pids becomes RLIMIT_NPROC; --max-memory and --max-cpu are refused (exit 122) unless --best-effort, which makes memory a per-process RLIMIT_AS and drops cpu",
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		r.Detail = "not tried: /sys/fs/cgroup is not the unified cgroup2 hierarchy"
		return r
	}
	cg, ok := ownCgroup2()
	if !ok {
		r.Detail = "not tried: no cgroup2 line (0::) in /proc/self/cgroup"
		return r
	}
	dir := filepath.Join("/sys/fs/cgroup", cg)
	writable := func(name string) string {
		if err := unix.Faccessat(unix.AT_FDCWD, filepath.Join(dir, name), unix.W_OK, unix.AT_EACCESS); err != nil {
			return errText(err)
		}
		return ""
	}
	procs, subtree := writable("cgroup.procs"), writable("cgroup.subtree_control")
	ctrl, _ := kernel.ReadTrim(filepath.Join(dir, "cgroup.controllers"))
	if ctrl == "" {
		ctrl = "none"
	}
	who := fmt.Sprintf("uid %d", os.Geteuid())
	switch {
	case procs == "" && subtree == "":
		r.OK = true
		r.Detail = fmt.Sprintf("%s can write cgroup.procs and cgroup.subtree_control of its cgroup %s (controllers: %s)", who, cg, ctrl)
	case procs != "":
		r.Detail = fmt.Sprintf("%s cannot write %s/cgroup.procs: %s", who, cg, procs)
	default:
		r.Detail = fmt.Sprintf("%s cannot write %s/cgroup.subtree_control: %s", who, cg, subtree)
	}
	return r
}
