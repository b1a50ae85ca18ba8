package netgrant

import (
	"runtime"

	"github.com/caplin-dev/caplin/internal/kernel"
	"golang.org/x/sys/unix"
)

// FilterFlags returns the flags to install Filter with:
// SECCOMP_FILTER_FLAG_NEW_LISTENER, and, where the kernel has it (Linux
// 5.19), SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, so that once the Broker
// has received a connect, a signal to its thread (a Go program's
// preemption signal, say) does not interrupt it between the Broker's
// installing the socket and its answer. Without it, such a signal leaves
// the program a connected socket and a connect that fails with EINTR
// (or, restarted, EISCONN).
func FilterFlags() int {
	if waitKillable() {
		return unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
	}
	return unix.SECCOMP_FILTER_FLAG_NEW_LISTENER
}

// waitKillable reports whether the kernel has
// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19).
func waitKillable() bool {
	release, _, err := kernel.Uname()
	return err == nil && kernel.AtLeast(release, 5, 19)
}

// auditArch is this architecture's AUDIT_ARCH value in struct
// seccomp_data.
func auditArch() uint32 {
	if runtime.GOARCH == "arm64" {
		return unix.AUDIT_ARCH_AARCH64
	}
	return unix.AUDIT_ARCH_X86_64
}

// Filter returns the seccomp filter that hands every connect(2),
// bind(2) and listen(2) of this architecture to the listener it is
// installed with (SECCOMP_FILTER_FLAG_NEW_LISTENER, FilterFlags), refuses
// TCP Fast Open sends (sendto, sendmsg and sendmmsg with MSG_FASTOPEN,
// which connect as they send: EOPNOTSUPP), and lets every other call
// through (the sandbox's default filter, installed before it, refuses
// what it refuses, and other architectures' calls). A connect's address
// is in the program's memory, where a filter cannot look: the Broker
// reads it. bind and listen are the Broker's to refuse on the sockets it
// installed, which are the host's.
func Filter() []unix.SockFilter {
	const (
		offNr   = 0
		offArch = 4
		offArg0 = 16 // the low 32 bits of args[i] at offArg0 + 8*i
	)
	var prog []unix.SockFilter
	labels := map[string]int{}
	type fix struct {
		at     int
		jt, jf string
	}
	var fixes []fix
	stmt := func(code uint16, k uint32) { prog = append(prog, unix.SockFilter{Code: code, K: k}) }
	jump := func(code uint16, k uint32, jt, jf string) {
		fixes = append(fixes, fix{len(prog), jt, jf})
		prog = append(prog, unix.SockFilter{Code: code, K: k})
	}
	label := func(name string) { labels[name] = len(prog) }
	const (
		ld   = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jset = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
		ret  = unix.BPF_RET | unix.BPF_K
	)
	stmt(ld, offArch)
	jump(jeq, auditArch(), "", "allow")
	stmt(ld, offNr)
	jump(jeq, unix.SYS_CONNECT, "notify", "")
	jump(jeq, unix.SYS_BIND, "notify", "")
	jump(jeq, unix.SYS_LISTEN, "notify", "")
	jump(jeq, unix.SYS_SENDTO, "flags3", "")
	jump(jeq, unix.SYS_SENDMMSG, "flags3", "")
	jump(jeq, unix.SYS_SENDMSG, "flags2", "allow")
	label("flags2")
	stmt(ld, offArg0+8*2)
	jump(jset, unix.MSG_FASTOPEN, "refuse", "allow")
	label("flags3")
	stmt(ld, offArg0+8*3)
	jump(jset, unix.MSG_FASTOPEN, "refuse", "allow")
	label("allow")
	stmt(ret, unix.SECCOMP_RET_ALLOW)
	label("refuse")
	stmt(ret, unix.SECCOMP_RET_ERRNO|uint32(unix.EOPNOTSUPP))
	label("notify")
	stmt(ret, unix.SECCOMP_RET_USER_NOTIF)
	for _, f := range fixes {
		if f.jt != "" {
			prog[f.at].Jt = uint8(labels[f.jt] - f.at - 1)
		}
		if f.jf != "" {
			prog[f.at].Jf = uint8(labels[f.jf] - f.at - 1)
		}
	}
	return prog
}
