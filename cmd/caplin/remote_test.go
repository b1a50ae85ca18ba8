package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/sshtest"
	"github.com/caplin-dev/caplin/internal/testenv"
	"golang.org/x/sys/unix"
)

// sandboxArgs are caplin run's options for a sandbox with the host's
// /usr and nothing else but /proc.
var sandboxArgs = []string{"--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
	"--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev"}

// caplinHost returns a command that runs caplin with args, reaching the
// test's sshd with $CAPLIN_SSH.
func caplinHost(ctx context.Context, t *testing.T, ssh string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Args = append([]string{"caplin"}, args...)
	// caplin keeps the agent's hash in the user's cache: the test's own.
	cmd.Env = append(os.Environ(), "CAPLIN_SSH="+ssh, "XDG_CACHE_HOME="+t.TempDir())
	return cmd
}

// TestRunHost: caplin run --host runs a real program in a sandbox on the
// host, with its standard fds forwarded and its exit status as caplin's.
func TestRunHost(t *testing.T) {
	srv := sshtest.Start(t)
	ssh, dest := srv.Client(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"run", "--host", dest}, sandboxArgs...)
	cmd := caplinHost(ctx, t, ssh, append(args, "--", "/bin/sh", "-c", "echo out $(hostname); echo err >&2; cat; ls /home; exit 5")...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin = strings.NewReader("typed here\n")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 5 {
		t.Fatalf("caplin run --host: %v, want exit status 5\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	if stdout.String() != "out caplin\ntyped here\n" || !strings.Contains(stderr.String(), "err\n") || !strings.Contains(stderr.String(), "/home") {
		t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}

	// A program that is not there: caplin run's own status.
	cmd = caplinHost(ctx, t, ssh, append(args, "--", "/nonexistent")...)
	out, err := cmd.CombinedOutput()
	if !errors.As(err, &ee) || ee.ExitCode() != 127 {
		t.Errorf("a missing program: %v, want 127\n%s", err, out)
	}
	// SIGINT to caplin (a ^C at its terminal, without a terminal there)
	// reaches the program, and caplin dies of it as the program did.
	cmd = caplinHost(ctx, t, ssh, append(args, "--", "/bin/sh", "-c", "echo started; exec sleep 100")...)
	outR, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 8)
	if _, err := io.ReadFull(outR, line); err != nil || string(line) != "started\n" {
		t.Fatalf("the program said %q, %v", line, err)
	}
	cmd.Process.Signal(syscall.SIGINT)
	err = cmd.Wait()
	if !errors.As(err, &ee) || ee.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGINT {
		t.Errorf("caplin run --host after SIGINT: %v, want to die of SIGINT", err)
	}
	// What only a local caplin run can do is refused, saying so.
	cmd = caplinHost(ctx, t, ssh, "run", "--host", dest, "--landlock-only", "--", "/bin/true")
	out, err = cmd.CombinedOutput()
	if !errors.As(err, &ee) || ee.ExitCode() != 125 || !bytes.Contains(out, []byte("cannot be done on another host")) {
		t.Errorf("--landlock-only on a host: %v\n%s", err, out)
	}
}

