package pidfd_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caplin-dev/caplin/pidfd"
	"golang.org/x/sys/unix"
)

// start runs a command with os/exec and returns its Process by pidfd.
func start(t *testing.T, name string, args ...string) (*exec.Cmd, *pidfd.Process) {
	t.Helper()
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p, err := pidfd.Open(cmd.Process.Pid)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return cmd, p
}

func TestWaitStatus(t *testing.T) {
	ctx := context.Background()
	_, p := start(t, "/bin/sh", "-c", "exit 42")
	st, err := p.Wait(ctx)
	if err != nil || st.Code != 42 || st.Exited() == false || st.Success() {
		t.Fatalf("Wait = %v, %v; want exit 42", st, err)
	}
	if st.Rusage == nil {
		t.Errorf("no rusage")
	}
	// Waiting again returns the same state.
	if st2, err := p.Wait(ctx); err != nil || st2 != st {
		t.Errorf("second Wait = %v, %v", st2, err)
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Signal after exit: %v, want ErrProcessDone", err)
	}
	if f, err := p.File(); !errors.Is(err, os.ErrProcessDone) {
		f.Close()
		t.Errorf("File after Wait: %v, want ErrProcessDone (the pidfd is let go)", err)
	}
	if st2, err := p.TryWait(); err != nil || st2 != st {
		t.Errorf("TryWait after Wait = %v, %v", st2, err)
	}
	if !p.Exited() {
		t.Errorf("Exited after Wait = false")
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close after Wait: %v", err)
	}
}

func TestSignalAndCancel(t *testing.T) {
	_, p := start(t, "/bin/sleep", "100")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := p.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with deadline: %v", err)
	}
	if st, _ := p.TryWait(); st != nil {
		t.Fatalf("TryWait on a running process: %v", st)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st, err := p.Wait(context.Background())
	if err != nil || st.Signal != syscall.SIGTERM || st.ExitCode() != 128+15 {
		t.Fatalf("Wait = %v, %v; want killed by SIGTERM", st, err)
	}
	if st.String() != "signal: terminated" {
		t.Errorf("String() = %q", st.String())
	}
}

func TestCloseKills(t *testing.T) {
	_, p := start(t, "/bin/sleep", "100")
	pid := p.Pid()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		stat, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		t.Errorf("process %d still there after Close: %s", pid, stat)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("Signal after Close: %v", err)
	}
	if _, err := p.Wait(context.Background()); err == nil {
		// A closed Process that was reaped by Close still knows its state.
		return
	}
}

// TestManyWaitsFewThreads waits for 200 processes at once and checks that
// the waits do not each hold an OS thread.
func TestManyWaitsFewThreads(t *testing.T) {
	const n = 200
	var procs []*pidfd.Process
	for i := 0; i < n; i++ {
		_, p := start(t, "/bin/sleep", "0.3")
		procs = append(procs, p)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := p.Wait(context.Background())
			if err == nil && !st.Success() {
				err = st
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	threads := threadCount(t)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if threads > 40 {
		t.Errorf("%d OS threads while waiting for %d processes", threads, n)
	}
}

func threadCount(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// TestSendOverSocket passes a Process to the other end of a Unix socket,
// where it is used to signal the process and, once the parent has reaped
// it, read its status (Linux 6.15+).
func TestSendOverSocket(t *testing.T) {
	cmd, p := start(t, "/bin/sleep", "100")
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	f, err := p.File()
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Sendmsg(fds[0], []byte("p"), unix.UnixRights(int(f.Fd())), nil, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(fds[1], make([]byte, 1), oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	rfds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil {
		t.Fatal(err)
	}
	q, err := pidfd.FromFile(os.NewFile(uintptr(rfds[0]), "received"))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Release()
	if q.Pid() != cmd.Process.Pid {
		t.Errorf("received pid %d, want %d", q.Pid(), cmd.Process.Pid)
	}
	if err := q.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	// The parent reaps; the receiver then reads the status (6.15+).
	st, err := p.Wait(context.Background())
	if err != nil || st.Signal != syscall.SIGUSR1 {
		t.Fatalf("parent's Wait = %v, %v", st, err)
	}
	qs, err := q.Wait(context.Background())
	if errors.Is(err, pidfd.ErrNotChild) {
		t.Skip("kernel without PIDFD_INFO_EXIT:", err)
	}
	if err != nil || qs.Signal != syscall.SIGUSR1 {
		t.Errorf("receiver's Wait = %v, %v; want killed by SIGUSR1", qs, err)
	}
}

func TestFromFileRejectsNonPidfd(t *testing.T) {
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := pidfd.FromFile(f); err == nil {
		t.Error("FromFile accepted /dev/null")
	}
	if _, err := pidfd.Open(-5); err == nil {
		t.Error("Open(-5) succeeded")
	}
}

// TestSignalGroup signals the process group a shell leads: the command it
// runs in the background gets the signal too; Signal alone would not.
func TestSignalGroup(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 30 & echo $!; wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p, err := pidfd.Open(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	buf := make([]byte, 32)
	n, _ := out.Read(buf)
	bg, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil {
		t.Fatalf("no background pid: %q", buf[:n])
	}
	if err := p.SignalGroup(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(bg) + "/stat")
		if err != nil || strings.Contains(string(b), ") Z ") {
			break // gone (or a zombie for init to reap)
		}
		if time.Now().After(deadline) {
			syscall.Kill(bg, syscall.SIGKILL)
			t.Fatal("the background command of the group did not get the signal")
		}
	}
}
