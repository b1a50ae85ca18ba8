package supervisor

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/proc"
	"github.com/caplin-dev/caplin/rpc"
	"github.com/caplin-dev/caplin/sandbox"
	"golang.org/x/sys/unix"
)

// envDaemon makes the test binary a supervisor serving the socket it
// names (runDaemon).
const envDaemon = "CAPLIN_SUPERVISOR_TEST_DAEMON"

// runDaemon serves a Supervisor on path until killed.
func runDaemon(path string) {
	ln, err := Listen(path)
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(3)
	}
	srv := &rpc.Server{}
	svc := &Service{Sup: New(Config{}), Server: srv}
	srv.Serve(context.Background(), ln.UnixListener, svc.NewHandler)
	os.Exit(0)
}

// startDaemon runs the test binary as a supervisor on a socket in a new
// directory and returns the command and the socket's path, once it
// serves. With cred it runs as that user (root only). The daemon is
// killed when the test ends.
func startDaemon(t *testing.T, cred *syscall.Credential) (*exec.Cmd, string) {
	t.Helper()
	dir := t.TempDir()
	if cred != nil {
		// A directory the user can reach: t.TempDir's parent is root's
		// alone.
		var err error
		if dir, err = os.MkdirTemp("", "caplin-sup-"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		os.Chmod(dir, 0o755)
		os.Chown(dir, int(cred.Uid), int(cred.Gid))
	}
	path := filepath.Join(dir, "sup", "supervisor.sock")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		// A copy the user can run: go test's directory is root's alone.
		b, err := os.ReadFile(exe)
		if err != nil {
			t.Fatal(err)
		}
		exe = filepath.Join(dir, "supervisor.test")
		if err := os.WriteFile(exe, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envDaemon+"="+path)
	cmd.Stderr = os.Stderr
	cmd.Dir = "/"
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return cmd, path
		}
		if time.Now().After(deadline) {
			t.Fatal("the supervisor did not make its socket within 10 s")
		}
	}
}

// startLine is a command line that runs script with sh.
func startLine(name, script string) *CommandLine {
	return &CommandLine{
		Args: []string{"--name", name, "--system", "--", "sh", "-c", script},
		Env:  []string{"PATH=/usr/bin:/bin"}, Dir: "/",
	}
}

// TestDiesWithSupervisor: SIGKILL to the supervisor kills its jobs, the
// daemons they double-forked included.
func TestDiesWithSupervisor(t *testing.T) {
	testenv.AlsoAsNobody(t)
	cmd, path := startDaemon(t, nil)
	ctx := context.Background()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	marker := "caplin-sup-death-" + strconv.Itoa(os.Getpid())
	for i, script := range []string{
		"sh -c 'sleep 1000; true' " + marker,
		"(setsid sh -c 'sleep 1000; true' " + marker + " &); sleep 1000",
	} {
		res, h, err := c.Start(ctx, startLine("j"+strconv.Itoa(i), script))
		if err != nil || res.Error != "" {
			t.Fatalf("start: %v %+v", err, res)
		}
		h.Close()
	}
	if !testenv.Eventually(func() bool { return len(testenv.LivePids(match(marker))) >= 2 }) {
		t.Fatalf("the jobs did not start: %v", testenv.LivePids(match(marker)))
	}
	cmd.Process.Kill()
	cmd.Wait()
	if !testenv.Eventually(func() bool { return len(testenv.LivePids(match(marker))) == 0 }) {
		t.Fatalf("processes outlived their supervisor: %v", testenv.LivePids(match(marker)))
	}
}

