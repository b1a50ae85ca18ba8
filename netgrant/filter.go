package netgrant

import (
	"fmt"
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
// which connect as they send: EOPNOTSUPP) and the socket options that
// route packets through other addresses (setsockopt of IPV6_RTHDR,
// IPV6_2292RTHDR, IPV6_2292PKTOPTIONS and IP_OPTIONS: EPERM), and lets every other call
// through (the sandbox's default filter, installed before it, refuses
// what it refuses, and other architectures' calls). A connect's address
// is in the program's memory, where a filter cannot look: the Broker
// reads it. bind and listen are the Broker's to refuse on the sockets it
// installed, which are the host's.
func Filter() []unix.SockFilter {
	var p bpf
	p.trapSocketCalls()
	p.fastOpen()
	return p.finish()
}

// HostRulesFilter returns the seccomp filter for Policy.Host with Rules:
// a program that shares the host's network, whose every connect, bind
// and listen is handed to the listener it is installed with
// (FilterFlags), and whose sockets can only be of kinds whose every use
// goes through those calls: socket(2) of AF_INET or AF_INET6 makes a TCP
// socket (SOCK_STREAM, protocol 0 or IPPROTO_TCP), or, for a datagram
// socket, is handed to the listener too (the Broker gives the program a
// stand-in that reaches only its resolver); other kinds fail (EACCES),
// and other families but AF_UNIX (EAFNOSUPPORT). TCP Fast Open sends fail
// (EOPNOTSUPP), and the routing socket options are refused (EPERM), as
// with Filter.
func HostRulesFilter() []unix.SockFilter {
	var p bpf
	p.trapSocketCalls()
	p.jump(jeq, unix.SYS_SOCKET, "socket", "")
	p.fastOpenChecks()
	p.label("socket")
	p.stmt(ld, offArg0)
	p.jump(jeq, unix.AF_UNIX, "allow", "")
	p.jump(jeq, unix.AF_INET, "inet", "")
	p.jump(jeq, unix.AF_INET6, "inet", "nofamily")
	p.label("inet")
	p.stmt(ld, offArg0+8)
	p.stmt(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, sockTypeMask)
	p.jump(jeq, unix.SOCK_DGRAM, "notify", "")
	p.jump(jeq, unix.SOCK_STREAM, "", "eacces")
	p.stmt(ld, offArg0+16)
	p.jump(jeq, 0, "allow", "")
	p.jump(jeq, unix.IPPROTO_TCP, "allow", "eacces")
	p.returns()
	p.label("nofamily")
	p.stmt(ret, unix.SECCOMP_RET_ERRNO|uint32(unix.EAFNOSUPPORT))
	p.label("eacces")
	p.stmt(ret, unix.SECCOMP_RET_ERRNO|uint32(unix.EACCES))
	return p.finish()
}

// sockTypeMask is SOCK_TYPE_MASK: the type in socket(2)'s type argument,
// without SOCK_NONBLOCK and SOCK_CLOEXEC.
const sockTypeMask = 0xf

// The offsets in struct seccomp_data, and the instructions the filters
// use.
const (
	offNr   = 0
	offArch = 4
	offArg0 = 16 // the low 32 bits of args[i] at offArg0 + 8*i
	ld      = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	jeq     = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	jset    = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
	ret     = unix.BPF_RET | unix.BPF_K
)

// bpf is a classic BPF program under construction, whose jumps go to
// labels, resolved by finish.
type bpf struct {
	prog   []unix.SockFilter
	labels map[string]int
	fixes  []bpfFix
}

type bpfFix struct {
	at     int
	jt, jf string
}

func (p *bpf) stmt(code uint16, k uint32) {
	p.prog = append(p.prog, unix.SockFilter{Code: code, K: k})
}

// jump adds a conditional jump to the labels jt and jf ("": the next
// instruction).
func (p *bpf) jump(code uint16, k uint32, jt, jf string) {
	p.fixes = append(p.fixes, bpfFix{len(p.prog), jt, jf})
	p.prog = append(p.prog, unix.SockFilter{Code: code, K: k})
}

func (p *bpf) label(name string) {
	if p.labels == nil {
		p.labels = map[string]int{}
	}
	p.labels[name] = len(p.prog)
}

// prologue lets calls of other architectures through ("allow"; the
// sandbox's default filter refuses them) and loads the call's number.
func (p *bpf) prologue() {
	p.stmt(ld, offArch)
	p.jump(jeq, auditArch(), "", "allow")
	p.stmt(ld, offNr)
}

// trapSocketCalls is the prologue, then connect, bind and listen to
// "notify".
func (p *bpf) trapSocketCalls() {
	p.prologue()
	p.jump(jeq, unix.SYS_CONNECT, "notify", "")
	p.jump(jeq, unix.SYS_BIND, "notify", "")
	p.jump(jeq, unix.SYS_LISTEN, "notify", "")
}

// fastOpen ends the calls' checks with the refusal of TCP Fast Open
// sends (fastOpenChecks), and adds the returns.
func (p *bpf) fastOpen() {
	p.fastOpenChecks()
	p.returns()
}

// fastOpenChecks ends the calls' checks: sendto, sendmsg and sendmmsg
// with MSG_FASTOPEN go to "refuse"; setsockopt of the options that route
// a socket's packets through addresses of the program's choosing (an
// IPv6 routing header, IPv4 options, which hold source routes) to
// "eperm", since a socket the Broker connected must reach only the
// address it checked; every other call to "allow".
func (p *bpf) fastOpenChecks() {
	p.jump(jeq, unix.SYS_SETSOCKOPT, "sockopt", "")
	p.jump(jeq, unix.SYS_SENDTO, "flags3", "")
	p.jump(jeq, unix.SYS_SENDMMSG, "flags3", "")
	p.jump(jeq, unix.SYS_SENDMSG, "flags2", "allow")
	p.label("flags2")
	p.stmt(ld, offArg0+8*2)
	p.jump(jset, unix.MSG_FASTOPEN, "refuse", "allow")
	p.label("flags3")
	p.stmt(ld, offArg0+8*3)
	p.jump(jset, unix.MSG_FASTOPEN, "refuse", "allow")
	p.label("sockopt")
	p.stmt(ld, offArg0+8*1) // level
	p.jump(jeq, unix.IPPROTO_IPV6, "ipv6opt", "")
	p.jump(jeq, unix.IPPROTO_IP, "", "allow")
	p.stmt(ld, offArg0+8*2) // optname
	p.jump(jeq, unix.IP_OPTIONS, "", "allow")
	p.stmt(ld, offArg0+8*4) // optlen: 0 clears the options (tcp_wrappers, rshd)
	p.jump(jeq, 0, "allow", "eperm")
	p.label("ipv6opt")
	p.stmt(ld, offArg0+8*2)
	p.jump(jeq, unix.IPV6_RTHDR, "eperm", "")
	p.jump(jeq, unix.IPV6_2292RTHDR, "eperm", "")
	p.jump(jeq, unix.IPV6_2292PKTOPTIONS, "eperm", "allow")
}

// returns adds the returns "allow", "refuse" (EOPNOTSUPP), "eperm" and
// "notify".
// Classic BPF jumps forward only: they come after every jump to them.
func (p *bpf) returns() {
	p.label("allow")
	p.stmt(ret, unix.SECCOMP_RET_ALLOW)
	p.label("refuse")
	p.stmt(ret, unix.SECCOMP_RET_ERRNO|uint32(unix.EOPNOTSUPP))
	p.label("eperm")
	p.stmt(ret, unix.SECCOMP_RET_ERRNO|uint32(unix.EPERM))
	p.label("notify")
	p.stmt(ret, unix.SECCOMP_RET_USER_NOTIF)
}

// finish resolves the jumps and returns the program; it panics on a
// jump to a label that is not after it (a bug in the filter).
func (p *bpf) finish() []unix.SockFilter {
	for _, f := range p.fixes {
		for _, l := range []string{f.jt, f.jf} {
			if to, ok := p.labels[l]; l != "" && (!ok || to <= f.at || to-f.at-1 > 255) {
				panic(fmt.Sprintf("netgrant: filter: jump at %d to %q (%d)", f.at, l, to))
			}
		}
		if f.jt != "" {
			p.prog[f.at].Jt = uint8(p.labels[f.jt] - f.at - 1)
		}
		if f.jf != "" {
			p.prog[f.at].Jf = uint8(p.labels[f.jf] - f.at - 1)
		}
	}
	return p.prog
}
