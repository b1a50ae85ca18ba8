package rpc

import (
	"context"
	"strings"
	"testing"

	"github.com/caplin-dev/caplin/internal/testenv"
)

// TestLogger: what a server has to say (here, a handler's panic) goes to
// its Logger, and with none nowhere, not to slog.Default.
func TestLogger(t *testing.T) {
	def := testenv.DefaultLog(t)
	var own testenv.LogBuffer
	for _, srv := range []*Server{{Logger: own.Logger()}, {}} {
		c, stop := newPair(t, srv, testHandler(t))
		if err := c.Call(context.Background(), "panic", nil, nil); err == nil {
			t.Error("a call that panics succeeded")
		}
		stop()
	}
	if !strings.Contains(own.String(), "handler panicked") {
		t.Errorf("the given logger got %q, want the handler's panic", own.String())
	}
	if d := def.String(); d != "" {
		t.Errorf("slog.Default got %q, want nothing", d)
	}
}
