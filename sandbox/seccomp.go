package sandbox

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sort"

	"golang.org/x/sys/unix"
)

// syscallName is one entry of the generated syscall table.
type syscallName struct {
	name string
	nr   uint32
}

// SyscallNumber returns the number of the system call name ("keyctl") on
// this architecture, and whether it exists here.
func SyscallNumber(name string) (uint32, bool) {
	i := sort.Search(len(syscallTable), func(i int) bool { return syscallTable[i].name >= name })
	if i < len(syscallTable) && syscallTable[i].name == name {
		return syscallTable[i].nr, true
	}
	return 0, false
}

// syscallNameOf returns the name of system call nr on this architecture,
// or "".
func syscallNameOf(nr uint32) string {
	for _, s := range syscallTable {
		if s.nr == nr {
			return s.name
		}
	}
	return ""
}

// FilterPolicy says what the default seccomp filter lets through beyond
// its fixed rules. The zero FilterPolicy is the strictest.
type FilterPolicy struct {
	// AllowUserNamespaces lets the program make user namespaces of its own
	// (clone, clone3 and unshare with CLONE_NEWUSER). By default they fail
	// with EPERM (clone3, whose flags a filter cannot read, with ENOSYS, so
	// that C libraries fall back to clone).
	AllowUserNamespaces bool

	// AllowMounts lets the program make the mount calls (mount, umount2,
	// pivot_root and the mount API: fsopen, fsconfig, fsmount, fspick,
	// open_tree, move_mount, mount_setattr), which by default fail with
	// EPERM. The kernel lets them act only where the program holds
	// CAP_SYS_ADMIN: in the mount namespaces it makes in user namespaces
	// of its own (AllowUserNamespaces), whose copies of the sandbox's
	// mounts are locked together, so nothing the sandbox covers is
	// uncovered there; or in the sandbox's own, when Caps (or KeepCaps)
	// gives it CAP_SYS_ADMIN. Sandboxes nested in the sandbox (bubblewrap,
	// caplin, rootless containers) need them.
	//
	// Landlock refuses these calls to every process under it, in any
	// namespace, so a sandbox with AllowMounts has no Landlock layer: only
	// its namespaces enforce its file grants, as bubblewrap's do, and it
	// does not scope signals and abstract Unix sockets (Landlock ABI 6).
	AllowMounts bool

	// OnlyUnixSockets refuses socket(2) in any address family but AF_UNIX
	// (EAFNOSUPPORT): no network without a network namespace.
	OnlyUnixSockets bool

	// NoSockets refuses socket(2) in every address family (EACCES);
	// socketpair(2) is left. For a sandbox without a mount namespace
	// where the connects to the host's Unix sockets cannot be trapped.
	NoSockets bool

	// NoUnixDatagrams refuses socket(2) and socketpair(2) of Unix
	// datagram sockets (SOCK_DGRAM, and SOCK_RAW, which Unix makes a
	// datagram socket) with EACCES; stream and seqpacket ones are left. A
	// Unix datagram socket, even one of a pair, can send to any socket it
	// names (sendto, sendmsg), and those calls are not trapped (the
	// address is in the program's memory): for a sandbox without a mount
	// namespace, where it names the host's sockets (journald's,
	// syslog's, a service's notification socket).
	NoUnixDatagrams bool

	// Deny lists more system calls, by name, that fail with EPERM. A name
	// that is not a system call of this architecture is an error.
	Deny []string
}

// DeniedSyscalls returns the system calls the default filter always
// refuses with EPERM: kernel keyrings, eBPF, perf events, userfaultfd,
// io_uring, loading kernels and modules, handle-based opens that bypass
// path checks, ptrace and process_vm access, and other kernel-wide
// controls. Names that an architecture lacks are skipped there. The slice
// is a copy: changing it changes no filter.
func DeniedSyscalls() []string { return slices.Clone(deniedSyscalls) }

// deniedSyscalls is what DeniedSyscalls returns. It is unexported, and
// never changed, because every filter reads it: an importer that could
// append to it, or empty it, would weaken every sandbox.
var deniedSyscalls = []string{
	"acct", "add_key", "bpf", "delete_module", "finit_module", "fsconfig",
	"fsmount", "fsopen", "fspick", "init_module", "io_uring_enter",
	"io_uring_register", "io_uring_setup", "kcmp", "kexec_file_load",
	"kexec_load", "keyctl", "lookup_dcookie", "mount", "mount_setattr",
	"move_mount", "name_to_handle_at", "nfsservctl", "open_by_handle_at",
	"open_tree", "open_tree_attr", "perf_event_open", "pivot_root",
	"process_vm_readv", "process_vm_writev", "ptrace", "quotactl",
	"quotactl_fd", "reboot", "request_key", "setns", "swapoff", "swapon",
	"syslog", "umount2", "userfaultfd", "uselib", "vhangup",
}

