package bwrap

import (
	"errors"

	"github.com/caplin-dev/caplin/sandbox"
)

// Message returns what bubblewrap says where sandbox.Build fails with err
// for one of its command lines and bubblewrap has words of its own for
// that failure, which its callers (and its test suite) look for: "Can't
// make symlink at DEST: existing destination is TARGET", say. Any other
// error is its own message.
func Message(err error) string {
	var link *sandbox.LinkExistsError
	if errors.As(err, &link) {
		if link.NotLink {
			return "Can't make symlink at " + link.Dest + ": destination exists and is not a symlink"
		}
		return "Can't make symlink at " + link.Dest + ": existing destination is " + link.Existing
	}
	return err.Error()
}
