package sandbox

import (
	"context"
	"encoding/binary"
	"errors"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/caplin-dev/caplin/internal/testenv"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// TestFilterDecisions runs the default filter, for several policies, in
// a classic BPF interpreter over every system call number below 1100
// (x32's too) and arguments that matter to its rules, through both
// architectures' entry points, and compares each answer with what
// Filter's documentation says: the binary search the filter is laid
// out as must decide as a plain reading of the rules does.
func TestFilterDecisions(t *testing.T) {
	native := uint32(unix.AUDIT_ARCH_X86_64)
	if runtime.GOARCH == "arm64" {
		native = unix.AUDIT_ARCH_AARCH64
	}
	policies := []FilterPolicy{
		{},
		{AllowUserNamespaces: true},
		{AllowMounts: true},
		{OnlyUnixSockets: true},
		{NoSockets: true},
		{NoSockets: true, OnlyUnixSockets: true, AllowMounts: true},
		{NoUnixDatagrams: true},
		{NoUnixDatagrams: true, OnlyUnixSockets: true},
		{NoUnixDatagrams: true, NoSockets: true},
		{NoUnixDatagrams: true, Deny: []string{"socketpair"}},
		{Deny: []string{"getppid", "ioctl", "socket", "clone", "read"}},
		{Deny: []string{"getppid"}, AllowUserNamespaces: true, OnlyUnixSockets: true},
		{Deny: manyCalls()},
	}
	args0 := []uint32{0, unix.AF_UNIX, unix.AF_INET, unix.AF_NETLINK, unix.CLONE_NEWUSER, unix.CLONE_NEWUSER | uint32(unix.SIGCHLD), unix.CLONE_NEWNS}
	args1 := []uint32{0, unix.TIOCSTI, unix.TIOCLINUX, unix.TIOCINQ,
		unix.SOCK_STREAM, unix.SOCK_DGRAM | unix.SOCK_CLOEXEC, unix.SOCK_SEQPACKET | unix.SOCK_NONBLOCK, unix.SOCK_RAW, unix.SOCK_PACKET}
	var nrs []uint32
	for nr := uint32(0); nr < 1100; nr++ {
		nrs = append(nrs, nr)
		if runtime.GOARCH == "amd64" && nr < 600 {
			nrs = append(nrs, nr|x32SyscallBit)
		}
	}
	nrs = append(nrs, 0xffffffff, 0x7fffffff)
	in := make([]byte, 64)
	for _, pol := range policies {
		f, err := Filter(pol)
		if err != nil {
			t.Fatal(err)
		}
		raw := make([]bpf.Instruction, len(f))
		for i, ins := range f {
			raw[i] = bpf.RawInstruction{Op: ins.Code, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}.Disassemble()
		}
		vm, err := bpf.NewVM(raw)
		if err != nil {
			t.Fatalf("%+v: the filter is not valid BPF: %v", pol, err)
		}
		denied := map[uint32]bool{}
		for _, name := range append(DeniedSyscalls(), pol.Deny...) {
			if pol.AllowMounts && slices.Contains(mountSyscalls, name) && !slices.Contains(pol.Deny, name) {
				continue
			}
			nr, ok := SyscallNumber(name)
			if !ok {
				continue // not on this architecture (uselib on arm64): Filter skips it too
			}
			denied[nr] = true
		}
		want := func(arch, nr, a0, a1 uint32) uint32 {
			switch {
			case arch != native:
				return unix.SECCOMP_RET_KILL_PROCESS
			case runtime.GOARCH == "amd64" && nr&x32SyscallBit != 0:
				return errno(unix.ENOSYS)
			case denied[nr]:
				return errno(unix.EPERM)
			case nr == unix.SYS_IOCTL && (a1 == unix.TIOCSTI || a1 == unix.TIOCLINUX):
				return errno(unix.EPERM)
			case nr == unix.SYS_SOCKET && pol.NoSockets:
				return errno(unix.EACCES)
			case nr == unix.SYS_SOCKET && pol.OnlyUnixSockets && a0 != unix.AF_UNIX:
				return errno(unix.EAFNOSUPPORT)
			case (nr == unix.SYS_SOCKET || nr == unix.SYS_SOCKETPAIR) && pol.NoUnixDatagrams && a0 == unix.AF_UNIX &&
				a1&0xf != unix.SOCK_STREAM && a1&0xf != unix.SOCK_SEQPACKET:
				return errno(unix.EACCES)
			case (nr == unix.SYS_CLONE || nr == unix.SYS_UNSHARE) && !pol.AllowUserNamespaces && a0&unix.CLONE_NEWUSER != 0:
				return errno(unix.EPERM)
			case nr == unix.SYS_CLONE3 && !pol.AllowUserNamespaces:
				return errno(unix.ENOSYS)
			}
			return unix.SECCOMP_RET_ALLOW
		}
		for _, arch := range []uint32{native, unix.AUDIT_ARCH_I386} {
			for _, nr := range nrs {
				for _, a0 := range args0 {
					for _, a1 := range args1 {
						// struct seccomp_data, each word big-endian: the
						// interpreter loads as a packet filter does.
						binary.BigEndian.PutUint32(in[offNr:], nr)
						binary.BigEndian.PutUint32(in[offArch:], arch)
						binary.BigEndian.PutUint32(in[offArg0:], a0)
						binary.BigEndian.PutUint32(in[offArg1:], a1)
						got, err := vm.Run(in)
						if err != nil {
							t.Fatal(err)
						}
						if w := want(arch, nr, a0, a1); uint32(got) != w {
							t.Fatalf("%+v: arch %#x nr %d (%s) args %#x %#x: %#x, want %#x", pol, arch, nr, syscallNameOf(nr), a0, a1, uint32(got), w)
						}
					}
				}
			}
		}
	}
}

// TestSearchTrees runs search's trees alone, in the interpreter, for
// random sets of numbers whose blocks are from 1 to 300 instructions
// long: lengths around a conditional jump's reach (255) for the leaves
// and for the subtrees an inner node jumps over, and trees long enough
// to nest the unconditional jumps. Each number must reach its own block,
// and every other number the allow.
func TestSearchTrees(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	lengths := []int{1, 2, 3, 50, 126, 127, 128, 253, 254, 255, 256, 257, 300}
	in := make([]byte, 64)
	nested := false
	for round := range 400 {
		n := 1 + rng.IntN(40)
		set := map[uint32]bool{}
		for len(set) < n {
			set[uint32(rng.IntN(600))] = true
		}
		nrs := slices.Sorted(maps.Keys(set))
		rules := map[uint32]prog{}
		for _, nr := range nrs {
			// Filler that changes the accumulator, then a return that
			// names the number.
			var block prog
			for range lengths[rng.IntN(len(lengths))] - 1 {
				block = append(block, unix.SockFilter{Code: unix.BPF_LD | unix.BPF_IMM, K: 0xdead})
			}
			rules[nr] = append(block, bpfRet(unix.SECCOMP_RET_ERRNO|nr))
		}
		f := append(prog{bpfLoad(offNr)}, search(nrs, rules)...)
		jas := 0
		raw := make([]bpf.Instruction, len(f))
		for i, ins := range f {
			raw[i] = bpf.RawInstruction{Op: ins.Code, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}.Disassemble()
			if ins.Code == unix.BPF_JMP|unix.BPF_JA {
				jas++
			}
		}
		nested = nested || jas > 1
		vm, err := bpf.NewVM(raw)
		if err != nil {
			t.Fatalf("round %d (%d numbers, %d instructions): not valid BPF: %v", round, len(nrs), len(f), err)
		}
		for _, nr := range append([]uint32{0x7fffffff, 0x80000000, 0xffffffff}, seq(0, 700)...) {
			binary.BigEndian.PutUint32(in[offNr:], nr)
			got, err := vm.Run(in)
			if err != nil {
				t.Fatal(err)
			}
			want := uint32(unix.SECCOMP_RET_ALLOW)
			if set[nr] {
				want = unix.SECCOMP_RET_ERRNO | nr
			}
			if uint32(got) != want {
				t.Fatalf("round %d (%d numbers, %d instructions): nr %d: %#x, want %#x", round, len(nrs), len(f), nr, uint32(got), want)
			}
		}
	}
	if !nested {
		t.Error("no tree nested its unconditional jumps: the test tests less than it says")
	}
}

// seq returns the numbers from lo up to hi, hi excluded.
func seq(lo, hi uint32) []uint32 {
	var s []uint32
	for n := lo; n < hi; n++ {
		s = append(s, n)
	}
	return s
}

// manyCalls returns the names of most system calls: a Deny list long
// enough that the filter's search needs jumps further than a conditional
// jump reaches. The calls a child of proc's needs to install a filter and
// answer afterwards are left out.
func manyCalls() []string {
	keep := []string{"read", "write", "close", "close_range", "recvmsg", "sendmsg", "exit", "exit_group",
		"rt_sigreturn", "rt_sigprocmask", "rt_sigaction", "futex", "getpid", "prctl", "seccomp", "sched_yield",
		"nanosleep", "clock_nanosleep", "mmap", "munmap", "brk", "restart_syscall", "kill", "tgkill", "fcntl", "dup3", "ppoll"}
	var names []string
	for _, s := range syscallTable {
		if !slices.Contains(keep, s.name) {
			names = append(names, s.name)
		}
	}
	return names
}

// TestFilterLongAccepted installs the filter with manyCalls denied, whose
// search uses unconditional jumps, in a child: the kernel takes it, and
// the child still answers.
func TestFilterLongAccepted(t *testing.T) {
	testenv.AlsoAsNobody(t)
	f, err := Filter(FilterPolicy{Deny: manyCalls()})
	if err != nil {
		t.Fatal(err)
	}
	ja := false
	for _, ins := range f {
		ja = ja || ins.Code == unix.BPF_JMP|unix.BPF_JA
	}
	if !ja {
		t.Fatalf("a filter of %d instructions has no unconditional jump: the test tests nothing", len(f))
	}
	h := filtered(t, FilterPolicy{Deny: manyCalls()})
	if _, err := h.Getpid(context.Background()); err != nil {
		t.Errorf("getpid after the filter: %v", err)
	}
	if _, err := h.Syscall(context.Background(), unix.SYS_GETPPID); !errors.Is(err, unix.EPERM) {
		t.Errorf("getppid, denied: %v, want EPERM", err)
	}
}

// BenchmarkFilterInstall installs the default filter in a child made
// for each iteration (the kernel builds its cache of constant answers
// then, by running the filter for every system call number).
func BenchmarkFilterInstall(b *testing.B) {
	f, err := Filter(FilterPolicy{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		h, err := proc.Fork(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		var nnp, filter proc.Batch
		nnp.Prctl(unix.PR_SET_NO_NEW_PRIVS, proc.Int(1), proc.Int(0), proc.Int(0), proc.Int(0))
		filter.SeccompSetModeFilter(0, f)
		if _, err := h.Run(ctx, &nnp); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := h.Run(ctx, &filter); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		h.Close()
		b.StartTimer()
	}
}
