package sandbox

// Network grants (Spec.Connect): the program's connect calls, trapped
// and decided by a netgrant.Broker in the caller.

import (
	"context"
	"errors"
	"fmt"
	"os"

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
	case spec.LandlockOnly:
		return fmt.Errorf("sandbox: Connect in a LandlockOnly sandbox: %w", ErrUnenforceable)
	}
	if err := netgrant.Supported(); err != nil {
		return fmt.Errorf("sandbox: Connect: %w: %w", ErrUnenforceable, err)
	}
	if spec.Net == NetNone {
		spec.Net = NetLoopback
	}
	return nil
}

// recordConnect records, last in the program's batch, the filter that
// traps its connect calls, and the sending of its listener to the caller.
func recordConnect(s *recorder) proc.Val {
	from := s.begin()
	l := s.b.SeccompSetModeFilter(unix.SECCOMP_FILTER_FLAG_NEW_LISTENER, netgrant.Filter())
	v := s.b.TakeFile(l)
	s.b.CloseFD(l)
	s.end(from, "trapping connect (seccomp user notification)")
	return v
}

// serveConnect starts the broker of Spec.Connect's rules on the
// program's listener, which it takes.
func (sb *Sandbox) serveConnect(ctx context.Context, listener *os.File, o options) error {
	if listener == nil {
		return errors.New("sandbox: the program's process sent no seccomp listener")
	}
	b, err := netgrant.Serve(ctx, listener, netgrant.Policy{
		Rules:  sb.spec.Connect,
		Lookup: o.lookup,
		Events: o.events,
		Logger: o.log,
	})
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	sb.broker = b
	return nil
}
