package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"golang.org/x/sys/unix"
)

// startCaplin starts "caplin ARGS..." (the test binary serving as caplin)
// with stdin, stdout and stderr on tty if not nil, then its controlling
// terminal in a session of its own, as a shell starts a foreground job.
func startCaplin(t *testing.T, tty *os.File, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	var out bytes.Buffer
	cmd := &exec.Cmd{Path: os.Args[0], Args: append([]string{"caplin"}, args...), Stdout: &out, Stderr: &out}
	if tty != nil {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, &out
}

// waitChild waits up to 20s for a process whose command line holds marker
// to have a child named comm, running.
func waitChild(t *testing.T, marker, comm string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, pid := range testenv.LivePids(func(cmdline []byte) bool { return bytes.Contains(cmdline, []byte(marker)) }) {
			kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
			for _, k := range strings.Fields(string(kids)) {
				if c, _ := os.ReadFile("/proc/" + k + "/comm"); strings.TrimSpace(string(c)) == comm {
					return
				}
			}
		}
	}
	t.Fatalf("no %s under the program marked %s within 20s", comm, marker)
}

// waitExit waits up to limit for cmd to exit and returns its wait status.
func waitExit(t *testing.T, cmd *exec.Cmd, limit time.Duration) (syscall.WaitStatus, time.Duration) {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return cmd.ProcessState.Sys().(syscall.WaitStatus), time.Since(start)
	case <-time.After(limit):
		cmd.Process.Kill()
		<-done
		t.Fatalf("caplin did not exit within %v", limit)
	}
	panic("unreachable")
}

// TestRunTerminalInterrupt types ^C at a real terminal where caplin runs
// a shell script in the foreground: the script and the command it waits
// for stop at once, and caplin dies of SIGINT as the script did (a shell
// shows 130, and a calling script stops there).
func TestRunTerminalInterrupt(t *testing.T) {
	for _, c := range []struct{ shell, script, comm string }{
		{"sh", "cat; echo done", "cat"},
		{"bash", "sleep 8; echo done", "sleep"},
	} {
		t.Run(c.shell, func(t *testing.T) {
			if _, err := exec.LookPath(c.shell); err != nil {
				t.Skip(err)
			}
			master, tty := testenv.OpenPTY(t)
			marker := "caplin-relay-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 10)
			cmd, _ := startCaplin(t, tty, "run", "--system", "--", c.shell, "-c", c.script, marker)
			waitChild(t, marker, c.comm)
			if _, err := unix.Write(master, []byte{0x03}); err != nil { // ^C
				t.Fatal(err)
			}
			ws, took := waitExit(t, cmd, 5*time.Second)
			if !ws.Signaled() || ws.Signal() != unix.SIGINT {
				t.Errorf("caplin ended with %v; want killed by SIGINT", ws)
			}
			if took > 2*time.Second {
				t.Errorf("caplin took %v to stop after ^C", took)
			}
			if out := testenv.Drain(t, master); strings.Contains(out, "done") {
				t.Errorf("the script went on after ^C:\n%q", out)
			}
		})
	}
}

// TestRunTerminateEscalates sends SIGTERM to caplin running a program
// that ignores it: the sandbox is killed once --kill-after has passed
// (status 137), or at once on a second signal.
func TestRunTerminateEscalates(t *testing.T) {
	for _, second := range []bool{false, true} {
		t.Run(fmt.Sprintf("second=%v", second), func(t *testing.T) {
			marker := "caplin-term-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 10)
			kill := "1"
			if second {
				kill = "60"
			}
			cmd, out := startCaplin(t, nil, "run", "--system", "--kill-after", kill, "--", "sh", "-c", `trap "" TERM; sleep 60; echo done`, marker)
			waitChild(t, marker, "sleep")
			start := time.Now()
			cmd.Process.Signal(unix.SIGTERM)
			if second {
				time.Sleep(300 * time.Millisecond)
				cmd.Process.Signal(unix.SIGINT)
			}
			ws, _ := waitExit(t, cmd, 20*time.Second)
			took := time.Since(start)
			if ws.ExitStatus() != 137 {
				t.Errorf("caplin ended with %v; want status 137 (the sandbox killed):\n%s", ws, out)
			}
			if !second && (took < time.Second || took > 4*time.Second) {
				t.Errorf("the sandbox was killed %v after SIGTERM; want about 1s (--kill-after 1)", took)
			}
			if second && took > 3*time.Second {
				t.Errorf("the sandbox was killed %v after SIGTERM, a second signal later; want at once", took)
			}
			if strings.Contains(out.String(), "done") {
				t.Errorf("the program went on:\n%s", out)
			}
		})
	}
}
