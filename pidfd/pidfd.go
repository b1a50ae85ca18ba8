// Package pidfd holds running processes by pidfd: a file descriptor that
// names one process for as long as the descriptor is open, so signals and
// waits can never reach another process that reused the pid.
//
// A Process is waited on through Go's network poller: any number of
// processes can be waited on at once without an OS thread blocked per
// process. Close kills the process (SIGKILL) and reaps it: a Process is
// kill-on-close.
//
// Once Wait or TryWait has reported how the process ended, the Process
// has no more use for its pidfd and closes it, so a caller that waits
// for every process holds no fd for the ones that are done: Wait then
// returns the same State again, Signal and File return an error that
// matches os.ErrProcessDone, and Close has nothing left to do.
//
// # Who can wait
//
// Only a process's parent can reap it and read its exit status with
// waitid. A Process that was opened by a process that is not the parent (by
// Open on another pid, or received over a Unix socket with FromFile) can
// signal it and learn when it exits; on Linux 6.15 and later it can also read
// the exit status once the parent has reaped it (PIDFD_INFO_EXIT). On older
// kernels Wait returns ErrNotChild for such a process after it has exited.
package pidfd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caplin-dev/caplin/internal/fdctl"
	"golang.org/x/sys/unix"
)

// ErrNotChild is returned by Wait for a process that is not the caller's
// child, whose exit status the kernel does not report to the caller.
var ErrNotChild = errors.New("pidfd: exit status unavailable: process is not a child of the caller (needs Linux 6.15 PIDFD_INFO_EXIT)")

// errClosed is what the methods of a closed Process return:
// errors.Is(err, fs.ErrClosed) holds.
var errClosed = fmt.Errorf("pidfd: process: %w", fs.ErrClosed)

// A Process is a running or exited process held by a pidfd. Its methods are
// safe for concurrent use.
type Process struct {
	f   *os.File
	pid int

	mu       sync.Mutex
	state    *State // once reaped or known exited
	closed   bool
	fdClosed bool // the pidfd is closed (dropFD, Close or Release)
	reaper   func(ctx context.Context) (*State, error)
}

// Reaper is a function that waits for a process that is not the caller's
// child and reaps it, for processes whose parent is a process the caller
// controls (caplin's proc package uses it for children of a pid
// namespace's init). It is called after the process has exited.
type Reaper func(ctx context.Context) (*State, error)

// New returns a Process that owns pidfd fd for process pid. fd is set to
// non-blocking mode and registered with the runtime's poller. A pid ≤ 0
// is read from the pidfd itself (the pid in the caller's pid namespace).
// reap may be nil. On error fd is closed.
func New(fd int, pid int, reap Reaper) (*Process, error) {
	if pid <= 0 {
		var err error
		if pid, err = pidOf(fd); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	return newProcess(fd, pid, reap)
}

func newProcess(fd, pid int, reap Reaper) (*Process, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl O_NONBLOCK", err)
	}
	return &Process{f: os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid)), pid: pid, reaper: reap}, nil
}

// Open returns a Process for pid using pidfd_open(2) (Linux 5.3).
func Open(pid int) (*Process, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, &os.SyscallError{Syscall: fmt.Sprintf("pidfd_open %d", pid), Err: err}
	}
	return New(fd, pid, nil)
}

// FromFile returns a Process for f, a pidfd received from elsewhere (for
// example over a Unix socket), and closes f. The process's pid is the one
// in the caller's pid namespace: 0 when the process is in a namespace the
// caller cannot see, -1 once it has exited. If f is not a pidfd, FromFile
// fails and the caller keeps f.
func FromFile(f *os.File) (*Process, error) {
	fd, err := fdctl.DupFile(f)
	if err != nil {
		return nil, err
	}
	pid, err := pidOf(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	f.Close()
	if pid <= 0 {
		return newProcess(fd, pid, nil)
	}
	return New(fd, pid, nil)
}

// pidOf returns the pid, in the caller's pid namespace, of the process
// behind pidfd fd: by PIDFD_GET_INFO (Linux 6.13), else from fdinfo. It
// fails if fd is not a pidfd.
func pidOf(fd int) (int, error) {
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_PID}
	if unix.IoctlPidfdInfo(fd, &info) == nil && info.Mask&unix.PIDFD_INFO_PID != 0 {
		return int(info.Tgid), nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			if pid, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return pid, nil
			}
		}
	}
	return 0, &os.SyscallError{Syscall: fmt.Sprintf("pidfd: fd %d", fd), Err: syscall.EBADF}
}

