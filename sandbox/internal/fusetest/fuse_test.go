package fusetest

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/proc"
	. "github.com/caplin-dev/caplin/sandbox"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hanwen/go-fuse/v2/splice"
	"golang.org/x/sys/unix"
)

// baseSpec grants the host's programs read-only, and a /dev.
func baseSpec() *Spec {
	spec := &Spec{Mounts: []Mount{{Kind: ROBind, Source: "/usr", Dest: "/usr"}}}
	for _, d := range []string{"/bin", "/lib", "/lib64", "/sbin"} {
		if _, err := os.Stat(d); err == nil {
			spec.Mounts = append(spec.Mounts, Mount{Kind: ROBind, Source: d, Dest: d})
		}
	}
	spec.Mounts = append(spec.Mounts, Mount{Kind: Dev, Dest: "/dev"})
	return spec
}

// run runs sh -c script in a sandbox of spec (sandbox.Run), and returns
// what it wrote to its stdout and stderr, and its exit status.
func run(t *testing.T, spec *Spec, script string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	outc := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		outc <- b
	}()
	s := spec.Clone()
	s.Files, s.Env = map[int]*os.File{1: w, 2: w}, []string{"PATH=/usr/bin:/bin"}
	st, err := Run(ctx, s, "/bin/sh", []string{"sh", "-c", script})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	return string(<-outc), st.ExitCode()
}

// memServer is a FUSEServer of a few read-only files in memory, served
// by go-fuse: a stand-in for package served's, which package sandbox does
// not link.
type memServer struct {
	files    map[string]string
	serveErr error  // Serve fails with it, if set
	options  string // MountOptions', if set

	mu     sync.Mutex
	served int           // how many times Serve was called
	uidMap []proc.IDMap  // what Serve was given
	done   chan struct{} // closed when the last server's loop has ended
}

func newMemServer(files map[string]string) *memServer {
	return &memServer{files: files, done: make(chan struct{})}
}

func (s *memServer) MountOptions() string {
	if s.options != "" {
		return s.options
	}
	return "allow_other,default_permissions"
}

// memRoot is the served root: the server's files, made when it is added.
type memRoot struct {
	fs.Inode
	files map[string]string
}

func (r *memRoot) OnAdd(ctx context.Context) {
	for name, data := range r.files {
		f := &fs.MemRegularFile{Data: []byte(data), Attr: fuse.Attr{Mode: 0o444}}
		r.AddChild(name, r.NewPersistentInode(ctx, f, fs.StableAttr{}), false)
	}
}

func (s *memServer) Serve(ctx context.Context, dev *os.File, uidMap, gidMap []proc.IDMap) error {
	s.mu.Lock()
	s.served++
	s.uidMap = uidMap
	s.mu.Unlock()
	if s.serveErr != nil {
		dev.Close()
		return s.serveErr
	}
	// go-fuse serves a descriptor by its number (/dev/fd/N), which it
	// then owns: a duplicate of dev's.
	fd, err := unix.FcntlInt(dev.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	dev.Close()
	if err != nil {
		return err
	}
	raw := fs.NewNodeFS(&memRoot{files: s.files}, &fs.Options{})
	srv, err := fuse.NewServer(raw, "/dev/fd/"+strconv.Itoa(fd), &fuse.MountOptions{})
	if err != nil {
		unix.Close(fd)
		return err
	}
	go func() {
		srv.Serve() // until the kernel ends the connection
		close(s.done)
	}()
	return nil
}

// settledFDs builds a sandbox (with a FUSE mount, reading a file served,
// if fuse), and closes it, so that what a process keeps open for good once it has
// (proc's zygote and its sockets, go-fuse's /dev/null) is open, and
// returns how many descriptors are open then, but for go-fuse's pool of
// pipes (waitFDs).
func settledFDs(t *testing.T, fuse bool) int {
	t.Helper()
	if !fuse {
		sb, err := Build(context.Background(), baseSpec())
		if err != nil {
			t.Fatal(err)
		}
		sb.Close()
		return testenv.OpenFDs(t)
	}
	srv := newMemServer(map[string]string{"f": strings.Repeat("x", 1<<16)})
	spec := baseSpec()
	spec.Mounts = append(spec.Mounts, Mount{Kind: FUSE, Dest: "/s", Server: srv})
	if out, code := run(t, spec, "cat /s/f | wc -c"); code != 0 || strings.TrimSpace(out) != "65536" {
		t.Fatalf("warming up: %d %q", code, out)
	}
	srv.waitDone(t)
	splice.ClearSplicePool()
	return testenv.OpenFDs(t)
}

// waitFDs is testenv.WaitFDs once go-fuse's pool of pipes is emptied.
func waitFDs(t *testing.T, want int) {
	t.Helper()
	splice.ClearSplicePool()
	testenv.WaitFDs(t, want)
}

// waitDone waits for the server's loop to end, as it does once the
// sandbox whose mount it serves is gone.
func (s *memServer) waitDone(t *testing.T) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the FUSE server still serves after its sandbox was closed")
	}
}

