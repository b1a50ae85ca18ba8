package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/caplin-dev/caplin/served"
	"golang.org/x/sys/unix"
)

// eventsLimit is how many bytes --events writes at most, so that a
// program refused in a loop cannot fill the disk.
const eventsLimit = 64 << 20

// eventLog is where --events writes: one JSON line per event of the
// served mounts (served.EventWriter).
type eventLog struct {
	*served.EventWriter
	f *os.File
}

// openEvents opens what --events names: fd:N, an inherited descriptor
// (a pipe, say), or a file, created 0600 (the events name files the
// sandbox touched) and appended to. The caller closes it when the
// sandbox has ended.
func openEvents(arg string) (*eventLog, error) {
	f, err := inheritedFD(arg)
	if err != nil {
		return nil, fmt.Errorf("--events %w", err)
	}
	if f == nil {
		if arg == "" {
			return nil, usagef("--events: want a path or fd:N")
		}
		if f, err = os.OpenFile(arg, os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_NOCTTY, 0o600); err != nil {
			return nil, fmt.Errorf("--events: %w", err)
		}
	} else if fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); err == nil && fl&unix.O_ACCMODE == unix.O_RDONLY {
		f.Close()
		return nil, fmt.Errorf("--events %s: not open for writing: %w", arg, unix.EBADF)
	}
	// Inherited descriptors must not reach the sandbox's program.
	unix.CloseOnExec(int(f.Fd()))
	return &eventLog{EventWriter: served.NewEventWriterLimit(f, 0, eventsLimit), f: f}, nil
}

// Close writes the events still buffered (waiting for the reader at most
// until ctx ends; a line then says how many were dropped, as Dropped
// does) and closes the file.
func (l *eventLog) Close(ctx context.Context) error {
	err := l.EventWriter.Close(ctx)
	if cerr := l.f.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("--events: %w", cerr))
	}
	return err
}
