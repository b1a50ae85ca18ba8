package mountctl

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/rpc/rpctest"
	"github.com/caplin-dev/caplin/served"
	"golang.org/x/sys/unix"
)

// fakeTable is a Table in memory. It checks what the handler promises
// (arguments checked and normalised; bind, unbind and revoke one at a
// time) and records any breach in bad.
type fakeTable struct {
	mu     sync.Mutex
	mounts map[string]*fakeMount
	calls  int // of Bind, Unbind and Revoke
	bad    []string

	running atomic.Int32
	// hold, if set, makes Bind wait for it, or for its context's end
	// (then it closes ended); so does Revoke.
	hold    chan struct{}
	entered chan struct{}
	ended   chan struct{}
}

type fakeMount struct {
	src     Source
	rights  served.Rights
	revoked bool
}

func newFake() *fakeTable { return &fakeTable{mounts: map[string]*fakeMount{}} }

func (f *fakeTable) breach(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bad = append(f.bad, fmt.Sprintf(format, args...))
}

// enter checks the handler's promises on a call that changes the table.
func (f *fakeTable) enter(op, dest string) func() {
	if n := f.running.Add(1); n != 1 {
		f.breach("%s %s: %d changes of the table at once", op, dest, n)
	}
	if !path.IsAbs(dest) || path.Clean(dest) != dest || dest == "/" || strings.IndexByte(dest, 0) >= 0 {
		f.breach("%s: dest %q not checked", op, dest)
	}
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	time.Sleep(50 * time.Microsecond) // so overlapping calls would overlap
	return func() { f.running.Add(-1) }
}

func (f *fakeTable) Bind(ctx context.Context, src Source, dest string, rights served.Rights) error {
	defer f.enter("bind", dest)()
	if rights == 0 || rights&^served.All != 0 {
		f.breach("bind %s: rights %#x", dest, uint32(rights))
	}
	if src.File == nil || src.Kind != SourceDir && src.Kind != SourceObject {
		f.breach("bind %s: source %+v", dest, src)
	}
	if err := f.wait(ctx); err != nil {
		src.File.Close()
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.mounts[dest]; ok {
		src.File.Close()
		return &fs.PathError{Op: "bind", Path: dest, Err: syscall.EEXIST}
	}
	f.mounts[dest] = &fakeMount{src: src, rights: rights}
	return nil
}

// wait waits, if the test set hold, for hold or ctx's end (then it closes
// ended and returns ctx's error).
func (f *fakeTable) wait(ctx context.Context) error {
	f.mu.Lock()
	hold := f.hold
	f.mu.Unlock()
	if hold == nil {
		return nil
	}
	close(f.entered)
	select {
	case <-hold:
		return nil
	case <-ctx.Done():
		close(f.ended)
		return ctx.Err()
	}
}

func (f *fakeTable) Unbind(ctx context.Context, dest string) error {
	defer f.enter("unbind", dest)()
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.mounts[dest]
	if !ok {
		return &fs.PathError{Op: "unbind", Path: dest, Err: syscall.ENOENT}
	}
	m.src.File.Close()
	delete(f.mounts, dest)
	return nil
}

func (f *fakeTable) Revoke(ctx context.Context, dest string) error {
	defer f.enter("revoke", dest)()
	if err := f.wait(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.mounts[dest]
	if !ok {
		return &fs.PathError{Op: "revoke", Path: dest, Err: syscall.ENOENT}
	}
	m.revoked = true
	return nil
}

// mount returns the mount at dest, if any.
func (f *fakeTable) mount(dest string) (fakeMount, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.mounts[dest]
	if !ok {
		return fakeMount{}, false
	}
	return *m, true
}

// changes returns how many times Bind, Unbind and Revoke were called.
func (f *fakeTable) changes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeTable) List() []Entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Entry
	for d, m := range f.mounts {
		out = append(out, Entry{Dest: d, Source: m.src.Name, Rights: m.rights, Revoked: m.revoked})
	}
	return out
}

// check fails the test for any breach of the handler's promises.
func (f *fakeTable) check(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range f.bad {
		t.Error(b)
	}
	f.bad = nil
}

// close closes the sources of the mounts left.
func (f *fakeTable) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for d, m := range f.mounts {
		m.src.File.Close()
		delete(f.mounts, d)
	}
}

// events records what a handler reports.
type events struct {
	mu  sync.Mutex
	got []served.Event
}

func (e *events) add(ev served.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, ev)
}

func (e *events) list() []served.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]served.Event(nil), e.got...)
}

func pair(t *testing.T, table Table, opts Options) Client {
	t.Helper()
	c, _ := rpctest.Pair(t, New(table, opts))
	return Client{c}
}

