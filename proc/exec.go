package proc

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/caplin-dev/caplin/pidfd"
	"golang.org/x/sys/unix"
)

// Exec replaces the child's program with the executable file exe, by
// execveat(2) on its fd with AT_EMPTY_PATH, so the file is never looked up
// by name (memfd executables work). argv[0] is the name the program sees;
// env is its whole environment: nil means an empty environment, not the
// caller's as in os/exec (pass os.Environ() for that).
//
// On success the Handle is spent (its calls return ErrExeced) and the
// returned Process is the caller's: waiting for it and closing it are the
// caller's job. Success is seen without races: the control socket is
// close-on-exec, so the child's end closes exactly when execveat succeeds,
// and a failing execveat replies with its errno instead. On failure the
// Handle is still usable (the child is still the server it was) and the
// error is an *os.PathError.
//
// The exec'd program keeps the fds set up in the child that are not
// close-on-exec, and nothing else. A child made with the default Options
// is killed when its parent Go process dies: the parent-death signal is set
// again right before execveat, since setresuid and friends clear it. A
// set-user-ID or file-capability program clears it again at exec; no_new_privs
// prevents that.
func (h *Handle) Exec(ctx context.Context, exe *os.File, argv, env []string) (*pidfd.Process, error) {
	if exe == nil {
		return nil, &os.PathError{Op: "execveat", Path: "<nil>", Err: syscall.EBADF}
	}
	var b Batch
	fd := b.PutFile(exe, -1)
	return h.exec(ctx, &b, fd, "", exe.Name(), argv, env, unix.AT_EMPTY_PATH)
}

// ExecPath is Exec of the executable at path, looked up in the child (with
// its root, working directory and mount namespace). It does not search
// $PATH.
func (h *Handle) ExecPath(ctx context.Context, path string, argv, env []string) (*pidfd.Process, error) {
	var b Batch
	return h.exec(ctx, &b, AtFDCWD(), path, path, argv, env, 0)
}

func (h *Handle) exec(ctx context.Context, b *Batch, dirfd Val, path, name string, argv, env []string, flags int) (*pidfd.Process, error) {
	if err := checkNUL(name, path, argv, env); err != nil {
		return nil, err
	}
	if h.peer != nil {
		return nil, ErrPeer
	}
	h.mu.Lock()
	pdeath := !h.noPdeath
	h.mu.Unlock()
	if pdeath {
		b.Prctl(unix.PR_SET_PDEATHSIG, Int(int(unix.SIGKILL)), Int(0), Int(0), Int(0))
	}
	argvp := b.stringArray(argv)
	envp := b.stringArray(env)
	b.add(call{kind: opSyscall, flags: flagNoReply, nr: unix.SYS_EXECVEAT, name: "execveat", path: name,
		args: [6]Val{dirfd, b.cstring("execveat", path), argvp, envp, Int(flags)}})
	res, err := h.Run(ctx, b)
	res.Close()
	if err != nil {
		if be, ok := err.(*BatchError); ok {
			return nil, be.Err
		}
		return nil, err
	}
	return h.proc, nil
}

// checkNUL refuses an exec whose path, arguments or environment hold a
// NUL, which C strings cannot carry: an *os.PathError naming name.
func checkNUL(name, path string, argv, env []string) error {
	for _, s := range append(append([]string{path}, argv...), env...) {
		if strings.IndexByte(s, 0) >= 0 {
			return &os.PathError{Op: "execveat", Path: name, Err: syscall.EINVAL}
		}
	}
	return nil
}

// stringArray places a NULL-terminated array of C strings in the child.
func (b *Batch) stringArray(ss []string) Val {
	size := 8 * (len(ss) + 1)
	for _, s := range ss {
		size += len(s) + 1
	}
	return b.data(size, func(base uint64, dst []byte) {
		off := 8 * (len(ss) + 1)
		for i, s := range ss {
			binary.NativeEndian.PutUint64(dst[8*i:], base+uint64(off))
			copy(dst[off:], s)
			dst[off+len(s)] = 0
			off += len(s) + 1
		}
		binary.NativeEndian.PutUint64(dst[8*len(ss):], 0)
	}, nil)
}

// String describes the handle for logs.
func (h *Handle) String() string {
	return fmt.Sprintf("proc.Handle(pid %d)", h.Pid())
}
