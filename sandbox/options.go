package sandbox

import "log/slog"

// An Option changes how Build, NewTemplate or Run go about their work,
// not what the sandbox is: that is the Spec's, which profiles hold.
type Option func(*options)

type options struct {
	log *slog.Logger
}

// WithLogger sends what the sandbox has to say but does not refuse to l:
// what BestEffort dropped, a partial second layer (Landlock), a mount a
// template's sandboxes share. Without it, or with nil, nothing is logged;
// the package never logs to slog.Default.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
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
