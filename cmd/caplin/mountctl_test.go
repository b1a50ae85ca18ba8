package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/rpc/mountctl"
	"github.com/caplin-dev/caplin/served"
	"golang.org/x/sys/unix"
)

// fakeControl is the script command "fakecontrol SOCKET EVENTS": a
// control object as caplin run --control serves it, over a mount table
// in memory, its events written where --events EVENTS would. It serves
// until SIGINT or SIGTERM, then writes what events are left and exits 0.
func fakeControl() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: fakecontrol SOCKET EVENTS")
		os.Exit(2)
	}
	events, err := openEvents(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakecontrol:", err)
		os.Exit(1)
	}
	ln, made, err := listen(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakecontrol:", err)
		os.Exit(1)
	}
	defer made.remove()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	h := mountctl.New(&memTable{mounts: map[string]mountctl.Entry{}}, mountctl.Options{Events: events.Event})
	srv := &rpc.Server{}
	go srv.Serve(ctx, ln, func(*unix.Ucred) rpc.Handler { return h })
	<-ctx.Done()
	srv.Shutdown(context.Background())
	if err := events.Close(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "fakecontrol:", err)
		os.Exit(1)
	}
}

// memTable is a mount table in memory, which names each source with its
// kind.
type memTable struct {
	mu     sync.Mutex
	mounts map[string]mountctl.Entry
}

func (m *memTable) Bind(ctx context.Context, src mountctl.Source, dest string, rights served.Rights) error {
	src.File.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.mounts[dest]; ok {
		return &fs.PathError{Op: "bind", Path: dest, Err: syscall.EEXIST}
	}
	m.mounts[dest] = mountctl.Entry{Dest: dest, Source: src.Kind.String() + " " + src.Name, Rights: rights}
	return nil
}

func (m *memTable) Unbind(ctx context.Context, dest string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.mounts[dest]; !ok {
		return &fs.PathError{Op: "unbind", Path: dest, Err: syscall.ENOENT}
	}
	delete(m.mounts, dest)
	return nil
}

func (m *memTable) Revoke(ctx context.Context, dest string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.mounts[dest]
	if !ok {
		return &fs.PathError{Op: "revoke", Path: dest, Err: syscall.ENOENT}
	}
	e.Revoked = true
	m.mounts[dest] = e
	return nil
}

func (m *memTable) List() []mountctl.Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []mountctl.Entry
	for _, e := range m.mounts {
		out = append(out, e)
	}
	return out
}

// TestOpenEvents: --events opens a file (0600, appended to) or an
// inherited descriptor open for writing; events arrive there as lines.
func TestOpenEvents(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/events"
	os.WriteFile(path, []byte("earlier\n"), 0o644)
	l, err := openEvents(path)
	if err != nil {
		t.Fatal(err)
	}
	l.Event(served.Event{Kind: "denied", Path: "a\nb"})
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 2 || lines[0] != "earlier" {
		t.Fatalf("file holds %q, want the earlier line and one event", b)
	}
	var e served.Event
	if err := json.Unmarshal([]byte(lines[1]), &e); err != nil || e.Path != "a\nb" {
		t.Errorf("event line %q: %v", lines[1], err)
	}
	fresh := t.TempDir() + "/fresh"
	l, err = openEvents(fresh)
	if err != nil {
		t.Fatal(err)
	}
	l.Close(ctx)
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("a new events file: %v, %v; want mode 0600", fi.Mode(), err)
	}

	// fd:N: a pipe's write end is taken (and closed by Close), not
	// passed on to programs.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	wfd, err := unix.Dup(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	l, err = openEvents(fmt.Sprintf("fd:%d", wfd))
	if err != nil {
		unix.Close(wfd)
		t.Fatal(err)
	}
	if fl, err := unix.FcntlInt(uintptr(wfd), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("fd:%d is not close-on-exec (%#x, %v)", wfd, fl, err)
	}
	l.Event(served.Event{Kind: "revoke", Mount: "/data"})
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(r) // EOF: Close closed the only write end
	if err != nil || !strings.Contains(string(got), `"kind":"revoke","mount":"/data"`) {
		t.Errorf("read %q, %v", got, err)
	}

	// Refused: a descriptor not open for writing, one not open, bad
	// syntax, a path that cannot be made.
	ro, err := unix.Open(os.DevNull, unix.O_RDONLY, 0) // openEvents closes it
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openEvents(fmt.Sprintf("fd:%d", ro)); !errors.Is(err, unix.EBADF) {
		t.Errorf("a read-only descriptor: %v, want EBADF", err)
	}
	if _, err := openEvents("fd:987"); !errors.Is(err, unix.EBADF) || !strings.Contains(err.Error(), "--events fd:987") {
		t.Errorf("a closed descriptor: %v, want EBADF naming --events fd:987", err)
	}
	if _, err := openEvents("fd:x"); !errors.As(err, new(*usageErr)) {
		t.Errorf("fd:x: %v, want a usage error", err)
	}
	if _, err := openEvents(t.TempDir() + "/no/such/dir/events"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a path in no directory: %v, want ENOENT", err)
	}
}
