package proc

import (
	"context"
	"errors"
	"fmt"
)

// ForkShared is Fork from inside h of a child that shares h's child's
// memory instead of copying it: a server with an arena and a stack of its
// own, allocated in that memory, running alongside h's. Making it copies
// no page table, and its writes fault no copy-on-write; its exit tears
// nothing down. It must be the init of a new pid namespace (opts.NewPID):
// its exit then ends every process in it, none of which may run on the
// memory it frees, before the caller frees its arena and stack.
//
// The child must not be given calls that act on memory in ways that could
// reach h's (munmap of what it did not map, say): it is one address space
// with h. Where the shared memory is not available (NewUser, Direct, the
// race detector, arm64), ForkShared is Fork.
func (h *Handle) ForkShared(ctx context.Context, opts *Options) (*Handle, error) {
	if h.peer != nil {
		return nil, ErrPeer
	}
	if opts == nil || !opts.NewPID {
		return nil, errors.New("proc: ForkShared: the child must be the init of a new pid namespace (Options.NewPID)")
	}
	_, parent := h.childParent(opts)
	if !spawnVM || raceBuild || opts.NewUser || opts.From == Direct || (parent != nil && parent != h && parent.pidns) {
		return h.Fork(ctx, opts)
	}
	region, err := h.region(ctx)
	if err != nil {
		return nil, fmt.Errorf("proc: fork: the shared child's arena: %w", err)
	}
	child, err := h.forkat(ctx, opts, false, region, nil)
	if err != nil {
		// A child made before the failure was killed, but may not be
		// gone yet: its region is unmapped, not used again.
		h.Free(context.Background(), region, sharedRegion)
		return nil, err
	}
	child.release = func() { h.putRegion(region) }
	return child, nil
}

// sharedRegion is the size of a ForkShared child's arena, stack and reap
// table.
const sharedRegion = arenaSize + sharedStackSize + reapTableSize

// maxSpareRegions bounds the regions a handle keeps for its next
// ForkShared children.
const maxSpareRegions = 4

// region returns a region for a ForkShared child of h's: one a child that
// is gone left, or a new one. Each ForkShared would otherwise cost two
// more round trips, an mmap and a munmap; a region that comes back is
// used afresh (opServe sets up the new server's state in it).
func (h *Handle) region(ctx context.Context) (uintptr, error) {
	h.regionsMu.Lock()
	if n := len(h.regions); n > 0 {
		r := h.regions[n-1]
		h.regions = h.regions[:n-1]
		h.regionsMu.Unlock()
		return r, nil
	}
	h.regionsMu.Unlock()
	return h.Alloc(ctx, sharedRegion)
}

// putRegion takes back the region of a ForkShared child that is gone,
// with every process that could have run on it.
func (h *Handle) putRegion(r uintptr) {
	h.regionsMu.Lock()
	if len(h.regions) < maxSpareRegions {
		h.regions = append(h.regions, r)
		h.regionsMu.Unlock()
		return
	}
	h.regionsMu.Unlock()
	h.Free(context.Background(), r, sharedRegion)
}
