package bwrap

import (
	"testing"

	"github.com/caplin-dev/caplin/sandbox"
)

// TestEveryMountKindHasAnOption: each of the sandbox's mount kinds is
// spoken on the command line, as bubblewrap's option of the kind's name
// ("--" and MountKind.String), so that a kind added to the library
// without its option fails here. FUSE is not one of bubblewrap's: its
// mount needs a server, which caplin run's --serve-* options make.
func TestEveryMountKindHasAnOption(t *testing.T) {
	for _, k := range sandbox.MountKinds() {
		if k == sandbox.FUSE {
			continue
		}
		if _, ok := optionTable()["--"+k.String()]; !ok {
			t.Errorf("mount kind %s: no option --%s", k, k)
		}
	}
}
