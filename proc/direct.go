package proc

import (
	"context"
	"os"
)

// Direct calls. Every Batch call marked //proc:handle has a Handle method
// of the same name, generated into zcalls.go by gencalls (go generate):
// it runs the call alone, in one round trip, through run1. The few below
// are written by hand because they do more than return the call's result.

//go:generate go run ./internal/gencalls

// run1 runs b, which holds the one call whose result is v, and returns that
// result or the call's own error (an *os.PathError or *os.SyscallError)
// rather than a *BatchError around it.
func (h *Handle) run1(ctx context.Context, b *Batch, v Val) (int, error) {
	res, err := h.Run(ctx, b)
	res.Close()
	if err != nil {
		if be, ok := err.(*BatchError); ok && be.Len == 1 {
			return -1, be.Err
		}
		return -1, err
	}
	return res.Int(v), nil
}

// vals converts a Handle call's numbers into a Batch call's arguments.
func vals[T int | uintptr](xs []T, conv func(T) Val) []Val {
	vs := make([]Val, len(xs))
	for i, x := range xs {
		vs[i] = conv(x)
	}
	return vs
}

// TakeFile returns a copy of the child's fd as an *os.File the caller owns.
func (h *Handle) TakeFile(ctx context.Context, fd int) (*os.File, error) {
	var b Batch
	v := b.TakeFile(Int(fd))
	res, err := h.Run(ctx, &b)
	if err != nil {
		res.Close()
		if be, ok := err.(*BatchError); ok {
			return nil, be.Err
		}
		return nil, err
	}
	return res.File(v), nil
}

// Exit ends the child with status code and reaps nothing: wait on
// Process for the status.
func (h *Handle) Exit(ctx context.Context, code int) error {
	var b Batch
	_, err := h.run1(ctx, &b, b.Exit(code))
	if err == nil {
		h.mu.Lock()
		h.state = errClosed
		h.mu.Unlock()
	}
	return err
}
