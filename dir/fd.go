package dir

import (
	"io/fs"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ownedFD is a file descriptor that owns itself: operations borrow it with
// acquire and give it back with release, close marks it closed, and the
// descriptor is closed once, when it is closed and no operation holds it.
// A closed ownedFD never lends its number again, so an operation can never
// act on a descriptor number that Close freed and something else reused.
type ownedFD struct {
	fd int
	// state is the number of borrowers times 2, plus 1 once closed.
	state atomic.Int64
}

const fdClosed = 1

// acquire borrows the descriptor, or fails with fs.ErrClosed.
func (f *ownedFD) acquire() (int, error) {
	for {
		s := f.state.Load()
		if s&fdClosed != 0 {
			return -1, fs.ErrClosed
		}
		if f.state.CompareAndSwap(s, s+2) {
			return f.fd, nil
		}
	}
}

// release gives back a borrowed descriptor, closing it if it was the last
// borrower of a closed ownedFD.
func (f *ownedFD) release() {
	if f.state.Add(-2) == fdClosed {
		unix.Close(f.fd)
	}
}

// close marks the descriptor closed and closes it now if nothing borrows
// it, or else when the last borrower releases it. Only the first call
// does anything; it returns true then.
func (f *ownedFD) close() (first bool, err error) {
	for {
		s := f.state.Load()
		if s&fdClosed != 0 {
			return false, nil
		}
		if f.state.CompareAndSwap(s, s|fdClosed) {
			if s == 0 {
				return true, unix.Close(f.fd)
			}
			return true, nil
		}
	}
}