// TestRunHostTerminal: with a terminal, the program gets one there that
// is its controlling terminal, as big as this one; ^C typed here
// interrupts it.
func TestRunHostTerminal(t *testing.T) {
	srv := sshtest.Start(t)
	ssh, dest := srv.Client(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	master, tty := testenv.OpenPTY(t)
	unix.IoctlSetWinsize(master, unix.TIOCSWINSZ, &unix.Winsize{Row: 33, Col: 77})
	args := append([]string{"run", "--host", dest}, sandboxArgs...)
	cmd := caplinHost(ctx, t, ssh, append(args, "--", "/bin/sh", "-c", "stty size; [ -t 0 ] && [ -t 1 ] && echo terminal; echo ready; exec sleep 100")...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Read with poll's timeout: the test holds the terminal's peer, so a
	// read would not end if the program never wrote.
	var got []byte
	buf := make([]byte, 4096)
	deadline := time.Now().Add(60 * time.Second)
	for !bytes.Contains(got, []byte("ready")) {
		if time.Now().After(deadline) {
			t.Fatalf("no ready; the terminal showed %q", got)
		}
		fds := []unix.PollFd{{Fd: int32(master), Events: unix.POLLIN}}
		if n, _ := unix.Poll(fds, 100); n <= 0 {
			continue
		}
		n, err := unix.Read(master, buf)
		if err != nil {
			t.Fatalf("reading the terminal: %v (it showed %q)", err, got)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Contains(got, []byte("33 77")) || !bytes.Contains(got, []byte("terminal\r\n")) {
		t.Errorf("the program's terminal: %q", got)
	}
	unix.Write(master, []byte{3}) // ^C, as typed
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Errorf("after ^C: %v, want exit status 130", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("^C did not end the program")
	}
	// The terminal here is as it was: not raw.
	tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil || tio.Lflag&unix.ICANON == 0 || tio.Lflag&unix.ECHO == 0 {
		t.Errorf("the terminal was left raw: %+v %v", tio, err)
	}
}

// TestRemoteCommands: caplin remote HOST doctor and info, and caplin call
// ssh://HOST/PATH on a Directory served there.
func TestRemoteCommands(t *testing.T) {
	srv := sshtest.Start(t)
	ssh, dest := srv.Client(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := caplinHost(ctx, t, ssh, "remote", dest, "doctor").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("landlock")) {
		t.Errorf("caplin remote doctor: %v\n%s", err, out)
	}
	out, err = caplinHost(ctx, t, ssh, "remote", dest, "info").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(`"Kernel"`)) {
		t.Errorf("caplin remote info: %v\n%s", err, out)
	}

	dir := testenv.SharedTempDir(t)
	os.Mkdir(filepath.Join(dir, "docs"), 0o755)
	os.WriteFile(filepath.Join(dir, "docs", "notes.txt"), []byte("notes from afar\n"), 0o644)
	sock := filepath.Join(dir, "docs.sock")
	serve := exec.CommandContext(ctx, os.Args[0], "serve", "dir", "--socket", sock, filepath.Join(dir, "docs"))
	serve.Args[0] = "caplin"
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { serve.Process.Kill(); serve.Wait() }()
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, err = caplinHost(ctx, t, ssh, "call", "ssh://"+dest+sock, "open", "notes.txt", "--", "cat").CombinedOutput()
	if err != nil || string(out) != "notes from afar\n" {
		t.Errorf("caplin call ssh://...: %v\n%s", err, out)
	}
	out, err = caplinHost(ctx, t, ssh, "call", "ssh://"+dest+filepath.Join(dir, "missing.sock"), "open", "notes.txt").CombinedOutput()
	if err == nil || !bytes.Contains(out, []byte("no such file")) {
		t.Errorf("caplin call on a missing socket there: %v\n%s", err, out)
	}
	// The Directory there, mounted for an unmodified program here: its
	// files are file objects. (As uid 65534, /dev/fuse is not this
	// user's to open: the served directories' own tests cover that.)
	if os.Getuid() != 0 || unix.Access("/dev/fuse", unix.R_OK|unix.W_OK) != nil {
		t.Log("no /dev/fuse to open: --serve-object ssh://... not tried")
		return
	}
	args := append([]string{"run", "--as-host-root", "--serve-object", "ssh://" + dest + sock, "/data"}, sandboxArgs...)
	script := "cat /data/notes.txt; echo more >> /data/notes.txt; printf 'new\\n' > /data/made; " +
		"dd if=/data/notes.txt bs=1 skip=6 count=4 2>/dev/null; echo; ls /data; stat -c %s /data/made"
	out, err = caplinHost(ctx, t, ssh, append(args, "--", "/bin/sh", "-c", script)...).CombinedOutput()
	if err != nil || string(out) != "notes from afar\nfrom\nmade\nnotes.txt\n4\n" {
		t.Errorf("caplin run --serve-object ssh://...: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "docs", "notes.txt")); string(b) != "notes from afar\nmore\n" {
		t.Errorf("notes.txt there holds %q", b)
	}
}

// TestRemoteAsNobody runs the tests above again as uid 65534, logging in
// as the test account of the namespaced sshd (as root only).
func TestRemoteAsNobody(t *testing.T) {
	if os.Getuid() != 0 || testenv.AsNobody() {
		t.Skip("runs as root, for uid 65534")
	}
	srv := sshtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	testenv.NobodyTests(ctx, t, "^(TestRunHost|TestRunHostTerminal|TestRemoteCommands)$", srv.Env())
}
