package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/probe"
	"github.com/caplin-dev/caplin/proc"
	"github.com/caplin-dev/caplin/sandbox"
	"github.com/caplin-dev/caplin/served"
	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"
)

// envNobody is set in a test binary re-run as uid 65534.
const envNobody = "CAPLIN_TEST_NOBODY"

// TestMain makes the test binary serve as the caplin command inside test
// scripts.
func TestMain(m *testing.M) {
	if os.Getenv("GORACE") == "" {
		// A race-enabled caplin would sleep a second as it exits, which
		// the scripts, running it a hundred times, cannot afford.
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		// caplin run --host and caplin remote upload this test binary
		// (their own executable) and run it as "AGENT agent".
		os.Args[0] = "caplin"
		main()
	}
	testscript.Main(m, map[string]func(){
		"caplin": main,
		"bwrap":  main,
		// sdactivate SOCKET CMD [ARGS...]: what systemd does for a
		// socket unit: listen on SOCKET, then exec CMD with the
		// listening socket at fd 3, LISTEN_FDS=1 and LISTEN_PID.
		"sdactivate": sdActivate,
		// escapedeath TOKEN: see TestRunDiesWithCaplin.
		"escapedeath": escapeDeath,
		// nouserns, dockerseccomp, escapes: see fallback_test.go.
		"nouserns":      func() { os.Exit(noUserNS()) },
		"dockerseccomp": func() { os.Exit(dockerSeccomp()) },
		"noptrace":      func() { os.Exit(noPtrace()) },
		"escapes":       func() { os.Exit(escapes()) },
		// reapcheck ARGS...: see TestRunLeavesNoChild.
		"reapcheck": reapCheck,
		// fusedev DIR ARGS...: see TestServedPrograms.
		"fusedev": fuseDev,
		// fakecontrol SOCKET EVENTS: see mountctl_test.go.
		"fakecontrol": fakeControl,
		// servedprobe SCENARIO ARGS...: see servedbad_test.go.
		"servedprobe": servedProbe,
		// fusens DIR ARGS...: see servedbad_test.go.
		"fusens": fusens,
	})
}

// TestScripts runs the scripts in testdata/script. Besides testscript's
// own commands and conditions they have:
//
//	status N CMD [ARGS...]   run CMD and check that it exits with status N
//	signals SIG ARGS...      run "caplin run ARGS...", send it SIG once the
//	                         program has made the file "ready", and print
//	                         "status N" with caplin's exit status
//	waitfile PATH            wait up to 10s for PATH to exist (a
//	                         server's socket, say)
//	httpserve VAR DIR        serve DIR over HTTP on the host's loopback
//	                         (an ephemeral port, set as $VAR) until the
//	                         script ends
//	[root]                   the tests run as root
//	[userns]                 a child can be made in a new user namespace
//	[cgroupmem]              a sandbox's memory limit has a cgroup here
//	[fuse]                   caplin run's sandboxes can mount FUSE here
//	[served]                 package served's server is built
//	[hostfuse]               a FUSE file system can be mounted on the
//	                         host (caplin supervisor --files): as root,
//	                         or with fusermount3 and /dev/fuse
func TestScripts(t *testing.T) {
	testscript.Run(t, scriptParams(filepath.Join("testdata", "script")))
}

// scriptParams are TestScripts' parameters for the scripts in dir.
func scriptParams(dir string) testscript.Params {
	return testscript.Params{
		Dir:                 dir,
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"status":    cmdStatus,
			"signals":   cmdSignals,
			"waitfile":  cmdWaitFile,
			"httpserve": cmdHTTPServe,
			"unixserve": cmdUnixServe,
		},
		Setup: func(env *testscript.Env) error {
			// $ESCAPES is the escapes command's file, for a sandbox to
			// be granted.
			// It is a copy in $WORK, which a sandbox that runs as nobody on
			// the host (caplin run as root) may reach, as it may not the
			// test's own 0700 directories.
			p, err := exec.LookPath("escapes")
			if err != nil {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			// Named as the command still: testscript runs its commands by
			// their name.
			p = filepath.Join(env.WorkDir, ".bin", "escapes")
			if err := os.Mkdir(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, b, 0o755); err != nil {
				return err
			}
			env.Setenv("ESCAPES", p)
			// The script's own supervisor (caplin start starts it), in
			// $WORK, stopped when the script ends.
			sock := filepath.Join(env.WorkDir, "sup", "supervisor.sock")
			env.Setenv("CAPLIN_SUPERVISOR_SOCKET", sock)
			env.Defer(func() { stopSupervisor(sock) })
			if os.Geteuid() != 0 {
				return nil
			}
			// caplin run as root runs its sandboxes as nobody on the host
			// (unless --as-host-root): the scripts' files, root's, are
			// made theirs to use, as a user's own files are the user's.
			if err := os.Chmod(filepath.Dir(env.WorkDir), 0o711); err != nil {
				return err
			}
			return filepath.WalkDir(env.WorkDir, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				mode := os.FileMode(0o666)
				if fi, err := d.Info(); err == nil && fi.Mode()&0o111 != 0 {
					mode = 0o777 // executables stay so
				}
				if d.IsDir() {
					mode = 0o777
				}
				return os.Chmod(p, mode)
			})
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "root":
				return os.Geteuid() == 0, nil
			case "userns":
				return haveUserNS(), nil
			case "rightsnamed":
				// Rights have names (package served's ParseRights).
				_, err := served.ParseRights("ro")
				return err == nil, nil
			case "cgroupmem":
				return cgroupMem(), nil
			case "fuse":
				return fuseWorks(), nil
			case "served":
				return servedWorks(), nil
			case "hostfuse":
				return hostFUSE(), nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
	}
}

