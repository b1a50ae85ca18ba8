package proc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	osexec "os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/pidfd"
	"golang.org/x/sys/unix"
)

func fork(t testing.TB, opts *Options) *Handle {
	t.Helper()
	h, err := Fork(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// shellStatus execs sh -c script in h and returns its exit status.
func shellStatus(t *testing.T, h *Handle, script string) int {
	t.Helper()
	ctx := context.Background()
	p, err := h.ExecPath(ctx, "/bin/sh", []string{"sh", "-c", script}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st.ExitCode()
}

func TestRemoteCalls(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, nil)
	fd, err := h.Openat(ctx, unix.AT_FDCWD, "/etc/hostname", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	n, err := h.Read(ctx, fd, buf)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile("/etc/hostname")
	if string(buf[:n]) != string(want) {
		t.Errorf("remote read = %q, want %q", buf[:n], want)
	}
	var st unix.Stat_t
	if err := h.Fstatat(ctx, unix.AT_FDCWD, "/etc/hostname", &st, 0); err != nil {
		t.Fatal(err)
	}
	if st.Size != int64(len(want)) {
		t.Errorf("remote stat size = %d, want %d", st.Size, len(want))
	}
	if err := h.CloseFD(ctx, fd); err != nil {
		t.Fatal(err)
	}
	// The child's fd is gone: closing again fails with EBADF, naming it.
	err = h.CloseFD(ctx, fd)
	if !errors.Is(err, unix.EBADF) || !strings.Contains(err.Error(), fmt.Sprintf("close fd %d", fd)) {
		t.Errorf("second close: %v, want EBADF naming fd %d", err, fd)
	}
}

func TestBatchRefsAndFailure(t *testing.T) {
	ctx := context.Background()
	h := fork(t, nil)
	var b Batch
	fd := b.Openat(AtFDCWD(), "/etc/hostname", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	dup := b.Dup3(fd, 40, 0)
	b.CloseFD(fd)
	buf := make([]byte, 64)
	n := b.Read(dup, buf)
	res, err := h.Run(ctx, &b)
	if err != nil {
		t.Fatal(err)
	}
	if res.Int(dup) != 40 || res.Int(n) <= 0 {
		t.Fatalf("dup3 = %d, read = %d", res.Int(dup), res.Int(n))
	}
	// A failing call in the middle: its index, name, path and errno.
	var b2 Batch
	b2.Getpid()
	b2.Openat(AtFDCWD(), "/nonexistent/x", unix.O_RDONLY, 0)
	b2.Getpid()
	res, err = h.Run(ctx, &b2)
	var be *BatchError
	if !errors.As(err, &be) || be.Index != 1 || be.Len != 3 {
		t.Fatalf("err = %v, want BatchError at index 1 of 3", err)
	}
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Op != "openat" || pe.Path != "/nonexistent/x" || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %#v, want openat PathError ENOENT", err)
	}
	if len(res.r) != 1 {
		t.Errorf("results of calls that ran: %d, want 1", len(res.r))
	}
	// The handle is still usable.
	if _, err := h.Getpid(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestBatchRoundTrips(t *testing.T) {
	// 32 calls in one batch are one message: count the child's recvmsg
	// calls by the number of requests (an exact measure, not a timing).
	ctx := context.Background()
	h := fork(t, nil)
	var b Batch
	var pids []Val
	for i := 0; i < 32; i++ {
		pids = append(pids, b.Getpid())
	}
	res, err := h.Run(ctx, &b)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		if res.Int(p) != res.Int(pids[0]) || res.Int(p) <= 0 {
			t.Fatalf("getpid results differ: %d vs %d", res.Int(p), res.Int(pids[0]))
		}
	}
	if len(b.calls) != 32 {
		t.Fatal(len(b.calls))
	}
}

// waitSleeping waits until process pid runs exe and sleeps in the kernel.
func waitSleeping(t *testing.T, pid int, exe string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		link, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if link == exe && strings.Contains(string(stat), ") S ") {
			if wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid)); len(wchan) > 0 {
				return
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("process %d never slept in %s", pid, exe)
}

func TestFDTableAfterExec(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, nil)
	var b Batch
	want := recordFDTable(t, &b)
	if _, err := h.Run(ctx, &b); err != nil {
		t.Fatal(err)
	}
	sleep, err := executable("/bin/sleep")
	if err != nil {
		t.Skip(err)
	}
	p, err := h.ExecPath(ctx, sleep, []string{"sleep", "100"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	resolved, _ := filepath.EvalSymlinks(sleep)
	waitSleeping(t, p.Pid(), resolved)
	got := fdTable(t, fmt.Sprintf("/proc/%d/fd", p.Pid()))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("fd table after exec = %v, want exactly %v", got, want)
	}
}

// executable returns path if it is an executable file.
func executable(path string) (string, error) {
	if err := unix.Access(path, unix.X_OK); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return path, nil
}

func TestExecFailureLeavesHandleUsable(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, nil)
	_, err := h.ExecPath(ctx, "/nonexistent/prog", []string{"prog"}, nil)
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Op != "execveat" || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("exec of missing file: %v, want execveat PathError ENOENT", err)
	}
	plain := filepath.Join(sharedTempDir(t), "plain")
	os.WriteFile(plain, []byte("data"), 0o644)
	_, err = h.ExecPath(ctx, plain, []string{"x"}, nil)
	if !errors.Is(err, unix.EACCES) {
		t.Fatalf("exec of non-executable: %v, want EACCES", err)
	}
	if _, err := h.Getpid(ctx); err != nil {
		t.Fatalf("handle unusable after failed exec: %v", err)
	}
	p, err := h.ExecPath(ctx, "/bin/sh", []string{"sh", "-c", "exit 7"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Wait(ctx)
	if err != nil || st.Code != 7 {
		t.Fatalf("exit status %v %v, want 7", st, err)
	}
	if _, err := h.Getpid(ctx); !errors.Is(err, ErrExeced) {
		t.Errorf("call after exec: %v, want ErrExeced", err)
	}
}

func TestExecMemfd(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	fd, err := unix.MemfdCreate("true", unix.MFD_CLOEXEC)
	if err != nil {
		t.Skip("memfd_create:", err)
	}
	mf := os.NewFile(uintptr(fd), "memfd:true")
	defer mf.Close()
	src, err := os.Open("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := io.Copy(mf, src); err != nil {
		t.Fatal(err)
	}
	h := fork(t, nil)
	p, err := h.Exec(ctx, mf, []string{"true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := p.Wait(ctx); err != nil || !st.Success() {
		t.Fatalf("memfd exec: %v %v", st, err)
	}
}

func TestExecEnvironment(t *testing.T) {
	ctx := context.Background()
	h := fork(t, nil)
	r, w, _ := os.Pipe()
	defer r.Close()
	var b Batch
	b.PutFile(w, 1)
	if _, err := h.Run(ctx, &b); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// Larger than one message: the environment is placed in child memory
	// by separate writes.
	env := []string{"A=1"}
	for i := 0; i < 30; i++ {
		env = append(env, fmt.Sprintf("BIG%d=%s", i, strings.Repeat("x", 10<<10)))
	}
	p, err := h.ExecPath(ctx, "/bin/sh", []string{"sh", "-c", `echo "$A:${#BIG29}"`}, env)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(r)
	if st, err := p.Wait(ctx); err != nil || !st.Success() {
		t.Fatal(st, err)
	}
	if got, want := strings.TrimSpace(string(out)), fmt.Sprintf("1:%d", 10<<10); got != want {
		t.Errorf("child saw %q, want %q", got, want)
	}
}

func TestNoNewPrivsSetuid(t *testing.T) {
	if os.Getuid() != 0 || os.Getenv(envNobody) != "" {
		t.Skip("needs root to make a set-user-ID-root program")
	}
	dir := sharedTempDir(t)
	id := filepath.Join(dir, "id")
	data, err := os.ReadFile("/usr/bin/id")
	if err != nil {
		t.Skip(err)
	}
	if err := os.WriteFile(id, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(id, 0o4755); err != nil {
		t.Fatal(err)
	}
	euid := func(nnp bool) string {
		ctx := context.Background()
		h := fork(t, &Options{From: Detached})
		r, w, _ := os.Pipe()
		defer r.Close()
		var b Batch
		b.PutFile(w, 1)
		b.Setgroups(nil)
		b.Setresgid(65534, 65534, 65534)
		b.Setresuid(65534, 65534, 65534)
		if nnp {
			b.Prctl(unix.PR_SET_NO_NEW_PRIVS, Int(1), Int(0), Int(0), Int(0))
		}
		if _, err := h.Run(ctx, &b); err != nil {
			t.Fatal(err)
		}
		w.Close()
		p, err := h.ExecPath(ctx, id, []string{"id", "-u"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(r)
		p.Wait(ctx)
		return strings.TrimSpace(string(out))
	}
	if got := euid(false); got != "0" {
		t.Skipf("set-user-ID bit not honoured here (euid %q): the control case fails, so the test proves nothing", got)
	}
	if got := euid(true); got != "65534" {
		t.Errorf("with no_new_privs a set-user-ID-root program ran with euid %s, want 65534", got)
	}
}

func TestForkatUserNamespace(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	dir := sharedTempDir(t)
	h := fork(t, nil)
	g, err := h.Fork(ctx, &Options{NewUser: true})
	skipWithoutUserNS(t, err)
	defer g.Close()
	var b Batch
	uid := b.Geteuid()
	path := filepath.Join(dir, "made-inside")
	fd := b.Openat(AtFDCWD(), path, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	b.CloseFD(fd)
	res, err := g.Run(ctx, &b)
	if err != nil {
		t.Fatal(err)
	}
	if res.Int(uid) != 0 {
		t.Errorf("uid inside the new user namespace = %d, want 0", res.Int(uid))
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if int(st.Uid) != os.Geteuid() {
		t.Errorf("file made inside is owned by %d outside, want the caller's %d", st.Uid, os.Geteuid())
	}
	// The grandchild is in a user namespace its parent handle is not in.
	link := func(pid int) string {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", pid))
		return l
	}
	if link(g.Pid()) == link(h.Pid()) || link(g.Pid()) == "" {
		t.Errorf("grandchild user ns %q, handle's %q: want a new one", link(g.Pid()), link(h.Pid()))
	}
	// Its exit status reaches the caller.
	if code := shellStatus(t, g, "exit 3"); code != 3 {
		t.Errorf("grandchild status %d, want exit 3", code)
	}
}

func TestUnshareInChild(t *testing.T) {
	alsoAsNobody(t)
	// A Go program cannot unshare a user namespace (it is multithreaded);
	// the child is one thread and can.
	ctx := context.Background()
	h := fork(t, nil)
	if err := h.Unshare(ctx, unix.CLONE_NEWUSER|unix.CLONE_NEWNS); err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSPC) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	// It can now mount a tmpfs that nobody outside sees.
	var b Batch
	b.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
	b.Mount("caplin", "/tmp", "tmpfs", 0, "")
	var st unix.Stat_t
	b.Fstatat(AtFDCWD(), "/tmp", &st, 0)
	if _, err := h.Run(ctx, &b); err != nil {
		t.Fatal(err)
	}
	var outside unix.Statfs_t
	unix.Statfs("/tmp", &outside)
	if outside.Type == unix.TMPFS_MAGIC {
		t.Log("note: /tmp is a tmpfs outside too")
	}
}

func TestNamespaces(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h, err := Fork(ctx, &Options{NewUser: true, NewNet: true, NewUTS: true, NewIPC: true, NewMount: true, NewPID: true})
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSPC) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	defer h.Close()
	pid, err := h.Getpid(ctx)
	if err != nil || pid != 1 {
		t.Errorf("pid in a new pid namespace = %d %v, want 1", pid, err)
	}
	for _, ns := range []string{"net", "uts", "ipc", "mnt", "pid", "user"} {
		in, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", h.Pid(), ns))
		out, _ := os.Readlink("/proc/self/ns/" + ns)
		if in == out || in == "" {
			t.Errorf("%s namespace: child %q, caller %q", ns, in, out)
		}
	}
	// A child of the pid namespace's init is reaped through it.
	g, err := h.Fork(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if code := shellStatus(t, g, "exit 5"); code != 5 {
		t.Errorf("status through the init %d, want exit 5", code)
	}
}

func TestMemory(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, nil)
	n := 3*chunk + 12345
	addr, err := h.Alloc(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := h.WriteMem(ctx, addr, data); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, n)
	if err := h.ReadMem(ctx, addr, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(data) {
		t.Fatal("ReadMem did not return what WriteMem wrote")
	}
	// A raw call on that memory: write(2) from child memory to a pipe.
	r, w, _ := os.Pipe()
	defer r.Close()
	var b Batch
	wfd := b.PutFile(w, -1)
	b.Syscall(unix.SYS_WRITE, wfd, Ptr(addr), Int(10))
	if _, err := h.Run(ctx, &b); err != nil {
		t.Fatal(err)
	}
	w.Close()
	buf := make([]byte, 10)
	io.ReadFull(r, buf)
	if string(buf) != string(data[:10]) {
		t.Errorf("raw write from child memory = %v", buf)
	}
	if err := h.Free(ctx, addr, n); err != nil {
		t.Fatal(err)
	}
	if err := h.ReadMem(ctx, addr, got[:8]); !errors.Is(err, unix.EFAULT) {
		t.Errorf("read of freed memory: %v, want EFAULT", err)
	}
	if _, err := h.Alloc(ctx, -1); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Alloc(-1): %v, want EINVAL", err)
	}
}

func TestTakeFile(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, nil)
	fd, err := h.Openat(ctx, unix.AT_FDCWD, "/etc/hostname", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := h.TakeFile(ctx, fd)
	if err != nil || f == nil {
		t.Fatal(f, err)
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	want, _ := os.ReadFile("/etc/hostname")
	if string(b) != string(want) {
		t.Errorf("read through the taken fd = %q", b)
	}
	if _, err := h.TakeFile(ctx, 999); !errors.Is(err, unix.EBADF) {
		t.Errorf("TakeFile(999): %v, want EBADF", err)
	}
	// Taking an fd and closing it in the same batch: the reply still
	// carries it, and the child's copy is gone.
	var b2 Batch
	fd2 := b2.Openat(AtFDCWD(), "/etc/hostname", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	took := b2.TakeFile(fd2)
	b2.CloseFD(fd2)
	res, err := h.Run(ctx, &b2)
	if err != nil {
		t.Fatal(err)
	}
	g := res.File(took)
	if g == nil {
		t.Fatal("no file")
	}
	defer g.Close()
	if b, _ := io.ReadAll(g); string(b) != string(want) {
		t.Errorf("read through the taken-then-closed fd: %q", b)
	}
	if err := h.CloseFD(ctx, res.Int(fd2)); !errors.Is(err, unix.EBADF) {
		t.Errorf("the child still has fd %d: %v", res.Int(fd2), err)
	}
}

func TestBadInput(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, nil)
	if _, err := h.Openat(ctx, unix.AT_FDCWD, "a\x00b", 0, 0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("path with NUL: %v", err)
	}
	if _, err := h.Openat(ctx, 12345, "x", 0, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("bad dirfd: %v", err)
	}
	if _, err := h.Openat(ctx, unix.AT_FDCWD, "/etc/hostname", -1, 0); err == nil {
		t.Errorf("bad flags accepted")
	}
	if _, err := h.Dup3(ctx, 9999, 5, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("dup3 of bad fd: %v", err)
	}
	if _, err := h.PutFile(ctx, nil, 3); !errors.Is(err, unix.EBADF) {
		t.Errorf("PutFile(nil): %v", err)
	}
	var many Batch
	if many.Syscall(unix.SYS_GETPID, Int(1), Int(2), Int(3), Int(4), Int(5), Int(6), Int(7)); many.err == nil {
		t.Errorf("7 syscall arguments accepted")
	}
	if _, err := h.Syscall(ctx, 100000); !errors.Is(err, unix.ENOSYS) {
		t.Errorf("unknown syscall: %v", err)
	}
	// The handle survives all of that.
	if _, err := h.Getpid(ctx); err != nil {
		t.Fatal(err)
	}
	// A dup3 onto the control socket's number moves the socket first.
	ctrl := h.ctrl
	if _, err := h.Dup3(ctx, ctrl, ctrl, 0); err == nil {
		t.Log("dup3 onto itself accepted")
	}
	fd, err := h.Openat(ctx, unix.AT_FDCWD, "/etc/hostname", unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Dup3(ctx, fd, h.ctrl, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Getpid(ctx); err != nil {
		t.Fatalf("handle lost after dup3 onto its socket's number: %v", err)
	}
}

func TestClosedAndDead(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, nil)
	h.Close()
	if _, err := h.Getpid(ctx); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("call on closed handle: %v", err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	h2 := fork(t, nil)
	h2.Process().Signal(syscall.SIGKILL)
	_, err := h2.Getpid(ctx)
	if !errors.Is(err, ErrDead) {
		t.Errorf("call on killed child: %v", err)
	}
	if _, err := h2.Getpid(ctx); !errors.Is(err, ErrDead) {
		t.Errorf("second call on killed child: %v", err)
	}
	// Exit ends the child; its status is on the Process.
	h3 := fork(t, nil)
	if err := h3.Exit(ctx, 9); err != nil {
		t.Fatal(err)
	}
	if st, err := h3.Process().Wait(ctx); err != nil || st.Code != 9 {
		t.Errorf("exit status %v %v", st, err)
	}
}

func TestCancelKillsBlockedCall(t *testing.T) {
	alsoAsNobody(t)
	h := fork(t, nil)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil { // blocking
		t.Fatal(err)
	}
	r, w := os.NewFile(uintptr(p[0]), "r"), os.NewFile(uintptr(p[1]), "w")
	defer r.Close()
	defer w.Close()
	rfd, err := h.PutFile(context.Background(), r, -1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = h.Read(ctx, rfd, make([]byte, 10))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("blocked read: %v, want deadline exceeded", err)
	}
	st, err := h.Process().Wait(context.Background())
	if err != nil || st.Signal != syscall.SIGKILL {
		t.Errorf("child after cancel: %v %v, want killed", st, err)
	}
}

func TestConcurrentUse(t *testing.T) {
	ctx := context.Background()
	h := fork(t, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 800)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				fd, err := h.Openat(ctx, unix.AT_FDCWD, "/etc/hostname", unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err == nil {
					err = h.CloseFD(ctx, fd)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestOwnerKilled runs a process that builds children, one of which
// double-forks daemons, SIGKILLs it, and checks that nothing it built
// survives a second later.
func TestOwnerKilled(t *testing.T) {
	alsoAsNobody(t)
	if left := killOwner(t, false); len(left) > 0 {
		t.Errorf("a second after SIGKILL of their owner, still alive: %v", left)
	}
}

// TestOwnerKilledDetached is the control: detached children die with their
// owner (parent-death signal), but the daemons they leave do not, which
// shows TestOwnerKilled can see a survivor.
func TestOwnerKilledDetached(t *testing.T) {
	left := killOwner(t, true)
	for _, pid := range left {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if len(left) != 2 {
		t.Errorf("detached: %d survivors, want the 2 daemons", len(left))
	}
}

// killOwner starts an owner process that builds two sleeps and a shell
// that leaves two daemons, SIGKILLs the owner, and returns what is still
// alive a second later.
func killOwner(t *testing.T, detached bool) []int {
	// sleep takes "1000.<marker>" as a number of seconds: digits only.
	marker := fmt.Sprintf("%06d%09d", os.Getpid()%1000000, time.Now().UnixNano()%1000000000)
	cmd := osexec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envOwner+"="+marker)
	if detached {
		cmd.Env = append(cmd.Env, envOwner+"_DETACHED=1")
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		t.Fatalf("owner: %q %v", line, err)
	}
	// Counted until all 4 are seen once: a process in the middle of its
	// exec can show an empty command line for a moment, so a count after
	// that could miss one.
	deadline := time.Now().Add(5 * time.Second)
	n := 0
	for n = len(marked(marker)); n < 4 && time.Now().Before(deadline); n = len(marked(marker)) {
		time.Sleep(5 * time.Millisecond)
	}
	if n < 4 {
		t.Fatalf("only %d of 4 marked processes started", n)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	deadline = time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if len(marked(marker)) == 0 {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return marked(marker)
}

const envOwner = "CAPLIN_TEST_OWNER"

// owner is the body of the process TestOwnerKilled kills: two sleeps it
// execs itself, and two daemons a shell leaves behind.
func owner(marker string) {
	ctx := context.Background()
	opts := &Options{}
	if os.Getenv(envOwner+"_DETACHED") != "" {
		opts.From = Detached
	}
	for i := 0; i < 2; i++ {
		h, err := Fork(ctx, opts)
		if err != nil {
			panic(err)
		}
		if _, err := h.ExecPath(ctx, "/bin/sleep", []string{"sleep", "1000." + marker}, nil); err != nil {
			panic(err)
		}
	}
	h, err := Fork(ctx, opts)
	if err != nil {
		panic(err)
	}
	p, err := h.ExecPath(ctx, "/bin/sh", []string{"sh", "-c", "sleep 1001." + marker + " & sleep 1002." + marker + " & exit 0"}, nil)
	if err != nil {
		panic(err)
	}
	p.Wait(ctx)
	fmt.Println("ready")
	time.Sleep(time.Hour)
}

// marked lists the pids whose command line holds marker.
func marked(marker string) []int {
	return testenv.LivePids(func(cmdline []byte) bool { return bytes.Contains(cmdline, []byte(marker)) })
}

// TestNoLeaks runs fork/exec/wait cycles and checks the caller has no more
// fds and no zombies afterwards.
func TestNoLeaks(t *testing.T) {
	alsoAsNobody(t)
	n := 10000
	if testing.Short() {
		n = 500
	}
	ctx := context.Background()
	exe, err := os.Open("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	defer exe.Close()
	// Warm up: the zygotes and the poller exist from here on.
	cycle := func() {
		h, err := Fork(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		p, err := h.Exec(ctx, exe, []string{"true"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := p.Wait(ctx); err != nil || !st.Success() {
			t.Fatal(st, err)
		}
		p.Close()
		h.Close()
	}
	cycle()
	before := openFDs(t)
	for i := 0; i < n; i++ {
		cycle()
	}
	after := openFDs(t)
	if len(after) > len(before) {
		t.Errorf("after %d cycles the caller has %d fds, before %d: %v", n, len(after), len(before), after)
	}
	if z := zombies(); len(z) > 0 {
		t.Errorf("zombies left: %v", z)
	}
}

// zombies lists zombie processes whose parent is this process or one of
// its zygotes.
func zombies() []string {
	out := childZombies(os.Getpid())
	for _, z := range []*zygote{plainZygote, treeZygote} {
		if z.h != nil {
			out = append(out, childZombies(z.h.Pid())...)
		}
	}
	return out
}

// TestPutFileAtZero puts one file at fd 0, alone: the received fd and the
// control socket must both get out of its way.
func TestPutFileAtZero(t *testing.T) {
	alsoAsNobody(t)
	for _, from := range []Origin{InTree, Detached} {
		ctx := context.Background()
		h := fork(t, &Options{From: from})
		r, w, _ := os.Pipe()
		var b Batch
		b.PutFile(w, 0)
		if _, err := h.Run(ctx, &b); err != nil {
			t.Fatalf("from %v: %v", from, err)
		}
		w.Close()
		p, err := h.ExecPath(ctx, "/bin/sh", []string{"sh", "-c", "echo zero >&0"}, nil)
		if err != nil {
			t.Fatalf("from %v: %v", from, err)
		}
		out, _ := io.ReadAll(r)
		r.Close()
		if st, err := p.Wait(ctx); err != nil || !st.Success() || string(out) != "zero\n" {
			t.Errorf("from %v: %v %v %q", from, st, err, out)
		}
	}
}

// TestProgramCannotKillItsReaper: a built program that signals its parent
// (the tree zygote, pid 1 of its namespace) does not take its own exit
// status, or the caller's next Fork, with it.
func TestProgramCannotKillItsReaper(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, nil)
	if code := shellStatus(t, h, "kill -9 $PPID; kill -9 -1; kill -INT 1; exit 4"); code != 4 {
		t.Fatalf("status %d, want exit 4", code)
	}
	h2 := fork(t, nil)
	if _, err := h2.Getpid(ctx); err != nil {
		t.Fatalf("Fork after the program tried to kill its reaper: %v", err)
	}
}

// TestZygoteIgnoresTerminalSignals: ^C at a terminal signals the whole
// process group, zygote included; it must survive.
func TestZygoteIgnoresTerminalSignals(t *testing.T) {
	ctx := context.Background()
	h := fork(t, nil)
	z, err := treeZygote.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGTSTP} {
		if err := syscall.Kill(z.Pid(), sig); err != nil {
			t.Fatal(err)
		}
	}
	if code := shellStatus(t, h, "exit 6"); code != 6 {
		t.Fatalf("after signals to the zygote: %d", code)
	}
	if z2, err := treeZygote.get(ctx); err != nil || z2 != z {
		t.Errorf("the zygote was replaced (%v): it died of a terminal signal", err)
	}
}

// TestDirect forks straight from the caller: the child is the caller's
// own, in the namespaces asked for, and forkat inside it works.
func TestDirect(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	h := fork(t, &Options{From: Direct, NewUser: true, NewPID: true})
	if ppid := unix.Getpid(); procPPid(t, h.Pid()) != ppid {
		t.Errorf("a Direct child's parent is %d, want the caller %d", procPPid(t, h.Pid()), ppid)
	}
	if code := shellStatus(t, fork(t, &Options{From: Direct}), `[ "$PPID" != 1 ] && exit 3`); code != 3 {
		t.Errorf("plain Direct child: exit %d", code)
	}
	inner, err := h.Fork(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	if code := shellStatus(t, inner, `[ $$ = 2 ] && [ "$(id -u)" = 0 ] && exit 4`); code != 4 {
		t.Errorf("forkat inside a Direct pid-namespace init: exit %d, want 4 (pid 2, uid 0)", code)
	}
	if code := shellStatus(t, h, `[ $$ = 1 ] && exit 5`); code != 5 {
		t.Errorf("the Direct child itself: exit %d, want 5 (pid 1)", code)
	}
}

// procPPid returns the parent of process pid, from /proc.
func procPPid(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	n, _ := strconv.Atoi(f[1])
	return n
}

// TestArgsScrubbed checks that a child that has not exec'd shows no trace
// of the caller's command line and environment in /proc/PID/cmdline and
// environ once it serves: a Direct child zeroes its copy as it starts,
// before it serves its first call, a zygote's is zeroed when it is made,
// and its children inherit that.
func TestArgsScrubbed(t *testing.T) {
	for name, opts := range map[string]*Options{
		"direct": {From: Direct},
		"tree":   {From: InTree},
	} {
		t.Run(name, func(t *testing.T) {
			h := fork(t, opts)
			if _, err := h.Getpid(context.Background()); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"cmdline", "environ"} {
				b, err := os.ReadFile("/proc/" + strconv.Itoa(h.Pid()) + "/" + f)
				if err != nil {
					t.Fatal(err)
				}
				if s := strings.Trim(string(b), "\x00"); s != "" {
					t.Errorf("the child's %s holds %q, want only NUL bytes", f, s)
				}
			}
		})
	}
}

// TestDirectAfterPrepare: a Direct fork uses the mappings Prepare read,
// once, and its child works though mappings were made since (they are not
// marked, so it gets them); the next fork reads them afresh.
func TestDirectAfterPrepare(t *testing.T) {
	alsoAsNobody(t)
	if err := Prepare(context.Background(), &Options{From: Direct}); err != nil {
		t.Fatal(err)
	}
	if preparedMaps.Load() == nil {
		t.Fatal("Prepare (Direct) read no mappings")
	}
	// New mappings since: a large heap object (an arena's worth of
	// address space may be mapped for it) and an anonymous mapping.
	big := make([]byte, 96<<20)
	big[len(big)-1] = 1
	mem, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	if code := shellStatus(t, fork(t, &Options{From: Direct}), "exit 6"); code != 6 {
		t.Errorf("Direct child after Prepare: exit %d, want 6", code)
	}
	if preparedMaps.Load() != nil {
		t.Error("the fork left Prepare's mappings for the next one")
	}
	if code := shellStatus(t, fork(t, &Options{From: Direct}), "exit 7"); code != 7 {
		t.Errorf("the next Direct child: exit %d, want 7", code)
	}
	runtime.KeepAlive(big)
}

// TestInitReapsOrphans: a pid namespace's init of proc's (the tree
// zygote, and a handle forked with NewPID) reaps the orphans given to it
// as they exit, while it waits for requests, not only when a request
// asks, so that they do not count against a limit of processes; and it
// keeps the statuses of the processes it tracks.
func TestInitReapsOrphans(t *testing.T) {
	alsoAsNobody(t)
	ctx := context.Background()
	init := fork(t, &Options{NewPID: true, NewUser: os.Getuid() != 0})
	z, err := treeZygote.get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		init *Handle
	}{{"tree zygote", z}, {"NewPID", init}} {
		t.Run(c.name, func(t *testing.T) {
			h, err := c.init.Fork(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			// Each subshell exits at once, leaving its sleep to the init.
			if code := shellStatus(t, h, "for i in $(seq 20); do (sleep 0.1 &); done; exit 7"); code != 7 {
				t.Fatalf("status %d, want exit 7", code)
			}
			// Nothing asks the init anything from here on.
			time.Sleep(500 * time.Millisecond)
			var left []string
			for range 50 {
				if left = childZombies(c.init.Pid()); len(left) == 0 {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Errorf("the init left %d zombies, the first: %q", len(left), left[0])
		})
	}
}

// childZombies lists the zombie children of process pid.
func childZombies(pid int) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(stat)
		i := strings.LastIndex(s, ")")
		if i < 0 {
			continue
		}
		if f := strings.Fields(s[i+1:]); len(f) > 2 && f[0] == "Z" && f[1] == strconv.Itoa(pid) {
			out = append(out, s)
		}
	}
	return out
}

// TestSpawnPidOfQuickExit: a spawned program that exits at once still
// has its pid when Spawn returns, from the tree zygote and from a handle
// forked with NewPID: its reaper leaves a tracked child a zombie until
// its Process is waited for, however soon SIGCHLD comes.
func TestSpawnPidOfQuickExit(t *testing.T) {
	ctx := context.Background()
	init := fork(t, &Options{NewPID: true, NewUser: os.Getuid() != 0})
	for _, c := range []struct {
		name  string
		spawn func() (*pidfd.Process, error)
	}{
		{"tree zygote", func() (*pidfd.Process, error) { return SpawnPath(ctx, nil, nil, "/bin/true", []string{"true"}, nil) }},
		{"NewPID", func() (*pidfd.Process, error) {
			return init.SpawnPath(ctx, nil, nil, "/bin/true", []string{"true"}, nil)
		}},
	} {
		bad := 0
		for range 100 {
			p, err := c.spawn()
			if err != nil {
				t.Fatal(err)
			}
			if p.Pid() <= 0 {
				bad++
			}
			if st, err := p.Wait(ctx); err != nil || !st.Success() {
				t.Fatalf("%s: %v %v", c.name, st, err)
			}
			p.Close()
		}
		if bad > 0 {
			t.Errorf("%s: %d of 100 quick programs had no pid", c.name, bad)
		}
	}
}

// TestInitReapsAfterFailedExec: an orphan that exits while a reaper runs
// a batch whose execve fails is still reaped: the SIGCHLD that the
// execve's unblocking let go is not waited for.
func TestInitReapsAfterFailedExec(t *testing.T) {
	ctx := context.Background()
	init := fork(t, &Options{NewPID: true, NewUser: os.Getuid() != 0})
	h, err := init.Fork(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if code := shellStatus(t, h, "(sleep 0.2 &); exit 0"); code != 0 {
		t.Fatalf("status %d", code)
	}
	var b Batch
	ts := make([]byte, 16)
	binary.NativeEndian.PutUint64(ts[8:], uint64(500*time.Millisecond))
	b.Syscall(unix.SYS_NANOSLEEP, b.In(ts), Int(0))
	b.Syscall(unix.SYS_EXECVE, b.CString("/nonexistent"), Int(0), Int(0))
	if _, err := init.Run(ctx, &b); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("the batch: %v, want ENOENT", err)
	}
	time.Sleep(500 * time.Millisecond) // nothing asks the init anything
	if z := childZombies(init.Pid()); len(z) > 0 {
		t.Errorf("the init left %d zombies, the first: %q", len(z), z[0])
	}
}

// TestReaperWithoutTable: a handle forked with NewPID that cannot map its
// reap table (its address space limited) works as one without it would:
// a program it runs is reaped when waited for, with its status, and
// gets SIGCHLD unblocked.
func TestReaperWithoutTable(t *testing.T) {
	ctx := context.Background()
	h := fork(t, &Options{NewPID: true, NewUser: os.Getuid() != 0})
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.Pid()))
	if err != nil {
		t.Skip(err) // not dumpable: not ours to read
	}
	var vm uint64
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmSize:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			vm = kb << 10
		}
	}
	if vm == 0 {
		t.Fatalf("no VmSize in %s", status)
	}
	// Room for a fork's copy, not for a reap table as well.
	var b Batch
	lim := make([]byte, 16)
	binary.NativeEndian.PutUint64(lim, vm+64<<10)
	binary.NativeEndian.PutUint64(lim[8:], ^uint64(0))
	b.Syscall(unix.SYS_PRLIMIT64, Int(0), Int(unix.RLIMIT_AS), b.In(lim), Int(0))
	if _, err := h.Run(ctx, &b); err != nil {
		t.Fatal(err)
	}
	c, err := h.Fork(ctx, &Options{NewPID: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// c's own child, which c reaps.
	p, err := c.SpawnPath(ctx, nil, nil, "/bin/sh", []string{"sh", "-c", "grep -q '^SigBlk:.*0000000000000000$' /proc/self/status || exit 9; exit 3"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Wait(ctx)
	if err != nil || st.ExitCode() != 3 {
		t.Errorf("the program: %v %v, want exit 3 (9: SIGCHLD blocked)", st, err)
	}
}