// TestKilledMidStart: a supervisor killed while it starts a job leaves
// nothing of it behind.
func TestKilledMidStart(t *testing.T) {
	marker := "caplin-sup-midstart-" + strconv.Itoa(os.Getpid())
	for i := range 6 {
		cmd, path := startDaemon(t, nil)
		c, err := Dial(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		go c.Start(context.Background(), startLine("mid", "sh -c 'sleep 1000; true' "+marker))
		time.Sleep(time.Duration(i) * 2 * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
		c.Close()
		if !testenv.Eventually(func() bool { return len(testenv.LivePids(match(marker))) == 0 }) {
			t.Fatalf("killed %d ms into a start: left %v", 2*i, testenv.LivePids(match(marker)))
		}
	}
}

// TestOtherUID: a client of another uid is refused, though root may
// connect to any socket.
func TestOtherUID(t *testing.T) {
	sv := &Service{Sup: newSup(t, Config{}), Server: &rpc.Server{}}
	h := sv.NewHandler(&unix.Ucred{Pid: 1, Uid: uint32(os.Geteuid()) + 1})
	if _, err := h.ServeCall(context.Background(), &rpc.Call{Method: "list"}); !errors.Is(err, rpc.ErrDenied) {
		t.Errorf("another uid's list: %v, want ErrDenied", err)
	}
	// A process of the same uid in another user namespace (a sandbox,
	// given the socket's directory) is refused too.
	sb, err := sandbox.Build(context.Background(), testSpec())
	if err != nil {
		t.Fatal(err)
	}
	inner := &unix.Ucred{Pid: int32(sb.InitPid()), Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid())}
	if _, err := sv.NewHandler(inner).ServeCall(context.Background(), &rpc.Call{Method: "list"}); !errors.Is(err, rpc.ErrDenied) {
		t.Errorf("a sandboxed process's list: %v, want ErrDenied", err)
	}
	sb.Close()
	if !sameUserNS(os.Getpid()) {
		t.Error("this process is not in its own user namespace")
	}
	// Nor is a process of the same user and namespace that is more
	// confined than the supervisor (Landlock needs no_new_privs): its
	// jobs would have what it has not.
	h2, err := proc.Fork(context.Background(), &proc.Options{From: proc.Direct})
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	same := &unix.Ucred{Pid: int32(h2.Pid()), Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid())}
	if _, err := sv.NewHandler(same).ServeCall(context.Background(), &rpc.Call{Method: "list"}); errors.Is(err, rpc.ErrDenied) {
		t.Errorf("a process of the same user, namespace and confinement: %v", err)
	}
	var nnp proc.Batch
	nnp.Prctl(unix.PR_SET_NO_NEW_PRIVS, proc.Int(1), proc.Int(0), proc.Int(0), proc.Int(0))
	if _, err := h2.Run(context.Background(), &nnp); err != nil {
		t.Fatal(err)
	}
	if _, err := sv.NewHandler(same).ServeCall(context.Background(), &rpc.Call{Method: "list"}); !errors.Is(err, rpc.ErrDenied) {
		t.Errorf("a process with no_new_privs that the supervisor has not: %v, want ErrDenied", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("the rest needs root: a supervisor of another user's")
	}
	_, path := startDaemon(t, &syscall.Credential{Uid: 65534, Gid: 65534})
	// caplin's client does not talk to another user's supervisor.
	if _, err := Dial(context.Background(), path); !errors.Is(err, unix.EPERM) {
		t.Errorf("Dial of another user's supervisor: %v, want EPERM", err)
	}
	// And the supervisor does not serve another user's client.
	rc, err := rpc.Dial(context.Background(), path, rpc.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{rc}
	defer c.Close()
	if _, err := c.List(context.Background()); !errors.Is(err, rpc.ErrDenied) {
		t.Errorf("root's list from nobody's supervisor: %v, want ErrDenied", err)
	}
	res, _, err := c.Start(context.Background(), startLine("x", "true"))
	if !errors.Is(err, rpc.ErrDenied) {
		t.Errorf("root's start: %v %+v, want ErrDenied", err, res)
	}
}

// TestListenChecks: a second supervisor on the same socket is refused,
// and so is a directory others may enter.
func TestListenChecks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s", "supervisor.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("a second Listen: %v, want ErrAlreadyRunning", err)
	}
	ln.Close()
	// Its socket is gone; the next takes the place.
	ln, err = Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o755)
	if _, err := Listen(filepath.Join(open, "supervisor.sock")); !errors.Is(err, unix.EPERM) {
		t.Errorf("Listen in a 0755 directory: %v, want EPERM", err)
	}
}
