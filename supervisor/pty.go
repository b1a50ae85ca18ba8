package supervisor

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openPTY makes a pseudo-terminal of size ws: its master, which the
// supervisor reads and writes (non-blocking, in Go's poller), and its
// peer, for the program's standard fds (blocking, as a terminal is).
//
// The peer is opened from the master (TIOCGPTPEER, Linux 4.13) rather than
// by its /dev/pts path as openpty(3) and github.com/creack/pty do: no path
// is looked up, so no other devpts mounted over /dev/pts, and no file put
// there in between, can stand in for it.
func openPTY(ws Winsize) (master, peer *os.File, err error) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("supervisor: open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(m)
		return nil, nil, fmt.Errorf("supervisor: unlocking a pseudo-terminal (TIOCSPTLCK): %w", err)
	}
	p, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		unix.Close(m)
		return nil, nil, fmt.Errorf("supervisor: opening a pseudo-terminal's peer (TIOCGPTPEER): %w", errno)
	}
	if err := setSize(m, ws); err != nil {
		unix.Close(m)
		unix.Close(int(p))
		return nil, nil, err
	}
	return os.NewFile(uintptr(m), "/dev/ptmx"), os.NewFile(p, "pty"), nil
}

// setSize sets the window size of the terminal fd, leaving a dimension
// that is 0 as it is: a viewer that does not know its size, or has none,
// changes nothing.
func setSize(fd int, ws Winsize) error {
	cur, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil {
		return fmt.Errorf("supervisor: terminal size (TIOCGWINSZ): %w", err)
	}
	next := *cur
	if ws.Rows > 0 {
		next.Row = ws.Rows
	}
	if ws.Cols > 0 {
		next.Col = ws.Cols
	}
	if next == *cur {
		return nil
	}
	if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &next); err != nil {
		return fmt.Errorf("supervisor: terminal size (TIOCSWINSZ): %w", err)
	}
	return nil
}

// Winsize is a terminal's size in characters. A 0 is "unknown": it
// leaves that dimension as it was.
type Winsize struct {
	Rows uint16 `json:",omitempty"`
	Cols uint16 `json:",omitempty"`
}
