// Package borrow lends a dir.Dir's descriptor to the packages under dir/
// that build on Dir from above it (dir/export), without a method on Dir
// that would hand the descriptor to every importer.
//
// It imports no caplin package: package dir sets FD when it is
// initialised, and only packages under dir/ can import this one.
package borrow

// FD, set by package dir, borrows the descriptor of d (a *dir.Dir) for
// the operation op and calls f with it; the descriptor stays open until f
// returns, even if d is closed meanwhile, and f must not keep it. It fails
// as d's own methods do (an error naming op, wrapping fs.ErrClosed for a
// closed Dir) without calling f.
var FD func(d any, op string, f func(fd int) error) error
