package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/caplin-dev/caplin/probe"
	"github.com/caplin-dev/caplin/sandbox"
	"github.com/caplin-dev/caplin/sandbox/bwrap"
)

// build makes the sandbox of spec. Where user namespaces are not allowed,
// caplin run falls back to a sandbox without them (Landlock, seccomp,
// no_new_privs and rlimits, as --landlock-only builds) and says so in one
// line, with what the sandbox does differently (sandbox.Differences: /tmp
// a private directory, /proc the host's, read-only), unless the command
// line requires them (--require userns); caplin
// bwrap fails, as bubblewrap does there. After a fallback spec says
// LandlockOnly. On failure build reports it and returns a nil sandbox and
// the exit status.
func (m mode) build(ctx context.Context, cmd *bwrap.Command, spec *sandbox.Spec, opts ...sandbox.Option) (*sandbox.Sandbox, int) {
	if cmd.Require.Has(bwrap.LayerUserNS) && spec.LandlockOnly {
		return nil, m.usage(m, "--require userns: --landlock-only makes no namespaces")
	}
	if cmd.Require.Has(bwrap.LayerLandlock) {
		if _, err := sandbox.LandlockABI(); err != nil {
			return nil, m.fail(exitUnenforceable, "--require landlock: %v", err)
		}
	}
	sb, err := sandbox.Build(ctx, spec, append(opts, sandbox.WithLogger(noticeLoggerFor(os.Stderr, m.name, cmd)))...)
	if err == nil {
		return sb, 0
	}
	var ne *probe.NoUserNSError
	if spec.LandlockOnly || errors.Is(err, sandbox.ErrUnenforceable) || !errors.As(probe.CheckUserNS(ctx), &ne) {
		return nil, m.buildFailed(ctx, m, cmd.Explain(err), spec)
	}
	if m.dialect == bwrap.Bubblewrap {
		// A drop-in keeps bubblewrap's contract: its callers choose
		// their own way where bubblewrap cannot make namespaces.
		return nil, m.fail(m.failure, "creating new namespace failed: %v; to fix: %s", ne, ne.Fix())
	}
	if cmd.Require.Has(bwrap.LayerUserNS) {
		return nil, m.fail(exitUnenforceable, "--require userns: %v; to fix: %s", ne, ne.Fix())
	}
	if cmd.UsernsBlock != nil {
		return nil, m.fail(exitUnenforceable, "--userns-block-fd: %v; a sandbox without them has no user namespace to map; to fix: %s", ne, ne.Fix())
	}
	fallback := spec.Clone()
	fallback.LandlockOnly = true
	// The one line below says what the library would log at Info.
	log := slog.New(atLeast{noticeLoggerFor(os.Stderr, m.name, cmd).Handler(), slog.LevelWarn})
	sb, err = sandbox.Build(ctx, fallback, sandbox.WithLogger(log))
	var le *sandbox.LandlockOnlyError
	var older []string // what this kernel's Landlock cannot do, said in the line
	if errors.As(err, &le) && !fallback.BestEffort && le.OnlyNewerLandlock() {
		// The strongest sandbox this kernel can build: what only a newer
		// Landlock could add (keeping signals and abstract sockets in) is
		// named in the one line rather than refused.
		// What best effort drops besides is said there too.
		var dropped strings.Builder
		fallback.BestEffort = true
		sb, err = sandbox.Build(ctx, fallback, sandbox.WithLogger(noticeLoggerFor(&dropped, m.name, cmd)))
		older = le.Cannot
		for _, line := range strings.Split(strings.TrimSpace(dropped.String()), "\n") {
			if _, what, ok := strings.Cut(line, "dropped: "); ok && !slices.ContainsFunc(older, func(c string) bool { return strings.HasPrefix(c, what) }) {
				older = append(older, what)
			}
		}
	}
	if err != nil {
		err = cmd.Explain(err)
	}
	switch {
	case errors.As(err, &le):
		return nil, m.fail(exitUnenforceable, "%v; without namespaces caplin cannot honour: %s; --best-effort runs without these; to fix: %s",
			ne, strings.Join(le.Cannot, "; "), ne.Fix())
	case errors.Is(err, sandbox.ErrUnenforceable):
		return nil, m.fail(exitUnenforceable, "%v; and no sandbox can be made without them: %v; to fix: %s", ne, err, ne.Fix())
	case err != nil:
		return nil, m.fail(m.failure, "%v; and the sandbox without them failed: %v", ne, cmd.Explain(err))
	}
	spec.LandlockOnly = true // for what the caller does with spec next
	limits := sandbox.LandlockOnlyLimits
	if d := sb.Differences(); len(d) > 0 {
		limits += "; " + strings.Join(d, ", ")
	}
	if len(older) > 0 {
		limits += "; without " + strings.Join(older, "; ")
	}
	m.fail(0, "%v; running with Landlock, seccomp, no_new_privs and rlimits only (%s); to fix: %s; --require userns refuses instead",
		ne, limits, ne.Fix())
	return sb, 0
}

// atLeast is a slog.Handler that passes on the records of its Handler at
// level min and above.
type atLeast struct {
	slog.Handler
	min slog.Level
}

// Enabled reports whether l is at least min, and the handler takes it.
func (h atLeast) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

// WithAttrs returns the handler with attrs, filtered the same.
func (h atLeast) WithAttrs(attrs []slog.Attr) slog.Handler {
	return atLeast{h.Handler.WithAttrs(attrs), h.min}
}

// WithGroup returns the handler with the group, filtered the same.
func (h atLeast) WithGroup(name string) slog.Handler {
	return atLeast{h.Handler.WithGroup(name), h.min}
}