func openDir(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := OpenSource(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func sameFile(t *testing.T, a, b *os.File) bool {
	t.Helper()
	var sa, sb unix.Stat_t
	if err := unix.Fstat(int(a.Fd()), &sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(int(b.Fd()), &sb); err != nil {
		t.Fatal(err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

func TestBindRevokeUnbind(t *testing.T) {
	ctx := context.Background()
	table := newFake()
	defer table.close()
	var ev events
	c := pair(t, table, Options{Events: ev.add})
	tmp := t.TempDir()
	src := openDir(t, tmp)

	e, err := c.Bind(ctx, src, tmp, "/data/./", 0)
	if err != nil {
		t.Fatal(err)
	}
	want := Entry{Dest: "/data", Source: tmp, Rights: served.All}
	if e != want {
		t.Errorf("Bind = %+v, want %+v", e, want)
	}
	m, ok := table.mount("/data")
	if !ok || m.src.Kind != SourceDir || !sameFile(t, m.src.File, src) {
		t.Fatalf("the table got %+v, want the directory bound", m)
	}
	if m.src.File.Fd() == src.Fd() {
		t.Error("the table got the caller's own descriptor")
	}
	if _, err := c.Bind(ctx, src, "ro", "/ro", served.ReadOnly); err != nil {
		t.Fatal(err)
	}

	// A second bind at the same place: the Table's errno, its text.
	_, err = c.Bind(ctx, src, tmp, "/data", served.ReadOnly)
	if !errors.Is(err, syscall.EEXIST) || !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "bind /data") {
		t.Errorf("bind over a mount: %v, want EEXIST naming bind /data", err)
	}

	if err := c.Revoke(ctx, "/data"); err != nil {
		t.Fatal(err)
	}
	list, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantList := []Entry{{Dest: "/data", Source: tmp, Rights: served.All, Revoked: true}, {Dest: "/ro", Source: "ro", Rights: served.ReadOnly}}
	if fmt.Sprint(list) != fmt.Sprint(wantList) {
		t.Errorf("List = %+v, want %+v", list, wantList)
	}

	for _, d := range []string{"/data", "/ro"} {
		if err := c.Unbind(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	for _, op := range []func(context.Context, string) error{c.Unbind, c.Revoke} {
		err := op(ctx, "/data")
		var re *rpc.Error
		if !errors.Is(err, syscall.ENOENT) || !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &re) || re.Code != rpc.CodeFailed {
			t.Errorf("on no mount: %v, want CodeFailed with ENOENT", err)
		}
	}
	list, err = c.List(ctx)
	if err != nil || len(list) != 0 || list == nil {
		t.Errorf("List = %#v, %v; want an empty list", list, err)
	}

	// Every change that succeeded, reported with the caller's pid.
	var kinds []string
	for _, e := range ev.list() {
		kinds = append(kinds, e.Kind+" "+e.Mount)
		if e.PID != os.Getpid() || e.Time.IsZero() {
			t.Errorf("event %+v: want pid %d and a time", e, os.Getpid())
		}
	}
	if got, want := strings.Join(kinds, ", "), "bind /data, bind /ro, revoke /data, unbind /data, unbind /ro"; got != want {
		t.Errorf("events: %s\nwant: %s", got, want)
	}
	table.check(t)
}

// TestSources: a directory (any descriptor of it) or an rpc object's
// socket may be bound; nothing else reaches the table.
func TestSources(t *testing.T) {
	ctx := context.Background()
	table := newFake()
	defer table.close()
	c := pair(t, table, Options{})
	tmp := t.TempDir()

	// An object: what OpenSource connects to for a socket's path.
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: filepath.Join(tmp, "obj.sock"), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	obj := openDir(t, filepath.Join(tmp, "obj.sock"))
	if _, err := c.Bind(ctx, obj, "obj", "/obj", served.ReadOnly); err != nil {
		t.Fatal(err)
	}
	if m, _ := table.mount("/obj"); m.src.Kind != SourceObject {
		t.Errorf("a SOCK_SEQPACKET socket bound as %v, want object", m.src.Kind)
	}
	rd, err := os.Open(tmp) // not O_PATH
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if _, err := c.Bind(ctx, rd, "", "/rd", 0); err != nil {
		t.Fatal(err)
	}

	os.WriteFile(filepath.Join(tmp, "file"), nil, 0o644)
	file, err := os.Open(filepath.Join(tmp, "file"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	stream, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(tmp, "stream.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	streamFile, err := stream.File()
	if err != nil {
		t.Fatal(err)
	}
	defer streamFile.Close()
	listening, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	defer listening.Close()
	pathOfSocket, err := os.OpenFile(filepath.Join(tmp, "obj.sock"), unix.O_PATH, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pathOfSocket.Close()
	for _, tc := range []struct {
		name  string
		f     *os.File
		errno syscall.Errno
	}{
		{"a regular file", file, syscall.ENOTDIR},
		{"a stream socket", streamFile, syscall.EINVAL},
		{"a listening socket", listening, syscall.EINVAL},
		{"an O_PATH descriptor of a socket file", pathOfSocket, syscall.EINVAL},
		{"no descriptor", nil, syscall.EBADF},
	} {
		_, err := c.Bind(ctx, tc.f, "", "/x", 0)
		if !errors.Is(err, tc.errno) || !errors.Is(err, rpc.ErrInvalid) || !strings.Contains(err.Error(), "bind /x") {
			t.Errorf("bind of %s: %v, want CodeInvalid with %v naming bind /x", tc.name, err, tc.errno)
		}
	}
	if _, ok := table.mount("/x"); ok {
		t.Error("a refused source reached the table")
	}
	table.check(t)
}

// TestBadInput: arguments the handler refuses, each with its errno, and
// without the table being called or a descriptor being left open.
func TestBadInput(t *testing.T) {
	ctx := context.Background()
	table := newFake()
	defer table.close()
	c := pair(t, table, Options{})
	src := openDir(t, t.TempDir())

	long := "/" + strings.Repeat("a/", unix.PathMax/2+1)
	longName := "/d/" + strings.Repeat("n", 256)
	dests := []struct {
		dest  string
		errno syscall.Errno
	}{
		{"", syscall.EINVAL},
		{"relative", syscall.EINVAL},
		{"./data", syscall.EINVAL},
		{"/", syscall.EINVAL},
		{"//", syscall.EINVAL},
		{"/a/../..", syscall.EINVAL},
		{"/da\x00ta", syscall.EINVAL},
		{long, syscall.ENAMETOOLONG},
		{longName, syscall.ENAMETOOLONG},
	}
	before := testenv.OpenFDs(t)
	for range 3 {
		for _, d := range dests {
			_, err := c.Bind(ctx, src, "s", d.dest, 0)
			if !errors.Is(err, d.errno) || !errors.Is(err, rpc.ErrInvalid) {
				t.Errorf("bind at %.20q: %v, want CodeInvalid with %v", d.dest, err, d.errno)
			}
			for _, op := range []func(context.Context, string) error{c.Unbind, c.Revoke} {
				if err := op(ctx, d.dest); !errors.Is(err, d.errno) || !errors.Is(err, rpc.ErrInvalid) {
					t.Errorf("at %.20q: %v, want CodeInvalid with %v", d.dest, err, d.errno)
				}
			}
		}
		if _, err := c.Bind(ctx, src, "s", "/d", served.All+1); !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), "unknown rights") {
			t.Errorf("bind with unknown rights: %v, want EINVAL", err)
		}
		if _, err := c.Bind(ctx, src, "s\x00", "/d", 0); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("bind with a NUL in the source's name: %v, want EINVAL", err)
		}
		// Arguments of the wrong shape.
		for _, tc := range []struct {
			method string
			args   any
		}{
			{"unbind", 7},
			{"revoke", BindArgs{Dest: "/d"}},
			{"bind", "/d"},
			{"bind", map[string]any{"Dest": "/d", "Nonsense": 1}},
			{"bind", struct {
				Src    rpc.FD
				Dest   string
				Rights int
			}{rpc.FD{File: src}, "/d", -1}},
		} {
			if err := c.Call(ctx, tc.method, tc.args, nil); !errors.Is(err, rpc.ErrBadMessage) {
				t.Errorf("%s %#v: %v, want a bad message", tc.method, tc.args, err)
			}
		}
		if err := c.Call(ctx, "mount", "/d", nil); !errors.Is(err, rpc.ErrUnknownMethod) {
			t.Errorf("an unknown method: %v", err)
		}
	}
	if after := testenv.OpenFDs(t); after != before {
		t.Errorf("%d descriptors open after the refused calls, %d before", after, before)
	}
	if n := table.changes(); n != 0 {
		t.Errorf("the table was called %d times", n)
	}
	table.check(t)
}

// TestConcurrent: calls from many goroutines on several connections;
// the table sees its changes one at a time (the fake checks it).
func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	table := newFake()
	defer table.close()
	h := New(table, Options{})
	src := openDir(t, t.TempDir())
	var wg sync.WaitGroup
	for conn := range 3 {
		rc, _ := rpctest.Pair(t, h)
		c := Client{rc}
		for g := range 4 {
			wg.Go(func() {
				dest := fmt.Sprintf("/c%d/g%d", conn, g)
				for i := range 20 {
					if _, err := c.Bind(ctx, src, dest, dest, 0); err != nil {
						t.Errorf("bind %s: %v", dest, err)
						return
					}
					if i%2 == 0 {
						if err := c.Revoke(ctx, dest); err != nil {
							t.Errorf("revoke %s: %v", dest, err)
						}
					}
					if _, err := c.List(ctx); err != nil {
						t.Errorf("list: %v", err)
					}
					if err := c.Unbind(ctx, dest); err != nil {
						t.Errorf("unbind %s: %v", dest, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	if n := len(table.List()); n != 0 {
		t.Errorf("%d mounts left", n)
	}
	table.check(t)
}

// TestClientDies: a caller that goes away in the middle of a bind ends
// the bind's context, and lets the next caller change the table; a
// caller waiting for its turn gives up with its context.
func TestClientDies(t *testing.T) {
	ctx := context.Background()
	table := newFake()
	defer table.close()
	table.hold = make(chan struct{})
	table.entered = make(chan struct{})
	table.ended = make(chan struct{})
	var ev events
	h := New(table, Options{Events: ev.add})
	src := openDir(t, t.TempDir())

	dying, _ := rpctest.Pair(t, h)
	other, _ := rpctest.Pair(t, h)
	done := make(chan error, 1)
	go func() {
		_, err := Client{dying}.Bind(ctx, src, "d", "/dying", 0)
		done <- err
	}()
	select {
	case <-table.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the bind did not reach the table")
	}

	// Another caller waits for the turn, and gives up.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := (Client{other}).Unbind(short, "/dying"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("unbind while a bind runs: %v, want the deadline", err)
	}

	dying.Close()
	select {
	case <-table.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the bind's context did not end when its caller closed the object")
	}
	<-done
	table.mu.Lock()
	table.hold = nil // the next binds do not wait (the dying one has returned)
	table.mu.Unlock()
	if _, err := (Client{other}).Bind(ctx, src, "o", "/other", 0); err != nil {
		t.Fatalf("bind after the caller died: %v", err)
	}
	list, err := Client{other}.List(ctx)
	if err != nil || len(list) != 1 || list[0].Dest != "/other" {
		t.Errorf("List = %+v, %v; want /other alone", list, err)
	}
	if got := ev.list(); len(got) != 1 || got[0].Mount != "/other" {
		t.Errorf("events %+v, want the bind of /other only", got)
	}
	table.check(t)
}

// TestRevokeOutlivesCaller: a revoke whose caller goes away still
// finishes.
func TestRevokeOutlivesCaller(t *testing.T) {
	ctx := context.Background()
	table := newFake()
	defer table.close()
	h := New(table, Options{})
	src := openDir(t, t.TempDir())
	c, _ := rpctest.Pair(t, h)
	if _, err := (Client{c}).Bind(ctx, src, "s", "/data", 0); err != nil {
		t.Fatal(err)
	}
	table.mu.Lock()
	table.hold = make(chan struct{})
	table.entered = make(chan struct{})
	table.ended = make(chan struct{})
	hold := table.hold
	table.mu.Unlock()

	dying, _ := rpctest.Pair(t, h)
	go Client{dying}.Revoke(ctx, "/data")
	select {
	case <-table.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the revoke did not reach the table")
	}
	dying.Close()
	select {
	case <-table.ended:
		t.Fatal("the revoke's context ended with its caller")
	case <-time.After(200 * time.Millisecond):
	}
	close(hold)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if m, _ := table.mount("/data"); m.revoked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the revoke did not finish")
		}
	}
	table.check(t)
}

// TestOpenSource: a directory is opened O_PATH, a socket's path is
// connected to, anything else is an error with its errno.
func TestOpenSource(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	f, err := OpenSource(ctx, tmp)
	if err != nil {
		t.Fatal(err)
	}
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	f.Close()
	if err != nil || fl&unix.O_PATH == 0 {
		t.Errorf("flags %#x (%v), want O_PATH", fl, err)
	}
	os.WriteFile(filepath.Join(tmp, "file"), nil, 0o644)
	if _, err := OpenSource(ctx, filepath.Join(tmp, "file")); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("OpenSource of a file: %v, want ENOTDIR", err)
	}
	if _, err := OpenSource(ctx, filepath.Join(tmp, "none")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenSource of nothing: %v, want ENOENT", err)
	}
	// A socket nobody listens on any more.
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: filepath.Join(tmp, "gone.sock"), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := OpenSource(ctx, filepath.Join(tmp, "gone.sock")); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("OpenSource of a dead socket: %v, want ECONNREFUSED", err)
	}
}
