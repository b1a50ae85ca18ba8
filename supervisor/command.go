package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/caplin-dev/caplin/sandbox"
	"github.com/caplin-dev/caplin/sandbox/bwrap"
)

// CommandLine is a start request as a command line: caplin start's
// options and caplin run's, then the program, read in the supervisor for
// the client that sent it.
type CommandLine struct {
	// Args are the options (caplin start's --name, --tty and --restart
	// among caplin run's) and the program with its arguments.
	Args []string
	// Env and Dir are the client's environment and working directory:
	// what --keep-env keeps, and what relative paths are relative to.
	Env []string
	Dir string
	// UID and GID are the client's (the supervisor serves its own user
	// only, so they are its own).
	UID, GID int
	// Size is the client's terminal size, for --tty.
	Size Winsize
}

// UsageError is a command line that cannot be read: caplin start exits
// with status 2 for it.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// ParseCommandLine reads cl into a StartRequest, as caplin run reads its
// own command line (sandbox/bwrap's CaplinRun dialect), with caplin
// start's options besides:
//
//	--name NAME                       the job's name
//	--tty                             a pseudo-terminal
//	--restart no|on-failure|always    when to start it again
//
// What reaches the client's process (fds: --fd N=inherit:M, --info-fd,
// --args, ...) cannot be done in the supervisor and is refused, as are
// sandboxes whose processes could not be stopped whole (--landlock-only,
// no pid namespace of their own) and options that make sense only while
// a caller waits (--die-with-parent, --userns-block-fd). A bad command
// line is a *UsageError.
func ParseCommandLine(cl *CommandLine) (*StartRequest, error) {
	req := &StartRequest{Size: cl.Size}
	var restartErr error
	extra := map[string]bwrap.Extra{
		"--name": {Args: 1, Do: func(a []string) (*sandbox.Mount, error) {
			if !ValidName(a[0]) {
				return nil, fmt.Errorf("job name %q: want up to 64 letters, digits, '.', '_' and '-', not starting with '.' or '-', and not \"new\"", a[0])
			}
			req.Name = a[0]
			return nil, nil
		}},
		"--tty": {Args: 0, Do: func([]string) (*sandbox.Mount, error) {
			req.TTY = true
			return nil, nil
		}},
		"--restart": {Args: 1, Do: func(a []string) (*sandbox.Mount, error) {
			req.Restart, restartErr = ParseRestart(a[0])
			if restartErr != nil {
				return nil, fmt.Errorf("%q: want no, on-failure or always", a[0])
			}
			return nil, nil
		}},
	}
	cmd, spec, err := parseClient(cl, extra)
	if err != nil {
		var help *bwrap.Help
		if errors.As(err, &help) {
			return nil, &UsageError{Msg: "--help and --version are the client's to answer"}
		}
		return nil, &UsageError{Msg: err.Error()}
	}
	refuse := func(msg string) (*StartRequest, error) {
		cmd.Close()
		return nil, &UsageError{Msg: msg}
	}
	if why := callerOnly(cmd); why != "" {
		return refuse(why + ": a supervised job has no caller that waits for it; it dies with the supervisor")
	}
	switch {
	case spec.LandlockOnly:
		return refuse("--landlock-only: a supervised job needs a pid namespace of its own, so that stopping it reaches every process it started")
	case spec.SharePID:
		return refuse("a supervised job needs a pid namespace of its own (--unshare-pid), so that stopping it reaches every process it started")
	}
	if req.TTY && !hasEnv(spec.Env, "TERM") {
		if t := envOf(cl.Env, "TERM"); t != "" {
			spec.Env = append(spec.Env, "TERM="+t)
		}
	}
	req.Program = Program{Spec: spec, Path: cmd.Path, Argv: cmd.Argv, Summary: Summary(spec), Close: cmd.Close}
	if len(cmd.Hosts) > 0 {
		req.Program.Options = append(req.Program.Options, sandbox.WithConnectLookup(cmd.Lookup()))
	}
	return req, nil
}

// parseClient reads the client's command line cl as caplin run reads its
// own, with the options of extra, and the spec of its sandbox; it closes
// what it opened on error.
func parseClient(cl *CommandLine, extra map[string]bwrap.Extra) (*bwrap.Command, *sandbox.Spec, error) {
	cmd, err := bwrap.ParseExtra(cl.Args, bwrap.CaplinRun, clientHost(cl), extra)
	if err != nil {
		return nil, nil, err
	}
	spec, err := cmd.Spec()
	if err != nil {
		cmd.Close()
		return nil, nil, err
	}
	return cmd, spec, nil
}

// callerOnly names what on cmd's command line only a caller that waits
// for the program can do (status and blocking fds, --die-with-parent),
// or returns "".
func callerOnly(cmd *bwrap.Command) string {
	switch {
	case cmd.Info != nil || cmd.JSONStatus != nil || cmd.Sync != nil || cmd.Block != nil || cmd.UsernsBlock != nil:
		return "status and blocking fds (--info-fd, --json-status-fd, --sync-fd, --block-fd, --userns-block-fd)"
	case cmd.DieWithParent:
		return "--die-with-parent"
	}
	return ""
}

// clientHost is the client's process as its command line reaches it:
// its environment, directory and IDs; no fds.
func clientHost(cl *CommandLine) *bwrap.Host {
	h := bwrap.OS()
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(cl.Dir, p)
	}
	h.FD = func(n int) (*os.File, error) {
		return nil, fmt.Errorf("fd %d: the supervisor has none of the client's fds", n)
	}
	h.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
		return os.OpenFile(abs(name), flag, perm)
	}
	h.Stat = func(name string) (os.FileInfo, error) { return os.Stat(abs(name)) }
	h.LoadProfile = func(p string) (*sandbox.Spec, error) { return sandbox.LoadProfile(abs(p)) }
	h.Std = func() map[int]*os.File { return map[int]*os.File{} }
	env := append([]string(nil), cl.Env...)
	h.Environ = func() []string { return env }
	dir := cl.Dir
	h.Getwd = func() (string, error) {
		if dir == "" {
			return "", errors.New("no working directory")
		}
		return dir, nil
	}
	h.UID, h.GID = cl.UID, cl.GID
	return h
}

func hasEnv(env []string, key string) bool { return envOf(env, key) != "" }

func envOf(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// Summary describes a sandbox in one line, for listings: its network,
// how many grants it has and how many are writable, its user inside, and
// its limits.
func Summary(spec *sandbox.Spec) string {
	var parts []string
	switch spec.Net {
	case sandbox.NetHost:
		parts = append(parts, "net host")
	case sandbox.NetLoopback:
		parts = append(parts, "net loopback")
	default:
		parts = append(parts, "net none")
	}
	if len(spec.Connect) > 0 {
		parts = append(parts, strconv.Itoa(len(spec.Connect))+" connect rules")
	}
	rw := 0
	for _, m := range spec.Mounts {
		if m.Kind == sandbox.Bind || m.Kind == sandbox.DevBind {
			rw++
		}
	}
	parts = append(parts, fmt.Sprintf("%d mounts (%d writable)", len(spec.Mounts), rw))
	parts = append(parts, "uid "+strconv.Itoa(spec.UID))
	if l := spec.Limits; l.Memory > 0 || l.Pids > 0 || l.CPU > 0 {
		parts = append(parts, "limits")
	}
	return strings.Join(parts, ", ")
}
