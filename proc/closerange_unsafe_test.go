package proc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// envNoCloseRange makes the test binary the program of
// TestChildFDsWithoutCloseRange.
const envNoCloseRange = "CAPLIN_TEST_NO_CLOSE_RANGE"

// TestChildFDsWithoutCloseRange: where close_range is refused (a caller's
// seccomp profile, as some container runtimes' are), a child still
// starts with none of its parent's descriptors but its control socket.
func TestChildFDsWithoutCloseRange(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), envNoCloseRange+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "child fds: ") {
		t.Fatalf("no answer:\n%s", out)
	}
	if fds := strings.Fields(strings.TrimPrefix(last, "child fds: ")); len(fds) != 1 {
		t.Errorf("the child's descriptors, with close_range refused: %v; want its control socket alone\n%s", fds, out)
	}
}

// noCloseRange is that test's program: it refuses itself close_range
// (EPERM) on every thread, keeps a descriptor open without close-on-exec
// at 9, forks a child and prints the child's descriptors.
func noCloseRange() {
	arch := uint32(unix.AUDIT_ARCH_X86_64)
	if runtime.GOARCH == "arm64" {
		arch = unix.AUDIT_ARCH_AARCH64
	}
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 4},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: arch, Jt: 0, Jf: 3},
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_CLOSE_RANGE, Jt: 0, Jf: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Println("no_new_privs:", err)
		os.Exit(1)
	}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, 1 /* SECCOMP_SET_MODE_FILTER */, 1 /* TSYNC */, uintptr(unsafe.Pointer(&fprog))); e != 0 {
		fmt.Println("seccomp:", e)
		os.Exit(1)
	}
	if _, _, e := unix.Syscall(unix.SYS_CLOSE_RANGE, 100, 100, 0); e != unix.EPERM {
		fmt.Println("close_range is not refused:", e)
		os.Exit(1)
	}
	if err := unix.Dup3(1, 9, 0); err != nil {
		fmt.Println("dup3:", err)
		os.Exit(1)
	}
	h, err := Fork(context.Background(), &Options{From: Direct})
	if err != nil {
		fmt.Println("fork:", err)
		os.Exit(1)
	}
	// A round trip: the child answers from its request loop, past its
	// start's closing, which one by one takes a while.
	if _, err := h.Getpid(context.Background()); err != nil {
		fmt.Println("getpid:", err)
		os.Exit(1)
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", h.Pid()))
	if err != nil {
		fmt.Println("child fds:", err)
		os.Exit(1)
	}
	var fds []string
	for _, e := range ents {
		fds = append(fds, e.Name())
	}
	sort.Strings(fds)
	h.Close()
	fmt.Println("child fds:", strings.Join(fds, " "))
	os.Exit(0)
}