// haveUserNS reports whether a child can be made in a new user namespace.
var haveUserNS = sync.OnceValue(func() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := proc.Fork(ctx, &proc.Options{NewUser: true})
	if err != nil {
		return false
	}
	h.Close()
	return true
})

// fuseWorks reports whether caplin run's sandboxes can mount FUSE here:
// the user the tests run as can (probe.FUSE), and, for root, whose
// sandboxes are an unprivileged host user, every user may open /dev/fuse.
var fuseWorks = sync.OnceValue(func() bool {
	if fuseClosed() {
		return false
	}
	return fuseProbe()
})

// fuseProbe reports whether the user the tests run as can make a FUSE
// file system in a user namespace (probe.FUSE).
var fuseProbe = sync.OnceValue(func() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return probe.FUSE(ctx).OK
})

// fuseClosed reports whether the sandboxes of caplin run, run by these
// tests, could not open /dev/fuse: when the tests run as root, whose
// sandboxes are an unprivileged host user, and /dev/fuse is missing or
// not open to all.
func fuseClosed() bool {
	var st unix.Stat_t
	return os.Geteuid() == 0 && (unix.Stat("/dev/fuse", &st) != nil || st.Mode&0o006 != 0o006)
}

// servedWorks reports whether package served serves: a Server of an
// empty union starts on a descriptor that is not /dev/fuse's only to fail.
var servedWorks = sync.OnceValue(func() bool {
	_, err := served.ParseRights("rw")
	return err == nil && served.NewServer(served.Union(), served.Options{}).MountOptions() != ""
})

// cgroupMem reports whether a sandbox's memory limit is enforced by a
// cgroup here, which the OOM killer then acts for.
var cgroupMem = sync.OnceValue(func() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sb, err := sandbox.Build(ctx, &sandbox.Spec{Limits: sandbox.Limits{Memory: 64 << 20}})
	if err != nil {
		return false
	}
	sb.Close()
	return true
})

// cmdStatus is the script command "status N CMD [ARGS...]".
func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! status")
	}
	if len(args) < 2 {
		ts.Fatalf("usage: status N CMD [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("status: bad status %q", args[0])
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("%s: %v", args[1], err)
		}
		got = shellStatus(ee.ProcessState)
	}
	if got != want {
		ts.Fatalf("%s exited with status %d; want %d", args[1], got, want)
	}
}

// cmdWaitFile waits for a file to appear.
func cmdWaitFile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitfile PATH")
	}
	path := ts.MkAbs(args[0])
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, err := os.Lstat(path); err == nil {
			return
		}
	}
	ts.Fatalf("%s did not appear within 10s", args[0])
}

// cmdHTTPServe serves a directory over HTTP on 127.0.0.1, for the
// script's sandboxes to reach through --connect.
func cmdHTTPServe(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: httpserve VAR DIR")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	srv := &http.Server{Handler: http.FileServer(http.Dir(ts.MkAbs(args[1])))}
	go srv.Serve(ln)
	ts.Defer(func() { srv.Close() })
	ts.Setenv(args[0], strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
}

// cmdUnixServe is the script command unixserve PATH: a Unix socket
// server at PATH, which anyone may connect to, that greets each
// connection, until the script ends.
func cmdUnixServe(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: unixserve PATH")
	}
	ln, err := net.Listen("unix", ts.MkAbs(args[0]))
	ts.Check(err)
	ts.Check(os.Chmod(ts.MkAbs(args[0]), 0o777))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello\n"))
			c.Close()
		}
	}()
	ts.Defer(func() { ln.Close() })
}

