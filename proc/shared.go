package proc

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/caplin-dev/caplin/pidfd"
	"golang.org/x/sys/unix"
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
func (h *Handle) ForkShared(ctx context.Context, opts *Options) (_ *Handle, err error) {
	if opts == nil || !opts.NewPID {
		return nil, errors.New("proc: ForkShared: the child must be the init of a new pid namespace (Options.NewPID)")
	}
	flags, parent := h.childParent(opts)
	if !spawnVM || raceBuild || opts.NewUser || opts.Direct || (parent != nil && parent != h && parent.reapTable != 0) {
		return h.Fork(ctx, opts)
	}
	const size = arenaSize + sharedStackSize
	region, err := h.Alloc(ctx, size)
	if err != nil {
		return nil, fmt.Errorf("proc: fork: the shared child's arena: %w", err)
	}
	freeRegion := func() { h.Free(context.Background(), region, size) }
	defer func() {
		if err != nil {
			freeRegion()
		}
	}()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	ours := fds[0]
	theirs := os.NewFile(uintptr(fds[1]), "ctrl")
	defer theirs.Close()
	defer func() {
		if err != nil {
			unix.Close(ours)
		}
	}()
	var cflags uint32
	if !opts.NoParentDeathSignal {
		cflags |= flagPdeathsig
	}
	var b Batch
	ctrl := b.PutFile(theirs, -1)
	ctrlNum := b.add(call{kind: opValue, name: "value", args: [6]Val{ctrl}})
	pid := b.add(call{kind: opServe, flags: cflags, name: "clone", args: [6]Val{Uint(uint64(flags)), Ptr(region), ctrl}})
	b.Close(ctrl)
	if h.reapTable != 0 && parent == h {
		b.add(call{kind: opTrack, name: "track", args: [6]Val{Ptr(h.reapTable), Int(reapEntries), pid}})
	}
	res, err := h.Run(ctx, &b)
	if err != nil {
		if res != nil && len(res.r) > 2 {
			// The child exists: kill it, and let its parent reap it.
			h.Run(context.Background(), killBatch(res.Int(pid)))
			res.Close()
		}
		return nil, err
	}
	pidfdFile := res.File(pid)
	if pidfdFile == nil {
		return nil, fmt.Errorf("proc: fork: child's pidfd did not arrive")
	}
	fd, err := takePidfd(pidfdFile)
	if err != nil {
		return nil, err
	}
	innerPid := res.Int(pid)
	p, err := pidfd.New(fd, 0, reaperFor(parent, innerPid))
	if err != nil {
		return nil, err
	}
	child := newHandle(ours, res.Int(ctrlNum), p)
	child.pidns = true
	child.noPdeath = opts.NoParentDeathSignal
	child.parent = parent
	child.arena = uint64(region)
	child.release = freeRegion
	return child, nil
}
