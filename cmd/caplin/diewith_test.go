package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"golang.org/x/sys/unix"
)

// escapeDeath is what TestRunDiesWithCaplin runs in the sandbox: it clears
// its parent-death signal, starts a second process of its own in a new
// session (a double-forked daemon), says "ready" and sleeps. Both carry
// the token they were given, for the test to find them.
func escapeDeath() {
	unix.Prctl(unix.PR_SET_PDEATHSIG, 0, 0, 0, 0)
	if len(os.Args) > 2 && os.Args[2] == "daemon" {
		time.Sleep(time.Hour)
		return
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	d := exec.Command(exe, os.Args[1], "daemon")
	d.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	d.Stdin, d.Stdout, d.Stderr = os.Stdin, os.Stderr, os.Stderr // no /dev/null in every sandbox
	if err := d.Start(); err != nil {
		fmt.Println("start:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	time.Sleep(time.Hour)
}

// holding returns the pids of the processes whose command line holds
// token.
func holding(token string) []int {
	return testenv.LivePids(func(cmdline []byte) bool { return bytes.Contains(cmdline, []byte(token)) })
}

// TestRunDiesWithCaplin kills caplin run with SIGKILL while its program,
// which has cleared its own parent-death signal, and a daemon the program
// started are running, and checks that both are gone within a second or
// two: with caplin's init as pid 1, with the program as pid 1, and in
// bubblewrap's mode, which shares the caller's pid namespace.
func TestRunDiesWithCaplin(t *testing.T) {
	if os.Getenv(envNobody) != "" {
		t.Skip("the test binary is not where nobody can bind it")
	}
	for _, mode := range []string{"run", "run --as-pid-1", "bwrap"} {
		t.Run(mode, func(t *testing.T) {
			token := fmt.Sprintf("caplin-token-%d-%d", os.Getpid(), time.Now().UnixNano())
			var args []string
			switch mode {
			case "bwrap": // the caller's pid namespace, as bubblewrap's default
				args = []string{"caplin", "bwrap", "--ro-bind", "/", "/", "--tmpfs", "/tmp", "--ro-bind", os.Args[0], "/tmp/escapedeath", "/tmp/escapedeath", token}
			default:
				args = append([]string{"caplin"}, strings.Fields(mode)...)
				// (As root: the test binary is in root's 0700 directory.)
				args = append(args, "--as-host-root", "--system", "--ro-bind", os.Args[0], "/escapedeath", "--", "/escapedeath", token)
			}
			cmd := &exec.Cmd{Path: os.Args[0], Args: args, Stderr: os.Stderr}
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(out).ReadString('\n')
			if line != "ready\n" {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("the program said %q, %v", line, err)
			}
			if n := len(holding(token)); n != 3 {
				t.Errorf("%d processes hold the token before the kill; want caplin, the program and its daemon", n)
			}
			cmd.Process.Kill()
			cmd.Wait()
			var left []int
			for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if left = holding(token); len(left) == 0 {
					return
				}
			}
			for _, pid := range left {
				unix.Kill(pid, unix.SIGKILL)
			}
			t.Fatalf("processes %v outlived caplin's SIGKILL by 2s", left)
		})
	}
}
