package sandbox

import (
	"fmt"
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
	var p prog
	p.load(offArch)
	p.jeq(arch, 1, 0)
	p.ret(unix.SECCOMP_RET_KILL_PROCESS)
	p.load(offNr)
	if runtime.GOARCH == "amd64" {
		p.jset(x32SyscallBit, 0, 1)
		p.ret(errno(unix.ENOSYS))
	}
	for _, nr := range deny {
		p.jeq(nr, 0, 1)
		p.ret(errno(unix.EPERM))
	}
	// ioctl(fd, TIOCSTI or TIOCLINUX).
	p.jeq(unix.SYS_IOCTL, 0, 5)
	p.load(offArg1)
	p.jeq(unix.TIOCSTI, 2, 0)
	p.jeq(unix.TIOCLINUX, 1, 0)
	p.ret(unix.SECCOMP_RET_ALLOW)
	p.ret(errno(unix.EPERM))
	if policy.NoSockets {
		p.jeq(unix.SYS_SOCKET, 0, 1)
		p.ret(errno(unix.EACCES))
	}
	if policy.OnlyUnixSockets {
		p.jeq(unix.SYS_SOCKET, 0, 4)
		p.load(offArg0)
		p.jeq(unix.AF_UNIX, 0, 1)
		p.ret(unix.SECCOMP_RET_ALLOW)
		p.ret(errno(unix.EAFNOSUPPORT))
	}
	if !policy.AllowUserNamespaces {
		// The accumulator holds nr again on every path that reaches here.
		for _, nr := range []uint32{unix.SYS_CLONE, unix.SYS_UNSHARE} {
			p.jeq(nr, 0, 4)
			p.load(offArg0)
			p.jset(unix.CLONE_NEWUSER, 1, 0)
			p.ret(unix.SECCOMP_RET_ALLOW)
			p.ret(errno(unix.EPERM))
		}
		p.jeq(unix.SYS_CLONE3, 0, 1)
		p.ret(errno(unix.ENOSYS))
	}
	p.ret(unix.SECCOMP_RET_ALLOW)
	if len(p) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("sandbox: seccomp filter: %d instructions, at most %d", len(p), unix.BPF_MAXINSNS)
	}
	return p, nil
}

func errno(e unix.Errno) uint32 { return unix.SECCOMP_RET_ERRNO | uint32(e)&unix.SECCOMP_RET_DATA }

// prog is a classic BPF program under construction.
type prog []unix.SockFilter

// load loads the 32-bit word at off of struct seccomp_data.
func (p *prog) load(off uint32) {
	*p = append(*p, unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: off})
}

// jeq jumps jt instructions ahead if the accumulator equals k, else jf.
func (p *prog) jeq(k uint32, jt, jf uint8) {
	*p = append(*p, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: jt, Jf: jf, K: k})
}

// jset jumps jt ahead if the accumulator has any bit of k, else jf.
func (p *prog) jset(k uint32, jt, jf uint8) {
	*p = append(*p, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, Jt: jt, Jf: jf, K: k})
}

// ret returns the action k.
func (p *prog) ret(k uint32) {
	*p = append(*p, unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: k})
}