// TestScriptsAsNobody runs the scripts again as uid 65534 when the tests
// run as root, as CI does: what real users get is the unprivileged case.
func TestScriptsAsNobody(t *testing.T) {
	if os.Getenv(envNobody) != "" || os.Geteuid() != 0 {
		t.Skip("not root: TestScripts runs unprivileged already")
	}
	dir, err := os.MkdirTemp("", "caplin-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "caplin.test")
	if err := copyFile(exe, os.Args[0], 0o755); err != nil {
		t.Fatal(err)
	}
	scripts := filepath.Join(dir, "testdata", "script")
	if err := os.MkdirAll(scripts, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "testdata"), 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join("testdata", "script"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := copyFile(filepath.Join(scripts, e.Name()), filepath.Join("testdata", "script", e.Name()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A bound for a hang, under the package's own 10 minutes: the
	// scripts take about a minute under -race on a quiet machine, and
	// several times that when CI runs every package's tests at once.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^TestScripts$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), envNobody+"=1", "TMPDIR="+os.TempDir())
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestScripts")) {
		t.Fatalf("as uid 65534: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "--- SKIP") {
			t.Logf("as uid 65534: %s", strings.TrimSpace(line))
		}
	}
}

func copyFile(dst, src string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// cmdSignals is the script command "signals SIG ARGS...". It is bounded in
// time: it waits 20 seconds at most for the program to be ready, and as
// long again for caplin to exit after the signal, then kills it.
func cmdSignals(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! signals")
	}
	if len(args) < 2 {
		ts.Fatalf("usage: signals SIG ARGS...")
	}
	sig, ok := map[string]syscall.Signal{
		"INT": syscall.SIGINT, "TERM": syscall.SIGTERM, "HUP": syscall.SIGHUP, "QUIT": syscall.SIGQUIT,
	}[args[0]]
	if !ok {
		ts.Fatalf("signals: unknown signal %q", args[0])
	}
	ready := ts.MkAbs("ready")
	os.Remove(ready)
	exe, err := exec.LookPath("caplin")
	ts.Check(err)
	cmd := exec.Command(exe, append([]string{"run"}, args[1:]...)...)
	cmd.Dir = ts.MkAbs(".")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	ts.Check(cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if out.Len() > 0 {
			ts.Logf("caplin run output:\n%s", out.String())
		}
	}()
	deadline := time.After(20 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case err := <-exited:
			ts.Fatalf("caplin exited before the program was ready: %v", err)
		case <-deadline:
			cmd.Process.Kill()
			<-exited
			ts.Fatalf("the program never got ready")
		case <-time.After(20 * time.Millisecond):
		}
	}
	ts.Check(cmd.Process.Signal(sig))
	select {
	case err = <-exited:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-exited
		ts.Fatalf("caplin did not exit within 20s of %v", sig)
	}
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("caplin: %v", err)
		}
	}
	fmt.Fprintf(ts.Stdout(), "status %d\n", shellStatus(cmd.ProcessState))
}

// shellStatus is a process's exit status as a shell shows it: N for
// exit(N), 128+N for death by signal N (caplin dies of the signal that
// the program it relayed it to died of).
func shellStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

func sdActivate() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: sdactivate SOCKET CMD [ARGS...]")
		os.Exit(2)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: os.Args[1], Net: "unixpacket"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	f, err := ln.File()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := unix.Dup3(int(f.Fd()), 3, 0); err != nil {
		fmt.Fprintln(os.Stderr, "dup3:", err)
		os.Exit(1)
	}
	path, err := exec.LookPath(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	env := append(os.Environ(), "LISTEN_FDS=1", "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	err = syscall.Exec(path, os.Args[2:], env)
	fmt.Fprintln(os.Stderr, "exec:", err)
	os.Exit(1)
}

// stopSupervisor stops the supervisor whose socket is sock, if one
// runs: SIGTERM, then SIGKILL after 10 s; it returns once it is gone.
func stopSupervisor(sock string) {
	b, err := os.ReadFile(sock + ".lock")
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	// The pid is still the supervisor's while its lock is held.
	if f, err := os.Open(sock + ".lock"); err == nil {
		held := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil
		f.Close()
		if !held {
			return
		}
	}
	unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, _ := unix.Poll(fds, 10000); n == 0 {
		unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		unix.Poll(fds, 10000)
	}
}

// hostFUSE reports whether the user the tests run as can mount a FUSE
// file system on the host: root with /dev/fuse, another user with
// fusermount3 too.
func hostFUSE() bool {
	if unix.Access("/dev/fuse", unix.R_OK|unix.W_OK) != nil {
		return false
	}
	if os.Geteuid() == 0 {
		return true
	}
	_, err := exec.LookPath("fusermount3")
	return err == nil
}
