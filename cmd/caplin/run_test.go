package main

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/sandbox/bwrap"
	"golang.org/x/sys/unix"
)

// TestHelpNamesEveryOption checks that the help describes every option.
func TestHelpNamesEveryOption(t *testing.T) {
	for _, name := range bwrap.Options(bwrap.CaplinRun) {
		if !strings.Contains(runHelp, name) {
			t.Errorf("caplin run help does not describe %s", name)
		}
	}
	for _, name := range bwrap.Options(bwrap.Bubblewrap) {
		if !strings.Contains(bwrapHelp, name) && !strings.Contains(runHelp, name) {
			t.Errorf("neither bwrap's help nor run's describes %s", name)
		}
	}
	for _, name := range []string{"-json", "-strict"} {
		if !strings.Contains(doctorHelp, name) {
			t.Errorf("doctor help does not describe %s", name)
		}
	}
}

func TestExitCodesDocumented(t *testing.T) {
	for _, code := range []string{"122", "125", "126", "127", "128+N", "2 "} {
		if !strings.Contains(usageText, code) {
			t.Errorf("usage text does not document exit status %s", code)
		}
		if !strings.Contains(runHelp, code) {
			t.Errorf("run help does not document exit status %s", code)
		}
	}
}

// TestExecStatus checks the exit statuses and messages of exec failures.
func TestExecStatus(t *testing.T) {
	for _, tc := range []struct {
		path string
		err  error
		code int
		msg  string
	}{
		{"ls", &os.PathError{Op: "execveat", Path: "ls", Err: unix.ENOENT}, exitNotFound, "ls: command not found in the sandbox's PATH"},
		{"/x/y", &os.PathError{Op: "execveat", Path: "/x/y", Err: unix.ENOENT}, exitNotFound, "/x/y: no such file or directory in the sandbox"},
		{"/etc", &os.PathError{Op: "execveat", Path: "/etc", Err: unix.EACCES}, exitNoExec, "cannot execute /etc: permission denied"},
		{"ls", errors.New("process gone"), exitFailure, "process gone"},
	} {
		code, msg := bwrap.ExecStatus(tc.path, tc.err)
		if code != tc.code || !strings.HasPrefix(msg, tc.msg) {
			t.Errorf("bwrap.ExecStatus(%s, %v) = %d, %q; want %d, %q", tc.path, tc.err, code, msg, tc.code, tc.msg)
		}
	}
}

// TestModesDirect checks that the command forks directly only when the
// sandbox's pid 1 is caplin's init (see mode.parse).
func TestModesDirect(t *testing.T) {
	for _, tc := range []struct {
		m      mode
		args   []string
		direct bool
	}{
		{runMode, []string{"true"}, true},
		{runMode, []string{"--as-pid-1", "true"}, false},
		{bwrapMode, []string{"true"}, false}, // the zygote's pid namespace
		{bwrapMode, []string{"--unshare-pid", "true"}, true},
		{bwrapMode, []string{"--unshare-pid", "--as-pid-1", "true"}, false},
	} {
		cmd, spec, code := tc.m.parse(tc.args, nil)
		if cmd == nil {
			t.Fatalf("%s %q: status %d", tc.m.name, tc.args, code)
		}
		cmd.Close()
		if spec.Direct != tc.direct {
			t.Errorf("%s %q: Direct %v, want %v", tc.m.name, tc.args, spec.Direct, tc.direct)
		}
	}
}
