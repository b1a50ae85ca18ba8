// Package pty opens pseudo-terminals without looking up a path: the peer
// is opened from the master (TIOCGPTPEER, Linux 4.13), so no other devpts
// mounted over /dev/pts, and no file put there in between, can stand in
// for it (openpty(3) and github.com/creack/pty open it by its path).
package pty

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Open makes a pseudo-terminal of rows × cols (0 leaves the kernel's
// default): its master, non-blocking so that reads and writes go
// through Go's poller, and its peer, blocking as a terminal is, for a
// program's standard fds. Errors name the step and keep the errno.
func Open(rows, cols uint16) (master, peer *os.File, err error) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(m)
		return nil, nil, fmt.Errorf("unlocking a pseudo-terminal (TIOCSPTLCK): %w", err)
	}
	p, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		unix.Close(m)
		return nil, nil, fmt.Errorf("opening a pseudo-terminal's peer (TIOCGPTPEER): %w", errno)
	}
	if err := SetSize(m, rows, cols); err != nil {
		unix.Close(m)
		unix.Close(int(p))
		return nil, nil, err
	}
	return os.NewFile(uintptr(m), "/dev/ptmx"), os.NewFile(p, "pty"), nil
}

// SetSize sets the window size of the terminal fd, leaving a dimension
// that is 0 as it is: a viewer that does not know its size, or has none,
// changes nothing.
func SetSize(fd int, rows, cols uint16) error {
	cur, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil {
		return fmt.Errorf("terminal size (TIOCGWINSZ): %w", err)
	}
	next := *cur
	if rows > 0 {
		next.Row = rows
	}
	if cols > 0 {
		next.Col = cols
	}
	if next == *cur {
		return nil
	}
	if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &next); err != nil {
		return fmt.Errorf("terminal size (TIOCSWINSZ): %w", err)
	}
	return nil
}
