package probe

import (
	"context"
	"fmt"
	"os"
	"syscall"

	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// withChild makes a child with proc.Fork (detached first when detached is
// set, since then it is caplin's own child) and calls fn with it and a
// duplicate of its pidfd. The child is killed and reaped afterwards. Where
// no child can be made, it returns r with a Detail that says why.
func withChild(ctx context.Context, r Result, detached bool, fn func(h *proc.Handle, pidfd int) Result) Result {
	var h *proc.Handle
	var err error
	if detached {
		h, err = proc.Fork(ctx, &proc.Options{From: proc.Detached})
		if err != nil {
			h, err = proc.Fork(ctx, nil)
		}
	} else {
		h, err = forkAny(ctx)
	}
	if err != nil {
		r.Detail = "could not make a child to try it on: " + err.Error()
		return r
	}
	defer h.Close()
	f, err := h.Process().File()
	if err != nil {
		r.Detail = "could not get the child's pidfd: " + err.Error()
		return r
	}
	defer f.Close()
	return fn(h, int(f.Fd()))
}

// ClonePidfd makes a child the way caplin makes every child, with
// clone(CLONE_PIDFD), and checks that its pidfd arrived.
func ClonePidfd(ctx context.Context) Result {
	r := Result{
		Name:      "clone CLONE_PIDFD",
		MinKernel: "5.2",
		Without:   "required: caplin cannot make processes",
	}
	return withChild(ctx, r, false, func(h *proc.Handle, pidfd int) Result {
		r.OK = true
		r.Detail = fmt.Sprintf("proc.Fork made a child (pid %d) and got its pidfd from clone(CLONE_PIDFD)", h.Pid())
		return r
	})
}

// PidfdSendSignal sends signal 0 to a child through its pidfd.
func PidfdSendSignal(ctx context.Context) Result {
	r := Result{
		Name:      "pidfd_send_signal",
		MinKernel: "5.1",
		Without:   "required: caplin cannot signal its processes without racing pid reuse",
	}
	return withChild(ctx, r, false, func(h *proc.Handle, pidfd int) Result {
		if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
			r.Detail = "pidfd_send_signal(child, 0): " + errText(err)
			return r
		}
		r.OK = true
		r.Detail = "sent signal 0 to a child through its pidfd"
		return r
	})
}

// PidfdOpen opens a pidfd for caplin's own process.
func PidfdOpen(context.Context) Result {
	r := Result{
		Name:      "pidfd_open",
		MinKernel: "5.3",
		Without:   "pidfd.Open of processes caplin did not make fails; the processes it makes are unaffected",
	}
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		r.Detail = "pidfd_open(self): " + errText(err)
		return r
	}
	unix.Close(fd)
	r.OK = true
	r.Detail = "opened a pidfd for caplin's own process"
	return r
}

// WaitidPidfd asks waitid(P_PIDFD) about a running child, without
// reaping it.
func WaitidPidfd(ctx context.Context) Result {
	r := Result{
		Name:      "waitid P_PIDFD",
		MinKernel: "5.4",
		Without:   "required: caplin cannot wait for its processes",
	}
	return withChild(ctx, r, true, func(h *proc.Handle, pidfd int) Result {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		for err == unix.EINTR {
			err = unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		}
		switch {
		case err == nil || err == unix.EAGAIN:
			r.OK = true
			r.Detail = "waitid(P_PIDFD) on a running child: no status yet, as expected"
		case err == unix.ECHILD:
			r.OK = true
			r.Detail = "waitid(P_PIDFD) knows pidfds (ECHILD for a child caplin's spawner reaps)"
		default:
			r.Detail = "waitid(P_PIDFD): " + errText(err)
		}
		return r
	})
}

// selfPidfd opens a pidfd for caplin's own process.
func selfPidfd() (int, error) {
	return unix.PidfdOpen(os.Getpid(), 0)
}

// PidfdGetfd copies an fd out of caplin's own process through its pidfd.
func PidfdGetfd(context.Context) Result {
	r := Result{
		Name:      "pidfd_getfd",
		MinKernel: "5.6",
		Without:   "sandbox.Inspect (the launcher's reports) cannot look into a process's sockets: their details are left out",
	}
	pfd, err := selfPidfd()
	if err != nil {
		r.Detail = "not tried: pidfd_open(self): " + errText(err)
		return r
	}
	defer unix.Close(pfd)
	fd, err := unix.PidfdGetfd(pfd, pfd, 0)
	if err != nil {
		r.Detail = "pidfd_getfd(self): " + errText(err)
		return r
	}
	unix.Close(fd)
	r.OK = true
	r.Detail = "copied an fd out of caplin's own process"
	return r
}

// PidfdGetInfo reads caplin's own pid through ioctl(PIDFD_GET_INFO).
func PidfdGetInfo(context.Context) Result {
	r := Result{
		Name:      "PIDFD_GET_INFO",
		MinKernel: "6.13",
		Without:   "nothing: caplin reads a pidfd's pid from /proc/self/fdinfo",
	}
	pfd, err := selfPidfd()
	if err != nil {
		r.Detail = "not tried: pidfd_open(self): " + errText(err)
		return r
	}
	defer unix.Close(pfd)
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_PID}
	if err := unix.IoctlPidfdInfo(pfd, &info); err != nil {
		r.Detail = "ioctl(PIDFD_GET_INFO): " + errText(err)
		return r
	}
	if info.Mask&unix.PIDFD_INFO_PID == 0 || int(info.Pid) != os.Getpid() {
		r.Detail = fmt.Sprintf("ioctl(PIDFD_GET_INFO) returned mask %#x, pid %d; want pid %d", info.Mask, info.Pid, os.Getpid())
		return r
	}
	r.OK = true
	r.Detail = "read caplin's own pid through ioctl(PIDFD_GET_INFO)"
	return r
}

// PidfdInfoExit has a child exit with status 3, reaps it, and reads the
// status back through its pidfd with PIDFD_INFO_EXIT.
func PidfdInfoExit(ctx context.Context) Result {
	r := Result{
		Name:      "PIDFD_INFO_EXIT",
		MinKernel: "6.15",
		Without:   "Wait on a process caplin did not make (a pidfd received over a socket) returns pidfd.ErrNotChild once it has exited",
	}
	const code = 3
	return withChild(ctx, r, true, func(h *proc.Handle, pidfd int) Result {
		if err := h.Exit(ctx, code); err != nil {
			r.Detail = "could not make the child exit: " + err.Error()
			return r
		}
		if _, err := h.Process().Wait(ctx); err != nil {
			r.Detail = "could not reap the child: " + err.Error()
			return r
		}
		info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_EXIT}
		if err := unix.IoctlPidfdInfo(pidfd, &info); err != nil {
			r.Detail = "ioctl(PIDFD_GET_INFO) on a reaped child: " + errText(err)
			return r
		}
		if info.Mask&unix.PIDFD_INFO_EXIT == 0 {
			r.Detail = fmt.Sprintf("ioctl(PIDFD_GET_INFO) on a reaped child answered without PIDFD_INFO_EXIT (mask %#x)", info.Mask)
			return r
		}
		ws := syscall.WaitStatus(info.Exit_code)
		if !ws.Exited() || ws.ExitStatus() != code {
			r.Detail = fmt.Sprintf("PIDFD_INFO_EXIT reported wait status %#x for a child that exited with %d", info.Exit_code, code)
			return r
		}
		r.OK = true
		r.Detail = fmt.Sprintf("read a reaped child's exit status (%d) through its pidfd", code)
		return r
	})
}
