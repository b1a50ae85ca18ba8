package testenv

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"
)

// A LogBuffer collects what a logger writes, from any goroutine, for a
// test to read.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Logger returns a logger of every level that writes to b.
func (b *LogBuffer) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// DefaultLog makes slog.Default log every level to a new LogBuffer until
// the test ends, and returns the buffer: for tests that a package logs
// nothing there. slog.Default is the process's: such a test must not run
// in parallel with others.
func DefaultLog(t testing.TB) *LogBuffer {
	b := new(LogBuffer)
	old := slog.Default()
	slog.SetDefault(b.Logger())
	t.Cleanup(func() { slog.SetDefault(old) })
	return b
}
