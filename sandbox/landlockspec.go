package sandbox

// Landlock derivation: the second layer, from the same grants as the
// sandbox's file system.

import (
	"log/slog"

	"github.com/caplin-dev/caplin/proc"
)

// landlockFor returns the Landlock policy with the same grants as spec's
// file system: the root read-only (or writable), each mount's tree with
// the access its kind gives. Landlock rules only add up, so a RemountRO or
// a Tmpfs that hides part of a writable grant is enforced by the mounts
// alone. It returns nil and what it dropped when Landlock is unavailable
// and spec.BestEffort allows that, logging to log that it did; and nil
// for a spec whose filter allows mounts (FilterPolicy.AllowMounts), which
// Landlock would refuse all the same.
func landlockFor(spec *Spec, log *slog.Logger) (*LandlockPolicy, []string, error) {
	if spec.Seccomp.AllowMounts {
		return nil, nil, nil
	}
	abi, err := LandlockABI()
	switch {
	case err != nil && !spec.BestEffort:
		return nil, nil, err // an *UnsupportedError
	case err != nil:
		log.Warn("sandbox: best effort: dropped Landlock, the second layer", "reason", err.Error())
		return nil, nil, nil
	}
	rootAccess := uint64(AccessRead)
	if spec.WritableRoot {
		rootAccess = AccessWrite
	}
	// The namespaces enforce the grants; Landlock is a second layer, so
	// an older ABI that lacks a right or a scope weakens that layer only:
	// what it drops is logged, not refused. No Landlock at all is refused
	// unless BestEffort.
	ll := &LandlockPolicy{
		BestEffort: true,
		Paths:      []PathGrant{{Path: "/", Access: rootAccess, Kind: PathDir}},
		// A network namespace of its own needs no TCP rules; the host's
		// is what NetHost asks for.
		AnyTCP:          true,
		AnyAbstractUnix: spec.Net == NetHost,
	}
	for i := range spec.Mounts {
		m := &spec.Mounts[i]
		gs, err := kindOf(m.Kind).landlock(i, m)
		if err != nil {
			return nil, nil, err
		}
		ll.Paths = append(ll.Paths, gs...)
	}
	// Find out now, before any process is made, whether the kernel can
	// enforce the policy.
	var probe proc.Batch
	dropped, err := ll.Record(&probe, abi)
	if err != nil {
		return nil, nil, err
	}
	return ll, dropped, nil
}
