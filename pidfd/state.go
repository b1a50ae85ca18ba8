package pidfd

import (
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// State is how a process ended.
type State struct {
	Pid        int            // the process's pid as the Process knew it
	Code       int            // exit status, or -1 if killed by a signal
	Signal     syscall.Signal // the signal that killed it, or 0
	CoreDumped bool           // it dumped core
	Rusage     *unix.Rusage   // resources it used; nil when not reported
}

// Exited reports whether the process called exit (rather than being killed).
func (s *State) Exited() bool { return s.Signal == 0 }

// Success reports whether the process exited with status 0.
func (s *State) Success() bool { return s.Signal == 0 && s.Code == 0 }

// UserTime and SystemTime return the CPU time the process used.
func (s *State) UserTime() time.Duration {
	if s.Rusage == nil {
		return 0
	}
	return time.Duration(s.Rusage.Utime.Nano())
}

// SystemTime returns the system CPU time the process used.
func (s *State) SystemTime() time.Duration {
	if s.Rusage == nil {
		return 0
	}
	return time.Duration(s.Rusage.Stime.Nano())
}

// String describes the state the way os.ProcessState does.
func (s *State) String() string {
	switch {
	case s.Signal != 0 && s.CoreDumped:
		return fmt.Sprintf("signal: %v (core dumped)", s.Signal)
	case s.Signal != 0:
		return fmt.Sprintf("signal: %v", s.Signal)
	}
	return fmt.Sprintf("exit status %d", s.Code)
}

// Error makes a State usable as an error, for processes that ended without
// being asked to.
func (s *State) Error() string { return s.String() }

// ExitCode returns the exit status, or 128+signal for a killed process, as
// shells report it.
func (s *State) ExitCode() int {
	if s.Signal != 0 {
		return 128 + int(s.Signal)
	}
	return s.Code
}

// si_code values of SIGCHLD (<asm-generic/siginfo.h>), which x/sys/unix
// does not define.
const (
	cldExited = 1
	cldKilled = 2
	cldDumped = 3
)

// NewState builds a State from a waitid(2) si_code and si_status.
func NewState(pid int, code, status int32, ru *unix.Rusage) *State {
	return newState(pid, code, status, ru)
}

func newState(pid int, code, status int32, ru *unix.Rusage) *State {
	st := &State{Pid: pid, Code: -1}
	if ru != nil {
		r := *ru
		st.Rusage = &r
	}
	switch code {
	case cldExited:
		st.Code = int(status)
	case cldDumped:
		st.Signal = syscall.Signal(status)
		st.CoreDumped = true
	default: // cldKilled, and anything newer kernels add
		st.Signal = syscall.Signal(status)
	}
	return st
}