// mountSyscalls are those of deniedSyscalls that FilterPolicy.AllowMounts
// lets through.
var mountSyscalls = []string{
	"fsconfig", "fsmount", "fsopen", "fspick", "mount", "mount_setattr",
	"move_mount", "open_tree", "open_tree_attr", "pivot_root", "umount2",
}

// x32SyscallBit marks the x32 ABI's system calls on amd64 (the kernel's
// __X32_SYSCALL_BIT, which x/sys/unix does not define).
const x32SyscallBit = 0x40000000

// Offsets in struct seccomp_data: nr, arch, instruction pointer, args. The
// low 32 bits of an argument come first on the little-endian architectures
// caplin supports.
const (
	offNr   = 0
	offArch = 4
	offArg0 = 16
	offArg1 = 24
)

// Filter returns the default seccomp filter, as a classic BPF program for
// Batch.SeccompSetModeFilter (with no_new_privs set first). It:
//
//   - kills the process on a system call made through another
//     architecture's entry point (i386's int 0x80 on amd64, AArch32 on
//     arm64), whose numbers the rules below do not cover;
//   - refuses x32 system calls on amd64 (ENOSYS);
//   - refuses DeniedSyscalls() (but the mount calls, with
//     policy.AllowMounts) and policy.Deny (EPERM);
//   - refuses ioctl TIOCSTI and TIOCLINUX (EPERM), which push input into a
//     terminal the program shares with its parent; only the low 32 bits of
//     the request are compared, as the kernel reads them, so setting high
//     bits does not get past the rule;
//   - refuses new user namespaces unless policy allows them;
//   - with policy.OnlyUnixSockets, refuses sockets of other families;
//   - with policy.NoSockets, refuses every socket(2) (EACCES);
//   - with policy.NoUnixDatagrams, refuses Unix datagram sockets, made by
//     socket(2) or socketpair(2) (EACCES);
//   - allows everything else.
func Filter(policy FilterPolicy) ([]unix.SockFilter, error) {
	var arch uint32
	switch runtime.GOARCH {
	case "amd64":
		arch = unix.AUDIT_ARCH_X86_64
	case "arm64":
		arch = unix.AUDIT_ARCH_AARCH64
	default:
		return nil, fmt.Errorf("sandbox: seccomp filter: unsupported architecture %s", runtime.GOARCH)
	}
	var deny []uint32
	for _, name := range deniedSyscalls {
		if policy.AllowMounts && slices.Contains(mountSyscalls, name) {
			continue
		}
		if nr, ok := SyscallNumber(name); ok {
			deny = append(deny, nr)
		}
	}
	for _, name := range policy.Deny {
		nr, ok := SyscallNumber(name)
		if !ok {
			return nil, fmt.Errorf("sandbox: seccomp filter: %q is not a system call on %s", name, runtime.GOARCH)
		}
		deny = append(deny, nr)
	}
	// What each system call that is not simply allowed gets, by number;
	// the first rule for a number wins, in the order of the list above.
	rules := map[uint32]prog{}
	rule := func(nr uint32, block prog) {
		if _, ok := rules[nr]; !ok {
			rules[nr] = block
		}
	}
	for _, nr := range deny {
		rule(nr, prog{bpfRet(errno(unix.EPERM))})
	}
	// ioctl(fd, TIOCSTI or TIOCLINUX).
	rule(unix.SYS_IOCTL, prog{
		bpfLoad(offArg1),
		bpfJeq(unix.TIOCSTI, 2, 0),
		bpfJeq(unix.TIOCLINUX, 1, 0),
		bpfRet(unix.SECCOMP_RET_ALLOW),
		bpfRet(errno(unix.EPERM)),
	})
	if policy.NoSockets {
		rule(unix.SYS_SOCKET, prog{bpfRet(errno(unix.EACCES))})
	}
	if policy.OnlyUnixSockets || policy.NoUnixDatagrams {
		other := uint32(unix.SECCOMP_RET_ALLOW)
		if policy.OnlyUnixSockets {
			other = errno(unix.EAFNOSUPPORT)
		}
		rule(unix.SYS_SOCKET, unixSockets(other, policy.NoUnixDatagrams))
	}
	if policy.NoUnixDatagrams {
		rule(unix.SYS_SOCKETPAIR, unixSockets(unix.SECCOMP_RET_ALLOW, true))
	}
	if !policy.AllowUserNamespaces {
		for _, nr := range []uint32{unix.SYS_CLONE, unix.SYS_UNSHARE} {
			rule(nr, prog{
				bpfLoad(offArg0),
				bpfJset(unix.CLONE_NEWUSER, 1, 0),
				bpfRet(unix.SECCOMP_RET_ALLOW),
				bpfRet(errno(unix.EPERM)),
			})
		}
		rule(unix.SYS_CLONE3, prog{bpfRet(errno(unix.ENOSYS))})
	}
	nrs := slices.Sorted(maps.Keys(rules))

	p := prog{bpfLoad(offArch), bpfJeq(arch, 1, 0), bpfRet(unix.SECCOMP_RET_KILL_PROCESS), bpfLoad(offNr)}
	if runtime.GOARCH == "amd64" {
		p = append(p, bpfJset(x32SyscallBit, 0, 1), bpfRet(errno(unix.ENOSYS)))
	}
	p = append(p, search(nrs, rules)...)
	if len(p) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("sandbox: seccomp filter: %d instructions, at most %d", len(p), unix.BPF_MAXINSNS)
	}
	return p, nil
}

