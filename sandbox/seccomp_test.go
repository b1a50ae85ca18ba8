package sandbox

import (
	"context"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

func TestSyscallNumber(t *testing.T) {
	if nr, ok := SyscallNumber("getpid"); !ok || nr != unix.SYS_GETPID {
		t.Errorf("getpid = %d %v, want %d", nr, ok, unix.SYS_GETPID)
	}
	if nr, ok := SyscallNumber("keyctl"); !ok || nr != unix.SYS_KEYCTL {
		t.Errorf("keyctl = %d %v", nr, ok)
	}
	if _, ok := SyscallNumber("no_such_call"); ok {
		t.Error("no_such_call found")
	}
	for i := 1; i < len(syscallTable); i++ {
		if syscallTable[i-1].name >= syscallTable[i].name {
			t.Fatalf("table not sorted at %q", syscallTable[i].name)
		}
	}
	if _, err := Filter(FilterPolicy{Deny: []string{"not_a_syscall"}}); err == nil {
		t.Error("Filter accepted an unknown syscall name")
	}
}

// filtered returns a child with the default filter (and policy) installed.
func filtered(t *testing.T, policy FilterPolicy) *proc.Handle {
	t.Helper()
	f, err := Filter(policy)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h, err := proc.Fork(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	var b proc.Batch
	b.Prctl(unix.PR_SET_NO_NEW_PRIVS, proc.Int(1), proc.Int(0), proc.Int(0), proc.Int(0))
	b.SeccompSetModeFilter(0, f)
	if _, err := h.Run(ctx, &b); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestFilterBlocks makes each call the filter must refuse, inside a
// filtered child, and checks the refusal; and that ordinary calls work.
func TestFilterBlocks(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	h := filtered(t, FilterPolicy{Deny: []string{"getppid"}})
	tty, err := h.Openat(ctx, unix.AT_FDCWD, "/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		nr   uintptr
		args []uintptr
		want error
	}{
		{"keyctl", unix.SYS_KEYCTL, []uintptr{0}, unix.EPERM},
		{"add_key", unix.SYS_ADD_KEY, nil, unix.EPERM},
		{"bpf", unix.SYS_BPF, nil, unix.EPERM},
		{"perf_event_open", unix.SYS_PERF_EVENT_OPEN, nil, unix.EPERM},
		{"userfaultfd", unix.SYS_USERFAULTFD, nil, unix.EPERM},
		{"io_uring_setup", unix.SYS_IO_URING_SETUP, []uintptr{1, 0}, unix.EPERM},
		{"open_by_handle_at", unix.SYS_OPEN_BY_HANDLE_AT, nil, unix.EPERM},
		{"ptrace", unix.SYS_PTRACE, nil, unix.EPERM},
		{"kexec_load", unix.SYS_KEXEC_LOAD, nil, unix.EPERM},
		{"init_module", unix.SYS_INIT_MODULE, nil, unix.EPERM},
		{"mount", unix.SYS_MOUNT, nil, unix.EPERM},
		{"open_tree", unix.SYS_OPEN_TREE, nil, unix.EPERM},
		{"open_tree_attr", unix.SYS_OPEN_TREE_ATTR, nil, unix.EPERM},
		{"getppid (profile)", unix.SYS_GETPPID, nil, unix.EPERM},
		{"ioctl TIOCSTI", unix.SYS_IOCTL, []uintptr{uintptr(tty), unix.TIOCSTI, 0}, unix.EPERM},
		{"ioctl TIOCSTI, high bits set", unix.SYS_IOCTL, []uintptr{uintptr(tty), 1<<32 | unix.TIOCSTI, 0}, unix.EPERM},
		{"ioctl TIOCLINUX", unix.SYS_IOCTL, []uintptr{uintptr(tty), unix.TIOCLINUX, 0}, unix.EPERM},
		{"unshare(CLONE_NEWUSER)", unix.SYS_UNSHARE, []uintptr{unix.CLONE_NEWUSER}, unix.EPERM},
		{"clone(CLONE_NEWUSER)", unix.SYS_CLONE, []uintptr{unix.CLONE_NEWUSER | uintptr(unix.SIGCHLD)}, unix.EPERM},
		{"clone3", unix.SYS_CLONE3, nil, unix.ENOSYS},
	} {
		_, err := h.Syscall(ctx, c.nr, c.args...)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if runtime.GOARCH == "amd64" {
		if _, err := h.Syscall(ctx, x32SyscallBit|unix.SYS_GETPID); !errors.Is(err, unix.ENOSYS) {
			t.Errorf("x32 getpid: %v, want ENOSYS", err)
		}
	}
	// Ordinary calls still work, ioctl included.
	if _, err := h.Getpid(ctx); err != nil {
		t.Errorf("getpid: %v", err)
	}
	if _, err := h.Syscall(ctx, unix.SYS_IOCTL, uintptr(tty), unix.TIOCINQ, 0); errors.Is(err, unix.EPERM) {
		t.Errorf("ioctl FIONREAD refused: %v", err)
	}
}

func TestFilterAllowsUserNamespaces(t *testing.T) {
	testenv.AlsoAsNobody(t)
	ctx := context.Background()
	h := filtered(t, FilterPolicy{AllowUserNamespaces: true})
	err := h.Unshare(ctx, unix.CLONE_NEWUSER)
	if errors.Is(err, unix.EPERM) && os.Getuid() == 0 {
		t.Fatalf("unshare(CLONE_NEWUSER) refused although allowed: %v", err)
	}
	if _, err := h.Syscall(ctx, unix.SYS_KEYCTL, 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("keyctl with user namespaces allowed: %v", err)
	}
}

// TestFilterControl: the same calls in a child without the filter get
// other answers, so TestFilterBlocks sees the filter and not the kernel.
func TestFilterControl(t *testing.T) {
	ctx := context.Background()
	h, err := proc.Fork(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	tty, err := h.Openat(ctx, unix.AT_FDCWD, "/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Syscall(ctx, unix.SYS_GETPPID); err != nil {
		t.Errorf("getppid unfiltered: %v", err)
	}
	if _, err := h.Syscall(ctx, unix.SYS_IOCTL, uintptr(tty), 1<<32|unix.TIOCSTI, 0); !errors.Is(err, unix.ENOTTY) {
		t.Errorf("ioctl TIOCSTI on /dev/null unfiltered: %v, want ENOTTY", err)
	}
	if _, err := h.Syscall(ctx, unix.SYS_CLONE3); errors.Is(err, unix.ENOSYS) || err == nil {
		t.Errorf("clone3(NULL) unfiltered: %v, want a kernel error other than ENOSYS", err)
	}
}

// TestDeniedSyscallsCopy changes what DeniedSyscalls returns, and checks
// that no filter changes with it: the list every filter reads is not the
// caller's to weaken.
func TestDeniedSyscallsCopy(t *testing.T) {
	before, err := Filter(FilterPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	d := DeniedSyscalls()
	if !slices.Contains(d, "bpf") || !slices.Contains(d, "ptrace") {
		t.Fatalf("DeniedSyscalls() = %q, want bpf and ptrace among them", d)
	}
	for i := range d {
		d[i] = "getpid"
	}
	_ = append(d[:0], "getpid")
	after, err := Filter(FilterPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before, after) {
		t.Error("changing DeniedSyscalls' result changed the default filter")
	}
	if again := DeniedSyscalls(); !slices.Contains(again, "bpf") || slices.Contains(again, "getpid") {
		t.Errorf("DeniedSyscalls() after the change = %q", again)
	}
}

// TestNoExportedVars parses the package and fails on an exported variable
// other than an error sentinel: every other piece of state the sandboxes
// read must be out of an importer's reach.
func TestNoExportedVars(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.VAR {
				continue
			}
			for _, sp := range g.Specs {
				for _, id := range sp.(*ast.ValueSpec).Names {
					if id.IsExported() && !strings.HasPrefix(id.Name, "Err") {
						t.Errorf("%s: exported variable %s: make it a function or a constant", fset.Position(id.Pos()), id.Name)
					}
				}
			}
		}
	}
}
