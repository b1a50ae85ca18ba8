// Package borrow lends a dir.Dir's descriptor to the packages under dir/
// that build on Dir from above it (dir/export), without a method on Dir
// that would hand the descriptor to every importer.
//
// It imports no caplin package: package dir installs the lender once,
// when it is initialised (Install), and only packages under dir/ can
// import this one.
package borrow

import "sync/atomic"

// A Lender borrows the descriptor of d (a *dir.Dir) for the operation op
// and calls f with it; the descriptor stays open until f returns, even if
// d is closed meanwhile, and f must not keep it. It fails as d's own
// methods do (an error naming op, wrapping fs.ErrClosed for a closed Dir)
// without calling f.
type Lender func(d any, op string, f func(fd int) error) error

var lender atomic.Pointer[Lender]

// Install sets the lender. Package dir calls it once, from init; a second
// call panics, so that nothing can replace dir's lender afterwards.
func Install(l Lender) {
	if !lender.CompareAndSwap(nil, &l) {
		panic("dir/internal/borrow: lender installed twice")
	}
}

// FD lends d's descriptor to f (see Lender).
func FD(d any, op string, f func(fd int) error) error {
	return (*lender.Load())(d, op, f)
}
