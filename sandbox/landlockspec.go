package sandbox

// Landlock derivation: the second layer, from the same grants as the
// sandbox's file system.

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// landlockFor returns the Landlock policy with the same grants as spec's
// file system: the root read-only (or writable), each mount's tree with
// the access its kind gives. Landlock rules only add up, so a RemountRO or
// a Tmpfs that hides part of a writable grant is enforced by the mounts
// alone. It returns nil and what it dropped when Landlock is unavailable
// and spec.BestEffort allows that, logging to log that it did.
func landlockFor(spec *Spec, log *slog.Logger) (*LandlockPolicy, []string, error) {
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
		g := PathGrant{Path: filepath.Clean(m.Dest), Kind: PathDir}
		switch m.Kind {
		case ROBind, Proc, ROBindData:
			g.Access = AccessRead
		case Bind, Tmpfs, Mqueue, BindData:
			g.Access = AccessWrite
		case DevBind:
			g.Access = AccessWrite
		case Dev:
			g.Access = AccessRead | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
		default:
			continue // in the root: the root's access
		}
		switch m.Kind {
		case ROBind, Bind, DevBind:
			st, err := statSource(m)
			if err != nil {
				if m.Try {
					continue
				}
				return nil, nil, fmt.Errorf("sandbox: %s: %w", describe(i, m), err)
			}
			if !st.IsDir() {
				g.Kind = PathFile
			}
		case BindData, ROBindData:
			g.Kind = PathFile
		}
		ll.Paths = append(ll.Paths, g)
		if m.Kind == Dev {
			// Its shm is a tmpfs for the program's own use.
			ll.Paths = append(ll.Paths, PathGrant{Path: filepath.Join(g.Path, "shm"), Access: AccessWrite, Kind: PathDir})
		}
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
