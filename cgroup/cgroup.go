// Package cgroup finds the caller's cgroups and makes, limits, fills and
// removes cgroups below them: the cgroup v2 hierarchy, v1 hierarchies (a
// hybrid system), or both.
//
// Finding: Own reads /proc/self/cgroup and /proc/self/mountinfo and
// returns where the caller's cgroups are and can be reached (Hierarchies);
// a cgroup outside the mounted subtree, another cgroup namespace's, is
// not. Making: Make makes the cgroups for a set of controllers, enabling
// controllers in the caller's cgroup2 cgroup when it may (see Make), and
// says why a controller has none. A Group is one cgroup made.
//
// It sits above internal/ and below sandbox, which enforces its Limits
// with it; caplin doctor reports through probe what it finds. It imports
// no caplin package but internal ones.
package cgroup

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/caplin-dev/caplin/internal/mountinfo"
)

// A Line is one line of /proc/PID/cgroup.
type Line struct {
	// ID is the hierarchy's ID: 0 for cgroup v2.
	ID int
	// Controllers are a v1 hierarchy's ("name=systemd" for a named one);
	// none for v2.
	Controllers []string
	// Path is the cgroup's path in the hierarchy.
	Path string
}

// ParseProcCgroup parses /proc/PID/cgroup.
func ParseProcCgroup(s string) ([]Line, error) {
	var out []Line
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
		out = append(out, Line{ID: n, Controllers: c, Path: p})
	}
	return out, nil
}

// A Mount is a cgroup or cgroup2 mount, from /proc/PID/mountinfo.
type Mount struct {
	Root    string   // the cgroup mounted there
	Point   string   // where
	V2      bool     // cgroup2
	Options []string // super options: a v1 hierarchy's controllers
}

// ParseMounts returns the cgroup and cgroup2 mounts in mountinfo, the
// contents of a /proc/PID/mountinfo.
func ParseMounts(info string) []Mount {
	var out []Mount
	for _, m := range mountinfo.Parse(info) {
		if m.FSType == "cgroup" || m.FSType == "cgroup2" {
			out = append(out, Mount{Root: m.Root, Point: m.Point, V2: m.FSType == "cgroup2", Options: m.Super})
		}
	}
	return out
}

// A Loc is a cgroup reachable through a mount: its directory is the
// mount point joined with Rel, its path (as /proc/PID/cgroup shows it) is
// the mount's root joined with Rel.
type Loc struct {
	Point, Root, Rel string
}

// Dir returns the cgroup's directory.
func (c Loc) Dir() string { return filepath.Join(c.Point, c.Rel) }

// Path returns the cgroup's path, as /proc/PID/cgroup shows it.
func (c Loc) Path() string { return path.Join(c.Root, c.Rel) }

// Top reports whether the cgroup is the mount's root, above which
// Parent cannot go.
func (c Loc) Top() bool { return c.Rel == "/" }

// Parent returns the cgroup's parent.
func (c Loc) Parent() Loc {
	c.Rel = path.Dir(c.Rel)
	return c
}

// Child returns the cgroup's child name.
func (c Loc) Child(name string) Loc {
	c.Rel = path.Join(c.Rel, name)
	return c
}

// Locate finds cgroup path p in mount m. A cgroup outside the mounted
// subtree (another cgroup namespace's, or a bind mount of part of the
// tree) is not reachable there.
func (m Mount) Locate(p string) (Loc, bool) {
	if strings.HasSuffix(p, " (deleted)") {
		return Loc{}, false
	}
	switch {
	case m.Root == "/":
		return Loc{m.Point, m.Root, p}, true
	case p == m.Root:
		return Loc{m.Point, m.Root, "/"}, true
	case strings.HasPrefix(p, m.Root+"/"):
		return Loc{m.Point, m.Root, p[len(m.Root):]}, true
	}
	return Loc{}, false
}

// Hierarchies is where a process's cgroups are.
type Hierarchies struct {
	V2    Loc
	HasV2 bool
	V1    map[string]Loc // controller → the process's cgroup there
	Why   string         // why there is no V2 location, if not
}

// Find locates a process's cgroups from its /proc/PID/cgroup and
// /proc/PID/mountinfo.
func Find(procCgroup, mountinfo string) (Hierarchies, error) {
	h := Hierarchies{V1: map[string]Loc{}}
	lines, err := ParseProcCgroup(procCgroup)
	if err != nil {
		return h, err
	}
	mounts := ParseMounts(mountinfo)
	h.Why = "no cgroup v2 line (0::) in /proc/self/cgroup"
	for _, ln := range lines {
		if ln.ID == 0 {
			h.Why = "cgroup v2 " + ln.Path + " is not reachable through any cgroup2 mount"
			for _, m := range mounts {
				if loc, ok := m.Locate(ln.Path); ok && m.V2 {
					h.V2, h.HasV2, h.Why = loc, true, ""
					break
				}
			}
			continue
		}
		for _, c := range ln.Controllers {
			if strings.HasPrefix(c, "name=") {
				continue
			}
			for _, m := range mounts {
				if m.V2 || !slices.Contains(m.Options, c) {
					continue
				}
				if loc, ok := m.Locate(ln.Path); ok {
					h.V1[c] = loc
					break
				}
			}
		}
	}
	return h, nil
}

// Own locates the caller's cgroups.
func Own() (Hierarchies, error) {
	c, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return Hierarchies{}, err
	}
	m, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return Hierarchies{}, err
	}
	return Find(string(c), string(m))
}
