package sandbox

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/caplin-dev/caplin/netgrant"
)

// An Option changes how Build, NewTemplate or Run go about their work,
// not what the sandbox is: that is the Spec's, which profiles hold.
type Option func(*options)

type options struct {
	log      *slog.Logger
	idMapsBy func(ctx context.Context, pid int) error
	events   func(netgrant.Event)
	lookup   func(ctx context.Context, host string) ([]netip.Addr, error)
	refuse   []string
}

// WithRefusedSockets names directories whose Unix sockets a LandlockOnly
// sandbox's program never reaches, whatever its grants
// (netgrant.Host.Refuse): caplin's connect broker makes such a sandbox's
// connects, so a server that judges its peer by process (the user's
// supervisor, which refuses confined callers) would see the broker's.
func WithRefusedSockets(dirs ...string) Option {
	return func(o *options) { o.refuse = append(o.refuse, dirs...) }
}

// WithConnectEvents has f called with every connect that Spec.Connect's
// rules allow or refuse (netgrant.Policy.Events).
func WithConnectEvents(f func(netgrant.Event)) Option {
	return func(o *options) { o.events = f }
}

// WithConnectLookup makes f find the addresses of Spec.Connect's host
// names, in place of the host's resolver (netgrant.Policy.Lookup).
func WithConnectLookup(f func(ctx context.Context, host string) ([]netip.Addr, error)) Option {
	return func(o *options) { o.lookup = f }
}

// WithLogger sends what the sandbox has to say but does not refuse to l:
// what BestEffort dropped, a partial second layer (Landlock), a mount a
// template's sandboxes share. Without it, or with nil, nothing is logged;
// the package never logs to slog.Default.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// WithIDMapsBy makes Build leave the ID maps of the sandbox's user
// namespace to f, as bubblewrap's --userns-block-fd does: once the
// sandbox's first process is made, in its new user namespace without
// maps, f is called with its pid (as the caller sees it; InitPid's), and
// writes /proc/PID/uid_map, gid_map and setgroups itself or has them
// written (by newuidmap, say), then returns for Build to go on. The
// spec's UID and GID are then not used: the program runs as what the
// maps make of the caller's IDs. So that the new user namespace's parent
// is the caller's, whose maps the caller may write, the sandbox is forked
// from the caller itself, as with Spec.Direct. f's error fails the
// build. It does not
// apply with Spec.UserNS, which makes no user namespace, nor to
// NewTemplate.
func WithIDMapsBy(f func(ctx context.Context, pid int) error) Option {
	return func(o *options) { o.idMapsBy = f }
}

// discard is the logger of a caller that gave none.
var discard = slog.New(slog.DiscardHandler)

// optionsOf applies opts to the defaults.
func optionsOf(opts []Option) options {
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.log == nil {
		o.log = discard
	}
	return o
}
