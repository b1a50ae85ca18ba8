package remote

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"github.com/caplin-dev/caplin/dir"
	"github.com/caplin-dev/caplin/proc"
	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/rpc/directory"
	"github.com/caplin-dev/caplin/sandbox"
	"github.com/caplin-dev/caplin/supervisor"
	"golang.org/x/sys/unix"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/sshtest"
	"github.com/caplin-dev/caplin/internal/testenv"
)

func dial(t *testing.T, srv *sshtest.Server) *Host {
	t.Helper()
	ssh, dest := srv.Client(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h, err := Dial(ctx, dest, &Options{SSH: ssh, Logger: testenv.DefaultLog(t).Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func TestSpawnOutput(t *testing.T) {
	srv := sshtest.Start(t)
	h := dial(t, srv)
	ctx := context.Background()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Spawn(ctx, &Cmd{Args: []string{"/bin/sh", "-c", "echo hello from $(id -u); exit 3"}, Files: []*os.File{nil, w}})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	out, _ := io.ReadAll(r)
	e, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e.Code != 3 {
		t.Errorf("exit %v, want status 3", e)
	}
	want := "hello from " + itoa(os.Getuid()) + "\n"
	if string(out) != want {
		t.Errorf("output %q, want %q", out, want)
	}
	t.Logf("info: %+v", h.Info())
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestAgentCache: the agent is uploaded once, found by its hash after
// that, and uploaded again when the cached copy was modified.
func TestAgentCache(t *testing.T) {
	srv := sshtest.Start(t)
	h := dial(t, srv)
	path := h.Info().AgentPath
	h.Close()
	h2 := dial(t, srv)
	if h2.Info().Uploaded {
		t.Errorf("the second connection uploaded the agent again")
	}
	h2.Close()
	// Agents of other versions: an upload removes those that arrived
	// more than 30 days ago, and only those.
	dir := filepath.Dir(path)
	old, recent := filepath.Join(dir, "agent-old"), filepath.Join(dir, "agent-recent")
	for _, p := range []string{old, recent} {
		if err := os.WriteFile(p, []byte("another version"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	long := time.Now().Add(-40 * 24 * time.Hour)
	if err := os.Chtimes(old, long, long); err != nil {
		t.Fatal(err)
	}
	// Tamper with the cached agent: the next connection must notice and
	// replace it rather than run it.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("tampered")
	f.Close()
	h3 := dial(t, srv)
	if !h3.Info().Uploaded {
		t.Errorf("a tampered agent was run, not replaced")
	}
	if e, err := h3.Run(context.Background(), &Cmd{Args: []string{"/bin/true"}}); err != nil || e.Code != 0 {
		t.Fatalf("run /bin/true after the re-upload: %v %v", e, err)
	}
	want, _ := os.ReadFile(os.Args[0])
	got, _ := os.ReadFile(path)
	if !bytes.Equal(want, got) {
		t.Errorf("the cached agent is not this binary after the re-upload")
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an agent uploaded 40 days ago is still cached after an upload (%v)", err)
	}
	if _, err := os.Stat(recent); err != nil {
		t.Errorf("a recent agent of another version was removed: %v", err)
	}
}

// TestRefusedHostKey: a host whose key the client does not know as its
// own fails at once, with ssh's reason, and never waits for an answer.
func TestRefusedHostKey(t *testing.T) {
	srv := sshtest.Start(t)
	ssh, dest := srv.Client(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	t0 := time.Now()
	h, err := Dial(ctx, dest, &Options{SSH: ssh})
	if err == nil {
		h.Close()
		t.Fatal("connected to a host with the wrong key")
	}
	if !strings.Contains(err.Error(), "Host key verification failed") || ctx.Err() != nil {
		t.Errorf("error %q (after %v), want ssh's host key verification failure", err, time.Since(t0))
	}
}

// TestStreamBothWays: bytes from here through a program there and back
// (its stdin and stdout are this side's pipes) arrive whole, checked by
// hash: 1 GiB (64 MiB with -short, and in the re-run as uid 65534).
func TestStreamBothWays(t *testing.T) {
	srv := sshtest.Start(t)
	h := dial(t, srv)
	size := int64(1 << 30)
	if testing.Short() || testenv.AsNobody() { // the re-run checks the path, not the size
		size = 64 << 20
	}
	ctx := context.Background()
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	p, err := h.Spawn(ctx, &Cmd{Args: []string{"cat"}, Env: []string{"PATH=/usr/bin:/bin"}, Files: []*os.File{inR, outW}})
	inR.Close()
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	sent := sha256.New()
	t0 := time.Now()
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		src := io.LimitReader(rand.NewChaCha8([32]byte{1}), size)
		io.Copy(io.MultiWriter(inW, sent), bufio.NewReaderSize(readerOnly{src}, 1<<20))
		inW.Close()
	}()
	got := sha256.New()
	n, err := io.Copy(got, outR)
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(t0)
	<-wrote
	if n != size || !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		t.Fatalf("got %d bytes with another hash, want %d", n, size)
	}
	if e, err := p.Wait(ctx); err != nil || e.Code != 0 {
		t.Fatalf("cat: %v %v", e, err)
	}
	t.Logf("%d MiB there and back in %v (%.0f MiB/s)", size>>20, el, float64(size>>20)/el.Seconds())
}

type readerOnly struct{ io.Reader }

// TestSlowReaderStallsNoOther: a stream nobody reads fills its window
// and stops its writer there, while another stream of the same
// connection goes on.
func TestSlowReaderStallsNoOther(t *testing.T) {
	srv := sshtest.Start(t)
	h := dial(t, srv)
	ctx := context.Background()
	stuckR, stuckW, _ := os.Pipe()
	defer stuckR.Close()
	p1, err := h.Spawn(ctx, &Cmd{Args: []string{"/bin/sh", "-c", "exec yes"}, Env: []string{"PATH=/usr/bin:/bin"}, Files: []*os.File{nil, stuckW}})
	stuckW.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer p1.Close()
	time.Sleep(200 * time.Millisecond) // let it fill every buffer on the way
	outR, outW, _ := os.Pipe()
	p2, err := h.Spawn(ctx, &Cmd{Args: []string{"/bin/sh", "-c", "head -c 33554432 /dev/zero"}, Env: []string{"PATH=/usr/bin:/bin"}, Files: []*os.File{nil, outW}})
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	done := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, outR)
		done <- n
	}()
	select {
	case n := <-done:
		if n != 32<<20 {
			t.Fatalf("the second stream carried %d bytes, want 32 MiB", n)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("a stream nobody reads stalled another")
	}
}

// TestConnectionDrop: when the connection goes (ssh killed, as a network
// that drops it would end it), calls under way fail with a clear error
// here, and every process the agent built there dies within 5 s.
func TestConnectionDrop(t *testing.T) {
	srv := sshtest.Start(t)
	h := dial(t, srv)
	ctx := context.Background()
	// A process, and daemons it forks and double-forks: all must go.
	// Their command lines carry a mark of this test's own.
	mark := fmt.Sprintf("1000.%d%d", os.Getpid(), time.Now().UnixNano()%100000)
	r, w, _ := os.Pipe()
	p, err := h.Spawn(ctx, &Cmd{Args: []string{"/bin/sh", "-c", "sleep $1 & sh -c 'sleep $1 &' x $1; echo started; exec sleep $1", "sh", mark}, Env: []string{"PATH=/usr/bin:/bin"}, Files: []*os.File{nil, w}})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(r).ReadString('\n'); err != nil || line != "started\n" {
		t.Fatalf("the program said %q, %v", line, err)
	}
	mine := func(cmdline []byte) bool { return bytes.Contains(cmdline, []byte(mark)) }
	// The three sleeps (a process between fork and exec shows its
	// parent's command line, which has the mark too; one in execve may
	// show none for a moment): wait until they all are there.
	deadline := time.Now().Add(20 * time.Second)
	for len(testenv.LivePids(mine)) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of the program's sleeps run, want 3", len(testenv.LivePids(mine)))
		}
		time.Sleep(10 * time.Millisecond)
	}
	agent := h.Info().Pid
	waited := make(chan error, 1)
	go func() {
		_, err := p.Wait(ctx)
		waited <- err
	}()
	time.Sleep(100 * time.Millisecond)
	dropped := time.Now()
	h.kill()
	select {
	case err := <-waited:
		if err == nil || !strings.Contains(err.Error(), "wait") {
			t.Errorf("wait after the connection dropped: %v", err)
		}
		t.Logf("wait: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("a wait under way did not fail when the connection dropped")
	}
	// The program, its daemons and the agent are gone within 5 s (the
	// host is this machine, so its pids are in this pid namespace).
	deadline = dropped.Add(5 * time.Second)
	for alive(agent) || len(testenv.LivePids(mine)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the connection dropped, the agent runs (%v) and so do %v", alive(agent), testenv.LivePids(mine))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := h.Spawn(ctx, &Cmd{Args: []string{"/bin/true"}}); err == nil {
		t.Error("a spawn on a dropped connection succeeded")
	}
}

// alive reports whether pid runs (not a zombie: a process's end is its
// exit, whoever reaps it).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestObjectAcrossHosts: an rpc Directory served on the host, called
// from here: the files it opens come across as streams.
func TestObjectAcrossHosts(t *testing.T) {
	srv := sshtest.Start(t)
	h := dial(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := testenv.SharedTempDir(t)
	os.WriteFile(filepath.Join(root, "notes.txt"), []byte("remote notes\n"), 0o644)
	d, err := dir.Open(root, dir.All)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(root, "docs.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	go (&rpc.Server{}).Serve(ctx, ln, func(*unix.Ucred) rpc.Handler { return directory.New(d) })
	obj, err := h.Object(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	c, err := rpc.NewClient(obj, rpc.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dc := directory.Client{Client: c}
	defer dc.Close()
	f, err := dc.Open(ctx, "notes.txt", os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "remote notes\n" {
		t.Errorf("notes.txt read across hosts: %q", b)
	}
	if _, err := dc.Open(ctx, "../escape", os.O_RDONLY, 0); !errors.Is(err, syscall.EXDEV) {
		t.Errorf("an escape across hosts: %v, want EXDEV", err)
	}
	ents, err := dc.ReadDir(ctx, ".")
	if err != nil || len(ents) != 2 {
		t.Errorf("readdir across hosts: %v %v", ents, err)
	}
	// A file as an object (its type says so): random access across
	// hosts, where its descriptor would have crossed as a stream.
	fo, err := dc.OpenFile(ctx, "notes.txt", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fo.WriteAt(ctx, []byte("R"), 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	n, err := fo.ReadAt(ctx, buf, 7)
	st, serr := fo.Stat(ctx)
	fo.Close()
	var host unix.Stat_t
	unix.Stat(filepath.Join(root, "notes.txt"), &host)
	if err != nil || serr != nil || string(buf[:n]) != "notes" || st.Ino != host.Ino {
		t.Errorf("a file object across hosts: read %q (%v), stat ino %d (%v), the file's %d", buf[:n], err, st.Ino, serr, host.Ino)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "notes.txt")); string(b) != "Remote notes\n" {
		t.Errorf("the file holds %q", b)
	}
	if _, err := h.Object(ctx, filepath.Join(root, "missing.sock")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("a missing socket: %v, want ENOENT", err)
	}
}

// TestRemoteSandbox: a sandbox built there, from caplin run's command
// line, through the agent's supervisor, running a real program.
func TestRemoteSandbox(t *testing.T) {
	srv := sshtest.Start(t)
	h := dial(t, srv)
	ctx := context.Background()
	sup, err := h.Supervisor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sup.Close()
	r, w, _ := os.Pipe()
	args := []string{"--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
		"--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--", "/bin/sh", "-c", "echo $(hostname) $(id -u) $(ls /proc | grep -c '^[0-9]'); ls /home 2>&1; exit 7"}
	ra := supervisor.RunArgs{CommandLine: supervisor.CommandLine{Args: args, Env: h.Info().Env, Dir: "/"}, Stdout: rpc.NewFD(w)}
	var res supervisor.RunResult
	err = sup.Call(ctx, "run", ra, &res)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(r)
	if res.Code != 7 || res.Error != "" || res.Local != "" {
		t.Fatalf("run: %+v\n%s", res, out)
	}
	// Its own hostname and pid namespace (its init and itself, and ls
	// and grep), and no /home.
	if !strings.HasPrefix(string(out), "caplin "+strconv.Itoa(os.Getuid())+" ") || !strings.Contains(string(out), "No such file") {
		t.Errorf("the sandbox said %q", out)
	}
}

// TestAsNobody runs this package's connection tests again as uid 65534,
// logging in as the test account the namespaced sshd has (as root only:
// an unprivileged run is such a run already).
func TestAsNobody(t *testing.T) {
	if os.Getuid() != 0 || testenv.AsNobody() {
		t.Skip("runs as root, for uid 65534")
	}
	srv := sshtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	testenv.NobodyTests(ctx, t, "^(TestNoLeaks|TestSandboxFromSpec|TestSignalAndKillOnClose|TestRefusals|TestRemoteHandle|TestRemoteSpawn|TestSpawnOutput|TestAgentCache|TestRefusedHostKey|TestStreamBothWays|TestSlowReaderStallsNoOther|TestConnectionDrop|TestObjectAcrossHosts|TestRemoteSandbox)$", srv.Env())
}

// TestRemoteHandle: a child on the host built by system calls from here,
// as a local proc.Handle is: a batch with result references, files both
// ways, forkat into its user namespace, and an exec whose output comes
// back here.
func TestRemoteHandle(t *testing.T) {
	srv := sshtest.Start(t)
	h := dial(t, srv)
	ctx := context.Background()
	hd, err := h.Fork(ctx, &proc.Options{NewUser: true, NewNet: true})
	if err != nil {
		t.Fatal(err)
	}
	defer hd.Close()
	root := testenv.SharedTempDir(t)
	os.WriteFile(filepath.Join(root, "in"), []byte("remote bytes"), 0o644)

	var b proc.Batch
	fd := b.Openat(proc.AtFDCWD(), filepath.Join(root, "in"), unix.O_RDONLY, 0)
	buf := make([]byte, 12)
	b.Read(fd, buf)
	at := b.Dup3(fd, 20, 0)
	b.CloseFD(fd)
	uid := b.Getuid()
	var st unix.Stat_t
	b.Fstatat(proc.AtFDCWD(), "/proc/self/ns/user", &st, 0)
	res, err := hd.Run(ctx, &b)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf) != "remote bytes" || res.Int(at) != 20 || res.Int(uid) != 0 {
		t.Errorf("read %q, dup3 %d, uid %d", buf, res.Int(at), res.Int(uid))
	}
	// forkat: a child of that child, in its user namespace, on the host.
	c, err := hd.Fork(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var cst unix.Stat_t
	var b2 proc.Batch
	b2.Fstatat(proc.AtFDCWD(), "/proc/self/ns/user", &cst, 0)
	if _, err := c.Run(ctx, &b2); err != nil {
		t.Fatal(err)
	}
	if cst.Ino != st.Ino || cst.Ino == 0 {
		t.Errorf("the forked child's user namespace %d, its parent's %d", cst.Ino, st.Ino)
	}
	// A file in, a file back, and a program whose output comes here.
	r, w, _ := os.Pipe()
	var b3 proc.Batch
	b3.PutFile(w, 1)
	_, err = c.Run(ctx, &b3)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	var b4 proc.Batch
	b4.Syscall(unix.SYS_LSEEK, proc.Int(20), proc.Int(7), proc.Int(0))
	back := b4.TakeFile(proc.Int(20))
	if res, err = hd.Run(ctx, &b4); err != nil {
		t.Fatal(err)
	}
	if f := res.File(back); f == nil {
		t.Error("no file came back")
	} else {
		b, _ := io.ReadAll(f)
		f.Close()
		if string(b) != "bytes" { // from its offset there
			t.Errorf("the file taken back reads %q", b)
		}
	}
	p, err := c.ExecPath(ctx, "/bin/echo", []string{"echo", "from", "the", "host"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	out, _ := io.ReadAll(r)
	if e, err := p.Wait(ctx); err != nil || e.Code != 0 || string(out) != "from the host\n" {
		t.Errorf("exec: %v %v, output %q", e, err, out)
	}
	if _, err := c.Getpid(ctx); err == nil {
		t.Error("the handle works after its exec")
	}
	// An executable of this host's, sent and exec'd there by fd.
	c2, err := hd.Fork(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	r2, w2, _ := os.Pipe()
	var b5 proc.Batch
	b5.PutFile(w2, 1)
	_, err = c2.Run(ctx, &b5)
	w2.Close()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Open("/bin/echo")
	if err != nil {
		t.Fatal(err)
	}
	defer exe.Close()
	p2, err := c2.Exec(ctx, exe, []string{"echo", "sent", "here"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	out, _ = io.ReadAll(r2)
	if e, err := p2.Wait(ctx); err != nil || e.Code != 0 || string(out) != "sent here\n" {
		t.Errorf("exec of a file sent from here: %v %v, output %q", e, err, out)
	}
}

// TestSignalAndKillOnClose: a remote process is signalled from here, and
// closing its handle kills it.
func TestSignalAndKillOnClose(t *testing.T) {
	srv := sshtest.Start(t)
	h := dial(t, srv)
	ctx := context.Background()
	p, err := h.Spawn(ctx, &Cmd{Args: []string{"/bin/sleep", "100"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Signal(ctx, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if e, err := p.Wait(ctx); err != nil || e.Signal != int(syscall.SIGTERM) || e.ExitCode() != 143 {
		t.Errorf("after SIGTERM: %v %v", e, err)
	}
	q, err := h.Spawn(ctx, &Cmd{Args: []string{"/bin/sleep", "100"}})
	if err != nil {
		t.Fatal(err)
	}
	pid := q.Pid()
	q.Close()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d runs after its handle was closed", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRefusals: an agent of another protocol, and one for another
// machine, fail with one clear line each.
func TestRefusals(t *testing.T) {
	srv := sshtest.Start(t)
	ssh, dest := srv.Client(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Dial(ctx, dest, &Options{SSH: ssh, AgentArgs: []string{"agent-from-the-future"}})
	if err == nil || !strings.Contains(err.Error(), "speaks protocol 7 to 9") || !strings.Contains(err.Error(), "use one caplin version") {
		t.Errorf("an agent of protocol 7-9: %v", err)
	}
	// A copy of this binary marked as another machine's (e_machine).
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	other := uint16(0xb7) // EM_AARCH64
	if runtime.GOARCH == "arm64" {
		other = 0x3e // EM_X86_64
	}
	b[18], b[19] = byte(other), byte(other>>8)
	path := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = Dial(ctx, dest, &Options{SSH: ssh, Agent: path})
	if err == nil || !strings.Contains(err.Error(), "the host is") || !strings.Contains(err.Error(), "is for") {
		t.Errorf("an agent for another machine: %v", err)
	}
}

// TestSandboxFromSpec: a sandbox built there from a sandbox.Spec made
// here, its files forwarded, running a real program.
func TestSandboxFromSpec(t *testing.T) {
	srv := sshtest.Start(t)
	h := dial(t, srv)
	ctx := context.Background()
	r, w, _ := os.Pipe()
	spec := &sandbox.Spec{
		Mounts: []sandbox.Mount{
			{Kind: sandbox.ROBind, Source: "/usr", Dest: "/usr"},
			{Kind: sandbox.Symlink, Source: "usr/bin", Dest: "/bin"},
			{Kind: sandbox.Symlink, Source: "usr/lib", Dest: "/lib"},
			{Kind: sandbox.Symlink, Source: "usr/lib64", Dest: "/lib64"},
			{Kind: sandbox.Proc, Dest: "/proc"},
		},
		Files:    map[int]*os.File{1: w, 2: w},
		Hostname: "far",
		Env:      []string{"PATH=/usr/bin:/bin"},
	}
	p, err := h.Sandbox(ctx, spec, "/bin/sh", []string{"sh", "-c", "echo $(hostname) $(ls / | tr '\\n' ' '); ls /home"})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	out, _ := io.ReadAll(r)
	e, err := p.Wait(ctx)
	if err != nil || e.Code == 0 || !strings.HasPrefix(string(out), "far bin lib lib64 proc usr\n") || !strings.Contains(string(out), "No such file") {
		t.Errorf("exit %v %v, output %q", e, err, out)
	}
	// What is this host's and cannot be used there.
	ns, _ := os.Open("/proc/self/ns/user")
	defer ns.Close()
	if _, err := h.Sandbox(ctx, &sandbox.Spec{UserNS: ns}, "/bin/true", nil); err == nil || !strings.Contains(err.Error(), "cannot be used on another") {
		t.Errorf("a UserNS of this host's: %v", err)
	}
}

// TestDialGivesUp: a connection that never answers ends with ctx, its
// ssh killed, rather than hang.
func TestDialGivesUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := Dial(ctx, "nowhere", &Options{SSH: "sleep 100 #"})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 5*time.Second {
		t.Errorf("a host that never answers: %v after %v", err, time.Since(t0))
	}
	if _, err := Dial(context.Background(), "-oProxyCommand=x", nil); err == nil || !strings.Contains(err.Error(), "not an ssh destination") {
		t.Errorf("an option as the destination: %v", err)
	}
}

// TestNoLeaks: a connection used for processes, handles, objects and
// forwarded fds leaves no descriptor and no ssh process behind here once
// closed.
func TestNoLeaks(t *testing.T) {
	srv := sshtest.Start(t)
	ssh, dest := srv.Client(t, false)
	ctx := context.Background()
	// What earlier tests dropped is closed by finalizers: let them run,
	// so that the count starts from this test's own.
	runtime.GC()
	runtime.GC()
	time.Sleep(100 * time.Millisecond)
	before := testenv.OpenFDs(t)
	for range 3 {
		h, err := Dial(ctx, dest, &Options{SSH: ssh})
		if err != nil {
			t.Fatal(err)
		}
		r, w, _ := os.Pipe()
		p, err := h.Spawn(ctx, &Cmd{Args: []string{"/bin/echo", "x"}, Files: []*os.File{nil, w}})
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(r)
		r.Close()
		p.Wait(ctx)
		p.Close()
		hd, err := h.Fork(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hd.Getpid(ctx); err != nil {
			t.Fatal(err)
		}
		hd.Close()
		sup, err := h.Supervisor(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sup.Close()
		h.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for testenv.OpenFDs(t) > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d fds open before, %d after", before, testenv.OpenFDs(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRemoteSpawn: Spawn and SpawnPath from a remote handle, as from a
// local one: a child of its child, set up by a batch, exec'd there; a
// setup call that fails is a *proc.BatchError and leaves nothing behind.
func TestRemoteSpawn(t *testing.T) {
	srv := sshtest.Start(t)
	h := dial(t, srv)
	ctx := context.Background()
	hd, err := h.Fork(ctx, &proc.Options{NewUser: true})
	if err != nil {
		t.Fatal(err)
	}
	defer hd.Close()

	run := func(spawn func(setup *proc.Batch) (*Process, error)) string {
		t.Helper()
		r, w, _ := os.Pipe()
		var setup proc.Batch
		setup.PutFile(w, 1)
		setup.Chdir("/")
		p, err := spawn(&setup)
		w.Close()
		if err != nil {
			r.Close()
			t.Fatal(err)
		}
		defer p.Close()
		out, _ := io.ReadAll(r)
		r.Close()
		if e, err := p.Wait(ctx); err != nil || e.Code != 0 {
			t.Fatalf("exit %v, %v", e, err)
		}
		return string(out)
	}
	if out := run(func(setup *proc.Batch) (*Process, error) {
		return hd.SpawnPath(ctx, nil, setup, "/bin/sh", []string{"sh", "-c", "pwd; id -u"}, nil)
	}); out != "/\n0\n" {
		t.Errorf("SpawnPath: output %q, want / and uid 0 (the handle's user namespace)", out)
	}
	echo, err := os.Open("/bin/echo")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	if out := run(func(setup *proc.Batch) (*Process, error) {
		return hd.Spawn(ctx, nil, setup, echo, []string{"echo", "sent"}, nil)
	}); out != "sent\n" {
		t.Errorf("Spawn: output %q", out)
	}

	var bad proc.Batch
	bad.Getpid()
	bad.Chdir("/no/such/dir")
	_, err = hd.SpawnPath(ctx, nil, &bad, "/bin/true", []string{"true"}, nil)
	var be *proc.BatchError
	if !errors.As(err, &be) || be.Index != 1 || !errors.Is(err, unix.ENOENT) {
		t.Errorf("a failing setup: %v, want a BatchError at index 1 with ENOENT", err)
	}
	// hd is as it was.
	if _, err := hd.Getpid(ctx); err != nil {
		t.Errorf("the handle after a failed spawn from it: %v", err)
	}
}
