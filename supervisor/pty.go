package supervisor

import (
	"fmt"
	"os"

	"github.com/caplin-dev/caplin/internal/pty"
)

// openPTY makes a pseudo-terminal of size ws: its master, which the
// supervisor reads and writes (non-blocking, in Go's poller), and its
// peer, for the program's standard fds.
func openPTY(ws Winsize) (master, peer *os.File, err error) {
	m, p, err := pty.Open(ws.Rows, ws.Cols)
	if err != nil {
		return nil, nil, fmt.Errorf("supervisor: %w", err)
	}
	return m, p, nil
}

// setSize sets the window size of the terminal fd, leaving a dimension
// that is 0 as it is.
func setSize(fd int, ws Winsize) error {
	if err := pty.SetSize(fd, ws.Rows, ws.Cols); err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	return nil
}

// Winsize is a terminal's size in characters. A 0 is "unknown": it
// leaves that dimension as it was.
type Winsize struct {
	Rows uint16 `json:",omitempty"`
	Cols uint16 `json:",omitempty"`
}
