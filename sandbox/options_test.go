package sandbox

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

// TestLogger: what a template has to say (here, a tmpfs its sandboxes
// must share, since a later mount is inside it) goes to the logger given
// with WithLogger, and without one nowhere, not to slog.Default.
func TestLogger(t *testing.T) {
	var def bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&def, nil)))
	defer slog.SetDefault(old)

	ctx := context.Background()
	spec := baseSpec()
	spec.Mounts = append(spec.Mounts, Mount{Kind: Tmpfs, Dest: "/a"}, Mount{Kind: Dir, Dest: "/a/b"})
	var own bytes.Buffer
	tmpl, err := NewTemplate(ctx, spec, WithLogger(slog.New(slog.NewTextHandler(&own, nil))))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.Close()
	if !strings.Contains(own.String(), "shared by its sandboxes") {
		t.Errorf("the given logger got %q, want the warning of a shared tmpfs", own.String())
	}
	tmpl, err = NewTemplate(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.Close()
	if def.Len() > 0 {
		t.Errorf("slog.Default got %q, want nothing", def.String())
	}
}
