package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// reapCheck runs "caplin ARGS..." (this test binary as caplin) as a child
// subreaper: a child caplin leaves unreaped when it exits is reparented to
// it. It waits for caplin, gives anything caplin left a moment to die, and
// prints "left N" with the number of such children (then reaps them), or
// "left 0". It exits with caplin's status.
func reapCheck() {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Println("prctl:", err)
		os.Exit(1)
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	cmd := &exec.Cmd{Path: exe, Args: append([]string{"caplin"}, os.Args[1:]...), Stdin: os.Stdin, Stderr: os.Stderr}
	err = cmd.Run()
	code := cmd.ProcessState.ExitCode()
	if code < 0 {
		fmt.Println("caplin:", err)
		os.Exit(1)
	}
	time.Sleep(200 * time.Millisecond)
	left := 0
	for {
		var st unix.WaitStatus
		pid, err := unix.Wait4(-1, &st, unix.WNOHANG, nil)
		if err != nil || pid <= 0 {
			break
		}
		left++
	}
	fmt.Printf("left %d\n", left)
	os.Exit(code)
}

// TestRunLeavesNoChild checks that caplin run and caplin bwrap reap every
// child they make (the sandbox's init, the zygote) before they exit, rather
// than leaving them to init: with caplin's init as pid 1, with the program
// as pid 1, and in bubblewrap's mode, which shares the caller's pid
// namespace (a zygote of caplin's is then the sandbox's init).
func TestRunLeavesNoChild(t *testing.T) {
	if os.Getenv(envNobody) != "" {
		t.Skip("the test binary is not where nobody can bind it")
	}
	for _, mode := range []string{"run", "run --as-pid-1", "bwrap"} {
		t.Run(mode, func(t *testing.T) {
			var args []string
			switch mode {
			case "bwrap":
				args = []string{"bwrap", "--ro-bind", "/", "/", "--tmpfs", "/tmp", "/bin/true"}
			default:
				args = append(strings.Fields(mode), "--system", "--", "/bin/true")
			}
			out, err := (&exec.Cmd{Path: os.Args[0], Args: append([]string{"reapcheck"}, args...), Stderr: os.Stderr}).Output()
			if err != nil {
				t.Fatalf("caplin %s: %v; said %q", strings.Join(args, " "), err, out)
			}
			if got := strings.TrimSpace(string(out)); got != "left 0" {
				t.Errorf("caplin %s: %s children were left to be reaped by init, want none", mode, strings.TrimPrefix(got, "left "))
			}
		})
	}
}