// Pid returns the process ID as the caller's pid namespace saw it when the
// Process was made.
func (p *Process) Pid() int { return p.pid }

// control runs fn with the pidfd, failing if p is closed, or with an
// error that matches os.ErrProcessDone if the pidfd was let go after the
// process ended.
func (p *Process) control(op string, fn func(fd int) error) error {
	err := fdctl.Control(p.f, fn)
	if !errors.Is(err, os.ErrClosed) {
		return err
	}
	p.mu.Lock()
	done := p.state != nil && !p.closed
	p.mu.Unlock()
	if done {
		return fmt.Errorf("%s %d: %w", op, p.pid, os.ErrProcessDone)
	}
	return errClosed
}

// dropFD closes the pidfd, once: when Wait or TryWait has found how the
// process ended (nothing needs it any more), and on Close and Release. It
// must not be called from inside a
// call on the fd (control, or the poller's Read): closing waits for those
// to end.
func (p *Process) dropFD() error {
	p.mu.Lock()
	drop := !p.fdClosed
	p.fdClosed = true
	p.mu.Unlock()
	if !drop {
		return nil
	}
	return p.f.Close()
}

// Signal sends sig to the process with pidfd_send_signal(2). Signalling a
// process that has exited returns an error that matches os.ErrProcessDone.
func (p *Process) Signal(sig syscall.Signal) error {
	return p.control(fmt.Sprintf("pidfd_send_signal %v", sig), func(fd int) error {
		err := unix.PidfdSendSignal(fd, sig, nil, 0)
		if err == unix.ESRCH {
			return fmt.Errorf("pidfd_send_signal %d %v: %w", p.pid, sig, os.ErrProcessDone)
		}
		if err != nil {
			return &os.SyscallError{Syscall: fmt.Sprintf("pidfd_send_signal %d %v", p.pid, sig), Err: err}
		}
		return nil
	})
}

// SignalGroup sends sig to the process group the process leads (the one
// whose ID is its pid: a session leader's, say), with pidfd_send_signal(2)
// and PIDFD_SIGNAL_PROCESS_GROUP (Linux 6.9). The group is named by the
// pidfd, so the signal cannot reach a group that reused the number. On
// older kernels it falls back to kill(2) of -pid while the process is
// alive (so the number is still its own). Like Signal, it returns an
// error that matches os.ErrProcessDone when there is no one left to
// signal.
func (p *Process) SignalGroup(sig syscall.Signal) error {
	op := fmt.Sprintf("pidfd_send_signal %d %v PIDFD_SIGNAL_PROCESS_GROUP", p.pid, sig)
	return p.control(op, func(fd int) error {
		err := unix.PidfdSendSignal(fd, sig, nil, unix.PIDFD_SIGNAL_PROCESS_GROUP)
		if err == unix.EINVAL && !exited(fd) {
			op = fmt.Sprintf("kill -%d %v", p.pid, sig)
			err = unix.Kill(-p.pid, sig)
		}
		if err == unix.ESRCH {
			return fmt.Errorf("%s: %w", op, os.ErrProcessDone)
		}
		if err != nil {
			return &os.SyscallError{Syscall: op, Err: err}
		}
		return nil
	})
}

// Kill sends SIGKILL. It returns nil if the process has already exited.
func (p *Process) Kill() error {
	err := p.Signal(syscall.SIGKILL)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

// Wait waits for the process to exit and returns how it ended, reaping it
// if it is the caller's child. It does not block an OS thread. Once a
// Process has been waited for, Wait returns the same State again.
// Cancelling ctx stops the wait (not the process) and returns ctx.Err().
func (p *Process) Wait(ctx context.Context) (*State, error) {
	if st := p.known(); st != nil {
		return st, nil
	}
	rc, err := p.f.SyscallConn()
	if err != nil {
		if st := p.known(); st != nil {
			return st, nil // reaped, and the pidfd let go, meanwhile
		}
		return nil, errClosed
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { p.f.SetReadDeadline(time.Now()) })
		defer func() {
			if !stop() {
				p.f.SetReadDeadline(time.Time{})
			}
		}()
	}
	var st *State
	var werr error
	err = rc.Read(func(fd uintptr) bool {
		st, werr = p.waitOnce(ctx, int(fd))
		return st != nil || werr != nil
	})
	if st != nil {
		p.dropFD()
		return st, nil
	}
	if werr != nil {
		return nil, werr
	}
	if st := p.known(); st != nil {
		return st, nil // another Wait reaped it and closed the pidfd
	}
	if cerr := ctx.Err(); cerr != nil {
		return nil, cerr
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, context.DeadlineExceeded
	}
	return nil, err
}