// TestFUSEMount builds a sandbox with two FUSE mounts, one in a
// directory the root's batch makes: the program reads the served files
// (so the servers were serving before anything looked inside), the
// server got the sandbox's ID maps, and once the sandbox is closed the
// servers end and nothing of the caller's is left open.
func TestFUSEMount(t *testing.T) {
	testenv.AlsoAsNobodyWithFUSE(t)
	fds := settledFDs(t, true)
	a := newMemServer(map[string]string{"hello.txt": "hello from the server\n"})
	b := newMemServer(map[string]string{"b.txt": "bee\n"})
	spec := baseSpec()
	spec.Mounts = append(spec.Mounts,
		Mount{Kind: FUSE, Dest: "/served", Server: a},
		Mount{Kind: FUSE, Dest: "/deep/er/b", Server: b})
	out, code := run(t, spec, `cat /served/hello.txt /deep/er/b/b.txt; ls /served; stat -c '%a %u' /served/hello.txt
(echo x > /served/new) 2>/dev/null && echo LEAK-written; :`)
	want := "hello from the server\nbee\nhello.txt\n444 0\n"
	if code != 0 || out != want {
		t.Errorf("the program: status %d, output %q, want %q", code, out, want)
	}
	a.mu.Lock()
	if a.served != 1 || len(a.uidMap) == 0 {
		t.Errorf("Serve called %d times, with uid map %v", a.served, a.uidMap)
	}
	a.mu.Unlock()
	a.waitDone(t)
	b.waitDone(t)
	waitFDs(t, fds)
}

// TestFUSEServeFails: a server that cannot serve fails the build with
// its error, and nothing is left open.
func TestFUSEServeFails(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs a /dev/fuse the caller may open: root")
	}
	fds := settledFDs(t, true)
	boom := errors.New("boom")
	good := newMemServer(map[string]string{"f": "f"})
	bad := newMemServer(nil)
	bad.serveErr = boom
	spec := baseSpec()
	spec.Mounts = append(spec.Mounts, Mount{Kind: FUSE, Dest: "/a", Server: good}, Mount{Kind: FUSE, Dest: "/b", Server: bad})
	sb, err := Build(context.Background(), spec)
	if err == nil {
		sb.Close()
		t.Fatal("built")
	}
	if !errors.Is(err, boom) {
		t.Errorf("err = %v, want the server's", err)
	}
	good.waitDone(t)
	waitFDs(t, fds)
}

