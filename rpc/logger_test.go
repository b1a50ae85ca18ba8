package rpc

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

// TestLogger: what a server has to say (here, a handler's panic) goes to
// its Logger, and with none nowhere, not to slog.Default.
func TestLogger(t *testing.T) {
	var def bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&def, nil)))
	defer slog.SetDefault(old)

	var own bytes.Buffer
	for _, srv := range []*Server{{Logger: slog.New(slog.NewTextHandler(&own, nil))}, {}} {
		c, stop := newPair(t, srv, testHandler(t))
		if err := c.Call(context.Background(), "panic", nil, nil); err == nil {
			t.Error("a call that panics succeeded")
		}
		stop()
	}
	if !strings.Contains(own.String(), "handler panicked") {
		t.Errorf("the given logger got %q, want the handler's panic", own.String())
	}
	if def.Len() > 0 {
		t.Errorf("slog.Default got %q, want nothing", def.String())
	}
}