// TryWait is Wait that does not block: it returns nil and no error while the
// process is running.
func (p *Process) TryWait() (*State, error) {
	if st := p.known(); st != nil {
		return st, nil
	}
	var st *State
	err := p.control("waitid", func(fd int) (err error) {
		st, err = p.waitOnce(context.Background(), fd)
		return err
	})
	if st != nil {
		p.dropFD()
		return st, nil
	}
	if errors.Is(err, os.ErrProcessDone) {
		return p.known(), nil // reaped by a Wait meanwhile
	}
	return nil, err
}

func (p *Process) known() *State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// waitOnce reaps the process if it has exited. It returns (nil, nil) while
// the process runs.
func (p *Process) waitOnce(ctx context.Context, fd int) (*State, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != nil {
		return p.state, nil
	}
	if p.reaper != nil {
		// Not our child: its parent reaps it once it has exited.
		if !exited(fd) {
			return nil, nil
		}
		st, err := p.reaper(ctx)
		if err != nil {
			// The parent may be gone with the status (a pid namespace's
			// init killed with its namespace): the kernel may still know
			// it (PIDFD_INFO_EXIT, Linux 6.15).
			if st, ierr := exitInfo(p.pid, fd); ierr == nil {
				p.state = st
				return st, nil
			}
			return nil, err
		}
		p.state = st
		return st, nil
	}
	var info unix.Siginfo
	var ru unix.Rusage
	err := unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG, &ru)
	for err == unix.EINTR {
		err = unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG, &ru)
	}
	switch {
	case err == nil:
		si := siginfoChld(&info)
		if si.pid == 0 {
			return nil, nil // still running
		}
		p.state = newState(p.pid, si.code, si.status, &ru)
		return p.state, nil
	case err == unix.ECHILD:
		if !exited(fd) {
			return nil, nil
		}
		st, ierr := exitInfo(p.pid, fd)
		if ierr != nil {
			return nil, ierr
		}
		p.state = st
		return st, nil
	}
	return nil, &os.SyscallError{Syscall: fmt.Sprintf("waitid P_PIDFD %d", p.pid), Err: err}
}

// Exited reports, without waiting or reaping, whether the process has
// exited (its pidfd is readable). A closed Process reports true.
func (p *Process) Exited() bool {
	if st := p.known(); st != nil {
		return true
	}
	done := true
	p.control("poll", func(fd int) error {
		done = exited(fd)
		return nil
	})
	return done
}

// exited reports whether the process behind pidfd fd has exited.
func exited(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, _ := unix.Poll(fds, 0)
	return n > 0
}

// exitInfo reads a non-child's exit status with PIDFD_GET_INFO.
func exitInfo(pid, fd int) (*State, error) {
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_EXIT}
	if err := unix.IoctlPidfdInfo(fd, &info); err != nil || info.Mask&unix.PIDFD_INFO_EXIT == 0 {
		return nil, ErrNotChild
	}
	// Exit_code is a wait status as waitpid(2) reports it.
	ws := syscall.WaitStatus(info.Exit_code)
	st := &State{Pid: pid, Code: -1}
	switch {
	case ws.Exited():
		st.Code = ws.ExitStatus()
	case ws.Signaled():
		st.Signal = ws.Signal()
		st.CoreDumped = ws.CoreDump()
	}
	return st, nil
}

// Close kills the process if it is still running, reaps it if it is the
// caller's child, and closes the pidfd. It is kill-on-close: a Process that
// is closed never outlives the call. Close is idempotent.
func (p *Process) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	reaped := p.state != nil
	p.mu.Unlock()
	if !reaped {
		p.Kill()
		p.Wait(context.Background())
	}
	return p.dropFD()
}

// Release closes the pidfd without killing the process, which then runs on
// unowned. Use it to hand a process over after sending File elsewhere.
func (p *Process) Release() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return p.dropFD()
}

// File returns a duplicate of the pidfd, to send over a Unix socket
// (FromFile on the other side). The receiver can signal the process and
// learn when it exits; see the package documentation for who can read its
// exit status. The caller owns the returned file. Once Wait has reported
// how the process ended, File fails with an error that matches
// os.ErrProcessDone.
func (p *Process) File() (*os.File, error) {
	var nfd int
	err := p.control("fcntl F_DUPFD_CLOEXEC", func(fd int) (err error) {
		nfd, err = fdctl.Dup(fd)
		return err
	})
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(nfd), fmt.Sprintf("pidfd:%d", p.pid)), nil
}
