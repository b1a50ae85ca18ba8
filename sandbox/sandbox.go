package sandbox

import (
	"context"
	"errors"
	"os"
	"strings"

	"github.com/caplin-dev/caplin/pidfd"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// A Sandbox is a confined process that Build made, ready to exec a
// program. Close it when done: that kills whatever is left in it.
type Sandbox struct {
	spec  *Spec
	first *proc.Handle // the first process made, in the sandbox's namespaces
	init  *proc.Handle // caplin's init, pid 1, when the program is not
	h     *proc.Handle // the program's process
	lim   *limiter
	ns    map[string]uint64
	// reapLater: Close kills and leaves the reaping to a goroutine.
	reapLater bool
}

// Namespaces returns the inode numbers of the sandbox's namespaces, by
// their names in /proc/PID/ns ("mnt", "net", "pid", "user", ...): those it
// shares with the caller too.
func (s *Sandbox) Namespaces() map[string]uint64 {
	m := make(map[string]uint64, len(s.ns))
	for k, v := range s.ns {
		m[k] = v
	}
	return m
}

// Handle returns the handle of the process that will exec the program, for
// more set-up before Exec. It is confined already: Landlock, seccomp and
// the capability drop apply to what it runs.
func (s *Sandbox) Handle() *proc.Handle { return s.h }

// Pid returns the program's process ID, as seen from the caller.
func (s *Sandbox) Pid() int { return s.h.Pid() }

// InitPid returns the process ID, as the caller sees it, of the sandbox's
// first process, the one its namespaces were made for: caplin's init when
// there is one, else the program's.
func (s *Sandbox) InitPid() int { return s.first.Pid() }

// Exec runs the program path in the sandbox with arguments argv (argv[0]
// is the name it sees) and the spec's environment, and returns it as a
// Process. A path without a slash is looked up in the PATH of the spec's
// environment, or in /usr/local/bin:/usr/bin:/bin, inside the sandbox;
// relative PATH entries are skipped. Wait for the Process before closing
// the Sandbox: under caplin's init, the init reaps it.
//
// A failed exec is an *os.PathError; the Sandbox is still usable then.
func (s *Sandbox) Exec(ctx context.Context, path string, argv []string) (*pidfd.Process, error) {
	if strings.Contains(path, "/") {
		return s.h.ExecPath(ctx, path, argv, s.spec.Env)
	}
	dirs := "/usr/local/bin:/usr/bin:/bin"
	for _, kv := range s.spec.Env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			dirs = v
		}
	}
	var first error
	for _, dir := range strings.Split(dirs, ":") {
		if dir == "" || dir[0] != '/' {
			continue // a relative entry would be looked up in the working directory
		}
		// Each miss is a failed execveat, after which the handle is still
		// usable.
		p, err := s.h.ExecPath(ctx, strings.TrimSuffix(dir, "/")+"/"+path, argv, s.spec.Env)
		if err == nil {
			return p, nil
		}
		var pe *os.PathError
		switch {
		case !errors.As(err, &pe):
			return nil, err // not the exec's own failure: the process is gone, say
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		case errors.Is(err, unix.EACCES):
			if first == nil {
				first = err // like execvp: go on, and report it if nothing is found
			}
		default:
			return nil, err
		}
	}
	if first != nil {
		return nil, first
	}
	return nil, &os.PathError{Op: "exec", Path: path, Err: unix.ENOENT}
}

// Kill kills every process in the sandbox (SIGKILL) and returns without
// waiting for them to go: the kernel takes its namespaces down in the
// background. It suits a caller about to exit; Close still has to reap.
func (s *Sandbox) Kill() error {
	if s.first == nil {
		return nil
	}
	if s.h != nil && s.h != s.first {
		s.h.Process().Kill()
	}
	return s.first.Process().Kill()
}

// Close kills every process left in the sandbox and frees what it holds.
// It is idempotent.
func (s *Sandbox) Close() error {
	if s.reapLater && s.lim == nil {
		// A template's sandbox: its init is the template's child, which
		// reaps it; killing it takes the whole sandbox down, and the
		// template's reaping need not hold the caller up.
		s.Kill()
		go s.close()
		return nil
	}
	return s.close()
}

func (s *Sandbox) close() error {
	var err error
	if s.h != nil && s.h != s.first {
		s.h.Close()
	}
	if s.first != nil {
		err = s.first.Close()
	}
	if s.lim != nil {
		if e := s.lim.close(); err == nil {
			err = e
		}
	}
	return err
}
