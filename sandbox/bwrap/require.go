package bwrap

import (
	"strings"
)

// Layers is a set of layers of confinement that a command line insists on
// (caplin run's --require): where the running kernel or its settings do
// not allow one, caplin run refuses to run rather than fall back to a
// sandbox without it.
type Layers uint

const (
	// LayerUserNS is the namespaces a sandbox is built in: user, mount,
	// pid, IPC, UTS, cgroup and network, and with them the private root.
	// Where user namespaces are not allowed, caplin run otherwise falls
	// back to Landlock, seccomp, no_new_privs and rlimits alone.
	LayerUserNS Layers = 1 << iota
	// LayerLandlock is Landlock, which a sandbox with namespaces applies
	// as a second layer and which BestEffort would otherwise drop where
	// the kernel lacks it.
	LayerLandlock
	// LayerSeccomp is the seccomp filter. Every sandbox has one; the name
	// is accepted so that a list can say so.
	LayerSeccomp
)

// layerNames are the layers' names on the command line, in order.
var layerNames = []struct {
	name  string
	layer Layers
}{{"userns", LayerUserNS}, {"landlock", LayerLandlock}, {"seccomp", LayerSeccomp}}

// ParseLayers reads a comma-separated list of layer names ("userns",
// "landlock", "seccomp", or "all" for every one).
func ParseLayers(s string) (Layers, error) {
	var ls Layers
	for _, w := range strings.Split(s, ",") {
		w = strings.TrimSpace(w)
		if w == "all" {
			ls |= LayerUserNS | LayerLandlock | LayerSeccomp
			continue
		}
		found := false
		for _, n := range layerNames {
			if n.name == w {
				ls |= n.layer
				found = true
			}
		}
		if !found {
			return 0, usagef("--require %s: unknown layer %q: want userns, landlock, seccomp or all, separated by commas", s, w)
		}
	}
	return ls, nil
}

// Has reports whether ls holds every layer of l.
func (ls Layers) Has(l Layers) bool { return ls&l == l }

// String returns the layers' names, separated by commas.
func (ls Layers) String() string {
	var names []string
	for _, n := range layerNames {
		if ls.Has(n.layer) {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}