// TestSandboxMountLive adds a FUSE mount while the program runs, which
// sees it, and detaches it, which the program sees too; then the cases
// where Mount and Unmount cannot.
func TestSandboxMountLive(t *testing.T) {
	testenv.AlsoAsNobodyWithFUSE(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fds := settledFDs(t, true)
	out, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	// A pipe in blocking mode, not os.Pipe's, which the runtime's poller
	// makes non-blocking: the program's read would fail with EAGAIN.
	var pfds [2]int
	if err := unix.Pipe2(pfds[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	goOn, tell := os.NewFile(uintptr(pfds[0]), "go on"), os.NewFile(uintptr(pfds[1]), "tell")
	defer tell.Close()
	spec := baseSpec()
	spec.Mounts = append(spec.Mounts, Mount{Kind: Dir, Dest: "/live"})
	spec.Files = map[int]*os.File{1: w, 2: w, 3: goOn}
	spec.Env = []string{"PATH=/usr/bin:/bin"}
	sb, err := Build(ctx, spec)
	w.Close()
	goOn.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	p, err := sb.Exec(ctx, "/bin/sh", []string{"sh", "-c", `echo ready
read x <&3; cat /live/hello.txt
read x <&3; ls /live | wc -l`})
	if err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewReader(out)
	line := func() string {
		s, _ := lines.ReadString('\n')
		return s
	}
	if got := line(); got != "ready\n" {
		t.Fatalf("the program: %q", got)
	}
	srv := newMemServer(map[string]string{"hello.txt": "hello, live\n"})
	if err := sb.Mount(ctx, Mount{Kind: FUSE, Dest: "/live", Server: srv}); err != nil {
		t.Fatal(err)
	}
	tell.Write([]byte("\n"))
	if got := line(); got != "hello, live\n" {
		t.Errorf("the program read %q from the new mount", got)
	}
	if err := sb.Unmount(ctx, "/live"); err != nil {
		t.Fatal(err)
	}
	tell.Write([]byte("\n"))
	if got := line(); strings.TrimSpace(got) != "0" {
		t.Errorf("after Unmount the program found %q entries", got)
	}
	if st, err := p.Wait(ctx); err != nil || st.ExitCode() != 0 {
		t.Errorf("the program: %v, %v", st, err)
	}
	srv.waitDone(t) // detached and unused: the kernel ended it

	if err := sb.Unmount(ctx, "/live"); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Unmount of what is not a mount: %v, want EINVAL", err)
	}
	if err := sb.Mount(ctx, Mount{Kind: Tmpfs, Dest: "/live"}); err == nil || !strings.Contains(err.Error(), "only FUSE") {
		t.Errorf("Mount of a tmpfs: %v", err)
	}
	// Not counting the signalfd a reaper holds while it waits for a
	// request (proc's awaitRequest), which comes and goes.
	initFDs := func() int {
		dir := "/proc/" + strconv.Itoa(sb.InitPid()) + "/fd"
		ents, err := os.ReadDir(dir)
		if err != nil {
			return -1 // not root: the init is not dumpable
		}
		n := 0
		for _, e := range ents {
			if l, err := os.Readlink(dir + "/" + e.Name()); err != nil || l != "anon_inode:[signalfd]" {
				n++
			}
		}
		return n
	}
	before := initFDs()
	if err := sb.Mount(ctx, Mount{Kind: FUSE, Dest: "/nowhere", Server: newMemServer(nil)}); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Mount on a missing directory: %v, want ENOENT", err)
	}
	bad := newMemServer(nil)
	bad.options = "no_such_option"
	if err := sb.Mount(ctx, Mount{Kind: FUSE, Dest: "/live", Server: bad}); !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "no_such_option") {
		t.Errorf("Mount with a bad mount option: %v, want EINVAL naming it", err)
	}
	if after := initFDs(); after != before {
		t.Errorf("the init holds %d descriptors after failed Mounts, %d before", after, before)
	}
	sb.Close()
	if err := sb.Mount(ctx, Mount{Kind: FUSE, Dest: "/live", Server: srv}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Mount after Close: %v", err)
	}
	out.Close()
	tell.Close()
	waitFDs(t, fds)

	one, err := Build(ctx, &Spec{AsPID1: true})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	if err := one.Mount(ctx, Mount{Kind: FUSE, Dest: "/", Server: srv}); err == nil || !strings.Contains(err.Error(), "no init") {
		t.Errorf("Mount without an init: %v", err)
	}
}