func errno(e unix.Errno) uint32 { return unix.SECCOMP_RET_ERRNO | uint32(e)&unix.SECCOMP_RET_DATA }

// prog is a classic BPF program, or a part of one.
type prog []unix.SockFilter

// search returns the part of a filter that finds the accumulator, a
// system call's number, among nrs (sorted) by binary search, and runs
// that number's block of rules, or allows a number not among them. A
// block may be of any length, and each of its paths must end in a return:
// what follows it in the filter is another part of the tree. The
// kernel runs a filter on every system call that its cache of constant
// answers does not cover, and builds that cache when the filter is
// installed by running it for each system call number: both walk one
// path of the tree, of about log2(len(nrs)) comparisons, where a list
// of comparisons made each number walk the whole list. Installing the
// default filter in a child, its round trip included, took 101 µs with
// the list and 73 µs with the tree on the development VM
// (BenchmarkFilterInstall).
func search(nrs []uint32, rules map[uint32]prog) prog {
	switch len(nrs) {
	case 0:
		return prog{bpfRet(unix.SECCOMP_RET_ALLOW)}
	case 1:
		// The number's block after the allow, so that the one jump is
		// over one instruction whatever the block's length.
		block := rules[nrs[0]]
		if len(block) == 0 || block[len(block)-1].Code&0x07 != unix.BPF_RET {
			panic(fmt.Sprintf("sandbox: seccomp filter: the rules for system call %d do not end in a return", nrs[0]))
		}
		p := prog{bpfJeq(nrs[0], 1, 0), bpfRet(unix.SECCOMP_RET_ALLOW)}
		return append(p, block...)
	}
	mid := len(nrs) / 2
	below, above := search(nrs[:mid], rules), search(nrs[mid:], rules)
	var p prog
	if len(below) <= 255 {
		p = prog{bpfJge(nrs[mid], uint8(len(below)), 0)}
	} else {
		// A conditional jump reaches 255 instructions ahead at most.
		p = prog{bpfJge(nrs[mid], 0, 1), bpfJa(uint32(len(below)))}
	}
	p = append(p, below...)
	return append(p, above...)
}

// unixSockets is the rule for socket(2) or socketpair(2) (whose
// arguments begin alike: family, type): other families get the action
// other; AF_UNIX sockets are allowed, but for datagram ones (any type but
// SOCK_STREAM and SOCK_SEQPACKET: the kernel makes SOCK_RAW a datagram
// socket, and refuses unknown types itself) when noDatagrams (EACCES).
func unixSockets(other uint32, noDatagrams bool) prog {
	if !noDatagrams {
		return prog{
			bpfLoad(offArg0),
			bpfJeq(unix.AF_UNIX, 0, 1),
			bpfRet(unix.SECCOMP_RET_ALLOW),
			bpfRet(other),
		}
	}
	return prog{
		bpfLoad(offArg0),
		bpfJeq(unix.AF_UNIX, 1, 0),
		bpfRet(other),
		bpfLoad(offArg1),
		{Code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, K: sockTypeMask},
		bpfJeq(unix.SOCK_STREAM, 1, 0),
		bpfJeq(unix.SOCK_SEQPACKET, 0, 1),
		bpfRet(unix.SECCOMP_RET_ALLOW),
		bpfRet(errno(unix.EACCES)),
	}
}

// sockTypeMask is the kernel's SOCK_TYPE_MASK: the type in socket(2)'s
// type argument, without SOCK_NONBLOCK and SOCK_CLOEXEC.
const sockTypeMask = 0xf

// bpfLoad loads the 32-bit word at off of struct seccomp_data.
func bpfLoad(off uint32) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: off}
}

// bpfJeq jumps jt instructions ahead if the accumulator equals k, else jf.
func bpfJeq(k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: jt, Jf: jf, K: k}
}

// bpfJge jumps jt instructions ahead if the accumulator is k or more, else jf.
func bpfJge(k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, Jt: jt, Jf: jf, K: k}
}

// bpfJset jumps jt ahead if the accumulator has any bit of k, else jf.
func bpfJset(k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, Jt: jt, Jf: jf, K: k}
}

// bpfJa jumps k instructions ahead.
func bpfJa(k uint32) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JA, K: k}
}

// bpfRet returns the action k.
func bpfRet(k uint32) unix.SockFilter {
	return unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: k}
}
