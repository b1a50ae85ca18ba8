package probe

import (
	"context"
	"fmt"
	"time"

	"github.com/caplin-dev/caplin/internal/unotify"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// SeccompAddFD traps a child's getppid with a seccomp user-notification
// filter, installs a descriptor in the child from outside
// (SECCOMP_IOCTL_NOTIF_ADDFD) and answers the call: what network grants
// (caplin run --connect) do to every connect a rule allows.
func SeccompAddFD(ctx context.Context) Result {
	r := Result{
		Name:      "seccomp notify ADDFD",
		MinKernel: "5.9",
		Without:   "caplin run --connect (network grants) is refused",
	}
	return withChild(ctx, r, false, func(h *proc.Handle, _ int) Result {
		filter := []unix.SockFilter{
			{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // nr
			{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_GETPPID, Jt: 0, Jf: 1},
			{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_USER_NOTIF},
			{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		}
		var b proc.Batch
		b.Prctl(unix.PR_SET_NO_NEW_PRIVS, proc.Int(1), proc.Int(0), proc.Int(0), proc.Int(0))
		l := b.SeccompSetModeFilter(unix.SECCOMP_FILTER_FLAG_NEW_LISTENER, filter)
		v := b.TakeFile(l)
		res, err := h.Run(ctx, &b)
		if err != nil {
			r.Detail = "a filter with a listener (SECCOMP_FILTER_FLAG_NEW_LISTENER): " + errText(err)
			return r
		}
		listener := res.File(v)
		if listener == nil {
			r.Detail = "the child sent no listener"
			return r
		}
		defer listener.Close()
		lfd := int(listener.Fd())
		type answer struct {
			ppid, fdFlags int
			err           error
		}
		done := make(chan answer, 1)
		go func() {
			var b proc.Batch
			ppid := b.Syscall(unix.SYS_GETPPID)
			flags := b.Syscall(unix.SYS_FCNTL, proc.Int(100), proc.Int(unix.F_GETFD))
			res, err := h.Run(ctx, &b)
			done <- answer{res.Int(ppid), res.Int(flags), err}
		}()
		// On every way out but the answer, the child is killed: it keeps
		// its own copy of the listener, so closing ours does not end its
		// trapped call, and its handle could not be closed while the call
		// waits (CI hung there 10 minutes, under load).
		answered := false
		defer func() {
			if !answered {
				h.Process().Kill()
				<-done
			}
		}()
		pfd := []unix.PollFd{{Fd: int32(lfd), Events: unix.POLLIN}}
		k, err := unix.Poll(pfd, 5000)
		for err == unix.EINTR {
			k, err = unix.Poll(pfd, 5000)
		}
		if err != nil || k == 0 {
			r.Detail = "the child's getppid was not trapped within 5s"
			return r
		}
		size, err := unotify.Sizes()
		if err != nil {
			r.Detail = "seccomp(SECCOMP_GET_NOTIF_SIZES): " + errText(err)
			return r
		}
		buf := make([]byte, max(size, 80))
		n, err := unotify.Recv(lfd, buf)
		for err == unix.EINTR {
			n, err = unotify.Recv(lfd, buf)
		}
		if err != nil {
			r.Detail = "SECCOMP_IOCTL_NOTIF_RECV: " + errText(err)
			return r
		}
		null, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			r.Detail = "opening /dev/null: " + errText(err)
			return r
		}
		defer unix.Close(null)
		addErr := unotify.AddFD(lfd, n.ID, null, 100, true)
		unotify.Send(lfd, n.ID, 4242, 0, false)
		select {
		case a := <-done:
			answered = true
			switch {
			case addErr != nil:
				r.Detail = "SECCOMP_IOCTL_NOTIF_ADDFD: " + errText(addErr)
			case a.err != nil:
				r.Detail = "the trapped child: " + errText(a.err)
			case a.ppid != 4242 || a.fdFlags != unix.FD_CLOEXEC:
				r.Detail = fmt.Sprintf("the trapped getppid returned %d (want the answer, 4242), fd 100's flags %d (want FD_CLOEXEC)", a.ppid, a.fdFlags)
			default:
				r.OK = true
				r.Detail = "installed a descriptor in a child trapped in getppid, and answered for it"
			}
		case <-time.After(5 * time.Second):
			r.Detail = "the trapped child did not go on within 5s of the answer"
		}
		return r
	})
}
