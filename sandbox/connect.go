package sandbox

// Network grants (Spec.Connect): the program's connect calls, trapped
// and decided by a netgrant.Broker in the caller.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/caplin-dev/caplin/netgrant"
	"github.com/caplin-dev/caplin/proc"
	"golang.org/x/sys/unix"
)

// checkConnect checks Spec.Connect against the rest of spec, and gives a
// sandbox without a network of its own (NetNone) its loopback, where the
// connects no rule allows stay.
func checkConnect(spec *Spec) error {
	for i, r := range spec.Connect {
		if r.Host == "" && !r.Prefix.IsValid() && r.Unix == "" {
			return fmt.Errorf("sandbox: connect rule %d is empty", i+1)
		}
	}
	switch {
	case spec.Net == NetHost:
		return errors.New("sandbox: Connect grants connections from a network of the sandbox's own; with Net host the program has the host's already")
	}
	if err := netgrant.Supported(); err != nil {
		return fmt.Errorf("sandbox: Connect: %w: %w", ErrUnenforceable, err)
	}
	if spec.LandlockOnly {
		// No network namespace: the Broker makes every connect of the
		// program's (netgrant.Policy.Host), and its resolver is reached
		// through the stand-ins of datagram sockets and TCP connects to
		// port 53; glibc is asked to use TCP, since it checks where UDP
		// answers come from.
		if err := netgrant.HostSupported(); err != nil {
			return fmt.Errorf("sandbox: Connect without namespaces: %w: %w", ErrUnenforceable, err)
		}
		spec.Env = withResOptions(spec.Env)
		return nil
	}
	if spec.Net == NetNone {
		spec.Net = NetLoopback
	}
	// The sandbox's resolver, over whatever the mounts gave.
	spec.Mounts = append(spec.Mounts, Mount{Kind: ROBindData, Dest: "/etc/resolv.conf", Data: []byte(netgrant.ResolvConf), Perms: Perms(0o644)})
	return nil
}

// recordConnect records, last in the program's batch, the filter that
// traps its connect calls, and the sending of its listener to the caller.
func recordConnect(s *recorder) proc.Val {
	from := s.begin()
	l := s.b.SeccompSetModeFilter(netgrant.FilterFlags(), netgrant.Filter())
	// Sent with the batch's reply; the fd is close-on-exec.
	v := s.b.TakeFile(l)
	s.end(from, "trapping connect (seccomp user notification)")
	return v
}

// recordResolver records the making of the sandbox's resolver's
// sockets, UDP and TCP, at netgrant.ResolverAddr port 53 in its network
// namespace, by the program's process (which holds the capability to
// bind port 53 there until it execs), and their sending to the caller.
func recordResolver(s *recorder) {
	from := s.begin()
	sa := make([]byte, unix.SizeofSockaddrInet4)
	binary.NativeEndian.PutUint16(sa[0:], unix.AF_INET)
	binary.BigEndian.PutUint16(sa[2:], 53)
	a := netgrant.ResolverAddr.As4()
	copy(sa[4:], a[:])
	udp := s.b.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	s.b.Bind(udp, sa)
	// Sent with the batch's reply; the sockets are close-on-exec.
	s.dnsUDP = s.b.TakeFile(udp)
	tcp := s.b.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	one := make([]byte, 4)
	binary.NativeEndian.PutUint32(one, 1)
	s.b.Syscall(unix.SYS_SETSOCKOPT, tcp, proc.Int(unix.SOL_SOCKET), proc.Int(unix.SO_REUSEADDR), s.b.In(one), proc.Int(len(one)))
	s.b.Bind(tcp, sa)
	s.b.Syscall(unix.SYS_LISTEN, tcp, proc.Int(64))
	s.dnsTCP = s.b.TakeFile(tcp)
	s.end(from, "the resolver's sockets (127.0.0.53:53)")
}

// serveConnect starts the broker of Spec.Connect's rules on the
// program's listener, which it takes.
func (sb *Sandbox) serveConnect(ctx context.Context, listener, dnsUDP, dnsTCP *os.File, o options) error {
	if listener == nil {
		return errors.New("sandbox: the program's process sent no seccomp listener")
	}
	b, err := netgrant.Serve(ctx, listener, netgrant.Policy{
		Rules:  sb.spec.Connect,
		Lookup: o.lookup,
		Events: o.events,
		Logger: o.log,
		NetNS:  sb.ns["net"],
	})
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	sb.broker = b
	if err := b.ServeDNS(dnsUDP, dnsTCP); err != nil {
		return fmt.Errorf("sandbox: the resolver: %w", err)
	}
	return nil
}

// withResOptions returns env with "use-vc" added to RES_OPTIONS, which
// makes glibc's resolver ask over TCP.
func withResOptions(env []string) []string {
	for i, kv := range env {
		if v, ok := strings.CutPrefix(kv, "RES_OPTIONS="); ok {
			env = slices.Clone(env)
			env[i] = "RES_OPTIONS=" + strings.TrimSpace(v+" use-vc")
			return env
		}
	}
	return append(env, "RES_OPTIONS=use-vc")
}
