package proc

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Child memory. Typed calls place their arguments in the child themselves;
// these are for raw calls (Batch.Syscall) that need memory of their own.
// Reads and writes go over the control socket, so they work whatever the
// child's credentials (no ptrace access is needed).

// chunk is the most bytes one message moves.
const chunk = arenaReqSize - reqHeaderSize - 2*wireOpSize - 64

// Alloc maps n bytes of zeroed, readable and writable memory in the child
// and returns its address there.
func (h *Handle) Alloc(ctx context.Context, n int) (uintptr, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != nil {
		return 0, h.state
	}
	return h.allocLocked(ctx, n)
}

func (h *Handle) allocLocked(ctx context.Context, n int) (uintptr, error) {
	if n <= 0 {
		return 0, &os.SyscallError{Syscall: fmt.Sprintf("mmap %d bytes", n), Err: unix.EINVAL}
	}
	res, err := h.rawRun(ctx, func(e *encoder) {
		e.op(opSyscall, 0, unix.SYS_MMAP, 0, uint64(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	})
	if err != nil {
		return 0, wrapMem("mmap", 0, n, err)
	}
	return uintptr(res[0][0]), nil
}

// Free unmaps memory that Alloc returned.
func (h *Handle) Free(ctx context.Context, addr uintptr, n int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != nil {
		return h.state
	}
	_, err := h.rawRun(ctx, func(e *encoder) { e.op(opSyscall, 0, unix.SYS_MUNMAP, uint64(addr), uint64(n)) })
	return wrapMem("munmap", addr, n, err)
}

// WriteMem copies p to child address addr.
func (h *Handle) WriteMem(ctx context.Context, addr uintptr, p []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != nil {
		return h.state
	}
	return h.writeMemLocked(ctx, addr, p)
}

func (h *Handle) writeMemLocked(ctx context.Context, addr uintptr, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), chunk)
		var b Batch
		b.WriteMem(addr, p[:n])
		if _, err := h.runLocked(ctx, &b); err != nil {
			return wrapMem("writemem", addr, n, err)
		}
		addr += uintptr(n)
		p = p[n:]
	}
	return nil
}

// ReadMem copies len(p) bytes at child address addr into p.
func (h *Handle) ReadMem(ctx context.Context, addr uintptr, p []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != nil {
		return h.state
	}
	for len(p) > 0 {
		n := min(len(p), chunk)
		req := append(h.req[:0], make([]byte, reqHeaderSize)...)
		binary.LittleEndian.PutUint64(req[8:], uint64(addr))
		binary.LittleEndian.PutUint64(req[16:], uint64(n))
		_, errno, _, out, files, err := h.roundTrip(ctx, req, nil, 0, n, false, nil)
		closeAll(files)
		if err == nil && errno != 0 {
			err = errno
		}
		if err == nil && len(out) != n {
			err = unix.EFAULT // sendmsg from an unmapped address fails
		}
		if err != nil {
			return wrapMem("readmem", addr, n, err)
		}
		copy(p, out)
		addr += uintptr(n)
		p = p[n:]
	}
	return nil
}

func wrapMem(op string, addr uintptr, n int, err error) error {
	if err == nil {
		return nil
	}
	if errno, ok := err.(unix.Errno); ok {
		return &os.SyscallError{Syscall: fmt.Sprintf("%s %#x+%d", op, addr, n), Err: errno}
	}
	return err
}
