package bwrap

import (
	"errors"
	"fmt"
	"testing"

	"github.com/caplin-dev/caplin/sandbox"
)

// TestMessage checks that the failures bubblewrap has words for are
// reported in them, wrapped as sandbox.Build wraps them, and that any
// other error keeps its own message.
func TestMessage(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("sandbox: mount 3 (symlink /dev/full /x): %w", err) }
	for _, c := range []struct {
		err  error
		want string
	}{
		{wrap(&sandbox.LinkExistsError{Dest: "/x", Source: "/dev/full", Existing: "/dev/null"}),
			"Can't make symlink at /x: existing destination is /dev/null"},
		{wrap(&sandbox.LinkExistsError{Dest: "/x", Source: "/dev/full", NotLink: true}),
			"Can't make symlink at /x: destination exists and is not a symlink"},
		{errors.New("sandbox: something else"), "sandbox: something else"},
	} {
		if got := Message(c.err); got != c.want {
			t.Errorf("Message(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
